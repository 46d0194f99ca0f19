"""Log densities of the priors' distributions, in closed form and over all components at once.

scipy.stats has every one of them, one component per call with its argument checks; a MAP objective is
evaluated at every EM iteration of every run, where those calls cost more than the pass over small data. These
are the textbook formulas (the same as scipy's), vectorised over components, with no checks: the engine calls
them only with valid parameters (positive variances, positive definite covariances).
"""

from functools import lru_cache

import numpy as np
from scipy.special import gammaln, multigammaln, xlogy

__all__ = ["dirichlet_log_density", "gamma_log_density", "inverse_gamma_log_density", "inverse_wishart_log_density",
           "normal_log_density_of_factors"]

_LOG_2PI = float(np.log(2.0 * np.pi))


def dirichlet_log_density(weights: np.ndarray, concentration: np.ndarray) -> float:
    """Log density of a Dirichlet distribution, with ``0 * log 0 = 0`` where the concentration is 1.

    Parameters
    ----------
    weights : ndarray of shape (n_components,)
    concentration : ndarray of shape (n_components,)

    """
    exponent = concentration - 1.0
    with np.errstate(divide="ignore"):
        log_w = np.log(weights)
    terms = np.multiply(exponent, log_w, out=np.zeros_like(log_w), where=exponent != 0)  # no 0 * -inf formed
    return float(gammaln(concentration.sum()) - gammaln(concentration).sum() + terms.sum())


def normal_log_density_of_factors(x: np.ndarray, mean: np.ndarray, inverse_factor: np.ndarray,
                                  log_determinant: np.ndarray) -> np.ndarray:
    """Log density of ``x`` (..., d) under N(mean, Sigma), one value per row, from Sigma's inverse Cholesky factor.

    ``inverse_factor`` is ``L^-1`` (..., d, d) for ``Sigma = L L^T``, ``log_determinant`` is ``log |Sigma|`` (...):
    defined for every covariance Cholesky accepts, however ill-conditioned, where scipy's
    ``multivariate_normal.logpdf`` refuses a condition number above about 1e10 (its eigenvalue threshold), which a
    MAP objective can meet at a legitimate EM point or an extrapolated one.
    """
    gaps = np.asarray(x, dtype=float) - mean
    whitened = np.einsum("...ij,...j->...i", inverse_factor, gaps)
    d = inverse_factor.shape[-1]
    return -0.5 * ((whitened * whitened).sum(axis=-1) + log_determinant + d * _LOG_2PI)


def inverse_wishart_log_density(covariance: np.ndarray, dof: float, scale: np.ndarray) -> tuple[np.ndarray, ...]:
    """Log density of each (..., d, d) covariance under an inverse Wishart with ``dof`` and ``scale`` (d, d).

    Returns the densities (...), and the covariances' inverse Cholesky factors and log determinants, which the
    Normal part of a Normal-inverse-Wishart prior reuses (:func:`normal_log_density_of_factors`).
    """
    factor = np.linalg.cholesky(covariance)
    inverse = np.linalg.inv(factor)
    log_det = _log_determinants(factor)
    precision = np.swapaxes(inverse, -1, -2) @ inverse
    trace = (precision * scale).sum(axis=(-2, -1))  # tr(scale @ precision): both symmetric
    d = covariance.shape[-1]
    value = _inverse_wishart_constant(float(dof), *_scale_key(scale)) - 0.5 * ((dof + d + 1) * log_det + trace)
    return value, inverse, log_det


def inverse_gamma_log_density(x: np.ndarray, shape, scale) -> np.ndarray:
    """Log density of positive ``x`` under an inverse gamma with ``shape`` and ``scale``, elementwise (scipy's)."""
    shape = np.asarray(shape, dtype=float)
    return shape * np.log(scale) - gammaln(shape) - (shape + 1.0) * np.log(x) - scale / x


def gamma_log_density(x: np.ndarray, shape, rate) -> np.ndarray:
    """Log density of ``x >= 0`` under a gamma with ``shape`` and ``rate``, elementwise (``xlogy`` at 0, as scipy's)."""
    shape = np.asarray(shape, dtype=float)
    return shape * np.log(rate) - gammaln(shape) + xlogy(shape - 1.0, x) - rate * x


def _log_determinants(factor: np.ndarray) -> np.ndarray:
    return 2.0 * np.log(np.diagonal(factor, axis1=-2, axis2=-1)).sum(axis=-1)


def _scale_key(scale: np.ndarray) -> tuple[bytes, int]:
    scale = np.ascontiguousarray(scale, dtype=float)
    return scale.tobytes(), scale.shape[-1]


@lru_cache(maxsize=64)
def _inverse_wishart_constant(dof: float, scale_bytes: bytes, d: int) -> float:
    """The inverse Wishart's normalising term: ``dof/2 log|scale| - dof d/2 log 2 - log Gamma_d(dof/2)``."""
    scale = np.frombuffer(scale_bytes).reshape(d, d)
    log_det = float(_log_determinants(np.linalg.cholesky(scale)))
    return 0.5 * dof * log_det - 0.5 * dof * d * np.log(2.0) - float(multigammaln(0.5 * dof, d))
