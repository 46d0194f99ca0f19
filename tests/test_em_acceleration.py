"""EM's stop on Aitken's estimate of the limit and its SQUAREM acceleration: the published London deaths
optimum from the defaults, the monotone guarantee in every family, the same maximum as plain EM, the
recorded attributes, and the errors."""

import textwrap
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import mixflow
from mixflow.engines import accelerate as acc
from mixflow.engines import em as em_engine
from mixflow.engines import em_run
from mixflow.workflow.config import WorkflowError, read_workflow
from mixflow.workflow.run import _em_options

# SQUAREM vignette (plain EM to its fixed point), see data/README.md
LONDON_WEIGHTS = [0.3598864, 0.6401136]
LONDON_RATES = [1.2560968, 2.6634056]
LONDON_LOG_LIKELIHOOD = -1989.9459


@pytest.fixture(scope="module")
def deaths():
    return mixflow.load_dataset("london_deaths")


def _overlapping(n=400, seed=0):
    """Two unit Gaussians in 2-D, 1.8 sd apart: EM crawls."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(2, size=n)
    return rng.normal(size=(n, 2)) + np.array([[0.0, 0.0], [1.5, 1.0]])[labels]


def _case(name):
    """Model, data, weights and method of a slow EM case of each family."""
    rng = np.random.default_rng(1)
    if name.startswith("gaussian"):
        _, covariance, method = name.split("-")
        return mixflow.GaussianMixture(2, covariance=covariance), _overlapping(), None, method
    if name == "poisson":
        deaths = mixflow.load_dataset("london_deaths")
        return mixflow.PoissonMixture(2), deaths["deaths"], deaths["days"], "em"
    if name == "regression":
        x = rng.uniform(0, 2, 300)
        labels = rng.integers(2, size=300)
        y = np.where(labels == 1, 1.0 + x, 1.5 - 0.5 * x) + rng.normal(0, 0.5, 300)
        return mixflow.RegressionMixture(2, "y ~ x"), pd.DataFrame({"x": x, "y": y}), None, "em"
    if name == "grouped":
        edges = np.linspace(-3.0, 5.0, 33)
        counts = np.histogram(rng.normal(1.5 * rng.integers(2, size=2000), 1.0), bins=edges)[0]
        classes = pd.DataFrame({"lower": edges[:-1], "upper": edges[1:]})
        return mixflow.GroupedGaussianMixture(2, open_below=-3.0, open_above=5.0), classes, counts, "em"
    return mixflow.SoftKMeans(3, variance=1.0), _overlapping(), None, "em"


FAMILIES = ["gaussian-full-em", "gaussian-full-map", "gaussian-tied-em", "gaussian-diag-em",
            "gaussian-spherical-em", "poisson", "regression", "grouped", "softkmeans"]


def _objective_history(tree):
    stats = tree["em/sample_stats"]
    return stats["log_posterior" if "log_posterior" in stats else "log_likelihood"].values


# -- London deaths from the defaults ---------------------------------------------------------------------
def test_london_deaths_from_the_defaults_land_on_the_published_optimum(deaths):
    tree = mixflow.fit(mixflow.PoissonMixture(2), deaths["deaths"], weights=deaths["days"], random_seed=1)
    attrs, estimate = tree["em"].attrs, tree["em/estimate"]
    np.testing.assert_allclose(estimate["weights"].values, LONDON_WEIGHTS, atol=1e-4)
    np.testing.assert_allclose(estimate["rate"].values, LONDON_RATES, atol=1e-4)
    assert attrs["log_likelihood"] == pytest.approx(LONDON_LOG_LIKELIHOOD, abs=1e-4)
    assert attrs["converged"] and attrs["acceleration"] == "squarem" and attrs["accepted_extrapolations"] > 0
    assert 0 < attrs["n_iter"] < 400  # plain EM needs more than max_iter=1000 passes to the same criterion
    assert attrs["aitken_gap"] / attrs["n_observations"] < attrs["tol"]


def test_plain_em_to_the_default_criterion_also_lands_near_the_optimum(deaths):
    """The stop on Aitken's estimate is what keeps plain EM from stopping short where it crawls (it needs more
    than the default max_iter=1000 passes here, and says so when it has only those)."""
    tree = mixflow.fit(mixflow.PoissonMixture(2), deaths["deaths"], weights=deaths["days"], random_seed=1,
                       accelerate=None, max_iter=5000, n_init=1, init="kmeans")  # one run: the stop is the point
    np.testing.assert_allclose(tree["em/estimate"]["weights"].values, LONDON_WEIGHTS, atol=2e-4)
    assert tree["em"].attrs["log_likelihood"] == pytest.approx(LONDON_LOG_LIKELIHOOD, abs=1e-4)
    assert tree["em"].attrs["n_iter"] > 1000 and tree["em"].attrs["acceleration"] == "none"


def test_squarem_takes_a_tenth_of_plain_em_passes_on_london_deaths(deaths):
    """From one k-means start to the default criterion, both at the published optimum: the issue's target of
    10x fewer passes where EM crawls (benchmarks/em_acceleration.py prints both). SQUAREM's stop is
    confirmed by held plain steps; jumping between the confirmation's steps cost it twice the passes."""
    fits = [mixflow.fit(mixflow.PoissonMixture(2), deaths["deaths"], weights=deaths["days"], n_init=1,
                        init="kmeans", random_seed=0, max_iter=10_000, accelerate=accelerate)
            for accelerate in (None, "squarem")]
    plain, fast = (fit["em"].attrs for fit in fits)
    for fit in fits:
        assert fit["em"].attrs["converged"]
        np.testing.assert_allclose(fit["em/estimate"]["weights"].values, LONDON_WEIGHTS, atol=1e-5)
    assert fast["log_likelihood"] == pytest.approx(plain["log_likelihood"], abs=1e-9)
    assert plain["n_iter"] >= 10 * fast["n_iter"]


def test_changes_that_grow_after_a_jump_do_not_waive_the_parameter_test():
    """Two overlapping 2-D Gaussians, n=5000: right after a SQUAREM jump the largest change grew slightly
    (4.97e-7, 5.06e-7, 5.09e-7) while the faster directions died out, so it had no rate; the exemption meant
    for a redundant component's drift along a flat ridge waived the parameter test, and the run stopped with
    its means 2.6e-4 from the maximum (the objective 4.2e-7 short, within tol * n). Only a drift held for
    the confirmation's plain steps waives it now: the means within 2e-5 (sqrt(tol) = 1e-5 on the parameter
    gap, an estimate)."""
    rng = np.random.default_rng(105)
    x = np.r_[rng.normal(0, 1, (2500, 2)), rng.normal(0.7, 1.3, (2500, 2))]
    model = mixflow.GaussianMixture(2)
    reference = mixflow.fit(model, x, random_seed=0, tol=1e-14, max_iter=100_000)["em/estimate"]["mu"].values
    tree = mixflow.fit(model, x, random_seed=0)
    mu = tree["em/estimate"]["mu"].values
    mu = min(mu, mu[::-1], key=lambda m: np.abs(m - reference).max())
    assert tree["em"].attrs["converged"] and np.isfinite(tree["em"].attrs["parameter_gap"])
    np.testing.assert_allclose(mu, reference, atol=2e-5)


def _drive(changes, gains_rate=0.5, n=1000.0, offset=0.0):
    """:func:`em_run._iterations` (plain EM) driven by made-up points: ``mu`` moves by ``changes[t]`` at step t
    (then by the last one), the objective gains shrink at ``gains_rate`` from 1e-7; the run it returns."""
    from mixflow.engines.em import EMOptions

    def point(t):
        mu = np.array([[offset + float(np.sum(changes[:t])) + max(t - len(changes), 0) * changes[-1]]])
        params = {"weights": np.array([1.0]), "mu": mu}
        value = -1e-7 * gains_rate**t / (1 - gains_rate)
        return em_run.Point(params, np.arange(1), value, value, None, np.arange(1), [])

    steps = em_run._iterations(point(0).params,
                               EMOptions(tol=1e-10, max_iter=200, accelerate=None), n)
    next(steps)
    t = 0
    try:
        while True:
            current = point(t)
            current.following = point(t + 1).params
            steps.send(current)
            t += 1
    except StopIteration as finished:
        return finished.value


def test_a_drift_without_a_rate_held_for_the_confirmation_lets_the_objective_decide():
    """A redundant component drifting along a flat ridge: its parameters move by the same amount every step
    (no rate, parameter_gap inf) while the objective has converged: the run stops once the drift has held for
    the confirmation's plain steps, and not before."""
    for changes in ([1e-3 * 1.001**k for k in range(300)],  # growing a little
                    [3e-9],  # steady, on a value of 1.7 below: its steps round to slightly different sizes
                    [1e-3, 1.01e-3] * 150):  # alternating, so every second step shrinks
        run = _drive(changes, offset=1.7 if changes == [3e-9] else 0.0)
        assert run.converged and run.parameter_gap == np.inf
        assert em_run._CONFIRM_STEPS <= run.n_iter < 40


def test_a_drift_where_the_objective_no_longer_resolves_the_gains_stops_the_run():
    """The same drift once the objective's gains are below its rounding (all zero here): the parameters alone
    would decide, and they have no rate; the drift held over the plain steps ends the run (it ran to max_iter)."""
    run = _drive([1e-4], gains_rate=0.0)
    assert run.converged and run.criterion == em_engine.PARAMETER_CRITERION and run.parameter_gap == np.inf
    assert em_run._CONFIRM_STEPS <= run.n_iter < 40


def test_changes_that_grow_for_a_few_steps_do_not_stop_the_run():
    """The transient after a jump: the largest change grows for a few steps, then shrinks at EM's slow rate
    (0.99, 1e-3 still to go): not a drift, so the parameters must still come within sqrt(tol)."""
    changes = [1e-5, 1.01e-5, 1.02e-5, 1.03e-5] + [1.03e-5 * 0.99**k for k in range(1, 200)]
    run = _drive(changes)
    assert not run.converged  # 200 steps at rate 0.99 leave the parameters 1.4e-4 from their limit


def _poisson_expected_counts(rate=1e6, separation=1.2, weight=0.4, total=1e6, width=6.0):
    """Counts of 0.4 Poisson(1e6) + 0.6 Poisson(1e6 + 1200) with frequency weights equal to their expected numbers.

    The weighted log-likelihood is then ``total`` times minus the cross-entropy, whose maximum is the truth
    (the counts beyond ``width`` sd, left out, carry about 1e-9 of the weight): a known maximum.
    """
    rates = np.array([rate, rate + separation * np.sqrt(rate)])
    counts = np.arange(int(rates[0] - width * np.sqrt(rate)), int(rates[1] + width * np.sqrt(rate)) + 1)
    days = total * (weight * stats.poisson.pmf(counts, rates[0]) + (1 - weight) * stats.poisson.pmf(counts, rates[1]))
    return counts, days, np.array([weight, 1 - weight]), rates


def test_where_the_objective_cannot_resolve_the_gains_the_parameters_decide_the_stop():
    """Overlapping Poisson components (1.2 sd apart) at rates near 1e6: the objective, a sum of terms near 1e7
    that cancel to about -8, stops resolving the gains while the parameters still move. A stop on the
    objective's rounding alone ended here 2.4e-4 short in the weights and 3.5e-4 sd in the rates, and said
    converged; the guard reaches the known maximum to about 1e-7."""
    counts, days, weights, rates = _poisson_expected_counts()
    tree = mixflow.fit(mixflow.PoissonMixture(2), counts, weights=days, n_init=1, init="kmeans", random_seed=0)
    attrs, estimate = tree["em"].attrs, tree["em/estimate"]
    assert attrs["converged"] and attrs["convergence_criterion"] == em_engine.PARAMETER_CRITERION
    assert attrs["parameter_gap"] < np.sqrt(attrs["tol"])
    np.testing.assert_allclose(estimate["weights"].values, weights, atol=1e-5)
    np.testing.assert_allclose(estimate["rate"].values, rates, atol=1e-5 * np.sqrt(rates[0]))


# -- the monotone guarantee and the same maximum ---------------------------------------------------------
@pytest.mark.parametrize("name", FAMILIES)
def test_acceleration_never_decreases_the_objective(name):
    model, data, weights, method = _case(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error", mixflow.MixflowInternalWarning)  # the engine's own monotonicity check
        tree = mixflow.fit(model, data, method, weights=weights, n_init=2, random_seed=0)
    assert tree["em/sample_stats"]["accepted_extrapolations"].values.sum() > 0  # the test exercises them
    for history in _objective_history(tree):
        history = history[~np.isnan(history)]
        assert (np.diff(history) >= -1e-12 * np.abs(history[1:])).all()


@pytest.mark.parametrize("name", ["gaussian-full-em", "gaussian-full-map", "poisson", "regression", "grouped"])
def test_plain_and_accelerated_em_reach_the_same_maximum(name):
    model, data, weights, method = _case(name)
    # one start, one run: the iterations compared are the same run's, plain and accelerated (the default search
    # returns whichever of its runs ends highest, which need not be the same run in both)
    fits = [mixflow.fit(model, data, method, weights=weights, n_init=1, init="kmeans", random_seed=0, tol=1e-11,
                        max_iter=20000, accelerate=accelerate) for accelerate in (None, "squarem")]
    plain, fast = (fit["em"].attrs for fit in fits)
    key = "log_posterior" if method == "map" else "log_likelihood"
    assert fast[key] == pytest.approx(plain[key], rel=1e-11, abs=1e-9)
    for variable in fits[0]["em/estimate"].data_vars:
        # the likelihood is flat along some directions: two stops on the objective differ by ~1e-5 there
        np.testing.assert_allclose(fits[1]["em/estimate"][variable], fits[0]["em/estimate"][variable],
                                   rtol=1e-3, atol=1e-4)
    assert fast["n_iter"] < plain["n_iter"]


def _plain_and_patched(monkeypatch, candidate):
    """The same fit with plain EM, and with SQUAREM whose extrapolation is replaced by ``candidate``.

    One run (``n_init=1, init="kmeans"``): its extrapolations, alone in their layout, are ``extrapolate_flat``'s.
    """
    model, data, weights, method = _case("gaussian-full-em")
    plain = mixflow.fit(model, data, method, weights=weights, n_init=1, init="kmeans", random_seed=0,
                        accelerate=None, max_iter=5000)
    monkeypatch.setattr(em_run, "extrapolate_flat",
                        lambda start, first, second, step_max, layout: (candidate(acc.unflatten(start, layout)), -4.0))
    patched = mixflow.fit(model, data, method, weights=weights, n_init=1, init="kmeans", random_seed=0,
                          max_iter=5000)
    return plain, patched


def test_an_extrapolated_point_with_a_lower_objective_falls_back_to_the_plain_step(monkeypatch):
    plain, patched = _plain_and_patched(monkeypatch, acc.from_unconstrained)  # back to the cycle's start
    np.testing.assert_array_equal(_objective_history(patched), _objective_history(plain))
    np.testing.assert_array_equal(patched["em/estimate"]["mu"].values, plain["em/estimate"]["mu"].values)
    assert patched["em"].attrs["accepted_extrapolations"] == 0
    assert patched["em"].attrs["n_iter"] > plain["em"].attrs["n_iter"]  # each dropped point cost a pass


def test_an_invalid_extrapolated_point_falls_back_without_a_pass(monkeypatch):
    def negative_variances(start):
        params = acc.from_unconstrained(start)
        return {**params, "covariance": -params["covariance"]}

    plain, patched = _plain_and_patched(monkeypatch, negative_variances)
    np.testing.assert_array_equal(_objective_history(patched), _objective_history(plain))
    assert patched["em"].attrs["n_iter"] == plain["em"].attrs["n_iter"]
    assert patched["em"].attrs["accepted_extrapolations"] == 0


def test_a_collapsing_component_is_not_extrapolated():
    x = np.concatenate([np.random.default_rng(0).normal(0, 1, 60), [8.0]])
    start = {"weights": np.array([0.9, 0.1]), "mu": np.array([[0.0], [8.0]]), "covariance": np.ones((2, 1, 1))}
    with pytest.warns(mixflow.DegenerateComponentWarning, match="collapsed"):
        tree = mixflow.fit(mixflow.GaussianMixture(2), x, init=start)
    assert tree["em"].attrs["accepted_extrapolations"] == 0
    assert tree["em"].attrs["collapsed_components"] == "[1]"


# -- what is recorded ------------------------------------------------------------------------------------
def test_convergence_attributes_round_trip_through_save_and_load(deaths, tmp_path):
    fitted = mixflow.fit(mixflow.PoissonMixture(2), deaths["deaths"], weights=deaths["days"], random_seed=1,
                         n_init=2)
    with pytest.warns(mixflow.ConvergenceWarning, match="Aitken"):
        stopped = mixflow.fit(mixflow.PoissonMixture(2), deaths["deaths"], weights=deaths["days"], random_seed=1,
                              n_init=1, max_iter=1, accelerate=None)
    assert stopped["em"].attrs["aitken_gap"] == np.inf and stopped["em"].attrs["acceleration"] == "none"
    for tree in (fitted, stopped):
        loaded = mixflow.load(mixflow.save(tree, tmp_path / "fit.nc"))
        for key in ("acceleration", "convergence_criterion", "aitken_gap", "parameter_gap",
                    "accepted_extrapolations", "tol"):
            np.testing.assert_equal(loaded["em"].attrs[key], tree["em"].attrs[key])
            assert isinstance(loaded["em"].attrs[key], str) == isinstance(tree["em"].attrs[key], str)
        for name in ("aitken_gap", "parameter_gap", "convergence_criterion", "accepted_extrapolations", "n_iter",
                     "converged"):
            np.testing.assert_array_equal(loaded["em/sample_stats"][name].values,
                                          tree["em/sample_stats"][name].values)
            assert loaded["em/sample_stats"][name].dims == ("restart",)
    # here the objective stops resolving the gains first, and the parameters decide
    assert fitted["em"].attrs["convergence_criterion"] == ("parameter_gap < min(sqrt(tol), 0.1 / sqrt(n_observations)) "
                                                           "unless inf")
    assert fitted["em"].attrs["parameter_gap"] < np.sqrt(fitted["em"].attrs["tol"])
    assert stopped["em"].attrs["convergence_criterion"] == em_engine.CONVERGENCE_CRITERION
    best = fitted["em"].attrs["best_restart"]
    for name in ("aitken_gap", "parameter_gap", "convergence_criterion"):
        assert fitted["em/sample_stats"][name].values[best] == fitted["em"].attrs[name]


# -- errors ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["fast", "SQUAREM", "none", True, ["squarem"]])
def test_an_unknown_acceleration_is_refused_by_name(value, faithful):
    with pytest.raises(ValueError, match=r"accelerate: expected one of \['squarem'\] or None \(plain EM\), got"):
        mixflow.fit(mixflow.GaussianMixture(2), faithful, accelerate=value)


def test_workflow_accelerate_is_checked_with_its_position_and_none_means_plain_em(tmp_path):
    text = textwrap.dedent("""
        name = "w"
        seed = 1

        [data]
        dataset = "galaxies"

        [[models]]
        family = "gaussian"
        n_components = 2

        [methods.em]
        accelerate = "{value}"
        """)
    path = tmp_path / "flow.toml"
    path.write_text(text.replace("{value}", "fast"))
    with pytest.raises(WorkflowError, match=r"flow.toml:13: \[methods.em\] accelerate: expected one of "
                                            r"\['squarem', 'none'\], got 'fast'"):
        read_workflow(path)
    path.write_text(text.replace("{value}", "none"))
    assert _em_options(read_workflow(path).methods)["accelerate"] is None


# -- the pieces ------------------------------------------------------------------------------------------
def test_aitken_gap_is_exact_on_a_geometric_sequence():
    limit, rate = -100.0, 0.9
    values = limit - 3.0 * rate ** np.arange(5)
    assert acc.aitken_gap(values) == pytest.approx(limit - values[-2], rel=1e-9)
    assert acc.aitken_gap(values[:2]) == np.inf
    assert acc.aitken_gap([-5.0, -4.0, -4.0]) == 0.0  # a fixed point
    assert acc.aitken_gap([-5.0, -4.0, -2.0]) == np.inf  # gains that grow: no rate to extrapolate with
    assert acc.aitken_gap([-5.0, -4.0, np.nan]) == np.inf


def test_aitken_trusts_only_a_rate_that_no_longer_grows_and_never_one_below_the_slowest_seen():
    """Right after a SQUAREM jump the plain steps' rate reflects the directions the jump disturbed. Measured on
    20 000 heavily overlapping 2-D rows: rates 0.6186 then 0.6222 where EM's own rate was 0.999; the estimate
    from the triple alone fell 50-fold short of the gap still to gain, and the run said converged."""
    gains = 1e-6 * np.array([1.0, 0.6186, 0.6186 * 0.6222])
    values = -60519.8 + np.concatenate([[0.0], np.cumsum(gains)])
    alone, floored = acc.aitken_gap(values), acc.aitken_gap(values, rate_floor=0.999)
    assert alone == pytest.approx(gains[-1] / (1 - 0.6222), rel=1e-4)  # the sums round at 1e-11
    assert floored == pytest.approx(gains[-1] / (1 - 0.999), rel=1e-4) and floored > 300 * alone
    assert acc.rate_settled(gains)  # two close rates: why the slowest rate seen is the floor
    assert not acc.rate_settled(1e-6 * np.cumprod([1.0, 0.86, 0.87]))  # a rate still climbing towards EM's
    assert acc.rate_settled(1e-6 * np.cumprod([1.0, 0.999, 0.99895]))  # held (or falling, as rounding noise)
    assert not acc.rate_settled(gains[:2])
    assert acc.observed_rate(values) == pytest.approx(0.6222, rel=1e-4)
    assert np.isnan(acc.observed_rate(-6e4 + np.array([0.0, 1e-10, 1.5e-10])))  # gains within the rounding


def test_parameter_gap_is_exact_on_a_geometric_sequence():
    limit, rate = np.array([0.5, -2.0]), 0.9
    points = [limit - np.array([0.3, 0.1]) * rate ** t for t in range(5)]
    assert acc.parameter_gap(points) == pytest.approx(0.3 * rate ** 4, rel=1e-9)  # distance of the last point
    assert acc.parameter_gap(points[:2]) == np.inf
    fixed = np.array([1.0, 2.0])
    assert acc.parameter_gap([np.array([0.0, 2.0]), fixed, fixed]) == 0.0
    growing = [np.array([value]) for value in (0.0, 1.0, 3.0)]
    assert acc.parameter_gap(growing) == np.inf
    trimmed = [np.zeros(3), np.zeros(3), np.zeros(2)]
    assert acc.parameter_gap(trimmed) == np.inf
    # an empty component (log weight -inf, unchanged) hides no change
    empty = [acc.to_tracked({"weights": np.exp([-np.inf, 0.0 + t])}) for t in (0.0, 0.5, 0.75)]
    assert acc.parameter_gap(empty) == pytest.approx(0.25)


def test_unconstrained_form_round_trips_every_parameter_name():
    rng = np.random.default_rng(0)
    factors = rng.normal(size=(3, 2, 2))
    params = {"weights": np.array([0.2, 0.5, 0.3]), "mu": rng.normal(size=(3, 2)),
              "covariance": factors @ factors.transpose(0, 2, 1) + np.eye(2), "variance": np.array([0.5, 2.0, 3.0]),
              "rate": np.array([1.0, 4.0, 9.0]), "coefficients": rng.normal(size=(3, 2))}
    back = acc.from_unconstrained(acc.to_unconstrained(params))
    for name, value in params.items():
        np.testing.assert_allclose(back[name], value, rtol=1e-12)
    tied = params["covariance"][0]
    np.testing.assert_allclose(acc.from_unconstrained(acc.to_unconstrained({"covariance": tied}))["covariance"],
                               tied, rtol=1e-12)
    assert np.isclose(acc.to_unconstrained(params)["weights"].sum(), 0.0)  # centred log-ratios


def test_extrapolation_solves_a_linear_map_with_one_rate_in_one_step():
    target, rate = np.array([[1.0, -2.0]]), 0.95
    points = [{"mu": target + (rate ** k) * np.array([[3.0, 1.0]])} for k in range(3)]
    state = acc.SquaremState(step_max=1000.0)
    extrapolated, alpha = acc.extrapolate(*points, state)
    np.testing.assert_allclose(extrapolated["mu"], target, atol=1e-9)
    assert alpha == pytest.approx(-1.0 / (1.0 - rate))
    assert acc.extrapolate(*points, acc.SquaremState())[0] is None  # step_max 1: the plain step itself


def test_extrapolation_holds_a_rate_at_zero_and_moves_the_rest():
    # a Poisson rate at its maximum 0 (log -inf in all three points) stays 0; the other rate is extrapolated as
    # if it were alone; a non-finite entry that changes stops the extrapolation
    target, rate = np.log(2.5), 0.9
    points = [acc.to_unconstrained({"rate": np.array([0.0, np.exp(target + 0.5 * rate ** k)])}) for k in range(3)]
    extrapolated, alpha = acc.extrapolate(*points, acc.SquaremState(step_max=1000.0))
    assert extrapolated["rate"][0] == 0.0 and extrapolated["rate"][1] == pytest.approx(2.5, rel=1e-9)
    assert alpha == pytest.approx(-1.0 / (1.0 - rate)) and acc.valid_parameters({"weights": np.ones(2) / 2,
                                                                                  **extrapolated})
    points[2] = {"rate": np.array([np.log(1e-3), points[2]["rate"][1]])}
    assert acc.extrapolate(*points, acc.SquaremState(step_max=1000.0)) == (None, pytest.approx(np.nan, nan_ok=True))
    assert not acc.valid_parameters({"weights": np.ones(2) / 2, "rate": np.array([-1e-3, 1.0])})


def test_step_length_bound_grows_after_success_and_shrinks_after_failure_at_the_bound():
    state = acc.SquaremState()
    state.update(-1.0, kept=True)
    assert state.step_max == 4.0 and state.accepted == 0  # the plain step is no extrapolation
    state.update(-4.0, kept=True)
    state.update(-2.0, kept=False)
    assert state.step_max == 16.0 and (state.accepted, state.rejected) == (1, 1)
    state.update(-16.0, kept=False)
    assert state.step_max == 4.0


@pytest.mark.parametrize("bad", [{"weights": np.array([0.0, 1.0])}, {"variance": np.array([1.0, -1.0])},
                                 {"covariance": np.array([[[1.0, 2.0], [2.0, 1.0]]] * 2)},
                                 {"mu": np.array([[np.nan, 0.0], [1.0, 1.0]])}])
def test_invalid_extrapolated_parameters_are_recognised(bad):
    params = {"weights": np.array([0.4, 0.6]), "mu": np.zeros((2, 2)), "covariance": np.array([np.eye(2)] * 2),
              "variance": np.array([1.0, 2.0])}
    assert acc.valid_parameters(params)
    assert not acc.valid_parameters({**params, **bad})


def test_extrapolations_of_several_runs_at_once_are_each_run_s_own():
    """:func:`acc.extrapolate_rows` gives each row what :func:`acc.extrapolate_flat` and :func:`acc.valid_parameters`
    give it alone, to the bit: ordinary cycles with their own step bounds, a cycle whose step is the plain one, a
    cycle with a NaN entry, and one whose candidate covariance underflows to a singular one (invalid)."""
    rng = np.random.default_rng(7)
    layout = [("weights", (3,)), ("mu", (3, 2)), ("covariance", (3, 2, 2))]
    size = 3 + 6 + 12
    limit = rng.normal(size=(6, size))
    x0 = limit + rng.normal(size=(6, size))
    x1 = limit + 0.9 * (x0 - limit) + 1e-3 * rng.normal(size=(6, size))
    x2 = limit + 0.9 * (x1 - limit) + 1e-3 * rng.normal(size=(6, size))
    x2[3] = x1[3] + 10.0 * (x1[3] - x0[3])  # a second difference larger than the first: the plain step
    x2[4, 5] = np.nan
    diagonal = 9  # the first covariance's log-Cholesky diagonal, driven far below zero by the extrapolation
    x0[5, diagonal], x1[5, diagonal], x2[5, diagonal] = -100.0, -300.0, -420.0
    step_max = [4.0, 16.0, 1000.0, 4.0, 4.0, 1e6]
    together = acc.extrapolate_rows(x0, x1, x2, step_max, layout)
    kinds = []
    for i, (candidate, alpha, valid) in enumerate(together):
        alone, alone_alpha = acc.extrapolate_flat(x0[i], x1[i], x2[i], step_max[i], layout)
        assert alpha == alone_alpha or (np.isnan(alpha) and np.isnan(alone_alpha))
        assert (candidate is None) == (alone is None)
        if alone is not None:
            assert candidate.keys() == alone.keys()
            for name in alone:
                np.testing.assert_array_equal(candidate[name], alone[name])
        assert valid == (alone is not None and acc.valid_parameters(alone))
        kinds.append("none" if candidate is None else "valid" if valid else "invalid")
    assert kinds == ["valid", "valid", "valid", "none", "none", "invalid"]


def _same(value, alone):
    return value == alone or (np.isnan(value) and np.isnan(alone))


def test_extrapolations_asked_together_are_each_run_s_own_whatever_their_layouts():
    """:func:`em_run._extrapolate_together`: requests of two layouts (three of one, one alone of the other) and a
    cycle with a Poisson rate held at 0 (log -inf in all three points) get what each gets alone."""
    rng = np.random.default_rng(11)
    gaussian = (("weights", (2,)), ("mu", (2, 1)), ("variance", (2,)))
    poisson = (("weights", (3,)), ("rate", (3,)))

    def cycle(size, held=False):
        x0 = rng.normal(size=size)
        x1 = x0 + 0.1 * rng.normal(size=size)
        x2 = x1 + 0.08 * (x1 - x0) + 1e-3 * rng.normal(size=size)
        if held:
            x0[3] = x1[3] = x2[3] = -np.inf
        return x0, x1, x2

    requests = [em_run._Extrapolation(cycle(6), 16.0, gaussian),
                em_run._Extrapolation(cycle(6, held=True), 4.0, poisson),
                em_run._Extrapolation(cycle(6), 1e6, gaussian), em_run._Extrapolation(cycle(6), 4.0, gaussian)]
    answers = em_run._extrapolate_together(requests)
    for request, (candidate, alpha, valid) in zip(requests, answers, strict=True):
        alone, alone_alpha = acc.extrapolate_flat(*request.flats, request.step_max, list(request.layout))
        assert _same(alpha, alone_alpha) and (candidate is None) == (alone is None)
        if alone is not None:
            for name in alone:
                np.testing.assert_array_equal(candidate[name], alone[name])
        assert valid == (alone is not None and acc.valid_parameters(alone))
    assert answers[1][0]["rate"][0] == 0.0  # the held rate stays at 0


def test_the_stop_s_changes_of_points_in_step_are_each_point_s_own():
    """:func:`em_run._set_changes` gives each point :func:`acc.largest_change` from its previous form, to the bit: an
    equal infinity (an empty component's log weight), a NaN, a form of another length (a trimmed run), a point alone
    of its size, and none given."""
    rng = np.random.default_rng(3)

    def point(tracked):
        made = em_run.Point({}, np.arange(1), 0.0, 0.0, {}, np.arange(1), [])
        made.__dict__["tracked"] = tracked
        return made

    before = [rng.normal(size=7) for _ in range(5)] + [rng.normal(size=4), rng.normal(size=9), None]
    after = [b + 1e-3 * rng.normal(size=b.size) if b is not None else rng.normal(size=7) for b in before]
    before[1][2] = after[1][2] = -np.inf
    after[2][0] = np.nan
    before[3][1], after[3][1] = -np.inf, -1.0
    after[4] = rng.normal(size=6)  # trimmed in between
    points = [point(value) for value in after]
    em_run._set_changes(points, before)
    for made, first in zip(points, before, strict=True):
        if first is None:
            assert made.change is None
        else:
            assert _same(made.change, acc.largest_change(first, made.tracked))
    assert points[1].change < 1e-2 and np.isnan(points[2].change) and np.isnan(points[4].change)


def test_on_1e11_observations_the_stop_is_a_small_share_of_a_standard_error_from_the_maximum():
    """Weldon's crabs at their class midpoints, every count times 1e8: a parameter's standard error is 1e-4 of the
    crabs' own, and the parameters' stop at sqrt(tol) alone left the estimate up to 0.45 standard errors from the
    maximum (a mean 0.32). The bound is also 0.1 / sqrt(n), a tenth of a standard error's order: every parameter
    within 0.05 of its standard error of the fit at tol=1e-14, and the attrs say the rule."""
    crabs = mixflow.load_dataset("crabs")
    model = mixflow.GroupedGaussianMixture(2, likelihood="midpoint", open_below=0.5835, open_above=0.6915)
    fits = [mixflow.fit(model, crabs[["lower", "upper"]], weights=crabs["count"] * 1e8, random_seed=0, **options)
            for options in ({}, {"tol": 1e-14, "max_iter": 20_000})]
    default, limit = ({name: value.values for name, value in tree["em/estimate"].items()} for tree in fits)
    errors = mixflow.standard_errors(fits[1])
    for name, value in limit.items():
        assert np.all(np.abs(default[name] - value) < 0.05 * errors[name].values), name
    assert "0.1 / sqrt(n_observations)" in fits[0]["em"].attrs["convergence_criterion"]
    assert acc.parameter_tolerance(1e-10, 1e11) == pytest.approx(0.1 / np.sqrt(1e11), rel=1e-15)
    assert acc.parameter_tolerance(1e-10, 1e4) == pytest.approx(1e-5, rel=1e-15)


@pytest.mark.parametrize("model,data", [
    (mixflow.GaussianMixture(1), "faithful"), (mixflow.GaussianMixture(1, covariance="diag"), "faithful"),
    (mixflow.PoissonMixture(1), "deaths"), (mixflow.SoftKMeans(1, 2.0), "faithful"),
    (mixflow.RegressionMixture(1, "tuned ~ stretchratio"), "tone")])
@pytest.mark.parametrize("method", ["em", "map"])
def test_one_component_s_closed_form_maximum_is_a_fixed_point_said_converged_after_two_steps(model, data, method):
    """With one component every responsibility is 1, so one M-step gives the maximum (of the likelihood, or of the
    posterior under a conjugate prior) and the next returns it exactly. The stop says so after that step, without
    waiting for rates that an exact fixed point does not have (it took 6 iterations, and max_iter=5 was called not
    converged). The value is the closed form's: the sample mean for the soft k-means centre."""
    frame, weights = mixflow.load_dataset("london_deaths" if data == "deaths" else data), None
    if data == "deaths":
        frame, weights = frame["deaths"], frame["days"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", mixflow.ConvergenceWarning)
        tree = mixflow.fit(model, frame, method=method, weights=weights, max_iter=2, random_seed=0)
    attrs = tree["em"].attrs
    assert attrs["converged"] and attrs["n_iter"] == 2 and attrs["parameter_gap"] == 0.0
    assert attrs["convergence_criterion"] == em_run.FIXED_POINT_CRITERION
    longer = mixflow.fit(model, frame, method=method, weights=weights, max_iter=50, random_seed=0)
    assert longer["em"].attrs["n_iter"] == 2
    assert all(np.array_equal(tree["em/estimate"][name].values, longer["em/estimate"][name].values)
               for name in tree["em/estimate"].data_vars)
    if model.family == "soft_kmeans" and method == "em":
        np.testing.assert_allclose(tree["em/estimate"]["mu"].values[0], frame.to_numpy().mean(axis=0), rtol=1e-13)
