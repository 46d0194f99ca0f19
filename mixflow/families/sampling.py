"""Helpers for drawing data from a fitted mixture, shared by the families' samplers.

Each family draws a replicate of its data with its own ``simulate_data`` method (the parametric bootstrap,
posterior predictive draws and predictive plots use it); these are the pieces they share.
"""

import numpy as np

from mixflow.data import Data
from mixflow.errors import InputError

__all__ = ["by_draw_chunks", "component_labels", "component_labels_of_draws", "expanded_rows", "full_covariances",
           "gaussian_points", "gaussian_points_of_draws", "gaussian_replicates", "n_units"]

#: Elements of the largest temporary array a vectorised replicate of many draws builds at once (about 32 MB)
CHUNK_ELEMENTS = 1 << 22


def full_covariances(params: dict, n_features: int) -> np.ndarray:
    """Any covariance type's parameters as (K, d, d) covariance matrices."""
    k, d = params["weights"].size, n_features
    if "covariance" in params:
        return np.broadcast_to(params["covariance"], (k, d, d)).copy()
    if "variance" in params:
        variance = np.asarray(params["variance"], dtype=float)
        diagonal = np.broadcast_to(variance[:, None] if variance.ndim == 1 else variance, (k, d))
        return np.einsum("kd,de->kde", diagonal, np.eye(d))
    raise NotImplementedError(f"params: expected Gaussian parameters (covariance or variance), got {sorted(params)}")


def gaussian_points(params: dict, n_obs: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n_obs`` points from a Gaussian mixture; returns (x (n_obs, d), labels (n_obs,))."""
    mu = np.asarray(params["mu"], dtype=float)
    factors = np.linalg.cholesky(full_covariances(params, mu.shape[1]))
    labels = component_labels(params, n_obs, rng)
    noise = rng.standard_normal((n_obs, mu.shape[1]))
    return mu[labels] + np.einsum("nij,nj->ni", factors[labels], noise), labels


def expanded_rows(data: Data, what: str) -> np.ndarray:
    """Row index of every frequency unit (a row of integer weight w repeated w times)."""
    if data.weights is None:
        return np.arange(data.n_obs)
    if not np.array_equal(data.weights, np.round(data.weights)):
        raise InputError(f"weights: expected integer frequency weights to {what} unit by unit, got non-integer "
                         f"weights such as {data.weights[data.weights != np.round(data.weights)][0]!r}")
    return np.repeat(np.arange(data.n_obs), data.weights.astype(np.int64))


def n_units(data: Data) -> int:
    """How many units a replicate of ``data`` has: its total weight, at least one."""
    return max(int(round(data.total_weight)), 1)


def component_labels(params: dict, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` component labels drawn with the mixing weights."""
    weights = np.asarray(params["weights"], dtype=float)
    return rng.choice(weights.size, size=n, p=weights / weights.sum())


def component_labels_of_draws(weights: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` component labels per draw (S, n), each row drawn with that draw's mixing weights (S, K).

    Inverse-CDF sampling, as :meth:`numpy.random.Generator.choice` does for one set of weights: the cumulative sums
    divided by their last, so that it is exactly 1 and a component of weight 0 is never drawn, last ones included.
    """
    cdf = np.cumsum(np.asarray(weights, dtype=float), axis=1)
    cdf /= cdf[:, -1:]
    uniform = rng.random((cdf.shape[0], n))
    return (uniform[:, :, None] >= cdf[:, None, :-1]).sum(axis=2)


def gaussian_points_of_draws(draws: dict, n_obs: int, rng: np.random.Generator) -> np.ndarray:
    """:func:`gaussian_points` for every draw at once: ``draws`` holds (S, ...) arrays; returns (S, n_obs, d)."""
    mu = np.asarray(draws["mu"], dtype=float)
    count, k, d = mu.shape
    factors = np.linalg.cholesky(_covariances_of_draws(draws, count, k, d))
    labels = component_labels_of_draws(draws["weights"], n_obs, rng)
    rows = np.arange(count)[:, None]
    noise = rng.standard_normal((count, n_obs, d))
    return mu[rows, labels] + np.einsum("snij,snj->sni", factors[rows, labels], noise)


def _covariances_of_draws(draws: dict, count: int, k: int, d: int) -> np.ndarray:
    """Every draw's covariance matrices (S, K, d, d), whatever the covariance type."""
    if "covariance" in draws:
        covariance = np.asarray(draws["covariance"], dtype=float)
        return np.broadcast_to(covariance[:, None] if covariance.ndim == 3 else covariance, (count, k, d, d))
    variance = np.asarray(draws["variance"], dtype=float)
    diagonal = np.broadcast_to(variance[:, :, None] if variance.ndim == 2 else variance, (count, k, d))
    return np.einsum("skd,de->skde", diagonal, np.eye(d))


def by_draw_chunks(replicate, draws: dict, per_draw: int) -> np.ndarray:
    """``replicate(chunk)`` over chunks of the draws (``draws`` sliced alike), concatenated along the draws.

    Each chunk holds at most :data:`CHUNK_ELEMENTS` of the per-draw size ``per_draw`` (at least one draw).
    """
    count = np.shape(draws["weights"])[0]
    step = max(1, CHUNK_ELEMENTS // max(per_draw, 1))
    return np.concatenate([replicate({name: value[start:start + step] for name, value in draws.items()})
                           for start in range(0, count, step)])


def gaussian_replicates(draws: dict, data: Data, rng: np.random.Generator) -> np.ndarray:
    """(S, n_units, d) replicates of ``data``, one per draw of ``draws`` ((S, ...) arrays of Gaussian parameters).

    Drawn in chunks of draws that keep the temporary arrays small.
    """
    _, k, d = np.shape(draws["mu"])
    n = n_units(data)
    return by_draw_chunks(lambda chunk: gaussian_points_of_draws(chunk, n, rng), draws, n * max(d * d, k))
