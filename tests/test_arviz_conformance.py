"""Every method's subtree is an ArviZ DataTree: ArviZ 1.x reads it without arguments, fresh and after a
save/load, for every family (issue: ArviZ-native results)."""

import warnings

import arviz as az
import matplotlib
import numpy as np
import pytest

import mixflow

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

pytestmark = pytest.mark.slow

# few draws and ADVI iterations: the tests check what ArviZ reads of the container, not the fits themselves
SMALL = {"draws": 60, "tune": 60, "chains": 2, "n": 500}
# NUTS by the default sampler (nutpie), and by PyMC's, whose sampler statistics differ, for one family (the one
# whose model PyMC's sampler compiles for other tests too)
SAMPLERS = {"gaussian": "pymc"}


def _family_cases():
    faithful = mixflow.load_dataset("faithful")
    deaths = mixflow.load_dataset("london_deaths")
    tone = mixflow.load_dataset("tone")
    crabs = mixflow.load_dataset("crabs")
    return {
        "gaussian": (mixflow.GaussianMixture(2), faithful, None),
        "poisson": (mixflow.PoissonMixture(2), deaths[["deaths"]], deaths["days"]),
        "regression": (mixflow.RegressionMixture(2, "tuned ~ stretchratio"), tone[["stretchratio", "tuned"]], None),
        "grouped": (mixflow.GroupedGaussianMixture(2, bounds=("lower", "upper")), crabs[["lower", "upper"]],
                    crabs["count"]),
        "soft_kmeans": (mixflow.SoftKMeans(2, 0.5), faithful / faithful.std(), None),
    }


@pytest.fixture(scope="module", params=list(_family_cases()))
def trees(request, tmp_path_factory):
    model, data, weights = _family_cases()[request.param]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tree = mixflow.fit(model, data, weights=weights, method=["map", "mcmc", "advi"], random_seed=3,
                           sampler=SAMPLERS.get(request.param, "auto"), **SMALL)
        tree = mixflow.bootstrap(tree, n_replicates=8, random_seed=3, n_jobs=1)
    path = mixflow.save(tree, tmp_path_factory.mktemp(request.param) / "fit.nc")
    # LOO-PIT needs one scalar observation per log-likelihood term: not a multivariate row (one joint
    # density; a regression's replicate holds its covariates too), nor weighted rows (the predictive draws
    # replicate frequency units, the log-likelihood rows)
    scalar_rows = weights is None and data.shape[1] == 1
    return {"fresh": tree, "loaded": mixflow.load(path), "scalar_rows": scalar_rows, "family": request.param}


SUBTREES = {"mcmc": "mcmc", "advi": "advi", "bootstrap": "em/bootstrap"}


@pytest.mark.parametrize("state", ["fresh", "loaded"])
@pytest.mark.parametrize("method", list(SUBTREES))
def test_statistics_and_extract(trees, state, method):
    subtree = trees[state][SUBTREES[method]]
    summary = az.summary(subtree)
    names = set(subtree["posterior"].data_vars)
    assert {label.split("[")[0] for label in summary.index} == names
    for function in (az.ess, az.rhat, az.mcse):
        assert set(function(subtree).data_vars) == names
    extracted = az.extract(subtree)
    assert extracted.sizes["sample"] == subtree["posterior"].sizes["chain"] * subtree["posterior"].sizes["draw"]


# plots read the saved container: what a load gives back (attribute types included) is what they see
@pytest.mark.parametrize("method", list(SUBTREES))
def test_plots_that_need_only_draws(trees, method):
    subtree = trees["loaded"][SUBTREES[method]]
    first = next(iter(subtree["posterior"].data_vars))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        az.plot_forest(subtree)
        az.plot_trace_dist(subtree)
        az.plot_dist(subtree)
        az.plot_pair(subtree, var_names=[first])  # all pairs of every element exceed ArviZ's subplot limit
        if subtree["posterior"].sizes["chain"] > 1:
            az.plot_rank(subtree)
    plt.close("all")


@pytest.mark.parametrize("method", ["mcmc", "advi"])
def test_loo_and_predictive_checks(trees, method):
    subtree = trees["loaded"][method]
    loo = az.loo(subtree)
    assert np.isfinite(loo.elpd)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        az.plot_ppc_dist(subtree)
        if trees["scalar_rows"]:
            az.plot_loo_pit(subtree)
        if method == "mcmc":
            az.plot_energy(subtree)
        if trees["family"] == "poisson":  # counts stay integers, so ArviZ treats them as discrete
            assert subtree["observed_data"]["x"].dtype == subtree["posterior_predictive"]["x"].dtype == np.int64
            az.plot_ppc_rootogram(subtree, coords={"feature": "deaths"})
        if trees["family"] == "grouped":  # the classes' counts, observed and replicated, are whole numbers too
            assert subtree["observed_data"]["weights"].dtype == subtree["posterior_predictive"]["weights"].dtype \
                == np.int64
            az.plot_ppc_rootogram(subtree)
    plt.close("all")


def test_compare_and_forest_across_methods(trees):
    tree = trees["loaded"]
    table = az.compare({"mcmc": tree["mcmc"], "advi": tree["advi"]})
    assert set(table.index) == {"mcmc", "advi"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        az.plot_forest({name: tree[path] for name, path in SUBTREES.items()})
    plt.close("all")


def test_sample_dims_is_a_list_after_load(trees):
    for method in ("mcmc",):
        attrs = trees["loaded"][f"{method}/posterior"].attrs
        assert attrs.get("sample_dims") in (None, ["chain", "draw"])


def test_loo_metrics_of_one_feature_data_after_the_readme_s_squeeze():
    # arviz_stats' loo_metrics takes one value per row; the README's recipe drops the size-1 feature dimension
    rng = np.random.default_rng(1)
    counts = np.concatenate([rng.poisson(2, 150), rng.poisson(9, 100)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tree = mixflow.fit(mixflow.PoissonMixture(2), counts, method="advi", random_seed=1, draws=100, n=1500)
    one = tree["advi"].map_over_datasets(lambda ds: ds.squeeze("feature", drop=True) if "feature" in ds.dims else ds)
    metrics = az.loo_metrics(one)
    assert np.isfinite(metrics.mean) and 3.0 < metrics.mean < 6.0  # about the counts' own sd, 4.1
    assert az.loo_pit(one)["x"].shape == (counts.size,)
