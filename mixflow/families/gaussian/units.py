"""Gaussian parameters and priors between data units and the standardised working units EM runs in.

With ``z = (x - center) / scale`` (per feature; one common scale for "spherical"), a component
N(mu, Sigma) in data units is N((mu - center) / scale, S^-1 Sigma S^-1) in working units, S = diag(scale).
The maps divide or multiply by one scale at a time, so ``Sigma / (s_i s_j)`` is formed as
``(Sigma / s_i) / s_j``: no intermediate ``s_i s_j`` can under- or overflow where the result would not.
"""

import numpy as np

from mixflow.errors import InputError
from mixflow.wording import agreeing

__all__ = ["check_positive_definite", "dispersion_to_data", "dispersion_to_working", "log_prior_jacobian", "to_data",
           "to_working"]


def dispersion_to_working(covariance_type: str, value: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """A covariance (..., d, d) or variances (..., d) / (...) in data units, divided by the scales."""
    value = np.asarray(value, dtype=float)
    if covariance_type in ("full", "tied"):
        return value / scale[:, None] / scale[None, :]
    if covariance_type == "diag":
        return value / scale / scale
    return value / scale[0] / scale[0]


def dispersion_to_data(covariance_type: str, value: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Inverse of :func:`dispersion_to_working` (under- or overflows only where the data-unit value does)."""
    value = np.asarray(value, dtype=float)
    with np.errstate(over="ignore", under="ignore"):
        if covariance_type in ("full", "tied"):
            return value * scale[:, None] * scale[None, :]
        if covariance_type == "diag":
            return value * scale * scale
        return value * scale[0] * scale[0]


def to_working(covariance_type: str, params: dict, center: np.ndarray, scale: np.ndarray) -> dict:
    """Parameters (``weights``, ``mu``, ``covariance`` or ``variance``) from data to working units.

    Raises a ValueError if a covariance is not positive definite (one that underflowed to zero in data
    units, for data near 1e-300, cannot be used to score data).
    """
    out = dict(params)
    out["mu"] = (np.asarray(params["mu"], dtype=float) - center) / scale
    name = "covariance" if covariance_type in ("full", "tied") else "variance"
    out[name] = dispersion_to_working(covariance_type, params[name], scale)
    check_positive_definite(name, out[name], covariance_type)
    return out


def check_positive_definite(name: str, value: np.ndarray, covariance_type: str) -> None:
    """Raise a ValueError naming the components whose covariance (variance) is not positive (definite)."""
    if covariance_type in ("full", "tied"):
        # by Cholesky, which succeeds or fails alike for a matrix and its diagonal rescalings (data and working
        # units): the smallest eigenvalue of a graded matrix (a tight feature beside a wide one) is known only to
        # eps of the largest, and its sign there is rounding
        matrices = value.reshape((-1,) + value.shape[-2:])
        bad = np.flatnonzero(~_factorable(matrices))
    else:
        smallest = np.atleast_1d(value).reshape(value.shape[0] if value.ndim else 1, -1).min(axis=1)
        bad = np.flatnonzero(~(smallest > 0))
    if bad.size:
        raise InputError(f"params[{name!r}]: expected a positive definite {name} for every component, got "
                         f"a singular or non-finite one for {agreeing(bad.size, 'component')} {bad.tolist()} in the "
                         "standardised units of the data: a variance of data near 1e-300 underflows to zero in data "
                         "units (rescale the data and fit again), or the data spread far beyond the components (rows "
                         "far from where the model was fitted)")


def _factorable(matrices: np.ndarray) -> np.ndarray:
    """Whether each of the (n, d, d) matrices has a finite Cholesky factor: one batched call, then one by one."""
    try:  # one batched call: this runs for every posterior draw
        if np.isfinite(np.linalg.cholesky(matrices)).all():
            return np.ones(matrices.shape[0], bool)
    except np.linalg.LinAlgError:
        pass
    out = np.zeros(matrices.shape[0], bool)
    for i, matrix in enumerate(matrices):
        try:
            out[i] = np.isfinite(matrix).all() and np.isfinite(np.linalg.cholesky(matrix)).all()
        except np.linalg.LinAlgError:
            pass
    return out


def to_data(covariance_type: str, params: dict, center: np.ndarray, scale: np.ndarray) -> dict:
    """Inverse of :func:`to_working`."""
    out = dict(params)
    with np.errstate(over="ignore", under="ignore"):
        out["mu"] = params["mu"] * scale + center
    name = "covariance" if covariance_type in ("full", "tied") else "variance"
    out[name] = dispersion_to_data(covariance_type, params[name], scale)
    return out


def log_prior_jacobian(covariance_type: str, log_scale: np.ndarray, n_components: int) -> float:
    """The log-Jacobian log |d theta_working / d theta_data| of the component parameters of ``n_components`` components.

    Adding it to the prior density of the working parameters gives the density of the data-unit
    parameters: a mean contributes ``-sum log s``; a d x d covariance ``-(d + 1) sum log s`` (the map
    Sigma -> S^-1 Sigma S^-1 of symmetric matrices); diagonal variances ``-2 sum log s``; a spherical
    variance ``-2 log s``.
    """
    d, total = log_scale.size, float(log_scale.sum())
    dispersion = {"full": (d + 1) * total * n_components, "tied": (d + 1) * total,
                  "diag": 2.0 * total * n_components, "spherical": 2.0 * log_scale[0] * n_components}
    return -(total * n_components + dispersion[covariance_type])
