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


def test_one_mode_has_weight_one_without_psis_loo(monkeypatch):
    model, data, draws, log_likelihood, estimate = _one_mode()

    def no_loo(*args, **kwargs):
        raise AssertionError("PSIS-LOO computed for a single mode")

    monkeypatch.setattr(modes, "loo_pointwise", no_loo)
    group = modes.mode_summaries(model, data, draws, log_likelihood, estimate, np.zeros(2, np.int64))
    variables = group["variables"]
    assert variables["weight"][1].tolist() == [1.0] and group["attrs"]["n_modes"] == 1
    assert variables["lpd_loo"][0] == ("obs", "mode") and variables["lpd_loo"][1].shape == (data.n_obs, 1)
    for name in ("lpd_loo", "elpd_loo", "max_pareto_k"):  # the same variables as with several modes, not computed
        assert np.isnan(variables[name][1]).all()
    assert np.isfinite(variables["log_likelihood"][1]).all() and np.isfinite(variables["max_rhat"][1]).all()


def test_two_modes_still_stack_by_psis_loo():
    model, data, draws, log_likelihood, estimate = _one_mode(n_chains=2)
    group = modes.mode_summaries(model, data, draws, log_likelihood, estimate, np.array([0, 1]))
    variables = group["variables"]
    assert np.isfinite(variables["lpd_loo"][1]).all() and np.isfinite(variables["max_pareto_k"][1]).all()
    assert variables["weight"][1].sum() == pytest.approx(1.0)
