"""Grouped (binned) data: exact grouped-data EM against scipy references, the midpoint approximation, crabs."""

import json
import re
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

import mixflow
from mixflow.families.grouped.model import GroupedGaussianMixture, interval_log_probability, truncated_moments

# mixdist's convention for Pearson's crabs: the first class is (-inf, 0.5835), the last [0.6915, inf)
OPEN = {"open_below": 0.5835, "open_above": 0.6915}


@pytest.fixture(scope="module")
def crabs():
    return mixflow.load_dataset("crabs")


def estimate(tree):
    return {name: tree["em/estimate"][name].values for name in tree["em/estimate"].data_vars}


def naive_grouped_log_likelihood(lower, upper, counts, weights, means, sds):
    """sum_j n_j log sum_k pi_k (Phi(upper_j) - Phi(lower_j)), written with scipy.stats."""
    mass = sum(w * (stats.norm.cdf(upper, m, s) - stats.norm.cdf(lower, m, s))
               for w, m, s in zip(weights, means, sds, strict=True))
    return float(counts @ np.log(mass))


def open_bounds(crabs):
    """The class limits with the end classes opened, as OPEN declares."""
    lower, upper = crabs["lower"].to_numpy().copy(), crabs["upper"].to_numpy().copy()
    lower[0], upper[-1] = -np.inf, np.inf
    return lower, upper


@pytest.fixture(scope="module")
def crabs_fit(crabs):
    return mixflow.fit(GroupedGaussianMixture(2, **OPEN), crabs[["lower", "upper"]], weights=crabs["count"],
                       random_seed=1, n_init=2, tol=1e-14, max_iter=10000)


def test_grouped_log_likelihood_is_the_multinomial_one(crabs_fit, crabs):
    found = estimate(crabs_fit)
    lower, upper = open_bounds(crabs)
    naive = naive_grouped_log_likelihood(lower, upper, crabs["count"].to_numpy(), found["weights"], found["mu"],
                                         np.sqrt(found["variance"]))
    assert crabs_fit["em"].attrs["log_likelihood"] == pytest.approx(naive, rel=1e-13)
    # the class probabilities of the fitted mixture sum to one (open ends)
    assert crabs_fit["em"].attrs["converged"]


def test_grouped_em_reaches_the_maximum_of_the_naive_likelihood(crabs_fit, crabs):
    lower, upper = open_bounds(crabs)
    counts = crabs["count"].to_numpy()

    def unpack(vector):
        weight = 1.0 / (1.0 + np.exp(-vector[0]))
        return [weight, 1 - weight], vector[1:3], np.exp(vector[3:])

    def negative(vector):
        return -naive_grouped_log_likelihood(lower, upper, counts, *unpack(vector))

    found = estimate(crabs_fit)
    start = np.concatenate([[np.log(found["weights"][0] / found["weights"][1])], found["mu"],
                            0.5 * np.log(found["variance"])])
    result = optimize.minimize(negative, start + [0.1, 0.001, -0.001, 0.05, -0.05], method="Nelder-Mead",
                               options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20000})
    weights, means, sds = unpack(result.x)
    assert crabs_fit["em"].attrs["log_likelihood"] == pytest.approx(-result.fun, rel=1e-12)
    # EM stops on the objective, which is flat to 1e-12 along the weights here: 1.2e-5 in a weight is
    # as close as it gets (an EM run to a fixed point of the parameters gives 0.4527595, like Nelder-Mead)
    np.testing.assert_allclose(found["weights"], weights, atol=2e-5)
    np.testing.assert_allclose(found["mu"], means, atol=1e-6)
    np.testing.assert_allclose(np.sqrt(found["variance"]), sds, atol=1e-6)


def test_grouped_and_midpoint_fits_of_the_crabs_are_close_but_not_equal(crabs_fit, crabs):
    """Pearson's crabs two ways: exact grouped likelihood, and class midpoints weighted by the counts."""
    midpoints = mixflow.fit(mixflow.GaussianMixture(2, covariance="spherical"), crabs[["midpoint"]],
                            weights=crabs["count"], random_seed=1, n_init=2, tol=1e-14, max_iter=10000)
    grouped, points = estimate(crabs_fit), estimate(midpoints)
    np.testing.assert_allclose(grouped["mu"], points["mu"][:, 0], atol=1e-3)
    np.testing.assert_allclose(np.sqrt(grouped["variance"]), np.sqrt(points["variance"]), rtol=0.05)
    np.testing.assert_allclose(grouped["weights"], points["weights"], atol=0.03)
    assert np.abs(grouped["mu"] - points["mu"][:, 0]).max() > 1e-4
    assert np.abs(grouped["weights"] - points["weights"]).max() > 1e-3
    # the grouped model's own midpoint option is exactly the weighted-points fit
    option = mixflow.fit(GroupedGaussianMixture(2, likelihood="midpoint", **OPEN), crabs[["lower", "upper"]],
                         weights=crabs["count"], random_seed=1, n_init=2, tol=1e-14, max_iter=10000)
    np.testing.assert_allclose(estimate(option)["mu"], points["mu"][:, 0], rtol=1e-7)
    np.testing.assert_allclose(estimate(option)["variance"], points["variance"], rtol=1e-5)
    assert option["em"].attrs["log_likelihood"] == pytest.approx(midpoints["em"].attrs["log_likelihood"],
                                                                 rel=1e-11)


def test_pearsons_question_two_components_by_bic(crabs_fit, crabs):
    one = mixflow.fit(GroupedGaussianMixture(1, **OPEN), crabs[["lower", "upper"]], weights=crabs["count"],
                      random_seed=1)
    assert crabs_fit["em"].attrs["bic"] < one["em"].attrs["bic"] - 20
    assert crabs_fit["em"].attrs["n_parameters"] == 5 and one["em"].attrs["n_parameters"] == 2
    assert crabs_fit["em"].attrs["n_observations"] == 1000


def test_exact_grouping_removes_the_midpoint_bias():
    """Binned at h = 0.5: midpoints inflate each variance by Sheppard's h^2/12; the grouped EM does not."""
    rng = np.random.default_rng(0)
    n, h = 1_000_000, 0.5
    labels = rng.choice(2, size=n, p=[0.4, 0.6])
    x = np.where(labels == 0, rng.normal(0.0, 1.0, n), rng.normal(3.0, 0.7, n))
    edges = np.arange(-6.0, 8.0 + h, h)
    counts, _ = np.histogram(x, edges)
    classes = pd.DataFrame({"lower": edges[:-1], "upper": edges[1:]})
    truth = np.array([1.0, 0.49])
    grouped = mixflow.fit(GroupedGaussianMixture(2), classes, weights=counts, random_seed=0, tol=1e-12)
    midpoint = mixflow.fit(GroupedGaussianMixture(2, likelihood="midpoint"), classes, weights=counts, random_seed=0,
                           tol=1e-12)
    # sampling sd of the variances is about 0.002 and 0.001
    np.testing.assert_allclose(estimate(grouped)["variance"], truth, atol=0.007)
    np.testing.assert_allclose(estimate(midpoint)["variance"], truth + h**2 / 12, atol=0.007)


@pytest.mark.filterwarnings("ignore::mixflow.ConvergenceWarning")  # 400 iterations are enough to see the climb
@pytest.mark.parametrize("method", ["em", "map"])
@pytest.mark.parametrize("common_variance", [False, True])
def test_objective_never_decreases(method, common_variance, crabs):
    tree = mixflow.fit(GroupedGaussianMixture(3, common_variance=common_variance, **OPEN), crabs[["lower", "upper"]],
                       weights=crabs["count"], method=method, init="random", n_init=2, random_seed=3, tol=1e-12,
                       max_iter=400)
    name = "log_posterior" if method == "map" else "log_likelihood"
    for history in tree["em/sample_stats"][name].values:
        history = history[~np.isnan(history)]
        assert history.size > 5
        assert (np.diff(history) >= -1e-11 * np.abs(history[1:])).all()


def test_common_variance_and_map(crabs):
    model = GroupedGaussianMixture(2, common_variance=True, prior={"scale": 1e-4}, **OPEN)
    tree = mixflow.fit(model, crabs[["lower", "upper"]], weights=crabs["count"], method="map", random_seed=0)
    assert tree["em/estimate"]["variance"].dims == ()
    assert tree["em"].attrs["n_parameters"] == 4
    prior = json.loads(tree["em"].attrs["prior"])
    assert prior["scale"] == [[1e-4]] and prior["dof"] == 3.0
    assert np.isfinite(tree["em"].attrs["log_posterior"])
    assert mixflow.model_from_json(model.to_json()) == model
    # the shared variance is one number, labelled without an element index
    assert re.search(r"\nvariance +\d", mixflow.summary(tree, kind="text")) and "variance[]" not in mixflow.summary(
        tree, kind="text")


def test_a_fold_without_the_opened_class_does_not_say_the_limit_opens_none():
    # a cross-validation fold that holds out the one count of the last class has no class for open_above to open;
    # the fit on all rows has, and following the fold's advice (give 7.25) would open the wrong class
    classes = pd.DataFrame({"lower": np.arange(5.0, 7.75, 0.25), "upper": np.arange(5.25, 8.0, 0.25)})
    counts = np.array([23, 25, 14, 18, 14, 0, 71, 0, 1, 10, 1])
    model = GroupedGaussianMixture(1, open_below=5.25, open_above=7.5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mixflow.select_k(model, classes, ks=[1, 2], methods=("map",), weights=counts, random_seed=0, n_jobs=1)
    assert not [w for w in caught if "opens no class" in str(w.message)]
    with pytest.warns(mixflow.DeclarationWarning, match=r"^open_above: 7.5 opens no class"):  # the rows without it
        mixflow.fit(model, classes.iloc[:-1], weights=counts[:-1], method="map", random_seed=0)


def test_truncated_moments_of_a_class_trillions_of_sds_away_stay_finite():
    # a collapsed component (sd 1e-16) and a class 7e15 of its sds below: alpha^2 and the log mass round by more than
    # the ratios, which overflowed to NaN moments (a RuntimeWarning, and NaN sums despite a responsibility of 0)
    alpha, beta = np.array([-7.64e15, 7.5e15, -3.0]), np.array([-7.53e15, 7.6e15, 2.0])
    first, second = truncated_moments(alpha, beta, interval_log_probability(alpha, beta))
    assert np.isfinite(first).all() and np.isfinite(second).all()
    truncated = stats.truncnorm(-3.0, 2.0)
    np.testing.assert_allclose([first[2], second[2]], [truncated.mean(), truncated.moment(2)], rtol=1e-12)


def test_truncated_normal_helpers_against_scipy():
    alpha = np.array([-np.inf, -3.0, 0.5, 8.0, -40.0])
    beta = np.array([-1.0, 2.0, 0.6, 9.0, np.inf])
    log_mass = interval_log_probability(alpha, beta)
    reference = np.log(stats.norm.cdf(beta) - stats.norm.cdf(alpha))
    reference[3] = np.log(stats.norm.sf(8.0) - stats.norm.sf(9.0))  # the upper tail, where cdf loses all digits
    np.testing.assert_allclose(log_mass, reference, rtol=1e-12)
    first, second = truncated_moments(alpha, beta, log_mass)
    for j in range(alpha.size):
        truncated = stats.truncnorm(alpha[j], beta[j])
        assert first[j] == pytest.approx(truncated.mean(), rel=1e-9, abs=1e-12)
        assert second[j] == pytest.approx(truncated.moment(2), rel=1e-9)


def test_row_order_does_not_matter_and_subsets_keep_their_meaning(crabs_fit, crabs):
    shuffled = crabs.sample(frac=1.0, random_state=4).reset_index(drop=True)
    again = mixflow.fit(GroupedGaussianMixture(2, **OPEN), shuffled[["lower", "upper"]], weights=shuffled["count"],
                        init={name: estimate(crabs_fit)[name] for name in ("weights", "mu", "variance")}, tol=1e-14)
    # the same likelihood whatever the order (EM from the estimate moves on by at most 1e-8)
    np.testing.assert_allclose(estimate(again)["mu"], estimate(crabs_fit)["mu"], rtol=1e-7)
    assert again["em"].attrs["log_likelihood"] == pytest.approx(crabs_fit["em"].attrs["log_likelihood"], rel=1e-12)
    # predicting one class at a time gives the same responsibilities as predicting them all
    one_by_one = np.vstack([mixflow.predict_proba(crabs_fit, crabs.iloc[[j]][["lower", "upper"]]).values
                            for j in (0, 14, 28)])
    all_at_once = mixflow.predict_proba(crabs_fit, crabs[["lower", "upper"]]).values[[0, 14, 28]]
    np.testing.assert_allclose(one_by_one, all_at_once, rtol=1e-12)


def test_container_round_trip_and_prediction(crabs_fit, crabs, tmp_path):
    loaded = mixflow.load(mixflow.save(crabs_fit, tmp_path / "crabs.nc"))
    assert loaded["em/estimate"].to_dataset().identical(crabs_fit["em/estimate"].to_dataset())
    assert list(loaded["observed_data"]["feature"].values) == ["lower", "upper"]
    proba = mixflow.predict_proba(crabs_fit, crabs[["lower", "upper"]])
    np.testing.assert_allclose(proba.values, crabs_fit["em/responsibilities"]["responsibilities"].values,
                               rtol=1e-10)


def test_the_summary_and_the_report_call_the_two_columns_the_limits_of_one_variable_s_classes(
        crabs_fit, crabs, tmp_path, no_report_plots):
    assert "fitted to 'crabs': 29 rows, classes of one variable, its limits in ['lower', 'upper'], frequency " \
        "weights" in mixflow.summary(crabs_fit, kind="text")
    text = mixflow.report(crabs_fit, tmp_path / "crabs.html").read_text(encoding="utf-8")
    assert "29 rows, classes of one variable, its limits in [&#x27;lower&#x27;, &#x27;upper&#x27;]" in text
    assert "2 features" not in text
    # the Data card too: the columns are a class's limits, not two features; a column beside them is not read
    assert "<th>features</th>" not in text and "<th>columns</th>" in text
    beside = mixflow.fit(GroupedGaussianMixture(2, bounds=("lower", "upper")),
                         crabs[["lower", "upper"]].assign(note=1.0), weights=crabs["count"], random_seed=0)
    page = mixflow.report(beside, tmp_path / "beside.html").read_text(encoding="utf-8")
    assert ("classes of one variable, its limits in [&#x27;lower&#x27;, &#x27;upper&#x27;]; 1 column not read "
            "[&#x27;note&#x27;]") in page


def test_map_frees_a_component_onto_a_count_between_empty_classes():
    """Earthquake magnitudes (R's attenu) in classes of 0.25: 71 of 182 in [6.5, 6.75), empty classes either side. The
    MAP fit puts a narrow component on that class (log posterior -380.838); seeds 7 and 9 stopped at a fit of the
    low magnitudes against the rest (-420.266), from which no start from distances nor a move from the rows
    explained worst leads there: each class in turn is now freed onto."""
    classes = pd.DataFrame({"lower": np.arange(5.0, 7.75, 0.25), "upper": np.arange(5.25, 8.0, 0.25)})
    counts = [23, 25, 14, 18, 14, 0, 71, 0, 1, 10, 6]
    model = GroupedGaussianMixture(2, open_below=5.25, open_above=7.5)
    for seed in (7, 9):
        tree = mixflow.fit(model, classes, weights=counts, method="map", random_seed=seed)
        assert tree["em"].attrs["log_posterior"] == pytest.approx(-380.838194372, abs=1e-6)
        np.testing.assert_allclose(tree["em/estimate"]["mu"].values, [5.849, 6.625], atol=1e-3)


@pytest.mark.parametrize("classes, message", [
    (pd.DataFrame({"lower": [0.0, 1.0, 2.0], "upper": [1.0, 1.0, 3.0]}),
     r"data: expected each class's lower bound below its upper bound, got 1 row: \[1\] "
     r"\(values \[\[1.0, 1.0\]\]\)"),
    (pd.DataFrame({"a": [0.0, 1.0], "b": [1.0, 2.0], "c": [5.0, 6.0]}),
     r"data: expected the class limits in columns \['lower', 'upper'\] \(or exactly two columns, lower then "
     r"upper\), got columns \['a', 'b', 'c'\]"),
])
def test_bad_classes_are_refused(classes, message):
    with pytest.raises(ValueError, match=message):
        mixflow.fit(GroupedGaussianMixture(1), classes, weights=np.ones(len(classes)))


@pytest.mark.parametrize("kwargs, error, message", [
    ({"open_below": "low"}, ValueError, r"open_below: expected None or a finite class limit, got 'low'"),
    ({"open_below": 1.0, "open_above": 0.5}, ValueError,
     r"open_above: expected a limit above open_below = 1.0, got 0.5"),
    ({"likelihood": "exact"}, ValueError, r"likelihood: expected one of \['interval', 'midpoint'\], got 'exact'"),
    ({"bounds": ("lo", "lo")}, ValueError, r"bounds: expected two distinct column names \(lower, upper\)"),
    ({"bounds": "lower"}, ValueError, r"bounds: expected two distinct column names"),
    ({"common_variance": "yes"}, TypeError, r"common_variance: expected True or False, got 'yes'"),
    ({"prior": {"kappa": 1}}, ValueError, r"prior: unknown hyperparameter \['kappa'\]"),
])
def test_bad_declarations_are_refused(kwargs, error, message):
    with pytest.raises(error, match=message):
        GroupedGaussianMixture(2, **kwargs)


def test_bad_initial_parameters_are_refused(crabs):
    start = {"weights": [0.5, 0.5], "mu": [0.63, 0.66], "variance": [1e-4, -1e-4]}
    with pytest.raises(ValueError, match=r"init\['variance'\]: expected positive variances"):
        mixflow.fit(GroupedGaussianMixture(2), crabs[["lower", "upper"]], weights=crabs["count"], init=start)
    with pytest.raises(ValueError, match=r"init\['variance'\]: expected shape \(\), got \(2,\)"):
        mixflow.fit(GroupedGaussianMixture(2, common_variance=True), crabs[["lower", "upper"]],
                    weights=crabs["count"], init={**start, "variance": [1e-4, 1e-4]})


def test_workflow_file_validates_with_both_likelihoods(tmp_path):
    from pathlib import Path

    from mixflow.workflow.config import WorkflowError, read_workflow

    shipped = read_workflow(Path(__file__).parents[1] / "workflows" / "crabs.toml")
    assert [spec.label for spec in shipped.models] == ["grouped_gaussian-interval-k1-2",
                                                       "grouped_gaussian-midpoint-k1-2"]
    assert shipped.models[0].model(2) == GroupedGaussianMixture(2, **OPEN)
    assert shipped.models[1].model(2) == GroupedGaussianMixture(2, likelihood="midpoint", **OPEN)
    assert shipped.weights == "count" and shipped.columns == ("lower", "upper")
    text = ('name = "c"\nseed = 1\n[data]\ndataset = "crabs"\ncolumns = ["lower", "upper"]\nweights = "count"\n'
            '[[models]]\nfamily = "grouped_gaussian"\nn_components = 2\nopen_below = "left"\n[methods.em]\n')
    (tmp_path / "bad.toml").write_text(text)
    # the model's message in the workflow's words: TOML has no None (a key left out) and writes true, not True
    with pytest.raises(WorkflowError, match=r"bad.toml:10: \[\[models\]\] #1: open_below: expected nothing \(the key "
                                            r"left out\) or a finite class limit, got 'left'$"):
        read_workflow(tmp_path / "bad.toml")
    from mixflow.workflow.config import _in_toml_words

    # an apostrophe is no quote: the literals after it are said in TOML's words too
    assert _in_toml_words("the model's prior expects None here, got True; use 'True'") == (
        "the model's prior expects nothing (the key left out) here, got true; use 'True'")
    (tmp_path / "bad.toml").write_text(text.replace('open_below = "left"', "open_below = true"))
    with pytest.raises(WorkflowError, match=r"open_below: expected nothing \(the key left out\) or a finite class "
                                            r"limit, got true$"):
        read_workflow(tmp_path / "bad.toml")


def test_a_column_beside_the_class_limits_is_not_read(crabs_fit, crabs):
    """A bookkeeping column beside the named class limits (constant here) raises no constant-feature warning, does
    not change the fit, and new classes need only their limits."""
    import warnings

    from mixflow.warnings import ConstantFeatureWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tree = mixflow.fit(GroupedGaussianMixture(2, **OPEN), crabs[["lower", "upper"]].assign(site=1.0),
                           weights=crabs["count"], random_seed=1, n_init=2, tol=1e-14, max_iter=10000)
    assert not [w for w in caught if issubclass(w.category, ConstantFeatureWarning)]
    assert tree["em"].attrs["log_likelihood"] == pytest.approx(crabs_fit["em"].attrs["log_likelihood"], rel=1e-12)
    np.testing.assert_array_equal(mixflow.predict(tree, crabs[["lower", "upper"]]).values,
                                  mixflow.predict(crabs_fit, crabs[["lower", "upper"]]).values)


def _seven_classes() -> tuple[pd.DataFrame, np.ndarray]:
    """Seven closed classes of unequal widths, from 100 to 2600, and their counts."""
    edges = np.array([100, 300, 500, 800, 1000, 1300, 1700, 2600.0])
    return pd.DataFrame({"lower": edges[:-1], "upper": edges[1:]}), np.array([10, 40, 30, 12, 8, 3, 2.0])


def test_an_end_limit_that_opens_several_classes_or_none_is_warned_of():
    # open_above given as a threshold (800) below the last class's own lower limit (1700) opened four classes, each
    # to +infinity over the others, and the fit (a second mean of 2363 instead of 1004) said nothing. What is said of
    # the limits comes from the classes before any fitting: a short fit from one k-means start serves where the fit
    # itself is not checked
    import warnings

    classes, counts = _seven_classes()
    quick = {"init": "kmeans", "n_init": 1, "max_iter": 100}
    with pytest.warns(mixflow.MixflowWarning, match=r"^open_above: 800 opens 4 classes of different limits \[800\.0, "
                                                   r"1000\.0, 1300\.0, 1700\.0\], each then reaching \+infinity over "
                                                   r"the others; to open only the last class \(as mixdist does\), give "
                                                   r"its lower limit, 1700$"):
        mixflow.fit(GroupedGaussianMixture(2, open_above=800), classes, weights=counts, random_seed=0, **quick)
    with pytest.warns(mixflow.MixflowWarning, match=r"^open_below: 500 opens 2 classes .*give its upper limit, 300$"):
        mixflow.fit(GroupedGaussianMixture(2, open_below=500), classes, weights=counts, random_seed=0, **quick)
    with warnings.catch_warnings():  # the end classes' own limits, and an empty class past the limit: no warning
        warnings.filterwarnings("error", message="open_")
        mixflow.fit(GroupedGaussianMixture(2, open_below=300, open_above=1700), classes, weights=counts,
                    random_seed=0, **quick)
        mixflow.fit(GroupedGaussianMixture(2, open_above=1300), classes, weights=np.array([10, 40, 30, 12, 8, 0, 2.0]),
                    random_seed=0)
    with warnings.catch_warnings():  # the end classes opened are empty (a histogram's): harmless, nothing said
        warnings.filterwarnings("error", message="open_")
        mixflow.fit(GroupedGaussianMixture(2, open_below=300, open_above=1700), classes,
                    weights=np.array([0, 40, 30, 12, 8, 3, 0.0]), random_seed=0, **quick)
    # open_above beyond the last class's lower limit opened nothing: the fit was the closed classes', unsaid
    with pytest.warns(mixflow.MixflowWarning, match=r"^open_above: 1800 opens no class: every class's lower limit is "
                                                   r"below it, so the classes are fitted as if open_above were not "
                                                   r"given; to open the last class \(as mixdist does\), give its lower "
                                                   r"limit, 1700$"):
        opened_none = mixflow.fit(GroupedGaussianMixture(2, open_above=1800), classes, weights=counts, random_seed=0)
    closed = mixflow.fit(GroupedGaussianMixture(2), classes, weights=counts, random_seed=0)
    assert opened_none["em"].attrs["log_likelihood"] == closed["em"].attrs["log_likelihood"]
    with pytest.warns(mixflow.MixflowWarning, match=r"^open_below: 250 opens no class: .*give its upper limit, 300$"):
        mixflow.fit(GroupedGaussianMixture(2, open_below=250), classes, weights=counts, random_seed=0)


def test_infinite_class_limits_are_refused_with_the_way_to_open_a_class():
    classes = pd.DataFrame({"lower": [-np.inf, 6.0, 8.0], "upper": [6.0, 8.0, np.inf]})
    with pytest.raises(ValueError, match=r"^data: expected finite values, got NaN or infinite values in 2 rows: "
                                         r"\[0, 2\] \(columns \['lower', 'upper'\]\); an end class open to infinity "
                                         r"is given by its finite limit and declared open: "
                                         r"GroupedGaussianMixture\(\.\.\., open_below=<the first "
                                         r"class's upper limit>, open_above=<the last class's lower limit>\)$"):
        mixflow.fit(GroupedGaussianMixture(2), classes, weights=[10, 20, 30])
    # a NaN: no class to open
    with pytest.raises(ValueError, match=r"NaN or infinite values in 1 row: \[1\] \(column \['lower'\]\)$"):
        mixflow.fit(GroupedGaussianMixture(2), classes.assign(lower=[1.0, np.nan, 8.0], upper=[6.0, 8.0, 9.0]),
                    weights=[10, 20, 30])


def test_infinite_class_limits_in_a_workflow_are_refused_with_its_keys_to_open_a_class(tmp_path):
    # the workflow's refusal names the keys that open a class, and the file's data rows, counted from 1
    from mixflow.workflow.config import WorkflowError, read_workflow

    pd.DataFrame({"lower": [-np.inf, 6.0, 8.0], "upper": [6.0, 8.0, np.inf], "count": [10, 20, 30]}).to_csv(
        tmp_path / "classes.csv", index=False)
    (tmp_path / "flow.toml").write_text('name = "g"\nseed = 1\n[data]\npath = "classes.csv"\ncolumns = ["lower", '
                                        '"upper"]\nweights = "count"\n[[models]]\nfamily = "grouped_gaussian"\n'
                                        'n_components = 1\nbounds = ["lower", "upper"]\n[methods.em]\n')
    with pytest.raises(WorkflowError, match=r"infinite cells in 2 data rows: 1 \('lower'\), 3 \('upper'\) \(rows "
                                            r"counted from 1 after the header\); an end class open to "
                                            r"infinity is given by its finite limit and declared open, in "
                                            r"\[\[models\]\]: open_below = <the first class's upper limit>, "
                                            r"open_above = <the last class's lower limit>$"):
        read_workflow(tmp_path / "flow.toml")


def test_classes_without_weights_beside_an_unread_column_are_warned_of():
    # the counts left in a column: each class was fitted as one observation, without a word
    import warnings

    classes = pd.DataFrame({"lower": [3.0, 6, 8, 10, 12], "upper": [6.0, 8, 10, 12, 14],
                            "count": [16, 184, 225, 243, 180]})
    with pytest.warns(mixflow.MixflowWarning, match=r"^weights: none given, so each of the 5 classes counts as one "
                                                   r"observation, and column \['count'\] beside the class limits is "
                                                   r"not read; if a column holds the classes' counts, pass it as "
                                                   r"weights \(e\.g\. weights=data\['count'\]\)$"):
        mixflow.fit(GroupedGaussianMixture(1), classes, random_seed=0)
    # the example names the column that looks like counts (whole numbers, a name that says so), not the first
    with pytest.warns(mixflow.MixflowWarning, match=r"columns \['midpoint', 'n_fish'\] .* weights=data\['n_fish'\]"):
        mixflow.fit(GroupedGaussianMixture(1), classes.rename(columns={"count": "n_fish"}).assign(
            midpoint=lambda frame: (frame["lower"] + frame["upper"]) / 2)[["lower", "upper", "midpoint", "n_fish"]],
            random_seed=0)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="weights: none given")
        mixflow.fit(GroupedGaussianMixture(1), classes, weights=classes["count"], random_seed=0)


def test_a_histogram_s_classes_alone_without_counts_are_warned_of():
    # five classes, each given once, none overlapping: a histogram whose counts were left out was fitted as five
    # observations without a word; rows of single observations repeat their class, and overlapping classes are
    # single observations' own intervals: neither is warned of
    import warnings

    classes = pd.DataFrame({"lower": [8.0, 3, 6, 10, 12], "upper": [10.0, 6, 8, 12, 14]})  # in any order
    with pytest.warns(mixflow.MixflowWarning, match=r"^weights: none given, so each of the 5 classes counts as one "
                                                   r"observation; each class is given once and none overlaps "
                                                   r"another, as a histogram's classes are: if the classes have "
                                                   r"counts, pass them as weights \(weights=counts; in a workflow, "
                                                   r"\[data\] weights = \"<the counts' column>\"\); if each row is "
                                                   r"one observation, say so with weights=np\.ones\(n\)$"):
        mixflow.fit(GroupedGaussianMixture(1), classes, random_seed=0)
    # upper limits from sums of widths, lower ones as written: 0.30000000000000004 ends a class, 0.3 starts one
    rounded = pd.DataFrame({"lower": np.arange(7) / 10, "upper": np.cumsum([0.1] * 7)})
    assert (rounded["upper"].to_numpy()[:-1] > rounded["lower"].to_numpy()[1:]).any()
    with pytest.warns(mixflow.MixflowWarning, match=r"^weights: none given, so each of the 7 classes"):
        mixflow.fit(GroupedGaussianMixture(1), rounded, random_seed=0)
    observations = classes.loc[[0, 1, 1, 2, 3, 3, 3, 4, 0]]
    overlapping = pd.DataFrame({"lower": [3.0, 5, 6, 9, 12], "upper": [6.0, 8, 10, 12, 14]})
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="weights: none given")
        mixflow.fit(GroupedGaussianMixture(1), observations, random_seed=0)
        mixflow.fit(GroupedGaussianMixture(1), overlapping, random_seed=0)
        mixflow.fit(GroupedGaussianMixture(1), classes, weights=[16, 184, 225, 243, 180], random_seed=0)
    # said once, at the caller's line; scoring the classes again (a bootstrap's replicates) says nothing more
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tree = mixflow.fit(GroupedGaussianMixture(1), classes, random_seed=0)
        mixflow.bootstrap(tree, n_replicates=3, random_seed=0, n_jobs=1)
    said = [w for w in caught if str(w.message).startswith("weights: none given")]
    assert len(said) == 1 and said[0].filename == __file__


def test_fewer_classes_than_the_parameters_need_are_warned_of_for_the_mle():
    # one class, or five parameters on four classes: the fits came back converged, without a word
    import warnings

    classes = pd.DataFrame({"lower": [0.0, 1.0, 2.0, 3.0], "upper": [1.0, 2.0, 3.0, 4.0]})
    model = GroupedGaussianMixture(2, open_below=1.0, open_above=3.0)
    with pytest.warns(mixflow.DegenerateComponentWarning,
                      match=r"^data: 4 classes with counts give 3 free class probabilities, fewer than the 5 "
                            r"parameters of 2 components, so they have no unique maximum-likelihood estimate .* use "
                            r"method='map' \(the prior keeps the estimate unique\), fewer components, "
                            r"common_variance=True or finer classes$"):
        mixflow.fit(model, classes, weights=[20, 50, 30, 40], random_seed=1)
    with pytest.warns(mixflow.DegenerateComponentWarning, match=r"^data: 1 class with counts gives 0 free class "
                                                                r"probabilities, fewer than the 2 parameters of 1 "
                                                                r"component, .*use method='map' \(the prior keeps "
                                                                r"the estimate unique\) or finer classes$"):
        mixflow.fit(GroupedGaussianMixture(1), classes.iloc[:1], weights=[50], random_seed=1)
    six = pd.DataFrame({"lower": np.arange(6.0), "upper": np.arange(1.0, 7.0)})
    with pytest.warns(mixflow.DegenerateComponentWarning, match=r"^data: 4 classes with counts give 3 free class "
                                                                r"probabilities, fewer than the 4 parameters"):
        mixflow.fit(GroupedGaussianMixture(2, common_variance=True), six, weights=[20, 50, 0, 30, 40, 0],
                    random_seed=1)  # classes without counts give no probability to match
    with warnings.catch_warnings():  # enough classes, or the MAP: nothing said
        warnings.filterwarnings("error", message="data: .* free class probabilit")
        mixflow.fit(GroupedGaussianMixture(2, common_variance=True), six, weights=[20, 50, 0, 30, 40, 10],
                    random_seed=1)
        mixflow.fit(model, classes, weights=[20, 50, 30, 40], method="map", random_seed=1)


def test_a_component_within_two_classes_is_said_to_be_undetermined():
    # K=3 on two groups: the third component sank onto the class boundary at 16, its variance creeping to zero
    # (0.084, 0.061, 0.051 after 1000, 10000, 100000 iterations) with no word but "did not converge". k-means
    # starts reach that ridge as the default portfolio does; its local search after them is not what is checked
    import warnings

    rng = np.random.default_rng(3)
    x = np.where(rng.random(1500) < 0.4, rng.normal(10, 2, 1500), rng.normal(18, 3, 1500))
    edges = np.array([3, 6, 8, 9, 10, 11, 12, 14, 16, 17, 18, 19, 20, 22, 25, 28.0])
    counts = np.histogram(np.clip(x, 3, 27.9), edges)[0]
    classes = pd.DataFrame({"lower": edges[:-1], "upper": edges[1:]})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tree = mixflow.fit(GroupedGaussianMixture(3, open_below=6, open_above=25), classes, weights=counts,
                           random_seed=1, max_iter=1000, init="kmeans")
    said = [str(w.message) for w in caught if issubclass(w.category, mixflow.DegenerateComponentWarning)]
    unsettled = [str(w.message) for w in caught if issubclass(w.category, mixflow.ConvergenceWarning)]
    assert len(unsettled) == 1 and unsettled[0].endswith(  # not "increase max_iter"
        "; more iterations do not settle it, since a component's estimate lies on a ridge of the likelihood (said in "
        "the next warning).")
    mu = tree["em/estimate"]["mu"].values[1]
    assert 15.9 < mu < 16.0 and tree["em/estimate"]["variance"].values[1] < 0.1
    sd = np.sqrt(tree["em/estimate"]["variance"].values[1])  # on the ridge: where the iterations stopped
    assert len(said) == 1 and said[0].startswith(f"component 1 (mean {mu:.6g}, sd {sd:.3g}) has its probability "
                                                 "within the classes [14, 16) and [16, 17), and the classes around "
                                                 "hold no count it explains: the classes cannot determine both its "
                                                 "mean and its variance")
    single = (r"^component 0 .* within the class \[16, 17\), and the classes around hold no count it explains: .*"
              r"use method='map' \(the prior keeps the variance from zero\) or finer classes$")  # K=1: no fewer
    with pytest.warns(mixflow.DegenerateComponentWarning, match=single):
        mixflow.fit(GroupedGaussianMixture(1), classes.iloc[7:10], weights=[0, 100, 0], random_seed=1)
    with warnings.catch_warnings():  # two components, or the MAP: each spread over many classes, nothing said
        warnings.filterwarnings("error", message="component .* has its probability within")
        mixflow.fit(GroupedGaussianMixture(2, open_below=6, open_above=25), classes, weights=counts, random_seed=1)
        mixflow.fit(GroupedGaussianMixture(3, open_below=6, open_above=25), classes, weights=counts, random_seed=1,
                    method="map", max_iter=1000)


def test_a_narrow_component_whose_tails_explain_counts_around_its_class_is_a_maximum():
    # counts 1 | 99999 | 1: the counts either side of the class decide the variance, and the likelihood falls both
    # ways from the estimate (a direct maximisation of the interval likelihood: sd 0.117236, log-likelihood
    # -25.025851); the fit was said to be on a ridge where the likelihood rises as the variance shrinks
    import warnings

    from scipy.optimize import minimize
    from scipy.stats import norm

    def log_likelihood(mu, sd):
        classes = [(9, 10, 1), (10, 11, 99999), (11, 12, 1)]
        return sum(n * np.log(norm.cdf(high, mu, sd) - norm.cdf(low, mu, sd)) for low, high, n in classes)

    best = minimize(lambda t: -log_likelihood(t[0], np.exp(t[1])), [10.4, np.log(0.2)], method="Nelder-Mead",
                    options={"xatol": 1e-12, "fatol": 1e-12})
    edges = np.arange(3.0, 25.01, 1.0)
    counts = np.zeros(edges.size - 1)
    counts[6:9] = [1, 99999, 1]
    classes = pd.DataFrame({"lower": edges[:-1], "upper": edges[1:]})
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="component .* has its probability within")
        tree = mixflow.fit(GroupedGaussianMixture(1), classes, weights=counts, random_seed=1)
        # beside a broad group: the narrow one's few counts either side still decide its variance
        two = counts.copy()
        two[13:21] = [40, 110, 180, 220, 200, 140, 70, 40]
        two[6:9] = [3, 9990, 7]
        mixflow.fit(GroupedGaussianMixture(2), classes, weights=two, random_seed=1)
    estimate = tree["em/estimate"]
    assert estimate["mu"].values[0] == pytest.approx(best.x[0], abs=1e-7)
    assert np.sqrt(estimate["variance"].values[0]) == pytest.approx(np.exp(best.x[1]), rel=1e-6)
    assert tree["em"].attrs["log_likelihood"] == pytest.approx(-best.fun, abs=1e-8)


@pytest.mark.parametrize("scale", [1.0, 1e-150, 1e150])
@pytest.mark.parametrize("chunked", [False, True])
def test_counts_in_one_class_beside_empty_ones_fit_at_every_scale(scale, chunked):
    # the count-weighted midpoints had no spread, so their rounding set the working unit and put the empty
    # classes' limits at 1e14 units: EM's objective was NaN and the fit refused the data (Dask data too)
    import warnings

    import dask.array as da

    classes = pd.DataFrame({"lower": [14.0, 16, 17], "upper": [16.0, 17, 18]}) * scale
    counts = np.array([0, 100, 0.0])
    data, weights = ((da.from_array(classes.to_numpy(), chunks=2), da.from_array(counts, chunks=2)) if chunked
                     else (classes, counts))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixflow.DegenerateComponentWarning)  # one class: said, and tested above
        tree = mixflow.fit(GroupedGaussianMixture(1), data, weights=weights, random_seed=1)
    assert tree["em/estimate"]["mu"].values[0] == pytest.approx(16.5 * scale, rel=1e-12)
    assert tree["em"].attrs["log_likelihood"] == pytest.approx(0.0, abs=1e-9)  # every count in its one class


def test_a_map_fit_whose_component_empties_is_not_told_to_use_the_map():
    # K=3 on four classes by MAP: a component's weight falls to nothing; the advice was "use fewer components,
    # method='map', or trim=..." to a fit that is one
    import warnings

    classes = pd.DataFrame({"lower": [0.0, 1, 2, 3], "upper": [1.0, 2, 3, 4]})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mixflow.fit(GroupedGaussianMixture(3), classes, weights=[5.0, 20, 22, 3], method="map", random_seed=1)
    said = [str(w.message) for w in caught if issubclass(w.category, mixflow.DegenerateComponentWarning)]
    assert len(said) == 1 and said[0].startswith("a component's weight fell below half an observation's worth")
    assert said[0].endswith("in every restart; use fewer components, or trim=... to drop it.")
