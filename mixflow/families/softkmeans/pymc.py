"""The PyMC model of :class:`mixflow.SoftKMeans`: a spherical Gaussian mixture with one fixed variance.

Only the weights and the means are free; every component is ``N(mu_k, variance I)`` with the declared
variance. The prior is :class:`mixflow.SoftKMeansPrior`, the one MAP-EM maximises: weights ~
Dirichlet(concentration) and mu_k ~ Normal(mean, variance I / shrinkage), independently.

The sampler sees ``mu_std = (mu - center) / scale`` with the weighted data mean as ``center`` and one
common ``scale`` for all features (the root mean weighted variance, as for the Gaussian family's
"spherical" covariance, so that spheres stay spheres); ``mu`` in data units is a ``pm.Deterministic``
with the dims of the EM estimate.
"""

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from mixflow.data import Data
from mixflow.errors import InputTypeError
from mixflow.families.pymc_parts import (
    LOG_2PI,
    check_inputs,
    data_rows,
    dirichlet_weights,
    graph_input,
    lifted_weights,
    mixture_potential,
    weighted_moments,
)
from mixflow.families.relabel import Signature

__all__ = ["build_model", "free_values", "label_signature", "soft_kmeans_scale"]

def soft_kmeans_scale(data: Data) -> tuple[np.ndarray, float]:
    """``(center, scale)``: the weighted data mean (d,) and the root of the mean weighted variance."""
    center, variances = weighted_moments(data)
    variance = float(variances.mean())
    return center, float(np.sqrt(variance)) if variance > 0 else 1.0


def build_model(model, data: Data, prior=None, *, minibatch_size: int | None = None) -> pm.Model:
    """Build the PyMC model of a :class:`mixflow.SoftKMeans` declaration.

    Parameters
    ----------
    model : SoftKMeans
    data : mixflow.data.Data
        Validated data of shape (n_obs, d); frequency weights count each row.
    prior : ResolvedSoftKMeansPrior, optional
        Default ``model.resolve_prior(model.prepare(data))``, the prior MAP-EM maximises.
    minibatch_size : int, optional
        Rows per evaluation, drawn uniformly; the likelihood is scaled by ``n_obs / minibatch_size``.

    Returns
    -------
    pymc.Model
        Coords ``component`` and ``feature``. Free variables ``weights`` (component) and ``mu_std``
        (component, feature); the deterministic ``mu`` (data units); the potential ``log_likelihood``.
    """
    if getattr(model, "family", None) != "soft_kmeans":
        raise InputTypeError(f"model: expected a mixflow SoftKMeans, got {type(model).__name__}")
    check_inputs(data, prior, minibatch_size, ("concentration", "mean", "shrinkage"))
    if prior is None:
        prior = model.resolve_prior(model.prepare(data))
    center, scale = soft_kmeans_scale(data)
    variance_z = model.variance / scale**2
    d = data.n_features
    coords = {"component": np.arange(model.n_components), "feature": data.features}
    with pm.Model(coords=coords) as pymc_model:
        weights = dirichlet_weights(prior.concentration)
        mu = pm.Normal("mu_std", mu=graph_input("prior_mean", (np.asarray(prior.mean, dtype=float) - center) / scale),
                       sigma=graph_input("prior_sd", np.sqrt(variance_z / prior.shrinkage)),
                       dims=("component", "feature"))
        (rows,), counts, factor = data_rows(((data.values - center) / scale,), data.frequency, minibatch_size)
        squared = pt.sum(rows**2, axis=1, keepdims=True) - 2.0 * rows @ mu.T + pt.sum(mu**2, axis=1)
        constant = graph_input("log_normaliser", -0.5 * d * (LOG_2PI + np.log(model.variance)))  # in data units
        mixture_potential(weights, -0.5 * squared / graph_input("variance_z", variance_z), counts, factor, constant)
        pm.Deterministic("mu", graph_input("center", center) + graph_input("scale", scale) * mu,
                         dims=("component", "feature"))
    return pymc_model


def free_values(model, data: Data, params: dict, *, min_weight: float = 1e-8) -> dict:
    """Values of the free variables for parameters in data units, weights lifted inside the simplex."""
    center, scale = soft_kmeans_scale(data)
    return {"weights": lifted_weights(params["weights"], min_weight),
            "mu_std": (np.asarray(params["mu"], dtype=float) - center) / scale}


def label_signature(model, data: Data) -> Signature:
    """``signature(params) -> (..., K, d + 1)``: the means in units of ``scale`` and sqrt(weight).

    The variance is fixed and common, so it carries no label.
    """
    _, scale = soft_kmeans_scale(data)

    def signature(params: dict) -> np.ndarray:
        mu = np.asarray(params["mu"], dtype=float) / scale
        return np.concatenate([mu, np.sqrt(np.asarray(params["weights"], dtype=float))[..., None]], axis=-1)

    return Signature(signature, "squared distance of (mu / data sd, sqrt(weight))")
