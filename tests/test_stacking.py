"""Stacking of modes: the weights against references, the leave-one-out densities with few draws, the caveats."""

import warnings

import numpy as np
import pytest
from scipy.special import logsumexp

import mixflow
from mixflow.engines.modes import (
    DOMINANT_WEIGHT,
    _stacking,
    alike_modes,
    chain_moves,
    describe_modes,
    left_out_modes,
    mode_caveats,
    mode_summaries,
)
from mixflow.engines.stacking import (
    PSIS_MIN_DRAWS,
    combined_draws,
    importance_loo,
    loo_pointwise,
    stacking_weights,
    weight_intervals,
)
from mixflow.present.report.cards import _mcmc_convergence, _mcmc_rows
from mixflow.present.summary import summary_text

FAST = {"progressbar": False, "posterior_predictive": False}


def _naive_stacking_objective(lpd, weights, frequency=None):
    frequency = np.ones(lpd.shape[0]) if frequency is None else frequency
    return float(frequency @ np.log(np.exp(lpd) @ weights))


def _fixed_point_stacking(lpd, iterations=20000):
    """Reference: EM for the weights of a mixture of fixed densities (monotone, to the concave maximum)."""
    density = np.exp(lpd)
    weights = np.full(lpd.shape[1], 1.0 / lpd.shape[1])
    for _ in range(iterations):
        share = density * weights
        weights = (share / share.sum(axis=1, keepdims=True)).mean(axis=0)
    return weights


def _lpd(seed, n=200, k=3):
    rng = np.random.default_rng(seed)
    return rng.normal(-2.0, 1.0, (n, k)) + rng.normal(0, 0.5, k)


# -- stacking ---------------------------------------------------------------------------------------------
def test_stacking_weights_two_modes_match_a_grid_search():
    lpd = _lpd(0, k=2)
    grid = np.linspace(0, 1, 100001)
    values = [_naive_stacking_objective(lpd, np.array([w, 1 - w])) for w in grid]
    best = grid[int(np.argmax(values))]
    weights = stacking_weights(lpd)
    assert weights.sum() == pytest.approx(1.0, abs=1e-12) and np.all(weights >= 0)
    assert weights[0] == pytest.approx(best, abs=1e-4)  # the grid's step is 1e-5


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_stacking_weights_three_modes_match_the_fixed_point_iteration(seed):
    lpd = _lpd(seed)
    reference = _fixed_point_stacking(lpd)
    weights = stacking_weights(lpd)
    np.testing.assert_allclose(weights, reference, atol=2e-4)
    assert _naive_stacking_objective(lpd, weights) >= _naive_stacking_objective(lpd, reference) - 1e-8


def test_weight_intervals_are_quantiles_of_stackings_of_gamma_weighted_rows():
    """Against a naive reference: each replicate's two-mode stacking by a bounded scalar search."""
    from scipy.optimize import minimize_scalar

    lpd, frequency = _lpd(5, n=120, k=2), np.random.default_rng(6).integers(1, 4, 120).astype(float)
    low, high = weight_intervals(lpd, frequency, np.random.default_rng(7), replicates=60, prob=0.8)
    rng, firsts = np.random.default_rng(7), []
    for _ in range(60):
        g = rng.gamma(frequency)
        best = minimize_scalar(lambda w, g=g: -g @ np.log(w * np.exp(lpd[:, 0]) + (1 - w) * np.exp(lpd[:, 1])),
                               bounds=(0.0, 1.0), method="bounded", options={"xatol": 1e-10})
        firsts.append(best.x)
    np.testing.assert_allclose([low[0], high[0]], np.quantile(firsts, [0.1, 0.9]), atol=1e-5)
    np.testing.assert_allclose(low + high[::-1], [1.0, 1.0], atol=1e-5)  # two modes: the weights are w and 1 - w


def test_weight_intervals_are_narrow_when_the_data_tell_modes_apart_and_wide_when_not():
    rng = np.random.default_rng(8)
    base = rng.normal(-2.0, 1.0, 300)
    apart = np.column_stack([base, base - 0.5 + 0.1 * rng.standard_normal(300)])  # mode 1 worse by 150 units
    low, high = weight_intervals(apart, None, np.random.default_rng(0))
    assert low[0] > 0.99 and high[1] < 0.01
    alike = np.column_stack([base, base + 0.3 * rng.standard_normal(300)])  # the same on average, row by row noise
    low, high = weight_intervals(alike, None, np.random.default_rng(0))
    assert high[0] - low[0] > 0.3 and low[0] < 0.5 < high[0]
    assert [a.tolist() for a in weight_intervals(base[:, None], None, np.random.default_rng(0))] == [[1.0], [1.0]]


def test_stacking_weights_frequency_weights_count_repeated_rows():
    lpd = _lpd(4)
    frequency = np.arange(1, lpd.shape[0] + 1) % 3 + 1
    np.testing.assert_allclose(stacking_weights(lpd, frequency.astype(float)),
                               stacking_weights(np.repeat(lpd, frequency, axis=0)), atol=1e-6)


def test_stacking_weights_one_mode_dominates():
    lpd = _lpd(5, k=2)
    lpd[:, 1] = lpd[:, 0] - 3.0  # the second mode predicts every observation worse
    weights = stacking_weights(lpd)
    assert weights[0] > DOMINANT_WEIGHT
    assert stacking_weights(lpd[:, :1]).tolist() == [1.0]
    assert "the others are negligible" in describe_modes(np.array([0, 1]), weights)



def test_combined_draws_come_from_each_mode_in_proportion():
    draws = {"mu": (("chain", "draw", "component"), np.arange(4 * 1000 * 1.0).reshape(4, 1000, 1))}
    chain_mode = np.array([0, 1, 0, 1])
    out = combined_draws(draws, chain_mode, np.array([0.3, 0.7]), np.random.default_rng(0))
    dims, values = out["mu"]
    assert dims == ("chain", "draw", "component") and values.shape == (1, 4000, 1)
    chain = values[0, :, 0].astype(int) // 1000
    from_first = np.isin(chain, [0, 2]).mean()
    assert abs(from_first - 0.3) < 5 * np.sqrt(0.3 * 0.7 / 4000)  # a binomial proportion, 5 sd


# -- leave-one-out densities with few draws -------------------------------------------------------------------
def test_importance_loo_is_the_log_harmonic_mean_of_the_likelihood():
    rng = np.random.default_rng(0)
    log_likelihood = rng.normal(-2.0, 0.5, (2, 7, 5))
    naive = [-np.log(np.mean(1.0 / np.exp(log_likelihood[:, :, n].ravel()))) for n in range(5)]
    np.testing.assert_allclose(importance_loo(log_likelihood), naive, rtol=1e-12)
    np.testing.assert_allclose(importance_loo(log_likelihood[:1, :1]), log_likelihood[0, 0], rtol=1e-12)  # one draw


def _posterior(log_likelihood):
    rng = np.random.default_rng(1)
    return {"mu": (("chain", "draw"), rng.standard_normal(log_likelihood.shape[:2]))}


def _arviz_loo(log_likelihood):
    import arviz_stats as azs
    import xarray as xr

    tree = xr.DataTree.from_dict({"posterior": xr.Dataset({name: value for name, value in
                                                           _posterior(log_likelihood).items()}),
                                  "log_likelihood": xr.Dataset({"x": (("chain", "draw", "obs"), log_likelihood)})})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return azs.loo(tree, pointwise=True, var_name="x")


def test_psis_min_draws_is_where_arviz_stats_first_estimates_the_pareto_shape():
    """arviz_stats raises below 25 draws (a tail of fewer than 5), gives NaN shapes for 25-29 (a tail of 5)."""
    log_likelihood = np.random.default_rng(5).normal(-2.0, 0.5, (1, PSIS_MIN_DRAWS, 30))
    with pytest.raises((ValueError, IndexError)):
        _arviz_loo(log_likelihood[:, :24])
    assert np.isnan(_arviz_loo(log_likelihood[:, :PSIS_MIN_DRAWS - 1]).pareto_k.values).all()
    assert np.isfinite(_arviz_loo(log_likelihood).pareto_k.values).all() and PSIS_MIN_DRAWS == 30


@pytest.mark.parametrize("shape", [(1, 1), (1, 4), (2, 12), (1, 24), (2, 14), (1, 29)])
def test_fewer_than_30_draws_get_plain_importance_sampling_loo(shape):
    log_likelihood = np.random.default_rng(2).normal(-2.0, 0.5, (*shape, 30))
    elpd, max_k, good_k = loo_pointwise(log_likelihood, _posterior(log_likelihood))
    np.testing.assert_allclose(elpd, importance_loo(log_likelihood), rtol=1e-12)
    assert np.isnan(max_k) and np.isnan(good_k)


@pytest.mark.parametrize("shape", [(1, 30), (2, 15), (4, 500)])
def test_30_draws_get_psis_loo_and_arviz_stats_threshold_of_k(shape):
    log_likelihood = np.random.default_rng(3).normal(-2.0, 0.5, (*shape, 30))
    elpd, max_k, good_k = loo_pointwise(log_likelihood, _posterior(log_likelihood))
    assert np.isfinite(elpd).all() and np.isfinite(max_k)
    n_draws = shape[0] * shape[1]
    assert good_k == pytest.approx(min(1 - 1 / np.log10(n_draws), 0.7), rel=1e-12)  # 0.32 at 30 draws, 0.7 at 2000


def test_an_observation_constant_over_the_draws_has_its_value_as_loo_and_leaves_psis_to_the_others():
    # chains that never moved an observation's likelihood (a component stuck on a point) gave arviz_stats'
    # "All tail values are the same" for the whole fit
    rng = np.random.default_rng(5)
    log_likelihood = rng.normal(-2.0, 0.5, (2, 300, 6))
    posterior = _posterior(log_likelihood)
    with_constant = np.insert(log_likelihood, 2, -3.25, axis=2)
    elpd, max_k, good_k = loo_pointwise(with_constant, posterior)
    alone = loo_pointwise(log_likelihood, posterior)
    assert elpd[2] == pytest.approx(-3.25, rel=1e-14)
    np.testing.assert_allclose(np.delete(elpd, 2), alone[0], rtol=1e-14)
    assert (max_k, good_k) == alone[1:]
    every = np.full((2, 300, 3), -1.5)
    elpd, max_k, good_k = loo_pointwise(every, posterior)
    np.testing.assert_allclose(elpd, -1.5, rtol=1e-14)
    assert np.isnan(max_k) and np.isnan(good_k)


def test_draws_stuck_on_a_few_values_get_importance_sampling_loo_and_no_reliable_shape():
    rng = np.random.default_rng(6)
    log_likelihood = rng.normal(-2.0, 0.5, (2, 300, 4))
    log_likelihood[:, 50:, 1] = -5.0  # the largest ratios of observation 1 all equal
    elpd, max_k, good_k = loo_pointwise(log_likelihood, _posterior(log_likelihood))
    np.testing.assert_allclose(elpd, importance_loo(log_likelihood), rtol=1e-12)
    assert np.isnan(max_k) and np.isnan(good_k)


def test_draws_whose_pareto_shapes_are_all_undefined_warn_nothing():
    # a chain that barely moves: arviz_stats gives NaN shapes for every observation, and their maximum leaked
    # numpy's "All-NaN slice encountered" to the user of method=["map", "mcmc"]
    rng = np.random.default_rng(6)
    log_likelihood = rng.normal(-2.0, 0.5, (2, 300, 3))
    log_likelihood[:, 5:, :] = -2.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        elpd, max_k, good_k = loo_pointwise(log_likelihood, _posterior(log_likelihood))
    assert np.isfinite(elpd).all() and np.isnan(max_k)


@pytest.fixture(scope="module")
def two_mode_draws(two_groups_map_fit):
    return two_groups_map_fit[:3]


def _modes_of(two_mode_draws, n_draws, shift=0.5):
    """Two chains of ``n_draws`` about EM's estimate, the second's means shifted: two modes of a mixture."""
    from scipy import stats

    model, data, estimate = two_mode_draws
    rng = np.random.default_rng(4)
    mu = estimate["mu"] + 0.05 * rng.standard_normal((2, n_draws, 2, 1))
    mu[1] += shift
    draws = {"weights": (("chain", "draw", "component"), np.broadcast_to(estimate["weights"], (2, n_draws, 2)).copy()),
             "mu": (("chain", "draw", "component", "feature"), mu),
             "covariance": (("chain", "draw", "component", "feature", "feature_"),
                            np.broadcast_to(estimate["covariance"], (2, n_draws, 2, 1, 1)).copy())}
    sd = np.sqrt(estimate["covariance"][:, 0, 0])
    log_likelihood = logsumexp(np.log(estimate["weights"]) + stats.norm.logpdf(
        data.values[None, None, :, 0, None], mu[:, :, None, :, 0], sd), axis=-1)
    return mode_summaries(model, data, draws, log_likelihood, estimate, np.array([0, 1]))


@pytest.mark.parametrize("n_draws", [1, 2, 3, 4, 20])
def test_modes_of_too_few_draws_for_psis_are_stacked_and_said(two_mode_draws, n_draws):
    variables = _modes_of(two_mode_draws, n_draws)["variables"]
    weights = variables["weight"][1]
    assert weights.sum() == pytest.approx(1.0) and weights[0] > 0.5  # the shifted mode predicts worse
    assert np.isfinite(variables["lpd_loo"][1]).all() and np.isnan(variables["max_pareto_k"][1]).all()
    assert variables["n_draws"][1].tolist() == [n_draws, n_draws] and not variables["loo_reliable"][1].any()
    said = mode_caveats({name: value for name, (_, value) in variables.items()})
    plural = "s" * (n_draws != 1)
    assert said.startswith(f"the stacking weights are uncertain: mode 0 (chain 0) has {n_draws} draw{plural}, fewer "
                           "than the 30 PSIS-LOO needs (draws >= 30 per chain), so its weight rests on plain "
                           "importance-sampling LOO")
    assert f"; mode 1 (chain 1) has {n_draws} draw{plural}" in said and said.endswith("; more draws settle them")


def test_chain_moves_counts_the_transitions_whose_draw_changed():
    rng = np.random.default_rng(1)
    moving = rng.normal(size=(1, 101, 2))
    stuck = np.repeat(moving[:, :1], 101, axis=1)
    half = moving.copy()
    half[0, 1::2] = half[0, 0::2][:50]  # every other transition repeats the draw before it
    moves = chain_moves({"a": np.concatenate([moving, stuck, half])})
    np.testing.assert_allclose(moves, [1.0, 0.0, 0.5], atol=1e-12)
    assert chain_moves({"a": moving[:, :1]}).tolist() == [1.0]  # one draw: no transition to judge


def _two_chains(estimate: dict, data, mu: np.ndarray) -> tuple[dict, np.ndarray]:
    """Draws of two chains of 300 that move only the means ``mu`` (2, 300, 2, 1), and their log-likelihoods."""
    from scipy import stats

    draws = {"weights": (("chain", "draw", "component"), np.broadcast_to(estimate["weights"], (2, 300, 2)).copy()),
             "mu": (("chain", "draw", "component", "feature"), mu),
             "covariance": (("chain", "draw", "component", "feature", "feature_"),
                            np.broadcast_to(estimate["covariance"], (2, 300, 2, 1, 1)).copy())}
    sd = np.sqrt(estimate["covariance"][:, 0, 0])
    log_likelihood = logsumexp(np.log(estimate["weights"]) + stats.norm.logpdf(
        data.values[None, None, :, 0, None], mu[:, :, None, :, 0], sd), axis=-1)
    return draws, log_likelihood


def test_independent_draws_are_as_many_as_they_are_not_arviz_s_estimate_of_their_ess(two_mode_draws):
    """ADVI's draws are independent: a sample as many as they are, whatever ArviZ's estimate of their ESS (which
    scatters about their number). Here the draws are sorted, which ArviZ reads as one slow chain: its ESS is tiny,
    their number 300."""

    model, data, estimate = two_mode_draws
    rng = np.random.default_rng(5)
    mu = np.sort(estimate["mu"] + 0.05 * rng.standard_normal((2, 300, 2, 1)), axis=1)
    mu[1] += 0.3  # a mode of its own
    draws, log_likelihood = _two_chains(estimate, data, mu)
    chained, independent = ({name: v for name, (_, v) in mode_summaries(
        model, data, draws, log_likelihood, estimate, np.array([0, 1]), independent=flag)["variables"].items()}
        for flag in (False, True))
    assert (chained["min_ess_bulk"] < 100).all() and not chained["ess_reliable"].any()
    assert independent["ess_reliable"].all() and "ESS" not in mode_caveats(independent, "fits")
    few = {**independent, "n_draws": np.array([60, 300]), "ess_reliable": np.array([False, True])}
    assert "mode 0 (fit 0) has 60 independent draws, below 100" in mode_caveats(few, "fits")


def test_a_stuck_chain_is_left_out_of_the_stacking_and_said(two_mode_draws):
    """A chain stuck at one point (every transition divergent, say) is no mode: its in-sample densities won."""

    model, data, estimate = two_mode_draws
    rng = np.random.default_rng(4)
    mu = estimate["mu"] + 0.05 * rng.standard_normal((2, 300, 2, 1))
    mu[1] = estimate["mu"] + 0.3  # chain 1 never moves, from a place of its own
    draws, log_likelihood = _two_chains(estimate, data, mu)
    variables = mode_summaries(model, data, draws, log_likelihood, estimate, np.array([0, 1]))["variables"]
    value = {name: v for name, (_, v) in variables.items()}
    assert value["stuck"].tolist() == [False, True] and value["moves"].tolist() == [1.0, 0.0]
    assert value["weight"].tolist() == [1.0, 0.0] and value["in_stacking"].tolist() == [True, False]
    assert value["weight_low"].tolist() == [1.0, 0.0] and value["weight_high"].tolist() == [1.0, 0.0]
    # its ESS is arviz_stats' for a constant, its number of draws: not reliable, nor is its LOO
    assert not value["ess_reliable"][1] and not value["loo_reliable"][1]
    said = mode_caveats(value)
    assert ("mode 1 (chain 1) is left out of the stacking (weight 0): its chain is stuck: its draw changed in 0 of "
            "299 transitions, so its draws are not a sample of the posterior") in said
    assert said.endswith("; a stuck chain needs another start or a smaller step (higher target_accept)")
    assert "more draws settle them" not in said  # more draws do not free a stuck chain
    assert value["stuck_inside"].tolist() == [-1, -1]  # 0.3 from mode 0's mean, 6 of its sds: a place of its own
    mu[1] = estimate["mu"] + 0.02  # stopped inside mode 0's draws
    draws, log_likelihood = _two_chains(estimate, data, mu)
    inside = {name: v for name, (_, v) in mode_summaries(model, data, draws, log_likelihood, estimate,
                                                         np.array([0, 1]))["variables"].items()}
    assert inside["stuck_inside"].tolist() == [-1, 0]
    assert ("its chain is stuck: its draw changed in 0 of 299 transitions, so its draws are not a sample of the "
            "posterior (it stopped inside mode 0's draws: no mode of its own, but a chain that stopped there)"
            ) in mode_caveats(inside)
    # every mode stuck leaves nothing better: all stacked
    weights, kept = _stacking(_lpd(0)[:, :2], np.ones(200), np.array([0.3, 0.3]), np.array([300, 300]),
                              np.array([True, True]))
    assert kept.all() and weights.sum() == pytest.approx(1.0)


def test_stuck_modes_go_first_then_unusable_loo_then_what_is_left():
    lpd = _lpd(0)
    lpd[:, 2] += 2.0
    # mode 2 stuck and mode 0's Pareto k above 1: mode 1 alone is stacked
    weights, kept = _stacking(lpd, np.ones(200), np.array([3.8, 0.4, np.nan]), np.array([500, 500, 500]),
                              np.array([False, False, True]))
    assert kept.tolist() == [False, True, False] and weights.tolist() == [0.0, 1.0, 0.0]
    # the moving mode's Pareto k above 1, the other stuck: the moving mode is kept, not the stuck one
    weights, kept = _stacking(lpd[:, [0, 2]], np.ones(200), np.array([3.8, np.nan]), np.array([500, 500]),
                              np.array([False, True]))
    assert kept.tolist() == [True, False] and weights.tolist() == [1.0, 0.0]
    # no Pareto shape for all the draws PSIS needs (draws stuck on a few values): left out as k above 1 is
    weights, kept = _stacking(lpd, np.ones(200), np.array([0.4, 0.5, np.nan]), np.array([500, 500, 500]))
    assert kept.tolist() == [True, True, False] and weights[2] == 0.0
    # too few draws for PSIS: NaN is kept
    assert _stacking(lpd, np.ones(200), np.array([0.4, 0.5, np.nan]), np.array([500, 500, 20]))[1].all()


def test_a_mode_is_not_left_out_for_one_whose_draws_are_no_sample():
    # a sound chain (Pareto k 1.29 on one row) was left out, and a chain that had not converged (R-hat 1.13, 15
    # effective draws of 500) kept with weight 1: every estimate and the advice on K then rested on it
    lpd = _lpd(0)[:, :2]
    lpd[:, 1] += 0.05  # the sound chain predicts better
    moving = np.array([False, False])
    weights, kept = _stacking(lpd, np.ones(200), np.array([0.5, 1.29]), np.array([500, 500]), moving,
                              np.array([False, True]))
    assert kept.all() and weights == pytest.approx(stacking_weights(lpd)) and weights[1] > 0.5
    # the other mode's draws a sample: the mode of unusable densities is left out, as before
    weights, kept = _stacking(lpd, np.ones(200), np.array([0.5, 1.29]), np.array([500, 500]), moving,
                              np.array([True, True]))
    assert kept.tolist() == [True, False] and weights.tolist() == [1.0, 0.0]


def test_modes_that_predict_alike_are_not_called_negligible():
    modes = {"chain_mode": np.array([0, 1, 0, 0]), "n_chains": np.array([3, 1]), "n_draws": np.array([1500, 500]),
             "max_pareto_k": np.array([0.3, 0.4]), "pareto_k_threshold": np.array([0.7, 0.7]),
             "loo_reliable": np.array([True, True]), "min_ess_bulk": np.array([900.0, 450.0]),
             "ess_reliable": np.array([True, True]), "in_stacking": np.array([True, True]),
             "weight": np.array([1.0, 0.0]), "elpd_diff": np.array([0.0, -0.77]), "elpd_diff_se": np.array([0.0, 1.11])}
    assert alike_modes(modes) == [1]
    assert describe_modes(modes["chain_mode"], modes["weight"], alike=[1]) == (
        "2 modes (chains 0, 2, 3 | 1; stacking weights 1.00, 0.00)")
    assert mode_caveats(modes) == (
        "the stacking weights are uncertain: mode 0's leave-one-out predictive density differs from mode 1's by 0.77 "
        "(se 1.11, mode 0 higher), within 2 standard errors: the data hardly tell these modes apart, so their weights "
        "are loosely determined (a mix of them predicts about as well)")
    intervals = {**modes, "weight_low": np.array([0.41, 0.0]), "weight_high": np.array([1.0, 0.59])}
    assert mode_caveats(intervals).endswith("(a mix of them predicts about as well; the weights' 90% "
                                            "Bayesian-bootstrap intervals: mode 0 0.41-1.00, mode 1 0.00-0.59)")
    # a lighter mode that predicts better, within 2 standard errors, is alike too; beyond them it is not
    assert alike_modes({**modes, "elpd_diff": np.array([0.0, 0.5])}) == [1]
    assert "mode 1 higher" in mode_caveats({**modes, "elpd_diff": np.array([0.0, 0.5])})
    assert alike_modes({**modes, "elpd_diff": np.array([0.0, 3.0])}) == []
    # a deficit beyond 2 standard errors, or near-even weights, claim nothing the data do not support
    assert alike_modes({**modes, "elpd_diff": np.array([0.0, -2.3])}) == []
    assert alike_modes({**modes, "weight": np.array([0.55, 0.45])}) == []
    assert alike_modes({**modes, "in_stacking": np.array([True, False])}) == []


def test_diagnostics_say_stuck_chains_and_modes_of_one_chain():
    import xarray as xr

    from mixflow.engines.sampling_diagnostics import diagnose

    rng = np.random.default_rng(2)
    values = rng.normal(size=(3, 200))
    values[1] = values[1, 0]
    aligned = {"a": (("chain", "draw"), values)}
    raw = xr.Dataset({"a": (("chain", "draw"), values)})
    options = {"draws": 200, "tune": 200, "chains": 3, "target_accept": 0.8}
    with pytest.warns(mixflow.SamplingWarning) as record:
        diagnose(aligned, raw, {}, options, np.zeros(3, int), np.ones(1), np.zeros(3, bool), np.ones(1), "", (), (),
                 np.array([False, True, False]), np.array([1.0, 0.0, 1.0]))
    assert ("chain 1 is stuck: its draw changed in 0 of 199 transitions, so its draws are not a sample of the "
            "posterior") in str(record[0].message)
    values[1] = rng.normal(5.0, 1.0, 200)
    with pytest.warns(mixflow.SamplingWarning) as record:
        diagnose(aligned, raw, {}, options, np.array([0, 1, 0]), np.array([0.6, 0.4]), np.zeros(3, bool),
                 np.ones(2), "", (), (), np.zeros(3, bool), np.ones(3))
    said = str(record[0].message)
    assert ("mode 1 holds one chain: the R-hat within it compares a chain's halves, which cannot show whether other "
            "chains started there would agree") in said and "stuck" not in said


def test_rank_plots_are_judged_within_modes():
    import xarray as xr

    from mixflow.present.rank_test import rank_finding_by_mode

    rng = np.random.default_rng(3)
    draws = rng.normal(size=(4, 400)) + np.array([0.0, 8.0, 0.0, 8.0])[:, None]  # chains 0, 2 | 1, 3
    posterior = xr.Dataset({"mu": (("chain", "draw"), draws)}, coords={"chain": np.arange(4), "draw": np.arange(400)})
    chain_mode = np.array([0, 1, 0, 1])
    assert "the chains have not mixed" in rank_finding_by_mode(posterior)
    assert rank_finding_by_mode(posterior, chain_mode) is None
    drifting = draws.copy()
    drifting[2] += 3.0  # chain 2 apart from chain 0 within their mode
    found = rank_finding_by_mode(posterior.assign(mu=(("chain", "draw"), drifting)), chain_mode)
    assert found.startswith("within mode 0 (chains 0, 2), the chains' ranks are not uniform for mu")
    assert "mode 1" not in found


def test_modes_of_enough_draws_get_psis_and_no_caveat_about_it(two_mode_draws):
    variables = _modes_of(two_mode_draws, 400)["variables"]
    assert np.all(variables["max_pareto_k"][1] <= variables["pareto_k_threshold"][1])
    assert variables["loo_reliable"][1].all() and variables["ess_reliable"][1].all()
    assert mode_caveats({name: value for name, (_, value) in variables.items()}) == ""


def test_caveats_name_a_large_pareto_k_and_a_small_ess():
    modes = {"chain_mode": np.array([0, 1, 2, 1]), "n_chains": np.array([1, 2, 1]),
             "n_draws": np.array([300, 600, 300]), "max_pareto_k": np.array([1.96, 0.3, 0.5]),
             "pareto_k_threshold": np.array([0.6, 0.64, 0.6]), "loo_reliable": np.array([False, True, True]),
             "min_ess_bulk": np.array([1.3, 900.0, 2.1]), "ess_reliable": np.array([False, True, False])}
    assert mode_caveats(modes) == (
        "the stacking weights are uncertain: mode 0 (chain 0) has a PSIS-LOO Pareto k up to 1.96, above 0.60 for its "
        "300 draws (above 0.7 more draws do not mend it: the importance ratios' tail is too thick) and has a bulk ESS "
        "of 1.3, below 100; mode 2 (chain 2) has a bulk ESS of 2.1, below 100; more draws settle them")
    assert "fit 0" in mode_caveats(modes, "fits")
    one = {name: value[:1] for name, value in modes.items()}
    assert mode_caveats({**one, "chain_mode": np.zeros(4, int)}) == ""  # one mode: no weights to doubt


def test_a_mode_whose_loo_is_unusable_is_left_out_of_the_stacking():
    # mode 1 (a stuck chain, say) predicts every row better by its unusable leave-one-out densities: stacked,
    # it would take all the weight; its Pareto k above 1 leaves it out, and the other two share the weight
    lpd = _lpd(0)
    lpd[:, 1] += 2.0
    weights, kept = _stacking(lpd, np.ones(200), np.array([0.4, 3.4, 0.6]))
    assert kept.tolist() == [True, False, True] and weights[1] == 0.0
    np.testing.assert_allclose(weights[[0, 2]], stacking_weights(lpd[:, [0, 2]]), rtol=1e-12)
    assert stacking_weights(lpd)[1] > DOMINANT_WEIGHT  # what stacking them all gives
    # no PSIS (NaN: too few draws) is kept; every mode above 1 leaves nothing to compare with: all stacked
    assert _stacking(lpd, np.ones(200), np.array([0.4, np.nan, 0.6]))[1].all()
    weights, kept = _stacking(lpd, np.ones(200), np.array([1.4, 3.4, 1.6]))
    assert kept.all() and weights == pytest.approx(stacking_weights(lpd))
    # one mode kept: its weight is 1
    weights, kept = _stacking(lpd[:, :2], np.ones(200), np.array([0.4, 3.4]))
    assert weights.tolist() == [1.0, 0.0] and kept.tolist() == [True, False]
    modes = {"chain_mode": np.array([0, 0, 0, 1]), "n_chains": np.array([3, 1]), "n_draws": np.array([900, 300]),
             "max_pareto_k": np.array([0.63, 3.43]), "pareto_k_threshold": np.array([0.7, 0.6]),
             "loo_reliable": np.array([True, False]), "min_ess_bulk": np.array([800.0, 1.4]),
             "ess_reliable": np.array([True, False]), "in_stacking": np.array([True, False])}
    assert left_out_modes(modes) == [1]
    assert mode_caveats(modes) == (
        "the stacking weights are uncertain: mode 1 (chain 3) is left out of the stacking (weight 0): its PSIS-LOO "
        "Pareto k of 3.43 is above 1, where its leave-one-out densities have no finite mean (a row so influential "
        "that leaving it out moves the mode's posterior far, as when a component rests on a few rows, or draws that "
        "barely move, typically) and has a bulk ESS of 1.4, below 100; more draws settle them")
    # ADVI's fits: an approximation, whose further draws do not mend its Pareto k
    fits = {**modes, "ess_reliable": np.array([True, True]), "loo_reliable": np.array([True, False]),
            "in_stacking": np.array([True, True]), "max_pareto_k": np.array([0.63, 0.9])}
    said = mode_caveats(fits, "fits")
    assert said == ("the stacking weights are uncertain: mode 1 (fit 3) has a PSIS-LOO Pareto k up to 0.90, above 0.60 "
                    "for its 300 draws")
    assert "approximation narrower than the posterior" in mode_caveats(modes, "fits")
    # every mode above 1 or no sample: all are stacked, and a stacked mode's k above 1 is said as such
    unusable = {**modes, "max_pareto_k": np.array([1.2, 3.43]), "loo_reliable": np.array([False, False]),
                "in_stacking": np.array([True, True])}
    assert mode_caveats(unusable) == (
        "the stacking weights are uncertain: mode 0 (chains 0, 1, 2) has a PSIS-LOO Pareto k up to 1.20, above 0.70 "
        "for its 900 draws, and above 1, where its leave-one-out densities have no finite mean (stacked all the same: "
        "no mode has usable ones and draws that are a sample); mode 1 (chain 3) has a PSIS-LOO Pareto k up to 3.43, "
        "above 0.60 for its 300 draws, and above 1, where its leave-one-out densities have no finite mean (stacked all "
        "the same: no mode has usable ones and draws that are a sample) and has a bulk ESS of 1.4, below 100; more "
        "draws settle them")
    recorded_before = {name: value for name, value in modes.items() if name != "in_stacking"}
    assert left_out_modes(recorded_before) == [] and "left out" not in mode_caveats(recorded_before)


@pytest.mark.slow
@pytest.mark.parametrize("draws", [1, 2, 3, 4, 20])
def test_chains_in_two_modes_with_few_draws_are_stacked_with_a_caveat(mirrored, draws):
    """Fewer than 30 draws per mode: no traceback from arviz_stats' PSIS, a warning naming the modes instead."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always", mixflow.SamplingWarning)
        tree = mixflow.fit(mixflow.GaussianMixture(2), mirrored, method=["map", "mcmc"], random_seed=0, n_init=5,
                           draws=draws, tune=50, chains=2, sampler="pymc", starts="em-optima", **FAST)
    modes = tree["mcmc/modes"]
    assert modes["chain_mode"].values.tolist() == [0, 1] and modes["weight"].values.sum() == pytest.approx(1.0)
    assert not modes["loo_reliable"].values.any() and not modes["ess_reliable"].values.any()
    said = [str(w.message) for w in record if str(w.message).startswith("MCMC diagnostics")]
    assert len(said) == 1 and "2 modes (chains 0 | 1; stacking weights" in said[0]
    plural = "s" * (draws != 1)
    assert (f"the stacking weights are uncertain: mode 0 (chain 0) has {draws} draw{plural}, fewer than the 30 "
            "PSIS-LOO needs (draws >= 30 per chain)") in said[0]
    assert "whether chains cross between places was not judged (it needs at least 400 draws per chain" in said[0]
    assert f"Try more draws and tuning (draws={2 * draws if draws >= 4 else 1000}" in said[0]  # PyMC's default
    attrs = tree["mcmc"].attrs  # one chain per mode: no R-hat within a mode; over all chains the modes apart
    # within a mode of one chain, the R-hat of its halves (none below 8 draws); over the chains, the modes apart
    assert np.isnan(attrs["max_rhat"]) if draws < 8 else np.isfinite(attrs["max_rhat"])
    assert attrs["max_rhat_all_chains"] > 1.01 if draws >= 4 else True
    summary = _mcmc_convergence(tree)  # needs 4 draws to split chains in halves
    assert "max R-hat" not in summary
    assert summary["max R-hat over all chains"] == pytest.approx(attrs["max_rhat_all_chains"], nan_ok=True)
    assert ("worst R-hat over all chains (the modes apart)", f"{attrs['max_rhat_all_chains']:.3f}" if draws >= 4
            else "n/a (too few draws)") in _mcmc_rows(tree)
    assert f"mode 1 (chain 1) has {draws} draw{plural}, fewer than the 30 PSIS-LOO needs" in summary_text(tree)


def test_rhat_within_one_chain_is_its_halves_r_hat():
    """arviz_stats has no R-hat for one chain; a mode of one chain gets its two halves' (each split again)."""
    import arviz_stats as azs
    import xarray as xr

    from mixflow.engines.mode_rule import rhat_within

    rng = np.random.default_rng(3)
    steady = xr.Dataset({"a": (("chain", "draw"), rng.normal(size=(1, 400)))})
    drifting = xr.Dataset({"a": (("chain", "draw"), np.linspace(0, 3, 400)[None] + rng.normal(size=(1, 400)))})
    assert np.isnan(azs.rhat(steady)["a"].values)
    assert float(rhat_within(steady)["a"]) < 1.01  # a stationary chain
    assert float(rhat_within(drifting)["a"]) > 1.1  # a chain whose halves disagree
    halves = xr.Dataset({"a": (("chain", "draw"), steady["a"].values.reshape(2, 200))})
    assert float(rhat_within(steady)["a"]) == pytest.approx(float(azs.rhat(halves)["a"]), rel=1e-12)
    two = xr.Dataset({"a": (("chain", "draw"), rng.normal(size=(2, 100)))})
    assert float(rhat_within(two)["a"]) == float(azs.rhat(two)["a"])  # several chains: arviz_stats' own


def test_a_mode_left_out_is_never_called_negligible():
    import xarray as xr

    from mixflow.present.report.page import modes_sentence

    chain_mode, weights = np.array([0, 0, 0, 1]), np.array([1.0, 0.0])
    assert describe_modes(chain_mode, weights, left_out=[1]) == (
        "2 modes (chains 0, 1, 2 | 3; stacking weights 1.00, 0.00); mode 1 left out of the stacking")
    assert describe_modes(chain_mode, weights).endswith("mode 0 carries 1.000 of the weight, the others are negligible")

    def tree(em_mode, in_stacking):
        modes = xr.Dataset({"weight": ("mode", weights), "in_stacking": ("mode", np.array(in_stacking))},
                           attrs={"em_mode": em_mode, "dominant_mode": -1})
        return xr.DataTree.from_dict({"em": xr.Dataset(attrs={"method": "mle"}), "mcmc/modes": modes})

    said = modes_sentence(tree(0, [True, False]))
    assert said == ("EM's MLE estimate lies in mode 0, which carries 100% of the stacking weight of the modes "
                    "stacked; mode 1 was left out of the stacking (its leave-one-out densities are "
                    "unusable, with no PSIS-LOO Pareto shape or one above 1), so its weight, and how much of the "
                    "posterior the estimate describes, are unknown; more draws, or chains that move, would tell.")
    assert "negligible" not in said and "main mode" not in said
    assert modes_sentence(tree(1, [True, False])).startswith(
        "EM's MLE estimate lies in mode 1, which is left out of the stacking")


def test_the_console_says_each_finding_once():
    from mixflow.workflow.console import Console

    console = Console(quiet=True)
    for level, text in [("bad", "Choice of K, K=2, EM: did not converge"), ("warn", "high Pareto k"),
                        ("bad", "Choice of K, K=2, EM: did not converge")]:  # a second K fitted from one choice
        console.finding(level, text)
    assert console.counts_text() == "0 warnings while running; the diagnostics: 1 problem, 1 warning"
    assert Console(quiet=True).counts_text() == "0 warnings while running"


def test_chains_are_named_in_the_singular_when_one():
    from mixflow.engines.modes import chains_text

    assert chains_text("chains", np.array([3])) == "chain 3"  # plot_modes' legend said "chains 3"
    assert chains_text("chains", np.array([0, 2])) == "chains 0, 2"
    assert chains_text("fits", np.array([1])) == "fit 1"


def test_flagged_entries_of_a_symmetric_matrix_are_named_once():
    import xarray as xr

    from mixflow.engines.sampling_diagnostics import _flagged

    rhat = np.array([[[1.0, 1.2], [1.2, 1.3]]])  # covariance (component, feature, feature_)
    dataset = xr.Dataset({"covariance": (("component", "feature", "feature_"), rhat),
                          "mu": (("component", "feature"), np.array([[1.05, 1.0]]))},
                         coords={"component": [0], "feature": ["x", "y"], "feature_": ["x", "y"]})
    assert _flagged(dataset, lambda v: v > 1.01) == ["covariance[0, x, y]", "covariance[0, y, y]", "mu[0, x]"]


@pytest.mark.parametrize("n_components", [1, 2])
def test_chains_that_disagree_at_one_component_are_not_told_to_use_fewer(n_components):
    import xarray as xr

    from mixflow.engines.sampling_diagnostics import diagnose

    values = np.random.default_rng(2).normal(size=(2, 200)) + np.array([[0.0], [3.0]])  # chains apart
    options = {"draws": 200, "tune": 200, "chains": 2, "target_accept": 0.8, "n_components": n_components}
    with pytest.warns(mixflow.SamplingWarning) as record:
        diagnose({"a": (("chain", "draw"), values)}, xr.Dataset({"a": (("chain", "draw"), values)}), {}, options)
    said = str(record[0].message)
    assert "R-hat above 1.01" in said and ("fewer components" in said) == (n_components > 1)


def test_the_rows_above_the_pareto_k_threshold_are_counted_and_said():
    # the modes recorded the largest Pareto k alone: how many rows make the weights uncertain was not said
    rng = np.random.default_rng(8)
    log_likelihood = rng.normal(-2.0, 0.5, (2, 300, 6))
    log_likelihood[..., [1, 4]] = -np.log1p(rng.pareto(0.8, size=(2, 300, 2)))  # importance ratios of tail 0.8
    elpd, max_k, good_k, n_high = loo_pointwise(log_likelihood, _posterior(log_likelihood), count_high=True)
    shapes = _arviz_loo(log_likelihood).pareto_k.values
    assert n_high == (shapes > good_k).sum() == 2 and max_k == pytest.approx(shapes.max())
    assert len(loo_pointwise(log_likelihood, _posterior(log_likelihood))) == 3
    modes = {"chain_mode": np.array([0, 1]), "n_chains": np.array([1, 1]), "n_draws": np.array([300, 300]),
             "max_pareto_k": np.array([1.22, 0.3]), "pareto_k_threshold": np.array([0.6, 0.6]),
             "n_high_pareto_k": np.array([3, 0]), "loo_reliable": np.array([False, True]),
             "min_ess_bulk": np.array([900.0, 900.0]), "ess_reliable": np.array([True, True])}
    # above 0.7 more draws do not mend PSIS-LOO (Vehtari et al. 2024); between its threshold for the draws and 0.7
    # they do
    assert mode_caveats(modes) == ("the stacking weights are uncertain: mode 0 (chain 0) has a PSIS-LOO Pareto k up "
                                   "to 1.22, above 0.60 for its 300 draws, at 3 rows (above 0.7 more draws do not mend "
                                   "it: the importance ratios' tail is too thick)")
    modes["max_pareto_k"] = np.array([0.65, 0.3])
    assert mode_caveats(modes) == ("the stacking weights are uncertain: mode 0 (chain 0) has a PSIS-LOO Pareto k up "
                                   "to 0.65, above 0.60 for its 300 draws, at 3 rows; more draws settle them")
