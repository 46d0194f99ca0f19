"""MCMC and ADVI for grouped data (class counts) and soft k-means: same container, truth inside intervals."""

import numpy as np
import pytest
from posterior_checks import assert_chains_agree, assert_width
from scipy import stats
from test_container import assert_trees_identical

import mixflow
from mixflow.data import validate_data
from mixflow.engines.mcmc import fit_mcmc

OPEN = {"open_below": 0.5835, "open_above": 0.6915}
QUIET = {"progressbar": False, "sampler": "pymc"}  # pinned: the draws do not depend on nutpie being installed
TRUTH = {"weights": np.array([0.35, 0.65]), "mu": np.array([10.0, 13.0]), "variance": np.array([1.0, 2.25])}


def _estimate(tree, group="em/estimate"):
    return {name: tree[group][name].values for name in tree[group].data_vars}


def _interval(tree, method, probability):
    posterior = tree[f"{method}/posterior"].to_dataset()
    tail = (1.0 - probability) / 2.0
    return posterior.quantile(tail, dim=("chain", "draw")), posterior.quantile(1.0 - tail, dim=("chain", "draw"))


def expected_class_counts(truth: dict, edges: np.ndarray, total: int) -> np.ndarray:
    """Class counts of ``total`` values from the truth, each class at its expected count (rounded).

    The "exact-moment" data of binned observations: the grouped MLE sits (up to rounding) at the truth,
    so the posterior is centred there and the truth's position in the intervals does not depend on luck.
    """
    cdf = sum(w * stats.norm.cdf(edges, m, np.sqrt(v))
              for w, m, v in zip(truth["weights"], truth["mu"], truth["variance"], strict=True))
    cdf[0], cdf[-1] = 0.0, 1.0  # the end classes are open
    return np.round(total * np.diff(cdf))


@pytest.fixture(scope="module")
def crabs():
    return mixflow.load_dataset("crabs")


@pytest.fixture(scope="module")
def crabs_all(crabs):
    return mixflow.fit(mixflow.GroupedGaussianMixture(2, **OPEN), crabs[["lower", "upper"]], weights=crabs["count"],
                       method=["map", "mcmc", "advi"], random_seed=5, draws=500, chains=2, **QUIET)


@pytest.mark.slow
def test_crabs_by_all_three_methods_share_one_container(crabs_all, crabs, tmp_path):
    for method in ("mcmc", "advi"):
        posterior = crabs_all[f"{method}/posterior"]
        for name, value in crabs_all["em/estimate"].data_vars.items():
            assert posterior[name].dims[2:] == value.dims, (method, name)
    replicated = crabs_all["mcmc/posterior_predictive"]["weights"]
    assert replicated.dims == ("chain", "draw", "obs")
    np.testing.assert_array_equal(replicated.sum("obs").values, crabs["count"].sum())  # counts of 1000 crabs
    assert crabs_all["mcmc/log_likelihood"]["x"].dims == ("chain", "draw", "obs")
    table = mixflow.compare(crabs_all)
    assert set(table["method"]) == {"em", "mcmc", "advi"}
    mixflow.save(crabs_all, tmp_path / "crabs.nc")
    assert_trees_identical(crabs_all, mixflow.load(tmp_path / "crabs.nc"))
    figure = mixflow.plot_ppc(crabs_all, method="mcmc")
    assert figure.axes


@pytest.mark.slow
def test_crabs_map_inside_the_nuts_intervals_and_advi_centred_near_nuts(crabs_all):
    """The posterior mode (EM MAP) lies inside the central 89% of the NUTS draws; ADVI's mean is within one
    NUTS sd of NUTS's (mean-field q is much narrower than the posterior here: the crabs' two components
    overlap, so weights, means and variances are strongly correlated, which q cannot represent)."""
    estimate = _estimate(crabs_all)
    low, high = _interval(crabs_all, "mcmc", 0.89)
    for name, value in estimate.items():
        assert np.all((low[name].values <= value) & (value <= high[name].values)), name
    # (no width check here: the two crabs components overlap, the posterior of the weights is far from normal,
    # sd 0.14 against a Laplace 0.25; the binned simulation below checks the family's widths)
    nuts = crabs_all["mcmc/posterior"].to_dataset()
    advi = crabs_all["advi/posterior"].to_dataset()
    for name in estimate:
        distance = (advi[name].mean(("chain", "draw")) - nuts[name].mean(("chain", "draw"))) / nuts[name].std(
            ("chain", "draw"))
        assert np.all(np.abs(distance.values) < 1.0), name


@pytest.mark.slow
def test_binned_simulation_truth_inside_94_percent_intervals():
    edges = np.arange(6.0, 18.01, 0.5)
    counts = expected_class_counts(TRUTH, edges, 1500)
    classes = np.column_stack([edges[:-1], edges[1:]])
    model = mixflow.GroupedGaussianMixture(2, open_below=edges[1], open_above=edges[-2])
    tree = mixflow.fit(model, classes, weights=counts, method=["map", "mcmc"], random_seed=2, draws=500,
                       chains=2, posterior_predictive=False, **QUIET)
    low, high = _interval(tree, "mcmc", 0.94)
    for name, value in TRUTH.items():
        assert np.all((low[name].values <= value) & (value <= high[name].values)), (name, low[name].values,
                                                                                   high[name].values)
    # the components overlap (means 3 sds of the first apart) and the posterior is wider than the curvature at
    # the MAP says (mixflow's standard errors equal a finite-difference Hessian's): posterior sd / standard error
    # 1.05 to 1.22 over seeds 0-6 and the parameters with these draws (a mean near 1.12); 1.204 on one CI run
    assert_width(tree, "mcmc", rtol=0.3)
    assert_chains_agree(tree)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::mixflow.SamplingWarning")  # 60 draws: only reproducibility is checked
def test_same_seed_same_draws(crabs):
    model = mixflow.GroupedGaussianMixture(2, likelihood="midpoint")
    data = validate_data(crabs[["lower", "upper"]], weights=crabs["count"])
    tree = mixflow.fit(model, crabs[["lower", "upper"]], weights=crabs["count"], method="map", random_seed=0)
    reference = _estimate(tree)
    runs = [fit_mcmc(model, data, reference, draws=60, tune=60, chains=2, random_seed=9, **QUIET)
            for _ in range(2)]
    for group in ("posterior", "posterior_predictive"):
        for name, (_, value) in runs[0]["groups"][group]["variables"].items():
            np.testing.assert_array_equal(value, runs[1]["groups"][group]["variables"][name][1], err_msg=name)


@pytest.fixture(scope="module")
def soft_kmeans_truth():
    """Points whose components have exactly the true means and proportions (the variance is fixed)."""
    rng = np.random.default_rng(8)
    means, sizes = np.array([[0.0, 0.0], [4.0, 1.0]]), (90, 150)
    x = np.concatenate([m + (z - z.mean(axis=0)) for m, z in
                        zip(means, (rng.normal(0.0, 1.5, (n, 2)) for n in sizes), strict=True)])
    return x, {"weights": np.array(sizes) / sum(sizes), "mu": means}


@pytest.mark.slow
def test_soft_kmeans_by_mcmc_and_advi(soft_kmeans_truth, tmp_path):
    x, truth = soft_kmeans_truth
    tree = mixflow.fit(mixflow.SoftKMeans(2, 2.25), x, method=["map", "mcmc", "advi"], random_seed=4, draws=500,
                       chains=2, **QUIET)
    assert tree["mcmc/posterior_predictive"]["x"].dims == ("chain", "draw", "obs", "feature")
    for method in ("mcmc", "advi"):
        low, high = _interval(tree, method, 0.94)
        for name, value in truth.items():
            assert np.all((low[name].values <= value) & (value <= high[name].values)), (method, name)
    assert_width(tree, "mcmc")
    assert_chains_agree(tree)
    assert len(mixflow.compare(tree)) == 3 * (2 + 4)
    mixflow.save(tree, tmp_path / "soft.nc")
    assert_trees_identical(tree, mixflow.load(tmp_path / "soft.nc"))


def test_grouped_replicate_counts_units_into_the_observed_classes(crabs):
    model = mixflow.GroupedGaussianMixture(2, **OPEN)
    data = validate_data(crabs[["lower", "upper"]], weights=crabs["count"])
    params = {"weights": np.array([0.4, 0.6]), "mu": np.array([0.63, 0.655]), "variance": np.array([3e-4, 1.6e-4])}
    replicates = np.array([model.simulate(params, data, np.random.default_rng(s)) for s in range(400)])
    assert replicates.shape == (400, 29)
    np.testing.assert_array_equal(replicates.sum(axis=1), 1000.0)
    lower, upper = crabs["lower"].to_numpy().copy(), crabs["upper"].to_numpy().copy()
    lower[0], upper[-1] = -np.inf, np.inf
    probability = sum(w * (stats.norm.cdf(upper, m, np.sqrt(v)) - stats.norm.cdf(lower, m, np.sqrt(v)))
                      for w, m, v in zip(params["weights"], params["mu"], params["variance"], strict=True))
    standard_error = np.sqrt(1000 * probability * (1 - probability) / 400)
    assert np.all(np.abs(replicates.mean(axis=0) - 1000 * probability) < 4.5 * standard_error + 1e-12)
    assert model.predictive_variable(data) == ("weights", ("obs",))
