"""Modes of a multimodal posterior: found by the pair R-hat and overlap rule, weighted by stacking, combined, said."""

import re
import warnings

import numpy as np
import pytest
import xarray as xr
from scipy import stats
from test_container import assert_trees_identical
from test_select import _fake_mcmc_tree

import mixflow
from mixflow.analysis.select import loo_table
from mixflow.data import validate_data
from mixflow.engines.mcmc import fit_mcmc
from mixflow.engines.modes import (
    chain_crossings,
    chain_modes,
    crossing_window,
    distinct_optima,
    mode_groups,
    mode_summaries,
    pair_overlaps,
    pair_rhats,
)
from mixflow.engines.sampling_diagnostics import diagnose
from mixflow.fitting import _em_optima
from mixflow.present.plots import plot_modes
from mixflow.present.report.page import _modes_section, modes_sentence
from mixflow.present.summary import summary_text

FAST = {"progressbar": False, "posterior_predictive": False}


# -- the rule -------------------------------------------------------------------------------------------
def _chains(offsets, n_draws=500, seed=0):
    rng = np.random.default_rng(seed)
    mu = rng.standard_normal((len(offsets), n_draws, 2, 1)) + np.asarray(offsets, float)[:, None, None, None]
    weights = np.broadcast_to([0.4, 0.6], (len(offsets), n_draws, 2)).copy()
    return {"weights": weights, "mu": mu}


def test_chains_in_two_places_are_two_modes_and_one_place_is_one():
    assert chain_modes(_chains([0, 5, 0, 5])).tolist() == [0, 1, 0, 1]
    assert chain_modes(_chains([0, 0, 0, 0])).tolist() == [0, 0, 0, 0]
    assert chain_modes(_chains([3, 0, 3, 7])).tolist() == [0, 1, 0, 2]
    rhats = pair_rhats(_chains([0, 5, 0, 5]))
    assert rhats[0, 2] < 1.01 and rhats[0, 1] > 1.5 and np.all(np.diag(rhats) == 1)


@pytest.mark.parametrize("distance", [0.5, 1.0, 2.0, 3.0])
def test_pair_overlap_of_two_normals_matches_the_closed_form(distance):
    rng = np.random.default_rng(7)
    draws = {"mu": rng.standard_normal((2, 20000, 1)) + np.array([0.0, distance])[:, None, None]}
    exact = 2 * stats.norm.cdf(-distance / 2)  # the overlap coefficient of N(0, 1) and N(d, 1)
    assert pair_overlaps(draws)[0, 1] == pytest.approx(exact, abs=0.02)  # 20 bins of 2e4 draws
    assert np.all(np.diag(pair_overlaps(draws)) == 1)


def test_chains_that_cross_between_two_places_in_different_shares_are_one_mode():
    """A small component that forms and dissolves: each chain spends its own share of draws in either place."""
    rng = np.random.default_rng(2)
    shares, n_draws = [0.2, 0.45, 0.7, 0.35], 1000
    mu = np.empty((4, n_draws, 1, 1))
    for chain, share in enumerate(shares):  # a few long sojourns, as a slowly mixing chain makes them
        far = (np.arange(n_draws) % 250) < 250 * share
        mu[chain, :, 0, 0] = rng.standard_normal(n_draws) + 6.0 * far
    draws = {"mu": mu}
    assert pair_rhats(draws).max() > 1.1  # R-hat alone would split them
    assert chain_modes(draws).tolist() == [0, 0, 0, 0]
    mu[3, :, 0, 0] = rng.standard_normal(n_draws) + 12.0  # a chain that stays in a third place
    assert chain_modes(draws).tolist() == [0, 0, 0, 1]


def _crossing(n_chains=4, n_draws=1000, seed=5):
    """Chains that cross between two places 6 sds apart, staying 200 draws in one on average (a Markov switch)."""
    rng = np.random.default_rng(seed)
    switches = rng.random((n_chains, n_draws)) < 1 / 200
    far = (np.cumsum(switches, axis=1) + np.arange(n_chains)[:, None]) % 2 == 1
    return {"mu": (rng.standard_normal((n_chains, n_draws)) + 6.0 * far)[..., None, None]}


def _autoregressive(n_chains, n_draws, rho, seed):
    """Chains of one place (a standard normal) whose draws are AR(1) with coefficient ``rho``."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((n_chains, n_draws, 3)) * np.sqrt(1 - rho**2)
    out = np.empty_like(noise)
    out[:, 0] = rng.standard_normal((n_chains, 3))
    for t in range(1, n_draws):
        out[:, t] = rho * out[:, t - 1] + noise[:, t]
    return {"mu": out[..., None]}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_chains_of_one_place_do_not_cross_even_when_their_draws_are_correlated(seed):
    """AR(1) draws with rho 0.5 and 0.9 (ESS about 67 and 11 per window of 200 draws): the windows stay linked."""
    assert not chain_crossings(_autoregressive(4, 1000, 0.5, seed)).any()
    assert not chain_crossings(_autoregressive(4, 1000, 0.8, seed)).any()
    assert not chain_crossings(_chains([0, 5, 0, 5], n_draws=1000, seed=seed)).any()  # two modes, none crossing


def test_chain_crossings_judge_windows_of_200_draws_and_a_chain_with_fewer_is_not_judged():
    draws = _crossing()
    assert chain_crossings(draws).all()
    assert not chain_crossings({"mu": draws["mu"][:, :399]}).any()  # one window of 200 draws each
    assert not chain_crossings(draws, window=1000).any()


def test_long_chains_are_judged_in_at_most_ten_longer_windows():
    assert [crossing_window(n) for n in (399, 400, 1000, 2000, 4000, 4100)] == [0, 200, 200, 200, 400, 410]
    mu = _crossing()["mu"]
    long = {"mu": np.repeat(mu, 4, axis=1)}  # each draw four times: the same sojourns, four times as long
    assert chain_crossings(long).tolist() == chain_crossings({"mu": mu}).tolist() == [True] * 4
    fast = {"mu": long["mu"].reshape(4, 10, 400, 1, 1).transpose(0, 2, 1, 3, 4).reshape(4, 4000, 1, 1)}
    assert not chain_crossings(fast).any()  # the same draws interleaved: every window of 400 holds both places


def test_a_constant_that_differs_between_chains_separates_them():
    draws = _chains([0, 0])
    draws["weights"][1] = [0.5, 0.5]
    assert chain_modes(draws).tolist() == [0, 1]


# -- what is said ---------------------------------------------------------------------------------------------
def _aligned(offsets):
    draws = _chains(offsets, n_draws=300)
    return ({"weights": (("chain", "draw", "component"), draws["weights"]),
             "mu": (("chain", "draw", "component", "feature"), draws["mu"])},
            xr.Dataset(coords={"chain": np.arange(len(offsets)), "draw": np.arange(300), "component": [0, 1],
                               "feature": ["x"]}))


def test_one_mode_diagnoses_as_before():
    aligned, raw = _aligned([0, 0, 0, 0.3])
    options = {"chains": 4, "draws": 300, "tune": 300, "target_accept": 0.8}
    no_divergence = {"diverging": (("chain", "draw"), np.zeros((4, 300), bool))}
    with warnings.catch_warnings(record=True) as before:
        warnings.simplefilter("always")
        legacy = diagnose(aligned, raw, no_divergence, options)
    with warnings.catch_warnings(record=True) as now:
        warnings.simplefilter("always")
        moded = diagnose(aligned, raw, no_divergence, options, np.zeros(4, int), np.ones(1))
    assert legacy == moded  # the diagnostics; the warning names the mode and its R-hat
    assert "R-hat above 1.01 for mu[1, x] (chains disagree)" in str(before[0].message)
    assert "R-hat above 1.01 for mu[1, x] (the chains fall into 1 mode (chains 0, 1, 2, 3) and disagree within " \
           "it)" in str(now[0].message)
    said = str(now[0].message)
    assert said.split(". Try ")[1] == str(before[0].message).split(". Try ")[1]  # the advice as before
    assert "; whether chains cross between places was not judged (it needs at least 400 draws per chain" in said


@pytest.mark.parametrize("target_accept, advised", [(0.8, True), (0.95, False)])
def test_chains_of_one_mode_that_disagree_are_advised_a_higher_target_accept(target_accept, advised):
    aligned, raw = _aligned([0, 0, 0, 0.3])  # one mode (they overlap), R-hat above 1.01, no divergence
    options = {"chains": 4, "draws": 300, "tune": 300, "target_accept": target_accept}
    no_divergence = {"diverging": (("chain", "draw"), np.zeros((4, 300), bool))}
    with pytest.warns(mixflow.SamplingWarning) as record:
        diagnose(aligned, raw, no_divergence, options, np.zeros(4, int), np.ones(1))
    message = str(record[0].message)
    assert "disagree within it" in message and "divergent" not in message
    assert (f"a higher target_accept (0.95; it was {target_accept})" in message) == advised


def _as_aligned(draws):
    n_chains, n_draws = draws["mu"].shape[:2]
    aligned = {"mu": (("chain", "draw", "component", "feature"), draws["mu"])}
    raw = xr.Dataset(coords={"chain": np.arange(n_chains), "draw": np.arange(n_draws),
                             "component": np.arange(draws["mu"].shape[2]), "feature": ["x"]})
    return aligned, raw


def test_chains_that_cross_are_said_with_the_r_hat_computed_within_their_mode():
    import arviz_stats as azs

    draws = _crossing()
    aligned, raw = _as_aligned(draws)
    chain_mode = chain_modes(draws)
    options = {"chains": 4, "draws": 1000, "tune": 500, "target_accept": 0.95}
    rhat = float(azs.rhat(xr.DataArray(draws["mu"][..., 0, 0], dims=("chain", "draw"))))
    assert rhat > 1.1 and chain_mode.tolist() == [0, 0, 0, 0]
    with pytest.warns(mixflow.SamplingWarning) as record:
        summary = diagnose(aligned, raw, {}, options, chain_mode, np.ones(1), chain_crossings(draws), np.array([rhat]))
    message = str(record[0].message)
    assert (f"R-hat above 1.01 for mu[0, x] (the chains fall into 1 mode (chains 0, 1, 2, 3) and disagree within it: "
            f"R-hat {rhat:.3f}, and every chain crosses between places that its own windows of 200 draws do not share"
            in message)
    assert summary["max_rhat"] == pytest.approx(rhat, rel=1e-12)


def test_a_mode_whose_chains_cross_is_named_beside_a_mode_that_stays():
    draws = _crossing()
    rng = np.random.default_rng(3)
    draws["mu"] = np.concatenate([draws["mu"], rng.standard_normal((2, 1000, 1, 1)) + 20.0])  # two far, in one place
    aligned, raw = _as_aligned(draws)
    chain_mode = chain_modes(draws)
    crosses = chain_crossings(draws)
    assert chain_mode.tolist() == [0, 0, 0, 0, 1, 1] and crosses.tolist() == [True] * 4 + [False] * 2
    options = {"chains": 6, "draws": 1000, "tune": 500, "target_accept": 0.95}
    with pytest.warns(mixflow.SamplingWarning) as record:
        diagnose(aligned, raw, {}, options, chain_mode, np.array([0.5, 0.5]), crosses, np.array([1.234, 1.0]))
    message = str(record[0].message)
    assert "the chains fall into 2 modes (chains 0, 1, 2, 3 | 4, 5; stacking weights 0.50, 0.50)" in message
    assert ("R-hat above 1.01 for mu[0, x] in mode 0 (chains 0, 1, 2, 3 of mode 0 disagree: R-hat 1.234, and every "
            "chain crosses between places") in message
    assert "mode 1" not in message


@pytest.mark.parametrize("target_accept, advice", [(0.8, "a higher target_accept (0.95; it was 0.8)"),
                                                   (0.95, "a higher target_accept (0.99; it was 0.95)"),
                                                   (0.99, None)])
def test_divergences_are_advised_the_next_higher_target_accept(target_accept, advice):
    aligned, raw = _aligned([0, 0, 0, 0])
    options = {"chains": 4, "draws": 300, "tune": 300, "target_accept": target_accept}
    with pytest.warns(mixflow.SamplingWarning) as record:
        diagnose(aligned, raw, {"diverging": (("chain", "draw"), np.eye(4, 300, dtype=bool))}, options)
    message = str(record[0].message)
    assert "4 divergent transitions" in message
    assert (advice in message) if advice else "target_accept" not in message

def test_several_modes_are_named_instead_of_chains_disagreeing():
    aligned, raw = _aligned([0, 5, 0, 5])
    options = {"chains": 4, "draws": 300, "tune": 300, "target_accept": 0.8}
    no_divergence = {"diverging": (("chain", "draw"), np.zeros((4, 300), bool))}
    chain_mode = chain_modes({name: value for name, (_, value) in aligned.items()})
    with pytest.warns(mixflow.SamplingWarning) as record:
        summary = diagnose(aligned, raw, no_divergence, options, chain_mode, np.array([0.6, 0.4]))
    message = str(record[0].message)
    assert "2 modes (chains 0, 2 | 1, 3; stacking weights 0.60, 0.40)" in message
    assert "chains disagree" not in message and summary["high_rhat"] == "[]"
    assert summary["max_rhat"] < 1.01 < 1.5 < summary["max_rhat_all_chains"]  # within the modes; over all chains
    assert summary["min_ess_bulk"] > 100 > summary["min_ess_bulk_all_chains"]
    assert "whether chains cross between places was not judged (it needs at least 400 draws per chain" in message


def test_loo_table_uses_the_stacked_predictive_where_chains_fell_into_modes():
    rng = np.random.default_rng(0)
    trees = {k: _fake_mcmc_tree(k, rng) for k in (1, 2)}
    lpd = rng.normal(-2.0, 0.3, (40, 2))
    weights = np.array([0.7, 0.3])
    trees[2]["mcmc/modes"] = xr.DataTree(xr.Dataset({"lpd_loo": (("obs", "mode"), lpd),
                                                     "weight": (("mode",), weights)}))
    table = loo_table(trees)
    naive = sum(np.log(weights @ np.exp(row)) for row in lpd)
    assert table.loc[2, "elpd_loo"] == pytest.approx(naive, rel=1e-12)
    assert table["stacked_over_modes"].tolist() == [False, True]
    assert table.loc[1, "elpd_loo"] == pytest.approx(loo_table({1: trees[1]}).loc[1, "elpd_loo"], rel=1e-12)


# -- the summaries against references ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def map_fit(two_groups_map_fit):
    return two_groups_map_fit


def test_mode_summaries_at_the_map_give_em_objective_and_a_scipy_log_likelihood(map_fit):
    model, data, estimate, tree = map_fit
    rng = np.random.default_rng(0)
    step = rng.normal(0, 0.02, (2, 100, 2, 1))
    mu = estimate["mu"] + np.concatenate([step, -step], axis=1)  # draws whose mean is exactly the MAP
    n = mu.shape[1]
    draws = {"weights": (("chain", "draw", "component"), np.broadcast_to(estimate["weights"], (2, n, 2)).copy()),
             "mu": (("chain", "draw", "component", "feature"), mu),
             "covariance": (("chain", "draw", "component", "feature", "feature_"),
                            np.broadcast_to(estimate["covariance"], (2, n, 2, 1, 1)).copy())}
    log_likelihood = np.stack([np.stack([np.log(
        sum(w * stats.norm.pdf(data.values[:, 0], m[0], np.sqrt(c[0, 0]))
            for w, m, c in zip(estimate["weights"], mu[c_, d], estimate["covariance"], strict=True)))
        for d in range(n)]) for c_ in range(2)])
    group = mode_summaries(model, data, draws, log_likelihood, estimate, np.zeros(2, int))
    variables = group["variables"]
    naive = np.log(sum(w * stats.norm.pdf(data.values[:, 0], m[0], np.sqrt(c[0, 0])) for w, m, c in
                       zip(estimate["weights"], estimate["mu"], estimate["covariance"], strict=True))).sum()
    assert variables["log_likelihood"][1][0] == pytest.approx(naive, rel=1e-10)
    assert variables["log_posterior"][1][0] == pytest.approx(tree["em"].attrs["log_posterior"], rel=1e-10)
    assert variables["weight"][1].tolist() == [1.0] and variables["n_chains"][1].tolist() == [2]
    assert group["attrs"]["n_modes"] == 1 and group["attrs"]["em_mode"] == 0
    assert group["attrs"]["dominant_mode"] == -1
    np.testing.assert_allclose(variables["mu"][1][0], estimate["mu"], atol=1e-12)


def test_a_worse_mode_has_a_negative_elpd_diff_as_arviz_compare_and_select_k_give_it(map_fit):
    model, data, estimate, _ = map_fit
    rng = np.random.default_rng(1)
    shift = np.array([0.0, 0.0, 1.5, 1.5])[:, None, None, None]  # chains 2 and 3 sit away from the MAP: worse
    mu = estimate["mu"] + shift + rng.normal(0, 0.02, (4, 100, 2, 1))
    draws = {"weights": (("chain", "draw", "component"), np.broadcast_to(estimate["weights"], (4, 100, 2)).copy()),
             "mu": (("chain", "draw", "component", "feature"), mu),
             "covariance": (("chain", "draw", "component", "feature", "feature_"),
                            np.broadcast_to(estimate["covariance"], (4, 100, 2, 1, 1)).copy())}
    x = data.values[:, 0]
    density = sum(w * stats.norm.pdf(x, mu[..., k, 0, None], np.sqrt(c[0, 0]))
                  for k, (w, c) in enumerate(zip(estimate["weights"], estimate["covariance"], strict=True)))
    variables = mode_summaries(model, data, draws, np.log(density), estimate, np.array([0, 0, 1, 1]))["variables"]
    elpd, diff = variables["elpd_loo"][1], variables["elpd_diff"][1]
    assert elpd[1] < elpd[0] and variables["weight"][1][0] > 0.99
    np.testing.assert_allclose(diff, elpd - elpd[0], rtol=1e-12)  # the mode's elpd minus the heaviest's
    assert diff[0] == 0 and diff[1] < 0
    groups, chain_mode = mode_groups(model, data, draws, np.log(density), estimate, np.random.default_rng(0), "two")
    assert chain_mode.tolist() == [0, 0, 1, 1]
    # the stacked resample says that its own ESS, MCSE and R-hat (ArviZ's on the group) measure nothing
    assert groups["stacked/posterior"]["attrs"]["monte_carlo_error"].startswith(
        "not measured by this group: its draws are a resample, with replacement and in random order")


def test_distinct_optima_drop_relabelled_nearby_and_far_worse_copies(map_fit):
    model, data, estimate, _ = map_fit
    swapped = model.permute(estimate, np.array([1, 0]), data.features)
    nearby = {**estimate, "mu": estimate["mu"] + 0.01}
    other = {**estimate, "mu": estimate["mu"][::-1].copy()}  # components' means exchanged: another optimum
    trimmed = {name: np.full_like(value, np.nan) for name, value in estimate.items()}
    optima = [nearby, estimate, swapped, other, trimmed]
    kept = distinct_optima(model, data, optima, [-10.0, -5.0, -5.0, -14.0, -1.0], limit=4)
    assert len(kept) == 2 and kept[0] is estimate and kept[1] is other
    assert len(distinct_optima(model, data, optima, [-10.0, -5.0, -5.0, -14.0, -1.0], limit=1)) == 1
    assert len(distinct_optima(model, data, optima, [-10.0, -5.0, -5.0, -15.5, -1.0], limit=4)) == 1  # > 10 worse


def test_em_records_each_restart_optimum_and_em_optima_finds_the_mirror_pair(mirrored):
    model = mixflow.GaussianMixture(2)
    tree = mixflow.fit(model, mirrored, method="map", random_seed=0, n_init=5)
    stats_ = tree["em/sample_stats"]
    best = int(tree["em"].attrs["best_restart"])
    for name in ("weights", "mu", "covariance"):
        np.testing.assert_allclose(stats_[f"optimum_{name}"].values[best], tree["em/estimate"][name].values,
                                   rtol=1e-12)
    optima = _em_optima(model, validate_data(mirrored), tree, 4)
    assert len(optima) == 2  # the two mirror images; a symmetric maximum 38 below is left out
    np.testing.assert_allclose(optima[1]["mu"], -optima[0]["mu"][::-1], atol=1e-4)
    del tree["em/sample_stats"]["optimum_mu"]
    with pytest.raises(ValueError, match=r"starts: 'em-optima' needs the optima of EM's restarts"):
        _em_optima(model, validate_data(mirrored), tree, 4)


# -- arguments ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("starts, sampler, message", [
    ("bogus", "pymc", r"starts: expected one of \['reference', 'em-optima'\] or a list of parameter dicts, "
                      r"got 'bogus'"),
    ([], "pymc", r"starts: expected one of \['reference', 'em-optima'\] or a non-empty list of parameter dicts"),
    ("em-optima", "pymc", r"starts: 'em-optima' is resolved by mixflow.fit from EM's restarts"),
])
def test_bad_starts_name_the_argument(map_fit, starts, sampler, message):
    model, data, estimate, _ = map_fit
    with pytest.raises(ValueError, match=message):
        fit_mcmc(model, data, estimate, starts=starts, sampler=sampler, **FAST)


def test_several_starts_refuse_nutpie_and_check_each_point(map_fit):
    model, data, estimate, _ = map_fit
    with pytest.raises(ValueError, match=r"starts: several starting points need sampler='pymc'"):
        fit_mcmc(model, data, estimate, starts=[estimate, estimate], sampler="nutpie", **FAST)
    with pytest.raises(ValueError, match=r"starts\[1\]"):
        fit_mcmc(model, data, estimate, starts=[estimate, {"weights": [1.0]}], sampler="pymc", **FAST)


# -- slow: real sampling ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_mirror_modes_found_weighted_and_combined(mirrored, tmp_path):
    model = mixflow.GaussianMixture(2)
    with pytest.warns(mixflow.SamplingWarning) as record:  # EM's restarts find both mirror images
        tree = mixflow.fit(model, mirrored, method=["map", "mcmc"], random_seed=0, n_init=5, draws=800, tune=200,
                           chains=4, sampler="pymc", starts="em-optima", **FAST)
    assert tree["mcmc"].attrs["starts"] == "em-optima (2 distinct)"
    modes = tree["mcmc/modes"]
    assert tree["mcmc"].attrs["n_modes"] == 2 and modes["chain_mode"].values.tolist() == [0, 1, 0, 1]
    np.testing.assert_allclose(modes["weight"].values, [0.5, 0.5], atol=0.02)
    # mirror images predict alike: the Bayesian bootstrap leaves either weight undetermined around a half
    assert np.all(modes["weight_low"].values < 0.5) and np.all(modes["weight_high"].values > 0.5)
    assert modes["weight"].values.sum() == pytest.approx(1.0)
    assert np.all(modes["max_rhat"].values < 1.01)  # within each mode
    assert modes["crosses"].values.tolist() == [False] * 4  # four windows of 200 draws per chain, each chain stays
    assert modes.attrs["crossing_window"] == 200
    np.testing.assert_allclose(modes["mu"].values[1], -modes["mu"].values[0][::-1], atol=0.15)
    # EM's estimate is one of the two mirror optima, whose objectives differ only by rounding: which one the
    # restarts rank first (and so which chains start there) is not fixed, but the mode named is the one it lies in
    em = modes.attrs["em_mode"]
    assert em in (0, 1) and modes.attrs["dominant_mode"] == -1
    np.testing.assert_allclose(modes["mu"].values[em], tree["em/estimate"]["mu"].values, atol=0.15)
    attrs = tree["mcmc"].attrs  # R-hat within the modes, as the warning judges; over all chains the modes apart
    assert attrs["max_rhat"] == pytest.approx(modes["max_rhat"].values.max(), rel=1e-12) and attrs["max_rhat"] < 1.01
    assert attrs["max_rhat_all_chains"] > 1.5
    assert np.all(modes["loo_reliable"].values) and np.all(modes["ess_reliable"].values)
    messages = [str(w.message) for w in record]
    assert any("2 modes (chains 0, 2 | 1, 3" in m for m in messages)
    assert not any("stacking weights are uncertain" in m or "not judged" in m for m in messages)
    assert not any("chains disagree" in m for m in messages)
    stacked = tree["mcmc/stacked/posterior"]
    assert stacked.sizes["chain"] == 1 and stacked.sizes["draw"] == 3200
    first = int(np.argmin(modes["mu"].values[:, 0, 0]))  # the mode whose first component is at -6
    in_first = (stacked["mu"].values[0, :, 0, 0] < -4).mean()
    assert abs(in_first - modes["weight"].values[first]) < 5 * np.sqrt(0.25 / 3200)
    assert_trees_identical(tree, mixflow.load(mixflow.save(tree, tmp_path / "modes.nc")))
    # said: the comparison, the summary, predictions, the report's section and its plot
    assert "stacked" in set(mixflow.compare(tree)["method"].astype(str))
    text = summary_text(tree)
    assert "MCMC stacked over modes: 2 modes (chains 0, 2 | 1, 3)" in text and "chains fall into 2 modes" in text
    assert mixflow.predict(tree, np.array([-6.0, 6.0]), method="stacked").shape == (2,)
    assert modes_sentence(tree).startswith(f"EM's MAP estimate lies in mode {em}, which carries")
    assert "about as much as the other modes together" in modes_sentence(tree)  # half each: not 'the main mode'
    section, problems = _modes_section(tree)
    assert problems == [] and "<table" in section and "data:image/png" in section
    figure = plot_modes(tree, var_names="mu")
    labels = [text.get_text() for legend in figure.legends for text in legend.get_texts()]
    assert any(label.startswith("mode 0: chains 0, 2, weight 0.5") for label in labels)


@pytest.mark.slow
def test_a_unimodal_posterior_is_one_mode_and_left_as_it_was(map_fit):
    model, data, estimate, _ = map_fit
    run = {"draws": 200, "tune": 200, "chains": 4, "sampler": "pymc", "random_seed": 2, **FAST}
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always", mixflow.SamplingWarning)
        result = fit_mcmc(model, data, estimate, **run)
    assert not any("modes" in str(w.message) for w in record)
    assert result["attrs"]["n_modes"] == 1 and "stacked/posterior" not in result["groups"]
    modes = result["groups"]["modes"]["variables"]
    assert modes["chain_mode"][1].tolist() == [0, 0, 0, 0] and modes["weight"][1].tolist() == [1.0]
    # the one mode's LOO is the model's, recorded with its Pareto shapes, and its reliability read from them
    k, threshold = modes["max_pareto_k"][1][0], modes["pareto_k_threshold"][1][0]
    assert np.isfinite([k, threshold]).all() and modes["loo_reliable"][1][0] == (k <= threshold)
    assert modes["elpd_loo"][1][0] == pytest.approx(modes["lpd_loo"][1][:, 0].sum(), rel=1e-12)
    aligned = result["groups"]["posterior"]["variables"]
    raw = xr.Dataset(coords={"chain": result["coords"]["chain"], "draw": result["coords"]["draw"],
                             "component": [0, 1], "feature": data.features, "feature_": data.features})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        legacy = diagnose(aligned, raw, result["groups"]["sample_stats"]["variables"], {**run, "target_accept": 0.8})
    assert {key: result["attrs"][key] for key in legacy} == legacy
    assert modes["max_rhat"][1][0] == pytest.approx(result["attrs"]["max_rhat"], rel=1e-12)


def test_report_findings_name_the_modes_and_judge_r_hat_within_them():
    from mixflow.present.report.cards import _mcmc_findings

    base = {"max R-hat": 1.6, "min bulk ESS": 800.0, "min tail ESS": 700.0, "divergences": 0}
    moded = _mcmc_findings({**base, "modes": 2, "max R-hat within modes": 1.004, "min bulk ESS within modes": 700.0})
    assert [level for level, _ in moded] == ["warn"] and "fall into 2 modes" in moded[0][1]
    mixing = _mcmc_findings({**base, "modes": 2, "max R-hat within modes": 1.03, "min bulk ESS within modes": 700.0})
    assert ("bad", "MCMC: max R-hat within a mode 1.030 > 1.01: chains of one mode disagree.") in mixing
    assert "chains disagree (non-convergence" in _mcmc_findings(base)[0][1]
    crossing = _mcmc_findings({**base, "chains that cross": "0, 2"})[0][1]
    assert crossing.startswith("MCMC: max R-hat 1.600 > 1.01: chains disagree (they fall into 1 mode). Chains 0, 2 "
                               "move between places that their own windows of 200 draws do not share")
    moded_crossing = _mcmc_findings({**base, "modes": 2, "max R-hat within modes": 1.03, "chains that cross": "1",
                                     "min bulk ESS within modes": 700.0})
    assert moded_crossing[1][1].startswith("MCMC: max R-hat within a mode 1.030 > 1.01: chains of one mode disagree. "
                                           "Chain 1 moves between places")


def _with_nuts(fit_tree, n_chains: int, attrs: dict):
    """A copy of a fit's tree with a made-up /mcmc: ``n_chains`` x 100 draws close to the EM estimate, and ``attrs``."""
    rng = np.random.default_rng(0)
    tree = fit_tree.copy()
    estimate = tree["em/estimate"].to_dataset()
    shape = (n_chains, 100)
    tree["mcmc"] = xr.DataTree(xr.Dataset(attrs={"method": "nuts", "chains": n_chains, "draws": 100, **attrs}))
    tree["mcmc/posterior"] = xr.Dataset({name: (("chain", "draw", *value.dims), np.broadcast_to(
        value.values, (*shape, *value.shape)) + 0.01 * rng.standard_normal((*shape, *value.shape)))
        for name, value in estimate.data_vars.items()}, coords=estimate.coords)
    return tree


def test_chains_that_cross_are_read_from_the_container_by_the_report_and_the_summary(map_fit):
    from mixflow.present.report.cards import _mcmc_convergence, _mcmc_findings
    from mixflow.present.summary import _mcmc_line

    tree = _with_nuts(map_fit[3], 2, {
        "sampler": "pymc", "max_rhat": 1.08, "min_ess_bulk": 500.0, "min_ess_tail": 450.0, "n_divergences": 0,
        "n_modes": 1, "high_rhat": '["weights[0]"]', "low_ess_bulk": "[]", "low_ess_tail": "[]"})
    tree["mcmc/modes"] = xr.Dataset({"weight": (("mode",), np.ones(1)), "crosses": (("chain",), np.arange(2) == 1)})
    summary = _mcmc_convergence(tree)
    assert summary["chains that cross"] == "1"
    assert "Chain 1 moves between places" in _mcmc_findings(summary)[0][1]
    assert any(item.startswith("chain 1 moves between places") for item in _mcmc_line(tree)[1])
    tree["mcmc/modes"] = xr.Dataset({"weight": (("mode",), np.ones(1)), "crosses": (("chain",), np.zeros(2, bool))})
    assert "chains that cross" not in _mcmc_convergence(tree) and not any("moves" in i for i in _mcmc_line(tree)[1])


def test_the_report_names_the_mode_whose_chains_disagree_or_one_chains_halves(map_fit):
    from mixflow.present.report.cards import _mcmc_convergence, _mcmc_findings

    tree = _with_nuts(map_fit[3], 3, {
        "sampler": "pymc", "max_rhat": 1.08, "min_ess_bulk": 500.0, "min_ess_tail": 450.0, "n_divergences": 0,
        "n_modes": 2, "max_rhat_all_chains": 1.9, "high_rhat": '["weights[0] in mode 1"]', "low_ess_bulk": "[]",
        "low_ess_tail": "[]"})
    tree["mcmc/modes"] = xr.Dataset({"weight": (("mode",), np.array([0.7, 0.3])),
                                     "chain_mode": (("chain",), np.array([0, 1, 0])),
                                     "max_rhat": (("mode",), np.array([1.002, 1.08]))})
    said = [text for level, text in _mcmc_findings(_mcmc_convergence(tree)) if level == "bad"]
    assert said == ["MCMC: max R-hat within a mode 1.080 > 1.01: the halves of chain 1, alone in mode 1, disagree."]
    tree["mcmc/modes"] = tree["mcmc/modes"].to_dataset().assign(chain_mode=("chain", np.array([1, 1, 0])),
                                                                max_rhat=("mode", np.array([1.002, 1.05])))
    said = [text for level, text in _mcmc_findings(_mcmc_convergence(tree)) if level == "bad"]
    assert said == ["MCMC: max R-hat within a mode 1.080 > 1.01: chains 0, 1 of mode 1 disagree."]
    # several modes that disagree: each with its own R-hat
    tree["mcmc/modes"] = tree["mcmc/modes"].to_dataset().assign(chain_mode=("chain", np.array([1, 1, 0])),
                                                                max_rhat=("mode", np.array([1.03, 1.08])))
    said = [text for level, text in _mcmc_findings(_mcmc_convergence(tree)) if level == "bad"]
    assert said == ["MCMC: max R-hat within a mode 1.080 > 1.01: the halves of chain 2, alone in mode 0, disagree: "
                    "R-hat 1.030; chains 0, 1 of mode 1 disagree: R-hat 1.080."]


def test_the_report_marks_the_loo_figures_of_a_mode_left_out(map_fit):
    tree = _with_nuts(map_fit[3], 2, {"n_modes": 2})
    estimate = tree["em/estimate"].to_dataset()
    modes = xr.Dataset({"chain_mode": ("chain", np.array([0, 1])), "stuck": ("chain", np.array([False, True])),
                        "weight": ("mode", np.array([1.0, 0.0])), "in_stacking": ("mode", np.array([True, False])),
                        "elpd_loo": ("mode", np.array([-250.0, -240.0])), "elpd_diff": ("mode", np.array([0.0, 10.0])),
                        "elpd_diff_se": ("mode", np.array([0.0, 2.0])),
                        "weights": (("mode", "component"), np.array([[0.6, 0.4], [0.6, 0.4]]))},
                       coords={"mode": [0, 1], "component": estimate["component"].values})
    tree["mcmc/modes"] = modes
    section, _ = _modes_section(tree)
    cells = re.findall(r"<td>([^<]*)</td>", section)
    assert cells[cells.index("True") + 1:cells.index("True") + 4] == ["-250.0", "0", "0"]
    assert cells[cells.index("False") + 1:cells.index("False") + 4] == ["-240.0 *", "10.00 *", "2.000 *"]
    assert "* marks the leave-one-out figures of a mode left out" in section
    tree["mcmc/modes"] = modes.assign(in_stacking=("mode", np.array([True, True])))
    section, _ = _modes_section(tree)
    assert "10.00" in re.findall(r"<td>([^<]*)</td>", section) and "* marks" not in section


def test_the_summary_gives_each_stacking_weight_with_its_bootstrap_interval(map_fit):
    from mixflow.present.summary import _stacked_line

    tree = map_fit[3].copy()
    estimate = tree["em/estimate"].to_dataset()
    tree["mcmc"] = xr.DataTree(xr.Dataset(attrs={"method": "nuts", "chains": 2, "draws": 10, "n_modes": 2}))
    tree["mcmc/stacked/posterior"] = xr.Dataset({name: (("chain", "draw", *v.dims), np.broadcast_to(
        v.values, (1, 20, *v.shape))) for name, v in estimate.data_vars.items()}, coords=estimate.coords)
    modes = xr.Dataset({"chain_mode": ("chain", np.array([0, 1])), "weight": ("mode", np.array([0.7, 0.3]))},
                       coords={"mode": [0, 1]})
    tree["mcmc/modes"] = modes
    assert _stacked_line(tree)[0].startswith("2 modes (chains 0 | 1), stacking weights 0.700, 0.300, 20 draws")
    tree["mcmc/modes"] = modes.assign(weight_low=("mode", np.array([0.52, 0.12])),
                                      weight_high=("mode", np.array([0.88, 0.48])))
    assert _stacked_line(tree)[0].startswith(
        "2 modes (chains 0 | 1), stacking weights 0.700 [0.520, 0.880], 0.300 [0.120, 0.480] (in brackets, 90% "
        "Bayesian-bootstrap intervals), 20 draws resampled by weight")
    # a mode left out has no weight to give an interval of: said so, not "0.000 [0.00, 0.00]"
    tree["mcmc/modes"] = modes.assign(weight=("mode", np.array([1.0, 0.0])), in_stacking=("mode", [True, False]),
                                      weight_low=("mode", np.array([1.0, 0.0])),
                                      weight_high=("mode", np.array([1.0, 0.0])))
    assert "stacking weights 1.000 [1.000, 1.000], 0 (left out) (in brackets, 90%" in _stacked_line(tree)[0]


def test_select_k_reports_each_k_modes(monkeypatch):
    real_fit = mixflow.fitting.fit
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(-3, 1, 20), rng.normal(3, 1, 20)])

    def fake_fit(model, data, method="em", **kwargs):
        if method != "mcmc":
            return real_fit(model, data, method=method, **kwargs)
        k = model.n_components
        tree = _fake_mcmc_tree(k, rng)
        tree["mcmc"].attrs.update(max_rhat=1.0, min_ess_bulk=500.0, min_ess_tail=400.0, n_divergences=0, n_modes=k,
                                  draws=1000 if k == 1 else 4000, extended="" if k == 1 else "the chains crossed")
        if k == 2:
            tree["mcmc/modes"] = xr.DataTree(xr.Dataset({"lpd_loo": (("obs", "mode"), rng.normal(-2, 0.1, (40, 2))),
                                                         "weight": (("mode",), np.array([0.5, 0.5])),
                                                         "crosses": (("chain",), np.array([True, False]))}))
        return tree

    monkeypatch.setattr(mixflow.fitting, "fit", fake_fit)
    messages = []
    table = mixflow.select_k(mixflow.GaussianMixture(1), x, ks=(1, 2), methods=("map", "mcmc"), n_folds=None,
                             random_seed=2, fit_kwargs={"n_init": 1}, n_jobs=1, progress=messages.append)
    assert table["n_modes"].tolist() == [1, 2] and table["stacked_over_modes"].tolist() == [False, True]
    assert table["extended"].tolist() == [False, True] and table["mcmc_draws"].tolist() == [1000, 4000]
    assert messages[-1].startswith("K=2, NUTS: sampled again with 4000 draws per chain (the first run's chains "
                                   "crossed between places), 2 modes, chain 0 crosses between places, 0 divergences")
    assert messages[-3].startswith("K=1, NUTS: 0 divergences")  # no modes group: nothing to say


@pytest.mark.slow
def test_galaxies_k5_modes_are_named_and_weighted():
    """The galaxies (velocity / 1000) at K=5 by MAP then NUTS, whose chains cross rarely between configurations.

    Few draws keep the test short: it checks what is said and recorded, not convergence (with 200 draws the
    chains are too short to be judged crossing, so they are not sampled again; the default draws are
    :func:`test_galaxies_k5_with_the_default_draws_is_sampled_again_and_agrees_within_its_mode`).
    """
    import arviz_stats as azs

    x = mixflow.load_dataset("galaxies")["velocity"].to_numpy() / 1000
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always", mixflow.SamplingWarning)
        tree = mixflow.fit(mixflow.GaussianMixture(5), x, method=["map", "mcmc"], random_seed=1, draws=200,
                           tune=200, **FAST)
    mcmc, modes = tree["mcmc"], tree["mcmc/modes"]
    n_modes = mcmc.attrs["n_modes"]
    assert modes.attrs["n_modes"] == n_modes == modes.sizes["mode"] >= 1
    chain_mode = modes["chain_mode"].values
    assert chain_mode.shape == (4,) and sorted(set(chain_mode.tolist())) == list(range(n_modes))
    assert modes["weight"].values.sum() == pytest.approx(1.0, abs=1e-12) and np.all(modes["weight"].values >= 0)
    assert modes["n_chains"].values.sum() == 4 and ("stacked" in tree["mcmc"].children) == (n_modes > 1)
    posterior = mcmc["posterior"].to_dataset()
    for mode in range(n_modes):  # R-hat within each mode, as arviz computes it on that mode's chains
        chains = np.flatnonzero(chain_mode == mode)
        if chains.size > 1:
            rhat = azs.rhat(posterior.isel(chain=chains))
            expected = max(float(np.nanmax(rhat[name].values)) for name in rhat.data_vars)
            assert modes["max_rhat"].values[mode] == pytest.approx(expected, rel=1e-12)
    said = [str(w.message) for w in record if str(w.message).startswith("MCMC diagnostics")]
    assert len(said) == 1 and (f"{n_modes} modes (chains" in said[0]) == (n_modes > 1)
    for mode in range(n_modes):  # each mode whose chains disagree is named with the R-hat recorded for it
        chains = ", ".join(map(str, np.flatnonzero(chain_mode == mode)))
        named = (f"the chains fall into 1 mode (chains {chains}) and disagree within it" if n_modes == 1 else
                 f"chains {chains} of mode {mode} disagree" if "," in chains else
                 f"the halves of chain {chains}, alone in mode {mode}, disagree")
        rhat = modes["max_rhat"].values[mode]
        assert (f"{named}: R-hat {rhat:.3f}" in said[0]) == (rhat > 1.01)
    assert "chains disagree" not in said[0]
    assert modes["crosses"].dims == ("chain",) and not modes["crosses"].values.any()  # 200 draws: one window

@pytest.mark.slow
def test_galaxies_k5_with_the_default_draws_is_sampled_again_and_agrees_within_its_mode():
    """The galaxies at K=5 with the default 4 x 1000 draws: the chains cross, so the fit is sampled again.

    The chains move between a component on the two galaxies near 16 and one near 18-19.5
    (:mod:`mixflow.engines.mode_rule`, "Chains that cross"), so the first run's chains disagree within the one
    mode, and the second run has as many draws per chain as that R-hat asks for (README, "Chains that cross"):
    (R-hat - 1) / 0.005 times the first run's 1000, rounded up, between 4 and 16 times. The first run's R-hat is
    read from what the result says of it (to 3 decimals): its exact value is the sampler's path, which its versions
    change.
    """
    x = mixflow.load_dataset("galaxies")["velocity"].to_numpy() / 1000
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always", mixflow.SamplingWarning)  # R-hat between 1.01 and 1.05 is still said
        tree = mixflow.fit(mixflow.GaussianMixture(5), x, method=["map", "mcmc"], random_seed=2, progressbar=False)
    said = [str(w.message) for w in record if str(w.message).startswith("MCMC diagnostics")]
    attrs, modes = tree["mcmc"].attrs, tree["mcmc/modes"]
    found = re.fullmatch(r"(chains? [\d, ]+ of mode \d+) crossed between places in the first run's 1000 draws per "
                         r"chain \(R-hat (1\.\d{3}) within the mode\): sampled again with (\d+) draws per chain at "
                         r"target_accept 0\.95; .*", attrs["extended"])
    assert found, attrs["extended"]
    chains, rhat, draws = found.group(1), float(found.group(2)), int(found.group(3))
    factors = {min(max(4, int(np.ceil(round((rhat + shift - 1) / 0.005, 6)))), 16) for shift in (-5e-4, 5e-4)}
    assert min(factors) * 1000 <= draws <= max(factors) * 1000
    # none when the second run settles; if some, of the second run
    assert all(text.startswith(f"MCMC diagnostics of the second run ({draws} draws per chain at target_accept "
                               "0.95; the first run's chains crossed between places): ") for text in said)
    assert (attrs["draws"], attrs["target_accept"], tree["mcmc/posterior"].sizes["draw"]) == (draws, 0.95, draws)
    assert attrs["n_modes"] == 1 and modes["max_rhat"].values.max() <= 1.05
    assert f"extended: {chains} crossed between places" in mixflow.summary(tree, kind="text")
    from mixflow.present.report.cards import _mcmc_rows
    from mixflow.workflow.run import mcmc_result

    assert ("extended", attrs["extended"]) in _mcmc_rows(tree)  # the report's NUTS card
    assert mcmc_result(attrs).startswith(f"4 chains x {draws} draws in ") and mcmc_result(attrs).endswith(
        "; a second, longer run: the first one's chains crossed between places")  # a workflow's progress line


# -- ADVI from several optima ---------------------------------------------------------------------------------
def test_advi_bad_starts_name_the_argument(map_fit):
    from mixflow.engines.advi import fit_advi

    model, data, estimate, _ = map_fit
    with pytest.raises(ValueError, match=r"starts: expected one of \['reference', 'em-optima'\] or a list"):
        fit_advi(model, data, estimate, starts="bogus", **FAST)
    with pytest.raises(ValueError, match=r"starts: 'em-optima' is resolved by mixflow.fit from EM's restarts"):
        fit_advi(model, data, estimate, starts="em-optima", **FAST)
    with pytest.raises(ValueError, match=r"starts\[1\]"):
        fit_advi(model, data, estimate, starts=[estimate, {"weights": [1.0]}], **FAST)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::mixflow.ConvergenceWarning")  # 60 iterations: q need not settle
def test_advi_from_the_mirror_optima_finds_both_modes_and_stacks_them(mirrored):
    model = mixflow.GaussianMixture(2)
    with pytest.warns(mixflow.SamplingWarning) as record:  # few iterations: q starts at each optimum
        tree = mixflow.fit(model, mirrored, method=["map", "advi"], random_seed=0, n_init=5, draws=200, n=60,
                           check_every=20, starts="em-optima", **FAST)
    advi = tree["advi"]
    assert advi.attrs["starts"] == "em-optima (2 distinct)" and advi.attrs["n_modes"] == 2
    assert tree["advi/posterior"].sizes["chain"] == 2 and tree["advi/sample_stats"]["elbo"].dims == ("chain",
                                                                                                      "iteration")
    modes = tree["advi/modes"]
    assert modes["chain_mode"].values.tolist() == [0, 1]
    np.testing.assert_allclose(modes["weight"].values, [0.5, 0.5], atol=0.05)  # the truth by symmetry
    assert modes["weight"].values.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(modes["mu"].values[1], -modes["mu"].values[0][::-1], atol=0.15)
    em = modes.attrs["em_mode"]  # the mirror optimum EM returned, whichever the restarts ranked first
    assert em in (0, 1) and np.all(modes["max_pareto_k"].values < 0.7)
    np.testing.assert_allclose(modes["mu"].values[em], tree["em/estimate"]["mu"].values, atol=0.15)
    stacked = tree["advi/stacked/posterior"]
    assert stacked.sizes["chain"] == 1 and stacked.sizes["draw"] == 400
    first = int(np.argmin(modes["mu"].values[:, 0, 0]))  # the mode whose first component is at -6
    in_first = (stacked["mu"].values[0, :, 0, 0] < -4).mean()
    assert abs(in_first - modes["weight"].values[first]) < 5 * np.sqrt(0.25 / 400)
    assert any("2 modes (fits 0 | 1; stacking weights" in str(w.message) for w in record)
    assert "the fits fall into 2 modes (fits 0 | 1" in summary_text(tree)
    axes = mixflow.plot_convergence(tree).axes
    labels = [text.get_text() for text in axes[-1].get_legend().get_texts()]  # the ELBO of each fit
    assert labels == ["fit 0", "fit 1"]
    # the stacked draws are a method of their own: compared, summarised, predicted with and plotted
    table = mixflow.compare(tree)
    assert list(table["method"].cat.categories) == ["em", "advi", "advi_stacked"]
    rows = table[(table["method"] == "advi_stacked") & (table["parameter"] == "mu")].sort_values("component")
    np.testing.assert_allclose(rows["estimate"], stacked["mu"].mean(("chain", "draw")).values.ravel(), rtol=1e-12)
    assert "ADVI stacked over modes: 2 modes (fits 0 | 1), stacking weights" in summary_text(tree)
    new = np.array([-6.0, -1.0, 0.5, 6.0])
    weights = stacked["weights"].values[0]
    mu, sd = stacked["mu"].values[0, :, :, 0], np.sqrt(stacked["covariance"].values[0, :, :, 0, 0])
    joint = weights[:, None, :] * stats.norm.pdf(new[None, :, None], mu[:, None, :], sd[:, None, :])
    expected = (joint / joint.sum(axis=2, keepdims=True)).mean(axis=0)  # each draw's responsibilities, averaged
    proba = mixflow.predict_proba(tree, new, method="advi_stacked")
    np.testing.assert_allclose(proba.values, expected, rtol=1e-9, atol=1e-12)
    assert mixflow.predict(tree, new, method="advi_stacked").values.tolist() == expected.argmax(axis=1).tolist()
    figure = mixflow.plot_forest(tree, var_names="weights")
    assert "ADVI stacked over modes" in [text.get_text() for legend in figure.legends for text in legend.get_texts()]
    assert modes_sentence(tree, "advi").startswith(f"EM's MAP estimate lies in mode {em}, which carries 5")
    assert "one of comparable explanations" in modes_sentence(tree, "advi")
    started = tree.copy()  # ADVI started from a MAP fit made for it (the MLE in /em degenerate): that is em_mode's
    started["advi"].attrs["reference"] = "the MAP estimate (the MLE in /em is degenerate)"
    assert modes_sentence(started, "advi").startswith("The MAP estimate the samplers started from (EM's MLE in /em "
                                                      f"is degenerate) lies in mode {em}, which carries 5")
    section, problems = _modes_section(tree)  # the report's Modes section, for ADVI's modes
    assert problems == [] and "<table" in section and "data:image/png" in section
    assert "ADVI's fits (one from each starting point" in section and "<em>ADVI stacked over modes</em>" in section
    assert "<code>ess_reliable</code> (at least 100 draws per fit: a fit's draws are independent)" in section


def test_plot_modes_names_a_bad_method_and_a_result_without_its_modes(map_fit):
    tree = map_fit[3]
    with pytest.raises(ValueError, match=r"^method: expected one of \['mcmc', 'advi'\], got 'nuts'$"):
        plot_modes(tree, method="nuts")
    with pytest.raises(ValueError, match=r"^tree: expected a result with /advi/modes \(fit by method='advi' with "):
        plot_modes(tree, method="advi")


def test_a_mode_of_one_chain_that_disagrees_is_said_by_its_halves():
    from mixflow.engines.sampling_diagnostics import disagreeing_mode

    assert disagreeing_mode(1, 2, np.array([3]), np.array([1.0, 1.05]), None, 200) == (
        "the halves of chain 3, alone in mode 1, disagree: R-hat 1.050")
    assert disagreeing_mode(0, 2, np.array([0, 2]), np.array([1.05, 1.0]), None, 200).startswith(
        "chains 0, 2 of mode 0 disagree: R-hat 1.050")


def test_a_value_above_its_threshold_is_never_printed_as_the_threshold():
    # a mode's Pareto k of 1.002 was said to be "1.00 ... above 1"
    from mixflow.engines.sampling_diagnostics import format_above

    assert format_above(1.002, 1.0) == "1.002" and format_above(0.6049, 0.6) == "0.605"
    assert format_above(0.74, 0.6) == "0.74" and format_above(0.5, 0.6) == "0.50"
    assert format_above(1.0000001, 1.0) == "1.00001"  # above by less than the last place shown: rounded up


@pytest.mark.parametrize(("chains", "said"), [(1, "em-optima (the best of them: one chain)"),
                                              (4, "em-optima (2 distinct)")])
def test_em_optima_says_how_many_optima_the_chains_started_from(mirrored, monkeypatch, chains, said):
    import mixflow.fitting

    tree = mixflow.fit(mixflow.GaussianMixture(2), mirrored, method="map", random_seed=0, n_init=5)
    seen = {}

    def engine(model, data, reference, *, chains=4, starts="reference", random_seed=None):  # stands in for NUTS
        seen["starts"] = starts
        return {"attrs": {}}

    def sampling_tree(result, groups, method):
        seen["attrs"] = groups["attrs"]
        return result

    monkeypatch.setattr(mixflow.fitting, "_engine", lambda method: engine)
    monkeypatch.setattr(mixflow.fitting, "_sampling_tree", sampling_tree)
    monkeypatch.setattr(mixflow.fitting, "_replace_group", lambda result, other, name: result)
    with warnings.catch_warnings():
        warnings.simplefilter("error", mixflow.SamplingWarning)  # two optima: nothing to warn of
        mixflow.fit(mixflow.GaussianMixture(2), mirrored, method="mcmc", tree=tree, chains=chains,
                    starts="em-optima")
    assert len(seen["starts"]) == min(chains, 2) and seen["attrs"]["starts"] == said


def test_pytensors_note_of_an_operation_in_object_mode_does_not_reach_the_caller(mirrored, monkeypatch):
    import mixflow.fitting

    tree = mixflow.fit(mixflow.GaussianMixture(2), mirrored, method="map", random_seed=0, n_init=2)

    def engine(model, data, reference, *, chains=4, random_seed=None):  # stands in for ADVI's compile
        warnings.warn("Numba will use object mode to run Blockwise{AllocDiag}'s perform method.", UserWarning,
                      stacklevel=1)
        warnings.warn("a warning of substance", UserWarning, stacklevel=1)
        return {"attrs": {}}

    monkeypatch.setattr(mixflow.fitting, "_engine", lambda method: engine)
    monkeypatch.setattr(mixflow.fitting, "_sampling_tree", lambda result, groups, method: result)
    monkeypatch.setattr(mixflow.fitting, "_replace_group", lambda result, other, name: result)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        mixflow.fit(mixflow.GaussianMixture(2), mirrored, method="advi", tree=tree)
    assert [str(w.message) for w in record] == ["a warning of substance"]
