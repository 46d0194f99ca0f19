"""Helpers for drawing data from a fitted mixture, shared by the families' samplers.

Each family draws a replicate of its data with its own ``simulate_data`` method (the parametric bootstrap,
posterior predictive draws and predictive plots use it); these are the pieces they share.
"""

import numpy as np

from mixflow.data import Data
from mixflow.errors import InputError

__all__ = ["component_labels", "expanded_rows", "full_covariances", "gaussian_points", "n_units"]


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
