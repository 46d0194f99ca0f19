"""What the MCMC engine computes after sampling, kept to what its readers need."""

import numpy as np
import pytest

import mixflow
from mixflow.data import validate_data
from mixflow.engines import modes


def _one_mode(n_chains: int = 2, n_draws: int = 30):
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.normal(-2.0, 1.0, 20), rng.normal(2.0, 1.0, 20)])[:, None]
    estimate = {"weights": np.array([0.5, 0.5]), "mu": np.array([[-2.0], [2.0]]), "covariance": np.ones((2, 1, 1))}
    shape = (n_chains, n_draws)
    draws = {"weights": (("chain", "draw", "component"), np.broadcast_to(estimate["weights"], (*shape, 2)).copy()),
             "mu": (("chain", "draw", "component", "feature"),
                    estimate["mu"] + 0.1 * rng.standard_normal((*shape, 2, 1))),
             "covariance": (("chain", "draw", "component", "feature", "feature_"),
                            np.broadcast_to(estimate["covariance"], (*shape, 2, 1, 1)).copy())}
    log_likelihood = rng.normal(-2.0, 0.1, (*shape, x.shape[0]))
    return mixflow.GaussianMixture(2), validate_data(x), draws, log_likelihood, estimate


def test_one_mode_has_weight_one_and_records_the_model_s_psis_loo():
    """One mode: weight 1 (nothing to stack), and its PSIS-LOO recorded as several modes' are, with the Pareto
    shapes its reliability is read from (a stored 'reliable' beside values never computed would say nothing)."""
    model, data, draws, log_likelihood, estimate = _one_mode()
    group = modes.mode_summaries(model, data, draws, log_likelihood, estimate, np.zeros(2, np.int64))
    variables = group["variables"]
    assert variables["weight"][1].tolist() == [1.0] and group["attrs"]["n_modes"] == 1
    assert variables["lpd_loo"][0] == ("obs", "mode") and variables["lpd_loo"][1].shape == (data.n_obs, 1)
    expected, k, threshold = modes.loo_pointwise(log_likelihood, draws)
    np.testing.assert_allclose(variables["lpd_loo"][1][:, 0], expected, rtol=1e-12)
    assert variables["elpd_loo"][1][0] == pytest.approx(expected.sum(), rel=1e-12)
    assert variables["max_pareto_k"][1][0] == k and variables["loo_reliable"][1][0] == (k <= threshold)
    assert np.isfinite(variables["log_likelihood"][1]).all() and np.isfinite(variables["max_rhat"][1]).all()


def test_two_modes_still_stack_by_psis_loo():
    model, data, draws, log_likelihood, estimate = _one_mode(n_chains=2)
    group = modes.mode_summaries(model, data, draws, log_likelihood, estimate, np.array([0, 1]))
    variables = group["variables"]
    assert np.isfinite(variables["lpd_loo"][1]).all() and np.isfinite(variables["max_pareto_k"][1]).all()
    assert variables["weight"][1].sum() == pytest.approx(1.0)
