"""Data larger than memory: Dask arrays, Dask-backed xarray objects and Dask DataFrames, row-chunked.

The input is turned into one Dask array of float64 rows (every feature in one column chunk) with optional
Dask frequency weights chunked alike; nothing is computed whole. :func:`validate_chunked` checks it in one
pass over the blocks (non-finite values, non-negative weights, constant features: errors name the chunk
and the rows) that also finds each feature's magnitude, and finds the weighted moments the families
standardise by in a second. Every later pass maps a function over the blocks and adds the blocks' results
in a fixed binary tree (:func:`map_reduce`), so the sums do not depend on the scheduler: the active
``dask.distributed`` client when there is one, Dask's threaded scheduler otherwise.

Dask is an optional dependency (``pip install "mixflow[dask]"``), imported only here and only when Dask
input comes.
"""

import contextlib
import importlib
import os
import warnings
from dataclasses import dataclass

import numpy as np

from mixflow.arguments import check_count
from mixflow.data import constant_features_message, is_dask_frame, offset, offset_of_rows, weights_type_error
from mixflow.errors import InputError, InputTypeError
from mixflow.parallel import active_client, one_blas_thread
from mixflow.warnings import PACKAGE_FILES, ConstantFeatureWarning
from mixflow.wording import agreeing, counted

__all__ = ["ChunkedData", "Moments", "active_client", "as_chunked", "is_chunked", "map_reduce", "moments_of",
           "require_dask", "row_draws", "sample_rows", "validate_chunked"]

_MAX_ROWS_NAMED = 5
_PERSIST_SHARE = 0.25  # persist="auto" keeps the data in memory when it takes at most this share of it
_INSTALL = 'pip install "mixflow[dask]"'


def require_dask(name: str = "data", what: str = "Dask input"):
    """The ``dask.array`` module; an ImportError naming the argument and the install command otherwise."""
    try:
        return importlib.import_module("dask.array")
    except ImportError as error:
        raise ImportError(f"{name}: {what} needs the optional dependencies dask[array,dataframe], distributed and "
                          f"zarr, which are not installed ({error}); install them with {_INSTALL}") from None


def _module(value) -> str:
    return type(value).__module__ or ""


def is_chunked(value) -> bool:
    """Whether ``value`` is Dask input: a Dask array or DataFrame/Series, or an xarray object backed by Dask.

    Decided from the type's module and the xarray object's chunks, without importing Dask.
    """
    module = _module(value)
    if module.startswith("dask.") or module.startswith("dask_expr"):
        return True
    if module.startswith("xarray."):
        if hasattr(value, "data_vars"):
            return any(_module(v.data).startswith("dask.") for v in value.data_vars.values())
        return _module(getattr(value, "data", None)).startswith("dask.")
    return False


@dataclass(frozen=True)
class Moments:
    """Weighted moments of the data summed over chunks, of the values divided by each feature's magnitude.

    Attributes
    ----------
    total_weight : float
    magnitude : ndarray of shape (d,)
        Largest absolute value of each feature less its anchor (1 for an all-zero feature).
    unit_mean : ndarray of shape (d,)
        Weighted mean of ``(x - anchor) / magnitude``.
    unit_cross : ndarray of shape (d, d)
        Weighted sum of the centred products of ``(x - anchor) / magnitude`` (the scatter matrix).
    anchor : ndarray of shape (d,) or 0
        The value each feature is moved by first (:func:`mixflow.data.offset`): its smallest
        where it sits far from zero beyond its spread, else 0.

    """

    total_weight: float
    magnitude: np.ndarray
    unit_mean: np.ndarray
    unit_cross: np.ndarray
    anchor: np.ndarray | float = 0.0

    @property
    def anchors(self) -> np.ndarray:
        """:attr:`anchor` per feature, shape (d,) (it is 0 for moments made without one)."""
        return np.broadcast_to(self.anchor, self.magnitude.shape)

    @property
    def unit_sd(self) -> np.ndarray:
        """Weighted standard deviation of ``x / magnitude``."""
        return np.sqrt(np.diag(self.unit_cross) / self.total_weight)


@dataclass(frozen=True)
class ChunkedData:
    """Validated Dask data: the rows as a Dask array of float64, with frequency weights chunked alike.

    Attributes
    ----------
    values : dask.array.Array of shape (n_obs, n_features)
        Chunked by rows only (every feature in one chunk).
    features : ndarray of shape (n_features,)
    weights : dask.array.Array of shape (n_obs,) or None
    summary : dict or None
        What :func:`validate_chunked`'s pass found: ``total_weight``, ``n_positive``, ``largest`` (the
        largest absolute value), ``minimum`` and ``maximum`` per feature; None for data not yet checked.
    moments : Moments or None
    persisted : bool
        Whether the blocks are held in memory (on the workers with a client) across passes.

    """

    values: object
    features: np.ndarray
    weights: object = None
    summary: dict | None = None
    moments: Moments | None = None
    persisted: bool = False

    @property
    def n_obs(self) -> int:
        """Number of rows."""
        return int(self.values.shape[0])

    @property
    def n_features(self) -> int:
        """Number of columns."""
        return int(self.values.shape[1])

    @property
    def total_weight(self) -> float:
        """Sum of the frequency weights (the number of rows without weights)."""
        return float(self.summary["total_weight"])

    @property
    def largest(self) -> float:
        """The largest absolute value in the data."""
        return float(self.summary["largest"])

    @property
    def row_starts(self) -> np.ndarray:
        """First row of each block, shape (n_blocks + 1,) with ``n_obs`` last."""
        return np.concatenate([[0], np.cumsum(self.values.chunks[0])]).astype(np.int64)

    def blocks(self) -> list:
        """``(values, weights or None, first row)`` of each block, as Dask delayed objects."""
        values = self.values.to_delayed().ravel().tolist()
        weights = self.weights.to_delayed().ravel().tolist() if self.weights is not None else [None] * len(values)
        starts = self.row_starts
        return [(v, w, int(starts[i])) for i, (v, w) in enumerate(zip(values, weights, strict=True))]


# -- conversion --------------------------------------------------------------------------------------------


def _describe(value) -> str:
    shape = getattr(value, "shape", None)
    return f"{type(value).__name__} of shape {shape}" if shape is not None else type(value).__name__


def _check_dtype(dtype, column: str, name: str) -> None:
    """A TypeError naming the column unless ``dtype`` is a real number type (booleans refused)."""
    from pandas.api import types

    if types.is_complex_dtype(dtype):
        raise InputTypeError(f"{name}: expected real numbers, got complex column [{column!r}] (pass the real and "
                             "imaginary parts as two columns if both matter)")
    if not types.is_numeric_dtype(dtype) or types.is_bool_dtype(dtype):
        raise InputTypeError(f"{name}: expected numeric columns, got non-numeric column [{column!r}] "
                             f"of dtype {dtype}")


def _from_array(array, name: str, columns=None):
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise InputError(f"{name}: expected a 1-D or 2-D array, got a Dask array of shape {array.shape}")
    columns = [f"x{j}" for j in range(array.shape[1])] if columns is None else [str(c) for c in columns]
    _check_dtype(array.dtype, ", ".join(columns), name)
    return array, columns


def _from_frame(frame, name: str, da):
    if hasattr(frame, "to_frame") and not hasattr(frame, "columns"):  # a Dask Series
        frame = frame.to_frame()
    for column, dtype in frame.dtypes.items():
        _check_dtype(dtype, str(column), name)
    repeated = frame.columns[frame.columns.duplicated()]
    if len(repeated):
        raise InputError(f"{name}: expected distinct column names, got {sorted({str(c) for c in repeated})} "
                         "more than once")
    # the lengths are counted on the optimised frame, whose partitions can differ from the frame as written
    frame = frame.optimize()
    return frame.to_dask_array(lengths=_partition_lengths(frame)), [str(c) for c in frame.columns]


def _partition_lengths(frame) -> tuple:
    """Rows of each partition of a Dask DataFrame, without reading the data where the source records them.

    Dask's ``Lengths`` expression takes them from Parquet footers or pandas partitions and counts the
    rows of each partition (a pass over the data) only otherwise; ``to_dask_array(lengths=True)`` always
    counts. ``Lengths`` is not public: without it, the partitions are counted.
    """
    try:
        from dask.dataframe.dask_expr._expr import Lengths, Literal
    except ImportError:
        Lengths = None
    if Lengths is not None:
        known = Lengths(frame.expr).optimize()
        if isinstance(known, Literal):
            return tuple(int(n) for n in known.value)
    return tuple(frame.map_partitions(len).compute())


def _from_xarray(value, name: str, da):
    if hasattr(value, "data_vars"):  # a Dataset: each variable one feature along the row dimension
        names = list(value.data_vars)
        for v in names:
            if value[v].ndim != 1:
                raise InputError(f"{name}: expected a Dataset of 1-D variables (one per feature), got {v!r} with "
                                 f"dims {value[v].dims}")
            _check_dtype(value[v].dtype, str(v), name)
        arrays = [da.asarray(value[v].data) for v in names]
        return da.stack(arrays, axis=1), [str(v) for v in names]
    if value.ndim == 1:
        return _from_array(da.asarray(value.data), name, [str(value.name or "x")])
    if value.ndim == 2:
        feature_dim = "feature" if "feature" in value.dims else value.dims[1]
        value = value.transpose(..., feature_dim)
        columns = value[feature_dim].values if feature_dim in value.coords else None
        return _from_array(da.asarray(value.data), name, columns)
    raise InputError(f"{name}: expected a 1-D or 2-D DataArray, got {value.ndim} dimensions {value.dims}")


def _match_features(array, columns: list, features, name: str):
    expected = [str(f) for f in features]
    if all(c == f"x{j}" for j, c in enumerate(columns)):  # unnamed columns: matched by position
        if len(columns) != len(expected):
            raise InputError(f"{name}: expected {counted(len(expected), 'column')}, the "
                             f"{agreeing(len(expected), 'feature')} {expected}, got "
                             f"{counted(len(columns), 'unnamed column')}")
        return array, expected
    missing = [f for f in expected if f not in columns]
    if missing:
        raise InputError(f"{name}: expected features {expected}, got {columns} (missing {missing})")
    order = [columns.index(f) for f in expected]
    return (array if order == list(range(len(columns))) else array[:, order]), expected


def _rows_chunks(chunks, name: str):
    return check_count("chunks", chunks, 1, none="the data's own chunks")


def as_chunked(data, *, weights=None, name: str = "data", features=None, chunks=None) -> ChunkedData:
    """Dask input as a :class:`ChunkedData` (float64 rows, one column chunk), not yet checked or computed.

    ``chunks``, if given, re-chunks to that many rows per block. Type, shape and dtype errors (known
    without computing) are raised here; the values are checked by :func:`validate_chunked`.
    """
    da = require_dask(name)
    if _module(data).startswith("xarray."):
        array, columns = _from_xarray(data, name, da)
    elif is_dask_frame(data):
        wanted = None if features is None else {str(f) for f in features}
        if wanted is not None and wanted <= {str(c) for c in data.columns}:  # others (a name beside a formula's)
            data = data[[c for c in data.columns if str(c) in wanted]]     # are not read: nor checked
        array, columns = _from_frame(data, name, da)
    elif hasattr(data, "to_dask_array"):  # a Dask Series
        array, columns = _from_frame(data.to_frame(), name, da)
    elif isinstance(data, da.Array):
        array, columns = _from_array(data, name)
    else:
        raise InputTypeError(f"{name}: expected a Dask array, Dask DataFrame or Dask-backed xarray object, got "
                        f"{_describe(data)}")
    if any(np.isnan(c) for c in array.chunks[0]):
        array = array.compute_chunk_sizes()
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise InputError(f"{name}: expected at least one row and one column, got shape {array.shape}")
    if features is not None:
        array, columns = _match_features(array, columns, features, name)
    rows = _rows_chunks(chunks, name)
    array = array.astype(np.float64).rechunk({0: rows if rows is not None else array.chunks[0], 1: -1})
    return ChunkedData(array, np.array(columns), _as_weights(weights, array, da, "weights"))


def _as_weights(weights, array, da, name: str):
    if weights is None:
        return None
    if _module(weights).startswith("xarray."):
        weights = weights.data
    if hasattr(weights, "to_dask_array"):
        weights = weights.optimize()
        weights = weights.to_dask_array(lengths=_partition_lengths(weights))
    if isinstance(weights, str):
        raise weights_type_error(name, weights, np.dtype(str))
    if not isinstance(weights, da.Array):
        weights = np.asarray(weights)
    if weights.dtype.kind not in "iuf" or weights.dtype == bool:
        raise weights_type_error(name, weights, weights.dtype)
    if weights.shape != (array.shape[0],):
        raise InputError(f"{name}: expected shape ({array.shape[0]},) to match the data, got {weights.shape}")
    return da.asarray(weights).astype(np.float64).rechunk((array.chunks[0],))


# -- passes over the blocks ------------------------------------------------------------------------------------


def _tree(parts: list, combine):
    """The parts added pairwise in a fixed binary tree (a Dask delayed tree-sum): the same sums on any scheduler."""
    import dask

    add = dask.delayed(combine, pure=True)
    while len(parts) > 1:
        parts = [add(parts[i], parts[i + 1]) if i + 1 < len(parts) else parts[i] for i in range(0, len(parts), 2)]
    return parts[0]


def map_reduce(function, data: ChunkedData, combine, *args):
    """``function(values, weights, first_row, *args)`` on every block, the results added by ``combine`` in a tree.

    One pass over the data; computed on the active client, or Dask's threaded scheduler with one BLAS
    thread (its threads share out the cores, as :func:`mixflow.engines.em_steps.data_pass`'s do). ``args``
    go to every block (small: parameters and constants). Returns the combined result.
    """
    import dask

    shared = [dask.delayed(a, pure=True, traverse=False) for a in args] if args else []
    block = dask.delayed(function, pure=True)
    parts = [block(v, w, start, *shared) for v, w, start in data.blocks()]
    with one_blas_thread() if active_client() is None else contextlib.nullcontext():
        (result,) = dask.compute(_tree(parts, combine))
    return result


# -- validation ---------------------------------------------------------------------------------------------------


def _found(rows: np.ndarray, chunk: int, start: int, stop: int) -> dict:
    return {"count": int(rows.size), "rows": rows[:_MAX_ROWS_NAMED].tolist(), "chunk": chunk, "span": (start, stop)}


def _first_found(a: dict | None, b: dict | None) -> dict | None:
    if a is None or b is None:
        return a or b
    return {**a, "count": a["count"] + b["count"]}


def _summarise_block(values, weights, start, starts):
    chunk = int(np.searchsorted(starts, start, side="right") - 1)
    stop = start + values.shape[0]
    finite = np.isfinite(values)
    bad = np.flatnonzero(~finite.all(axis=1))
    summary = {"n": values.shape[0], "nonfinite": _found(bad + start, chunk, start, stop) if bad.size else None,
               "bad_weights": None, "negative_weights": None}
    clean = np.where(finite, values, 0.0)
    summary["largest"] = np.abs(clean).max(axis=0, initial=0.0)
    summary["minimum"] = np.where(finite, values, np.inf).min(axis=0, initial=np.inf)
    summary["maximum"] = np.where(finite, values, -np.inf).max(axis=0, initial=-np.inf)
    if weights is None:
        summary["total_weight"], summary["n_positive"] = float(values.shape[0]), values.shape[0]
        return summary
    not_finite = np.flatnonzero(~np.isfinite(weights))
    negative = np.flatnonzero(weights < 0)
    if not_finite.size:
        summary["bad_weights"] = _found(not_finite + start, chunk, start, stop)
    if negative.size:
        summary["negative_weights"] = _found(negative + start, chunk, start, stop)
    summary["total_weight"] = float(np.where(np.isfinite(weights), weights, 0.0).sum())
    summary["n_positive"] = int(np.count_nonzero(weights > 0))
    return summary


def _add_summaries(a: dict, b: dict) -> dict:
    return {"n": a["n"] + b["n"], "nonfinite": _first_found(a["nonfinite"], b["nonfinite"]),
            "bad_weights": _first_found(a["bad_weights"], b["bad_weights"]),
            "negative_weights": _first_found(a["negative_weights"], b["negative_weights"]),
            "largest": np.maximum(a["largest"], b["largest"]), "minimum": np.minimum(a["minimum"], b["minimum"]),
            "maximum": np.maximum(a["maximum"], b["maximum"]), "total_weight": a["total_weight"] + b["total_weight"],
            "n_positive": a["n_positive"] + b["n_positive"]}


def _where(found: dict) -> str:
    more = f" and {found['count'] - len(found['rows'])} more" if found["count"] > len(found["rows"]) else ""
    start, stop = found["span"]
    first = agreeing(found["count"], "in chunk", "the first in chunk")
    return (f"{counted(found['count'], 'row')}, {first} {found['chunk']} (rows {start}-{stop - 1}): "
            f"{found['rows']}{more}")


def _moments_block(values, weights, start, magnitude, anchor=0.0):
    unit = (values - anchor) / magnitude
    w = np.ones(values.shape[0]) if weights is None else weights
    total = float(w.sum())
    mean = w @ unit / total if total > 0 else np.zeros(unit.shape[1])
    centred = unit - mean
    return total, mean, (centred * w[:, None]).T @ centred


def _add_moments(a, b):
    """Weighted means and scatter matrices of two parts combined (Chan, Golub and LeVeque's pairwise update)."""
    (wa, ma, ca), (wb, mb, cb) = a, b
    total = wa + wb
    if wa == 0 or wb == 0:
        return (total, ma if wb == 0 else mb, ca + cb)
    delta = mb - ma
    return total, ma + delta * (wb / total), ca + cb + np.outer(delta, delta) * (wa * wb / total)


def moments_of(values: np.ndarray, weights: np.ndarray | None = None) -> Moments:
    """The :class:`Moments` of rows in memory (n, d), as :func:`validate_chunked` finds them of chunked data."""
    anchor = offset_of_rows(values)
    largest = np.abs(values - anchor).max(axis=0, initial=0.0)
    magnitude = np.where(largest > 0, largest, 1.0)
    total, mean, cross = _moments_block(values, weights, 0, magnitude, anchor)
    return Moments(total, magnitude, mean, cross, anchor)


def _memory_budget(client) -> float:
    if client is not None:
        workers = client.scheduler_info().get("workers", {}).values()
        limits = [w.get("memory_limit") or 0 for w in workers]
        if limits and all(limits):
            return float(sum(limits))
    try:
        import psutil

        return float(psutil.virtual_memory().available)
    except ImportError:
        return float(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def _check_persist(persist) -> None:
    if not (isinstance(persist, bool) or persist == "auto"):
        raise InputError(f"persist: expected 'auto', True or False, got {persist!r}")


def validate_chunked(data, *, weights=None, name: str = "data", features=None, warn_constant: bool = True,
                     chunks=None, persist="auto", constant_note: str = "") -> ChunkedData:
    """Validate Dask input blockwise and find the moments the families standardise by: two passes.

    The first pass checks every block (finite values, finite non-negative weights) and finds each
    feature's largest absolute value, range and the total weight; errors name the rows and the first
    chunk at fault. The second finds the weighted mean and scatter of the values divided by their
    magnitude (:class:`Moments`). ``persist``: keep the blocks in memory across the passes to come
    (``True``), read them from storage each pass (``False``), or ``"auto"``: in memory when the data take
    at most a quarter of the memory available (the workers' with a client, else this machine's).
    """
    _check_persist(persist)
    chunked = as_chunked(data, weights=weights, name=name, features=features, chunks=chunks)
    client = active_client()
    nbytes = chunked.n_obs * chunked.n_features * 8
    keep = persist is True or (persist == "auto" and nbytes <= _PERSIST_SHARE * _memory_budget(client))
    values, weight_array = chunked.values, chunked.weights
    if keep:
        if client is not None:
            values, weight_array = client.persist([values, weight_array]) if weight_array is not None else \
                (client.persist(values), None)
        else:
            values = values.persist()
            weight_array = weight_array.persist() if weight_array is not None else None
        chunked = ChunkedData(values, chunked.features, weight_array)
    starts = chunked.row_starts
    summary = map_reduce(_summarise_block, chunked, _add_summaries, starts)
    if summary["nonfinite"] is not None:
        raise InputError(f"{name}: expected finite values, got NaN or infinite values in "
                         f"{_where(summary['nonfinite'])}")
    if summary["bad_weights"] is not None:
        raise InputError(f"weights: expected finite values, got NaN or infinite in {_where(summary['bad_weights'])}")
    if summary["negative_weights"] is not None:
        raise InputError(f"weights: expected non-negative values, got negative values in "
                         f"{_where(summary['negative_weights'])}")
    if summary["n_positive"] == 0:
        raise InputError("weights: expected at least one positive weight, got all zeros")
    largest = summary["largest"]
    anchor = offset(summary["minimum"], summary["maximum"])  # as standardise moves data in memory
    moved = np.where(anchor != 0, summary["maximum"] - summary["minimum"], largest)  # the largest |x - anchor|
    magnitude = np.where(moved > 0, moved, 1.0)
    total, mean, cross = map_reduce(_moments_block, chunked, _add_moments, magnitude, anchor)
    with np.errstate(over="ignore", invalid="ignore"):
        squares = np.diag(cross) * magnitude * magnitude  # the data's centred sum of squares per feature
        sums = mean * magnitude * total
    overflowing = [str(chunked.features[j]) for j in np.flatnonzero(~np.isfinite(squares) | ~np.isfinite(sums))]
    if overflowing:
        top = float(largest.max())
        raise InputError(f"{name}: expected values whose squares fit in float64, got "
                         f"{agreeing(len(overflowing), 'feature')} {overflowing} with values up to {top:.3g}, "
                         f"which overflow; rescale {agreeing(len(overflowing), 'it', 'them')} (e.g. divide by "
                         f"{10 ** np.floor(np.log10(top)):.0e})")
    single = np.flatnonzero(summary["minimum"] == summary["maximum"])
    if single.size and warn_constant and chunked.n_obs > 1:
        warnings.warn(constant_features_message(name, chunked.features, [str(chunked.features[j]) for j in single],
                                                summary["minimum"][single], note=constant_note),
                      ConstantFeatureWarning, skip_file_prefixes=PACKAGE_FILES)
    summary = {"total_weight": summary["total_weight"], "n_positive": int(summary["n_positive"]),
               "largest": float(largest.max()), "minimum": summary["minimum"], "maximum": summary["maximum"]}
    return ChunkedData(chunked.values, chunked.features, chunked.weights, summary,
                       Moments(float(total), magnitude, mean, cross, anchor), keep)


# -- random draws by rows ----------------------------------------------------------------------------------------


def _row_draws_block(values, key, draw, block_info=None):
    start = int(block_info[0]["array-location"][0][0])
    return draw(np.random.default_rng([*key, start]), values.shape[0])


def row_draws(data: ChunkedData, key: list, draw, dtype):
    """Lazy random values, one per row, drawn block by block from ``key`` and the block's first row.

    ``draw(rng, n)`` gives a block's ``n`` values from its generator. Seeded by the block's first row,
    the values are the same on any scheduler (they depend on the chunking): the bootstrap's Poisson
    weights, the cross-validation's folds.
    """
    return data.values.map_blocks(_row_draws_block, key, draw, drop_axis=1, dtype=dtype)


# -- a uniform sample of rows ------------------------------------------------------------------------------------


def _pick(values, weights, start, count, seed):
    rows = np.sort(np.random.default_rng(seed).choice(values.shape[0], size=count, replace=False))
    return values[rows], (None if weights is None else weights[rows]), rows + start


def sample_rows(data: ChunkedData, size: int, seed: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """A uniform sample of ``size`` rows without replacement, drawn blockwise and reproducibly from ``seed``.

    How many rows each block gives is one multivariate hypergeometric draw over the blocks' sizes, and
    each block draws its rows from its own seed spawned from ``seed``, so the sample is the same on any
    scheduler (it depends on the chunking). All the rows, in order, when ``size >= n_obs``.

    Returns
    -------
    values : ndarray (size, n_features), weights : ndarray (size,) or None, rows : ndarray (size,)
        The rows in increasing order of their position in the data.

    """
    import dask

    if size >= data.n_obs:
        values, weights = dask.compute(data.values, data.weights)
        return values, weights, np.arange(data.n_obs)
    sizes = np.asarray(data.values.chunks[0], dtype=np.int64)
    children = np.random.SeedSequence(seed).spawn(1 + sizes.size)
    counts = np.random.default_rng(children[0]).multivariate_hypergeometric(sizes, size)
    seeds = children[1:]
    pick = dask.delayed(_pick, pure=True, nout=3)
    blocks = zip(data.blocks(), counts, seeds, strict=True)
    parts = [pick(v, w, start, int(c), s) for (v, w, start), c, s in blocks if c > 0]
    (parts,) = dask.compute(parts)
    values = np.concatenate([p[0] for p in parts])
    weights = None if data.weights is None else np.concatenate([p[1] for p in parts])
    return values, weights, np.concatenate([p[2] for p in parts])
