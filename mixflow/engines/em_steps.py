"""One pass of EM over the data in chunks: the E-step and the M-step's sufficient statistics.

The E-step of a chunk gives per-row log-likelihoods and responsibilities; the M-step needs only the sums
over rows of responsibility-weighted statistics. Both are accumulated chunk by chunk in one pass, so
memory is bounded by the chunk size.
"""

import contextvars
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache, partial, reduce

import numpy as np
from scipy.special import entr

from mixflow.engines.accelerate import log_weights as log_of_weights
from mixflow.engines.accelerate import silenced
from mixflow.errors import InputError
from mixflow.families.base import Prepared
from mixflow.families.densities import dirichlet_log_density
from mixflow.parallel import available_cores, one_blas_thread
from mixflow.wording import agreeing, counted

__all__ = ["Pass", "add_statistics", "check_densities", "chunk_rows", "component_log_densities", "data_pass", "e_step",
           "log_normalise", "objective", "responsibilities", "responsibility_entropy", "responsibility_statistics",
           "use_threads", "weights_step"]

_CHUNK_FLOATS = 2**19  # about 4 MB per temporary: chunk features stay in cache for the products
_PARTS = 2  # runs of chunks per pass; fixed, so the order of the sums does not depend on the machine
_THREADED_FLOATS = 2**21  # rows x temporary width below which threads cost more than they save
_SHORT_AXIS = 8  # components below which a reduction over them is done one component at a time (see _last_axis)


@dataclass
class Pass:
    """What one pass over the data accumulates.

    Attributes
    ----------
    log_likelihood : float or ndarray of shape (groups,)
        Weighted sum over rows of log p(x_n); one per mixture of a pass over several side by side.
    counts : ndarray of shape (K,)
        Weighted responsibility totals N_k.
    statistics : dict
        The family's sufficient statistics summed over chunks.

    """

    log_likelihood: float | np.ndarray
    counts: np.ndarray
    statistics: dict


def chunk_rows(n_obs: int, width: int, chunk_size: int | None = None) -> int:
    """Rows per chunk: ``chunk_size`` if given, else about 4 MB of temporaries of ``width`` columns."""
    if chunk_size is not None:
        return int(chunk_size)
    return int(min(n_obs, max(256, _CHUNK_FLOATS // max(width, 1))))


def log_normalise(log_joint: np.ndarray) -> np.ndarray:
    """Turn log p(x_n, z_n = k), shape (m, K), into responsibilities in place; return log p(x_n).

    A stable log-sum-exp over components (the last axis): rows are shifted by their maximum before
    exponentiating. Shape (m, S, K), S mixtures' components side by side, gives log p(x_n) of each, (m, S).
    """
    peak = _last_axis(log_joint, np.maximum)
    finite = bool(np.isfinite(peak).all())
    finite_peak = peak if finite else np.where(np.isfinite(peak), peak, 0.0)
    log_joint -= finite_peak[..., None]
    np.exp(log_joint, out=log_joint)
    total = _last_axis(log_joint, np.add)
    # a row of zero density (or an infinite one): NaN, caught by check_densities
    with silenced(not (finite and (total > 0).all()), divide="ignore", invalid="ignore"):
        log_joint /= total[..., None]
        return finite_peak + np.log(total)


def _last_axis(values: np.ndarray, combine) -> np.ndarray:
    """``combine.reduce(values, axis=-1)``, faster where the last axis is short.

    A reduction over a short last axis costs numpy a loop per row; under :data:`_SHORT_AXIS` components, one
    elementwise pass per component does it in a third of the time, adding in the same order as numpy does
    there (one after the other), so the result is the same to the bit (but for a sum of only -0.0, which is
    -0.0 here and +0.0 in numpy; the densities summed here are never negative).
    """
    if values.shape[-1] >= _SHORT_AXIS or values.shape[-1] == 0:
        return combine.reduce(values, axis=-1)
    out = values[..., 0].copy()
    for k in range(1, values.shape[-1]):
        combine(out, values[..., k], out=out)
    return out


def responsibility_entropy(resp: np.ndarray) -> np.ndarray:
    """Per row, -sum_k r_nk log r_nk (ICL's penalty), with 0 log 0 = 0 (``scipy.special.entr``)."""
    return entr(resp).sum(axis=1)


def data_pass(model, params: dict, prepared, rows: int, threaded: bool = False, groups: int = 1,
              constants: dict | None = None) -> Pass:
    """One E-step over all chunks, accumulating the statistics of the next M-step.

    The chunks are cut into :data:`_PARTS` runs of consecutive chunks and the runs' sums added in order, so
    running them side by side in threads (on large data and several cores, one BLAS thread each) gives the
    same bits as running them one after the other with one BLAS thread.

    Parameters
    ----------
    model : MixtureModel
    params : dict
        Current parameters, ``weights`` included.
    prepared : Prepared
    rows : int
        Rows per chunk.
    threaded : bool
        Run the runs in threads (see :func:`use_threads`); the result does not depend on it.
    groups : int
        The components are this many mixtures' side by side, each of ``K / groups`` (data in memory, the
        family's :meth:`~mixflow.families.base.MixtureModel.stack_mixtures`): the log-likelihood is then one
        per mixture, shape (groups,), each mixture's responsibilities normalised within it; counts stay per
        component, and the statistics are each mixture's own concatenated in order (per component, or per
        mixture where its components pool them, as a tied covariance's scatter).
    constants : dict, optional
        ``model.e_step_constants(params, prepared)``, where already computed (data in memory).

    """
    if not isinstance(prepared, Prepared):  # chunked (Dask) data: blockwise, see mixflow.engines.em_chunked
        return prepared.data_pass(model, params)
    if constants is None:
        constants = model.e_step_constants(params, prepared)
    log_weights = log_of_weights(params["weights"])
    unit_weights = prepared.unit_weights
    runs = _runs_of_chunks(prepared.n_obs, rows)
    work = partial(_run_pass, model, constants, log_weights, prepared, rows, unit_weights, groups)
    if threaded and len(runs) > 1:
        with one_blas_thread(), ThreadPoolExecutor(len(runs)) as pool:
            # each run in a copy of this context, so that np.errstate and the like hold in the threads too
            futures = [pool.submit(contextvars.copy_context().run, work, run) for run in runs]
            passes = [future.result() for future in futures]
    else:
        passes = [work(run) for run in runs]
    return reduce(_add, passes)


@cache
def _runs_of_chunks(n_obs: int, rows: int) -> tuple[range, ...]:
    """The first rows of the chunks of ``rows`` rows, cut into at most :data:`_PARTS` runs of consecutive chunks.

    As ``np.array_split`` cuts them: the first runs take one chunk more where they do not divide evenly. Made once
    per data size and chunk size (every pass asks).
    """
    chunks = -(-n_obs // rows)
    parts = min(_PARTS, chunks)
    if parts <= 1:
        return (range(0, n_obs, rows),)
    size, extra = divmod(chunks, parts)
    runs, first = [], 0
    for part in range(parts):
        count = size + (part < extra)
        runs.append(range(first * rows, (first + count) * rows, rows))
        first += count
    return tuple(runs)


def use_threads(n_obs: int, width: int) -> bool:
    """Whether :func:`data_pass` should run in threads: several cores, and enough work to pay for them.

    Each run uses one BLAS thread, so that an idle worker of a process-wide BLAS pool cannot compete with
    the single-threaded numpy work between the matrix products (benchmarks/em_vs_sklearn.py times it).
    """
    return available_cores() >= _PARTS and n_obs * width >= _THREADED_FLOATS


def _run_pass(model, constants: dict, log_weights: np.ndarray, prepared, rows: int, unit_weights: bool,
              groups: int, starts) -> Pass:
    """:func:`data_pass` over the chunks beginning at ``starts``."""
    constants = dict(constants)  # a scratch buffer the family adds to it is this run's own
    total, counts, statistics = 0.0, 0.0, None
    for start in starts:
        chunk = prepared.rows(start, start + rows)
        log_joint, features = model.log_density(constants, chunk)
        log_joint += log_weights
        if groups == 1:
            log_px = log_normalise(log_joint)
            resp = log_joint
            total += float((chunk.weights * log_px).sum())  # not BLAS's dot, which splits long vectors over threads
        else:
            side_by_side = log_joint.reshape(log_joint.shape[0], groups, -1)
            log_px = log_normalise(side_by_side)
            resp = side_by_side.reshape(log_joint.shape)
            # each mixture's sum as the single pass forms it (a contiguous row, summed pairwise)
            total = total + np.ascontiguousarray((chunk.weights[:, None] * log_px).T).sum(axis=1)
        if not unit_weights:
            resp *= chunk.weights[:, None]
        counts = counts + resp.sum(axis=0)
        statistics = add_statistics(statistics, _statistics(model, resp, chunk, features, groups))
    return Pass(total, np.asarray(counts), statistics)


def _statistics(model, weighted_resp: np.ndarray, chunk, features, groups: int) -> dict:
    """The family's statistics of a chunk; of ``groups`` mixtures side by side, each mixture's formed alone.

    Formed alone, each mixture's sums go through products of the shapes its own pass would use, so its
    statistics are those of that pass to the bit (a product of another shape may sum in another order).
    """
    if groups == 1:
        return model.statistics(weighted_resp, chunk, features)
    m = weighted_resp.shape[0]
    # each mixture's responsibilities as its own contiguous (m, K) array, all made by one copy
    by_mixture = np.ascontiguousarray(weighted_resp.reshape(m, groups, -1).transpose(1, 0, 2))
    return model.stacked_statistics(by_mixture, chunk, features)


def add_statistics(total: dict | None, more: dict) -> dict:
    """Sufficient statistics summed key by key; ``total`` None (nothing summed yet) gives ``more``."""
    return more if total is None else {key: value + more[key] for key, value in total.items()}


def responsibility_statistics(model, resp: np.ndarray, prepared, rows: int) -> Pass:
    """The counts and sufficient statistics of given responsibilities (n_obs, K), summed chunk by chunk.

    The log-likelihood is NaN: no density is evaluated.
    """
    counts, statistics = 0.0, None
    for start in range(0, prepared.n_obs, rows):
        chunk = prepared.rows(start, start + rows)
        weighted = resp[start:start + rows] * chunk.weights[:, None]
        statistics = add_statistics(statistics, model.statistics(weighted, chunk, model.chunk_features(chunk)))
        counts = counts + weighted.sum(axis=0)
    return Pass(np.nan, np.asarray(counts), statistics)


def stacked_responsibility_statistics(model, resps: list[np.ndarray], prepared, rows: int) -> Pass:
    """:func:`responsibility_statistics` of several sets of responsibilities, stacked as :func:`data_pass`'s groups.

    The counts of every set's components in order, and each set's statistics concatenated in order (the family's
    :meth:`~mixflow.families.base.MixtureModel.stacked_statistics`), each what its own call gives, to the bit; one
    pass over the chunks, whose temporaries are of the chunk's rows for every set.
    """
    counts, statistics = 0.0, None
    for start in range(0, prepared.n_obs, rows):
        chunk = prepared.rows(start, start + rows)
        weighted = np.stack([resp[start:start + rows] for resp in resps]) * chunk.weights[:, None]  # (G, m, K)
        statistics = add_statistics(statistics, model.stacked_statistics(weighted, chunk, model.chunk_features(chunk)))
        counts = counts + weighted.sum(axis=1).reshape(-1)
    return Pass(np.nan, np.asarray(counts), statistics)


def _add(first: Pass, second: Pass) -> Pass:
    return Pass(first.log_likelihood + second.log_likelihood, first.counts + second.counts,
                add_statistics(first.statistics, second.statistics))


def e_step(model, params: dict, prepared, n_features: int, rows: int | None = None, *,
           working: bool = False, first_row: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Responsibilities (n_obs, K) and log p(x_n) (n_obs,) of one parameter set, chunk by chunk.

    The E-step alone (no sufficient statistics, frequency weights not applied), with temporaries bounded
    by the chunk size like :func:`data_pass`; ``rows`` per chunk, by default :func:`chunk_rows`'.
    ``params`` in data units (an estimate, a draw), or in ``prepared``'s working units if ``working``.
    ``first_row``: the position of ``prepared``'s first row in the data (a block of chunked data), for errors.
    """
    rows = chunk_rows(prepared.n_obs, model.chunk_width(n_features)) if rows is None else rows
    at = params if working else model.to_working(params, prepared)
    with np.errstate(divide="ignore"):
        log_weights = np.log(params["weights"])
    log_densities = component_log_densities(model, at, prepared)
    resp = np.empty((prepared.n_obs, log_weights.size))
    log_density = np.empty(prepared.n_obs)
    for start in range(0, prepared.n_obs, rows):
        log_joint = log_densities(prepared.rows(start, start + rows))
        log_joint += log_weights
        log_density[start:start + rows] = log_normalise(log_joint)
        resp[start:start + rows] = log_joint
    check_densities(log_density, prepared.weights, first_row)
    return resp, log_density


def component_log_densities(model, at: dict, prepared):
    """A function of rows of ``prepared`` (a ``Prepared``): their log densities under each component, (rows, K).

    Of working parameters ``at``, by the path EM's own passes take: the family's centred log density where the fast
    path's expanded quadratic forms round (a component collapsed, or thousands of its own sds from the centre: a
    row on it scored 100 units low), decided once for all the rows.
    """
    if model.exact_steps(at, prepared) is not None:
        return lambda chunk: model.exact_steps(at, chunk)[0](at)
    constants = model.e_step_constants(at, prepared)
    return lambda chunk: model.log_density(constants, chunk)[0]


def check_densities(log_density: np.ndarray, weights: np.ndarray, first_row: int = 0) -> None:
    """Raise a ValueError naming the rows whose log density is NaN or -inf (no responsibilities exist).

    Such a row has zero density under every component (it lies where no component reaches in float64),
    or the parameters are not numbers; its responsibilities would be NaN, and an argmax of them arbitrary.
    """
    bad = ~np.isfinite(log_density) & (weights > 0)
    if not bad.any():
        return
    rows = np.flatnonzero(bad) + first_row
    kind = "NaN" if np.isnan(log_density[rows - first_row]).any() else "zero (log density -inf)"
    raise InputError(f"data: expected every row to have a positive density under the mixture, got a {kind} density "
                     f"at {counted(rows.size, 'row')} {rows[:5].tolist()}{' ...' if rows.size > 5 else ''}: "
                     f"{agreeing(rows.size, 'the row lies', 'the rows lie')} where no component has density in "
                     "float64 (far outside the data the parameters were fitted to), or the parameters are not finite "
                     "numbers")


def weights_step(counts: np.ndarray, concentration: np.ndarray | None) -> np.ndarray:
    """Mixing weights: N_k / N (MLE), or the Dirichlet posterior mode (MAP) clipped at zero.

    Along the last axis: counts of shape (G, K), with ``concentration`` of that shape, give G sets' weights.
    """
    if concentration is None:
        return counts / counts.sum(axis=-1, keepdims=True)
    mass = np.maximum(counts + concentration - 1.0, 0.0)
    return mass / mass.sum(axis=-1, keepdims=True)


def responsibilities(model, params: dict, data) -> np.ndarray:
    """Posterior component probabilities of each observation of validated ``data``, shape (n_obs, K)."""
    return e_step(model, params, model.prepare_to_score(data), data.n_features)[0]


def objective(model, params: dict, log_likelihood: float, prior, active: np.ndarray) -> float:
    """Log-likelihood (``prior`` None) or log posterior density: + log Dirichlet + log component prior."""
    if prior is None:
        return log_likelihood
    return (log_likelihood + dirichlet_log_density(params["weights"], prior.concentration[active])
            + model.log_prior(params, prior))
