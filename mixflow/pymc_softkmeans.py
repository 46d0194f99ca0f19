"""The PyMC model of :class:`mixflow.SoftKMeans`: a spherical Gaussian mixture with one fixed variance.

Only the weights and the means are free; every component is ``N(mu_k, variance I)`` with the declared
variance. The prior is :class:`mixflow.kmeans.SoftKMeansPrior`, the one MAP-EM maximises: weights ~
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

__all__ = ["soft_kmeans_label_signature", "soft_kmeans_pymc_model", "soft_kmeans_scale", "soft_kmeans_start"]

LOG_2PI = float(np.log(2 * np.pi))


def soft_kmeans_scale(data: Data) -> tuple[np.ndarray, float]:
    """``(center, scale)``: the weighted data mean (d,) and the root of the mean weighted variance."""
    weights = data.frequency
    center = weights @ data.values / weights.sum()
    variance = float((weights @ (data.values - center) ** 2).mean() / weights.sum())
    return center, float(np.sqrt(variance)) if variance > 0 else 1.0


def _rows(z: np.ndarray, frequency: np.ndarray, minibatch_size):
    if minibatch_size is None:
        return pt.as_tensor(z), pt.as_tensor(frequency), 1.0
    rows, counts = pm.Minibatch(z, frequency, batch_size=int(minibatch_size))
    return rows, counts, z.shape[0] / int(minibatch_size)


def soft_kmeans_pymc_model(model, data: Data, prior=None, *, minibatch_size: int | None = None) -> pm.Model:
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
        raise TypeError(f"model: expected a mixflow SoftKMeans, got {type(model).__name__}")
    if not isinstance(data, Data):
        raise TypeError(f"data: expected validated mixflow.data.Data, got {type(data).__name__}")
    if minibatch_size is not None and (isinstance(minibatch_size, bool)
                                       or not isinstance(minibatch_size, int | np.integer)
                                       or not 1 <= minibatch_size <= data.n_obs):
        raise ValueError(f"minibatch_size: expected None or an integer in [1, n_obs = {data.n_obs}], "
                         f"got {minibatch_size!r}")
    if prior is None:
        prior = model.resolve_prior(model.prepare(data))
    center, scale = soft_kmeans_scale(data)
    variance_z = model.variance / scale**2
    d = data.n_features
    coords = {"component": np.arange(model.n_components), "feature": data.features}
    with pm.Model(coords=coords) as pymc_model:
        weights = pm.Dirichlet("weights", a=np.asarray(prior.concentration, dtype=float), dims="component")
        mu = pm.Normal("mu_std", mu=(np.asarray(prior.mean, dtype=float) - center) / scale,
                       sigma=float(np.sqrt(variance_z / prior.shrinkage)), dims=("component", "feature"))
        rows, counts, factor = _rows((data.values - center) / scale, data.frequency, minibatch_size)
        squared = pt.sum(rows**2, axis=1, keepdims=True) - 2.0 * rows @ mu.T + pt.sum(mu**2, axis=1)
        log_joint = pt.log(weights) - 0.5 * squared / variance_z
        constant = -0.5 * d * (LOG_2PI + np.log(model.variance))  # the density in data units
        log_px = pt.special.logsumexp(log_joint, axis=1) + constant
        pm.Potential("log_likelihood", factor * pt.sum(counts * log_px))
        pm.Deterministic("mu", center + scale * mu, dims=("component", "feature"))
    return pymc_model


def soft_kmeans_start(data: Data, params: dict, *, min_weight: float = 1e-8) -> dict:
    """Values of the free variables for parameters in data units, weights lifted inside the simplex."""
    center, scale = soft_kmeans_scale(data)
    weights = np.maximum(np.asarray(params["weights"], dtype=float), min_weight)
    return {"weights": weights / weights.sum(), "mu_std": (np.asarray(params["mu"], dtype=float) - center) / scale}


def soft_kmeans_label_signature(data: Data):
    """``signature(params) -> (..., K, d + 1)``: the means in units of ``scale`` and sqrt(weight).

    The variance is fixed and common, so it carries no label.
    """
    _, scale = soft_kmeans_scale(data)

    def signature(params: dict) -> np.ndarray:
        mu = np.asarray(params["mu"], dtype=float) / scale
        return np.concatenate([mu, np.sqrt(np.asarray(params["weights"], dtype=float))[..., None]], axis=-1)

    return signature
