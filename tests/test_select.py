"""Choice of K: information criteria, cross-validation and PSIS-LOO."""

import re
import warnings

import arviz_stats
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import stats

import mixflow
import mixflow.analysis.select
import mixflow.fitting
from mixflow.analysis.select import (
    SKIPPED_DEGENERATE,
    SKIPPED_FEW_ROWS,
    SKIPPED_SPURIOUS,
    cross_validated_log_likelihood,
    held_out_weights,
    loo_table,
    pointwise_log_density,
    preferred_k,
    select_k,
    skipped_k,
)
from mixflow.data import validate_data
from mixflow.families.base import few_rows_components
from mixflow.warnings import MixflowWarning, SamplingWarning


@pytest.fixture(scope="module")
def two_clusters():
    rng = np.random.default_rng(3)
    return np.concatenate([rng.normal(-3, 1, 45), rng.normal(3, 1, 45)])


@pytest.fixture(scope="module")
def table(two_clusters):
    return select_k(mixflow.GaussianMixture(1), two_clusters, ks=(1, 2, 3), methods=("em",), n_folds=3,
                    random_seed=5, fit_kwargs={"n_init": 2}, n_jobs=1)


def test_criteria_match_the_fits_and_prefer_the_true_k(table, two_clusters):
    assert list(table.index) == [1, 2, 3] and table.index.name == "k"
    n = two_clusters.size
    expected_bic = -2 * table["log_likelihood"] + table["n_parameters"] * np.log(n)
    np.testing.assert_allclose(table["bic"], expected_bic, rtol=1e-12)
    np.testing.assert_allclose(table["aic"], -2 * table["log_likelihood"] + 2 * table["n_parameters"], rtol=1e-12)
    assert list(table["n_parameters"]) == [2, 5, 8]
    assert table.attrs["preferred"]["bic"] == 2
    assert table.attrs["preferred"]["cv_log_likelihood"] in (2, 3)
    assert table.loc[2, "cv_log_likelihood"] > table.loc[1, "cv_log_likelihood"]
    assert table.attrs["random_seed"] == 5


def test_same_seed_same_table_whatever_the_number_of_workers(table, two_clusters, monkeypatch):
    monkeypatch.setattr("mixflow.analysis.select.IN_PROCESS_SECONDS", -1.0)  # K=2 and 3 on the workers, however quick
    again = select_k(mixflow.GaussianMixture(1), two_clusters, ks=(1, 2, 3), methods=("em",), n_folds=3,
                     random_seed=5, fit_kwargs={"n_init": 2}, n_jobs=2)
    assert again.equals(table)


@pytest.mark.parametrize("workers, ascending, client, n_tasks, expected", [
    (2, True, False, 5, ["here 1", "here 2", "here 3", "workers 4, 5 on 2"]),  # K=4 after 2.1 s here, and 3 s more
    (3, True, False, 5, ["here 1", "here 2", "here 3", "workers 4, 5 on 2"]),  # never more workers than K left
    (2, True, False, 4, ["here 1", "here 2", "here 3", "here 4"]),  # the last K alone on a worker would gain nothing
    (1, True, False, 5, ["here 1", "here 2", "here 3", "here 4", "here 5"]),
    (2, False, False, 5, ["workers 1, 2, 3, 4, 5 on 2"]),  # the first K is not the smallest: perhaps the costliest
    (2, True, True, 5, ["workers 1, 2, 3, 4, 5 on 2"]),  # an active dask.distributed client takes them all
])
def test_a_scan_of_k_fits_here_while_the_fits_are_quick_then_on_workers(monkeypatch, workers, ascending, client,
                                                                        n_tasks, expected):
    from mixflow.analysis import select

    seconds = iter(np.cumsum([0, 0.1, 0, 0.5, 0, 1.5, 0, 1.0, 0, 1.0]))  # each fit's start and end: 0.1, 0.5, 1.5 s...
    monkeypatch.setattr(select, "perf_counter", lambda: float(next(seconds)))
    monkeypatch.setattr(select, "IN_PROCESS_SECONDS", 3.0)
    monkeypatch.setattr(select, "_em_row", lambda k: f"here {k}")
    monkeypatch.setattr(select, "parallel_results",
                        lambda function, tasks, n: [f"workers {', '.join(str(k) for (k,) in tasks)} on {n}"])
    monkeypatch.setattr(select, "active_client", lambda: object() if client else None)
    assert list(select._em_rows([(k,) for k in range(1, n_tasks + 1)], workers, ascending)) == expected


def test_pointwise_log_density_against_scipy(two_clusters):
    model = mixflow.GaussianMixture(2)
    tree = mixflow.fit(model, two_clusters, random_seed=0, n_init=1)
    estimate = tree["em/estimate"].to_dataset()
    params = {name: estimate[name].values for name in estimate.data_vars}
    expected = np.log(sum(w * stats.norm.pdf(two_clusters, m[0], np.sqrt(c[0, 0]))
                          for w, m, c in zip(params["weights"], params["mu"], params["covariance"], strict=True)))
    np.testing.assert_allclose(pointwise_log_density(model, params, validate_data(two_clusters)), expected,
                               rtol=1e-10)


def test_cross_validation_holds_each_observation_out_once(two_clusters):
    model = mixflow.GaussianMixture(2)
    data = validate_data(two_clusters)
    total, se, pointwise = cross_validated_log_likelihood(model, data, n_folds=3, random_seed=1, n_init=1)
    assert total == pytest.approx(pointwise.sum())
    assert se == pytest.approx(np.sqrt(data.n_obs) * pointwise.std(ddof=1), rel=1e-12)
    # the fold of observation 0, refitted by hand, gives its held-out density
    order = np.random.default_rng(np.random.SeedSequence(1).spawn(4)[0]).permutation(data.n_obs)
    fold = next(i for i, part in enumerate(np.array_split(order, 3)) if 0 in part)
    held_out = np.array_split(order, 3)[fold]
    train = np.setdiff1d(order, held_out)
    seed = int(np.random.SeedSequence(1).spawn(4)[fold + 1].generate_state(1)[0])
    tree = mixflow.fit(model, two_clusters[train], random_seed=seed, n_init=1)
    estimate = tree["em/estimate"].to_dataset()
    params = {name: estimate[name].values for name in estimate.data_vars}
    assert pointwise[0] == pytest.approx(pointwise_log_density(model, params, validate_data(two_clusters[:1]))[0])


def test_frequency_weights_count_in_the_cross_validation():
    values, counts = np.array([-3.0, -2.5, -2.0, 2.0, 2.5, 3.0, 3.5, -3.5]), np.array([3, 5, 2, 4, 6, 1, 2, 2.0])
    total, _, pointwise = cross_validated_log_likelihood(mixflow.GaussianMixture(1), validate_data(
        values, weights=counts), n_folds=2, random_seed=0, n_init=1)
    assert total == pytest.approx(counts @ pointwise)


def _fake_mcmc_tree(k: int, rng) -> xr.DataTree:
    """Posterior draws and pointwise log-likelihoods whose ELPD is best at K = 2."""
    n, chains, draws = 40, 2, 100
    centre = -2.0 - 0.3 * abs(k - 2)
    log_lik = centre + rng.normal(scale=0.05, size=(chains, draws, n))
    return xr.DataTree.from_dict({
        "mcmc/posterior": xr.Dataset({"weights": (("chain", "draw", "component"),
                                                  rng.dirichlet(np.ones(k), size=(chains, draws)))}),
        "mcmc/log_likelihood": xr.Dataset({"x": (("chain", "draw", "obs"), log_lik)}),
    })


def test_loo_table_matches_arviz_stats():
    rng = np.random.default_rng(0)
    trees = {k: _fake_mcmc_tree(k, rng) for k in (1, 2, 3)}
    table = loo_table(trees)
    direct = arviz_stats.loo(xr.DataTree.from_dict({"posterior": trees[2]["mcmc/posterior"].to_dataset(),
                                                    "log_likelihood": trees[2]["mcmc/log_likelihood"].to_dataset()}),
                             var_name="x")
    assert table.loc[2, "elpd_loo"] == pytest.approx(direct.elpd)
    assert table.loc[2, "elpd_loo_se"] == pytest.approx(direct.se)
    assert table.loc[2, "elpd_diff"] == 0 and (table["elpd_diff"] <= 0).all()
    assert table["loo_weight"].sum() == pytest.approx(1.0)


def test_frequency_weighted_loo_equals_loo_of_repeated_rows():
    rng = np.random.default_rng(4)
    counts = rng.integers(1, 4, size=40)
    trees, repeated = {}, {}
    for k in (1, 2, 3):
        tree = _fake_mcmc_tree(k, rng)
        # each K the better on other rows: stacking weights inside (0, 1)
        log_lik = tree["mcmc/log_likelihood"]["x"] + 0.1 * np.sin(np.arange(40)) + 0.8 * np.sin(np.arange(40) + 2 * k)
        tree["mcmc/log_likelihood"] = xr.DataTree(xr.Dataset({"x": log_lik}))
        tree["observed_data"] = xr.DataTree(xr.Dataset({"weights": ("obs", counts.astype(float))}))
        trees[k] = tree
        repeated[k] = xr.DataTree.from_dict({
            "posterior": tree["mcmc/posterior"].to_dataset(),
            "log_likelihood": xr.Dataset({"x": log_lik.isel(obs=np.repeat(np.arange(40), counts))})})
    table = loo_table(trees)
    direct = {k: arviz_stats.loo(dt, var_name="x") for k, dt in repeated.items()}
    reference = arviz_stats.compare({str(k): d for k, d in direct.items()}, round_to="none")
    for k in (1, 2, 3):
        assert table.loc[k, "elpd_loo"] == pytest.approx(direct[k].elpd, rel=1e-10)
        assert table.loc[k, "elpd_loo_se"] == pytest.approx(direct[k].se, rel=1e-10)
        assert table.loc[k, "p_loo"] == pytest.approx(direct[k].p, rel=1e-8)
        assert table.loc[k, "elpd_diff"] == pytest.approx(reference.loc[str(k), "elpd_diff"], abs=1e-9)
        assert table.loc[k, "elpd_diff_se"] == pytest.approx(reference.loc[str(k), "dse"], rel=1e-8, abs=1e-12)
    # the stacking weights of the K, as arviz_stats' of the repeated rows (its optimiser's tolerance)
    weights = reference.loc[["1", "2", "3"], "weight"].values
    assert np.all((weights > 0.05) & (weights < 0.95))
    np.testing.assert_allclose(table["loo_weight"].values, weights, atol=1e-4)
    # within arviz_stats' optimiser's tolerance, and at least as high a stacking objective
    lpd = np.column_stack([direct[k].elpd_i.values.ravel() for k in (1, 2, 3)])
    ours, theirs = (np.log(np.exp(lpd) @ w).sum() for w in (table["loo_weight"].values, weights))
    assert ours >= theirs - 1e-12


def test_select_k_with_mcmc_uses_loo(monkeypatch, two_clusters):
    real_fit = mixflow.fitting.fit
    rng = np.random.default_rng(1)

    def fake_fit(model, data, method="em", **kwargs):
        if method == "mcmc":
            return _fake_mcmc_tree(model.n_components, rng)
        return real_fit(model, data, method=method, **kwargs)

    monkeypatch.setattr(mixflow.fitting, "fit", fake_fit)
    table = select_k(mixflow.GaussianMixture(1), two_clusters, ks=(1, 2, 3), methods=("map", "mcmc"), n_folds=None,
                     random_seed=2, fit_kwargs={"n_init": 1}, n_jobs=1)
    assert {"bic", "elpd_loo", "elpd_loo_se", "elpd_diff", "loo_weight"} <= set(table.columns)
    assert "cv_log_likelihood" not in table
    assert table.attrs["preferred"]["elpd_loo"] == 2
    mcmc_only, fits = select_k(mixflow.GaussianMixture(1), two_clusters, ks=(1, 2), methods="mcmc", random_seed=2,
                               return_fits=True)
    assert "bic" not in mcmc_only and set(fits) == {("mcmc", 1), ("mcmc", 2)}


def test_a_k_whose_nuts_fit_fails_is_left_out_of_the_loo_and_the_choice_goes_on(monkeypatch, two_clusters):
    # a draw of a collapsing component that cannot be evaluated ended the whole choice of K, in a workflow too
    real_fit = mixflow.fitting.fit
    rng = np.random.default_rng(1)

    def fake_fit(model, data, method="em", **kwargs):
        if method == "mcmc" and model.n_components == 3:
            raise mixflow.InputError("draws: a draw among 0-99 (over chains) cannot be evaluated")
        if method == "mcmc":
            return _fake_mcmc_tree(model.n_components, rng)
        return real_fit(model, data, method=method, **kwargs)

    monkeypatch.setattr(mixflow.fitting, "fit", fake_fit)
    with pytest.warns(mixflow.SamplingWarning, match=r"^select_k, K=3, NUTS: the fit failed \(draws: a draw among "
                                                     r"0-99 \(over chains\) cannot be evaluated\); its NUTS columns "
                                                     r"are left empty$"):
        table, fits = select_k(mixflow.GaussianMixture(1), two_clusters, ks=(1, 2, 3), methods=("map", "mcmc"),
                               n_folds=None, random_seed=2, fit_kwargs={"n_init": 1}, n_jobs=1, return_fits=True)
    assert ("mcmc", 3) not in fits and np.isnan(table.loc[3, "elpd_loo"]) and np.isfinite(table.loc[3, "bic"])
    assert table.loc[[1, 2], "loo_weight"].sum() == pytest.approx(1.0) and table.attrs["preferred"]["elpd_loo"] == 2


def test_a_k_s_fits_and_folds_are_the_same_whichever_other_k_are_compared(table, two_clusters):
    """Each K draws from a stream of the seed and K: K=3 alone gets the folds and restarts it gets beside 1 and 2
    (its cross-validated log-likelihood, of random folds, and its restarts' values, of random starts, exactly)."""
    alone, fits = select_k(mixflow.GaussianMixture(1), two_clusters, ks=(3,), methods=("em",), n_folds=3,
                           random_seed=5, fit_kwargs={"n_init": 2}, n_jobs=1, return_fits=True)
    own = ["log_likelihood", "bic", "icl", "cv_log_likelihood", "cv_log_likelihood_se"]  # not those against other K
    assert alone.loc[3, own].equals(table.loc[3, own])
    _, both = select_k(mixflow.GaussianMixture(1), two_clusters, ks=(2, 3), methods=("em",), n_folds=None,
                       random_seed=5, fit_kwargs={"n_init": 2}, n_jobs=1, return_fits=True)
    stats = [fit["em/sample_stats/final_log_likelihood"].values for fit in (fits[("em", 3)], both[("em", 3)])]
    np.testing.assert_array_equal(*stats)


def test_collapsing_fits_are_flagged_and_never_preferred():
    x = np.r_[np.zeros(3), [5.0, 5.0, 5.0], np.linspace(-1, 1, 10)]
    with pytest.warns(MixflowWarning, match=r"select_k: K in \[3\] skipped by the EM criteria .*degenerate"):
        # seed 1: K=3's one start collapses (others end on a spurious maximum instead, skipped too)
        flagged = select_k(mixflow.GaussianMixture(1), x, ks=(1, 3), methods=("em",), n_folds=None, random_seed=1,
                           fit_kwargs={"n_init": 1}, n_jobs=1)
    assert list(flagged["degenerate"]) == [False, True]
    # the collapsed fit's likelihood is unbounded: BIC would prefer it, but it is skipped, and says why
    assert flagged.loc[3, "bic"] < flagged.loc[1, "bic"]
    assert flagged.attrs["preferred"] == {"bic": 1, "aic": 1, "icl": 1}
    assert flagged.attrs["skipped"] == {3: SKIPPED_DEGENERATE}
    assert list(flagged["skipped"]) == ["", SKIPPED_DEGENERATE]


def test_a_collapsed_fold_fit_is_never_the_held_out_choice():
    """Rounded data and a small group of tied values (four at 8.0, one at 8.3): the fold that holds out 8.3 keeps
    only 8.0s of that group, and its K=2 fit puts a component on them, whose variance has no bound; its held-out
    rows at 8.0 then score without bound, and the held-out log-likelihood would prefer K=2 for them. It prefers
    K=1, counts the fold and warns; the fits on all rows are sound, and the other criteria still weigh K=2."""
    rng = np.random.default_rng(7)
    x = np.r_[np.round(rng.normal(0, 1, 40), 1), [8.0, 8.0, 8.0, 8.0, 8.3]]
    with pytest.warns(MixflowWarning, match=r"K in \[2\] skipped by the held-out log-likelihood.*cv_flagged_folds.*"
                      r"map = true under \[methods.em\] in a workflow") \
            as caught:
        table = select_k(mixflow.GaussianMixture(1), x, ks=(1, 2), methods=("em",), n_folds=3, random_seed=0,
                         fit_kwargs={"n_init": 1}, n_jobs=1)
    # the collapse is the fold's alone: its warning says so, not that K=2's fit on all rows collapsed
    collapsed = [str(w.message) for w in caught if w.category is mixflow.DegenerateComponentWarning]
    assert collapsed and all(m.startswith("select_k, K=2, EM (MLE): a cross-validation fold's fit (not the fit on "
                                          "all rows): ") for m in collapsed)
    assert list(table["degenerate"]) == [False, False] and list(table["spurious"]) == [False, False]
    assert list(table["cv_flagged_folds"]) == [0, 1]
    assert table.loc[2, "cv_log_likelihood"] > table.loc[1, "cv_log_likelihood"]  # the artefact ...
    assert table.attrs["preferred"]["cv_log_likelihood"] == 1  # ... is not the choice
    assert table.attrs["skipped"] == {}  # the other criteria still consider K=2


def test_preferred_k_skips_flagged_folds_for_the_held_out_criterion_only():
    table = pd.DataFrame({"bic": [10.0, 5.0, 7.0], "cv_log_likelihood": [-9.0, -1.0, -5.0],
                          "cv_flagged_folds": [0, 2, 0]}, index=pd.Index([1, 2, 3], name="k"))
    assert preferred_k(table) == {"bic": 2, "cv_log_likelihood": 3}


def test_preferred_k_skips_degenerate_rows_for_the_em_criteria_only():
    table = pd.DataFrame({"bic": [10.0, 5.0, 1.0], "elpd_loo": [-3.0, -2.0, -1.0],
                          "degenerate": [False, False, True]}, index=pd.Index([1, 2, 3], name="k"))
    assert preferred_k(table) == {"bic": 2, "elpd_loo": 3}
    assert preferred_k(table.assign(degenerate=True)) == {"elpd_loo": 3}
    assert preferred_k(table.drop(columns="degenerate")) == {"bic": 3, "elpd_loo": 3}


# Ryan, Joiner and Ryan's 31 felled black cherry trees (R's datasets::trees, public domain): girth (in), height (ft),
# volume (cubic ft); one population
TREES = pd.DataFrame({
    "girth": [8.3, 8.6, 8.8, 10.5, 10.7, 10.8, 11.0, 11.0, 11.1, 11.2, 11.3, 11.4, 11.4, 11.7, 12.0, 12.9, 12.9, 13.3,
              13.7, 13.8, 14.0, 14.2, 14.5, 16.0, 16.3, 17.3, 17.5, 17.9, 18.0, 18.0, 20.6],
    "height": [70, 65, 63, 72, 81, 83, 66, 75, 80, 75, 79, 76, 76, 69, 75, 74, 85, 86, 71, 64, 78, 80, 74, 72, 77, 81,
               82, 80, 80, 80, 87],
    "volume": [10.3, 10.3, 10.2, 16.4, 18.8, 19.7, 15.6, 18.2, 22.6, 19.9, 24.2, 21.0, 21.4, 21.3, 19.1, 22.2, 33.8,
               27.4, 25.7, 24.9, 34.5, 31.7, 36.3, 38.3, 42.6, 55.4, 55.7, 58.3, 51.5, 51.0, 77.0]})


def test_a_k_whose_components_hold_fewer_rows_than_their_parameters_is_never_preferred():
    """31 trees, a full covariance in 3 dimensions: 9 parameters of a component's own (mean and covariance).

    K=3's maximum puts 5 trees in a component and its log-likelihood rises by 24.0 over K=2's (a Gaussian with its
    own covariance fitted to d + 2 rows gains on them, over new rows, without bound on average), so BIC and ICL
    would prefer it, and AIC it or K=4 (522.05, 480.47, 523.43 against K=1's 549.71, 536.81, 549.71); every K >= 2
    has a component of fewer than 9 trees, and all three prefer K=1, as the held-out log-likelihood does.
    """
    said = (r"^select_k: K in \[2, 3, 4\] skipped by the EM criteria \(bic, aic, icl\): too few rows for its "
            r"parameters .*\(its smallest component: 8\.3 observations at K=2, 5\.0 observations at K=3, [5-8]\.\d "
            r"observations at K=4\); see the 'skipped' column\. Fewer components, or fewer parameters per component")
    with pytest.warns(MixflowWarning, match=said):
        table = select_k(mixflow.GaussianMixture(1), TREES, ks=(1, 2, 3, 4), methods=("em",), n_folds=None,
                         random_seed=1, n_jobs=1)
    assert list(table["n_parameters"]) == [9, 19, 29, 39]
    # K=4 (39 parameters, 31 trees) has maxima with a component of 5 and of 6 trees, found by seed
    np.testing.assert_allclose(table["fewest_rows"][:3], [31.0, 8.31, 5.0], atol=0.01)
    assert 5 <= table.loc[4, "fewest_rows"] < 9
    assert list(table["few_rows"]) == [False, True, True, True]
    assert not table["spurious"].any() and not table["degenerate"].any()
    # the numbers stay in the table: K=3 has the smallest BIC and ICL of all (and AIC but for K=4, whose maxima
    # with a component of 5 or 6 trees the seed decides) ...
    assert table["bic"].idxmin() == table["icl"].idxmin() == 3 and table["aic"].idxmin() in (3, 4)
    assert table.loc[3, ["bic", "aic", "icl"]].tolist() == pytest.approx([522.0507, 480.4650, 523.4258], abs=1e-3)
    # ... and none prefers it
    assert table.attrs["preferred"] == {"bic": 1, "aic": 1, "icl": 1}
    assert table.attrs["skipped"] == {2: SKIPPED_FEW_ROWS, 3: SKIPPED_FEW_ROWS, 4: SKIPPED_FEW_ROWS}
    assert list(table["skipped"]) == ["", SKIPPED_FEW_ROWS, SKIPPED_FEW_ROWS, SKIPPED_FEW_ROWS]


def test_a_simulated_pair_of_groups_is_found_once_a_k_on_too_few_rows_is_skipped():
    """Two Gaussian groups of 15 rows in 3-D (means 3 apart on the first axis, random full covariances).

    K=3's maximum has a component of 8 rows, fewer than the 9 parameters of its mean and covariance: BIC and ICL
    would prefer it (BIC 278.89 against K=2's 292.21), and AIC K=4 (a component of 6 rows), though K=3's held-out
    log-likelihood (5 folds) is 112 below K=2's; all three prefer the true K=2, whose components hold 13 and 17
    rows.
    """
    rng = np.random.default_rng(2)
    x = np.empty((30, 3))
    for group in range(2):
        a = rng.normal(size=(3, 3))
        x[np.arange(30) % 2 == group] = rng.multivariate_normal([3.0 * group, 0, 0], a @ a.T / 3 + 0.3 * np.eye(3), 15)
    with pytest.warns(MixflowWarning, match=r"K in \[3, 4\] skipped by the EM criteria .*too few rows"):
        table = select_k(mixflow.GaussianMixture(1), x, ks=(1, 2, 3, 4), methods=("em",), n_folds=None,
                         random_seed=2, n_jobs=1)
    np.testing.assert_allclose(table["fewest_rows"], [30.0, 13.0, 8.0, 6.0], atol=0.05)
    assert table["bic"].idxmin() == 3 and table["icl"].idxmin() == 3 and table["aic"].idxmin() == 4
    assert table.attrs["preferred"] == {"bic": 2, "aic": 2, "icl": 2}


def test_few_rows_are_judged_on_maximum_likelihood_fits_only():
    # a MAP fit's prior stands in for a component's missing rows (it keeps a component on a few rows on purpose):
    # its fits are not skipped for their size, only reported; one component holds every row and is never skipped
    with pytest.warns(MixflowWarning, match="AIC prefers K=3, the largest K tried"):
        table = select_k(mixflow.GaussianMixture(1), TREES, ks=(1, 3), methods=("map",), n_folds=None, random_seed=1,
                         n_jobs=1)
    assert table.loc[3, "fewest_rows"] < 9 and not table["few_rows"].any() and table.attrs["skipped"] == {}
    assert table.attrs["preferred"]["bic"] == 1
    with pytest.warns(MixflowWarning, match="9 free parameters, as many as or more than the 8 observations"):
        few = select_k(mixflow.GaussianMixture(1), TREES.iloc[:8], ks=(1,), methods=("em",), n_folds=None,
                       random_seed=1, n_jobs=1)
    assert few.loc[1, "fewest_rows"] == 8 and not few.loc[1, "few_rows"] and few.attrs["preferred"] == {
        "bic": 1, "aic": 1, "icl": 1}


def test_a_component_s_own_parameters_and_the_components_with_fewer_rows():
    mu = {"mu": np.zeros((2, 4))}
    assert [mixflow.GaussianMixture(2, covariance=c).component_parameters(mu)
            for c in ("full", "diag", "spherical", "tied")] == [14, 8, 5, 0]
    # a regression's line and its own variance, a binned component's mean and variance, gain on few rows as a
    # Gaussian's do (they were counted as none); a common variance, a Poisson rate, soft k-means' means are fair
    assert mixflow.RegressionMixture(2, "y ~ x + z").component_parameters({"coefficients": np.zeros((2, 3))}) == 4
    assert [mixflow.GroupedGaussianMixture(2, common_variance=c).component_parameters({}) for c in (False, True)] \
        == [2, 0]
    assert mixflow.PoissonMixture(2).component_parameters({"rates": np.ones((2, 3))}) == 0
    assert few_rows_components(np.array([5.0, 26.0]), 9) == [(0, 5.0)]
    # the weight a group's rows leak to the other components does not make it short: 13.99 rows of 14 are 14
    assert few_rows_components(np.array([13.99, 40.0]), 14) == []
    assert few_rows_components(np.array([13.9, 40.0]), 14) == [(0, 13.9)]
    assert few_rows_components(np.array([3.0]), 14) == []  # one component: every row
    assert few_rows_components(np.array([1.0, 2.0]), 0) == []  # no parameters of a component's own counted
    # the table's column alone decides (a choice-of-K CSV read back), and a degenerate or spurious fit says so first
    table = pd.DataFrame({"bic": [10.0, 5.0, 1.0, 0.5], "few_rows": [False, False, True, True],
                          "spurious": [False, False, False, True]}, index=pd.Index([1, 2, 3, 4], name="k"))
    assert preferred_k(table) == {"bic": 2}
    assert skipped_k(table) == {3: SKIPPED_FEW_ROWS, 4: SKIPPED_SPURIOUS}
    assert preferred_k(table.drop(columns=["few_rows", "spurious"])) == {"bic": 4}
    # the held-out log-likelihood scores rows the fit did not see, beyond the in-sample gain of a component on few
    # rows: it keeps such a K (not a spurious one, nor one whose fold fits are flagged)
    table["cv_log_likelihood"], table["cv_flagged_folds"] = [-9.0, -8.0, -7.0, -1.0], [0, 0, 0, 0]
    assert preferred_k(table) == {"bic": 2, "cv_log_likelihood": 3}
    table["cv_flagged_folds"] = [0, 0, 1, 0]
    assert preferred_k(table) == {"bic": 2, "cv_log_likelihood": 2}


def test_em_that_stops_at_max_iter_is_not_converged_and_its_warning_names_k_and_method(two_clusters):
    with pytest.warns(MixflowWarning) as caught:
        table = select_k(mixflow.GaussianMixture(1), two_clusters, ks=(1, 2), methods=("em",), n_folds=None,
                         random_seed=0, fit_kwargs={"n_init": 1, "max_iter": 2}, n_jobs=1)
    assert not table.loc[2, "converged"]
    assert any(str(w.message).startswith("select_k, K=2, EM (MLE): ") and "converge" in str(w.message)
               for w in caught)


def test_mcmc_diagnostics_of_every_k_are_columns_and_its_warnings_name_the_k(two_clusters, monkeypatch):
    real_fit = mixflow.fitting.fit
    rng = np.random.default_rng(1)

    def fake_fit(model, data, method="em", **kwargs):
        if method != "mcmc":
            return real_fit(model, data, method=method, **kwargs)
        tree = _fake_mcmc_tree(model.n_components, rng)
        k = model.n_components
        tree["mcmc"].attrs.update(max_rhat=1.0 + 0.02 * k, min_ess_bulk=500.0 / k, min_ess_tail=400.0 / k,
                                  n_divergences=k - 1)
        if k == 2:
            warnings.warn("MCMC diagnostics: 1 divergent transition after tuning.", SamplingWarning, stacklevel=2)
        return tree

    monkeypatch.setattr(mixflow.fitting, "fit", fake_fit)
    messages = []
    with pytest.warns(SamplingWarning, match=r"^select_k, K=2, NUTS: MCMC diagnostics: 1 divergent"):
        table = select_k(mixflow.GaussianMixture(1), two_clusters, ks=(1, 2), methods=("map", "mcmc"),
                         n_folds=None, random_seed=2, fit_kwargs={"n_init": 1}, n_jobs=1, progress=messages.append)
    assert messages[0] == "EM (MAP): fitting K in [1, 2]"
    assert messages[1].startswith("K=1, EM (MAP): log-likelihood ") and messages[3] == "K=1, NUTS: sampling"
    assert messages[-1] == "K=2, NUTS: 1 divergence, worst R-hat 1.040, smallest bulk / tail ESS 250 / 200"
    assert list(table["max_rhat"]) == pytest.approx([1.02, 1.04])
    assert list(table["min_ess_bulk"]) == pytest.approx([500.0, 250.0])
    assert list(table["min_ess_tail"]) == pytest.approx([400.0, 200.0])
    assert list(table["divergences"]) == [0, 1]
    assert "pareto_k_warning" in table


def test_bad_arguments(two_clusters):
    model = mixflow.GaussianMixture(1)
    with pytest.raises(TypeError, match="model: expected a mixflow model"):
        select_k("gaussian", two_clusters)
    with pytest.raises(ValueError, match=r"ks: expected distinct integers >= 1, got \[0, 1\]"):
        select_k(model, two_clusters, ks=[0, 1])
    with pytest.raises(TypeError, match="ks: expected a sequence of integers >= 1"):
        select_k(model, two_clusters, ks=["a"])
    # entries that are not integers were dropped without a word: K = 1 and 3 were fitted for [1, 2.5, 3]
    with pytest.raises(ValueError, match=r"^ks: expected a sequence of integers >= 1, got \[1, 2\.5, 3\], in which "
                                         r"2\.5 is not one$"):
        select_k(model, two_clusters, ks=[1, 2.5, 3])
    for ks, named in (([1, 2, "3"], "'3'"), ([True, 2], "True")):
        with pytest.raises(TypeError, match=rf"^ks: expected a sequence of integers >= 1, got .*, in which {named} "
                                            "is not one$"):
            select_k(model, two_clusters, ks=ks)
    with pytest.raises(TypeError, match=r"^ks: expected a sequence of integers >= 1, got 3$"):
        select_k(model, two_clusters, ks=3)
    with pytest.raises(TypeError, match=r"^ks: expected a sequence of integers >= 1, got array\(3\)$"):
        select_k(model, two_clusters, ks=np.array(3))
    # more components than rows: the rows are named, not the weights the user never gave
    with pytest.raises(ValueError, match=r"^ks: expected numbers of components of at most the data's 20 rows with "
                                         r"positive weight, got 30$"):
        select_k(model, two_clusters[:20], ks=[1, 30], methods=("em",), n_folds=None)
    with pytest.raises(ValueError, match=r"methods: expected some of \['em', 'map', 'mcmc'\] .*got \['em', 'map'\]"):
        select_k(model, two_clusters, methods=("em", "map"))
    with pytest.raises(ValueError, match=r"methods: expected some of .*got \['bic'\]"):
        select_k(model, two_clusters, methods=("bic",))
    with pytest.raises(ValueError, match="n_folds: expected None .* or an integer >= 2, got 1"):
        select_k(model, two_clusters, methods=("em",), n_folds=1)
    with pytest.raises(ValueError, match=r"random_seed: expected None or a non-negative integer .*got -2"):
        select_k(model, two_clusters, methods=("em",), random_seed=-2)
    with pytest.raises(ValueError, match="n_jobs: expected None .* or an integer >= 1, got 0"):
        select_k(model, two_clusters, methods=("em",), n_jobs=0)
    with pytest.raises(ValueError, match="model: cannot be refitted with n_components=3"):
        select_k(mixflow.GaussianMixture(2, prior={"weights_concentration": [1.0, 2.0]}), two_clusters,
                 ks=(2, 3), methods=("em",), n_folds=None)


@pytest.mark.slow
def test_galaxies_bic_prefers_three_components():
    # every K has non-degenerate restarts, which rank before the collapsed ones: no K is degenerate; at K=6 the
    # first round's restarts all have a component of about two galaxies (spurious), and a second round of starts
    # reaches a sound fit (-761.2371, a component of 3 galaxies and sd 920 km/s), so no K is skipped. All of this is
    # of the fits on all rows (the folds have seeds of their own): no cross-validation, in this process
    table = select_k(mixflow.GaussianMixture(1), mixflow.load_dataset("galaxies"), methods=("em",),
                     random_seed=1, fit_kwargs={"n_init": 10}, n_folds=None, n_jobs=1)
    assert not table["degenerate"].any() and not table["spurious"].any()
    assert table.attrs["skipped"] == {} and table.loc[6, "log_likelihood"] == pytest.approx(-761.2371, abs=1e-4)
    assert table.attrs["preferred"]["bic"] == 3
    assert table.attrs["preferred"]["icl"] == 3


@pytest.mark.slow
def test_select_k_with_real_mcmc_fits(two_clusters):
    table = select_k(mixflow.GaussianMixture(1), two_clusters, ks=(1, 2), methods=("em", "mcmc"), n_folds=None,
                     random_seed=1, fit_kwargs={"n_init": 2}, mcmc_kwargs={"draws": 200, "tune": 200, "chains": 2})
    assert table.attrs["preferred"]["elpd_loo"] == 2 and table.attrs["preferred"]["bic"] == 2
    assert table.loc[2, "elpd_loo"] - table.loc[1, "elpd_loo"] > 4 * table.loc[1, "elpd_diff_se"]


def test_unweighted_folds_are_the_permuted_rows_as_before():
    data = validate_data(np.arange(23.0))
    held_out = held_out_weights(data, 4, np.random.default_rng(5))
    order = np.random.default_rng(5).permutation(23)
    for fold, part in enumerate(np.array_split(order, 4)):
        assert np.array_equal(np.flatnonzero(held_out[fold]), np.sort(part))
    assert np.array_equal(held_out.sum(axis=0), np.ones(23))
    ones = held_out_weights(validate_data(np.arange(23.0), weights=np.ones(23)), 4, np.random.default_rng(5))
    assert np.array_equal(ones, held_out)  # unit weights are the same units as no weights


def test_integer_weights_are_split_unit_by_unit():
    counts = np.array([162, 267, 271, 185, 111, 61, 27, 8, 3, 1.0])  # London deaths: days per count
    data = validate_data(np.arange(10.0), weights=counts)
    held_out = held_out_weights(data, 5, np.random.default_rng(0))
    assert np.array_equal(held_out.sum(axis=0), counts)
    assert sorted(held_out.sum(axis=1)) == [219, 219, 219, 219, 220]
    assert ((held_out[:, :5] > 0).sum(axis=0) == 5).all()  # a big class has units in every fold
    # the expected share of each row in each fold is its weight / n_folds
    shares = np.mean([held_out_weights(data, 5, np.random.default_rng(s))[0] for s in range(200)], axis=0)
    np.testing.assert_allclose(shares[:4], counts[:4] / 5, rtol=0.05)


def test_many_units_are_split_without_expanding_them(monkeypatch):
    monkeypatch.setattr(mixflow.analysis.select, "_MAX_EXPANDED_UNITS", 10)
    counts = np.array([40, 7, 0, 13.0])
    held_out = held_out_weights(validate_data(np.arange(4.0), weights=counts), 3, np.random.default_rng(0))
    assert np.array_equal(held_out.sum(axis=0), counts) and sorted(held_out.sum(axis=1)) == [20, 20, 20]


def test_a_billion_units_are_split_too():
    # from a billion units numpy's hypergeometric draws refuse ("sum(colors) must be less than 1000000000"), and
    # select_k failed with that numpy error on counts a fit and a bootstrap accept
    counts = np.array([4e8, 3e8, 2e8, 1e8, 1.0, 0.0, 7.0])
    held_out = held_out_weights(validate_data(np.arange(7.0), weights=counts), 5, np.random.default_rng(0))
    assert np.array_equal(held_out.sum(axis=0), counts)  # every unit of every row in one fold
    np.testing.assert_allclose(held_out.sum(axis=1), counts.sum() / 5, rtol=2e-4)  # 6 sd of a fold's size
    np.testing.assert_allclose(held_out[:, :4], counts[:4] / 5 * np.ones((5, 1)), rtol=1e-3)
    table = select_k(mixflow.GaussianMixture(1), np.array([-3.0, -2.5, -2.0, 2.0, 2.5, 3.0]), ks=(1, 2),
                     methods=("em",), n_folds=3, random_seed=0, n_jobs=1,
                     weights=np.array([3e8, 2e8, 1e8, 1e8, 2e8, 2e8]))
    assert np.isfinite(table["cv_log_likelihood"]).all() and table.attrs["preferred"]["bic"] == 2


def test_non_integer_weights_hold_out_whole_rows():
    weights = np.array([0.5, 1.5, 2.25, 3.0, 1.0, 0.75])
    held_out = held_out_weights(validate_data(np.arange(6.0), weights=weights), 3, np.random.default_rng(1))
    assert np.array_equal(held_out.sum(axis=0), weights)
    assert ((held_out > 0).sum(axis=0) == 1).all()


def test_cross_validation_on_london_deaths_prefers_two_components():
    deaths = mixflow.load_dataset("london_deaths")
    data = validate_data(deaths[["deaths"]], weights=deaths["days"])
    totals = {k: cross_validated_log_likelihood(mixflow.PoissonMixture(k), data, random_seed=3, n_init=2,
                                                max_iter=3000, tol=1e-10)[0] for k in (1, 2)}
    # the MLE of K=2 gains 11.5 log-likelihood units over K=1; held out it still gains most of it
    assert totals[2] - totals[1] > 5


def test_held_out_weights_bad_arguments():
    data = validate_data(np.arange(3.0))
    with pytest.raises(ValueError, match=r"n_folds: expected an integer >= 2, got 1"):
        held_out_weights(data, 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"n_folds: expected at most the number of observations \(total weight 3\)"):
        held_out_weights(data, 4, np.random.default_rng(0))


def test_an_mle_fit_below_a_smaller_k_s_is_said_to_have_missed_its_maximum():
    # K components can do at least as well as fewer: a log-likelihood falling as K rises is a missed maximum;
    # skipped (degenerate) fits are not compared, nor MAP fits (the prior may rightly cost more than K gains)
    from mixflow.analysis.select import _summarise

    def table():
        return pd.DataFrame({"log_likelihood": [-700.0, -644.8773, -645.3378, -600.0, -650.0],
                             "bic": [1410.0, 1300.0, 1320.0, 1250.0, 1330.0],
                             "degenerate": [False, False, False, True, False]},
                            index=pd.Index([1, 2, 3, 4, 5], name="k"))

    frame = table()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _summarise(frame, ("em",), 0)
    said = [str(w.message) for w in record if issubclass(w.category, mixflow.MixflowWarning)]
    assert any(re.match(r"select_k: the EM fit of K=3 at -645.3378 against -644.8773; K=5 at -650.0000 against "
                        r"-644.8773, the best of fewer components: K components can do at least as well as fewer "
                        r".*fit_kwargs=\{'n_init': 20\}", text) for text in said)
    assert frame.attrs["short_of_fewer"] == [3, 5]
    # the skipped K is said with the criteria the table has (no held-out log-likelihood without folds)
    assert any("K in [4] skipped by the EM criteria (bic): " in text for text in said)
    frame = table()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _summarise(frame, ("map",), 0)
    assert "short_of_fewer" not in frame.attrs and not any("best of fewer" in str(w.message) for w in record)
    frame = table().assign(degenerate=False)
    frame.loc[4, "log_likelihood"] = -640.0  # K=5 now below K=4's sound -640
    with pytest.warns(mixflow.MixflowWarning, match=r"K=5 at -650.0000 against -640.0000"):
        _summarise(frame, ("em", "mcmc"), 0)
    assert frame.attrs["short_of_fewer"] == [3, 5]


def test_a_fold_fits_warning_does_not_point_at_a_restart_that_is_not_kept():
    # a fold's set-aside restart was said to be "in /em/sample_stats (optimum_* at restart 26): pass it as init=...",
    # in the report of a fit on all rows whose restart 26 is another run: no fold fit is kept
    import warnings as python_warnings

    from mixflow.analysis.select import _messages
    from mixflow.engines.em import SET_ASIDE_ADVICE, set_aside_warning

    finding = ("restart 26 reached a higher maximum (-640.1 against this fit's -647.2) with a spurious component "
               "(component 3: 4.1 observations' worth of weight, Hathaway ratio 0.001), and was set aside for the best "
               "sound fit the restarts found. ")
    said = finding + SET_ASIDE_ADVICE.format(top=26)
    fold = python_warnings.WarningMessage(set_aside_warning(finding, 26), mixflow.SpuriousMaximumWarning, "f.py", 1)
    [(category, message)] = _messages([], [fold])
    assert category is mixflow.SpuriousMaximumWarning
    assert message == ("a cross-validation fold's fit (not the fit on all rows): restart 26 reached a higher maximum "
                       "(-640.1 against this fit's -647.2) with a spurious component (component 3: 4.1 observations' "
                       "worth of weight, Hathaway ratio 0.001), and was set aside for the best sound fit the restarts "
                       "found. (A fold's fit is not kept.)")
    [(_, message)] = _messages([fold], [])  # the fit on all rows: its restarts are kept
    assert message == said
    [(_, message)] = _messages([fold], [], kept=False)  # ... but for a fit select_k does not return
    assert message.startswith(finding + "If that component is a real small group") and message.endswith(
        "select_k(..., return_fits=True) keeps this K's fit, whose /em/sample_stats has that restart (optimum_* at "
        "restart 26) to pass as init=... to mixflow.fit; a workflow keeps only the fits of the K it analyses, "
        "refitted from its seed.")


def test_the_warnings_of_one_k_are_said_once_each_with_the_count_of_the_others():
    from mixflow.analysis.select import _messages

    def caught(text, category=SamplingWarning):
        return warnings.WarningMessage(category(text), category, "f.py", 1)

    more = "from this K's fits, e.g. its cross-validation folds)"
    assert _messages([caught("first"), caught("second"), caught("other", MixflowWarning)], [caught("fold")]) == [
        (SamplingWarning, f"first (and 2 more such warnings {more}"), (MixflowWarning, "other")]
    assert _messages([caught("first"), caught("second")]) == [
        (SamplingWarning, f"first (and 1 more such warning {more}")]


def test_a_k_whose_draws_repeat_one_value_gets_no_loo_and_the_others_are_compared_without_it():
    # a chain stuck in place: PSIS raised "All tail values are the same", and the whole workflow failed with it
    import arviz_stats

    from mixflow.analysis.select import loo_table

    rng = np.random.default_rng(0)

    def tree(log_likelihood):
        draws = {"posterior": xr.Dataset({"mu": (("chain", "draw"), rng.normal(size=(2, 100)))}),
                 "log_likelihood": xr.Dataset({"x": (("chain", "draw", "obs"), log_likelihood)})}
        return xr.DataTree.from_dict({f"mcmc/{name}": group for name, group in draws.items()})

    stuck = rng.normal(-2.0, 0.1, (2, 100, 30))
    stuck[:, :, 5] = -3.0
    trees = {1: tree(rng.normal(-2.2, 0.1, (2, 100, 30))), 2: tree(stuck), 3: tree(rng.normal(-2.1, 0.1, (2, 100, 30)))}
    with pytest.warns(mixflow.SamplingWarning, match=r"^PSIS-LOO of the NUTS draws of K=2 could not be computed "
                                                     r"\(All tail values are the same: draws that repeat one value, "
                                                     r"as those of a chain stuck in place do\)"):
        table = loo_table(trees)
    assert list(table.index) == [1, 2, 3] and table.loc[2].isna().all()
    expected = arviz_stats.loo(trees[3]["mcmc"], var_name="x")
    assert table.loc[3, "elpd_loo"] == pytest.approx(expected.elpd, rel=1e-12)
    assert table["loo_weight"].sum() == pytest.approx(1.0) and table["elpd_loo"].idxmax() == 3
    with pytest.warns(mixflow.SamplingWarning):  # one K left: the comparison's columns are there, empty
        alone = loo_table({1: trees[1], 2: trees[2]})
    assert {"elpd_diff", "elpd_diff_se", "loo_weight"} <= set(alone.columns) and alone.loc[2].isna().all()


def test_a_criterion_preferring_the_largest_k_tried_says_so(faithful):
    # nothing said that the range ended where a criterion was still improving (a Poisson K=1..5: all preferred 5)
    with pytest.warns(MixflowWarning, match=r"^select_k: AIC prefers K=3, the largest K tried: a larger K may be "
                                            r"preferred still; try larger K too"):
        table = select_k(mixflow.GaussianMixture(1), faithful, ks=(1, 2, 3), methods=("map",), random_seed=7,
                         fit_kwargs={"n_init": 2}, n_jobs=1)
    assert table.attrs["preferred"] == {"bic": 2, "aic": 3, "icl": 2, "cv_log_likelihood": 2}
    with warnings.catch_warnings():  # every criterion's K inside the range: nothing to say
        warnings.simplefilter("error", MixflowWarning)
        select_k(mixflow.GaussianMixture(1), faithful, ks=(1, 2, 3, 4), methods=("map",), n_folds=None,
                 random_seed=7, fit_kwargs={"n_init": 2}, n_jobs=1)


def test_held_out_differences_are_paired_row_by_row():
    """``cv_diff`` is a K's held-out log-likelihood less the preferred K's; ``cv_diff_se`` its paired error.

    The totals' errors (``cv_log_likelihood_se``) were the only ones given: a held-out preference of a few units
    between K whose totals have errors of 10-25 could not be read. The paired error, sqrt(n var(d)) of the rows'
    differences d (ArviZ's ``dse``), is recomputed here from each K's held-out rows, with the folds select_k draws.
    """
    from mixflow.analysis.select import _cross_validate

    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(0, 1, (60, 2)), rng.normal(3, 1, (40, 2))])
    ks = (1, 2, 3)
    quick = {"init": "kmeans"}  # the pairing is checked, not the search for the maxima: k-means starts, no local search
    table = select_k(mixflow.GaussianMixture(1), x, ks=ks, methods=("em",), n_folds=4, random_seed=7, n_jobs=1,
                     fit_kwargs=quick)
    best = table.attrs["preferred"]["cv_log_likelihood"]
    data = validate_data(x)
    pointwise = {}
    for k in ks:
        cv_seed = np.random.SeedSequence(7, spawn_key=(k,)).spawn(2)[0].spawn(2)[1]  # the K's EM seed, then its folds'
        pointwise[k] = _cross_validate(mixflow.GaussianMixture(k), data, method="em", n_folds=4,
                                       random_seed=int(cv_seed.generate_state(1)[0]), **quick)[2]
    for k in ks:
        d = pointwise[k] - pointwise[best]
        assert table.loc[k, "cv_diff"] == pytest.approx(d.sum(), rel=1e-12, abs=1e-9)
        assert table.loc[k, "cv_diff"] == pytest.approx(table.loc[k, "cv_log_likelihood"]
                                                        - table.loc[best, "cv_log_likelihood"], rel=1e-9, abs=1e-9)
        assert table.loc[k, "cv_diff_se"] == pytest.approx(np.sqrt(d.size * d.var()), rel=1e-12, abs=1e-12)
    assert table.loc[best, "cv_diff"] == 0 and table.loc[best, "cv_diff_se"] == 0
    # the rows hard for one K are hard for the others: the paired error is below the totals' errors combined
    other = next(k for k in ks if k != best)
    assert table.loc[other, "cv_diff_se"] < np.hypot(table.loc[other, "cv_log_likelihood_se"],
                                                     table.loc[best, "cv_log_likelihood_se"])
    assert list(table.columns[table.columns.get_loc("cv_log_likelihood"):][:4]) == [
        "cv_log_likelihood", "cv_log_likelihood_se", "cv_diff", "cv_diff_se"]


def test_a_warning_about_the_data_is_said_once_not_for_every_k_method_and_fold(monkeypatch):
    # a constant feature: the choice of K's own check, each K's EM fit on all rows, each of its folds' fits and each
    # K's NUTS fit (which checks the rows again) said it, each prefixed with a K; now once, as mixflow.fit says it
    real_fit = mixflow.fitting.fit
    rng = np.random.default_rng(1)

    def fake_fit(model, data, method="em", **kwargs):
        if method != "mcmc":
            return real_fit(model, data, method=method, **kwargs)
        # as the PyMC model's preparation does, warning again
        validate_data(data, weights=kwargs.get("weights"), constant_note=model.constant_feature_note(True))
        warnings.warn("MCMC diagnostics: 1 divergent transition after tuning.", SamplingWarning, stacklevel=2)
        return _fake_mcmc_tree(model.n_components, rng)

    monkeypatch.setattr(mixflow.fitting, "fit", fake_fit)
    data = mixflow.load_dataset("faithful").assign(site=1.0)
    for method in ("map", "em"):  # the MLE's message is the prior's without what the prior does
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            select_k(mixflow.GaussianMixture(1, covariance="diag"), data, ks=(1, 2), methods=(method, "mcmc"),
                     n_folds=3, random_seed=0, n_jobs=1)
        constant = [w for w in said if "takes a single value" in str(w.message)]
        assert len(constant) == 1 and str(constant[0].message).startswith(
            "data: feature ['site'] takes a single value") and "under the prior" in str(constant[0].message)
        assert constant[0].category is mixflow.ConstantFeatureWarning and constant[0].filename == __file__
        sampled = [str(w.message) for w in said if issubclass(w.category, SamplingWarning)]
        assert sampled == [f"select_k, K={k}, NUTS: MCMC diagnostics: 1 divergent transition after tuning."
                           for k in (1, 2)]


def test_a_folds_warning_of_the_same_problem_in_its_part_of_the_rows_is_not_said_again():
    # histogram classes without counts: each fold's fit said it of its own number of classes, with a K prefix
    from mixflow.analysis.select import _about_data

    classes = pd.DataFrame({"lower": np.arange(0.0, 40.0, 2.0)})
    classes["upper"] = classes["lower"] + 2.0
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        select_k(mixflow.GroupedGaussianMixture(2, bounds=("lower", "upper")), classes, ks=(1, 2), methods=("map",),
                 n_folds=3, random_seed=0, n_jobs=1)
    unweighted = [str(w.message) for w in said if "none given" in str(w.message)]
    assert len(unweighted) == 1 and unweighted[0].startswith("weights: none given, so each of the 20 classes")
    # a fit's estimate that underflows in the data's units depends on the K: said with it
    assert not _about_data("data: the estimate's ['covariance'] underflow float64 in the data's units")


def test_loo_table_says_how_many_rows_have_a_high_pareto_k_and_the_largest():
    # penguins 3-D, K=3: one row's Pareto k of 1.22; the table said only pareto_k_warning, and the report's
    # finding "high Pareto k" neither how many rows nor how high
    rng = np.random.default_rng(0)
    trees = {k: _fake_mcmc_tree(k, rng) for k in (1, 2)}
    log_lik = trees[2]["mcmc/log_likelihood"]["x"].values.copy()
    log_lik[..., [3, 17]] = -np.log1p(rng.pareto(0.8, size=(2, 100, 2)))  # importance ratios of tail index 0.8
    trees[2]["mcmc/log_likelihood"] = xr.DataTree(xr.Dataset({"x": (("chain", "draw", "obs"), log_lik)}))
    table = loo_table(trees)
    with warnings.catch_warnings():  # arviz_stats' own about the high shapes
        warnings.simplefilter("ignore", UserWarning)
        direct = arviz_stats.loo(xr.DataTree.from_dict({
            "posterior": trees[2]["mcmc/posterior"].to_dataset(),
            "log_likelihood": trees[2]["mcmc/log_likelihood"].to_dataset()}), var_name="x", pointwise=True)
    shapes = direct.pareto_k.values
    assert table.loc[2, "max_pareto_k"] == pytest.approx(shapes.max()) and shapes.max() > 0.7
    assert table.loc[2, "n_high_pareto_k"] == (shapes > direct.good_k).sum() == 2 and table.loc[2, "pareto_k_warning"]
    assert table.loc[1, "n_high_pareto_k"] == 0 and not table.loc[1, "pareto_k_warning"]


def test_a_fold_that_did_not_converge_is_not_said_of_the_fit_on_all_rows():
    # Quetelet's chest sizes of 5738 Scottish soldiers (HistData's ChestSizes) in classes, K=2: the fit on all rows
    # converges (log-likelihood -12254.465301, as the interval likelihood's maximum from 60 scipy starts), one
    # fold's fit ends on a ridge; the K was reported "did not converge ... its criteria are unreliable. Raise
    # max_iter", its converged column False, though BIC, AIC and ICL come from the converged fit
    counts = [3, 18, 81, 185, 420, 749, 1073, 1079, 934, 658, 370, 92, 50, 21, 4, 1]
    lower = np.arange(32.5, 48.5)
    classes = pd.DataFrame({"lower": lower, "upper": lower + 1})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = mixflow.select_k(mixflow.GroupedGaussianMixture(1, open_below=33.5, open_above=47.5), classes,
                                 weights=np.array(counts), ks=[2], methods=("em",), random_seed=1, n_jobs=1,
                                 n_folds=2, fit_kwargs={"n_init": 1})  # one start each: the fold's ridge is data's
    said = [str(w.message) for w in caught]
    assert table.loc[2, "log_likelihood"] == pytest.approx(-12254.465301, abs=1e-6)
    assert list(table["converged"]) == [True] and list(table["cv_converged"]) == [False]
    assert not any("did not converge (see the 'converged' column)" in message for message in said)
    assert ("select_k: a cross-validation fold's EM fit for K in [2] did not converge (see the 'cv_converged' column "
            "and that fold's warning): the held-out log-likelihood there is less certain; BIC, AIC and ICL come from "
            "the fit on all rows, which converged") in said


def test_the_advice_to_take_a_set_aside_restart_says_how_to_keep_the_fit_it_is_in():
    # "its fit is in /em/sample_stats (optimum_* at restart N): pass it as init=..." of a fit select_k did not
    # return: neither a caller without return_fits nor a workflow (which refits from its own seed) had that fit
    rng = np.random.default_rng(5)
    x = rng.uniform(0, 10, 40)
    xs = np.array([2.0, 4.0, 6.0, 8.0])
    frame = pd.DataFrame({"x": np.r_[x, xs], "y": np.r_[1 + 0.5 * x + rng.normal(0, 0.5, 40),
                                                          12 - xs + rng.normal(0, 0.5, 4)]})
    frame["x2"] = frame.x ** 2
    said = {}
    for keep in (False, True):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            mixflow.select_k(mixflow.RegressionMixture(1, "y ~ x + x2"), frame, ks=[3], methods=("em",),
                             random_seed=0, n_jobs=1, n_folds=None, return_fits=keep)
        said[keep] = next(str(w.message) for w in caught if issubclass(w.category, mixflow.SpuriousMaximumWarning))
    restart = re.search(r"restart (\d+) reached a higher maximum", said[True]).group(1)
    assert not any("subspace" in message for message in said.values())  # a line's artefact is not a subspace's
    assert said[True].endswith(f"its fit is in /em/sample_stats (optimum_* at restart {restart}): pass it as "
                               "init=... to take it.")
    assert said[False].endswith(f"select_k(..., return_fits=True) keeps this K's fit, whose /em/sample_stats has "
                                f"that restart (optimum_* at restart {restart}) to pass as init=... to mixflow.fit; a "
                                "workflow keeps only the fits of the K it analyses, refitted from its seed.")
