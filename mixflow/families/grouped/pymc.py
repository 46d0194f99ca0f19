"""The PyMC model of :class:`mixflow.GroupedGaussianMixture`: class counts, exact or at the midpoints.

With ``likelihood="interval"`` the log-likelihood is the grouped one the EM maximises,
``sum_j n_j log sum_k pi_k P_jk`` with ``P_jk = Phi(beta_jk) - Phi(alpha_jk)``, ``alpha_jk = (a_j - mu_k) / s_k``
and ``beta_jk = (b_j - mu_k) / s_k``. ``log P_jk`` is formed from log-CDFs as in
:func:`~mixflow.families.grouped.model.interval_log_probability`
(``log Phi(beta) + log(1 - exp(log Phi(alpha) - log Phi(beta)))``,
on the reflected interval ``(-beta, -alpha)`` when ``alpha > 0``), so that neither tail loses its digits.
Classes declared open (``open_below`` / ``open_above``) have ``P_jk = Phi(beta_jk)`` or ``1 - Phi(alpha_jk)``;
their infinite limit is replaced by a finite stand-in before any arithmetic and the branch is chosen by a
constant mask, so no infinity (and no NaN gradient) ever enters the graph. With ``likelihood="midpoint"``
each class is its midpoint counted n_j times (the open limits play no part), as in the EM.

The prior is the grouped EM's MAP prior: the one-feature :class:`mixflow.GaussianPrior`, i.e. weights ~
Dirichlet, variance ~ InverseGamma(dof / 2, scale / 2) (one per component, or one shared with
``common_variance``; in one dimension the inverse Wishart of "tied" is this inverse gamma), and
mu_k | variance ~ Normal(mean, variance / shrinkage).

The sampler sees the standardised parameters ``mu_std = (mu - center) / scale`` and
``variance_std = variance / scale**2``, with ``center`` and ``scale`` the count-weighted mean and sd of
the class midpoints (the EM's centring); the prior maps exactly into these units. ``weights``, ``mu``
and ``variance`` in data units are ``pm.Deterministic`` with the dims of the EM estimate.
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
)
from mixflow.families.relabel import Signature, gaussian_signature

__all__ = ["build_model", "free_values", "grouped_scale", "interval_log_probability_tensor", "label_signature",
           "log_standard_cdf"]

def log_standard_cdf(x):
    """Log Phi(x) of a tensor: ``log(erfcx(-x / sqrt 2) / 2) - x^2 / 2`` below 0, else ``log1p(-erfc(x / sqrt 2) / 2)``.

    (PyMC's ``normal_lcdf`` switches at -1 and loses about 8 digits just above it, where
    ``1 - erfc / 2`` cancels.)
    """
    lower = pt.log(pt.erfcx(-x / np.sqrt(2.0)) / 2.0) - 0.5 * x**2
    return pt.switch(pt.lt(x, 0.0), lower, pt.log1p(-pt.erfc(x / np.sqrt(2.0)) / 2.0))


def interval_log_probability_tensor(alpha, beta):
    """log(Phi(beta) - Phi(alpha)) for finite alpha < beta, accurate in both tails (tensors)."""
    upper_tail = pt.gt(alpha, 0.0)
    low = pt.switch(upper_tail, -beta, alpha)
    high = pt.switch(upper_tail, -alpha, beta)
    log_high = log_standard_cdf(high)
    return log_high + pt.log1mexp(log_standard_cdf(low) - log_high)


def grouped_scale(model, data: Data) -> tuple[float, float]:
    """``(center, scale)`` of the standardisation: count-weighted mean and sd of the class midpoints."""
    constants = model.prepare(data).constants
    return float(constants["center"][0]), float(constants["scale"][0])


def _class_arrays(model, data: Data) -> dict:
    """Per-class arrays in z units: finite stand-in limits, open-end masks and midpoints, shape (m,)."""
    prepared = model.prepare(data)  # its limits and midpoints are already in z units
    low, high = prepared.arrays["low"], prepared.arrays["high"]
    open_low, open_high = ~np.isfinite(low), ~np.isfinite(high)
    # stand-ins keep every branch finite: an open limit becomes the other limit -/+ 1 (or -1, 1 when both are)
    low_safe = np.where(open_low, np.where(open_high, -1.0, high - 1.0), low)
    high_safe = np.where(open_high, np.where(open_low, 1.0, low + 1.0), high)
    return {"low": low_safe, "high": high_safe, "open_low": open_low.astype(float),
            "open_high": open_high.astype(float), "midpoint": prepared.arrays["z"][:, 0]}


def _prior_in_z_units(prior, center: float, scale: float) -> dict:
    return {"concentration": np.asarray(prior.concentration, dtype=float),
            "mean": float((np.ravel(prior.mean)[0] - center) / scale), "shrinkage": float(prior.shrinkage),
            "dof": float(prior.dof), "scale": float(np.ravel(prior.scale)[0]) / scale**2}


def _class_log_probability(rows: dict, mu, sd, likelihood: str):
    """Log P(class j | component k) (interval) or log N(midpoint_j | mu_k, sd_k) (z units), shape (m, K)."""
    if likelihood == "midpoint":
        standard = (rows["midpoint"][:, None] - mu) / sd
        return -0.5 * standard**2 - pt.log(sd) - 0.5 * LOG_2PI
    alpha = (rows["low"][:, None] - mu) / sd
    beta = (rows["high"][:, None] - mu) / sd
    open_low, open_high = rows["open_low"][:, None], rows["open_high"][:, None]
    one_sided = pt.switch(pt.gt(open_low, 0.5), log_standard_cdf(beta), log_standard_cdf(-alpha))
    finite = interval_log_probability_tensor(alpha, beta)
    either = pt.switch(pt.gt(open_low + open_high, 0.5), one_sided, finite)
    return pt.switch(pt.gt(open_low * open_high, 0.5), pt.zeros_like(finite), either)


def build_model(model, data: Data, prior=None, *, minibatch_size: int | None = None) -> pm.Model:
    """Build the PyMC model of a :class:`mixflow.GroupedGaussianMixture` for class counts.

    Parameters
    ----------
    model : GroupedGaussianMixture
    data : mixflow.data.Data
        Validated classes (lower and upper limits) with the counts as frequency weights.
    prior : ResolvedGaussianPrior, optional
        Default ``model.resolve_prior(model.prepare(data))``, the prior the grouped MAP-EM maximises.
    minibatch_size : int, optional
        Classes per evaluation, drawn uniformly; the likelihood is scaled by ``n_obs / minibatch_size``.

    Returns
    -------
    pymc.Model
        Coords ``component``. Free variables ``weights`` (component), ``mu_std`` (component) and
        ``variance_std`` (component, or () with a common variance); deterministics ``mu`` and
        ``variance`` (data units); the potential ``log_likelihood``.
    """
    if getattr(model, "family", None) != "grouped_gaussian":
        raise InputTypeError(f"model: expected a mixflow GroupedGaussianMixture, got {type(model).__name__}")
    check_inputs(data, prior, minibatch_size, ("concentration", "mean", "shrinkage", "dof", "scale"))
    if prior is None:
        prior = model.resolve_prior(model.prepare(data))
    center, scale = grouped_scale(model, data)
    hyper = _prior_in_z_units(prior, center, scale)
    variance_dims = () if model.common_variance else ("component",)
    with pm.Model(coords={"component": np.arange(model.n_components)}) as pymc_model:
        weights = dirichlet_weights(hyper["concentration"])
        variance = pm.InverseGamma("variance_std", alpha=graph_input("dof", hyper["dof"]) / 2.0,
                                   beta=graph_input("prior_scale", hyper["scale"]) / 2.0, dims=variance_dims)
        mu = pm.Normal("mu_std", mu=graph_input("prior_mean", hyper["mean"]),
                       sigma=pt.sqrt(variance / graph_input("shrinkage", hyper["shrinkage"])), dims="component")
        arrays = _class_arrays(model, data)
        rows, counts, factor = data_rows(tuple(arrays.values()), data.frequency, minibatch_size)
        log_density = _class_log_probability(dict(zip(arrays, rows, strict=True)), mu, pt.sqrt(variance),
                                             model.likelihood)
        offset = -float(np.log(scale)) if model.likelihood == "midpoint" else 0.0  # densities in data units
        mixture_potential(weights, log_density, counts, factor, graph_input("log_jacobian", offset))
        center, scale = graph_input("center", center), graph_input("scale", scale)
        pm.Deterministic("mu", center + scale * mu, dims="component")
        pm.Deterministic("variance", variance * scale**2, dims=variance_dims)
    return pymc_model


def free_values(model, data: Data, params: dict, *, min_weight: float = 1e-8) -> dict:
    """Values of the free variables (untransformed) for parameters in data units (e.g. the EM estimate).

    Weights are lifted to at least ``min_weight`` and renormalised, so that the start is inside the simplex.
    """
    center, scale = grouped_scale(model, data)
    return {"weights": lifted_weights(params["weights"], min_weight),
            "mu_std": (np.asarray(params["mu"], dtype=float) - center) / scale,
            "variance_std": np.asarray(params["variance"], dtype=float) / scale**2}


def label_signature(model, data: Data) -> Signature:
    """``signature(params) -> (..., K, F)`` for :func:`mixflow.families.relabel.align` (mean, log sd, sqrt weight).

    A common variance carries no label and is left out, as for the Gaussian family's "tied" covariance.
    """
    _, scale = grouped_scale(model, data)
    data_scale = np.array([scale])

    def signature(params: dict) -> np.ndarray:
        mu = np.asarray(params["mu"], dtype=float)[..., None]
        variance = np.asarray(params["variance"], dtype=float)
        dispersion = ({"covariance": np.broadcast_to(variance[..., None, None], mu.shape[:-2] + (1, 1))}
                      if model.common_variance else {"variance": variance})
        return gaussian_signature({"weights": params["weights"], "mu": mu, **dispersion}, data_scale)

    spread = "" if model.common_variance else "log sd, "
    return Signature(signature, f"squared distance of (mu / midpoint sd, {spread}sqrt(weight))")
