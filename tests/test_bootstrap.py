"""Bootstrap replicates and observed-information standard errors of the EM estimate."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import mixflow
from mixflow.analysis.bootstrap import bootstrap
from mixflow.analysis.information import standard_errors
from mixflow.warnings import MixflowWarning


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-2, 0.7, 50), rng.normal(2, 1.0, 70)])
    return mixflow.fit(mixflow.GaussianMixture(2), x, random_seed=1, n_init=2)


@pytest.fixture(scope="module")
def replicated(fitted):
    return bootstrap(fitted, n_replicates=16, random_seed=7, n_jobs=1)


def test_replicates_are_stored_like_a_posterior(fitted, replicated):
    node, group = replicated["em/bootstrap"], replicated["em/bootstrap/posterior"]
    assert set(group.data_vars) == {"weights", "mu", "covariance"}
    assert group["mu"].dims == ("chain", "draw", "component", "feature")
    assert group.sizes["chain"] == 1 and group.sizes["draw"] == 16
    assert node.attrs["kind"] == "nonparametric" and node.attrs["random_seed"] == 7
    assert node.attrs["n_failed"] == 0
    # aligned to the estimate: every replicate keeps component 0 as the left one
    assert (group["mu"].values[0, :, 0, 0] < 0).all() and (group["mu"].values[0, :, 1, 0] > 0).all()
    assert "bootstrap" not in fitted["em"].children  # the input is not modified


def test_same_seed_same_replicates_whatever_the_number_of_workers(fitted, replicated):
    again = bootstrap(fitted, n_replicates=16, random_seed=7, n_jobs=1)
    parallel = bootstrap(fitted, n_replicates=16, random_seed=7, n_jobs=2)
    assert replicated["em/bootstrap/posterior"].to_dataset().identical(again["em/bootstrap/posterior"].to_dataset())
    assert replicated["em/bootstrap/posterior"].to_dataset().identical(parallel["em/bootstrap/posterior"].to_dataset())
    other = bootstrap(fitted, n_replicates=16, random_seed=8, n_jobs=1)
    assert not np.array_equal(other["em/bootstrap/posterior"]["mu"].values,
                              replicated["em/bootstrap/posterior"]["mu"].values)


def test_parametric_bootstrap_and_map(fitted):
    tree = mixflow.fit(mixflow.GaussianMixture(2, covariance="spherical"),
                       fitted["observed_data"]["x"].values, method="map", random_seed=1, n_init=1)
    result = bootstrap(tree, n_replicates=8, kind="parametric", random_seed=3, n_jobs=1)
    draws = result["em/bootstrap/posterior"]["variance"]
    assert draws.dims == ("chain", "draw", "component") and np.isfinite(draws).all()


def test_frequency_weighted_data_resample_units(fitted):
    values = np.round(fitted["observed_data"]["x"].values[:, 0], 1)
    unique, counts = np.unique(values, return_counts=True)
    tree = mixflow.fit(mixflow.GaussianMixture(2), unique, weights=counts.astype(float), random_seed=1, n_init=1)
    result = bootstrap(tree, n_replicates=6, random_seed=2, n_jobs=1)
    assert np.isfinite(result["em/bootstrap/posterior"]["weights"].values).all()


def test_bootstrap_group_survives_save_and_load(tmp_path, replicated):
    loaded = mixflow.load(mixflow.save(replicated, tmp_path / "boot.nc"))
    assert loaded["em/bootstrap/posterior"].to_dataset().identical(replicated["em/bootstrap/posterior"].to_dataset())


def test_standard_errors_of_one_gaussian_match_the_closed_form():
    rng = np.random.default_rng(5)
    x = rng.normal(3.0, 2.0, size=(400, 1))
    tree = mixflow.fit(mixflow.GaussianMixture(1), x, random_seed=0, n_init=1)
    errors = standard_errors(tree)
    n, variance = x.shape[0], x.var()
    assert errors["mu"].item() == pytest.approx(np.sqrt(variance / n), rel=1e-4)
    assert errors["covariance"].item() == pytest.approx(variance * np.sqrt(2 / n), rel=1e-4)
    assert errors["weights"].item() == 0.0


@pytest.mark.parametrize("method", ["em", "map"])
def test_standard_errors_of_scaled_data_are_the_errors_moved(method):
    """X -> c X: the means' errors times c, the covariances' times c^2, the weights' the same, to 1e-5 (the
    numerical Hessian's own precision), for c from 1e-4 to 1e4 (the Hessian is taken in standardised units)."""
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal([0.0, 0.0], [1.0, 0.5], (150, 2)), rng.normal([3.0, 1.0], [0.7, 1.0], (100, 2))])
    reference = standard_errors(mixflow.fit(mixflow.GaussianMixture(2), x, method=method, random_seed=0))
    assert np.isfinite(reference["mu"].values).all()
    for c in (1e-4, 1e4):
        errors = standard_errors(mixflow.fit(mixflow.GaussianMixture(2), c * x, method=method, random_seed=0))
        np.testing.assert_allclose(errors["mu"].values, c * reference["mu"].values, rtol=1e-5)
        np.testing.assert_allclose(errors["covariance"].values, c**2 * reference["covariance"].values, rtol=1e-5)
        np.testing.assert_allclose(errors["weights"].values, reference["weights"].values, rtol=1e-5)


def _plain_hessian(tree) -> np.ndarray:
    """The observed information's reference: a four-corner central difference of the whole objective (EM's
    log-likelihood, or log posterior density, by e_step) at every entry, in the unconstrained vector and steps the
    Hessian by parts uses."""
    from mixflow.analysis.information import _pack, _unpack
    from mixflow.container.read import fitted_estimate, fitted_model, observed_data
    from mixflow.engines.em_steps import e_step, objective

    estimate, data = fitted_estimate(tree), observed_data(tree)
    model = fitted_model(tree, estimate["weights"].size)
    prepared = model.prepare(data)
    prior = model.working_prior(prepared) if tree["em"].attrs["method"] == "map" else None
    theta, layout = _pack(model.to_working(estimate, prepared))

    def value(point):
        params = _unpack(point, layout)
        log_likelihood = float(prepared.weights @ e_step(model, params, prepared, data.n_features, working=True)[1])
        return objective(model, params, log_likelihood, prior, np.arange(model.n_components))

    steps, p = 1e-4 * np.maximum(np.abs(theta), 1.0), theta.size
    hessian = np.empty((p, p))
    for i in range(p):
        for j in range(i, p):
            corners = []
            for si, sj in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
                point = theta.copy()
                point[i] += si * steps[i]
                point[j] += sj * steps[j]
                corners.append(value(point))
            hessian[i, j] = hessian[j, i] = (corners[0] - corners[1] - corners[2] + corners[3]) / (
                4 * steps[i] * steps[j])
    return hessian, model, prepared, theta, layout, data.features, prior


@pytest.mark.parametrize("case", ["full map", "tied", "diag", "poisson map", "regression", "grouped common",
                                  "one feature K=6", "full map, in blocks of rows"])
def test_the_hessian_by_parts_is_the_plain_difference_quotient(case, monkeypatch):
    """The observed information is taken by parts (a component's own parameter moves one column of log densities,
    reused for every entry with another component's): the same difference quotient as evaluating the whole
    objective at every corner, to 1e-6 of its largest entry (both have the steps' truncation error, about 1e-8),
    for parameters of one component, of two, shared ones (a tied covariance, a common variance), the weights
    and a MAP fit's prior (added once, however many blocks of rows the Hessian is summed over)."""
    from mixflow.analysis import information
    from mixflow.analysis.information import _observed_hessian
    from mixflow.families.grouped.model import GroupedGaussianMixture

    rng = np.random.default_rng(4)
    x = np.concatenate([rng.normal([0.0, 0.0], [1.0, 0.5], (120, 2)), rng.normal([3.0, 1.0], [0.7, 1.0], (90, 2))])
    counts = np.concatenate([rng.poisson(1.5, 150), rng.poisson(6.0, 100)])
    u = rng.uniform(0, 10, 200)
    lines = pd.DataFrame({"u": u, "y": np.where(rng.random(200) < 0.5, 1 + u, 9 - u) + rng.normal(0, 0.7, 200)})
    edges = np.arange(-4.0, 8.0)
    binned = pd.DataFrame({"lower": edges[:-1], "upper": edges[1:]})
    fits = {
        "full map": lambda: mixflow.fit(mixflow.GaussianMixture(2), x, method="map", random_seed=0),
        "tied": lambda: mixflow.fit(mixflow.GaussianMixture(2, covariance="tied"), x, random_seed=0),
        "diag": lambda: mixflow.fit(mixflow.GaussianMixture(3, covariance="diag"), x, random_seed=0),
        "poisson map": lambda: mixflow.fit(mixflow.PoissonMixture(2), counts, method="map", random_seed=0),
        "regression": lambda: mixflow.fit(mixflow.RegressionMixture(2, "y ~ u"), lines, random_seed=0),
        "grouped common": lambda: mixflow.fit(
            GroupedGaussianMixture(2, common_variance=True), binned,
            weights=np.histogram(np.concatenate([rng.normal(0, 1, 300), rng.normal(4, 1, 200)]), edges)[0] + 1.0,
            random_seed=0),
        "one feature K=6": lambda: mixflow.fit(mixflow.GaussianMixture(6), np.concatenate(
            [rng.normal(m, 1.0, 80) for m in range(0, 24, 4)]), random_seed=0),
    }
    fits["full map, in blocks of rows"] = fits["full map"]
    if case.endswith("in blocks of rows"):  # a few hundred floats a block: 5 blocks of the 210 rows
        monkeypatch.setattr(information, "_BLOCK_FLOATS", 50 * (4 * 10 + 4 * 2))
    reference, model, prepared, theta, layout, features, prior = _plain_hessian(fits[case]())
    by_parts = _observed_hessian(model, prepared, theta, layout, features, prior)
    np.testing.assert_allclose(by_parts, reference, rtol=0, atol=1e-6 * np.abs(reference).max())


def test_standard_errors_agree_with_the_bootstrap_on_simulated_data():
    rng = np.random.default_rng(11)
    n = 600
    labels = rng.random(n) < 0.35
    x = np.where(labels[:, None], [-2.0, 0.0], [2.0, 1.0]) + rng.normal(size=(n, 2)) * np.where(
        labels[:, None], 0.6, 1.0)
    tree = mixflow.fit(mixflow.GaussianMixture(2, covariance="diag"), x, random_seed=0, n_init=1)
    errors = standard_errors(tree)
    replicates = bootstrap(tree, n_replicates=120, random_seed=1)
    spread = replicates["em/bootstrap/posterior"].to_dataset().std(("chain", "draw"), ddof=1)
    for name in ("weights", "mu", "variance"):
        ratio = errors[name].values / spread[name].values
        assert np.all((ratio > 0.7) & (ratio < 1.4)), (name, ratio)


def test_standard_errors_respect_the_weights_constraint(fitted):
    errors = standard_errors(fitted)
    assert errors["weights"].values[0] == pytest.approx(errors["weights"].values[1], rel=1e-6)
    assert errors["mu"].dims == ("component", "feature")


def test_standard_errors_undefined_give_nan_and_a_warning(fitted):
    with pytest.warns(MixflowWarning, match="not defined: 5 free parameters exceed max_parameters=2"):
        errors = standard_errors(fitted, max_parameters=2)
    assert all(np.isnan(errors[name]).all() for name in errors.data_vars)


def test_standard_errors_of_one_fit_are_computed_once_and_again_when_what_they_depend_on_changes(fitted,
                                                                                                monkeypatch):
    """A comparison table, the forest plot and the report of one fit each ask for its errors: the Hessian is taken
    once, each call gets its own copy, an undefined error warns at every call, and a changed estimate, data set or
    objective is computed afresh."""
    from mixflow.analysis import information

    computed = []
    original = information._errors
    monkeypatch.setattr(information, "_errors", lambda tree, limit: computed.append(limit) or original(tree, limit))
    information._COMPUTED.clear()
    first = standard_errors(fitted)
    first["mu"].values[:] = 0  # the caller's copy, not the kept one
    again = standard_errors(fitted.copy(deep=True))
    assert len(computed) == 1
    xr.testing.assert_identical(again, information._errors(fitted, 200))
    for _ in range(2):
        with pytest.warns(MixflowWarning, match="not defined: 5 free parameters exceed max_parameters=2"):
            standard_errors(fitted, max_parameters=2)
    assert computed == [200, 200, 2]

    moved = fitted.copy(deep=True)
    moved["em/estimate"]["mu"] = moved["em/estimate"]["mu"] + 0.01
    other_data = fitted.copy(deep=True)
    other_data["observed_data"]["x"] = other_data["observed_data"]["x"] * 1.001
    other_objective = fitted.copy(deep=True)
    other_objective["em"].attrs["method"] = "map"  # the log posterior density's Hessian
    for changed in (moved, other_data, other_objective):
        standard_errors(changed)
    assert len(computed) == 6
    assert not np.allclose(standard_errors(moved)["mu"], again["mu"])


def test_bad_arguments(fitted):
    with pytest.raises(ValueError, match="n_replicates: expected an integer >= 2, got 1"):
        bootstrap(fitted, n_replicates=1)
    with pytest.raises(ValueError, match=r"kind: expected one of \['nonparametric', 'parametric'\], got 'jackknife'"):
        bootstrap(fitted, kind="jackknife")
    with pytest.raises(ValueError, match=r"random_seed: expected None or a non-negative integer below "
                                         r"2\*\*63 \(stored as int64\), got -1"):
        bootstrap(fitted, random_seed=-1)
    with pytest.raises(ValueError, match="n_jobs: expected None .* or an integer >= 1, got 0"):
        bootstrap(fitted, n_jobs=0)
    with pytest.raises(ValueError, match=r"data: expected the data the tree was fitted on \(shape \(120, 1\)\)"):
        bootstrap(fitted, np.zeros(120))
    with pytest.raises(TypeError, match="tree: expected a mixflow result"):
        bootstrap("result.nc")
    without_em = xr.DataTree.from_dict({"/": xr.Dataset(attrs=fitted.attrs),
                                        "observed_data": fitted["observed_data"].to_dataset()})
    with pytest.raises(ValueError, match="tree: expected a result with an /em/estimate"):
        bootstrap(without_em)


def test_replicates_are_aligned_by_the_overlap_of_responsibilities():
    from mixflow.analysis.bootstrap import _align

    rng = np.random.default_rng(0)
    reference = rng.dirichlet(np.ones(3) * 0.2, size=50)
    swapped = reference[:, [2, 0, 1]]  # the fit calls reference component 2 its component 0, ...
    order = _align(reference, swapped, np.ones(50))
    np.testing.assert_array_equal(swapped[:, order], reference)


def _data(values, features, weights=None):
    from mixflow.data import Data

    values = np.asarray(values, dtype=float).reshape(len(values), -1)
    return Data(values=values, features=np.array(features), obs=np.arange(len(values)), weights=weights)


def test_poisson_sampler_matches_the_mixture_moments():
    params = {"weights": np.array([0.3, 0.7]), "rate": np.array([1.0, 6.0])}
    data = _data([0, 1, 2], ["deaths"], weights=np.array([20000.0, 20000, 10000]))
    replicate = mixflow.PoissonMixture(2).simulate_data(params, data, np.random.default_rng(0))
    counts = replicate.values[:, 0]
    assert counts.size == 50000 and replicate.weights is None and list(replicate.features) == ["deaths"]
    mean = 0.3 * 1 + 0.7 * 6
    variance = 0.3 * (1 + 1) + 0.7 * (6 + 36) - mean**2
    assert counts.mean() == pytest.approx(mean, abs=4 * np.sqrt(variance / 50000))
    assert counts.var() == pytest.approx(variance, rel=0.03)


def test_regression_sampler_keeps_the_covariates_and_draws_responses_per_unit():
    model = mixflow.RegressionMixture(2, "y ~ x")
    params = {"weights": np.array([0.5, 0.5]), "coefficients": np.array([[0.0, 1.0], [2.0, 0.0]]),
              "variance": np.array([1e-6, 1e-6])}
    data = _data(np.column_stack([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]), ["x", "y"], weights=np.array([3.0, 1, 2]))
    replicate = model.simulate_data(params, data, np.random.default_rng(1))
    assert np.array_equal(replicate.values[:, 0], [1, 1, 1, 2, 3, 3])
    y, x = replicate.values[:, 1], replicate.values[:, 0]
    assert np.all(np.isclose(y, x, atol=0.01) | np.isclose(y, 2.0, atol=0.01))
    with pytest.raises(ValueError, match=r"weights: expected integer frequency weights to simulate a regression"):
        model.simulate_data(params, _data(data.values, ["x", "y"], weights=np.array([0.5, 1, 2])),
                      np.random.default_rng(1))


def test_grouped_sampler_counts_values_into_the_observed_classes():
    model = mixflow.GroupedGaussianMixture(1, open_below=1.0, open_above=2.0)
    data = _data(np.array([[2.0, 3.0], [0.0, 1.0], [1.0, 2.0]]), ["lower", "upper"], weights=np.array([5.0, 5, 90]))
    replicate = model.simulate_data({"weights": np.array([1.0]), "mu": np.array([1.5]), "variance": np.array([0.25])},
                              data, np.random.default_rng(2))
    assert replicate.weights.sum() == 100 and np.array_equal(replicate.values, data.values)
    expected = 100 * np.array([0.1587, 0.1587, 0.6827])  # N(1.5, 0.5): above 2, below 1, between
    assert np.all(np.abs(replicate.weights - expected) < 4 * np.sqrt(expected))


@pytest.mark.filterwarnings("ignore::mixflow.warnings.MixflowWarning")  # London deaths: EM is slow to settle
@pytest.mark.parametrize("family", ["poisson", "regression"])
def test_parametric_bootstrap_of_other_families(family):
    if family == "poisson":
        deaths = mixflow.load_dataset("london_deaths")
        tree = mixflow.fit(mixflow.PoissonMixture(2), deaths[["deaths"]], weights=deaths["days"], random_seed=1,
                           n_init=2, tol=1e-8)
    else:
        tree = mixflow.fit(mixflow.RegressionMixture(2, "tuned ~ stretchratio"), mixflow.load_dataset("tone"),
                           method="map", random_seed=1, n_init=2)
    result = bootstrap(tree, n_replicates=4, kind="parametric", random_seed=3, n_jobs=1)
    assert result["em/bootstrap"].attrs["n_failed"] == 0
    for name, value in result["em/bootstrap/posterior"].data_vars.items():
        assert np.isfinite(value.values).all(), name


@pytest.fixture(scope="module")
def tabulated():
    """Values with very unequal frequencies, and the same data as repeated rows."""
    rng = np.random.default_rng(4)
    values = np.round(np.concatenate([rng.normal(-2, 0.7, 60), rng.normal(2, 1.0, 80)]), 1)
    unique, counts = np.unique(values, return_counts=True)
    counts = counts * rng.integers(1, 6, size=unique.size)  # 1 to 5 times as many units per row
    return unique, counts.astype(float)


def test_frequency_weighted_bootstrap_draws_units_not_rows(tabulated, monkeypatch):
    from mixflow.analysis import bootstrap as bootstrap_module

    unique, counts = tabulated
    drawn = []
    resample = bootstrap_module._resample

    def recording(job, rng):
        x, weights = resample(job, rng)
        drawn.append(weights)
        return x, weights

    monkeypatch.setattr(bootstrap_module, "_resample", recording)
    tree = mixflow.fit(mixflow.GaussianMixture(2), unique, weights=counts, random_seed=1, n_init=1)
    bootstrap(tree, n_replicates=40, random_seed=2, n_jobs=1)
    drawn = np.array(drawn)
    assert drawn.shape == (40, unique.size)
    np.testing.assert_array_equal(drawn.sum(axis=1), counts.sum())  # every replicate has as many units
    np.testing.assert_array_equal(drawn, np.round(drawn))
    # each row's count is Binomial(N, c / N): its mean over replicates within 4 standard errors of c
    total = counts.sum()
    se = np.sqrt(counts * (1 - counts / total) / len(drawn))
    assert np.all(np.abs(drawn.mean(axis=0) - counts) < 4 * se + 1e-12)


@pytest.mark.slow
def test_frequency_weighted_bootstrap_spread_equals_the_expanded_rows(tabulated):
    """Resampling units of tabulated data is the ordinary bootstrap of the expanded rows: same spread."""
    unique, counts = tabulated
    model = mixflow.GaussianMixture(2)
    weighted = mixflow.fit(model, unique, weights=counts, random_seed=1, n_init=1)
    expanded = mixflow.fit(model, np.repeat(unique, counts.astype(int)), random_seed=1, n_init=1)
    np.testing.assert_allclose(weighted["em/estimate"]["mu"], expanded["em/estimate"]["mu"], rtol=1e-6)
    spreads = {}
    for name, tree in (("weighted", weighted), ("expanded", expanded)):
        replicated = bootstrap(tree, n_replicates=100, random_seed=3, n_jobs=1)
        assert replicated["em/bootstrap"].attrs["n_failed"] == 0
        group = replicated["em/bootstrap/posterior"].to_dataset()
        spreads[name] = {p: group[p].std(("chain", "draw"), ddof=1).values for p in ("weights", "mu", "covariance")}
        # centred on the estimate: a bootstrap that ignored the weights would centre on the unweighted fit
        gap = np.abs(group["mu"].mean(("chain", "draw")).values - tree["em/estimate"]["mu"].values)
        assert np.all(gap < 4 * spreads[name]["mu"] / np.sqrt(100) + 0.5 * spreads[name]["mu"])
    # two independent sets of 100 replicates: the ratio of their sds is within 30% (about 3 standard errors);
    # resampling rows instead of units would make it about sqrt(units per row) = 2
    for parameter in ("weights", "mu", "covariance"):
        np.testing.assert_allclose(spreads["weighted"][parameter], spreads["expanded"][parameter], rtol=0.3,
                                   err_msg=parameter)


def test_each_replicate_says_whether_it_failed_converged_or_collapsed():
    # the run said "3 had a collapsed component; the replicates are kept as they are", and nothing said which
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(0, 1, 25), [5.0, 5.0, 5.0, 5.1], rng.normal(9, 1, 4)])  # a tight small group
    fitted = mixflow.fit(mixflow.GaussianMixture(3), x, random_seed=0)
    with pytest.warns(MixflowWarning):
        replicated = bootstrap(fitted, n_replicates=30, random_seed=1, n_jobs=1)
    node = replicated["em/bootstrap"]
    flags = node["sample_stats"].to_dataset()
    assert set(flags.data_vars) == {"failed", "converged", "degenerate", "elsewhere"}
    assert flags["degenerate"].dims == ("chain", "draw") and flags.sizes["draw"] == 30
    assert int(flags["degenerate"].sum()) == node.attrs["n_degenerate"] > 0
    assert int(flags["failed"].sum()) == node.attrs["n_failed"]
    assert int((~flags["converged"] & ~flags["failed"]).sum()) == node.attrs["n_not_converged"]
    kept = replicated["em/bootstrap/posterior"].to_dataset().where(~flags["degenerate"] & ~flags["failed"])
    assert int(kept["weights"].notnull().all("component").sum()) == 30 - node.attrs["n_degenerate"] - \
        node.attrs["n_failed"]


def test_replicates_of_another_solution_are_flagged_and_counted():
    """Counts of great discoveries per year, 1860-1959 (R's discoveries, as counts per value), Poisson K=2.

    A few replicates end with a component on the zeros alone (rate 0): another fixed point (a boundary point), whose
    basin EM on the data from their estimates stays in. They were kept in the spread without a word (the higher
    rate's bootstrap sd 1.97 where the replicates of the estimate's maximum give 1.73); now each is flagged and
    counted, and said.
    """
    counts = [9, 12, 26, 20, 12, 7, 6, 4, 1, 1, 1, 0, 1]
    values = pd.DataFrame({"discoveries": np.arange(13.0)})
    fitted = mixflow.fit(mixflow.PoissonMixture(2), values, weights=counts, random_seed=1)
    with pytest.warns(MixflowWarning, match=r"bootstrap: of 200 replicates, .*5 ended at another solution than the "
                                            r"estimate's \(EM on the data from their estimates goes to another fixed "
                                            r"point: their spread"):
        replicated = bootstrap(fitted, n_replicates=200, random_seed=3, n_jobs=1)
    flags = replicated["em/bootstrap/sample_stats"]["elsewhere"].values[0]
    attrs = replicated["em/bootstrap"].attrs
    assert attrs["n_elsewhere"] == int(flags.sum()) == 5 and attrs["n_elsewhere_higher"] == 0
    rates = replicated["em/bootstrap/posterior"]["rate"].values[0]
    assert (rates[flags].min(axis=1) < 1e-9).all() and (rates[~flags].min(axis=1) > 0.5).all()
    assert rates[~flags, 1].std() < rates[:, 1].std()
    assert "5 at another solution" in mixflow.summary(replicated, kind="text")


def test_a_replicate_at_a_higher_maximum_is_said_so_and_a_run_that_does_not_converge_is_not_flagged(monkeypatch):
    """Where EM from a replicate's estimate goes: the estimate's objective (per unit of weight, in any units), a
    lower or a higher one, or no convergence (undecided: not flagged, where a plain run stopped at max_iter was
    counted as another maximum)."""
    from mixflow.analysis import bootstrap as module

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, 150), rng.normal(2.5, 1, 100)])
    fitted = mixflow.fit(mixflow.GaussianMixture(2), x, random_seed=0)
    job = module._Job(model_json=fitted.attrs["model"], n_active=2, method="em", x=x[:, None],
                      features=np.array(["x0"]), weights=None, estimate={}, reference_responsibilities=np.empty(0),
                      kind="nonparametric", tol=1e-10, max_iter=1000,
                      objective=float(fitted["em"].attrs["log_likelihood"]))
    model = mixflow.GaussianMixture(2)
    estimate = {name: fitted["em/estimate"][name].values for name in ("weights", "mu", "covariance")}
    assert module._elsewhere(job, model, estimate, 1) == "same"
    assert module._elsewhere(dataclasses.replace(job, objective=job.objective + 1.0), model, estimate, 1) == "elsewhere"
    assert module._elsewhere(dataclasses.replace(job, objective=job.objective - 1.0), model, estimate, 1) == "higher"
    # the same data, scaled by 1e6: their objectives move together, and the replicate is at the same solution
    scaled = {**estimate, "mu": estimate["mu"] * 1e6, "covariance": estimate["covariance"] * 1e12}
    shift = x.size * np.log(1e6)
    assert module._elsewhere(dataclasses.replace(job, x=x[:, None] * 1e6, objective=job.objective - shift), model,
                             scaled, 1) == "same"
    monkeypatch.setattr(module, "_CHECK_MAX_ITER", 1)
    assert module._elsewhere(dataclasses.replace(job, max_iter=1), model,
                             {**estimate, "mu": estimate["mu"] + 1.0}, 1) == "undecided"


def test_a_replicate_that_warned_of_a_spurious_maximum_is_flagged_degenerate_and_not_warned_again():
    # a SpuriousMaximumWarning is a kind of DegenerateComponentWarning: the replicate counts as degenerate, and its
    # message (one per replicate) is summed up in the count rather than repeated
    import warnings

    from mixflow.analysis import bootstrap as module

    said = [(mixflow.SpuriousMaximumWarning, "restart 3 reached a higher maximum ... set aside"),
            (mixflow.DegenerateComponentWarning, "component 1 collapsed")]
    results = [{"params": {"weights": np.ones(2) / 2}, "converged": True, "warnings": [said[0]]},
               {"params": {"weights": np.ones(2) / 2}, "converged": True, "warnings": [said[1]]},
               {"params": {"weights": np.ones(2) / 2}, "converged": True, "warnings": []}]
    flags = module._replicate_flags(results)
    np.testing.assert_array_equal(flags["degenerate"], [True, True, False])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module._report_warnings(results, flags, "em")
    assert not any("bootstrap replicate: restart 3" in str(w.message) for w in caught)
    assert any("(consider method='map' or more data)" in str(w.message) for w in caught)


def test_the_advice_of_a_map_fits_bootstrap_is_not_to_fit_by_map():
    import warnings

    from mixflow.analysis import bootstrap as module

    results = [{"params": {"weights": np.ones(2) / 2}, "converged": True,
                "warnings": [(mixflow.DegenerateComponentWarning, "component 1 collapsed")]}]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module._report_warnings(results, module._replicate_flags(results), "map")
    [said] = [str(w.message) for w in caught]
    assert said.endswith("(consider more data or fewer components)") and "method='map'" not in said


# R's datasets::cars (Ezekiel 1930): speed (mph) and stopping distance (ft) of 50 cars
CARS = pd.DataFrame({
    "speed": [4, 4, 7, 7, 8, 9, 10, 10, 10, 11, 11, 12, 12, 12, 12, 13, 13, 13, 13, 14, 14, 14, 14, 15, 15, 15, 16,
              16, 17, 17, 17, 18, 18, 18, 18, 19, 19, 19, 20, 20, 20, 20, 20, 22, 23, 24, 24, 24, 24, 25],
    "dist": [2, 10, 4, 22, 16, 10, 18, 26, 34, 17, 28, 14, 20, 24, 28, 26, 34, 34, 46, 26, 36, 60, 80, 20, 26, 54, 32,
             40, 32, 40, 50, 42, 56, 76, 84, 36, 46, 68, 32, 48, 52, 56, 64, 66, 54, 70, 92, 93, 120, 85]}, dtype=float)


def test_a_replicate_leading_to_a_degenerate_or_spurious_point_above_the_estimate_is_no_higher_maximum_missed():
    # two regression lines through 50 cars: 7 of 40 replicates lead EM on the data to another fixed point, 6 of them
    # above the estimate's log-likelihood (-200.06, which seeds 0-4 and n_init=50 all return): lines through 2-3
    # rows (variance 0: -170.75, -179.85) or flagged spurious (-198.20, -199.95). They were said to be "a higher
    # maximum than the estimate's, which its restarts missed", which would send an analyst after a better fit that
    # does not exist
    fitted = mixflow.fit(mixflow.RegressionMixture(2, "dist ~ speed"), CARS, random_seed=0)
    assert fitted["em"].attrs["log_likelihood"] == pytest.approx(-200.0617, abs=1e-4)
    with pytest.warns(MixflowWarning, match=r"7 ended at another solution") as caught:
        replicated = bootstrap(fitted, n_replicates=40, random_seed=1, n_jobs=1)
    attrs = replicated["em/bootstrap"].attrs
    assert (attrs["n_elsewhere"], attrs["n_elsewhere_higher"]) == (7, 0)
    assert not any("restarts missed" in str(w.message) for w in caught)
