"""EM at the edges of float64 and of the data: scaled data, far-apart clusters, collapses, no MLE, overflow."""

import re
import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from conftest import simulate_gaussian_mixture
from scipy import stats as st
from scipy.special import gammaln

import mixflow
from mixflow.families.densities import dirichlet_log_density

SCALES = [1e-300, 1e-160, 1e150]
COVARIANCES = ["full", "tied", "diag", "spherical"]


@pytest.fixture(scope="module")
def two_clusters():
    x, _ = simulate_gaussian_mixture(150, [0.4, 0.6], [[0, 0], [6, 1]], [np.eye(2), [[1, 0.5], [0.5, 2]]], seed=3)
    return x


def _fit_quietly(model, data, **options):
    """Plain EM from one k-means start for a fixed number of iterations (tol=0): scaled and unscaled runs take
    the same steps.

    (SQUAREM keeps or rejects an extrapolation, and init="auto" ranks its short runs, by comparing
    objectives, which the log-likelihood's shift by -n d log c rounds differently at each scale:
    test_default_fits_of_scaled_data_agree checks the default fit.)
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixflow.ConvergenceWarning)
        warnings.simplefilter("error", mixflow.DegenerateComponentWarning)  # no false collapse at any scale
        return mixflow.fit(model, data, random_seed=0, tol=0, max_iter=150, accelerate=None, init="kmeans",
                           **options)


def _estimate(tree) -> dict:
    return {name: tree["em/estimate"][name].values for name in tree["em/estimate"].data_vars}


@pytest.mark.parametrize("method", ["em", "map"])
@pytest.mark.parametrize("covariance", COVARIANCES)
def test_scaled_data_give_the_fit_moved_by_the_jacobian(two_clusters, covariance, method):
    """c X: weights and responsibilities equal, means times c, log-likelihood shifted by -n d log c."""
    model = mixflow.GaussianMixture(2, covariance=covariance)
    base = _fit_quietly(model, two_clusters, method=method)
    reference = _estimate(base)
    n, d = two_clusters.shape
    dispersion = model.covariance_name()
    for c in SCALES:
        tree = _fit_quietly(model, c * two_clusters, method=method)
        found = _estimate(tree)
        np.testing.assert_allclose(found["weights"], reference["weights"], rtol=1e-12)
        np.testing.assert_allclose(found["mu"] / c, reference["mu"], rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(tree["em/responsibilities"]["responsibilities"].values,
                                   base["em/responsibilities"]["responsibilities"].values, atol=1e-12)
        shifted = base["em"].attrs["log_likelihood"] - n * d * np.log(c)
        assert tree["em"].attrs["log_likelihood"] == pytest.approx(shifted, rel=1e-14, abs=1e-9)
        assert tree["em"].attrs["bic"] == pytest.approx(base["em"].attrs["bic"] + 2 * n * d * np.log(c),
                                                        rel=1e-14, abs=1e-8)
        if c > 1:  # c^2 x the variances is representable only for c = 1e150
            np.testing.assert_allclose(found[dispersion] / c / c, reference[dispersion], rtol=1e-12)
        if method == "map":  # the log posterior moves by the data's and the parameters' Jacobians, not checked here
            assert np.isfinite(tree["em"].attrs["log_posterior"])


def test_map_on_scaled_data_records_the_default_prior_in_data_units(two_clusters):
    import json

    model = mixflow.GaussianMixture(2)
    base = json.loads(_fit_quietly(model, two_clusters, method="map")["em"].attrs["prior"])
    scaled = json.loads(_fit_quietly(model, 1e150 * two_clusters, method="map")["em"].attrs["prior"])
    np.testing.assert_allclose(np.array(scaled["scale"]) / 1e300, base["scale"], rtol=1e-12)
    np.testing.assert_allclose(np.array(scaled["mean"]) / 1e150, base["mean"], rtol=1e-12)


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_a_mean_of_zero_in_data_of_ordinary_scale_is_not_said_to_underflow(covariance):
    """Three points repeated ten times, a component on each: the one on (0, 0) has a mean of 0 in data units
    (the centre cancelled), which the check took for a value lost below the smallest double. With five
    components, two are empty, and the summary's standard errors took the log of their weight 0 unguarded."""
    x = np.repeat([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0]], 10, axis=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tree = mixflow.fit(mixflow.GaussianMixture(3, covariance=covariance), x, random_seed=1)
    assert not [w for w in caught if issubclass(w.category, mixflow.PrecisionWarning)]
    np.testing.assert_allclose(np.sort(tree["em/estimate"]["mu"].values, axis=0), [[0, 0], [1, 0], [2, 1]],
                               atol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixflow.DegenerateComponentWarning)
        empty = mixflow.fit(mixflow.GaussianMixture(5, covariance=covariance), x, random_seed=1)  # two left empty
    with warnings.catch_warnings():  # its summary's standard errors: log of a weight 0 said numpy's divide warning
        warnings.simplefilter("error", RuntimeWarning)
        assert "empty components [2, 3]" in mixflow.summary(empty, kind="text")


def test_predict_on_scaled_data_and_a_clear_error_where_the_covariance_underflowed(two_clusters):
    base = _fit_quietly(mixflow.GaussianMixture(2), two_clusters)
    labels = mixflow.predict(base, two_clusters).values
    big = _fit_quietly(mixflow.GaussianMixture(2), 1e150 * two_clusters)
    np.testing.assert_array_equal(mixflow.predict(big, 1e150 * two_clusters).values, labels)
    # 1e-600 is below the smallest double: the fit says so (it said nothing), and predict names the results, not
    # "params", which the caller never passed
    with pytest.warns(mixflow.PrecisionWarning, match=r"^data: the estimate's \['covariance'\] underflow float64 "
                                                      r"in the data's units .*multiply the columns of tiny "
                                                      r"spread \(x0 by 1e\+300, x1 by 1e\+300\) and fit again"):
        tiny = mixflow.fit(mixflow.GaussianMixture(2), 1e-300 * two_clusters, method="em", random_seed=0)
    assert (tiny["em/estimate"]["covariance"].values == 0).all()
    with pytest.raises(ValueError, match=r"^tree: the fitted estimate's \['covariance'\]: expected a positive "
                                         r"definite.*underflows"):
        mixflow.predict(tiny, 1e-300 * two_clusters)
    with warnings.catch_warnings():  # variances of 1e-40, and of 1e-304 whose covariances are subnormal: doubles
        warnings.simplefilter("error", mixflow.PrecisionWarning)
        mixflow.fit(mixflow.GaussianMixture(2), 1e-20 * two_clusters, method="em", random_seed=0)
        near = mixflow.fit(mixflow.GaussianMixture(2), 1e-152 * two_clusters, method="em", random_seed=0)
    np.testing.assert_array_equal(mixflow.predict(near, 1e-152 * two_clusters).values,
                                  mixflow.predict(big, 1e150 * two_clusters).values)


def test_subnormal_data_fit_with_no_warning_of_numpy_s_arithmetic(two_clusters):
    # data of 1e-310 (subnormal doubles): numpy's "overflow encountered in divide" (the standardisation's scale of a
    # constant feature, computed for every feature) and "in scalar power" (the rescaling the precision warning
    # suggests) reached the user beside mixflow's own warning; the fit is the unscaled one moved by the Jacobian
    base = _fit_quietly(mixflow.GaussianMixture(2), two_clusters)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.warns(mixflow.PrecisionWarning, match=r"\(x0 by 1e\+300, x1 by 1e\+300\)"):
            tiny = mixflow.fit(mixflow.GaussianMixture(2), 1e-310 * two_clusters, method="em", random_seed=0)
    shift = -two_clusters.size * np.log(1e-310)
    assert tiny["em"].attrs["log_likelihood"] == pytest.approx(base["em"].attrs["log_likelihood"] + shift, rel=1e-12)
    mixed = np.column_stack([1e-160 * two_clusters[:, 0], 1e3 * two_clusters[:, 1]])  # one constant cannot serve
    with pytest.warns(mixflow.PrecisionWarning, match=r"multiply the column of tiny spread \(x0 by 1e\+1[56]\d\)"):
        mixflow.fit(mixflow.GaussianMixture(2), mixed, method="em", random_seed=0)


def _separate_fits(parts, covariance: str) -> tuple[float, list[np.ndarray]]:
    """Log-likelihood and covariances of each cluster fitted alone (tied: their pooled covariance)."""
    n = sum(len(part) for part in parts)
    covs = [np.cov(part.T, bias=True) for part in parts]
    if covariance == "tied":
        covs = [sum(len(part) * cov for part, cov in zip(parts, covs, strict=True)) / n] * len(parts)
    elif covariance == "diag":
        covs = [np.diag(np.diag(cov)) for cov in covs]
    elif covariance == "spherical":
        covs = [np.mean(np.diag(cov)) * np.eye(len(cov)) for cov in covs]
    log_likelihood = sum(st.multivariate_normal.logpdf(part, part.mean(axis=0), cov).sum()
                         + len(part) * np.log(len(part) / n) for part, cov in zip(parts, covs, strict=True))
    return log_likelihood, covs


@pytest.mark.parametrize("covariance", COVARIANCES)
def test_a_map_whose_default_prior_outweighs_far_apart_clusters_says_so(covariance):
    """Clusters 1e4 sd apart: mclust's default scale, the whole data's covariance over K^(2/d), is their distance
    squared, and the MAP's covariances came back some 1e5 times the clusters' own, said nowhere. Clusters 3 sd
    apart, and the shipped data sets' MAP fits, are not flagged (the prior's usual pull)."""
    rng = np.random.default_rng(5)
    model = mixflow.GaussianMixture(2, covariance=covariance)
    for gap, flagged in ((1e4, True), (3.0, False)):
        x = np.vstack([rng.normal(size=(100, 2)), rng.normal(size=(80, 2)) + [gap, 0.0]])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tree = mixflow.fit(model, x, method="map", random_seed=0)
        said = [str(w.message) for w in caught if "the default prior outweighs the data" in str(w.message)]
        assert bool(said) == flagged
        if flagged:
            where = "the tied covariance" if covariance == "tied" else "the covariance of components [0, 1]"
            assert where in said[0] and "GaussianPrior(scale=...)" in said[0]
            dispersion = tree["em/estimate"][model.covariance_name()].values
            assert np.max(dispersion) > 1e4  # what was said: the prior's scale, not the clusters' unit variance
    given = mixflow.GaussianMixture(2, covariance=covariance, prior=mixflow.GaussianPrior(scale=np.eye(2) if covariance
                                    in ("full", "tied") else np.ones(2) if covariance == "diag" else 1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", mixflow.MixflowWarning)  # a scale the user gave is theirs
        mixflow.fit(given, np.vstack([rng.normal(size=(100, 2)), rng.normal(size=(80, 2)) + [1e4, 0.0]]),
                    method="map", random_seed=0)


@pytest.mark.parametrize("covariance", COVARIANCES)
def test_a_feature_of_one_value_is_not_said_to_be_outweighed_by_the_default_prior(covariance):
    """Two groups 5 sd apart beside a feature held at 3.0: that feature's spread can only be the prior's (the
    constant-feature warning says so), and the prior check said the prior outweighed the data, advising the MLE,
    whose components on that feature collapse. The groups' own covariances are the fit's without the feature."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 2))
    x[:100, 0] += 5
    model = mixflow.GaussianMixture(2, covariance=covariance)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tree = mixflow.fit(model, np.column_stack([x, np.full(200, 3.0)]), method="map", random_seed=1)
    said = [type(w.message).__name__ for w in caught]
    assert "ConstantFeatureWarning" in said and not any("outweighs" in str(w.message) for w in caught), said
    without = mixflow.fit(model, x, method="map", random_seed=1)
    name = model.covariance_name()
    np.testing.assert_allclose(tree["em/estimate"]["mu"].values[:, :2], without["em/estimate"]["mu"].values,
                               rtol=0.02, atol=0.01)
    if covariance in ("full", "tied"):  # the varying features' block, to the prior's slightly different pull
        np.testing.assert_allclose(tree["em/estimate"][name].values[..., :2, :2], without["em/estimate"][name].values,
                                   rtol=0.05, atol=0.01)


def test_the_prior_check_takes_a_tied_covariance_pooled_and_trimmed_components_away():
    """A tight small group beside a large one, tied: the shared covariance is the large group's (0.94), not the
    prior's, though the prior's scale exceeds the small group's own scatter; and a MAP fit whose trim drops a
    component (the check indexed every declared component: IndexError)."""
    rng = np.random.default_rng(1)
    x = np.r_[rng.normal(0, 1, 1000), rng.normal(10, 0.01, 30)][:, None]
    with warnings.catch_warnings():
        warnings.simplefilter("error", mixflow.MixflowWarning)
        mixflow.fit(mixflow.GaussianMixture(2, covariance="tied"), x, method="map", random_seed=0, n_init=2)
    x = np.r_[rng.normal(0, 1, (300, 2)), rng.normal(5, 1, (300, 2)), rng.normal(20, 1, (3, 2))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixflow.MixflowWarning)
        tree = mixflow.fit(mixflow.GaussianMixture(3), x, method="map", trim=0.02, random_seed=0, n_init=2)
    assert tree["em/estimate"].sizes["component"] == 2


@pytest.mark.parametrize("covariance", COVARIANCES)
@pytest.mark.parametrize(("gap", "rtol_ll", "rtol_cov"), [(1e4, 1e-12, 1e-9), (1e6, 1e-12, 1e-9), (1e9, 1e-9, 1e-7)])
def test_far_apart_clusters_are_fitted_separately_without_a_collapse_warning(gap, rtol_ll, rtol_cov, covariance):
    """Clusters 1e4, 1e6 and 1e9 sd apart: each component is its cluster's own MLE, nothing floored.

    The floor of 1e-6 x the total data variance inflated these covariances 26-fold (1e4) and 250000-fold
    (1e6), with log-likelihoods -816.7 and -1644.3 instead of -592.8 and -609.8. The one-pass moments about
    the data mean keep about eps x (gap / sd)^2 of relative precision (1e-4 at 1e6: log-likelihood 0.014 off,
    covariances 1e-4; none at 1e9, where their floor took both clusters for collapsed); centred steps bring
    both to the precision of the data themselves (eps x 1e9 of an sd at 1e9).
    """
    rng = np.random.default_rng(5)
    a = rng.normal(size=(100, 2))
    b = rng.normal(size=(80, 2)) @ np.array([[1.0, 0.3], [0.0, 0.7]]) + [gap, 0.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error", mixflow.DegenerateComponentWarning)
        tree = mixflow.fit(mixflow.GaussianMixture(2, covariance=covariance), np.vstack([a, b]), random_seed=0)
    log_likelihood, covs = _separate_fits([a, b], covariance)
    assert tree["em"].attrs["log_likelihood"] == pytest.approx(log_likelihood, rel=rtol_ll)
    assert tree["em"].attrs["centred_steps"] >= 1
    estimate = tree["em/estimate"]
    fitted = {"full": lambda: estimate["covariance"].values,
              "tied": lambda: [estimate["covariance"].values] * 2,
              "diag": lambda: [np.diag(v) for v in estimate["variance"].values],
              "spherical": lambda: [v * np.eye(2) for v in estimate["variance"].values]}[covariance]()
    for got, expected in zip(fitted, covs, strict=True):
        np.testing.assert_allclose(got, expected, rtol=rtol_cov, atol=rtol_cov)
    # the means to the data's own precision: working units centre the data, which rounds them to eps x gap
    data_precision = 4 * np.finfo(float).eps * gap
    np.testing.assert_allclose(estimate["mu"].values, [a.mean(axis=0), b.mean(axis=0)], rtol=1e-12,
                               atol=max(rtol_cov, data_precision))
    assert tree["em"].attrs["collapsed_components"] == "[]"


def test_centred_steps_are_not_taken_where_the_fast_path_is_exact(two_clusters):
    tree = mixflow.fit(mixflow.GaussianMixture(2), two_clusters, random_seed=0)
    assert tree["em"].attrs["centred_steps"] == 0


@pytest.mark.parametrize("covariance", COVARIANCES)
def test_a_component_on_one_repeated_point_is_still_reported_collapsed(covariance):
    x = np.vstack([np.random.default_rng(1).normal(size=(60, 2)), np.tile([[4.0, -3.0]], (5, 1))])
    start = {"weights": np.array([0.9, 0.1]), "mu": np.array([[0.0, 0.0], [4.0, -3.0]])}
    start.update({"full": {"covariance": np.array([np.eye(2), 0.01 * np.eye(2)])},
                  "tied": {"covariance": np.eye(2)},
                  "diag": {"variance": np.array([[1.0, 1.0], [0.01, 0.01]])},
                  "spherical": {"variance": np.array([1.0, 0.01])}}[covariance])
    if covariance == "tied":  # one shared covariance cannot collapse onto one component's point
        return
    with pytest.warns(mixflow.DegenerateComponentWarning, match=r"component \[1\] collapsed.*repeated points"):
        tree = mixflow.fit(mixflow.GaussianMixture(2, covariance=covariance), x, init=start)
    assert tree["em"].attrs["collapsed_components"] == "[1]"
    assert np.isfinite(tree["em"].attrs["log_likelihood"])


@pytest.mark.parametrize("covariance", ["full", "diag", "spherical"])
def test_a_component_on_one_repeated_point_a_million_sds_away_is_still_reported_collapsed(covariance):
    """Far from the data centre EM's passes are centred ones, whose floor is the data's own precision: five
    copies of one row are still below it (their variance is rounding), and reported."""
    x = np.vstack([np.random.default_rng(1).normal(size=(60, 2)), np.tile([[1e6, -3.0]], (5, 1))])
    with pytest.warns(mixflow.DegenerateComponentWarning, match=r"component \[1\] collapsed"):
        tree = mixflow.fit(mixflow.GaussianMixture(2, covariance=covariance), x, random_seed=0)
    assert tree["em"].attrs["collapsed_components"] == "[1]"


def test_a_tied_mle_with_a_feature_of_few_values_says_it_has_no_maximum():
    """A tied covariance with a feature of K distinct values or fewer (a 0/1 code at K=2): components each on one
    value make that feature's shared variance zero, and the likelihood grows without bound (the heart data's
    censoring code, from statsmodels: -325, -166, -7.5 as the variance goes 1e-2, 1e-4, 1e-6); the fit returned
    a local maximum and said nothing. A feature of more values than components is a start instead."""
    rng = np.random.default_rng(5)
    code = rng.integers(2, size=120).astype(float)
    x = pd.DataFrame({"a": rng.normal(size=120), "b": rng.normal(size=120) + code, "code": code})
    model = mixflow.GaussianMixture(2, covariance="tied")
    with pytest.warns(mixflow.DegenerateComponentWarning,
                      match=r"data: feature code \(2\) takes no more distinct values than the 2 components.*map"):
        mixflow.fit(model, x, random_seed=0)
    from mixflow.engines.starts import value_starts

    three = x.assign(code=np.array([0.0, 1.0, 5.0])[rng.integers(3, size=120)])
    with warnings.catch_warnings():
        warnings.simplefilter("error", mixflow.DegenerateComponentWarning)
        mixflow.fit(model, three, random_seed=0)
    fewest = model.fewest_values_for_starts(map_fit=False)
    assert fewest == 3 and value_starts(three.to_numpy(), fewest) == ["feature-values:2", "feature-gaps:2"]
    assert value_starts(x.to_numpy(), fewest) == []
    assert mixflow.GaussianMixture(2).fewest_values_for_starts(map_fit=False) is None
    assert not any(str(name).startswith("feature-") for name in  # the 0/1 code is no start: it leads to no maximum
                   _fit_quietly_default(model, x)["em/sample_stats"]["start"].values)


def _fit_quietly_default(model, data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixflow.MixflowWarning)
        return mixflow.fit(model, data, random_seed=0)


@pytest.mark.parametrize(("rows", "covariance"), [(2, "full"), (3, "full"), (3, "tied")])
def test_the_mle_never_builds_the_prior_and_names_the_data_problem(rows, covariance):
    """n <= d (and two distinct repeated points): a warning naming the data and the fix, not a prior error."""
    x = np.random.default_rng(0).normal(size=(rows, 3)) if rows < 3 else np.repeat(
        np.random.default_rng(0).normal(size=(2, 3)), [3, 4], axis=0)
    model = mixflow.GaussianMixture(2, covariance=covariance)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", mixflow.DegenerateComponentWarning)
        tree = mixflow.fit(model, x, method="em", random_seed=0, n_init=1)
    messages = [str(w.message) for w in caught if issubclass(w.category, mixflow.DegenerateComponentWarning)]
    assert re.search(r"data: 2 distinct rows for 2 components and 3 features, where a .*method='map'", messages[0])
    assert any(re.search(r"collapsed onto a point or a subspace.*method='map'", message) for message in messages)
    assert "prior" not in tree["em"].attrs
    # MAP exists: the default scale falls back on the data variances (mclust's choice for n <= d)
    with warnings.catch_warnings():
        warnings.simplefilter("error", mixflow.DegenerateComponentWarning)
        mapped = mixflow.fit(model, x, method="map", random_seed=0, n_init=1)
    import json

    scale = np.array(json.loads(mapped["em"].attrs["prior"])["scale"])
    np.testing.assert_allclose(scale, np.diag(x.var(axis=0)) / 2 ** (2 / 3), rtol=1e-12)


def _degenerate_messages(model, data, **options) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mixflow.fit(model, data, method="em", random_seed=0, **options)
    return [str(w.message) for w in caught if issubclass(w.category, mixflow.MixflowWarning)]


@pytest.mark.parametrize("covariance", ["full", "tied"])
def test_features_that_are_functions_of_others_are_named_as_the_data_problem(covariance):
    # a copied column and one that is 2 a - 3 b + 1 got the generic "too few distinct rows, e.g. repeated points"
    # and "more restarts (n_init=20) may find it", though no start can: the data lie on a subspace
    rng = np.random.default_rng(0)
    a, b = np.concatenate([rng.normal(0, 1, 50), rng.normal(5, 1, 50)]), rng.normal(0, 1, 100)
    frame = pd.DataFrame({"a": a, "b": b, "a2": a, "c": 2 * a - 3 * b + 1})
    said = _degenerate_messages(mixflow.GaussianMixture(2, covariance=covariance), frame, n_init=2)
    assert said[0] == ("data: features 'a2' and 'c' are linear functions of others ('a2' of 'a'; 'c' of 'a' and "
                       "'b', within rounding), so the data lie on a lower-dimensional subspace: a "
                       f"{covariance!r} covariance "
                       "is singular there at any number of components and has no maximum-likelihood estimate; leave "
                       "'a2' and 'c' out, or use covariance='diag' or 'spherical', or method='map' (the prior keeps "
                       "it regular)")
    assert not any("more restarts" in message or "fewer components" in message for message in said)
    one = _degenerate_messages(mixflow.GaussianMixture(1, covariance=covariance), frame[["a", "b", "c"]])
    assert one[0].startswith("data: feature 'c' is a linear function of 'a' and 'b' (within rounding), so")
    # weighted rows, and a constant column (warned of on its own) beside: the same diagnosis
    weighted = _degenerate_messages(mixflow.GaussianMixture(1, covariance=covariance),
                                    frame[["a", "b", "c"]].assign(k=1.0), weights=np.arange(100) % 3 + 1.0)
    assert [m for m in weighted if m.startswith("data: feature 'c'")] == [one[0]]
    # other covariance types fit such data; independent features say nothing
    assert not any(m.startswith("data:") for m in _degenerate_messages(mixflow.GaussianMixture(2, covariance="diag"),
                                                                        frame, n_init=2))
    assert _degenerate_messages(mixflow.GaussianMixture(1, covariance=covariance), frame[["a", "b"]]) == []


def test_real_data_of_independent_features_are_not_said_to_be_dependent():
    from sklearn import datasets

    from mixflow.families.gaussian.model import dependent_features

    for load in (datasets.load_wine, datasets.load_iris, datasets.load_breast_cancer, datasets.load_diabetes):
        x = load().data
        assert dependent_features(x, np.ones(len(x))) == [], load.__name__
    # one row off the plane age = education + experience + 6 (R's CPS1985 has such a row) is no dependence
    rng = np.random.default_rng(1)
    education, experience = rng.integers(6, 18, 534).astype(float), rng.integers(0, 40, 534).astype(float)
    age = education + experience + 6
    age[17] -= 4
    assert dependent_features(np.column_stack([education, experience, age]), np.ones(534)) == []
    age[17] += 4
    assert dependent_features(np.column_stack([education, experience, age]), np.ones(534)) == [(2, [0, 1])]


def test_advice_at_one_component_can_be_followed():
    # K=1 on 4 rows of 5 features was told "compare fewer components", "or fewer components" and "more restarts
    # (n_init=20) may find it", none of which a fit of one component (one start) can take
    x = np.random.default_rng(0).normal(size=(4, 5))
    said = _degenerate_messages(mixflow.GaussianMixture(1), x)
    assert said[0] == ("n_components: 1 component has 20 free parameters, as many as or more than the 4 observations: "
                       "the data cannot determine them; use fewer features or a model of fewer parameters")
    assert said[1].endswith("use method='map' (the prior keeps it regular) or a covariance type with fewer parameters")
    assert said[2].endswith("The likelihood is unbounded there; use method='map' (the prior removes the singularity).")
    assert said[3] == ("no restart reached a sound fit: all 1 restart ended with a collapsed or emptied component, "
                       "so the fit returned is degenerate (attrs['degenerate'])")
    assert len(said) == 4


def test_data_whose_estimate_overflows_get_an_error_saying_so():
    x = np.array([[1.0e300], [1.1e300], [1.2e300], [-1.0e300], [-1.2e300], [-1.1e300]])
    with pytest.raises(ValueError, match=r"data: expected values whose squares fit in float64, got feature "
                                         r"\['x0'\] with values up to 1.2e\+300, which overflow; rescale it"):
        mixflow.fit(mixflow.GaussianMixture(2), x, random_seed=0)
    tree = mixflow.fit(mixflow.GaussianMixture(2), x / 1e300, random_seed=0)
    assert tree["em/estimate"]["weights"].values == pytest.approx([0.5, 0.5])


def test_rows_no_component_reaches_get_an_error_not_nan_labels(two_clusters):
    """No NaN responsibilities reach predict's argmax: rows of zero density under every component are named."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixflow.MixflowWarning)
        tree = mixflow.fit(mixflow.PoissonMixture(2), np.zeros(10), random_seed=0)
    assert (tree["em/estimate"]["rate"].values == 0).all()
    with pytest.raises(ValueError, match=r"data: expected every row to have a positive density.*at 2 rows \[1, 2\]: "
                                         r"the rows lie"):
        mixflow.predict(tree, np.array([0.0, 3.0, 1.0]))
    gaussian = _fit_quietly(mixflow.GaussianMixture(2), two_clusters)
    # a row far out but representable goes to the nearest component; one whose squares overflow is refused
    labels = mixflow.predict(gaussian, np.array([[0.0, 0.0], [1e150, 1e150]]))
    assert labels[1] == np.argmax(gaussian["em/estimate"]["mu"].values[:, 0])
    with pytest.raises(ValueError, match=r"new_data: expected values whose squares fit in float64"):
        mixflow.predict(gaussian, np.array([[0.0, 0.0], [1e200, 1e200]]))


@pytest.mark.parametrize("method", ["em", "map"])
def test_soft_kmeans_on_scaled_data_with_its_variance_scaled_along(two_clusters, method):
    """The fixed variance scales with the data (c^2 sigma^2); 1e-300 does not apply, as 1e-600 is no double.

    At c = 1e-160 the variance c^2 sigma^2 is a subnormal double with about three significant digits.
    """
    base = _fit_quietly(mixflow.SoftKMeans(2, 1.5), two_clusters, method=method)
    reference = _estimate(base)
    n, d = two_clusters.shape
    for c, rtol in [(1e-160, 1e-3), (1e-150, 1e-12), (1e150, 1e-12)]:
        tree = _fit_quietly(mixflow.SoftKMeans(2, 1.5 * c * c), c * two_clusters, method=method)
        found = _estimate(tree)
        np.testing.assert_allclose(found["weights"], reference["weights"], rtol=rtol)
        np.testing.assert_allclose(found["mu"] / c, reference["mu"], rtol=rtol, atol=rtol)
        shifted = base["em"].attrs["log_likelihood"] - n * d * np.log(c)
        assert tree["em"].attrs["log_likelihood"] == pytest.approx(shifted, rel=rtol / 100, abs=1e-9)


@pytest.mark.parametrize("likelihood", ["interval", "midpoint"])
def test_grouped_data_scaled_give_the_fit_moved(likelihood):
    """Class limits times c: means times c, variances times c^2; class probabilities are unitless (interval),
    the midpoint density moves by -N log c for N counted observations."""
    crabs = mixflow.load_dataset("crabs")
    counts = crabs["count"].to_numpy(dtype=float)
    limits = crabs[["lower", "upper"]].to_numpy()

    def fit(c):
        model = mixflow.GroupedGaussianMixture(2, likelihood=likelihood, open_below=0.5835 * c, open_above=0.6915 * c)
        return _fit_quietly(model, c * limits, weights=counts)

    base = fit(1.0)
    reference = _estimate(base)
    for c in SCALES:
        tree = fit(c)
        found = _estimate(tree)
        np.testing.assert_allclose(found["weights"], reference["weights"], rtol=1e-10)
        np.testing.assert_allclose(found["mu"] / c, reference["mu"], rtol=1e-10)
        if c > 1:
            np.testing.assert_allclose(found["variance"] / c / c, reference["variance"], rtol=1e-10)
        shift = 0.0 if likelihood == "interval" else -counts.sum() * np.log(c)
        assert tree["em"].attrs["log_likelihood"] == pytest.approx(base["em"].attrs["log_likelihood"] + shift,
                                                                   rel=1e-12, abs=1e-8)


def _zero_weight_starts(x_gaussian):
    return [
        (mixflow.PoissonMixture(2), np.r_[np.zeros(20), np.full(20, 5.0)],
         {"weights": np.array([1.0, 0.0]), "rate": np.array([2.0, 6.0])}),
        (mixflow.GaussianMixture(2), x_gaussian,
         {"weights": np.array([0.0, 1.0]), "mu": np.array([[0.0, 0.0], [6.0, 1.0]]),
          "covariance": np.array([np.eye(2), np.eye(2)])}),
        (mixflow.SoftKMeans(2, 1.0), x_gaussian,
         {"weights": np.array([0.0, 1.0]), "mu": np.array([[0.0, 0.0], [6.0, 1.0]])}),
        (mixflow.RegressionMixture(2, "tuned ~ stretchratio"), mixflow.load_dataset("tone"),
         {"weights": np.array([0.0, 1.0]), "coefficients": np.array([[1.9, 0.0], [0.0, 1.0]]),
          "variance": np.array([0.01, 0.01])}),
        (mixflow.GroupedGaussianMixture(2, open_below=0.5835, open_above=0.6915),
         mixflow.load_dataset("crabs")[["lower", "upper"]],
         {"weights": np.array([1.0, 0.0]), "mu": np.array([0.63, 0.66]), "variance": np.array([2e-4, 2e-4])}),
    ]


@pytest.mark.parametrize("case", [0, 1, 2, 3, 4])
def test_a_component_stuck_at_zero_weight_is_reported_for_every_family(two_clusters, case):
    model, x, start = _zero_weight_starts(two_clusters)[case]
    with pytest.warns(mixflow.DegenerateComponentWarning, match=r"component \[\d\] is empty \(weight \["):
        tree = mixflow.fit(model, x, init=start)
    empty = int(np.flatnonzero(tree["em/estimate"]["weights"].values < 1e-10)[0])
    assert tree["em"].attrs["empty_components"] == f"[{empty}]"
    ordinary = mixflow.fit(model, x, random_seed=0)
    assert ordinary["em"].attrs["empty_components"] == "[]"


@pytest.mark.parametrize("method", ["em", "map"])
@pytest.mark.parametrize("scaled", ["response", "covariate", "both"])
def test_regression_on_scaled_data_gives_the_fit_moved(scaled, method):
    """y -> c y: coefficients times c, variances times c^2, log-likelihood - n log c; x -> c x: slopes / c."""
    tone = mixflow.load_dataset("tone")
    model = mixflow.RegressionMixture(2, "tuned ~ stretchratio")
    base = _fit_quietly(model, tone, method=method)
    reference = _estimate(base)
    n = len(tone)
    for c in SCALES:
        data = tone.copy()
        y, x = (c if scaled != "covariate" else 1.0), (c if scaled != "response" else 1.0)
        data["tuned"] *= y
        data["stretchratio"] *= x
        tree = _fit_quietly(model, data, method=method)
        found = _estimate(tree)
        np.testing.assert_allclose(found["weights"], reference["weights"], rtol=1e-10)
        np.testing.assert_allclose(found["coefficients"][:, 0] / y, reference["coefficients"][:, 0], rtol=1e-10)
        np.testing.assert_allclose(found["coefficients"][:, 1] * x / y, reference["coefficients"][:, 1], rtol=1e-10)
        if y > 1e-150:  # y^2 x the variance is representable
            np.testing.assert_allclose(found["variance"] / y / y, reference["variance"], rtol=1e-10)
        shifted = base["em"].attrs["log_likelihood"] - n * np.log(y)
        assert tree["em"].attrs["log_likelihood"] == pytest.approx(shifted, rel=1e-12, abs=1e-8)


def test_no_restart_with_a_finite_objective_is_an_error_naming_the_data_not_an_all_nan_slice():
    from mixflow.engines.em import _check_some_finite

    _check_some_finite(np.array([np.nan, -3.0]))
    with pytest.raises(ValueError, match=r"data: expected EM to reach a finite objective from some start, got -inf "
                                         r"or nan from all 2: .*units"):
        _check_some_finite(np.array([np.nan, -np.inf]))


def test_declared_values_that_leave_the_likelihood_undefined_are_named_beside_the_data():
    # a prior's dof of 1e308 (accepted, a finite number): every start's objective NaN, and the error said only "the
    # data leave the likelihood undefined ... check the data's range and units" of ordinary data
    x = np.r_[np.linspace(-1.0, 1.0, 30), np.linspace(4.0, 6.0, 30)]
    said = r"got nan from all \d+: the data leave the likelihood undefined .* or the model's declared values do \(a MAP"
    with warnings.catch_warnings(), pytest.raises(ValueError, match=said):
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy's overflows on the way
        mixflow.fit(mixflow.GaussianMixture(2, prior={"dof": 1e308}), x, method="map", random_seed=0)


def test_the_report_names_an_empty_component(two_clusters, tmp_path, no_report_plots):
    model, x, start = _zero_weight_starts(two_clusters)[2]
    with pytest.warns(mixflow.DegenerateComponentWarning, match="is empty"):
        tree = mixflow.fit(model, x, init=start)
    text = mixflow.report(tree, tmp_path / "report.html").read_text(encoding="utf-8")
    assert "component [0] is empty (weight zero)" in text


@pytest.mark.parametrize("c", [1e-300, 1e-160, 1e150])
def test_default_fits_of_scaled_data_agree(c):
    """The default call (SQUAREM, Aitken's stop) on c X lands on the fit of X moved, to its tolerance."""
    x, _ = simulate_gaussian_mixture(300, [0.4, 0.6], [[0.0, 0.0], [3.0, 1.0]],
                                     [[[1.0, 0.3], [0.3, 0.5]], [[0.6, 0.0], [0.0, 1.5]]], seed=11)
    model = mixflow.GaussianMixture(2, covariance="full")
    base = mixflow.fit(model, x, random_seed=0)
    scaled = mixflow.fit(model, c * x, random_seed=0)
    np.testing.assert_allclose(_estimate(scaled)["weights"], _estimate(base)["weights"], rtol=1e-6)
    np.testing.assert_allclose(_estimate(scaled)["mu"] / c, _estimate(base)["mu"], rtol=1e-6, atol=1e-6)
    shift = -x.size * np.log(c)
    assert scaled["em"].attrs["log_likelihood"] == pytest.approx(base["em"].attrs["log_likelihood"] + shift,
                                                                 rel=1e-9)


@pytest.mark.parametrize("c", [1e-160, 1e150])
def test_standard_errors_of_scaled_data_move_with_the_data(two_clusters, c):
    """The observed information's errors in data units times c (means) and c^2 (covariances): at 1e150 the squares
    of the covariances' derivatives overflowed (errors inf, intervals 0 to inf); at 1e-160 the derivatives of the
    subnormal covariances rounded to 0, and so did their errors."""
    from mixflow.analysis.information import standard_errors

    model = mixflow.GaussianMixture(2)
    base = standard_errors(_fit_quietly(model, two_clusters))
    scaled = standard_errors(_fit_quietly(model, c * two_clusters))
    # the Hessian is by finite differences of the log-likelihood, which c shifts by -n d log c (about 1e5 here):
    # its rounding leaves some 5 digits
    np.testing.assert_allclose(scaled["weights"].values, base["weights"].values, rtol=1e-4)
    np.testing.assert_allclose(scaled["mu"].values / c, base["mu"].values, rtol=1e-4)
    if c > 1:
        np.testing.assert_allclose(scaled["covariance"].values / c / c, base["covariance"].values, rtol=1e-4)
    else:  # a covariance near 1e-320 is subnormal, too few digits for a derivative: no error, rather than 0
        assert np.isnan(scaled["covariance"].values).all()


def test_posterior_sds_of_draws_near_1e300_are_finite():
    """The sd of draws of a covariance near 1e300 (data in units of 1e150): numpy's squares overflowed to inf."""
    from mixflow.families.scaling import scaled_std

    draws = np.random.default_rng(0).normal(3.0, 0.5, size=(4, 200, 3))
    base = xr.DataArray(draws, dims=("chain", "draw", "x"))
    for c in (1e300, 1e-300, 1.0):
        found = scaled_std(c * base, ("chain", "draw"), ddof=1)
        np.testing.assert_allclose(found.values / c, base.std(("chain", "draw"), ddof=1).values, rtol=1e-12)


def test_the_regression_pymc_model_of_data_near_1e150_builds_without_overflow():
    """Its data-unit coefficients took the shifts as Python floats, which PyTensor tries as float32 first:
    "overflow encountered in cast" reached the user of method=["map", "mcmc"]."""
    from mixflow.data import validate_data

    tone = mixflow.load_dataset("tone")[["tuned", "stretchratio"]] * 1e150
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        pymc_model = mixflow.RegressionMixture(2, "tuned ~ stretchratio").pymc_model(validate_data(tone))
    assert "coefficients" in pymc_model.named_vars


def test_samplers_on_data_whose_variances_underflow_name_the_data(two_clusters):
    """Data near 1e-300: EM fits them (in standardised units), but their variances (1e-600) are no doubles, so NUTS
    and ADVI, which draw in data units, cannot; the error said "reference['covariance']", an argument never given."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixflow.MixflowWarning)
        with pytest.raises(mixflow.InputError, match=r"^data: NUTS and ADVI draw the parameters in the data's units.*"
                                                     r"largest magnitude 7.99e-300\) .*rescale the data"):
            mixflow.fit(mixflow.GaussianMixture(2), 1e-300 * two_clusters, method=["map", "advi"], random_seed=0)


def test_dirichlet_log_density_of_an_empty_component_forms_no_nan():
    """A weight of exactly 0 under concentration 1 counts 0 (0 * log 0 = 0), without numpy's invalid-value warning."""
    concentration = np.array([1.0, 2.0, 3.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        value = dirichlet_log_density(np.array([0.0, 0.5, 0.5]), concentration)
    expected = gammaln(6.0) - gammaln(concentration).sum() + 1.0 * np.log(0.5) + 2.0 * np.log(0.5)
    assert value == pytest.approx(expected, rel=1e-14)


def test_map_on_collinear_features_warns_nothing_from_numpy():
    """Two of four features are combinations of the others: a MAP short run empties a component, which
    leaked "invalid value encountered in multiply" from the Dirichlet term to the caller."""
    rng = np.random.default_rng(1)
    base = np.vstack([rng.normal(0, 1, (200, 2)), rng.normal(4, 1, (200, 2))])
    x = np.column_stack([base, base @ [[1.0, 0.5], [2.0, -1.0]]]) * [1.0, 50.0, 0.02, 1000.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        tree = mixflow.fit(mixflow.GaussianMixture(2), x, method="map", random_seed=1)
    assert np.isfinite(tree["em"].attrs["log_posterior"])


def test_components_with_proportional_densities_are_found_and_none_are_invented():
    """duplicate_components: the log densities' difference the same on every row to 1e-3; no scale enters."""
    from mixflow.engines.em import duplicate_components

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2))
    covariance = np.array([[1.0, 0.3], [0.3, 2.0]])

    def gaussian(means, covariances, weights, points=x):
        return np.column_stack([np.log(w) + st.multivariate_normal(m, c).logpdf(points)
                                for m, c, w in zip(means, covariances, weights, strict=True)])

    weights, ones = np.ones(200), [0.2, 0.5, 0.3]
    same = gaussian([[0, 1], [3, 3], [0, 1]], [covariance, np.eye(2), covariance], ones)
    assert duplicate_components(same, weights) == [(0, 2)]
    apart = gaussian([[0, 1], [3, 3], [0, 1.01]], [covariance, np.eye(2), covariance], ones)
    assert duplicate_components(apart, weights) == []  # a mean 0.01 sd away moves the ratio by more than 1e-3
    assert duplicate_components(apart, np.where(np.arange(200) < 100, 0.0, 1.0)) == []  # half the rows weigh 0
    assert duplicate_components(np.where(np.arange(200)[:, None] < 100, apart, same), np.where(
        np.arange(200) < 100, 0.0, 1.0)) == [(0, 2)]  # rows of weight 0 are no data
    # two tight groups 3e-4 apart (a few of their own sds, 1e-4), however small that is on the data's scale
    tight = np.concatenate([rng.normal(0.0, 1e-4, (50, 2)), rng.normal(3e-4, 1e-4, (50, 2))])
    small = np.eye(2) * 1e-8
    assert duplicate_components(gaussian([[0, 0], [3e-4, 3e-4]], [small, small], [0.5, 0.5], tight),
                                np.ones(100)) == []
    # Poisson: two components with rate 0 have density 1 at the zeros and 0 elsewhere (rows that tell nothing)
    counts = np.arange(6)
    poisson = np.column_stack([np.log(w) + st.poisson(r).logpmf(counts) for r, w in zip([0.0, 2.0, 0.0], ones,
                                                                                          strict=True)])
    assert duplicate_components(poisson, np.ones(6)) == [(0, 2)]
    poisson[1:, 2] = st.poisson(1e-9).logpmf(counts[1:])  # a rate above 0: a density on the other counts
    assert duplicate_components(poisson, np.ones(6)) == []


@pytest.mark.parametrize("shift", [1e12, 1e14])
def test_data_offset_far_beyond_their_spread_give_the_log_likelihood_of_the_data_as_given(shift):
    """Two clusters of sd about 1 at 1e12 and 1e14: the same float values moved back by the shift (exactly) are the
    same data, so the two fits' log-likelihoods agree to 1e-10 relative and equal scikit-learn's maximum of them.
    Standardising by the largest value first rounded every value by eps x 1e14 = 0.016, and the log-likelihood
    reported at 1e14 was 0.085 above the data's maximum."""
    from sklearn.mixture import GaussianMixture as SklearnMixture

    rng = np.random.default_rng(0)
    shifted = np.vstack([rng.normal(0, 1, (150, 2)), rng.normal([4, 1], [1, 0.5], (100, 2))]) + shift
    back = shifted - shift  # exact: the same values
    far = mixflow.fit(mixflow.GaussianMixture(2), shifted, random_seed=1)["em"].attrs["log_likelihood"]
    near = mixflow.fit(mixflow.GaussianMixture(2), back, random_seed=1)["em"].attrs["log_likelihood"]
    reference = SklearnMixture(2, tol=1e-12, n_init=10, max_iter=5000, reg_covar=0.0, random_state=0).fit(back)
    assert far == pytest.approx(near, rel=1e-10)
    assert far == pytest.approx(reference.score(back) * len(back), rel=1e-9)
    da = pytest.importorskip("dask.array")  # Dask data are moved alike (their first pass finds the extremes)
    chunked = mixflow.fit(mixflow.GaussianMixture(2), da.from_array(shifted, chunks=60), random_seed=1)
    assert chunked["em"].attrs["log_likelihood"] == pytest.approx(near, rel=1e-10)


def test_an_unmet_stop_without_aitken_estimates_says_none_could_be_formed():
    # a run stopped by max_iter while its gains still grew has no Aitken estimate (inf): the warning said "inf per
    # observation"; it says that none can be formed, and why
    from mixflow.engines.em import CONVERGENCE_CRITERION, PARAMETER_CRITERION, EMOptions, Run, _warn_about

    for criterion, gap, parameter_gap, said in (
            (CONVERGENCE_CRITERION, float("inf"), float("nan"),
             "still to gain, none (the gains did not shrink over the last steps), and of the parameters' distance "
             "to their limit, none (the parameters' changes did not shrink over the last steps), are not both"),
            (CONVERGENCE_CRITERION, 3e-6, 2e-4, "still to gain, 3e-08 per observation, and of the parameters' "
                                                "distance to their limit, 0.0002, are not both"),
            (PARAMETER_CRITERION, 0.0, float("inf"), "distance to their limit, none (the parameters' changes did not "
                                                     "shrink over the last steps), is not below sqrt(tol)")):
        run = Run(params={}, history_objective=[-3.0, -2.0, -1.0], criterion=criterion, aitken_gap=gap,
                  parameter_gap=parameter_gap)
        with pytest.warns(mixflow.warnings.ConvergenceWarning) as caught:
            _warn_about(run, EMOptions(max_iter=3), mixflow.PoissonMixture(2), [], 100.0)
        [message] = [str(w.message) for w in caught]
        assert said in message and "inf" not in message and "nan" not in message, message
    # on more than 1e8 observations the parameters' bound is 0.1 / sqrt(n), and the warning says which it was
    run = Run(params={}, history_objective=[-3.0, -2.0, -1.0], criterion=PARAMETER_CRITERION, aitken_gap=0.0,
              parameter_gap=3e-6)
    with pytest.warns(mixflow.warnings.ConvergenceWarning, match=r"distance to their limit, 3e-06, is not below "
                                                                 r"0\.1/sqrt\(n\)=1e-06 \(a tenth of a standard "
                                                                 r"error's order, below sqrt\(tol\) at this n\)"):
        _warn_about(run, EMOptions(max_iter=3), mixflow.PoissonMixture(2), [], 1e10)


def test_a_flat_components_covariance_is_judged_positive_definite_by_cholesky_not_by_its_eigenvalues():
    """A component on two rows of stackloss (K=3, the second of three folds): variances 6.25 and 2e-24 side by side.

    Its covariance is positive definite (floored: a Cholesky factor with every diagonal entry positive), but its
    smallest eigenvalue, 2e-24, is far below the eps x 6.5 to which eigvalsh knows it, and came out -1.3e-32: the
    fold's fit could not be scored, and select_k failed.
    """
    from mixflow.families.gaussian.units import check_positive_definite, dispersion_to_working

    stored = np.array([
        [6.2500000000013936, 4.818549615456194e-28, 1.58229992187553e-28, 1.249999999999999],
        [4.818549615456194e-28, 2.0289520593886817e-23, 1.6454556648030284e-28, 6.158791124263646e-29],
        [1.58229992187553e-28, 1.6454556648030286e-28, 2.037609304723413e-24, 2.0224041449135242e-29],
        [1.249999999999999, 6.158791124263646e-29, 2.0224041449135242e-29, 0.25000000000005473]])
    assert np.all(np.diag(np.linalg.cholesky(stored)) > 0)
    check_positive_definite("covariance", stored[None], "full")
    check_positive_definite("covariance", dispersion_to_working("full", stored, STACKLOSS.std(axis=0)), "full")
    indefinite = stored.copy()
    indefinite[3, 3] = 0.2499  # below 1.25^2 / 6.25: the Schur complement negative
    with pytest.raises(mixflow.InputError, match=r"component \[1\] in the"):
        check_positive_definite("covariance", np.stack([stored, indefinite]), "full")


STACKLOSS = np.array([  # R's stackloss (Brownlee 1965): stack loss, air flow, water temperature, acid concentration
    [42, 80, 27, 89], [37, 80, 27, 88], [37, 75, 25, 90], [28, 62, 24, 87], [18, 62, 22, 87], [18, 62, 23, 87],
    [19, 62, 24, 93], [20, 62, 24, 93], [15, 58, 23, 87], [14, 58, 18, 80], [14, 58, 18, 89], [13, 58, 17, 88],
    [11, 58, 18, 82], [12, 58, 19, 93], [8, 50, 18, 89], [7, 50, 18, 86], [8, 50, 19, 72], [8, 50, 19, 79],
    [9, 50, 20, 80], [15, 56, 20, 82], [15, 70, 20, 91]], dtype=float)


@pytest.mark.parametrize(("k", "n_folds"), [(3, 3), (4, 3), (4, 5)])
def test_select_k_counts_degenerate_fold_fits_instead_of_failing_on_them(k, n_folds):
    # 21 rows in 4 dimensions: every fold's fit at these K has a component on a few rows
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = mixflow.select_k(mixflow.GaussianMixture(1), STACKLOSS, ks=[k], methods=("em",), n_folds=n_folds,
                                 random_seed=0, n_jobs=1)
    assert table.loc[k, "cv_flagged_folds"] == n_folds and np.isfinite(table.loc[k, "cv_log_likelihood"])


def test_the_collapse_warning_agrees_with_the_components_it_names():
    # "components [0, 1, 2, 4] collapsed ... its variances were lifted": one possessive for any number
    several = mixflow.GaussianMixture(5).collapse_description([0, 1, 2, 4])
    assert several.startswith("components [0, 1, 2, 4] collapsed onto a point or a subspace")
    assert "their variances were lifted to a floor of 2.2e-13 x their second moment" in several
    assert "component [3] collapsed" in (one := mixflow.GaussianMixture(5).collapse_description([3]))
    assert "its variances were lifted to a floor of 2.2e-13 x its second moment" in one
    tied = mixflow.GaussianMixture(5, covariance="tied").collapse_description([0, 1])
    assert tied.startswith("the tied covariance collapsed") and "its variances were lifted" in tied


def test_a_sound_fit_found_by_fewer_sound_runs_than_n_init_says_so():
    # two features mostly 0 under a "diag" covariance: most starts collapse onto the zeros, and the sound fit was
    # the best of the few that did not; it was returned without a word (the glass data, 79 of 80 runs collapsed)
    rng = np.random.default_rng(0)
    label = rng.integers(3, size=200)
    x = np.column_stack([rng.normal(size=(200, 5)) + np.array([0.0, 2.0, 4.0])[label][:, None],
                         np.where(rng.random((200, 2)) < 0.8, 0.0, rng.gamma(2.0, 0.3, (200, 2)))])
    model = mixflow.GaussianMixture(3, covariance="diag")
    with pytest.warns(mixflow.MixflowWarning, match=r"^76 runs of 80 ended degenerate \(a component collapsed onto "
                                                    r"tied or repeated values, or emptied\) and 4 ended sound, fewer "
                                                    r"than n_init=5: this fit is the best of 4 sound runs, and a "
                                                    r"higher sound maximum may lie where none went; more starts "
                                                    r"\(n_init=\.\.\.\) search further, and method='map' keeps "
                                                    r"components from collapsing$"):
        tree = mixflow.fit(model, x, random_seed=0)
    assert tree["em"].attrs["collapsed_components"] == "[]" and tree["em"].attrs["n_degenerate_restarts"] == 76
    # a MAP fit is not pointed to MAP
    from mixflow.engines.em import EMOptions, _warn_few_sound

    restarts = {"degenerate": np.array([True] * 9 + [False]), "spurious": np.zeros(10, bool)}
    with pytest.warns(mixflow.MixflowWarning) as said:
        _warn_few_sound(restarts, EMOptions(map=True))
    assert str(said[0].message).endswith("more starts (n_init=...) search further")
    with warnings.catch_warnings():  # with more sound runs than n_init asked for, nothing to say
        warnings.simplefilter("error", mixflow.MixflowWarning)
        mixflow.fit(model, x[:, :5], random_seed=0)
