"""Data drawn from a fitted mixture: one sampler per family, and the responsibilities of one E-step.

:func:`simulate_data` draws a replicate data set shaped like the observed one (the parametric
bootstrap, posterior predictive draws and predictive plots use it); :func:`simulate` draws points from
a Gaussian mixture of any covariance type.
"""

import functools

import numpy as np

from mixflow.data import Data
from mixflow.engines.em_steps import e_step
from mixflow.families.gaussian import GaussianMixture
from mixflow.families.poisson import PoissonMixture
from mixflow.families.regression import RegressionMixture
from mixflow.grouped import GroupedGaussianMixture
from mixflow.kmeans import SoftKMeans

__all__ = ["class_of", "full_covariances", "regression_design", "responsibilities", "simulate", "simulate_data"]


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


def simulate(params: dict, n_obs: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n_obs`` points from a Gaussian mixture; returns (x (n_obs, d), labels (n_obs,))."""
    mu = np.asarray(params["mu"], dtype=float)
    factors = np.linalg.cholesky(full_covariances(params, mu.shape[1]))
    labels = rng.choice(mu.shape[0], size=n_obs, p=params["weights"] / params["weights"].sum())
    noise = rng.standard_normal((n_obs, mu.shape[1]))
    return mu[labels] + np.einsum("nij,nj->ni", factors[labels], noise), labels


def _expanded_rows(data: Data, what: str) -> np.ndarray:
    """Row index of every frequency unit (a row of integer weight w repeated w times)."""
    if data.weights is None:
        return np.arange(data.n_obs)
    if not np.array_equal(data.weights, np.round(data.weights)):
        raise ValueError(f"weights: expected integer frequency weights to {what} unit by unit, got non-integer "
                         f"weights such as {data.weights[data.weights != np.round(data.weights)][0]!r}")
    return np.repeat(np.arange(data.n_obs), data.weights.astype(np.int64))


def _n_units(data: Data) -> int:
    return max(int(round(data.total_weight)), 1)


def _labels(params: dict, n: int, rng: np.random.Generator) -> np.ndarray:
    weights = np.asarray(params["weights"], dtype=float)
    return rng.choice(weights.size, size=n, p=weights / weights.sum())


@functools.singledispatch
def simulate_data(model, params: dict, data: Data, rng: np.random.Generator) -> Data:
    """A replicate data set drawn from the fitted mixture, shaped like ``data`` (same columns).

    Gaussian and soft k-means: as many points as the total weight, unweighted. Poisson: as many counts.
    Regression: the covariates as observed (each unit of a row's integer weight its own row), new
    responses. Grouped data: as many values, counted into the observed classes (the new weights).

    Parameters
    ----------
    model : MixtureModel
    params : dict of str to ndarray
        One set of the model's parameters (an estimate or a draw).
    data : mixflow.data.Data
        The observed data (their columns, weights, classes or covariates).
    rng : numpy.random.Generator

    Returns
    -------
    mixflow.data.Data

    """
    raise NotImplementedError(f"model: no sampler for the {getattr(model, 'family', type(model).__name__)!r} "
                              "family yet")


@simulate_data.register
def _(model: GaussianMixture, params, data, rng):
    x, _ = simulate(params, _n_units(data), rng)
    return Data(values=x, features=data.features, obs=np.arange(x.shape[0]), weights=None)


@simulate_data.register
def _(model: SoftKMeans, params, data, rng):
    spherical = {**params, "variance": np.full(np.asarray(params["weights"]).size, model.variance)}
    return simulate_data.dispatch(GaussianMixture)(model, spherical, data, rng)


@simulate_data.register
def _(model: PoissonMixture, params, data, rng):
    n = _n_units(data)
    counts = rng.poisson(np.asarray(params["rate"], dtype=float)[_labels(params, n, rng)])
    return Data(values=counts[:, None].astype(float), features=data.features, obs=np.arange(n), weights=None)


def regression_design(model: RegressionMixture, data: Data) -> tuple[np.ndarray, int]:
    """The design matrix (intercept column first, then the covariates) and the response column index."""
    features = [str(f) for f in data.features]
    columns = [data.values[:, features.index(c)] for c in model.covariates]
    design = np.column_stack(([np.ones(data.n_obs)] if model.intercept else []) + columns)
    return design, features.index(model.response)


@simulate_data.register
def _(model: RegressionMixture, params, data, rng):
    rows = _expanded_rows(data, "simulate a regression's responses")
    design, response = regression_design(model, data)
    labels = _labels(params, rows.size, rng)
    coefficients, variance = np.asarray(params["coefficients"]), np.asarray(params["variance"], dtype=float)
    values = data.values[rows].copy()
    values[:, response] = np.einsum("np,np->n", design[rows], coefficients[labels]) + np.sqrt(
        variance[labels]) * rng.standard_normal(rows.size)
    return Data(values=values, features=data.features, obs=np.arange(rows.size), weights=None)


def class_of(model: GroupedGaussianMixture, data: Data, values: np.ndarray) -> np.ndarray:
    """Row of the class each value falls in: the last class (by lower limit) starting at or below it."""
    lower, _ = model._bounds(data)
    order = np.argsort(lower, kind="stable")
    position = np.searchsorted(lower[order], values, side="right") - 1
    return order[np.clip(position, 0, lower.size - 1)]


@simulate_data.register
def _(model: GroupedGaussianMixture, params, data, rng):
    n = _n_units(data)
    labels = _labels(params, n, rng)
    sd = np.broadcast_to(np.sqrt(np.asarray(params["variance"], dtype=float)), np.shape(params["mu"]))
    values = np.asarray(params["mu"], dtype=float)[labels] + sd[labels] * rng.standard_normal(n)
    counts = np.bincount(class_of(model, data, values), minlength=data.n_obs).astype(float)
    return Data(values=data.values.copy(), features=data.features, obs=data.obs.copy(), weights=counts)


def responsibilities(model, params: dict, data: Data) -> np.ndarray:
    """Posterior component probabilities of each observation, shape (n_obs, K) (one E-step)."""
    return e_step(model, params, model.prepare(data), data.n_features)[0]
