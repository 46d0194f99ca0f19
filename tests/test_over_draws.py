"""Responsibilities and pointwise log-likelihoods over posterior draws, against a naive scipy computation."""

import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

import mixflow
from mixflow.data import validate_data
from mixflow.engines import over_draws


def _draws(rng, count):
    weights = rng.dirichlet([5.0, 5.0, 5.0], size=count)
    mu = np.array([[-2.0, 0.0], [0.0, 1.0], [3.0, -1.0]]) + rng.normal(0, 0.2, size=(count, 3, 2))
    factors = rng.normal(0, 0.3, size=(count, 3, 2, 2)) + np.eye(2)
    return {"weights": weights, "mu": mu, "covariance": factors @ np.swapaxes(factors, -1, -2) + 0.1 * np.eye(2)}


@pytest.mark.parametrize("small_blocks", [False, True])
def test_responsibilities_over_draws_match_scipy(small_blocks, monkeypatch):
    rng = np.random.default_rng(4)
    x = rng.normal(0, 2, size=(50, 2))
    draws = _draws(rng, 9)
    if small_blocks:  # several blocks of draws and several chunks of rows, with short last ones
        monkeypatch.setattr(over_draws, "_BLOCK_FLOATS", 4 * 3 * 50)
        monkeypatch.setattr(over_draws, "chunk_rows", lambda n_obs, width: 7)
    out = over_draws.responsibilities_over_draws(mixflow.GaussianMixture(3), validate_data(x), draws,
                                                 log_likelihood=True)
    log_joint = np.stack([
        np.column_stack([np.log(draws["weights"][s, k]) + stats.multivariate_normal.logpdf(
            x, draws["mu"][s, k], draws["covariance"][s, k]) for k in range(3)])
        for s in range(9)])  # (draw, obs, component)
    log_px = logsumexp(log_joint, axis=2)
    resp = np.exp(log_joint - log_px[:, :, None])
    np.testing.assert_allclose(out["log_likelihood"], log_px, rtol=1e-12)
    np.testing.assert_allclose(out["mean"], resp.mean(axis=0), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(out["sd"], resp.std(axis=0, ddof=1), rtol=1e-6, atol=1e-10)


def test_one_draw_has_zero_spread():
    rng = np.random.default_rng(5)
    draws = {name: value[:1] for name, value in _draws(rng, 1).items()}
    out = over_draws.responsibilities_over_draws(mixflow.GaussianMixture(3), validate_data(rng.normal(size=(20, 2))),
                                                 draws)
    assert set(out) == {"mean", "sd"} and np.all(out["sd"] == 0.0)
    np.testing.assert_allclose(out["mean"].sum(axis=1), 1.0, rtol=1e-12)
