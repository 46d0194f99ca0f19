"""The priors' log densities in closed form against scipy.stats, component by component."""

import numpy as np
import pytest
from scipy import stats

from mixflow.families.densities import (
    gamma_log_density,
    inverse_gamma_log_density,
    inverse_wishart_log_density,
    normal_log_density_of_factors,
)

RNG = np.random.default_rng(20261203)


def normal_log_density(x, mean, covariance):
    """The Normal density through the covariance's inverse Cholesky factor, as the priors form it."""
    factor = np.linalg.cholesky(covariance)
    log_det = 2.0 * np.log(np.diagonal(factor, axis1=-2, axis2=-1)).sum(axis=-1)
    return normal_log_density_of_factors(x, mean, np.linalg.inv(factor), log_det)


def _spd(d: int, size: int) -> np.ndarray:
    """``size`` random SPD matrices of very different scales and correlations."""
    factors = RNG.normal(size=(size, d, d)) * np.exp(RNG.normal(0, 2, size=(size, 1, 1)))
    return factors @ np.swapaxes(factors, -1, -2) + 1e-3 * np.eye(d)


@pytest.mark.parametrize("d", [1, 2, 5])
def test_inverse_wishart_of_each_covariance_is_scipys(d):
    covariances, scale = _spd(d, 4), _spd(d, 1)[0]
    for dof in (d - 0.5, d + 2.0, 40.0):
        value, _, log_det = inverse_wishart_log_density(covariances, dof, scale)
        expected = [stats.invwishart.logpdf(c, df=dof, scale=scale) for c in covariances]
        np.testing.assert_allclose(value, expected, rtol=1e-11)
        np.testing.assert_allclose(log_det, np.linalg.slogdet(covariances)[1], rtol=1e-11)


def test_inverse_wishart_of_one_covariance_is_a_number():
    covariance, scale = _spd(3, 1)[0], _spd(3, 1)[0]
    value, inverse, _ = inverse_wishart_log_density(covariance, 6.0, scale)
    assert np.ndim(value) == 0 and inverse.shape == (3, 3)
    assert value == pytest.approx(stats.invwishart.logpdf(covariance, df=6.0, scale=scale), rel=1e-12)


@pytest.mark.parametrize("d", [1, 3])
def test_normal_of_each_row_under_its_own_covariance_is_scipys(d):
    covariances, x, mean = _spd(d, 5), RNG.normal(size=(5, d)), RNG.normal(size=d)
    expected = [stats.multivariate_normal.logpdf(row, mean, c) for row, c in zip(x, covariances, strict=True)]
    np.testing.assert_allclose(normal_log_density(x, mean, covariances), expected, rtol=1e-11)


def test_normal_of_an_ill_conditioned_covariance_is_its_density():
    """Condition number 1e12: scipy's multivariate_normal refuses it; the density is still defined."""
    covariance, x = np.diag([1.0, 1e-12]), np.array([0.3, 2e-7])
    expected = stats.norm.logpdf(0.3, 0, 1) + stats.norm.logpdf(2e-7, 0, 1e-6)
    assert normal_log_density(x, np.zeros(2), covariance) == pytest.approx(expected, rel=1e-12)


def test_inverse_gamma_elementwise_is_scipys():
    x = np.exp(RNG.normal(0, 3, size=(4, 3)))
    shape, scale = np.array([0.5, 2.0, 30.0]), np.array([1e-3, 1.0, 1e4])
    np.testing.assert_allclose(inverse_gamma_log_density(x, shape, scale),
                               stats.invgamma.logpdf(x, shape, scale=scale), rtol=1e-12)


@pytest.mark.parametrize("shape", [0.5, 1.0, 3.0])
def test_gamma_elementwise_is_scipys_zero_included(shape):
    x = np.array([0.0, 1e-300, 0.7, 25.0])
    np.testing.assert_allclose(gamma_log_density(x, shape, 0.2), stats.gamma.logpdf(x, shape, scale=1 / 0.2),
                               rtol=1e-12)
