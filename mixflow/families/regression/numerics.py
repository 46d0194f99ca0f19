"""Mixture-of-regressions numerics: residual densities, Gram statistics and weighted least squares.

The model is ``y_n = x_n' beta_k + e_n``, ``e_n ~ N(0, variance_k)`` for the component k of row n.
With an intercept the work happens in centred coordinates (covariates minus their weighted mean, response
minus its weighted mean), which keeps the one-pass Gram sums accurate; the coefficients are converted
back to data coordinates at the boundary, so users only ever see those.

For a chunk, ``design`` D (m, p) holds the intercept column of ones (if any) and the centred covariates,
``response`` the centred response, and ``outer`` the d(d+1)/2 products of the augmented row ``[D, y]``
(d = p + 1), formed once. The M-step statistic of component k is ``sum_n r_nk w_n outer_n``: from it
come ``D'WD``, ``D'Wy`` and ``y'Wy``, hence weighted least squares and the residual sum of squares.
"""

from dataclasses import dataclass

import numpy as np
from scipy import linalg

from mixflow.families.gaussian.numerics import outer_features, unpack_symmetric

__all__ = ["Coordinates", "gram_blocks", "log_density", "m_step"]

LOG_2PI = np.log(2 * np.pi)


@dataclass(frozen=True)
class Coordinates:
    """The shift between data and working coordinates of the coefficients.

    Attributes
    ----------
    covariate_mean : ndarray of shape (q,)
        Weighted mean of the covariates (zeros without an intercept).
    response_mean : float
        Weighted mean of the response (zero without an intercept).
    intercept : bool

    """

    covariate_mean: np.ndarray
    response_mean: float
    intercept: bool

    def to_working(self, coefficients: np.ndarray) -> np.ndarray:
        """Data-coordinate coefficients (..., p) to centred ones: the intercept absorbs the shifts."""
        out = np.array(coefficients, dtype=float, copy=True)
        if self.intercept:
            out[..., 0] += out[..., 1:] @ self.covariate_mean - self.response_mean
        return out

    def to_data(self, coefficients: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_working`."""
        out = np.array(coefficients, dtype=float, copy=True)
        if self.intercept:
            out[..., 0] -= out[..., 1:] @ self.covariate_mean - self.response_mean
        return out

    def linear_map(self, p: int) -> np.ndarray:
        """Matrix A with ``beta_data = A beta_working + const``: unit upper triangular, determinant 1."""
        matrix = np.eye(p)
        if self.intercept:
            matrix[0, 1:] = -self.covariate_mean
        return matrix


def design_and_response(covariates: np.ndarray, response: np.ndarray, weights: np.ndarray,
                        intercept: bool) -> tuple[np.ndarray, np.ndarray, Coordinates]:
    """Working design (n, p), working response (n,) and the coordinates that produced them."""
    total = weights.sum()
    if intercept:
        covariate_mean = weights @ covariates / total
        response_mean = float(weights @ response / total)
        design = np.column_stack([np.ones(len(response)), covariates - covariate_mean])
    else:
        covariate_mean = np.zeros(covariates.shape[1])
        response_mean = 0.0
        design = covariates.copy()
    return design, response - response_mean, Coordinates(covariate_mean, response_mean, intercept)


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


def _solve(matrix: np.ndarray, rhs: np.ndarray) -> tuple[np.ndarray, bool]:
    """Solve a symmetric system by Cholesky; a minimum-norm least-squares answer if it is singular."""
    try:
        factor = linalg.cho_factor(matrix, lower=True, check_finite=False)
        if np.diag(factor[0]).min() > 1e-10 * np.sqrt(np.abs(np.diag(matrix)).max()):
            return linalg.cho_solve(factor, rhs, check_finite=False), False
    except linalg.LinAlgError:
        pass
    return np.linalg.lstsq(matrix, rhs, rcond=None)[0], True


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
        Variances below it are lifted to it (the component is reported as collapsed).

    Returns
    -------
    coefficients : ndarray of shape (K, p)
        In working coordinates.
    variance : ndarray of shape (K,)
    collapsed : list of int
        Components whose design was singular or whose variance was floored.

    """
    xx, xy, yy = gram_blocks(gram, p)
    k = counts.size
    coefficients, variance, collapsed = np.empty((k, p)), np.empty(k), []
    for j in range(k):
        if prior is None:
            beta, singular = _solve(xx[j], xy[j])
            penalty, numerator, denominator = 0.0, 0.0, counts[j]
        else:
            beta, singular = _solve(xx[j] + prior["precision"], xy[j] + prior["precision"] @ prior["mean"])
            gap = beta - prior["mean"]
            penalty = gap @ prior["precision"] @ gap
            numerator, denominator = 2.0 * prior["scale"], counts[j] + p + 2.0 * prior["shape"] + 2.0
        residual_ss = max(yy[j] - 2.0 * beta @ xy[j] + beta @ xx[j] @ beta, 0.0)
        coefficients[j] = beta
        variance[j] = (numerator + residual_ss + penalty) / denominator
        if singular or not variance[j] >= floor:
            collapsed.append(j)
            variance[j] = max(variance[j], floor) if np.isfinite(variance[j]) else floor
    return coefficients, variance, collapsed
