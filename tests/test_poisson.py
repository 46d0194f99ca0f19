"""Poisson mixtures: the London deaths against published figures, scipy references, simulation, MAP, errors."""

import decimal
import json
import re
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

import mixflow
from mixflow.families.poisson.model import PoissonMixture, PoissonPrior


@pytest.fixture(scope="module")
def deaths():
    return mixflow.load_dataset("london_deaths")


def naive_log_likelihood(y, frequency, weights, rates):
    """Reference log-likelihood with scipy.stats (log(y!) included by the pmf)."""
    density = sum(w * stats.poisson.pmf(y, r) for w, r in zip(weights, rates, strict=True))
    return float(frequency @ np.log(density))


def estimate(tree):
    return {name: tree["em/estimate"][name].values for name in tree["em/estimate"].data_vars}


@pytest.fixture(scope="module")
def london_fit(deaths):
    # EM is famously slow here (SQUAREM's example); tol=1e-16 per observation is below the rounding of the
    # log-likelihood (about -1990), so EM runs until its gains are lost in that rounding.
    # One k-means start run to the end: the default init="auto" continues short runs, and where a path
    # enters this valley, flat to 1e-12 over 1e-5 of the rates, moves where EM's gains vanish in rounding.
    return mixflow.fit(PoissonMixture(2), deaths["deaths"], weights=deaths["days"], random_seed=1, n_init=1,
                       init="kmeans", tol=1e-16, max_iter=20000)


@pytest.fixture(scope="module")
def exact_mle(deaths):
    """The MLE by direct maximisation of a naive scipy.stats likelihood: (weights, rates, log-likelihood)."""
    y, days = deaths["deaths"].to_numpy(), deaths["days"].to_numpy()

    def negative(vector):
        weight = 1.0 / (1.0 + np.exp(-vector[0]))
        return -naive_log_likelihood(y, days, [weight, 1 - weight], np.exp(vector[1:]))

    # BFGS gets near; Nelder-Mead with tight tolerances then pins the flat optimum to about 1e-7
    result = optimize.minimize(negative, [0.0, np.log(1.0), np.log(3.0)], method="BFGS", options={"gtol": 1e-8})
    result = optimize.minimize(negative, result.x, method="Nelder-Mead",
                               options={"xatol": 1e-10, "fatol": 1e-13, "maxiter": 20000})
    weight = 1.0 / (1.0 + np.exp(-result.x[0]))
    weights, rates = np.array([weight, 1 - weight]), np.exp(result.x[1:])
    order = np.argsort(rates)
    return weights[order], rates[order], -result.fun


def test_london_deaths_match_the_published_squarem_figures(london_fit):
    """SQUAREM vignette (plain EM): 0.6401136 on 2.6634056, 0.3598864 on 1.2560968; -log L 1989.946.

    The log-likelihood is checked to its printed precision. The parameters agree to 1e-5, not to the
    seven printed digits: the likelihood is flat to 1e-12 over a few 1e-6 of the parameters, so an EM
    stopped on its objective cannot resolve them further (the published run is 1.7e-6 from the exact MLE
    0.3598854 / 0.6401146 on 1.2560951 / 2.6634044, ours 1.3e-7).
    """
    found = estimate(london_fit)
    assert london_fit["em"].attrs["converged"]
    np.testing.assert_allclose(found["weights"], [0.3598864, 0.6401136], atol=1e-5)
    np.testing.assert_allclose(found["rate"], [1.2560968, 2.6634056], atol=1e-5)
    assert -london_fit["em"].attrs["log_likelihood"] == pytest.approx(1989.946, abs=5e-4)


def test_london_deaths_estimate_is_the_maximum_of_a_naive_likelihood(london_fit, exact_mle, deaths):
    weights, rates, log_likelihood = exact_mle
    found = estimate(london_fit)
    np.testing.assert_allclose(found["weights"], weights, atol=1e-5)
    np.testing.assert_allclose(found["rate"], rates, atol=1e-5)
    assert london_fit["em"].attrs["log_likelihood"] == pytest.approx(log_likelihood, rel=1e-13)
    naive = naive_log_likelihood(deaths["deaths"], deaths["days"], found["weights"], found["rate"])
    assert london_fit["em"].attrs["log_likelihood"] == pytest.approx(naive, rel=1e-14)


def test_the_exact_mle_is_a_fixed_point_of_the_em_step(exact_mle, deaths):
    weights, rates, _ = exact_mle
    start = {"weights": weights, "rate": rates}
    with pytest.warns(mixflow.ConvergenceWarning):
        tree = mixflow.fit(PoissonMixture(2), deaths["deaths"], weights=deaths["days"], init=start, max_iter=1,
                           tol=1e-300)
    found = estimate(tree)
    np.testing.assert_allclose(found["weights"], start["weights"], atol=1e-8)
    np.testing.assert_allclose(found["rate"], start["rate"], atol=1e-8)


def test_a_component_on_the_zeros_alone_converges_to_rate_zero(deaths):
    """London deaths at K=3 has a maximum with a component on the zero counts alone: its rate's maximum is 0.

    EM approaches it geometrically; the stop measures rates on a count's variance-stabilised scale
    (``2 sqrt(rate)``), where that has a limit, so the run converges (its log falls without end: a stop that
    measured log-rates would never come). The reference: a naive scipy likelihood of a point mass at zero and two
    Poisson components, maximised directly (BFGS), agrees to 1e-8 (5e-12 relative), and is above the
    K=2 maximum (-1989.9459, published), of which K=3 fits that split a component are copies.
    """
    y, days = deaths["deaths"].to_numpy(), deaths["days"].to_numpy()
    start = {"weights": np.array([0.0056, 0.3788, 0.6156]), "rate": np.array([0.05, 1.33, 2.69])}
    with warnings.catch_warnings():
        warnings.simplefilter("error", mixflow.ConvergenceWarning)
        tree = mixflow.fit(PoissonMixture(3), deaths["deaths"], weights=deaths["days"], init=start)
    found, attrs = estimate(tree), tree["em"].attrs
    assert attrs["converged"] and attrs["n_iter"] < 1000 and found["rate"][0] < 1e-12

    def negative(vector):
        weights = np.exp(vector[:3] - vector[:3].max())
        return -naive_log_likelihood(y, days, weights / weights.sum(), np.concatenate([[0.0], np.exp(vector[3:])]))

    result = optimize.minimize(negative, [np.log(0.0056), np.log(0.38), np.log(0.62), np.log(1.3), np.log(2.7)],
                               method="BFGS", options={"gtol": 1e-8})
    assert attrs["log_likelihood"] == pytest.approx(-result.fun, abs=1e-8)
    assert attrs["log_likelihood"] > -1989.9459 + 0.01


def test_a_run_stuck_at_rate_zero_below_the_maximum_is_not_counted_as_a_maximum(deaths):
    """A start that gave a component only zero counts set its rate to 0, which EM cannot leave (its responsibility
    for every positive count is 0): the run ended 94 units below the maximum, "converged", and the fit and the
    report counted it as a second maximum, where the likelihood rises off it. Simulated: 30% Poisson(0.8), 70%
    Poisson(8), where a quarter of the seeds have such a run (a component with weight and rate 0); the best run is
    the maximum of a naive likelihood maximised directly."""
    rng = np.random.default_rng(42)
    z = rng.random(400) < 0.3
    y = np.where(z, rng.poisson(0.8, 400), rng.poisson(8.0, 400))
    result = optimize.minimize(lambda v: -naive_log_likelihood(y, np.ones(y.size), np.array([1, np.exp(v[0])]) / (
        1 + np.exp(v[0])), np.exp(v[1:])), [0.9, 0.5, 2.0], method="Nelder-Mead",
        options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20000})
    n_stuck = 0
    for seed in range(20):
        tree = mixflow.fit(PoissonMixture(2), y, random_seed=seed)
        stats = tree["em/sample_stats"]
        stuck = ((stats["optimum_rate"].values == 0) & (stats["optimum_weights"].values > 0)).any(axis=1)
        n_stuck += int(stuck.any())
        assert not stats["converged"].values[stuck].any()
        assert tree["em"].attrs["n_maxima"] == 1
        assert tree["em"].attrs["log_likelihood"] == pytest.approx(-result.fun, rel=1e-10)
    assert n_stuck >= 2
    # a start on that boundary is said to be one, not "did not converge in max_iter ... increase max_iter"
    stuck_start = {"weights": np.array([0.4, 0.6]), "rate": np.array([0.0, 4.0])}
    counts = np.concatenate([np.zeros(200), np.random.default_rng(1).poisson(4.0, 300)])
    with pytest.warns(mixflow.ConvergenceWarning, match="EM stopped at a fixed point on the boundary") as caught:
        mixflow.fit(PoissonMixture(2), counts, init=stuck_start)
    assert not any("increase max_iter" in str(w.message) for w in caught)
    # a component on the zero counts alone that is the maximum (London deaths at K=3) stays one
    start = {"weights": np.array([0.0056, 0.3788, 0.6156]), "rate": np.array([0.0, 1.33, 2.69])}
    zeros = mixflow.fit(PoissonMixture(3), deaths["deaths"], weights=deaths["days"], init=start)
    assert zeros["em"].attrs["converged"] and estimate(zeros)["rate"][0] == 0


@pytest.mark.parametrize("seed", [0, 1])
def test_the_default_frees_a_component_split_in_two_and_finds_the_zeros_component(deaths, seed):
    """The default's starts end, at K=3, on the K=2 maximum with a component in two parts (same rate).

    EM never separates such a pair; the local search then tries every local move, and one frees the spare
    component onto the zero counts: the maximum the test above pins against a naive likelihood, reached
    from a start near it. The reference is that run's value (its agreement with scipy is checked there).
    """
    start = {"weights": np.array([0.0056, 0.3788, 0.6156]), "rate": np.array([0.05, 1.33, 2.69])}
    reference = mixflow.fit(PoissonMixture(3), deaths["deaths"], weights=deaths["days"], init=start)
    tree = mixflow.fit(PoissonMixture(3), deaths["deaths"], weights=deaths["days"], random_seed=seed)
    assert tree["em"].attrs["log_likelihood"] == pytest.approx(reference["em"].attrs["log_likelihood"], rel=1e-9)
    assert estimate(tree)["rate"][0] < 1e-12
    assert tree["em"].attrs["duplicate_components"] == "[]"


@pytest.mark.parametrize("k", [2, 3])
def test_the_default_finds_extra_zeros_a_single_poisson_hides(k):
    """Bortkiewicz's horse kicks (deaths per corps-year, 0-4 in 109, 65, 22, 3 and 1 of 200): slightly fewer
    spread than a Poisson (variance 0.6079, mean 0.61), so splitting the one rate lowers the likelihood and every
    start ends on the one-component fit, a component in two parts; the maximum at K=2 (and 3) is a point mass at
    zero of weight 0.013 beside rate 0.618. That fit's small component holds no row outright, as the fit of two
    components in one does, so the local search may not take the partition of the rows for that maximum's.
    The reference: a naive scipy likelihood of a point mass at zero and one Poisson, maximised directly.
    """
    counts, frequency = np.arange(5.0), np.array([109.0, 65, 22, 3, 1])

    def negative(vector):
        weight = 1.0 / (1.0 + np.exp(-vector[0]))
        return -naive_log_likelihood(counts, frequency, [weight, 1 - weight], [0.0, np.exp(vector[1])])

    result = optimize.minimize(negative, [-4.0, np.log(0.6)], method="BFGS", options={"gtol": 1e-9})
    single = naive_log_likelihood(counts, frequency, [1.0], [0.61])
    assert -result.fun == pytest.approx(-206.102728, abs=1e-6) and -result.fun > single + 0.003
    for seed in range(3):
        with warnings.catch_warnings(record=True) as caught:  # at K=3, a fit of two distinct components
            warnings.simplefilter("always", mixflow.DegenerateComponentWarning)
            tree = mixflow.fit(PoissonMixture(k), counts, weights=frequency, random_seed=seed)
        assert [bool(re.search("components 1 and 2 are the same component", str(w.message))) for w in caught] == (
            [True] if k == 3 else [])
        assert tree["em"].attrs["log_likelihood"] == pytest.approx(-result.fun, rel=1e-10)
        found = estimate(tree)
        assert found["rate"][0] == 0 and found["weights"][0] == pytest.approx(0.01303, abs=1e-5)


def test_a_fit_with_a_component_in_two_parts_says_so(deaths):
    """Started with two equal rates, EM keeps them equal: the fit, the summary and the report say so."""
    start = {"weights": np.array([0.36, 0.32, 0.32]), "rate": np.array([1.25, 2.66, 2.66])}
    with pytest.warns(mixflow.DegenerateComponentWarning, match="components 1 and 2 are the same component"):
        tree = mixflow.fit(PoissonMixture(3), deaths["deaths"], weights=deaths["days"], init=start)
    assert json.loads(tree["em"].attrs["duplicate_components"]) == [[1, 2]]
    assert tree["em"].attrs["log_likelihood"] == pytest.approx(-1989.9459, abs=1e-4)  # the K=2 maximum's
    assert "components with the same parameters 1 and 2" in mixflow.summary(tree, kind="text")


def _exact_log_probability(count: int, rate: float) -> float:
    """log Poisson(count | rate) at 60 digits (decimal): Stirling's series of log(count!), exact to far below 1e-30
    for counts of 1e6 and more."""
    with decimal.localcontext() as context:
        context.prec = 60
        y, lam = decimal.Decimal(count), decimal.Decimal(rate)
        two_pi = 2 * decimal.Decimal("3.14159265358979323846264338327950288419716939937510582097494459")
        log_factorial = ((y + decimal.Decimal("0.5")) * y.ln() - y + two_pi.ln() / 2 + 1 / (12 * y)
                         - 1 / (360 * y ** 3) + 1 / (1260 * y ** 5))
        return float(y * lam.ln() - lam - log_factorial)


def test_the_log_probability_of_huge_counts_keeps_its_digits():
    """y log(rate) - rate - log(y!) sums three terms of about y log y (3.5e16 at 1e15) to a few units, and rounds by
    about 4 per row; the saturated form keeps the digits (against 60-digit arithmetic)."""
    from mixflow.families.poisson.model import log_density, saturated_log_density

    counts = np.array([10**6, 10**6 + 1234, 10**12 - 10**6, 10**15, 10**15 + 31622776, 10**18 + 10**9])
    rates = np.array([1e6 + 500.0, 1e12, 1e15 + 5e7, 1e18])
    got = log_density(rates, counts.astype(float), saturated_log_density(counts.astype(float)))
    expected = np.array([[_exact_log_probability(int(y), float(r)) for r in rates] for y in counts])
    near = np.abs(expected) < 1e3  # the rows' own components: a few units to a few hundred
    assert near.sum() == 6  # each count under the rate near it
    np.testing.assert_allclose(got[near], expected[near], rtol=0, atol=1e-9)
    np.testing.assert_allclose(got, expected, rtol=1e-13)  # a row far from a component: about -y, kept to 1e-13
    # small counts: scipy's log pmf, whose three terms are then small
    small = np.arange(0, 40.0)
    np.testing.assert_allclose(log_density(np.array([0.3, 4.0, 25.0]), small, saturated_log_density(small)),
                               stats.poisson.logpmf(small[:, None], [0.3, 4.0, 25.0]), rtol=1e-13, atol=1e-13)
    assert log_density(np.array([0.0]), np.array([0.0, 2.0]), saturated_log_density(np.array([0.0, 2.0]))).ravel(
        ).tolist() == [0.0, -np.inf]  # a zero rate: zeros certain, any other count impossible


def test_the_pymc_log_density_keeps_a_finite_gradient_for_a_rate_far_below_the_counts():
    # (rate - y) / y rounds to -1 for a rate below 1e-16 of a count: log1p(-1) = -inf, and the mixture's gradient
    # NaN (a zero weight times an infinite slope), where a sampler's or ADVI's draw strays to a tiny rate
    from mixflow.data import Data
    from mixflow.families.poisson.pymc import build_model

    counts = np.r_[np.zeros(5), np.full(5, 3.0), np.full(5, 2e6)][:, None]
    data = Data(values=counts, features=np.array(["y"]), obs=np.arange(15), weights=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(PoissonMixture(2), data)
        logp, dlogp = model.compile_logp(), model.compile_dlogp()
    point = model.initial_point()
    for log_rate in (-25.0, -40.0):
        point["rate_log__"] = np.array([np.log(2e6), log_rate])
        assert np.isfinite(logp(point)) and np.isfinite(dlogp(point)).all()


def test_a_fit_to_counts_near_1e15_reports_their_log_likelihood():
    rng = np.random.default_rng(1)
    counts = np.r_[rng.poisson(1e15, 50), rng.poisson(1e15 + 8 * np.sqrt(1e15), 50)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nor an objective decreasing by its rounding
        tree = mixflow.fit(PoissonMixture(2), counts, random_seed=0)
    weights, rate = tree["em/estimate"]["weights"].values, tree["em/estimate"]["rate"].values
    exact = sum(float(np.logaddexp(*[np.log(w) + _exact_log_probability(int(y), r)
                                     for w, r in zip(weights, rate, strict=True)])) for y in counts)
    assert tree["em"].attrs["log_likelihood"] == pytest.approx(exact, abs=1e-6)  # about -1944.44
    assert min(weights) > 0.4  # the two groups found


def test_frequency_weights_equal_repeated_rows(deaths):
    model = PoissonMixture(2)
    start = {"weights": [0.5, 0.5], "rate": [1.0, 3.0]}
    # the same 300 plain EM steps on both: where EM crawls, the rounding differences of the two sums move
    # Aitken's stop by a few steps (and SQUAREM's extrapolations amplify them), so that two converged runs
    # agree only to the convergence tolerance, not to 1e-10
    with pytest.warns(mixflow.ConvergenceWarning, match="max_iter=300"):
        weighted = mixflow.fit(model, deaths["deaths"], weights=deaths["days"], init=start, accelerate=None,
                               tol=0.0, max_iter=300)
        repeated = mixflow.fit(model, np.repeat(deaths["deaths"].to_numpy(), deaths["days"]), init=start,
                               accelerate=None, tol=0.0, max_iter=300)
    np.testing.assert_allclose(estimate(weighted)["rate"], estimate(repeated)["rate"], rtol=1e-10)
    assert weighted["em"].attrs["log_likelihood"] == pytest.approx(repeated["em"].attrs["log_likelihood"],
                                                                   rel=1e-12)
    assert weighted["em"].attrs["bic"] == pytest.approx(repeated["em"].attrs["bic"], rel=1e-12)


def test_simulated_mixture_recovers_the_truth():
    rng = np.random.default_rng(11)
    n, truth_weights, truth_rates = 4000, np.array([0.3, 0.7]), np.array([1.5, 7.0])
    labels = rng.choice(2, size=n, p=truth_weights)
    y = rng.poisson(truth_rates[labels])
    tree = mixflow.fit(PoissonMixture(2), y, random_seed=3)
    found = estimate(tree)
    # standard errors are about 0.008 (weights) and 0.04 / 0.05 (rates): allow about four of them
    np.testing.assert_allclose(found["weights"], truth_weights, atol=0.03)
    np.testing.assert_allclose(found["rate"], truth_rates, atol=0.2)
    assert tree["em"].attrs["n_parameters"] == 3
    resp = tree["em/responsibilities"]["responsibilities"].values
    agreement = np.mean(resp.argmax(axis=1) == labels)
    assert agreement > 0.9


@pytest.mark.parametrize("method", ["em", "map"])
def test_objective_never_decreases(method, deaths):
    tree = mixflow.fit(PoissonMixture(3), deaths["deaths"], weights=deaths["days"], method=method,
                       init="random", n_init=3, random_seed=5, tol=1e-13, max_iter=3000)
    name = "log_posterior" if method == "map" else "log_likelihood"
    for history in tree["em/sample_stats"][name].values:
        history = history[~np.isnan(history)]
        assert history.size > 20
        assert (np.diff(history) >= -1e-12 * np.abs(history[1:])).all()


def test_map_is_the_mode_of_a_naive_log_posterior(deaths):
    prior = {"shape": 2.0, "rate": 0.5, "weights_concentration": 2.0}
    y, days = deaths["deaths"].to_numpy(), deaths["days"].to_numpy()
    tree = mixflow.fit(PoissonMixture(2, prior=prior), y, weights=days, method="map", random_seed=0,
                       n_init=1, tol=1e-15, max_iter=20000)
    found = estimate(tree)

    def negative(vector):
        weight = 1.0 / (1.0 + np.exp(-vector[0]))
        rates = np.exp(vector[1:])
        log_prior = stats.dirichlet.logpdf([weight, 1 - weight], [2.0, 2.0]) \
            + stats.gamma.logpdf(rates, 2.0, scale=1 / 0.5).sum()
        return -(naive_log_likelihood(y, days, [weight, 1 - weight], rates) + log_prior)

    start = np.concatenate([[np.log(found["weights"][0] / found["weights"][1])], np.log(found["rate"])])
    result = optimize.minimize(negative, start + 0.05, method="BFGS", options={"gtol": 1e-9})
    assert tree["em"].attrs["log_posterior"] == pytest.approx(-result.fun, rel=1e-12)
    np.testing.assert_allclose(found["rate"], np.exp(result.x[1:]), atol=1e-5)


def test_default_prior_is_worth_a_hundredth_of_an_observation_at_the_data_mean(deaths):
    tree = mixflow.fit(PoissonMixture(2), deaths["deaths"], weights=deaths["days"], method="map", random_seed=0,
                       n_init=1)
    used = json.loads(tree["em"].attrs["prior"])
    mean = np.average(deaths["deaths"], weights=deaths["days"])
    assert used == {"concentration": [1.0, 1.0], "shape": pytest.approx(1 + 0.01 * mean), "rate": 0.01}
    mle = mixflow.fit(PoissonMixture(2), deaths["deaths"], weights=deaths["days"], random_seed=0, n_init=1)
    np.testing.assert_allclose(estimate(tree)["rate"], estimate(mle)["rate"], atol=0.01)


def test_declaration_round_trips_and_container_saves(tmp_path, deaths):
    model = PoissonMixture(3, prior={"shape": 1.5, "weights_concentration": [1.0, 2.0, 3.0]})
    assert mixflow.model_from_json(model.to_json()) == model
    assert PoissonMixture(2) == PoissonMixture(2, prior=PoissonPrior())
    tree = mixflow.fit(PoissonMixture(2), deaths["deaths"], weights=deaths["days"], random_seed=0)
    assert tree["em/estimate"]["rate"].dims == ("component",)
    assert (np.diff(tree["em/estimate"]["rate"].values) > 0).all()
    loaded = mixflow.load(mixflow.save(tree, tmp_path / "deaths.nc"))
    assert loaded["em/estimate"].to_dataset().identical(tree["em/estimate"].to_dataset())
    proba = mixflow.predict_proba(tree, deaths[["deaths"]])
    np.testing.assert_allclose(proba.values, tree["em/responsibilities"]["responsibilities"].values, rtol=1e-12)


@pytest.mark.parametrize("data, message", [
    (np.array([0.0, 1.0, 2.5, 3.0, -1.0]),
     r"data: expected non-negative integer counts, got other values in 2 rows: \[2, 4\] "
     r"\(values \[2.5, -1.0\]\)"),
    (pd.DataFrame({"y": [1, 2, 3, -4]}, index=[10, 11, 12, 13]), r"1 row: \[13\]"),
    (np.arange(8).reshape(4, 2), r"data: expected one column of counts for a PoissonMixture, got 2 columns "
                                 r"\['x0', 'x1'\]"),
])
def test_bad_counts_are_refused(data, message):
    with pytest.raises(ValueError, match=message):
        mixflow.fit(PoissonMixture(2), data)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"n_components": 0}, ValueError, r"n_components: expected an integer >= 1, got 0"),
    ({"n_components": 2, "prior": {"shape": 0.5}}, ValueError,
     r"shape: expected a number >= 1 \(the MAP rate is the posterior mode\), got 0.5"),
    ({"n_components": 2, "prior": {"rate": -1.0}}, ValueError, r"rate: expected a positive number, got -1.0"),
    ({"n_components": 2, "prior": {"scale": 1.0}}, ValueError,
     r"prior: unknown hyperparameter \['scale'\]; expected some of \['weights_concentration', 'shape', 'rate'\]"),
    ({"n_components": 2, "prior": {"weights_concentration": [1, 1, 1]}}, ValueError,
     r"prior.weights_concentration: expected 1 or 2 values, got 3"),
    ({"n_components": 2, "prior": {"weights_concentration": 0}}, ValueError,
     r"weights_concentration: expected positive numbers, got 0"),
    ({"n_components": 2, "prior": "flat"}, ValueError,
     r"prior: expected 'default', a PoissonPrior or a dict, got 'flat'"),
    ({"n_components": 2, "prior": 1.0}, TypeError, r"prior: expected 'default', a PoissonPrior or a dict, got float"),
])
def test_bad_declarations_are_refused(kwargs, error, message):
    with pytest.raises(error, match=message):
        PoissonMixture(**kwargs)


@pytest.mark.parametrize("init, message", [
    ({"weights": [0.5, 0.5]}, r"init: expected keys \['rate', 'weights'\], got \['weights'\] \(missing \['rate'\]"),
    ({"weights": [0.5, 0.5], "rate": [1.0, -2.0]}, r"init\['rate'\]: expected non-negative rates, got \[1.0, -2.0\]"),
    ({"weights": [0.5, 0.5], "rate": [1.0, 2.0, 3.0]}, r"init\['rate'\]: expected shape \(2,\), got \(3,\)"),
    ({"weights": [0.9, 0.5], "rate": [1.0, 2.0]}, r"init\['weights'\]: expected non-negative weights summing to 1"),
])
def test_bad_initial_parameters_are_refused(init, message):
    with pytest.raises(ValueError, match=message):
        mixflow.fit(PoissonMixture(2), np.arange(10), init=init)


def test_workflow_file_validates_and_a_small_poisson_workflow_runs(tmp_path):
    from pathlib import Path

    from mixflow.workflow.config import WorkflowError, read_workflow
    from mixflow.workflow.run import run_workflow

    shipped = read_workflow(Path(__file__).parents[1] / "workflows" / "london_deaths.toml")
    assert [spec.label for spec in shipped.models] == ["poisson-k1-3"]
    text = ('name = "deaths"\nseed = 3\n[data]\ndataset = "london_deaths"\ncolumns = ["deaths"]\nweights = "days"\n'
            '[[models]]\nfamily = "poisson"\nn_components = 2\nprior = {shape = 2.0}\n[methods.em]\nmap = true\n'
            '[output]\nfigures = false\nreport = false\n')
    (tmp_path / "deaths.toml").write_text(text)
    written = run_workflow(tmp_path / "deaths.toml", tmp_path / "out", quiet=True)
    tree = mixflow.load(next(p for p in written if p.suffix == ".nc"))
    assert tree["em"].attrs["method"] == "map" and json.loads(tree["em"].attrs["prior"])["shape"] == 2.0
    (tmp_path / "bad.toml").write_text(text.replace('family = "poisson"', 'family = "poisson"\ncovariance = "full"'))
    with pytest.raises(WorkflowError, match=r"bad.toml:9: \[\[models\]\] #1: key \['covariance'\] does not "
                                            r"apply to family 'poisson'"):
        read_workflow(tmp_path / "bad.toml")
    (tmp_path / "bad.toml").write_text(text.replace("shape = 2.0", "shape = 0.5"))
    with pytest.raises(WorkflowError, match=r"bad.toml:10: \[\[models\]\] #1: prior.shape: expected a number >= 1"):
        read_workflow(tmp_path / "bad.toml")


def test_counts_of_a_single_value_are_said_in_the_family_s_terms():
    # all-zero counts: every component sits on zero (rate 0), which the warning says for any family
    with pytest.warns(mixflow.ConstantFeatureWarning,
                      match=r"data: every observation is 0: every component sits on it"):
        tree = mixflow.fit(PoissonMixture(2), np.zeros(100, dtype=int), method="em", random_seed=0)
    np.testing.assert_array_equal(estimate(tree)["rate"], [0.0, 0.0])


def test_a_fit_with_a_rate_at_zero_is_bootstrapped_and_starts_the_sampler(deaths):
    """An EM estimate with a component on the zeros alone (rate 0) is a valid start: every bootstrap replicate
    (which starts from the estimate) is fitted, and the sampler's start lifts the rate inside its support."""
    from mixflow.families.poisson.pymc import free_values

    start = {"weights": np.array([0.0056, 0.3788, 0.6156]), "rate": np.array([0.0, 1.33, 2.69])}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixflow.ConvergenceWarning)
        tree = mixflow.fit(PoissonMixture(3), deaths["deaths"], weights=deaths["days"], init=start, max_iter=50)
    assert estimate(tree)["rate"][0] == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixflow.MixflowWarning)
        replicates = mixflow.bootstrap(tree, n_replicates=4, random_seed=0, n_jobs=1)["em/bootstrap"]
    assert replicates.attrs["n_failed"] == 0 and np.isfinite(replicates["posterior"]["rate"].values).all()
    data = mixflow.data.validate_data(deaths["deaths"], weights=deaths["days"])
    lifted = free_values(PoissonMixture(3), data, estimate(tree))["rate"]
    assert lifted[0] == pytest.approx(1e-8 * 2.0, rel=0.2) and np.array_equal(lifted[1:], estimate(tree)["rate"][1:])


def test_a_rate_at_zero_has_no_standard_errors_and_the_summary_says_the_rest():
    # many zeros and no ones: the MLE has a component on the zeros alone (rate 0, on the boundary), where the
    # observed information is not defined; the summary, the bootstrap and its summary still work
    from mixflow.analysis.information import standard_errors

    counts = pd.DataFrame({"c": np.repeat([0, 2, 3, 5, 6, 9], [50, 30, 40, 20, 10, 5])})
    tree = mixflow.fit(PoissonMixture(2), counts, random_seed=1)
    assert estimate(tree)["rate"][0] == 0.0
    with pytest.warns(mixflow.MixflowWarning, match=r"a rate is on the boundary \(zero\) \(a component on the zero"):
        errors = standard_errors(tree)
    assert np.isnan(errors["rate"].values).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert "rate[1]" in mixflow.summary(tree, kind="text")
        replicates = mixflow.bootstrap(tree, n_replicates=5, random_seed=0, n_jobs=1)
        assert "0 failed" in mixflow.summary(replicates, kind="text")


def test_the_fit_s_warnings_are_recorded_once_and_raised_under_the_caller_s_filters():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tree = mixflow.fit(PoissonMixture(2), np.zeros(30, dtype=int), random_seed=1)
    constant = [w for w in caught if issubclass(w.category, mixflow.ConstantFeatureWarning)]
    assert len(constant) == 1 and constant[0].filename.endswith("test_poisson.py")  # where the caller called
    recorded = json.loads(tree.attrs["run_warnings"])
    # and the two rates at 0, one component in two parts
    assert [w["category"] for w in recorded] == ["ConstantFeatureWarning", "DegenerateComponentWarning"]
    assert {w["stage"] for w in recorded} == {"fit"}
    assert "warnings: none" not in mixflow.summary(tree, kind="text")
    with warnings.catch_warnings():
        warnings.simplefilter("error", mixflow.ConstantFeatureWarning)
        with pytest.raises(mixflow.ConstantFeatureWarning):
            mixflow.fit(PoissonMixture(2), np.zeros(30, dtype=int), random_seed=1)
    rng = np.random.default_rng(0)  # two groups of counts, rates 2 and 9: a fit with nothing to say
    quiet = mixflow.fit(PoissonMixture(2), np.r_[rng.poisson(2, 30), rng.poisson(9, 30)], random_seed=1)
    assert "run_warnings" not in quiet.attrs and "warnings: none" in mixflow.summary(quiet, kind="text")


def test_a_method_fitted_again_into_its_tree_drops_the_replaced_fit_s_warnings():
    # EM stopped by max_iter=3, then fitted again into the same tree: the summary says the new fit's convergence,
    # not the replaced fit's "EM did not converge in max_iter=3"
    rng = np.random.default_rng(1)
    counts = np.r_[rng.poisson(2, 150), rng.poisson(9, 100)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stopped = mixflow.fit(PoissonMixture(2), counts, random_seed=1, max_iter=3)
        again = mixflow.fit(PoissonMixture(2), counts, random_seed=1, tree=stopped)
    assert [w["method"] for w in json.loads(stopped.attrs["run_warnings"])] == ["em"]
    assert "run_warnings" in stopped.attrs and json.loads(again.attrs["run_warnings"]) == []
    text = mixflow.summary(again, kind="text")
    assert "max_iter=3" not in text and "warnings: none" in text
    # each warning is recorded with the method that raised it, none for the data's own (raised before any method)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        constant = mixflow.fit(PoissonMixture(2), np.zeros(30, dtype=int), random_seed=1)
    recorded = json.loads(constant.attrs["run_warnings"])
    assert [(w["category"], w.get("method")) for w in recorded] == [("ConstantFeatureWarning", None),
                                                                    ("DegenerateComponentWarning", "em")]
    # a message two methods raised is each one's: fitting one again keeps the other's
    from mixflow.container.build import record_warnings

    said = warnings.WarningMessage(mixflow.MixflowWarning("alike"), mixflow.MixflowWarning, "x.py", 1)
    both = record_warnings(constant.copy(), [said, said], "fit", methods=["em", "advi"])
    refitted = record_warnings(both, [], "fit", methods=[], replaced=["em"])
    assert [w.get("method") for w in json.loads(refitted.attrs["run_warnings"]) if w["message"] == "alike"] == ["advi"]


def test_warnings_before_an_error_still_reach_the_caller_and_module_filters_apply():
    # the constant covariate's warning comes before the rank error it explains; a filter naming the module a
    # warning is attributed to (here this one: the caller's) silences it as it would without the recording
    frame = pd.DataFrame({"x": np.ones(50), "y": np.random.default_rng(0).normal(size=50)})
    with pytest.warns(mixflow.ConstantFeatureWarning), pytest.raises(mixflow.InputError, match="not collinear"):
        mixflow.fit(mixflow.RegressionMixture(2, "y ~ x"), frame)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", module=r"(tests\.)?test_poisson")
        tree = mixflow.fit(PoissonMixture(2), np.zeros(30, dtype=int), random_seed=1)
    assert not [w for w in caught if issubclass(w.category, mixflow.ConstantFeatureWarning)]
    assert "ConstantFeatureWarning" in tree.attrs["run_warnings"]  # recorded all the same


def test_a_rate_em_leaves_just_above_zero_is_on_the_boundary_for_the_standard_errors():
    """EM approaches a zeros component's rate 0 geometrically and stops just above it (1e-11 here): its standard
    errors are undefined as at 0, and the summary says so (they were a tiny finite number, and 'warnings: none')."""
    counts = np.r_[np.zeros(60, int), np.random.default_rng(0).poisson(3, 100)]
    tree = mixflow.fit(PoissonMixture(2), counts, random_seed=1)
    assert 0 < estimate(tree)["rate"][0] < 1e-9
    from mixflow.analysis.information import standard_errors

    errors = standard_errors(tree, warn=False)
    assert np.isnan(errors["rate"].values).all() and "a rate is on the boundary" in errors.attrs["undefined"]
    assert "EM: no standard errors: a rate is on the boundary" in mixflow.summary(tree, kind="text")


def test_two_components_that_are_one_have_no_standard_errors(tmp_path, no_report_plots):
    """Started with two equal rates, EM keeps them equal: the two are one component, and the likelihood does not
    tell how they split their weight, so the information is singular along the split (a numerical Hessian gives
    the split an arbitrary error, many times the weight, to whose precision the summary would round the weight).
    The errors are undefined and said so."""
    rng = np.random.default_rng(0)
    counts = np.r_[rng.poisson(3, 150), rng.poisson(9, 150)]
    with pytest.warns(mixflow.DegenerateComponentWarning, match="the same component"):
        tree = mixflow.fit(PoissonMixture(3), counts, init={"weights": [0.2, 0.3, 0.5], "rate": [3.0, 3.0, 8.0]})
    assert json.loads(tree["em"].attrs["duplicate_components"]) == [[0, 1]]
    from mixflow.analysis.information import standard_errors

    errors = standard_errors(tree, warn=False)
    assert all(np.isnan(errors[name].values).all() for name in errors.data_vars)
    assert "components 0 and 1 are the same component" in errors.attrs["undefined"]
    text = mixflow.summary(tree, kind="text")
    assert "EM: no standard errors: components 0 and 1 are the same component" in text
    # a bootstrap replicate splits the weight as arbitrarily: the remedy is a fit of fewer components
    assert errors.attrs["remedy"] == "a fit of fewer components has them" and "mixflow.bootstrap" not in text
    # undefined for another reason first (too many parameters to difference): the bootstrap, as ever
    assert standard_errors(tree, max_parameters=2, warn=False).attrs["remedy"] == "mixflow.bootstrap gives them"
    assert "(a fit of fewer components has them)" in text
    page = mixflow.report(tree, tmp_path / "report.html").read_text(encoding="utf-8")
    assert "no errors or intervals; a fit of fewer components has them." in page and "mixflow.bootstrap" not in page
    # the weight itself, not rounded to an error's precision (of the two equal rates, either may be first: their
    # order is their rates' last bits)
    assert re.search(r"weights\[[01]\]\s+0\.2\d+\n", text)


def test_the_report_counts_the_rates_and_weights_it_compares_not_means_and_covariances(
        london_fit, tmp_path, no_report_plots):
    tree = mixflow.bootstrap(london_fit, n_replicates=8, random_seed=0, n_jobs=1)
    text = mixflow.report(tree, tmp_path / "deaths.html").read_text(encoding="utf-8")
    assert re.search(r"<td>\d of 4 entries \(each distinct entry of weights, rate\)</td>", text)
    assert "(co)variance" not in text


def test_more_components_than_the_counts_support_leak_no_numpy_warning():
    """Eight counts of three values, K = 5: components empty out, and SQUAREM's triples then hold log weights of
    -inf beside finite rates; the fit says what it says (mixflow's warnings), and numpy's own "invalid value"
    warning from summing them does not reach the caller."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixflow.MixflowWarning)
        warnings.simplefilter("error", RuntimeWarning)
        tree = mixflow.fit(mixflow.PoissonMixture(5), np.array([0, 0, 1, 1, 2, 2, 0, 1])[:, None], random_seed=0)
    assert np.isfinite(tree["em"].attrs["log_likelihood"])
