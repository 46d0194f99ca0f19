"""Validation of user data into float arrays, coordinates and frequency weights.

Every public entry point validates its data here, once; errors name the argument, what was expected and
what came. The caller's objects are never modified: the arrays returned are fresh copies.
"""

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from mixflow.errors import InputError, InputTypeError
from mixflow.warnings import PACKAGE_FILES, ConstantFeatureWarning, PrecisionWarning
from mixflow.wording import agreeing, counted

__all__ = ["Data", "add_to_digest", "check_folds", "check_total_weight", "check_units", "constant_features_message",
           "is_dask_frame", "is_text", "offset", "offset_of_rows", "unread_columns", "unusable_columns",
           "validate_data", "validate_weights", "without_unusable_unread"]

_MAX_ROWS_NAMED = 5


@dataclass(frozen=True)
class Data:
    """Validated data: a float array with its coordinates and frequency weights.

    Attributes
    ----------
    values : ndarray of shape (n_obs, n_features)
        The observations as float64, a private copy.
    features : ndarray of shape (n_features,)
        Feature names (unicode strings, as NetCDF gives them back).
    obs : ndarray of shape (n_obs,)
        Observation labels (the DataFrame index when it is unique, else 0..n_obs-1).
    weights : ndarray of shape (n_obs,) or None
        Frequency weights, or None when every observation counts once.

    """

    values: np.ndarray
    features: np.ndarray
    obs: np.ndarray
    weights: np.ndarray | None

    @property
    def n_obs(self) -> int:
        """Number of rows."""
        return self.values.shape[0]

    @property
    def n_features(self) -> int:
        """Number of columns."""
        return self.values.shape[1]

    @property
    def frequency(self) -> np.ndarray:
        """Frequency weights, ones where none were given, shape (n_obs,)."""
        return np.ones(self.n_obs) if self.weights is None else self.weights

    def rounded_units(self) -> np.ndarray:
        """Row index of every frequency unit, each row repeated by its rounded weight.

        What a predictive check compares replicates against (the rows themselves for unweighted data).
        """
        return np.repeat(np.arange(self.n_obs), np.round(self.frequency).astype(np.int64))

    @property
    def largest(self) -> float:
        """The largest absolute value in the data."""
        return float(np.abs(self.values).max())

    @property
    def total_weight(self) -> float:
        """Effective number of observations (sum of the frequency weights)."""
        return float(self.frequency.sum())


def add_to_digest(digest, values, label: str = "") -> None:
    """Add an array to a hashlib ``digest``: ``label``, its dtype and shape, then its bytes (a repr of objects).

    For keys of what was computed from data (two arrays of equal bytes but other shapes or types differ).
    """
    values = np.ascontiguousarray(np.asarray(values))
    digest.update(f"{label}{values.dtype.str}{values.shape}".encode())
    digest.update(values.tobytes() if values.dtype != object else repr(values.tolist()).encode())


def _describe(value) -> str:
    kind = type(value).__name__
    shape = getattr(value, "shape", None)
    return f"{kind} of shape {shape}" if shape is not None else kind


def weights_type_error(name: str, weights, dtype) -> InputTypeError:
    """The error for weights that are not real numbers; a string is read as a column's name, and answered so."""
    if isinstance(weights, str):
        return InputTypeError(f"{name}: expected real numbers, one per row, got the string {weights!r}: to weight by "
                              f"a column of the data, pass the column itself (data[{weights!r}]) and leave it out of "
                              "the fitted columns")
    return InputTypeError(f"{name}: expected real numbers, got {_describe(weights)} of dtype {dtype}")


def _obs_labels(index) -> np.ndarray:
    if index is not None and index.is_unique and (
        pd.api.types.is_integer_dtype(index) or pd.api.types.is_string_dtype(index)
    ):
        values = index.to_numpy()
        return values.astype(str) if pd.api.types.is_string_dtype(index) else values.astype(np.int64)
    return None


def _to_frame(data, name: str) -> tuple[pd.DataFrame, np.ndarray | None]:
    """Turn any accepted input into a DataFrame (features as columns) and the obs labels."""
    if isinstance(data, pd.Series):
        data = data.to_frame()
    if isinstance(data, pd.DataFrame):
        return data, _obs_labels(data.index)
    if isinstance(data, xr.Dataset):
        return _to_frame(data.to_dataframe(), name)
    if isinstance(data, xr.DataArray):
        if data.ndim == 1:
            return pd.DataFrame({str(data.name or "x"): data.values}), None
        if data.ndim == 2:
            feature_dim = "feature" if "feature" in data.dims else data.dims[1]
            data = data.transpose(..., feature_dim)
            columns = data[feature_dim].values if feature_dim in data.coords else range(data.shape[1])
            return pd.DataFrame(data.values, columns=[str(c) for c in columns]), None
        raise InputError(f"{name}: expected a 1-D or 2-D DataArray, got {data.ndim} dimensions {data.dims}")
    if isinstance(data, list | tuple):
        try:
            data = np.asarray(data)
        except ValueError as error:  # rows of different lengths ("inhomogeneous shape")
            raise InputError(f"{name}: expected a list of rows of equal length (a table), got rows of lengths "
                             f"{sorted({len(row) if hasattr(row, '__len__') else 1 for row in data})} ({error})") \
                from None
        if data.dtype == object and all(isinstance(v, int | float) for v in data.ravel()):
            exact, data = data, data.astype(float)  # integers beyond int64 (10**30): numbers, held as Python ints
            _warn_rounded_python_integers(exact, data, name)
    if isinstance(data, np.ndarray):
        if data.ndim == 1:
            data = data[:, None]
        if data.ndim != 2:
            raise InputError(f"{name}: expected a 1-D or 2-D array, got an array of shape {data.shape}")
        return pd.DataFrame(data, columns=[f"x{j}" for j in range(data.shape[1])]), None
    raise InputTypeError(
        f"{name}: expected a numpy array, pandas DataFrame/Series or xarray DataArray/Dataset, "
        f"got {_describe(data)}"
    )


def _numeric_values(frame: pd.DataFrame, row_labels, name: str) -> np.ndarray:
    repeated = frame.columns[frame.columns.duplicated()]
    if len(repeated):
        raise InputError(f"{name}: expected distinct column names, got {sorted({str(c) for c in repeated})} "
                         "more than once")
    complex_columns = [str(c) for c in frame.columns if pd.api.types.is_complex_dtype(frame[c])]
    if complex_columns:
        raise InputTypeError(f"{name}: expected real numbers, got complex {agreeing(len(complex_columns), 'column')} "
                             f"{complex_columns} (pass the real and imaginary parts as two columns if both matter)")
    bad = [str(c) for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if not bad and frame.shape[1]:
        bad = [str(c) for c in frame.columns if pd.api.types.is_bool_dtype(frame[c])]
    if bad:
        raise InputTypeError(f"{name}: expected numeric columns, got non-numeric {agreeing(len(bad), 'column')} {bad}"
                             f"{_first_non_number(frame, bad[0], row_labels)}")
    values = frame.to_numpy(dtype=np.float64, copy=True)
    _warn_rounded_integers(frame, values, name)
    return values


def _warn_rounded_integers(frame: pd.DataFrame, values: np.ndarray, name: str) -> None:
    """Warn of integer columns beyond 2**53 that float64 rounds: rows that differ by less are fitted as equal."""
    rounded, largest, worst = [], 0.0, 0.0
    for j, column in enumerate(frame.columns):
        if not pd.api.types.is_integer_dtype(frame[column]):
            continue
        exact = frame[column].to_numpy()
        big = (exact > 2**53) | (exact < -(2**53))
        if not big.any():
            continue
        # a largest value of the type rounds to 2**63 (2**64 unsigned), beyond the type: changed, though the cast
        # back cannot say so
        beyond = 2.0 ** (64 if pd.api.types.is_unsigned_integer_dtype(frame[column]) else 63)
        with np.errstate(invalid="ignore"):
            back = values[big, j].astype(exact.dtype)
        changed = (back != exact[big]) | (values[big, j] >= beyond)
        if changed.any():
            rounded.append(str(column))
            largest = max(largest, float(np.max(np.abs(values[big, j]))))
            worst = max(worst, float(np.max(np.spacing(np.abs(values[big, j]))) / 2))
    if rounded:
        _rounded_warning(name, rounded, largest, worst)


def _rounded_warning(name: str, rounded: list[str], largest: float, worst: float) -> None:
    warnings.warn(f"{name}: {agreeing(len(rounded), 'feature')} {rounded} {agreeing(len(rounded), 'holds', 'hold')} "
                  f"integers beyond 2**53 (up to {largest:.3g}), which float64, the type of every fit, rounds by up to "
                  f"{worst:.3g}: values closer than that are fitted as equal (an identifier column is better left out; "
                  "counts this large are better rescaled)",
                  PrecisionWarning, skip_file_prefixes=PACKAGE_FILES)


def _warn_rounded_python_integers(exact: np.ndarray, values: np.ndarray, name: str) -> None:
    """:func:`_warn_rounded_integers` for a list's integers beyond int64, held as Python ints (columns x0, x1, ...)."""
    columns = np.atleast_2d(exact.T).T if exact.ndim == 1 else exact
    floats = values[:, None] if values.ndim == 1 else values
    changed = np.vectorize(lambda v, f: isinstance(v, int) and int(f) != v, otypes=[bool])(columns, floats)
    if changed.any():
        _rounded_warning(name, [f"x{j}" for j in np.flatnonzero(changed.any(axis=0))],
                         float(np.max(np.abs(floats[changed]))), float(np.max(np.spacing(np.abs(floats[changed])))) / 2)


def _first_non_number(frame: pd.DataFrame, column: str, row_labels) -> str:
    """`` (first: <value> in <column> at row <label>)``, with rows labelled as the error on NaN labels them."""
    series = frame[next(c for c in frame.columns if str(c) == column)]
    if pd.api.types.is_bool_dtype(series):
        position = 0
    else:
        try:
            numbers = pd.to_numeric(series.astype(object), errors="coerce")
        except (TypeError, ValueError):  # values pandas cannot even try to convert (e.g. lists)
            position = 0
        else:
            positions = np.flatnonzero(numbers.isna().to_numpy() & series.notna().to_numpy())
            if not positions.size:
                return ""
            position = int(positions[0])
    value, label = (_plain(x) for x in (series.iloc[position], np.asarray(row_labels)[position]))
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."  # a cell may hold a long text
    return f" (first: {shown} in {column!r} at row {label!r})"


def _plain(value):
    """A numpy scalar as the Python value it holds (``True``, not ``np.True_``), for messages."""
    return value.item() if isinstance(value, np.generic) else value


def _check_finite(values: np.ndarray, row_labels, name: str, columns, infinite_hint: str = "") -> None:
    """Refuse NaN or infinite values, naming the rows (by ``row_labels``) and the ``columns`` that hold them."""
    finite = np.isfinite(values)
    bad_rows = np.flatnonzero(~finite.all(axis=1))
    if bad_rows.size:
        shown = np.asarray(row_labels)[bad_rows[:_MAX_ROWS_NAMED]].tolist()
        more = f" and {bad_rows.size - _MAX_ROWS_NAMED} more" if bad_rows.size > _MAX_ROWS_NAMED else ""
        held = [str(columns[j]) for j in np.flatnonzero(~finite.all(axis=0))]
        hint = infinite_hint if np.isinf(values[bad_rows]).any() else ""
        raise InputError(
            f"{name}: expected finite values, got NaN or infinite values in {counted(bad_rows.size, 'row')}: "
            f"{shown}{more} ({agreeing(len(held), 'column')} {held}){hint}"
        )


def _check_scale(values: np.ndarray, names: list[str], name: str) -> None:
    """Refuse values whose squares overflow: every family's sufficient statistics would be infinite."""
    with np.errstate(over="ignore", invalid="ignore"):
        centred = values - values.mean(axis=0)
        squares = np.einsum("ij,ij->j", centred, centred)
    overflowing = [names[j] for j in np.flatnonzero(~np.isfinite(squares) | ~np.isfinite(values.mean(axis=0)))]
    if overflowing:
        largest = float(np.max(np.abs(values)))
        raise InputError(f"{name}: expected values whose squares fit in float64, got "
                         f"{agreeing(len(overflowing), 'feature')} {overflowing} with values up to {largest:.3g}, "
                         f"which overflow; rescale {agreeing(len(overflowing), 'it', 'them')} (e.g. divide by "
                         f"{10 ** np.floor(np.log10(largest)):.0e})")


#: The largest total of frequency weights (and so the largest weight): the sums over the data of weighted squares
#: and log-densities must stay within float64's 1.8e308, with room for values far out in the data
_MOST_WEIGHT = 1e250


def validate_weights(weights, n_obs: int, name: str = "weights") -> np.ndarray | None:
    """Check frequency weights: 1-D, length n_obs, finite, non-negative, not all zero, none above 1e250.

    Parameters
    ----------
    weights : array-like of shape (n_obs,) or None
    n_obs : int
    name : str
        Argument name used in error messages.

    Returns
    -------
    ndarray of shape (n_obs,) or None
        A float64 copy.

    """
    if weights is None:
        return None
    if isinstance(weights, pd.Series | xr.DataArray):
        weights = weights.to_numpy()
    try:
        dtype = np.asarray(weights).dtype if not isinstance(weights, str) else np.dtype(str)
    except (TypeError, ValueError):  # ragged sequences
        dtype = np.dtype(object)
    if dtype.kind not in "iuf":  # strings such as "2" would convert silently; booleans, complex, objects are refused
        raise weights_type_error(name, weights, dtype)
    array = np.array(weights, dtype=np.float64, copy=True)
    if array.shape != (n_obs,):
        raise InputError(f"{name}: expected shape ({n_obs},) to match the data, got {array.shape}")
    if not np.isfinite(array).all():
        raise InputError(f"{name}: expected finite values, got NaN or infinite at rows "
                         f"{np.flatnonzero(~np.isfinite(array))[:_MAX_ROWS_NAMED].tolist()}")
    if (array < 0).any():
        raise InputError(f"{name}: expected non-negative values, got negative values at rows "
                         f"{np.flatnonzero(array < 0)[:_MAX_ROWS_NAMED].tolist()}")
    if not array.any():
        raise InputError(f"{name}: expected at least one positive weight, got all zeros")
    if (array > _MOST_WEIGHT).any():  # the passes' weighted sums would overflow
        raise InputError(f"{name}: expected frequency weights of at most {_MOST_WEIGHT:.6g} (the sums of "
                         "weighted squares and log-densities over the data must stay within float64), got larger ones "
                         f"at rows {np.flatnonzero(array > _MOST_WEIGHT)[:_MAX_ROWS_NAMED].tolist()}")
    return array


def validate_data(data, *, weights=None, name: str = "data", features=None, warn_constant: bool = True,
                  unread=(), infinite_hint: str = "", constant_note: str = "") -> Data:
    """Validate user data into a :class:`Data`.

    Parameters
    ----------
    data : array-like of shape (n_obs,) or (n_obs, n_features), DataFrame, Series, DataArray or Dataset
        One row per observation; a 1-D array is one feature. DataFrame column names become the
        ``feature`` coordinate.
    weights : array-like of shape (n_obs,), optional
        Frequency weights.
    name : str
        Argument name used in error messages.
    features : sequence of str, optional
        The feature names the data must have (when predicting with a fitted model).
    warn_constant : bool, default True
        Warn about features that take a single value.
    unread : collection of str, optional
        Columns the model does not read (a regression's beside its formula): not warned about.
    infinite_hint : str, optional
        Added to the error for infinite values (the family's :meth:`infinite_values_hint`).

    Returns
    -------
    Data

    """
    frame, obs = _to_frame(data, name)
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise InputError(f"{name}: expected at least one row and one column, got shape {frame.shape}")
    if features is not None:
        frame = _match_features(frame, features, name)
    row_labels = obs if obs is not None else np.arange(len(frame))
    values = _numeric_values(frame, row_labels, name)
    _check_finite(values, row_labels, name, frame.columns, infinite_hint)
    _check_scale(values, names=[str(c) for c in frame.columns], name=name)
    names = np.array([str(c) for c in frame.columns])
    unread = {str(c) for c in unread}
    single = [j for j in range(values.shape[1]) if np.ptp(values[:, j]) == 0 and names[j] not in unread]
    if single and warn_constant and values.shape[0] > 1:
        warnings.warn(constant_features_message(name, names, [str(names[j]) for j in single], values[0, single],
                                                unnamed=isinstance(data, np.ndarray | list | tuple),
                                                note=constant_note),
                      ConstantFeatureWarning, skip_file_prefixes=PACKAGE_FILES)
    return Data(
        values=values,
        features=names,
        obs=row_labels if obs is not None else np.arange(len(frame), dtype=np.int64),
        weights=validate_weights(weights, values.shape[0]),
    )


def unread_columns(model, data) -> list:
    """The columns of a data frame that ``model`` does not read (:meth:`MixtureModel.unread_columns`); none else."""
    columns = getattr(data, "columns", None)
    return [] if columns is None else list(model.unread_columns(columns))


def is_text(column: pd.Series) -> bool:
    """Whether a data frame's column is not numbers (text, categories, booleans)."""
    return not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)


def is_dask_frame(data) -> bool:
    """Whether ``data`` is a Dask DataFrame (without importing Dask)."""
    return hasattr(data, "dtypes") and hasattr(data, "to_dask_array")


def without_unusable_unread(model, data):
    """A DataFrame without the columns ``model`` never reads (:meth:`unread_columns`) that could not be kept.

    A regression reads the columns its formula names; a text column beside them (a state's name), or a numeric
    one with missing or infinite values, is no reason to refuse the data, as R's and statsmodels' formulas do
    not: such columns are dropped (numeric ones without them are kept in ``/observed_data``, unread). A column
    the model reads is checked as ever. A Dask DataFrame loses every column the model does not read, whatever
    its cells (its fit keeps a sample of the rows, not the data). Other data are returned as they are.
    """
    if not isinstance(data, pd.DataFrame):
        if is_dask_frame(data):  # a Dask DataFrame: every unread column
            unread = unread_columns(model, data)  # (checking their cells would cost a pass over the data)
            return data.drop(columns=unread) if unread else data
        return data
    unread = unusable_columns(data, unread_columns(model, data))
    return data.drop(columns=unread) if unread else data


def unusable_columns(frame: pd.DataFrame, columns: list) -> list:
    """The ``columns`` of ``frame`` that no fit could read: text (or True/False), or with a missing or infinite cell."""
    return [c for c in columns
            if is_text(frame[c]) or not np.isfinite(frame[c].to_numpy(dtype=float, na_value=np.nan)).all()]


def constant_features_message(name: str, features, constant: list[str], values, unnamed: bool | None = None,
                               note: str = "") -> str:
    """What :class:`ConstantFeatureWarning` says of features that take a single value, whatever the family.

    ``features`` are all the data's feature names, ``constant`` those of a single value and ``values`` each
    one's value. Data of one feature are said as values ("every observation is 0"), and the columns of an
    unnamed array (``unnamed``; by default, columns named ``x0, x1, ...``) by their position as well as the name
    mixflow gave them. ``note``, the family's (:meth:`~mixflow.families.base.MixtureModel.constant_feature_note`),
    ends the message where there are other features.
    """
    n, it = len(constant), agreeing(len(constant), "it", "them")
    tail = ("every component sits on {it}, and no component can be told from another{along} (where the family fits "
            "a spread, the spread there is its floor or the prior's)")
    if unnamed is None:
        unnamed = all(str(f) == f"x{j}" for j, f in enumerate(features))
    if len(features) == 1:
        of = "" if unnamed else f" of {constant[0]!r}"
        return f"{name}: every observation{of} is {float(values[0]):g}: " + tail.format(it="it", along="")
    what = f"{agreeing(n, 'feature')} {constant}"
    if unnamed:  # an array: its columns' positions
        what += f" ({agreeing(n, 'column')} {', '.join(c[1:] for c in constant)} of the array)"
    takes = agreeing(n, "takes a single value", "take a single value each")
    return f"{name}: {what} {takes}: " + tail.format(it=it, along=f" along {it}") + note


def _match_features(frame: pd.DataFrame, features, name: str) -> pd.DataFrame:
    """Put named columns in the fitted order; unnamed (array) input must have the right count."""
    expected = [str(f) for f in features]
    frame = frame.rename(columns=str)
    columns = list(frame.columns)
    if all(c == f"x{j}" for j, c in enumerate(columns)):  # unnamed columns (an array): matched by position
        if len(columns) != len(expected):
            raise InputError(f"{name}: expected {counted(len(expected), 'column')}, the "
                             f"{agreeing(len(expected), 'feature')} {expected}, got "
                             f"{counted(len(columns), 'unnamed column')}")
        return frame.set_axis(expected, axis=1)
    missing = [f for f in expected if f not in columns]
    if missing:
        raise InputError(f"{name}: expected features {expected}, got {columns} (missing {missing})")
    return frame[expected]


def check_units(units, columns, name: str = "units") -> dict:
    """Validate units of the data's columns: a mapping of column name to a non-empty string.

    Parameters
    ----------
    units : mapping of str to str, or None
        ``{column: unit}``; columns left out have no unit.
    columns : sequence of str
        The columns that may be named (the data's features).
    name : str, default "units"
        The argument named in errors.

    Returns
    -------
    dict
        The units of the named columns, as a plain dict (empty for None).

    """
    if units is None:
        return {}
    if not hasattr(units, "items"):
        raise InputTypeError(f"{name}: expected a mapping of column name to unit such as {{'waiting': 'min'}}, got "
                        f"{type(units).__name__} {units!r}")
    columns = [str(c) for c in columns]
    unknown = [key for key in units if str(key) not in columns]
    bad = {key: value for key, value in units.items() if not isinstance(value, str) or not value.strip()}
    units_for = f"{agreeing(len(unknown), 'a unit', 'units')} for {unknown}"
    said = ([f"expected units of the data's columns {columns}, got {units_for}"] if unknown else []) + \
        ([f"expected each unit to be a non-empty string such as 'min' or 'km/s', got {bad}"] if bad else [])
    if said:  # both faults at once
        raise InputError(f"{name}: " + "; and ".join(said))
    return {str(key): value.strip() for key, value in units.items()}


def check_total_weight(total_weight: float, n_components: int) -> None:
    """Frequency weights must total from one observation per component (to their sum's rounding) to 1e250.

    The total weight is the number of observations: BIC's sample size, and what a component's share of the
    data is counted in (a component below half an observation's worth is degenerate).
    """
    if not total_weight >= n_components * (1.0 - 1e-9):
        raise InputError(f"weights: expected frequency weights (how many observations each row stands for) "
                         f"totalling at least n_components = {n_components}, got a total of {total_weight:.6g}; "
                         "weights scaled to sum to 1 (probabilities, or relative weights) are not frequencies: "
                         "multiply them by the number of observations they stand for")
    if not total_weight <= _MOST_WEIGHT:  # the passes' weighted sums would overflow
        raise InputError(f"weights: expected frequency weights (how many observations each row stands for) "
                         f"totalling at most {_MOST_WEIGHT:.6g} (the sums of weighted squares and log-densities "
                         f"over the data must stay within float64), got a total of {total_weight:.6g}")


def check_folds(n_folds: int, n_rows: int, weights: np.ndarray | None) -> None:
    """Folds need observations: at most one per observation (the total weight; the rows without weights).

    And at most one per row where rows are held out whole: non-integer frequency weights cannot be split into
    units (see :func:`mixflow.analysis.select.held_out_weights`).
    """
    total = n_rows if weights is None else float(weights.sum())
    if total < n_folds:
        raise InputError(f"n_folds: expected at most the number of observations (total weight {total:g}), got "
                         f"{n_folds}")
    if weights is not None and n_rows < n_folds and not np.array_equal(weights, np.round(weights)):
        raise InputError(f"n_folds: expected at most the number of rows ({n_rows}; non-integer frequency weights "
                         f"hold out whole rows), got {n_folds}")


#: A column whose spread is below this fraction of its values' magnitude is first moved by one of its values.
_OFFSET_BELOW = 1e-6


def offset(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Per column (its smallest and largest value), the value to subtract first where it sits far from zero, else 0.

    Dividing by the largest absolute value rounds each value by eps of its magnitude: for data offset far
    beyond their spread (1e12 + N(0, 1)) that is a relative error of eps x offset / spread in the working
    units, so the log-likelihood of the data as given would be off by that much. Subtracting the column's
    smallest value first is exact where every value is within a factor 2 of it (Sterbenz's lemma), which a
    spread below ``_OFFSET_BELOW`` of the magnitude guarantees; other columns are left as they are. Data in
    memory and chunked data (whose first pass finds the extremes) are moved alike.
    """
    low, high = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    same_sign = (low > 0) | (high < 0)
    with np.errstate(over="ignore", invalid="ignore"):
        far = same_sign & (high - low < _OFFSET_BELOW * np.minimum(np.abs(low), np.abs(high)))
    return np.where(far, low, 0.0)


def offset_of_rows(values: np.ndarray) -> np.ndarray | float:
    """:func:`offset` of rows in memory (n, d), from their columns' extremes; 0 for no rows."""
    if not values.size:
        return 0.0
    return offset(values.min(axis=0, initial=np.inf), values.max(axis=0, initial=-np.inf))
