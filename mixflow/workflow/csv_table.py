"""One reader of the CSV files a user names (a workflow's data, the command line's ``--selection``).

:func:`read_table` reads a CSV file or raises :class:`CsvProblem`, whose message says what was expected and
what the file is instead (``expected ..., got '<path>', which ...``); each caller puts the name of its argument
in front. It refuses what pandas would read wrongly without a word: rows with a field more than the header
names (pandas would take the first field as the row labels and shift the others under the names), repeated
column names (pandas renames them ``x``, ``x.1``), and files that are not text but often given for a CSV file
(a results file, a spreadsheet).
"""

import csv
import warnings
from pathlib import Path

import pandas as pd

from mixflow.wording import counted

__all__ = ["CsvProblem", "read_table", "utf8_fault"]

#: The first bytes of files that are not CSV but are often given for one, and what each is
_NOT_CSV = ((b"\x89HDF\r\n\x1a\n", "an HDF5 or NetCDF-4 file (a mixflow results file is one: mixflow show reads it)"),
            (b"CDF\x01", "a NetCDF file"), (b"CDF\x02", "a NetCDF file"),
            (b"PK\x03\x04", "a ZIP archive (a spreadsheet such as .xlsx is one: save it as CSV)"),
            (b"\x1f\x8b", "gzip-compressed: decompress it first (gunzip)"),
            (b"\xfd7zXZ\x00", "xz-compressed: decompress it first (unxz)"),
            (b"(\xb5/\xfd", "Zstandard-compressed: decompress it first (unzstd)"),
            *((b"BZh" + level + b"1AY&SY", "bzip2-compressed: decompress it first (bunzip2)")
              for level in (bytes([digit]) for digit in b"123456789")))


class CsvProblem(ValueError):
    """A CSV file that cannot be read as a table; the message lacks the argument's name."""


def _check_separator(path: Path) -> None:
    """A header line without a comma but with another separator: a file saved with semicolons or tabs.

    Read as CSV it would be one column named by the whole line, or ragged rows where its numbers have decimal
    commas (``1,5;2``): said as what it is instead.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as file:
            header, first = file.readline().rstrip("\r\n"), file.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError):  # said by the reading below
        return
    if "," in header:
        return
    # the first row split as the header is (a one-column file whose name holds a ';' is no such file)
    other = next((sep for sep in (";", "\t", "|") if header.count(sep) and first.count(sep) == header.count(sep)),
                 None)
    if other is not None:
        decimal = ", decimal=','" if "," in first else ""  # numbers written with decimal commas
        raise CsvProblem(f"expected comma-separated values, got {str(path)!r}, whose header {header!r} is "
                         f"separated by {other!r}: save the file with commas (e.g. pandas.read_csv(path, "
                         f"sep={other!r}{decimal}).to_csv(new_path, index=False))")


def read_table(path: Path) -> pd.DataFrame:
    """The table of the CSV file ``path``: a header of distinct names and at least one row.

    Raises
    ------
    CsvProblem
        When the file is not UTF-8 text, not CSV, empty, ragged (a row of more or fewer fields than the
        header names), has no rows, repeats a column name, or cannot be read (its OS error).
    """
    path = Path(path)
    try:
        with open(path, "rb") as file:
            start = file.read(10)
    except OSError:
        start = b""  # pandas' own error below says why it cannot be read
    for signature, what in _NOT_CSV:
        if start.startswith(signature):
            raise CsvProblem(f"expected a CSV file, got {str(path)!r}, which is {what}")
    _check_separator(path)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", pd.errors.ParserWarning)
            # no column taken as the row labels: where the rows have a field more than the header names, pandas
            # would take the first field as the label and shift the others under the names
            frame = pd.read_csv(path, index_col=False)
        if any(issubclass(warning.category, pd.errors.ParserWarning) for warning in caught):
            raise CsvProblem(f"expected rows of as many fields as the header names ({_ragged_row(path)})")
    except UnicodeDecodeError:
        raise CsvProblem(f"expected a UTF-8 CSV file, got {str(path)!r}, which is not UTF-8 "
                         f"({utf8_fault(path)})") from None
    except pd.errors.EmptyDataError:
        raise CsvProblem(f"expected a CSV file with a header and rows, got {str(path)!r}, which is empty") from None
    except (pd.errors.ParserError, OSError) as error:
        raise CsvProblem(f"expected a readable CSV file, got {str(path)!r} ({error})".replace("\n", " ")) from None
    if frame.empty:
        raise CsvProblem(f"expected a CSV file with at least one row, got {str(path)!r} with columns "
                         f"{list(frame.columns)} and no rows")
    with open(path, newline="", encoding="utf-8-sig") as file:  # pandas renames repeated names to x, x.1
        header = pd.Index(next(csv.reader(file)))
    if header.duplicated().any():
        duplicated = sorted(set(header[header.duplicated()]))
        raise CsvProblem(f"expected distinct column names, got {str(path)!r} with duplicated {duplicated}")
    return frame


def _ragged_row(path: Path) -> str:
    """The first row of a CSV file whose number of fields differs from the header's, said for an error."""
    with open(path, newline="", encoding="utf-8-sig") as file:
        rows = csv.reader(file)
        header = next(rows, [])
        for row in rows:
            if row and len(row) != len(header):
                return (f"got {str(path)!r}, whose header names {counted(len(header), 'column')} and whose line "
                        f"{rows.line_num} has {counted(len(row), 'field')}")
    return f"got {str(path)!r}, whose rows pandas could not match to its header"


def utf8_fault(path: Path) -> str:
    """``<reason> at byte <b>, line <n>``: the first byte of ``path`` that is not UTF-8, counted from its start.

    Found again here because the position in pandas' error counts from the start of the block it was reading.
    """
    data = Path(path).read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        return f"{error.reason} at byte {error.start}, line {line}"
    return "a byte that is not UTF-8"
