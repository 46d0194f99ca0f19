"""One pass of EM over the data in chunks: the E-step and the M-step's sufficient statistics.

The E-step of a chunk gives per-row log-likelihoods and responsibilities; the M-step needs only the sums
over rows of responsibility-weighted statistics. Both are accumulated chunk by chunk in one pass, so
memory is bounded by the chunk size, and the same reduction runs over the chunks of a Dask array.
"""

from dataclasses import dataclass

import numpy as np
from scipy.special import entr

__all__ = ["Pass", "chunk_rows", "data_pass", "e_step", "log_normalise", "responsibility_entropy", "weights_step"]

_CHUNK_FLOATS = 2**19  # about 4 MB per temporary: chunk features stay in cache for the products


@dataclass
class Pass:
    """What one pass over the data accumulates.

    Attributes
    ----------
    log_likelihood : float
        Weighted sum over rows of log p(x_n).
    counts : ndarray of shape (K,)
        Weighted responsibility totals N_k.
    statistics : dict
        The family's sufficient statistics summed over chunks.

    """

    log_likelihood: float
    counts: np.ndarray
    statistics: dict


def chunk_rows(n_obs: int, width: int, chunk_size: int | None = None) -> int:
    """Rows per chunk: ``chunk_size`` if given, else about 4 MB of temporaries of ``width`` columns."""
    if chunk_size is not None:
        return int(chunk_size)
    return int(min(n_obs, max(256, _CHUNK_FLOATS // max(width, 1))))


def log_normalise(log_joint: np.ndarray) -> np.ndarray:
    """Turn log p(x_n, z_n = k), shape (m, K), into responsibilities in place; return log p(x_n).

    A stable log-sum-exp over components: rows are shifted by their maximum before exponentiating.
    """
    peak = log_joint.max(axis=1)
    finite_peak = np.where(np.isfinite(peak), peak, 0.0)
    log_joint -= finite_peak[:, None]
    np.exp(log_joint, out=log_joint)
    total = log_joint.sum(axis=1)
    log_joint /= total[:, None]
    with np.errstate(divide="ignore"):
        return finite_peak + np.log(total)


def responsibility_entropy(resp: np.ndarray) -> np.ndarray:
    """Per row, -sum_k r_nk log r_nk (ICL's penalty), with 0 log 0 = 0 (``scipy.special.entr``)."""
    return entr(resp).sum(axis=1)


def data_pass(model, params: dict, prepared, rows: int) -> Pass:
    """One E-step over all chunks, accumulating the statistics of the next M-step.

    Parameters
    ----------
    model : MixtureModel
    params : dict
        Current parameters, ``weights`` included.
    prepared : Prepared
    rows : int
        Rows per chunk.

    """
    constants = model.e_step_constants(params, prepared)
    with np.errstate(divide="ignore"):
        log_weights = np.log(params["weights"])
    unit_weights = bool(np.all(prepared.weights == 1.0))
    total, counts, statistics = 0.0, 0.0, None
    for start in range(0, prepared.n_obs, rows):
        chunk = prepared.rows(start, start + rows)
        log_joint, features = model.log_density(constants, chunk)
        log_joint += log_weights
        log_px = log_normalise(log_joint)
        resp = log_joint
        total += float(chunk.weights @ log_px)
        if not unit_weights:
            resp *= chunk.weights[:, None]
        counts = counts + resp.sum(axis=0)
        chunk_stats = model.statistics(resp, chunk, features)
        statistics = chunk_stats if statistics is None else {
            key: statistics[key] + value for key, value in chunk_stats.items()}
    return Pass(total, np.asarray(counts), statistics)


def e_step(model, params: dict, prepared, n_features: int, rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Responsibilities (n_obs, K) and log p(x_n) (n_obs,) of one parameter set, chunk by chunk.

    The E-step alone (no sufficient statistics, frequency weights not applied), with temporaries bounded
    by the chunk size like :func:`data_pass`; ``rows`` per chunk, by default :func:`chunk_rows`'.
    """
    rows = chunk_rows(prepared.n_obs, model.chunk_width(n_features)) if rows is None else rows
    constants = model.e_step_constants(params, prepared)
    with np.errstate(divide="ignore"):
        log_weights = np.log(params["weights"])
    resp = np.empty((prepared.n_obs, log_weights.size))
    log_density = np.empty(prepared.n_obs)
    for start in range(0, prepared.n_obs, rows):
        log_joint, _ = model.log_density(constants, prepared.rows(start, start + rows))
        log_joint += log_weights
        log_density[start:start + rows] = log_normalise(log_joint)
        resp[start:start + rows] = log_joint
    return resp, log_density


def weights_step(counts: np.ndarray, concentration: np.ndarray | None) -> np.ndarray:
    """Mixing weights: N_k / N (MLE), or the Dirichlet posterior mode (MAP) clipped at zero."""
    if concentration is None:
        return counts / counts.sum()
    mass = np.maximum(counts + concentration - 1.0, 0.0)
    return mass / mass.sum()
