"""k-means (hard) and soft k-means (a fixed-variance spherical Gaussian mixture) and the limit between them."""

import numpy as np
import pytest
from conftest import simulate_gaussian_mixture
from scipy import stats
from scipy.special import softmax
from sklearn.cluster import KMeans

import mixflow
from mixflow.engines.kmeans import kmeans, lloyd
from mixflow.families.softkmeans.model import SoftKMeans


def estimate(tree):
    return {name: tree["em/estimate"][name].values for name in tree["em/estimate"].data_vars}


@pytest.mark.parametrize("k", [2, 3, 6])
def test_distortion_never_increases(k, faithful):
    weights = np.random.default_rng(k).integers(0, 4, size=len(faithful))
    for w in (None, weights):
        result = kmeans(faithful, k, random_seed=k, n_init=4, weights=w)
        assert result.history.size == result.n_iter >= 2
        assert (np.diff(result.history) <= 1e-12 * result.history[:-1]).all(), result.history
        assert result.distortion == result.history[-1] == result.restart_distortions.min()
        assert result.converged


def test_distortion_is_the_weighted_within_cluster_sum_of_squares(faithful):
    x = faithful.to_numpy()
    result = kmeans(faithful, 3, random_seed=0)
    assert result.centers.shape == (3, 2) and (np.diff(result.centers[:, 0]) > 0).all()
    assert list(result.features) == ["eruptions", "waiting"]
    gaps = x - result.centers[result.labels]
    assert result.distortion == pytest.approx((gaps**2).sum(), rel=1e-12)
    for j in range(3):  # each centre is the mean of its cluster
        np.testing.assert_allclose(result.centers[j], x[result.labels == j].mean(axis=0), rtol=1e-12)


def test_agrees_with_scikit_learn(faithful):
    x = faithful.to_numpy()
    weights = np.random.default_rng(1).integers(1, 4, size=len(x)).astype(float)
    ours = kmeans(x, 3, random_seed=0, n_init=10, weights=weights)
    theirs = KMeans(3, n_init=10, random_state=0, algorithm="lloyd").fit(x, sample_weight=weights)
    assert ours.distortion == pytest.approx(theirs.inertia_, rel=1e-10)
    order = np.argsort(theirs.cluster_centers_[:, 0])
    np.testing.assert_allclose(ours.centers, theirs.cluster_centers_[order], rtol=1e-10)


def test_frequency_weights_equal_repeated_rows():
    x, _ = simulate_gaussian_mixture(40, [0.5, 0.5], [[0, 0], [4, 4]], [np.eye(2)] * 2, seed=3)
    counts = np.arange(40) % 3 + 1
    start = x[[0, 1]]
    weighted = lloyd(x, start, counts.astype(float))
    repeated = lloyd(np.repeat(x, counts, axis=0), start)
    np.testing.assert_allclose(weighted[1], repeated[1], rtol=1e-12)
    np.testing.assert_allclose(weighted[2], repeated[2], rtol=1e-12)


def test_same_seed_same_answer_and_a_drawn_seed_is_recorded(faithful):
    one, two = kmeans(faithful, 4, random_seed=5), kmeans(faithful, 4, random_seed=5)
    np.testing.assert_array_equal(one.centers, two.centers)
    drawn = kmeans(faithful, 4)
    again = kmeans(faithful, 4, random_seed=drawn.random_seed)
    np.testing.assert_array_equal(drawn.centers, again.centers)


def test_soft_kmeans_with_a_small_variance_is_k_means(faithful):
    """The hard limit: from the same start, soft k-means with sigma^2 -> 0 lands on Lloyd's centres."""
    x = faithful.to_numpy()
    start = x[[0, 1, 2]]
    _, centers, _ = lloyd(x, start)
    tree = mixflow.fit(SoftKMeans(3, variance=1e-4), faithful, init={"weights": [1 / 3] * 3, "mu": start},
                       tol=1e-14)
    found = estimate(tree)
    np.testing.assert_allclose(found["mu"], centers[np.argsort(centers[:, 0])], rtol=1e-12)
    resp = tree["em/responsibilities"]["responsibilities"].values
    assert np.isin(np.round(resp, 12), [0.0, 1.0]).all()  # hard assignments


def test_soft_kmeans_is_a_spherical_mixture_with_the_given_variance(faithful):
    x = faithful.to_numpy()
    variance = 4.0
    # k-means starts: their last step before the stop is large enough for the 1e-9 fixed-point checks below
    tree = mixflow.fit(SoftKMeans(2, variance=variance), faithful, random_seed=0, tol=1e-14, init="kmeans")
    found = estimate(tree)
    log_joint = np.log(found["weights"]) + np.column_stack([
        stats.multivariate_normal(mu, variance * np.eye(2)).logpdf(x) for mu in found["mu"]])
    resp = softmax(log_joint, axis=1)
    np.testing.assert_allclose(tree["em/responsibilities"]["responsibilities"].values, resp, atol=1e-12)
    expected_ll = float(np.logaddexp.reduce(log_joint, axis=1).sum())
    assert tree["em"].attrs["log_likelihood"] == pytest.approx(expected_ll, rel=1e-12)
    # the fixed point: each mean is the responsibility-weighted average, each weight the mean responsibility
    np.testing.assert_allclose(found["mu"], (resp.T @ x) / resp.sum(axis=0)[:, None], rtol=1e-9)
    np.testing.assert_allclose(found["weights"], resp.mean(axis=0), rtol=1e-9)
    assert tree["em"].attrs["n_parameters"] == 1 + 4
    assert mixflow.model_from_json(SoftKMeans(2, variance=variance).to_json()) == SoftKMeans(2, variance)


@pytest.mark.parametrize("method", ["em", "map"])
def test_soft_kmeans_objective_never_decreases(method, faithful):
    tree = mixflow.fit(SoftKMeans(4, variance=2.0), faithful, method=method, init="random", n_init=2,
                       random_seed=1, tol=1e-13)
    name = "log_posterior" if method == "map" else "log_likelihood"
    for history in tree["em/sample_stats"][name].values:
        history = history[~np.isnan(history)]
        assert history.size > 3
        assert (np.diff(history) >= -1e-10 * np.abs(history[1:])).all()


def test_soft_kmeans_map_shrinks_the_means_towards_the_prior_mean(faithful):
    x = faithful.to_numpy()
    start = {"weights": [0.5, 0.5], "mu": [[2.0, 55.0], [4.3, 80.0]]}
    model = SoftKMeans(2, variance=10.0, prior={"shrinkage": 50.0, "mean": [3.0, 70.0]})
    tree = mixflow.fit(model, faithful, method="map", init=start, tol=1e-14)
    resp = tree["em/responsibilities"]["responsibilities"].values
    expected = (resp.T @ x + 50.0 * np.array([3.0, 70.0])) / (resp.sum(axis=0) + 50.0)[:, None]
    # one M-step away from the returned estimate: as far as the objective-based stop leaves it
    np.testing.assert_allclose(estimate(tree)["mu"], expected, rtol=1e-7)


@pytest.mark.parametrize("kwargs, message", [
    ({"n_clusters": 0}, r"n_clusters: expected an integer >= 1, got 0"),
    ({"n_clusters": 2.0}, r"n_clusters: expected an integer >= 1, got 2.0"),
    ({"n_clusters": 5, "weights": [1, 1, 1, 0, 0, 0]},
     r"n_clusters: expected at most the number of observations with positive weight \(3\), got 5"),
    ({"n_clusters": 2, "n_init": 0}, r"n_init: expected an integer >= 1, got 0"),
    ({"n_clusters": 2, "max_iter": -1}, r"max_iter: expected an integer >= 1, got -1"),
    ({"n_clusters": 2, "random_seed": -2}, r"random_seed: expected an integer >= 0, got -2"),
    ({"n_clusters": 2, "weights": [1, 1]}, r"weights: expected shape \(6,\) to match the data, got \(2,\)"),
])
def test_bad_kmeans_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        kmeans(np.arange(6.0), **kwargs)
    with pytest.raises(ValueError, match=r"data: expected finite values"):
        kmeans(np.array([1.0, np.nan, 2.0]), 2)


@pytest.mark.parametrize("kwargs, message", [
    ({"variance": 0.0}, r"variance: expected a positive number \(the fixed sigma\^2\), got 0.0"),
    ({"variance": float("nan")}, r"variance: expected a positive number"),
    ({"variance": "1"}, r"variance: expected a positive number \(the fixed sigma\^2\), got '1'"),
    ({"variance": 1.0, "prior": {"shrinkage": 0}}, r"shrinkage: expected a positive number, got 0"),
    ({"variance": 1.0, "prior": {"scale": 1}}, r"prior: unknown hyperparameter \['scale'\]"),
])
def test_bad_soft_kmeans_declarations_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SoftKMeans(2, **kwargs)


def test_bad_soft_kmeans_start_and_prior_mean(faithful):
    with pytest.raises(ValueError, match=r"init\['mu'\]: expected shape \(2, 2\), got \(2, 1\)"):
        mixflow.fit(SoftKMeans(2, 1.0), faithful, init={"weights": [0.5, 0.5], "mu": [[1.0], [2.0]]})
    with pytest.raises(ValueError, match=r"prior.mean: expected 2 values \(one per feature\), got shape \(1,\)"):
        mixflow.fit(SoftKMeans(2, 1.0, prior={"mean": [1.0]}), faithful, method="map")
