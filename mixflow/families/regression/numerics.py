"""Mixture-of-regressions numerics: residual densities, Gram statistics and weighted least squares.

The model is ``y_n = x_n' beta_k + e_n``, ``e_n ~ N(0, variance_k)`` for the component k of row n.
The work happens in standardised coordinates (covariates and response divided by their weighted standard
deviations, and with an intercept centred at their weighted means), which keeps the one-pass Gram sums
accurate and their products inside float64 whatever the data's units; the coefficients are converted
back to data coordinates at the boundary, so users only ever see those.

For a chunk, ``design`` D (m, p) holds the intercept column of ones (if any) and the centred covariates,
``response`` the centred response, and ``outer`` the d(d+1)/2 products of the augmented row ``[D, y]``
(d = p + 1), formed once. The M-step statistic of component k is ``sum_n r_nk w_n outer_n``: from it
come ``D'WD``, ``D'Wy`` and ``y'Wy``, hence weighted least squares and the residual sum of squares.
"""

from dataclasses import dataclass

import numpy as np

from mixflow.families.gaussian.numerics import PRECISION_FLOOR, outer_features, unpack_symmetric
from mixflow.families.scaling import standardise

__all__ = ["Coordinates", "gram_blocks", "log_density", "m_step"]

LOG_2PI = np.log(2 * np.pi)


@dataclass(frozen=True)
class Coordinates:
    """The affine map between data and working coordinates of the coefficients.

    The working response is ``(y - response_mean) / response_scale`` and the working covariates
    ``(x_j - covariate_mean_j) / covariate_scale_j`` (no shifts without an intercept), so the working
    coefficients are ``beta_j s_j / s_y`` and the intercept absorbs the shifts; working variances are the
    data's divided by ``s_y^2``.

    Attributes
    ----------
    covariate_mean : ndarray of shape (q,)
        Weighted mean of the covariates (zeros without an intercept).
    response_mean : float
        Weighted mean of the response (zero without an intercept).
    intercept : bool
    covariate_scale : ndarray of shape (q,)
        Weighted standard deviation of each covariate (1 for a constant one).
    response_scale : float
        Weighted standard deviation of the response (1 for a constant one).
    log_response_scale : float
        ``log(response_scale)``.

    """

    covariate_mean: np.ndarray
    response_mean: float
    intercept: bool
    covariate_scale: np.ndarray
    response_scale: float
    log_response_scale: float

    def units(self) -> np.ndarray:
        """Data units of each coefficient over those of the response: 1 for the intercept, 1 / s_j."""
        scales = 1.0 / self.covariate_scale
        return np.concatenate([[1.0], scales]) if self.intercept else scales

    def to_working(self, coefficients: np.ndarray) -> np.ndarray:
        """Data-coordinate coefficients (..., p) to working ones: the intercept absorbs the shifts."""
        out = np.array(coefficients, dtype=float, copy=True)
        if self.intercept:
            out[..., 0] += out[..., 1:] @ self.covariate_mean - self.response_mean
        with np.errstate(over="ignore", under="ignore"):
            return out / self.units() / self.response_scale

    def to_data(self, coefficients: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_working`."""
        with np.errstate(over="ignore", under="ignore"):
            out = np.asarray(coefficients, dtype=float) * self.response_scale * self.units()
        if self.intercept:
            out[..., 0] -= out[..., 1:] @ self.covariate_mean - self.response_mean
        return out

    def variance_to_working(self, variance: np.ndarray) -> np.ndarray:
        """Noise variances from data to working units (divided by ``s_y^2``)."""
        return np.asarray(variance, dtype=float) / self.response_scale / self.response_scale

    def variance_to_data(self, variance: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`variance_to_working`."""
        with np.errstate(over="ignore", under="ignore"):
            return np.asarray(variance, dtype=float) * self.response_scale * self.response_scale

    def linear_map(self, p: int) -> np.ndarray:
        """Matrix N with ``V0_data = N V0_working N'`` for the prior's coefficient covariance V0.

        ``beta_data = s_y N beta_working + const``; N is unit upper triangular (the intercept's shift)
        times the diagonal of coefficient units 1 / s_j.
        """
        matrix = np.eye(p)
        if self.intercept:
            matrix[0, 1:] = -self.covariate_mean
        with np.errstate(over="ignore", under="ignore"):
            return matrix * self.units()[None, :]


def design_and_response(covariates: np.ndarray, response: np.ndarray, weights: np.ndarray,
                        intercept: bool) -> tuple[np.ndarray, np.ndarray, Coordinates]:
    """Working design (n, p), working response (n,) and the coordinates that produced them.

    Covariates and response are standardised (:func:`mixflow.families.scaling.standardise`): centred
    with an intercept, divided by their weighted standard deviations in any case.
    """
    x_units = standardise(covariates, weights)
    y_units = standardise(response[:, None], weights)
    x_scale, y_scale = x_units.scale, float(y_units.scale[0])
    if intercept:
        coordinates = Coordinates(x_units.center, float(y_units.center[0]), True, x_scale, y_scale,
                                  float(y_units.log_scale[0]))
        design = np.column_stack([np.ones(len(response)), x_units.working])
        return design, y_units.working[:, 0], coordinates
    coordinates = Coordinates(np.zeros(covariates.shape[1]), 0.0, False, x_scale, y_scale,
                              float(y_units.log_scale[0]))
    return covariates / x_scale, response / y_scale, coordinates


def augmented_outer(design: np.ndarray, response: np.ndarray) -> np.ndarray:
    """Products of the augmented rows ``[D, y]``, shape (n, (p+1)(p+2)/2)."""
    return outer_features(np.column_stack([design, response]))


def log_density(coefficients: np.ndarray, variance: np.ndarray, design: np.ndarray,
                response: np.ndarray) -> np.ndarray:
    """Log N(y_n | D_n beta_k, variance_k) for a chunk in working coordinates, shape (m, K)."""
    residuals = response[:, None] - design @ coefficients.T
    residuals *= residuals
    residuals /= variance
    residuals += np.log(variance) + LOG_2PI
    residuals *= -0.5
    return residuals


def gram_blocks(gram: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Packed per-component statistics (K, T) to ``D'WD`` (K, p, p), ``D'Wy`` (K, p) and ``y'Wy`` (K,)."""
    full = unpack_symmetric(gram, p + 1)
    return full[:, :p, :p], full[:, :p, p], full[:, p, p]


def _cholesky_each(matrices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cholesky factors of a stack of symmetric matrices, and which are sound.

    Sound: the factor's smallest diagonal entry above 1e-10 of the square root of the matrix's largest diagonal
    entry. Each matrix's factor is its own (whatever the others): the stack is factorised together, and when that
    fails (a matrix not positive definite), those with a positive smallest eigenvalue together, the others (and
    all, if that fails too) one by one; a matrix with no factor, or not finite, is not sound.
    """
    factors = np.full(matrices.shape, np.nan)
    try:
        factors[:] = np.linalg.cholesky(matrices)
    except np.linalg.LinAlgError:
        finite = np.isfinite(matrices).all(axis=(1, 2))
        positive = np.zeros(len(matrices), bool)
        positive[finite] = np.linalg.eigvalsh(matrices[finite])[:, 0] > 0
        alone = np.flatnonzero(finite & ~positive).tolist()
        try:
            factors[positive] = np.linalg.cholesky(matrices[positive])
        except np.linalg.LinAlgError:
            alone += np.flatnonzero(positive).tolist()
        for index in alone:
            try:
                factors[index] = np.linalg.cholesky(matrices[index])
            except np.linalg.LinAlgError:
                pass
    largest = np.abs(np.diagonal(matrices, axis1=1, axis2=2)).max(axis=1)
    with np.errstate(invalid="ignore"):
        sound = np.diagonal(factors, axis1=1, axis2=2).min(axis=1) > 1e-10 * np.sqrt(largest)
    return factors, sound


def _solve_all(matrices: np.ndarray, rhs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every component's symmetric system ``(K, p, p)``, ``(K, p)`` solved: the solutions and which were singular.

    A sound system (:func:`_cholesky_each`) is solved by its Cholesky factor's two triangular systems, in one
    batch; a singular one by its minimum-norm least-squares answer (``numpy.linalg.lstsq``, whose SVD rescales
    its matrix: a nearly empty component's entries can be subnormal).
    """
    factors, sound = _cholesky_each(matrices)
    solutions = np.empty(rhs.shape)
    if sound.any():
        half = np.linalg.solve(factors[sound], rhs[sound][..., None])
        solutions[sound] = np.linalg.solve(np.swapaxes(factors[sound], 1, 2), half)[..., 0]
    for index in np.flatnonzero(~sound).tolist():
        solutions[index] = np.linalg.lstsq(matrices[index], rhs[index], rcond=None)[0]
    return solutions, ~sound


def m_step(counts: np.ndarray, gram: np.ndarray, p: int, prior: dict | None,
           floor: float) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Weighted least squares per component (MLE), or the Normal-Inverse-Gamma posterior mode (MAP).

    Parameters
    ----------
    counts : ndarray of shape (K,)
        Weighted responsibility totals N_k.
    gram : ndarray of shape (K, (p+1)(p+2)/2)
        Summed packed products of the augmented rows.
    p : int
        Number of coefficients.
    prior : dict or None
        In working coordinates: ``mean`` (p,), ``precision`` (p, p) (the inverse of V0), ``shape`` and
        ``scale`` of the inverse-gamma prior on the variance.
    floor : float
        The smallest variance of any component (working units of the response's variance): a component's own
        floor is the larger of it and what its sums resolve, :data:`PRECISION_FLOOR` times the magnitude of the
        terms its residual sum of squares is formed from (``yy``, ``2 |b| |xy|`` and ``|b| |xx| |b|``, over its
        count). A variance below its own floor is lifted to it (the component is reported as collapsed).

    Returns
    -------
    coefficients : ndarray of shape (K, p)
        In working coordinates.
    variance : ndarray of shape (K,)
    collapsed : list of int
        Components whose design was singular or whose variance was floored.

    """
    xx, xy, yy = gram_blocks(gram, p)
    if prior is None:
        coefficients, singular = _solve_all(xx, xy)
        penalty, numerator, denominator = 0.0, 0.0, counts
    else:
        coefficients, singular = _solve_all(xx + prior["precision"], xy + prior["precision"] @ prior["mean"])
        gap = coefficients - prior["mean"]
        penalty = np.einsum("kp,pq,kq->k", gap, prior["precision"], gap)
        numerator, denominator = 2.0 * prior["scale"], counts + p + 2.0 * prior["shape"] + 2.0
    residual_ss = np.maximum(yy - 2.0 * np.einsum("kp,kp->k", coefficients, xy)
                             + np.einsum("kp,kpq,kq->k", coefficients, xx, coefficients), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        variance = (numerator + residual_ss + penalty) / denominator
    # the one-pass residual sum of squares cancels terms of this size: its rounding, not the data, sets the variances
    # below a small share of it (a line through the rows exactly), while a tight line among wide ones keeps its own
    size = np.abs(coefficients)
    magnitude = (np.abs(yy) + 2.0 * np.einsum("kp,kp->k", size, np.abs(xy))
                 + np.einsum("kp,kpq,kq->k", size, np.abs(xx), size))
    with np.errstate(divide="ignore", invalid="ignore"):
        own = np.fmax(PRECISION_FLOOR * magnitude / denominator, floor)
    own = np.where(np.isfinite(own), own, floor)
    low = singular | ~(variance >= own)
    variance[low] = np.where(np.isfinite(variance[low]), np.maximum(variance[low], own[low]), own[low])
    collapsed = np.flatnonzero(low).tolist()
    return coefficients, variance, collapsed
