"""The PyMC form of a Gaussian mixture (:class:`mixflow.families.gaussian.model.GaussianMixture`).

The model is the declared one, term for term: the mixing weights and component parameters with exactly
the prior the EM engine maximises under ``method="map"``, and the mixture likelihood with the discrete
labels summed out (one log-sum-exp over components, vectorised over observations, each row counted by
its frequency weight). Its density over (weights, component parameters), without the Jacobians of the
unconstraining transforms (``model.compile_logp(jacobian=False)``), is the EM MAP objective plus a
constant; ``pm.find_MAP`` on it lands on the EM MAP estimate.

Parameterisation (what the sampler sees). The data are standardised, ``z = (x - center) / scale`` with
the weighted mean and per-feature standard deviation (one common scale for "spherical", so spheres stay
spheres); the Normal-Inverse-Wishart and Normal-Inverse-Gamma priors are location-scale families, so
the prior maps exactly into z units and the Jacobian of the map is a constant. The free variables are

- ``weights`` ~ Dirichlet (PyMC's simplex transform);
- ``covariance_std`` ~ InverseWishart(dof, scale_z), one per component ("full") or one ("tied"), over
  symmetric positive-definite matrices, unconstrained by PyMC's ``CholeskyCovTransform`` (the Cholesky
  factor with log diagonal; its log-Jacobian ``d log 2 + sum_i (d - i + 2) log L_ii`` is added by PyMC);
  ``variance_std`` ~ InverseGamma(dof / 2, scale_z / 2) for "diag" and "spherical" (log transform);
- ``mu_std`` | dispersion ~ Normal(mean_z, dispersion / shrinkage), centred (the likelihood dominates).

``weights``, ``mu`` and ``covariance`` / ``variance`` in data units are ``pm.Deterministic`` with the
dims of the EM estimate. The likelihood is a ``pm.Potential`` named ``log_likelihood`` (in data units):
the labels are marginalised, so there is no observed random variable; posterior predictive draws and
pointwise log-likelihoods are computed by :mod:`mixflow.engines.mcmc` from the draws.

Minibatches (ADVI): ``build_model(..., minibatch_size=B)`` draws the rows through ``pm.Minibatch`` and
scales the likelihood by ``n_obs / B`` (the shared plumbing of :mod:`mixflow.families.pymc_parts`).

Labels (:func:`label_signature`): the mean in z units, the log standard deviation per feature in z units
(when the dispersion is per component) and the square root of the weight
(:func:`mixflow.families.relabel.gaussian_signature`).
"""

from dataclasses import dataclass
from functools import partial

import numpy as np
import pymc as pm
import pytensor.tensor as pt
from pymc.distributions.transforms import CholeskyCovTransform
from pytensor.tensor.linalg import solve_triangular
from scipy.special import multigammaln

from mixflow.data import Data
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
from mixflow.families.relabel import Signature, gaussian_signature

__all__ = ["Standardization", "build_model", "free_values", "label_signature", "standardization"]


@dataclass(frozen=True)
class Standardization:
    """The affine map of the data to z units, ``z = (x - center) / scale``.

    Attributes
    ----------
    center : ndarray of shape (n_features,)
        Weighted data mean.
    scale : ndarray of shape (n_features,)
        Weighted standard deviation per feature (1 where a feature is constant); all equal to the root
        mean variance for "spherical".
    """

    center: np.ndarray
    scale: np.ndarray


def standardization(model, data: Data) -> Standardization:
    """The standardisation :func:`build_model` uses for ``data`` (weighted mean and sd).

    Parameters
    ----------
    model : GaussianMixture
    data : mixflow.data.Data

    Returns
    -------
    Standardization
    """
    center, variance = weighted_moments(data)
    if model.covariance == "spherical":
        variance = np.full_like(variance, variance.mean())
    scale = np.sqrt(np.where(variance > 0, variance, 1.0))
    return Standardization(center, scale)


def _dispersion_unit(covariance: str, std: Standardization) -> np.ndarray:
    """What a covariance or variance in z units is multiplied by to be in data units."""
    s = std.scale
    if covariance in ("full", "tied"):
        return np.outer(s, s)
    return s**2 if covariance == "diag" else s[0] ** 2


def _prior_in_z_units(covariance: str, prior, std: Standardization) -> dict:
    """Hyperparameters of the same prior expressed for z = (x - center) / scale."""
    scale_z = np.asarray(prior.scale, dtype=float) / _dispersion_unit(covariance, std)
    return {"mean": (prior.mean - std.center) / std.scale, "scale": scale_z, "dof": float(prior.dof),
            "shrinkage": float(prior.shrinkage), "concentration": np.asarray(prior.concentration, dtype=float)}


def _cholesky(matrix, square_root: bool):
    """The lower Cholesky factor of SPD ``matrix`` (..., d, d); with ``square_root``, of 1 x 1 matrices.

    Of the transform's value ``L @ L.T`` PyTensor's rewrites take ``L`` itself: no decomposition runs. At d = 1
    they first make the product an elementwise square and the decomposition stays: its gradient holds an op that
    PyTensor's numba backend cannot key for its disk cache (``Blockwise{AllocDiag}``), so the ADVI step would be
    compiled anew in every process. The factor of a 1 x 1 matrix is its square root, which is what the decomposition
    computes. Not with one component: numba then fails on the log density's graph so reduced (NUTS), as it does on
    the ADVI step's with the decomposition (see the ADVI engine's fallback).
    """
    return pt.sqrt(matrix) if square_root else pt.linalg.cholesky(matrix)


def _inverse_wishart_logp(dof: float, d: int, square_root: bool):
    """Log density of InverseWishart(dof, scale) at SPD ``value`` (..., d, d), given chol(scale).

    The normalising constant is an input of the graph, like the data (:func:`graph_input`).
    """
    constant = graph_input("inverse_wishart_constant", -0.5 * dof * d * np.log(2.0) - multigammaln(dof / 2.0, d))

    def logp(value, dof_, scale_chol):
        factor = _cholesky(value, square_root)
        log_det = 2.0 * pt.sum(pt.log(pt.diagonal(factor, axis1=-2, axis2=-1)), axis=-1)
        log_det_scale = 2.0 * pt.sum(pt.log(pt.diagonal(scale_chol, axis1=-2, axis2=-1)), axis=-1)
        trace = pt.sum(solve_triangular(factor, scale_chol, lower=True) ** 2, axis=(-2, -1))
        return constant + 0.5 * (dof_ * log_det_scale - (dof_ + d + 1) * log_det - trace)

    return logp


def _inverse_wishart_mode(value, size, dof_, scale_chol):
    mode = scale_chol @ scale_chol.mT / (dof_ + scale_chol.shape[-1] + 1)
    return mode if size is None else pt.full((*size, *mode.shape[-2:]), mode)


def _component_priors(covariance: str, hyper: dict, d: int, square_root: bool):
    """Declare the component parameters in z units; return (mu_std, dispersion_std) tensors."""
    dof, scale = hyper["dof"], hyper["scale"]
    mean, kappa = graph_input("prior_mean", hyper["mean"]), graph_input("shrinkage", hyper["shrinkage"])
    if covariance in ("full", "tied"):
        dims = ("component", "feature", "feature_") if covariance == "full" else ("feature", "feature_")
        scale_chol = graph_input("scale_chol", np.linalg.cholesky(scale))
        cov = pm.CustomDist("covariance_std", graph_input("dof", dof), scale_chol,
                            logp=_inverse_wishart_logp(dof, d, square_root),
                            support_point=_inverse_wishart_mode, signature="(),(p,p)->(p,p)",
                            transform=CholeskyCovTransform(d), dims=dims)
        chol = _cholesky(cov, square_root) / pt.sqrt(kappa)
        if square_root:  # the same density; MvNormal's gradient holds the op numba cannot key at d = 1 (see _cholesky)
            mu = pm.Normal("mu_std", mu=mean, sigma=chol[..., 0], dims=("component", "feature"))
        else:
            mu = pm.MvNormal("mu_std", mu=mean, chol=chol, dims=("component", "feature"))
        return mu, cov
    shape = ("component", "feature") if covariance == "diag" else ("component",)
    scale_z = graph_input("prior_scale", scale if covariance == "diag" else float(scale))
    variance = pm.InverseGamma("variance_std", alpha=graph_input("dof", dof) / 2.0, beta=scale_z / 2.0, dims=shape)
    sd = pt.sqrt(variance / kappa)
    mu = pm.Normal("mu_std", mu=mean, sigma=sd if covariance == "diag" else sd[:, None],
                   dims=("component", "feature"))
    return mu, variance


def _quadratic_terms(covariance: str, mu, dispersion, z, d: int, square_root: bool):
    """Pieces of -2 log N(z | mu_k, Sigma_k): features @ quad - 2 z @ linear + offset, shape (m, K).

    The quadratic form (z - mu)' P (z - mu) is expanded so that every term is one matrix product over
    rows (as in the EM E-step): ``outer(z) @ quad`` with the d(d+1)/2 products z_i z_j, i <= j.
    """
    if covariance in ("full", "tied"):
        factor = _cholesky(dispersion, square_root)
        inverse_factor = solve_triangular(factor, pt.eye(d), lower=True)
        precision = inverse_factor.mT @ inverse_factor
        log_det = 2.0 * pt.sum(pt.log(pt.diagonal(factor, axis1=-2, axis2=-1)), axis=-1)
        rows, cols = np.triu_indices(d)
        twice = np.where(rows == cols, 1.0, 2.0)
        features = z[:, rows] * z[:, cols]
        if covariance == "tied":
            linear = mu @ precision  # (K, d)
            quad = features @ (precision[rows, cols] * twice)[:, None]
        else:
            linear = pt.sum(precision * mu[:, None, :], axis=-1)  # (K, d)
            quad = features @ (precision[:, rows, cols] * twice).T
        offset = pt.sum(linear * mu, axis=-1) + log_det
        return quad - 2.0 * z @ linear.T + offset
    if covariance == "diag":
        inverse = 1.0 / dispersion
        offset = pt.sum(mu**2 * inverse, axis=-1) + pt.sum(pt.log(dispersion), axis=-1)
        return (z**2) @ inverse.T - 2.0 * z @ (mu * inverse).T + offset
    inverse = 1.0 / dispersion
    offset = pt.sum(mu**2, axis=-1) * inverse + d * pt.log(dispersion)
    return pt.sum(z**2, axis=1, keepdims=True) * inverse - 2.0 * (z @ mu.T) * inverse + offset


def build_model(model, data: Data, prior=None, *, minibatch_size: int | None = None) -> pm.Model:
    """Build the PyMC model of ``model`` for ``data``, with exactly the declared prior.

    Parameters
    ----------
    model : GaussianMixture
        The declaration.
    data : mixflow.data.Data
        Validated data (:func:`mixflow.data.validate_data`); frequency weights count each row.
    prior : ResolvedGaussianPrior, optional
        The prior with its data-scaled defaults filled in; by default
        ``model.resolve_prior(model.prepare(data))``, the one EM uses.
    minibatch_size : int, optional
        Rows per minibatch (ADVI). None uses every row in every evaluation (MCMC).

    Returns
    -------
    pymc.Model
        Coords ``component``, ``feature``, ``feature_``. Free variables ``weights``, ``mu_std``,
        ``covariance_std`` / ``variance_std`` (z units); deterministics ``mu`` and ``covariance`` /
        ``variance`` (data units); the potential ``log_likelihood``.
    """
    check_inputs(data, prior, minibatch_size, ("concentration", "mean", "dof", "scale"))
    if prior is None:
        prior = model.resolve_prior(model.prepare(data))
    std = standardization(model, data)
    hyper = _prior_in_z_units(model.covariance, prior, std)
    k, d = model.n_components, data.n_features
    square_root = d == 1 and k > 1  # the 1 x 1 Cholesky factor (see _cholesky)
    z = (data.values - std.center) / std.scale
    frequency = data.frequency
    coords = {"component": np.arange(k), "feature": data.features, "feature_": data.features}
    with pm.Model(coords=coords) as pymc_model:
        weights = dirichlet_weights(hyper["concentration"])
        mu_std, dispersion = _component_priors(model.covariance, hyper, d, square_root)
        (rows,), row_weights, factor = data_rows((z,), frequency, minibatch_size)
        log_density = -0.5 * (_quadratic_terms(model.covariance, mu_std, dispersion, rows, d, square_root)
                              + d * LOG_2PI)
        mixture_potential(weights, log_density, row_weights, factor,
                          offset=graph_input("log_jacobian", -float(np.log(std.scale).sum())))
        pm.Deterministic("mu", graph_input("center", std.center) + graph_input("scale", std.scale) * mu_std,
                         dims=("component", "feature"))
        unit = graph_input("dispersion_unit", _dispersion_unit(model.covariance, std))
        if model.covariance in ("full", "tied"):
            dims = ("component", "feature", "feature_") if model.covariance == "full" else ("feature", "feature_")
            pm.Deterministic("covariance", dispersion * unit, dims=dims)
        else:
            pm.Deterministic("variance", dispersion * unit,
                             dims=("component", "feature") if model.covariance == "diag" else ("component",))
    return pymc_model


def free_values(model, data: Data, params: dict, *, min_weight: float = 1e-8) -> dict:
    """Values of the free variables (z units, untransformed) for parameters in data units.

    Parameters
    ----------
    model : GaussianMixture
    data : mixflow.data.Data
    params : dict
        ``weights`` (K,), ``mu`` (K, d), ``covariance`` / ``variance`` as in the EM estimate.
    min_weight : float
        Weights are lifted to at least this (and renormalised) so that a start is inside the simplex.

    Returns
    -------
    dict
        ``{"weights": ..., "mu_std": ..., "covariance_std" | "variance_std": ...}``.
    """
    std = standardization(model, data)
    out = {"weights": lifted_weights(params["weights"], min_weight), "mu_std": (params["mu"] - std.center) / std.scale}
    name = "covariance" if model.covariance in ("full", "tied") else "variance"
    out[f"{name}_std"] = params[name] / _dispersion_unit(model.covariance, std)
    return out


def label_signature(model, data: Data) -> Signature:
    """The per-component signature of :func:`mixflow.families.relabel.gaussian_signature` at the data's scale."""
    return Signature(partial(gaussian_signature, data_scale=standardization(model, data).scale),
                     "squared distance of (mu / data sd, log sd per feature, sqrt(weight))")
