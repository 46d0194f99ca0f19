"""Public options that no other test exercised, each against a reference outside the code under test:
init="kmeans++", GaussianPrior(...) and SoftKMeansPrior(...) with arguments, KMeansResult (scikit-learn),
and the installed ``mixflow`` console script."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import simulate_gaussian_mixture
from scipy import stats
from scipy.special import logsumexp

import mixflow


def test_kmeans_plus_plus_start_reaches_the_published_maximum(faithful):
    model = mixflow.GaussianMixture(2, covariance="full")
    plus = mixflow.fit(model, faithful, init="kmeans++", n_init=3, random_seed=2)
    lloyd = mixflow.fit(model, faithful, init="kmeans", n_init=3, random_seed=2)
    assert round(plus["em"].attrs["log_likelihood"], 3) == -1130.264
    # the seeds alone are a different (worse) start than seeds refined by Lloyd's iterations
    first_plus = plus["em/sample_stats"]["log_likelihood"].values[:, 0]
    first_lloyd = lloyd["em/sample_stats"]["log_likelihood"].values[:, 0]
    assert not np.allclose(first_plus, first_lloyd)
    with pytest.raises(ValueError, match="init"):
        mixflow.fit(model, faithful, init="kmeans+")


def test_gaussian_prior_with_arguments_is_the_one_used():
    x, _ = simulate_gaussian_mixture(80, [0.5, 0.5], [[0, 0], [3, 1]], [np.eye(2), 0.5 * np.eye(2)], seed=6)
    prior = mixflow.GaussianPrior(weights_concentration=3.0, mean=[1.0, -1.0], shrinkage=0.5, dof=7.0,
                                  scale=[[2.0, 0.3], [0.3, 1.0]])
    model = mixflow.GaussianMixture(2, covariance="full", prior=prior)
    assert mixflow.model_from_json(model.to_json()) == model
    tree = mixflow.fit(model, x, method="map", random_seed=1, tol=1e-12)
    recorded = json.loads(tree["em"].attrs["prior"])
    np.testing.assert_array_equal(recorded["concentration"], [3.0, 3.0])
    np.testing.assert_array_equal(recorded["mean"], [1.0, -1.0])
    np.testing.assert_array_equal(recorded["scale"], [[2.0, 0.3], [0.3, 1.0]])
    assert recorded["shrinkage"] == 0.5 and recorded["dof"] == 7.0
    estimate = {name: tree["em/estimate"][name].values for name in tree["em/estimate"].data_vars}
    density = sum(w * stats.multivariate_normal(m, c).pdf(x)
                  for w, m, c in zip(estimate["weights"], estimate["mu"], estimate["covariance"], strict=True))
    log_prior = stats.dirichlet([3.0, 3.0]).logpdf(estimate["weights"]) + sum(
        stats.invwishart.logpdf(c, df=7.0, scale=[[2.0, 0.3], [0.3, 1.0]])
        + stats.multivariate_normal.logpdf(m, [1.0, -1.0], c / 0.5)
        for m, c in zip(estimate["mu"], estimate["covariance"], strict=True))
    assert tree["em"].attrs["log_posterior"] == pytest.approx(np.log(density).sum() + log_prior, rel=1e-10)
    # the MAP weights under Dirichlet(3): (N_k + 2) / (N + 4), from the naive responsibilities
    log_joint = np.column_stack([np.log(w) + stats.multivariate_normal(m, c).logpdf(x) for w, m, c in
                                 zip(estimate["weights"], estimate["mu"], estimate["covariance"], strict=True)])
    counts = np.exp(log_joint - logsumexp(log_joint, axis=1, keepdims=True)).sum(axis=0)
    np.testing.assert_allclose(estimate["weights"], (counts + 2.0) / (len(x) + 4.0), rtol=1e-6)


def test_soft_kmeans_prior_with_arguments_gives_the_map_fixed_point():
    """At the MAP, mu_k = (sum_n w_n r_nk x_n + kappa m) / (N_k + kappa) and pi_k = (N_k + a - 1) / (N + K(a - 1)),
    with responsibilities computed naively from the estimate."""
    x, _ = simulate_gaussian_mixture(70, [0.4, 0.6], [[0, 0], [4, 1]], [np.eye(2), np.eye(2)], seed=3)
    frequency = np.random.default_rng(3).integers(1, 4, size=len(x)).astype(float)
    prior = mixflow.SoftKMeansPrior(weights_concentration=2.5, mean=[1.0, 2.0], shrinkage=4.0)
    model = mixflow.SoftKMeans(2, 1.5, prior=prior)
    assert mixflow.model_from_json(model.to_json()) == model
    tree = mixflow.fit(model, x, weights=frequency, method="map", random_seed=1, tol=1e-14, max_iter=5000)
    weights, mu = tree["em/estimate"]["weights"].values, tree["em/estimate"]["mu"].values
    log_joint = np.column_stack([np.log(w) + stats.multivariate_normal(m, 1.5 * np.eye(2)).logpdf(x)
                                 for w, m in zip(weights, mu, strict=True)])
    resp = np.exp(log_joint - logsumexp(log_joint, axis=1, keepdims=True)) * frequency[:, None]
    counts = resp.sum(axis=0)
    expected_mu = (resp.T @ x + 4.0 * np.array([1.0, 2.0])) / (counts + 4.0)[:, None]
    np.testing.assert_allclose(mu, expected_mu, rtol=1e-6)
    np.testing.assert_allclose(weights, (counts + 1.5) / (frequency.sum() + 2 * 1.5), rtol=1e-6)


def test_kmeans_result_against_scikit_learn():
    from sklearn.cluster import KMeans

    x, _ = simulate_gaussian_mixture(150, [0.3, 0.3, 0.4], [[0, 0], [5, 0], [0, 5]],
                                     [np.eye(2), np.eye(2), np.eye(2)], seed=9)
    result = mixflow.kmeans(x, 3, random_seed=1, n_init=5)
    assert isinstance(result, mixflow.KMeansResult)
    reference = KMeans(3, n_init=10, random_state=0).fit(x)
    order = np.argsort(reference.cluster_centers_[:, 0])
    np.testing.assert_allclose(result.centers, reference.cluster_centers_[order], rtol=1e-10)
    assert result.distortion == pytest.approx(reference.inertia_, rel=1e-10)
    distances = ((x[:, None, :] - result.centers[None]) ** 2).sum(axis=2)
    np.testing.assert_array_equal(result.labels, distances.argmin(axis=1))
    assert result.distortion == pytest.approx(distances.min(axis=1).sum(), rel=1e-12)
    assert np.all(np.diff(result.history) <= 0) and result.history[-1] == pytest.approx(result.distortion)
    assert result.converged and result.n_iter == result.history.size
    assert result.restart_distortions.shape == (5,) and result.restart_distortions.min() == pytest.approx(
        result.distortion)
    assert list(result.features) == ["x0", "x1"] and result.random_seed == 1


def _console_script():
    found = shutil.which("mixflow") or str(Path(sys.executable).with_name("mixflow"))
    return found if os.path.exists(found) else None


@pytest.mark.skipif(_console_script() is None, reason="the mixflow console script is not installed")
def test_installed_console_script(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(mixflow.__file__).parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    listed = subprocess.run([_console_script(), "datasets"], capture_output=True, text=True, env=env, timeout=300)
    assert listed.returncode == 0, listed.stderr
    for name in mixflow.list_datasets():
        assert name in listed.stdout
    missing = subprocess.run([_console_script(), "show", str(tmp_path / "none.nc")], capture_output=True,
                             text=True, env=env, timeout=300)
    assert missing.returncode == 2 and "none.nc" in missing.stderr
