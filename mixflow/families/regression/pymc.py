"""The PyMC form of a mixture of linear regressions (:class:`mixflow.families.regression.model.RegressionMixture`).

The declared model, term for term: ``weights`` ~ Dirichlet(concentration), ``variance_k`` ~
InverseGamma(shape, scale) and ``coefficients_k | variance_k`` ~ Normal(mean, variance_k V0), the
Normal-Inverse-Gamma prior EM's MAP step uses (:meth:`RegressionMixture.resolve_prior`), and the mixture
likelihood of the responses, ``sum_n w_n log sum_k pi_k N(y_n | x_n' beta_k, variance_k)`` (the E-step's
residual densities), as a ``pm.Potential`` named ``log_likelihood``.

Parameterisation (what the sampler sees). The work happens in standardised coordinates: the working
design D of the EM engine (the intercept column and the covariates centred at their weighted mean, or the
raw covariates without an intercept) with each column divided by its weighted root mean square ``s_j``
(1 for the intercept), and the working response divided by its weighted root mean square ``s_y``. A row's
prediction is then ``D_n beta_w = s_y (D_n / s) beta_std``, so

- ``coefficients_std = to_working(coefficients) * s / s_y`` and ``variance_std = variance / s_y^2``;
- the prior maps exactly: ``variance_std`` ~ InverseGamma(shape, scale / s_y^2) and ``coefficients_std |
  variance_std`` ~ Normal(mean_w s / s_y, variance_std diag(s) P_w^-1 diag(s)) with the working prior
  mean ``mean_w`` and precision ``P_w`` of EM; the map from data units is affine with a constant Jacobian,
  so ``compile_logp(jacobian=False)`` is the EM MAP objective plus a constant.

The free variables are ``weights`` (simplex transform), ``coefficients_std`` (component, coefficient) and
``variance_std`` (component; log transform). ``coefficients`` and ``variance`` in data units are
``pm.Deterministic`` with the dims of the EM estimate.

Labels (:func:`label_signature`): the standardised coefficients, the log noise sd in units of the response
sd (``0.5 log variance_std``) and ``sqrt(weight)``.
"""

from dataclasses import dataclass
from functools import partial

import numpy as np

from mixflow.data import Data
from mixflow.families.pymc_parts import (
    LOG_2PI,
    check_inputs,
    data_rows,
    dirichlet_weights,
    graph_input,
    lifted_weights,
    mixture_potential,
)
from mixflow.families.relabel import Signature

__all__ = ["RegressionScales", "build_model", "free_values", "label_signature", "regression_signature", "scales"]


@dataclass(frozen=True)
class RegressionScales:
    """The standardisation of a regression mixture's working coordinates.

    Attributes
    ----------
    coordinates : mixflow.families.regression.numerics.Coordinates
        The shift between data and working coordinates (EM's).
    design : ndarray of shape (p,)
        Weighted root mean square of each working design column (1 for the intercept and where it is 0).
    response : float
        Weighted root mean square of the working response (1 where it is 0).
    """

    coordinates: object
    design: np.ndarray
    response: float

    def to_standard(self, coefficients: np.ndarray, variance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Coefficients (..., K, p) and variances (..., K) in data units to standardised ones."""
        working = self.coordinates.to_working(np.asarray(coefficients, dtype=float))
        return working * self.design / self.response, self.coordinates.variance_to_working(variance) / self.response**2


def scales(model, data: Data) -> RegressionScales:
    """The standardisation :func:`build_model` uses for ``data``."""
    prepared = model.prepare(data)
    return _scales(prepared)


def _scales(prepared) -> RegressionScales:
    w = prepared.weights / prepared.weights.sum()
    design = np.sqrt(w @ prepared.arrays["design"] ** 2)
    response = float(np.sqrt(w @ prepared.arrays["response"] ** 2))
    return RegressionScales(prepared.constants["coordinates"], np.where(design > 0, design, 1.0),
                            response if response > 0 else 1.0)


def build_model(model, data: Data, prior=None, *, minibatch_size: int | None = None):
    """Build the PyMC model of a mixture of regressions for ``data``, with exactly the declared prior.

    Parameters
    ----------
    model : RegressionMixture
    data : mixflow.data.Data
        Validated data with the response and covariate columns; frequency weights count each row.
    prior : ResolvedRegressionPrior, optional
        By default ``model.resolve_prior(model.prepare(data))``, the one EM uses.
    minibatch_size : int, optional
        Rows per minibatch (ADVI); None uses every row.

    Returns
    -------
    pymc.Model
        Coords ``component`` and ``coefficient``. Free variables ``weights``, ``coefficients_std`` and
        ``variance_std``; deterministics ``coefficients`` (component, coefficient) and ``variance``
        (component) in data units; the potential ``log_likelihood``.
    """
    import pymc as pm
    import pytensor.tensor as pt

    check_inputs(data, prior, minibatch_size, ("concentration", "mean", "covariance", "shape", "scale", "working"))
    prepared = model.prepare(data)
    if prior is None:
        prior = model.resolve_prior(prepared)
    std = _scales(prepared)
    design = prepared.arrays["design"] / std.design
    response = prepared.arrays["response"] / std.response
    mean = prior.working["mean"] * std.design / std.response
    covariance = np.linalg.inv(prior.working["precision"]) * np.outer(std.design, std.design)
    factor_v0 = np.linalg.cholesky(0.5 * (covariance + covariance.T))
    names = model.coefficient_names
    coords = {"component": np.arange(model.n_components), "coefficient": names}
    with pm.Model(coords=coords) as pymc_model:
        weights = dirichlet_weights(prior.concentration)
        variance = pm.InverseGamma("variance_std", alpha=graph_input("prior_shape", prior.shape),
                                   beta=graph_input("prior_scale", prior.working["scale"] / std.response**2),
                                   dims="component")
        coefficients = pm.MvNormal("coefficients_std", mu=graph_input("prior_mean", mean),
                                   chol=pt.sqrt(variance)[:, None, None] * graph_input("prior_chol", factor_v0),
                                   dims=("component", "coefficient"))
        (rows, ys), row_weights, factor = data_rows((design, response), prepared.weights, minibatch_size)
        residuals = ys[:, None] - rows @ coefficients.T
        log_density = -0.5 * (residuals**2 / variance + pt.log(variance) + LOG_2PI)
        offset = graph_input("log_jacobian", -float(np.log(std.response) + std.coordinates.log_response_scale))
        mixture_potential(weights, log_density, row_weights, factor, offset=offset)
        working = coefficients * graph_input("coefficient_unit", std.response / std.design)
        pm.Deterministic("coefficients", _to_data(working, std.coordinates, len(names)),
                         dims=("component", "coefficient"))
        pm.Deterministic("variance", variance * graph_input("variance_unit", std.response**2
                                                            * std.coordinates.response_scale**2), dims="component")
    return pymc_model


def _to_data(working, coordinates, p: int):
    """Working coefficients (K, p) tensor to data coordinates (the inverse of ``Coordinates.to_working``).

    The data's means and scales are inputs of the graph (:func:`graph_input`, float64: a Python float constant is
    tried as float16/float32 first, which overflows for data in units of 1e150).
    """
    working = working * graph_input("coefficient_data_unit", coordinates.response_scale * coordinates.units())
    if not coordinates.intercept:
        return working
    shift = (working[:, 1:] @ graph_input("covariate_mean", coordinates.covariate_mean)
             - graph_input("response_mean", coordinates.response_mean))
    return working - shift[:, None] * np.eye(p)[0]


def free_values(model, data: Data, params: dict, *, min_weight: float = 1e-8) -> dict:
    """Values of the free variables (standardised units, untransformed) for parameters in data units."""
    coefficients, variance = scales(model, data).to_standard(params["coefficients"], params["variance"])
    return {"weights": lifted_weights(params["weights"], min_weight), "coefficients_std": coefficients,
            "variance_std": variance}


def regression_signature(params: dict, standardisation: RegressionScales) -> np.ndarray:
    """Standardised coefficients, ``0.5 log variance_std`` and ``sqrt(weights)``, shape (..., K, p + 2)."""
    coefficients, variance = standardisation.to_standard(params["coefficients"], params["variance"])
    weights = np.asarray(params["weights"], dtype=float)
    return np.concatenate([coefficients, 0.5 * np.log(variance)[..., None], np.sqrt(weights)[..., None]], axis=-1)


def label_signature(model, data: Data) -> Signature:
    """The signature of :func:`regression_signature` at the data's scales."""
    return Signature(partial(regression_signature, standardisation=scales(model, data)),
                     "squared distance of (standardised coefficients, log noise sd / response sd, sqrt(weight))")
