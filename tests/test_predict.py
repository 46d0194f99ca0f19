"""Predictions from every method against naive scipy references: responsibilities, log densities, new rows."""

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st
from scipy.special import logsumexp

import mixflow
from mixflow.analysis.bootstrap import bootstrap
from tests.test_compare import make_container

NEW_ROWS = np.array([[0.0, 0.0], [2.0, 2.0], [-2.0, -1.5], [0.3, -0.2], [5.0, -4.0]])
POSTERIOR_METHODS = ("bootstrap", "mcmc", "advi")


@pytest.fixture(scope="module")
def gaussian_tree():
    return make_container(("em", "mcmc", "advi"), d=2, n=60, with_bootstrap=True, draws=30)


def _draw_list(tree, method) -> list[dict]:
    """Every draw of a method as a dict of arrays, with scipy's help only (failed replicates skipped)."""
    posterior = tree[{"bootstrap": "em/bootstrap/posterior"}.get(method, f"{method}/posterior")].to_dataset()
    stacked = posterior.stack(sample=("chain", "draw"))
    out = []
    for s in range(stacked.sizes["sample"]):
        one = {name: stacked[name].isel(sample=s).values for name in ("weights", "mu", "covariance")}
        if all(np.isfinite(v).all() for v in one.values()):
            out.append(one)
    return out


def _scipy_gaussian(params: dict, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Responsibilities (n, K) and log p(x_n) (n,) from scipy.stats.multivariate_normal, term by term."""
    log_joint = np.column_stack([np.log(w) + st.multivariate_normal(mu, cov).logpdf(x)
                                 for w, mu, cov in zip(params["weights"], params["mu"], params["covariance"],
                                                       strict=True)])
    log_density = logsumexp(log_joint, axis=1)
    return np.exp(log_joint - log_density[:, None]), log_density


def test_em_predictions_against_scipy(gaussian_tree):
    estimate = {name: gaussian_tree["em/estimate"][name].values for name in ("weights", "mu", "covariance")}
    resp, log_density = _scipy_gaussian(estimate, NEW_ROWS)
    proba, sd = mixflow.predict_proba(gaussian_tree, NEW_ROWS, return_sd=True)
    np.testing.assert_allclose(proba.values, resp, rtol=1e-10, atol=1e-14)
    np.testing.assert_array_equal(sd.values, 0.0)
    np.testing.assert_allclose(mixflow.score_samples(gaussian_tree, NEW_ROWS).values, log_density, rtol=1e-12)
    np.testing.assert_array_equal(mixflow.predict(gaussian_tree, NEW_ROWS).values, resp.argmax(axis=1))


def test_a_row_on_a_collapsed_component_is_scored_as_the_fit_scored_it():
    """Five distinct rows repeated 20 times, K=2: one component collapses onto a row (covariance about 1e-26).
    The prediction's one-pass quadratic forms rounded there: that row's log density came out 47.2 below zero
    where the fit (and scipy, from the reported parameters) has it 55.2 above, and a BIC of the training rows
    +2054.4 against the fit's -2040.6. The centred form, as EM's own passes use, is taken where they round."""
    rng = np.random.default_rng(1)
    x = np.repeat(rng.normal(size=(5, 2)), 20, axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixflow.DegenerateComponentWarning)
        tree = mixflow.fit(mixflow.GaussianMixture(2), x, random_seed=0)
    scores = mixflow.score_samples(tree, x).values
    # new rows are scored in working units from the estimate's moments, which round otherwise than the fit's own
    # standardisation: on a component of covariance 1e-26 that is a few parts in 1e8 (the fault was 100 units)
    assert scores.sum() == pytest.approx(tree["em"].attrs["log_likelihood"], rel=5e-8)
    estimate = {name: tree["em/estimate"][name].values for name in ("weights", "mu", "covariance")}
    collapsed = int(np.argmin(np.linalg.det(estimate["covariance"])))
    on_it = np.flatnonzero(mixflow.predict(tree, x).values == collapsed)
    assert on_it.size == 20  # the 20 copies of the row it sits on
    reference = logsumexp([np.log(w) + st.multivariate_normal(mu, cov, allow_singular=True).logpdf(x[on_it])
                           for w, mu, cov in zip(*estimate.values(), strict=True)], axis=0)
    np.testing.assert_allclose(scores[on_it], reference, atol=2e-6)  # scipy: the reported (rounded) parameters
    from mixflow.engines.em_steps import e_step
    from mixflow.fitting import _new_data, _parameter_sets

    model, params, _, _ = _parameter_sets(tree, "em")
    _, prepared = _new_data(tree, model, x, params)
    np.testing.assert_array_equal(e_step(model, params, prepared, 2, rows=7)[1], scores)  # chunk by chunk alike


@pytest.mark.parametrize("method", ["em", *POSTERIOR_METHODS])
def test_a_rows_prediction_does_not_depend_on_the_rows_scored_with_it(gaussian_tree, method):
    # new rows were put in working units of their own mean and spread: one row at 1e20 beside the others changed
    # 19 of 100 labels and their mean score from -2.67 to -10345
    far = np.vstack([NEW_ROWS, [[1e20, 0.0]]])
    alone = mixflow.score_samples(gaussian_tree, NEW_ROWS, method=method).values
    np.testing.assert_allclose(mixflow.score_samples(gaussian_tree, far, method=method).values[:-1], alone,
                               rtol=1e-13)
    np.testing.assert_allclose(mixflow.predict_proba(gaussian_tree, far, method=method).values[:-1],
                               mixflow.predict_proba(gaussian_tree, NEW_ROWS, method=method).values,
                               rtol=1e-12, atol=1e-15)
    one = mixflow.score_samples(gaussian_tree, far[[-1]], method=method).values
    assert one[0] < -1e39 and mixflow.score_samples(gaussian_tree, far, method=method).values[-1] == pytest.approx(
        one[0], rel=1e-12)


@pytest.mark.parametrize("method", POSTERIOR_METHODS)
def test_posterior_predictions_against_scipy(gaussian_tree, method):
    """Mean and sd over draws of scipy's responsibilities; log of the density averaged over draws."""
    per_draw = [_scipy_gaussian(params, NEW_ROWS) for params in _draw_list(gaussian_tree, method)]
    resp = np.stack([r for r, _ in per_draw])
    log_density = np.stack([d for _, d in per_draw])
    proba, sd = mixflow.predict_proba(gaussian_tree, NEW_ROWS, method=method, return_sd=True)
    assert proba.dims == ("obs", "component") and proba.shape == (5, 2)
    np.testing.assert_allclose(proba.values, resp.mean(axis=0), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(sd.values, resp.std(axis=0, ddof=1), rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(mixflow.predict_proba(gaussian_tree, NEW_ROWS, method).values, proba.values)
    expected = np.log(np.exp(log_density).mean(axis=0))
    np.testing.assert_allclose(mixflow.score_samples(gaussian_tree, NEW_ROWS, method=method).values, expected,
                               rtol=1e-10)
    np.testing.assert_array_equal(mixflow.predict(gaussian_tree, NEW_ROWS, method=method).values,
                                  resp.mean(axis=0).argmax(axis=1))


def test_predictions_match_features_by_name_and_survive_save_and_load(gaussian_tree, tmp_path):
    frame = pd.DataFrame(NEW_ROWS[:, ::-1], columns=["x1", "x0"], index=list("abcde"))
    proba = mixflow.predict_proba(gaussian_tree, frame, method="mcmc")
    assert proba["obs"].values.tolist() == list("abcde")
    np.testing.assert_allclose(proba.values, mixflow.predict_proba(gaussian_tree, NEW_ROWS, method="mcmc").values)
    mixflow.save(gaussian_tree, tmp_path / "fit.nc")
    loaded = mixflow.load(tmp_path / "fit.nc")
    for method in ("em", *POSTERIOR_METHODS):
        np.testing.assert_array_equal(mixflow.score_samples(loaded, NEW_ROWS, method).values,
                                      mixflow.score_samples(gaussian_tree, NEW_ROWS, method).values)


def test_sample_from_the_estimate(gaussian_tree):
    """Component shares within 4 binomial sds of the weights; each component's mean within 4 standard errors."""
    n = 20000
    rows = mixflow.sample(gaussian_tree, n, random_seed=3)
    assert rows["x"].dims == ("obs", "feature") and rows["x"].shape == (n, 2)
    assert rows["feature"].values.tolist() == ["x0", "x1"]
    estimate = gaussian_tree["em/estimate"]
    for k in range(2):
        chosen = rows["x"].values[rows["component"].values == k]
        weight = estimate["weights"].values[k]
        assert abs(chosen.shape[0] / n - weight) < 4 * np.sqrt(weight * (1 - weight) / n)
        standard_errors = np.sqrt(np.diag(estimate["covariance"].values[k]) / chosen.shape[0])
        assert (np.abs(chosen.mean(axis=0) - estimate["mu"].values[k]) < 4 * standard_errors).all()
    again = mixflow.sample(gaussian_tree, n, random_seed=3)
    np.testing.assert_array_equal(again["x"].values, rows["x"].values)
    assert not np.array_equal(mixflow.sample(gaussian_tree, n, random_seed=4)["x"].values, rows["x"].values)


@pytest.mark.parametrize("method", POSTERIOR_METHODS)
def test_sample_from_the_posterior_predictive(gaussian_tree, method):
    """One draw per row: each row's draw exists, and its overall mean is that of the draws' mixtures."""
    n = 20000
    rows = mixflow.sample(gaussian_tree, n, method=method, random_seed=5)
    posterior = gaussian_tree[{"bootstrap": "em/bootstrap/posterior"}.get(method, f"{method}/posterior")]
    assert set(zip(rows["chain"].values, rows["draw"].values, strict=True)) <= {
        (c, d) for c in posterior["chain"].values for d in posterior["draw"].values}
    draws = _draw_list(gaussian_tree, method)
    mixture_means = np.stack([p["weights"] @ p["mu"] for p in draws])
    spread = rows["x"].values.std(axis=0) / np.sqrt(n)
    assert (np.abs(rows["x"].values.mean(axis=0) - mixture_means.mean(axis=0)) < 4 * spread).all()
    np.testing.assert_array_equal(mixflow.sample(gaussian_tree, 50, method=method, random_seed=5)["x"].values,
                                  mixflow.sample(gaussian_tree, 50, method=method, random_seed=5)["x"].values)


@pytest.fixture(scope="module")
def poisson_tree():
    rng = np.random.default_rng(0)
    counts = np.concatenate([rng.poisson(2.0, 80), rng.poisson(9.0, 60)]).astype(float)
    tree = mixflow.fit(mixflow.PoissonMixture(2), counts, random_seed=0)
    return bootstrap(tree, n_replicates=15, random_seed=0, n_jobs=1)


def test_poisson_predictions_against_scipy(poisson_tree):
    new = np.array([0.0, 3.0, 6.0, 15.0])
    replicates = poisson_tree["em/bootstrap/posterior"].to_dataset().stack(sample=("chain", "draw"))
    log_joint = np.stack([np.log(replicates["weights"].values[:, s])
                          + st.poisson(replicates["rate"].values[:, s]).logpmf(new[:, None])
                          for s in range(replicates.sizes["sample"])
                          if np.isfinite(replicates["rate"].values[:, s]).all()])
    log_density = logsumexp(log_joint, axis=2)
    resp = np.exp(log_joint - log_density[..., None])
    proba = mixflow.predict_proba(poisson_tree, new, method="bootstrap")
    np.testing.assert_allclose(proba.values, resp.mean(axis=0), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(mixflow.score_samples(poisson_tree, new, method="bootstrap").values,
                               logsumexp(log_density, axis=0) - np.log(log_density.shape[0]), rtol=1e-10)
    rows = mixflow.sample(poisson_tree, 100, random_seed=0)
    assert rows["x"].shape == (100, 1) and (rows["x"].values == np.round(rows["x"].values)).all()


def test_prediction_errors_name_the_argument(gaussian_tree, poisson_tree):
    with pytest.raises(ValueError, match=r"method: expected one of \['em', 'bootstrap', 'mcmc', 'stacked', 'advi', "
                                         r"'advi_stacked'\], "
                                         r"got 'nuts'"):
        mixflow.predict_proba(gaussian_tree, NEW_ROWS, method="nuts")
    em_only = mixflow.fit(mixflow.PoissonMixture(2), np.arange(10.0), random_seed=0)
    with pytest.raises(ValueError, match=r"method: expected a method the result holds, one of \['em'\], "
                                         r"got 'mcmc'"):
        mixflow.score_samples(em_only, np.arange(3.0), method="mcmc")
    with pytest.raises(ValueError, match=r"got 'bootstrap' \(run mixflow.bootstrap first\)"):
        mixflow.sample(em_only, 3, method="bootstrap")
    with pytest.raises(ValueError, match=r"new_data: expected non-negative integer counts"):
        mixflow.predict_proba(poisson_tree, np.array([1.0, 2.5]), method="bootstrap")
    with pytest.raises(ValueError, match=r"new_data: expected 1 column, the feature \['x0'\], got 2 unnamed columns"):
        mixflow.score_samples(poisson_tree, np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"new_data: expected features \['x0', 'x1'\], got \['x0', 'z'\]"):
        mixflow.predict(gaussian_tree, pd.DataFrame({"x0": [1.0], "z": [2.0]}), method="advi")
    with pytest.raises(ValueError, match=r"new_data: expected finite values"):
        mixflow.score_samples(gaussian_tree, np.array([[np.inf, 1.0]]), method="mcmc")
    failed = poisson_tree.copy()  # every replicate failed: its draws are NaN
    posterior = failed["em/bootstrap/posterior"].to_dataset()
    failed["em/bootstrap/posterior"] = posterior.assign(rate=np.nan * posterior["rate"])
    with pytest.raises(ValueError, match=r"method: expected draws with finite values, got none in 'bootstrap'"):
        mixflow.predict_proba(failed, np.array([0.0, 3.0]), method="bootstrap")
    at_zero = poisson_tree.copy()
    posterior = at_zero["em/bootstrap/posterior"].to_dataset()
    at_zero["em/bootstrap/posterior"] = posterior.assign(rate=0.0 * posterior["rate"])
    with pytest.raises(ValueError, match=r"new_data: expected every row to have a positive density.*at 1 row \[1\]: "
                                         r"the row lies"):
        mixflow.score_samples(at_zero, np.array([0.0, 3.0]), method="bootstrap")
    with pytest.raises(TypeError, match=r"return_sd: expected True or False, got 'yes'"):
        mixflow.predict_proba(gaussian_tree, NEW_ROWS, return_sd="yes")
    with pytest.raises(ValueError, match=r"n: expected an integer >= 1, got 0"):
        mixflow.sample(gaussian_tree, 0)
    with pytest.raises(ValueError, match=r"random_seed"):
        mixflow.sample(gaussian_tree, 3, random_seed=-1)


def test_regression_predictions_against_scipy_and_no_sampling_without_covariates():
    """The density of the response given the covariates, averaged over bootstrap replicates."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 10, 60)
    frame = pd.DataFrame({"x": x, "y": np.where(x > 5, 1.0, -1.0) * x + rng.normal(scale=0.5, size=60)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixflow.MixflowWarning)
        tree = bootstrap(mixflow.fit(mixflow.RegressionMixture(2, "y ~ x"), frame, random_seed=0), n_replicates=8,
                         random_seed=0, n_jobs=1)
    new = pd.DataFrame({"y": [-3.0, 4.0, 0.2], "x": [3.0, 4.5, 6.0]})  # columns matched by name
    replicates = tree["em/bootstrap/posterior"].to_dataset().stack(sample=("chain", "draw"))
    log_joint = []
    for s in range(replicates.sizes["sample"]):
        coefficients = replicates["coefficients"].values[..., s]  # (component, coefficient)
        means = coefficients[:, 0] + coefficients[:, 1] * new["x"].to_numpy()[:, None]
        log_joint.append(np.log(replicates["weights"].values[:, s])
                         + st.norm(means, np.sqrt(replicates["variance"].values[:, s])).logpdf(new[["y"]].to_numpy()))
    log_joint = np.stack(log_joint)
    log_density = logsumexp(log_joint, axis=2)
    np.testing.assert_allclose(mixflow.predict_proba(tree, new, method="bootstrap").values,
                               np.exp(log_joint - log_density[..., None]).mean(axis=0), rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(mixflow.score_samples(tree, new, method="bootstrap").values,
                               logsumexp(log_density, axis=0) - np.log(log_density.shape[0]), rtol=1e-10)
    with pytest.raises(NotImplementedError, match=r"tree: the 'regression' family cannot draw new rows"):
        mixflow.sample(tree, 5)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::mixflow.warnings.SamplingWarning")  # 60 draws are too few, on purpose
def test_predictions_from_nuts_match_its_own_responsibilities(faithful):
    """On the fitted rows, predict_proba(method="mcmc") is /mcmc/responsibilities, and scipy agrees."""
    tree = mixflow.fit(mixflow.GaussianMixture(2), faithful, method=["em", "mcmc"], random_seed=1, chains=2,
                       draws=60, tune=60, sampler="pymc", progressbar=False, posterior_predictive=False)
    proba, sd = mixflow.predict_proba(tree, faithful, method="mcmc", return_sd=True)
    stored = tree["mcmc/responsibilities"]
    np.testing.assert_allclose(proba.values, stored["responsibilities_mean"].values, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sd.values, stored["responsibilities_sd"].values, rtol=1e-7, atol=1e-10)
    scores = mixflow.score_samples(tree, faithful, method="mcmc").values
    pointwise = tree["mcmc/log_likelihood"]["x"].stack(sample=("chain", "draw")).transpose("obs", "sample").values
    np.testing.assert_allclose(scores, logsumexp(pointwise, axis=1) - np.log(pointwise.shape[1]), rtol=1e-10)
    per_draw = [_scipy_gaussian(p, faithful.to_numpy()[:20])[0] for p in _draw_list(tree, "mcmc")]
    np.testing.assert_allclose(proba.values[:20], np.mean(per_draw, axis=0), rtol=1e-9, atol=1e-12)
