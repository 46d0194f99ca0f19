"""MCMC: NUTS on the declared model, started at EM, aligned to its labelling, checked against the truth."""

import importlib.util
import json
import warnings
from copy import copy
from functools import partial

import arviz_stats as azs
import numpy as np
import pymc as pm
import pytest
import xarray as xr
from conftest import simulate_gaussian_mixture
from posterior_checks import assert_chains_agree, assert_width
from scipy import stats
from test_container import assert_trees_identical

import mixflow
from mixflow.data import validate_data
from mixflow.engines import mcmc
from mixflow.engines.mcmc import fit_mcmc, resolve_sampler
from mixflow.engines.over_draws import draw_groups
from mixflow.engines.sampling_diagnostics import diagnose
from mixflow.errors import InputTypeError
from mixflow.families.gaussian.pymc import free_values
from mixflow.families.pymc_parts import build_model
from mixflow.families.relabel import align, gaussian_signature

FAST = {"progressbar": False, "posterior_predictive": False}
SEPARATED = {"weights": [0.4, 0.6], "means": [[-3.0, 0.0], [3.0, 2.0]],
             "covariances": [[[1.0, 0.3], [0.3, 0.5]], [[0.6, -0.2], [-0.2, 1.2]]]}


def _estimate(tree, group="em/estimate"):
    return {name: tree[group][name].values for name in tree[group].data_vars}


@pytest.fixture(scope="module")
def small():
    x, _ = simulate_gaussian_mixture(120, [0.5, 0.5], [[-3.0], [3.0]], [[[1.0]], [[1.0]]], seed=4)
    model = mixflow.GaussianMixture(2, covariance="diag")
    tree = mixflow.fit(model, x, method="map", random_seed=0)
    return model, validate_data(x), _estimate(tree)


# -- fast: arguments, sampler choice, the numbers computed from draws, diagnostics ---------------------------
@pytest.mark.parametrize("change, error, message", [
    ({"draws": 0}, ValueError, r"draws: expected an integer >= 1, got 0"),
    ({"tune": -1}, ValueError, r"tune: expected an integer >= 0, got -1"),
    ({"chains": 2.5}, ValueError, r"chains: expected an integer >= 1, got 2.5"),
    ({"cores": 0}, ValueError, r"cores: expected an integer >= 1, got 0"),
    ({"random_seed": -3}, ValueError, r"random_seed: expected None or a non-negative integer below 2\*\*63 .*got -3"),
    ({"sampler": "stan"}, ValueError, r"sampler: expected one of \['auto', 'nutpie', 'pymc'\], got 'stan'"),
    ({"target_accept": 1.2}, ValueError, r"target_accept: expected a number in \(0, 1\), got 1.2"),
    ({"target_accept": True}, InputTypeError, r"target_accept: expected a number in \(0, 1\), got True"),
    ({"jitter": -1.0}, ValueError, r"jitter: expected a non-negative number, got -1.0"),
    ({"jitter": "0.1"}, InputTypeError, r"jitter: expected a non-negative number, got '0.1'"),
    ({"adaptation": "full"}, ValueError, r"adaptation: expected one of \['low_rank', 'diag'\], got 'full'"),
    ({"progressbar": "no"}, TypeError, r"progressbar: expected True or False, got 'no'"),
    ({"extend": "yes"}, TypeError, r"extend: expected True or False, got 'yes'"),
])
def test_bad_options_name_the_argument(small, change, error, message):
    model, data, reference = small
    with pytest.raises(error, match=message):
        fit_mcmc(model, data, reference, **change)


def test_bad_model_data_and_reference_name_the_argument(small):
    model, data, reference = small
    with pytest.raises(TypeError, match="model: expected a mixflow model with a PyMC form .* got object"):
        fit_mcmc(object(), data, reference)
    with pytest.raises(TypeError, match="data: expected validated mixflow.data.Data, got ndarray"):
        fit_mcmc(model, np.zeros((5, 1)), reference)
    with pytest.raises(TypeError, match="reference: expected a dict of parameters"):
        fit_mcmc(model, data, [reference])
    with pytest.raises(ValueError, match=r"reference\['mu'\]: expected shape \(2, 1\), got \(3, 1\)"):
        fit_mcmc(model, data, {**reference, "mu": np.zeros((3, 1))})
    with pytest.raises(ValueError, match=r"reference: expected keys"):
        fit_mcmc(model, data, {"weights": reference["weights"], "mu": reference["mu"]})


def test_sampler_auto_is_nutpie_when_installed_and_nutpie_needs_nutpie(monkeypatch):
    installed = importlib.util.find_spec("nutpie") is not None  # the faster (README, benchmarks/mcmc_ess.py)
    assert resolve_sampler("auto") == ("nutpie" if installed else "pymc")
    assert resolve_sampler("pymc") == "pymc"
    monkeypatch.setattr(mcmc.importlib.util, "find_spec", lambda name: None)
    assert resolve_sampler("auto") == "pymc"
    with pytest.raises(ImportError, match="sampler: 'nutpie' was requested but nutpie is not installed"):
        resolve_sampler("nutpie")


def test_the_chains_traces_share_their_compiled_function_and_not_their_draws():
    with pm.Model() as model:
        x = pm.Normal("x", shape=2)
        pm.Deterministic("twice", 2 * x)
    trace = mcmc._chain_trace(model, {"x": np.zeros(2)}, ["twice"])
    one, two = copy(trace), copy(trace)  # what pm.sample does, once per chain
    one.setup(3, 0)
    two.setup(3, 1)
    one.record({"x": np.array([1.0, 2.0])}, in_warmup=False)
    assert one.fn is two.fn and one.samples is not two.samples
    assert one.varnames == ["twice"] and len(one) == 1 and len(two) == 0
    np.testing.assert_array_equal(one.samples["twice"][0], [2.0, 4.0])


def test_numba_optimisation_level_is_restored():
    from numba.core import config

    from mixflow.engines.nutpie_compile import _numba_optimisation

    before = int(config.OPT)
    with pytest.raises(RuntimeError), _numba_optimisation(0):
        assert int(config.OPT) == 0
        raise RuntimeError
    assert int(config.OPT) == before


def _naive_pointwise(x, weights, means, variances):
    joint = np.stack([w * stats.multivariate_normal(m, np.diag(v)).pdf(x).reshape(-1)
                      for w, m, v in zip(weights, means, variances, strict=True)], axis=1)
    return np.log(joint.sum(axis=1)), joint / joint.sum(axis=1, keepdims=True)


def test_pointwise_log_likelihood_and_responsibilities_against_scipy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 2)) * [1.0, 3.0]
    data = validate_data(x, weights=rng.integers(1, 3, 30).astype(float))
    model = mixflow.GaussianMixture(2, covariance="diag")
    draws = {"weights": rng.dirichlet([3.0, 3.0], size=(2, 3)), "mu": rng.normal(size=(2, 3, 2, 2)),
             "variance": rng.uniform(0.5, 3.0, (2, 3, 2, 2))}
    groups = draw_groups(model, data, draws, True, np.random.default_rng(1))
    naive = [_naive_pointwise(x, draws["weights"][c, s], draws["mu"][c, s], draws["variance"][c, s])
             for c in range(2) for s in range(3)]
    log_likelihood = np.array([n[0] for n in naive]).reshape(2, 3, 30)
    resp = np.array([n[1] for n in naive])
    spread = groups["responsibilities"]["variables"]
    np.testing.assert_allclose(groups["log_likelihood"]["variables"]["x"][1], log_likelihood, rtol=1e-10)
    np.testing.assert_allclose(spread["responsibilities_mean"][1], resp.mean(axis=0), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(spread["responsibilities_sd"][1], resp.std(axis=0, ddof=1), rtol=1e-7, atol=1e-10)
    dims, predictive = groups["posterior_predictive"]["variables"]["x"]
    assert dims == ("chain", "draw", "unit", "feature")
    assert predictive.shape == (2, 3, int(data.total_weight), 2)  # one row per frequency unit
    # its observed counterpart, for ArviZ's predictive checks: each unit of a row's weight as a row
    observed_dims, observed = groups["observed_data"]["variables"]["x"]
    assert observed_dims == ("unit", "feature")
    np.testing.assert_array_equal(observed, np.repeat(x, data.weights.astype(int), axis=0))


def test_posterior_predictive_draws_follow_the_mixture():
    model = mixflow.GaussianMixture(2, covariance="full")
    data = validate_data(np.random.default_rng(0).normal(size=(4000, 2)))
    params = {"weights": np.array([0.3, 0.7]), "mu": np.array([[-2.0, 0.0], [2.0, 1.0]]),
              "covariance": np.array([[[1.0, 0.5], [0.5, 1.0]], [[0.5, 0.0], [0.0, 2.0]]])}
    draws = {name: value[None, None] for name, value in params.items()}
    replicate = draw_groups(model, data, draws, True, np.random.default_rng(2))["posterior_predictive"][
        "variables"]["x"][1][0, 0]
    mean = params["weights"] @ params["mu"]
    spread = sum(w * (c + np.outer(m - mean, m - mean))
                 for w, m, c in zip(params["weights"], params["mu"], params["covariance"], strict=True))
    np.testing.assert_allclose(replicate.mean(axis=0), mean, atol=4 * np.sqrt(spread.diagonal().max() / 4000))
    np.testing.assert_allclose(np.cov(replicate.T), spread, atol=0.15)


def _posterior(rhat_bad=False, n_draws=300):
    rng = np.random.default_rng(3)
    mu = rng.normal(size=(4, n_draws, 2, 1)) * 0.1 + np.array([[-1.0], [1.0]])
    if rhat_bad:
        mu[0] += 0.5  # one chain elsewhere
    weights = rng.dirichlet([50, 50], size=(4, n_draws))
    aligned = {"weights": (("chain", "draw", "component"), weights),
               "mu": (("chain", "draw", "component", "feature"), mu)}
    raw = xr.Dataset(coords={"chain": np.arange(4), "draw": np.arange(n_draws), "component": [0, 1],
                             "feature": ["waiting"]})
    return aligned, raw


def test_diagnostics_warn_naming_parameters_and_what_to_try():
    aligned, raw = _posterior(rhat_bad=True)
    stats_ = {"diverging": (("chain", "draw"), np.eye(4, 300, dtype=bool))}
    options = {"chains": 4, "draws": 300, "tune": 300, "target_accept": 0.8}
    with pytest.warns(mixflow.SamplingWarning) as record:
        summary = diagnose(aligned, raw, stats_, options)
    message = str(record[0].message)
    assert "R-hat above 1.01 for mu[0, waiting], mu[1, waiting]" in message
    assert "4 divergent transitions" in message
    assert "target_accept (0.95" in message and "draws=600" in message
    assert summary["n_divergences"] == 4 and summary["max_rhat"] > 1.01


def test_diagnostics_quiet_when_all_is_well():
    aligned, raw = _posterior()
    options = {"chains": 4, "draws": 300, "tune": 300, "target_accept": 0.8}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        summary = diagnose(aligned, raw, {"diverging": (("chain", "draw"), np.zeros((4, 300), bool))}, options)
    assert summary["max_rhat"] < 1.01 and summary["min_ess_bulk"] > 400 and summary["high_rhat"] == "[]"


@pytest.mark.parametrize("n_draws", [1, 3])
def test_draws_too_few_for_an_ess_are_said_not_passed_over_as_nan(n_draws):
    aligned, raw = _posterior(n_draws=n_draws)
    options = {"chains": 4, "draws": n_draws, "tune": 300, "target_accept": 0.8}
    with pytest.warns(mixflow.SamplingWarning) as record:
        summary = diagnose(aligned, raw, {"diverging": (("chain", "draw"), np.zeros((4, n_draws), bool))}, options)
    assert np.isnan(summary["min_ess_bulk"])
    message = str(record[0].message)
    assert (f"with {n_draws} draw{'s' * (n_draws > 1)} per chain, R-hat and ESS cannot be computed (they need at least "
            "4): the draws are no sample to summarise" in message) and "draws=1000" in message
    assert "bulk or tail ESS below 400 (100 per chain) for weights[0], weights[1], mu[0, waiting]" in message
    assert len(json.loads(summary["low_ess_bulk"])) == 4  # as the report reads them


def test_a_mode_whose_chains_disagree_and_cross_is_the_reason_to_sample_longer():
    from mixflow.engines.mcmc import _extend_reason, _extended_draws

    def modes(rhat, crosses, chain_mode=(0, 0, 0, 0), bulk=None, tail=None):
        enough = np.full(len(rhat), 1000.0)
        return {"chain_mode": (("chain",), np.array(chain_mode)), "max_rhat": (("mode",), np.array(rhat)),
                "min_ess_bulk": (("mode",), enough if bulk is None else np.array(bulk)),
                "min_ess_tail": (("mode",), enough if tail is None else np.array(tail)),
                "crosses": (("chain",), np.array(crosses))}

    options = {"extend": True, "draws": 1000, "target_accept": 0.8}
    assert _extend_reason(modes([1.12], [True, False, True, False]), options) == (
        "chains 0, 2 of mode 0 crossed between places in the first run's 1000 draws per chain (R-hat 1.120 within "
        "the mode)")
    assert _extend_reason(modes([1.009], [True] * 4), options) == ""  # the chains agree: nothing to settle
    # they agree, but cross too rarely for 100 effective draws per chain: more draws settle that too
    assert _extend_reason(modes([1.009], [True, True, False, True], bulk=[302.4], tail=[496.0]), options) == (
        "chains 0, 1, 3 of mode 0 crossed between places in the first run's 1000 draws per chain (bulk ESS 302 "
        "within the mode, below 400)")
    assert _extend_reason(modes([1.009], [True] * 4, bulk=[500.0], tail=[399.0]), options).endswith(
        "(tail ESS 399 within the mode, below 400)")
    assert _extend_reason(modes([1.009], [False] * 4, bulk=[40.0]), options) == ""  # none crosses
    assert _extend_reason(modes([1.009, 1.0], [False, False, True, True], [0, 0, 1, 1], bulk=[40.0, 150.0]),
                          options).startswith("chains 2, 3 of mode 1")  # mode 0 does not cross
    assert _extend_reason(modes([1.009, 1.0], [False, False, True, True], [0, 0, 1, 1], bulk=[40.0, 200.0]),
                          options) == ""  # 100 per chain of the mode's two chains
    assert _extend_reason(modes([1.3], [False] * 4), options) == ""  # disagreeing, none crossing: more draws won't
    assert _extend_reason(modes([1.12], [True] * 4), {**options, "extend": False}) == ""
    # the second run has more draws, so a run with many draws at a high target acceptance is extended too
    assert _extend_reason(modes([1.12], [True] * 4), {**options, "draws": 4000}) != ""
    assert _extend_reason(modes([1.12], [True] * 4), {**options, "draws": 9000, "target_accept": 0.99}) != ""
    # two modes: the one whose chains cross and disagree is named
    assert _extend_reason(modes([1.3, 1.02], [False, False, True, False], [0, 0, 1, 1]), options).startswith(
        "chain 2 of mode 1 crossed")
    # a stuck chain in the mode: more draws do not free it (a second run of minutes ended at R-hat 3.0)
    stuck = {**modes([1.12], [True, False, True, False]), "stuck": (("chain",), np.array([False, True, False, False]))}
    assert _extend_reason(stuck, options) == ""
    two = {**modes([1.12, 1.12], [True, True, True, False], [0, 0, 1, 1]),
           "stuck": (("chain",), np.array([False, False, False, True]))}
    assert _extend_reason(two, options).startswith("chains 0, 1 of mode 0")  # the mode without a stuck chain
    # the second run's draws: R-hat - 1 and 1 / ESS fall as the inverse of the draws, so the first run's draws
    # times (R-hat - 1) / 0.005 (aiming at 1.005) or twice the least ESS over the ESS, from 4 to 16 times, at least
    # 4000
    assert _extended_draws(modes([1.06], [True] * 4), options) == 12000
    assert _extended_draws(modes([1.0105], [True] * 4), options) == 4000  # 2.1 times: at least 4
    assert _extended_draws(modes([1.12], [True] * 4), options) == 16000  # 24 times: at most 16
    assert _extended_draws(modes([1.06], [True] * 4), {**options, "draws": 200}) == 4000  # 12 x 200: at least 4000
    assert _extended_draws(modes([1.009], [True] * 4, bulk=[100.0]), options) == 8000  # twice 400, over 100
    # figures that are not finite: the most draws, and a missing ESS is not the one named
    assert _extended_draws(modes([np.inf], [True] * 4), options) == 16000
    assert _extend_reason(modes([1.009], [True] * 4, bulk=[50.0], tail=[np.nan]), options).endswith(
        "(bulk ESS 50 within the mode, below 400)")
    assert _extended_draws(modes([1.009], [True] * 4, bulk=[50.0], tail=[np.nan]), options) == 16000
    assert _extended_draws(two, options) == 16000  # the mode without a stuck chain


@pytest.mark.slow
def test_chains_that_cross_are_sampled_again_longer_and_only_the_longer_run_is_kept(small, monkeypatch, caplog):
    import logging

    import mixflow.engines.mcmc as engine

    monkeypatch.setattr(engine, "EXTEND_DRAWS", 100)  # the least draws of a second run, kept few here: 4 x 40 is more
    model, data, reference = small
    run = {"draws": 40, "tune": 40, "chains": 2, "sampler": "pymc", "random_seed": 3, **FAST}
    # the posterior predictive is made for the run kept only, not for the first run the second replaces
    simulated, predictive = [], engine.predictive_groups

    def counting(model, data, draws, rng, timings=None):
        simulated.append(draws["weights"].shape[1])
        return predictive(model, data, draws, rng, timings)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixflow.SamplingWarning)  # a few draws: too few for the ESS check
        direct = fit_mcmc(model, data, reference, **{**run, "draws": 160, "target_accept": 0.95})
        monkeypatch.setattr(engine, "_extend_reason", lambda modes, options: "the chains crossed" * options["extend"])
        monkeypatch.setattr(engine, "predictive_groups", counting)
        with caplog.at_level(logging.INFO, logger="mixflow"):
            extended = fit_mcmc(model, data, reference, **{**run, "posterior_predictive": True})
    assert caplog.messages == ["NUTS: the chains crossed; sampling again with 160 draws per chain at target_accept "
                               "0.95"]  # said as it starts (a workflow shows it as a progress line)
    attrs = extended["attrs"]
    assert (attrs["draws"], attrs["target_accept"], direct["attrs"]["extended"]) == (160, 0.95, "")
    assert attrs["extended"] == ("the chains crossed: sampled again with 160 draws per chain at target_accept "
                                 "0.95; the first run's time is not in wall_time (timings' first_run)")
    assert json.loads(attrs["timings"])["first_run"] > 0  # a time, which differs on every run: not in the text
    np.testing.assert_array_equal(extended["groups"]["posterior"]["variables"]["mu"][1],
                                  direct["groups"]["posterior"]["variables"]["mu"][1])
    assert simulated == [160] and extended["groups"]["posterior_predictive"]["variables"]["x"][1].shape[1] == 160
    memory = engine.check_memory

    def short_of_memory(chains, draws, values, what):  # room for the first run only
        if draws > 40:
            raise engine.MemoryNeeded("draws: too many for this test's memory")
        memory(chains, draws, values, what)

    monkeypatch.setattr(engine, "check_memory", short_of_memory)
    caplog.clear()
    with pytest.warns(mixflow.SamplingWarning, match=r"^MCMC: the chains crossed; not sampled again with more "
                                                     r"draws: draws: too many for this test's memory"), \
            caplog.at_level(logging.INFO, logger="mixflow"):
        kept = fit_mcmc(model, data, reference, **run)
    assert caplog.messages == []  # not said to start, as it does not
    assert (kept["attrs"]["draws"], kept["attrs"]["extended"]) == (40, "")
    # the draws the mode needs do not fit, four times the first run's do: the second run has those
    monkeypatch.setattr(engine, "_extended_draws", lambda modes, options: 640)
    monkeypatch.setattr(engine, "check_memory", lambda chains, draws, values, what: (
        short_of_memory(chains, draws // 4, values, what)))  # room for up to 160 draws
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixflow.SamplingWarning)
        fallback = fit_mcmc(model, data, reference, **run)
    assert fallback["attrs"]["draws"] == 160 and fallback["attrs"]["extended"].startswith(
        "the chains crossed: sampled again with 160 draws per chain")


# -- slow: real sampling -------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["pymc", "nutpie"])
def test_same_seed_same_draws_for_both_samplers(small, sampler):
    if sampler == "nutpie" and importlib.util.find_spec("nutpie") is None:
        pytest.skip("nutpie not installed")
    model, data, reference = small
    run = {"draws": 60, "tune": 60, "chains": 2, "sampler": sampler, **FAST}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixflow.SamplingWarning)  # 60 draws are too few for the ESS check
        first = fit_mcmc(model, data, reference, random_seed=5, **run)
        again = fit_mcmc(model, data, reference, random_seed=5, **run)
        other = fit_mcmc(model, data, reference, random_seed=6, **run)
    assert first["attrs"]["sampler"] == sampler
    timings = json.loads(first["attrs"]["timings"])  # where the time went, phase by phase
    phases = {"build", "compile", "tune_and_draw", "align", "log_likelihood_responsibilities",
              "posterior_predictive", "modes", "diagnostics"}
    assert phases <= set(timings) and all(seconds >= 0 for seconds in timings.values())
    assert ("draws" in timings) == (sampler == "pymc")  # PyMC times every kept draw; nutpie does not
    mu = first["groups"]["posterior"]["variables"]["mu"][1]
    np.testing.assert_array_equal(mu, again["groups"]["posterior"]["variables"]["mu"][1])
    assert not np.array_equal(mu, other["groups"]["posterior"]["variables"]["mu"][1])
    assert mu.shape == (2, 60, 2, 1)


@pytest.mark.slow
def test_pymc_s_nuts_reuses_the_log_density_of_a_model_of_the_same_structure_with_its_own_data(small, monkeypatch):
    # PyMC's NUTS compiled the log density and gradient anew for every fit (about 5 s of a 7 s fit); a fit of another
    # data set of the same shapes reuses the last one's, refilled: its draws are those of a fresh compilation
    from mixflow.engines.kept import KeptCompiled

    model, data, reference = small
    other = validate_data(data.values[::-1] * 1.5 + 0.25)  # the same shapes, other numbers
    run = {"draws": 30, "tune": 30, "chains": 1, "sampler": "pymc", "random_seed": 2, **FAST}
    compiled = []
    original = pm.Model.logp_dlogp_function
    monkeypatch.setattr(pm.Model, "logp_dlogp_function",
                        lambda self, *args, **kwargs: compiled.append(1) or original(self, *args, **kwargs))

    def mu(fit):
        return fit["groups"]["posterior"]["variables"]["mu"][1]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixflow.SamplingWarning)  # 30 draws are too few for the ESS check
        monkeypatch.setattr(mcmc, "_LOGP_DLOGP", KeptCompiled())
        fresh = mu(fit_mcmc(model, other, reference, **run))
        assert len(compiled) == 1
        monkeypatch.setattr(mcmc, "_LOGP_DLOGP", KeptCompiled())
        first = mu(fit_mcmc(model, data, reference, **run))
        refilled = mu(fit_mcmc(model, other, reference, **run))
        again = mu(fit_mcmc(model, data, reference, **run))
    assert len(compiled) == 2  # the first fit's compilation, and no other
    np.testing.assert_array_equal(refilled, fresh)
    np.testing.assert_array_equal(again, first)
    assert not np.array_equal(first, fresh)


def _exact_moment_sample(n, weights, means, covariances, seed):
    """Simulated clusters whose sample weights, means and (MLE) covariances equal the truth exactly.

    A random sample's own moments stray from the truth by about one posterior sd, so whether the truth of
    all 11 numbers sits inside 94% intervals would be a coin toss over data seeds (data seeds 1-5 of a plain
    simulation each miss one to three covariance entries, while the posterior agrees with the sample
    covariance of the true clusters to 0.3 sd). Fixing the sample moments makes the check about the sampler.
    """
    rng = np.random.default_rng(seed)
    clusters = []
    for weight, mean, covariance in zip(weights, means, covariances, strict=True):
        z = rng.standard_normal((round(n * weight), len(mean)))
        z -= z.mean(axis=0)
        z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z.T, bias=True))).T
        clusters.append(np.asarray(mean) + z @ np.linalg.cholesky(covariance).T)
    return rng.permutation(np.concatenate(clusters))


@pytest.fixture(scope="module")
def simulated_full():
    x = _exact_moment_sample(500, SEPARATED["weights"], SEPARATED["means"], SEPARATED["covariances"], seed=1)
    model = mixflow.GaussianMixture(2, covariance="full")
    return mixflow.fit(model, x, method=["map", "mcmc"], random_seed=3, draws=500, tune=400, chains=2,
                       sampler="pymc", **FAST)


@pytest.mark.slow
def test_simulated_truth_inside_94_percent_intervals(simulated_full):
    posterior = simulated_full["mcmc/posterior"].to_dataset()
    low, high = posterior.quantile(0.03, dim=("chain", "draw")), posterior.quantile(0.97, dim=("chain", "draw"))
    truth = {"weights": np.array(SEPARATED["weights"]), "mu": np.array(SEPARATED["means"]),
             "covariance": np.array(SEPARATED["covariances"])}
    for name, value in truth.items():
        inside = (low[name].values <= value) & (value <= high[name].values)
        assert inside.all(), (name, low[name].values, value, high[name].values)
    # and the intervals are as narrow as they should be: sd(mu_kj) ~ sqrt(Sigma_kjj / N_k)
    expected = np.sqrt(np.diagonal(truth["covariance"], axis1=1, axis2=2) / (500 * truth["weights"][:, None]))
    np.testing.assert_allclose(posterior["mu"].std(("chain", "draw")).values, expected, rtol=0.2)


@pytest.mark.slow
def test_posterior_mean_near_the_map_on_well_separated_data(simulated_full):
    posterior = simulated_full["mcmc/posterior"].to_dataset()
    mean, sd = posterior.mean(("chain", "draw")), posterior.std(("chain", "draw"))
    estimate = simulated_full["em/estimate"]
    # a covariance's posterior is skewed: its mean sits above its mode by about (d + 1) sqrt(2 / N_k) sd
    for name, tolerance in (("weights", 0.2), ("mu", 0.2), ("covariance", 0.5)):
        gap = np.abs(mean[name].values - estimate[name].values) / sd[name].values
        assert gap.max() < tolerance, (name, gap)
    # R-hat of 2 chains x 500 draws is itself noisy (it has read 1.0097, 1.0100 and 1.016 after float-level
    # changes): the chains' means are compared in units of their Monte Carlo standard error instead
    assert_chains_agree(simulated_full)
    assert simulated_full["mcmc"].attrs["n_divergences"] == 0


@pytest.fixture(scope="module")
def faithful_mcmc(faithful):
    model = mixflow.GaussianMixture(2, covariance="full")
    return mixflow.fit(model, faithful, method=["em", "mcmc"], random_seed=11, data_name="faithful",
                       draws=500, tune=500, chains=4, sampler="pymc", progressbar=False)


@pytest.mark.slow
def test_faithful_em_estimates_inside_89_percent_intervals(faithful_mcmc, faithful):
    posterior = faithful_mcmc["mcmc/posterior"].to_dataset()
    low, high = posterior.quantile(0.055, dim=("chain", "draw")), posterior.quantile(0.945, dim=("chain", "draw"))
    mle = _estimate(faithful_mcmc)
    map_ = _estimate(mixflow.fit(mixflow.GaussianMixture(2, covariance="full"), faithful, method="map", random_seed=0))
    for estimate in (mle, map_):
        for name, value in estimate.items():
            assert ((low[name].values <= value) & (value <= high[name].values)).all(), name
    # and the intervals have the width the curvature at the maximum gives (n = 272: posterior ~ Laplace)
    assert_width(faithful_mcmc, "mcmc", rtol=0.2)
    attrs = faithful_mcmc["mcmc"].attrs
    assert attrs["sampler"] == "pymc"  # pinned: the draws would differ with nutpie
    assert_chains_agree(faithful_mcmc)
    assert attrs["n_divergences"] == 0


@pytest.mark.slow
def test_faithful_mcmc_groups_are_arviz_ready(faithful_mcmc):
    mcmc_tree = faithful_mcmc["mcmc"]
    assert {"posterior", "sample_stats", "log_likelihood", "posterior_predictive", "responsibilities"} <= set(
        mcmc_tree.children)
    assert set(mcmc_tree["posterior"].data_vars) == {"weights", "mu", "covariance"}
    assert mcmc_tree["posterior"]["covariance"].dims == ("chain", "draw", "component", "feature", "feature_")
    assert mcmc_tree["log_likelihood"]["x"].dims == ("chain", "draw", "obs")
    assert mcmc_tree["posterior_predictive"]["x"].dims == ("chain", "draw", "obs", "feature")
    resp = mcmc_tree["responsibilities"]["responsibilities_mean"].values
    np.testing.assert_allclose(resp.sum(axis=1), 1.0)
    em_labels = faithful_mcmc["em/responsibilities"]["responsibilities"].values.argmax(axis=1)
    assert (resp.argmax(axis=1) == em_labels).mean() > 0.97
    loo = azs.loo(faithful_mcmc["mcmc"])
    assert np.isfinite(loo.elpd)


@pytest.mark.slow
def test_save_and_load_with_mcmc_lose_nothing(faithful_mcmc, tmp_path):
    loaded = mixflow.load(mixflow.save(faithful_mcmc, tmp_path / "faithful.nc"))
    assert_trees_identical(faithful_mcmc, loaded)


@pytest.mark.slow
def test_chains_sampled_in_different_labellings_come_out_aligned():
    """Real NUTS chains started in swapped labellings stay there; alignment brings R-hat to 1."""
    x, _ = simulate_gaussian_mixture(200, [0.4, 0.6], [[-2.5], [2.5]], [[[1.0]], [[1.0]]], seed=8)
    model = mixflow.GaussianMixture(2, covariance="diag")
    data = validate_data(x)
    reference = _estimate(mixflow.fit(model, x, method="map", random_seed=0))
    swapped = model.permute(reference, np.array([1, 0]), data.features)
    starts = [free_values(model, data, p) for p in (reference, swapped, reference, swapped)]
    with build_model(model, data):
        idata = pm.sample(draws=300, tune=300, chains=4, cores=2, random_seed=1, initvals=starts, init="adapt_diag",
                          nuts_sampler="pymc", progressbar=False, quiet=True, compute_convergence_checks=False)
    raw = {name: (idata["posterior"][name].dims, idata["posterior"][name].values) for name in reference}
    before = azs.rhat(idata["posterior"].to_dataset()[["mu"]])["mu"].values.max()
    aligned, permutations = align(raw, reference, partial(gaussian_signature, data_scale=np.array([x.std()])))
    after = azs.rhat(xr.Dataset({"mu": aligned["mu"]}))["mu"].values.max()
    assert before > 1.5 and after < 1.01
    assert np.any(permutations != [0, 1], axis=-1).sum(axis=1).tolist() == [0, 300, 0, 300]
