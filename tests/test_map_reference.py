"""MAP-EM and the default prior against references that share no code with mixflow.

- The default prior's hyperparameters are recomputed from the README's table ("The model and its prior"):
  mean = data mean, shrinkage 0.01, dof = d + 2, scale = data covariance / K^(2/d) (its diagonal for
  diag, the mean of its diagonal for spherical), concentration 1; not through ``resolve_prior``.
- One MAP M-step, from fixed responsibilities and frequency weights, maximises the expected complete-data
  log posterior written naively with scipy.stats; found by a direct numerical maximisation.
- The converged MAP-EM estimate is the mode of a naive scipy log posterior whose hyperparameters come from
  the README's formulas, for every covariance type.
- The README's headline figure: Old Faithful, full covariance, K = 2, log-likelihood -1130.264.
"""

import json

import numpy as np
import pytest
from conftest import simulate_gaussian_mixture
from scipy import optimize, stats

import mixflow
from mixflow.data import validate_data

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]


def _readme_prior(x, frequency, covariance_type, k):
    """The README's default hyperparameters, from the data alone."""
    d = x.shape[1]
    mean = np.average(x, axis=0, weights=frequency)
    data_cov = np.cov(x, rowvar=False, aweights=frequency, bias=True).reshape(d, d)
    scale = {"full": data_cov, "tied": data_cov, "diag": np.diag(data_cov),
             "spherical": np.mean(np.diag(data_cov))}[covariance_type] / k ** (2 / d)
    return {"concentration": np.ones(k), "mean": mean, "shrinkage": 0.01, "dof": d + 2.0, "scale": scale}


def _covariances(covariance_type, params, k, d):
    if covariance_type == "full":
        return params["covariance"]
    if covariance_type == "tied":
        return np.broadcast_to(params["covariance"], (k, d, d))
    if covariance_type == "diag":
        return np.array([np.diag(v) for v in params["variance"]])
    return np.array([v * np.eye(d) for v in params["variance"]])


def _naive_component_log_prior(covariance_type, params, prior):
    """log p(mu, Sigma) written with scipy.stats, one distribution per documented line of the prior."""
    kappa, dof, mean, scale = prior["shrinkage"], prior["dof"], np.asarray(prior["mean"]), prior["scale"]
    mu = params["mu"]
    total = 0.0
    if covariance_type == "full":
        for m, cov in zip(mu, params["covariance"], strict=True):
            total += stats.invwishart.logpdf(cov, df=dof, scale=scale)
            total += stats.multivariate_normal.logpdf(m, mean, cov / kappa)
    elif covariance_type == "tied":
        cov = params["covariance"]
        total += stats.invwishart.logpdf(cov, df=dof, scale=scale)
        for m in mu:
            total += stats.multivariate_normal.logpdf(m, mean, cov / kappa)
    elif covariance_type == "diag":  # independent per feature: one Inverse-Gamma and one Normal per entry
        var = params["variance"]
        total += stats.invgamma.logpdf(var, dof / 2, scale=np.asarray(scale) / 2).sum()
        total += stats.norm.logpdf(mu, mean, np.sqrt(var / kappa)).sum()
    else:
        for m, var in zip(mu, params["variance"], strict=True):
            total += stats.invgamma.logpdf(var, dof / 2, scale=scale / 2)
            total += stats.multivariate_normal.logpdf(m, mean, var * np.eye(len(m)) / kappa)
    return total


def _log_cholesky(cov):
    lower = np.linalg.cholesky(cov)
    lower[np.diag_indices(len(cov))] = np.log(np.diag(lower))
    return lower[np.tril_indices(len(cov))]


def _from_log_cholesky(vector, d):
    lower = np.zeros((d, d))
    lower[np.tril_indices(d)] = vector
    lower[np.diag_indices(d)] = np.exp(np.diag(lower))
    return lower @ lower.T


def _pack(covariance_type, params, with_weights):
    parts = [np.log(params["weights"][1:] / params["weights"][0])] if with_weights else []
    parts.append(params["mu"].ravel())
    if covariance_type == "full":
        parts += [_log_cholesky(c) for c in params["covariance"]]
    elif covariance_type == "tied":
        parts.append(_log_cholesky(params["covariance"]))
    else:
        parts.append(np.log(params["variance"]).ravel())
    return np.concatenate(parts)


def _unpack(covariance_type, vector, k, d, with_weights):
    params = {}
    if with_weights:
        logits = np.concatenate([[0.0], vector[: k - 1]])
        params["weights"] = np.exp(logits) / np.exp(logits).sum()
        vector = vector[k - 1:]
    params["mu"] = vector[: k * d].reshape(k, d)
    rest = vector[k * d:]
    t = d * (d + 1) // 2
    if covariance_type == "full":
        params["covariance"] = np.array([_from_log_cholesky(rest[i * t:(i + 1) * t], d) for i in range(k)])
    elif covariance_type == "tied":
        params["covariance"] = _from_log_cholesky(rest, d)
    elif covariance_type == "diag":
        params["variance"] = np.exp(rest).reshape(k, d)
    else:
        params["variance"] = np.exp(rest)
    return params


def _data(seed=4, n=90):
    x, _ = simulate_gaussian_mixture(n, [0.3, 0.3, 0.4], [[0, 0, 0], [3, 1, -1], [-1, 4, 2]],
                                     [np.eye(3), np.diag([0.5, 1.5, 1.0]), [[1, 0.6, 0], [0.6, 1, 0.3], [0, 0.3, 1]]],
                                     seed=seed)
    frequency = np.random.default_rng(seed).integers(1, 4, size=n).astype(float)
    return x, frequency


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_default_prior_follows_the_documented_formulas(covariance_type):
    x, frequency = _data()
    x = x * np.array([1.0, 10.0, 0.1])  # unequal scales: a diag/spherical mix-up shows
    k = 3
    tree = mixflow.fit(mixflow.GaussianMixture(k, covariance=covariance_type), x, weights=frequency, method="map",
                       random_seed=1, n_init=1)
    recorded = json.loads(tree["em"].attrs["prior"])
    expected = _readme_prior(x, frequency, covariance_type, k)
    assert set(recorded) == set(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(np.asarray(recorded[name]), value, rtol=1e-10, err_msg=name)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_one_map_m_step_maximises_the_naive_expected_log_posterior(covariance_type):
    """From fixed responsibilities, MAP's M-step is the maximiser of E_r[log p(x, z | theta)] + log p(theta)."""
    x, frequency = _data(seed=7, n=40)
    k, d = 3, x.shape[1]
    rng = np.random.default_rng(3)
    resp = rng.dirichlet(np.ones(k), size=len(x))
    scale = {"full": np.diag([2.0, 1.0, 0.5]) + 0.3, "tied": np.diag([2.0, 1.0, 0.5]) + 0.3,
             "diag": np.array([2.0, 1.0, 0.5]), "spherical": 1.3}[covariance_type]
    prior = {"mean": np.array([0.5, -1.0, 2.0]), "shrinkage": 0.7, "dof": 6.5, "scale": scale}
    model = mixflow.GaussianMixture(k, covariance=covariance_type, prior=mixflow.GaussianPrior(
        weights_concentration=1.0, mean=prior["mean"], shrinkage=prior["shrinkage"], dof=prior["dof"],
        scale=prior["scale"]))
    prepared = model.prepare(validate_data(x, weights=frequency))
    # EM's steps run in the working (standardised) units of ``prepared``, with the prior in those units
    working_prior = model.working_prior(prepared)
    weighted_resp = resp * frequency[:, None]
    features = model.chunk_features(prepared)
    statistics = model.statistics(weighted_resp, prepared, features)
    working, floored = model.m_step(weighted_resp.sum(axis=0), statistics, prepared, working_prior)
    assert floored == []
    found = model.to_data({"weights": np.full(k, 1.0 / k), **working}, prepared)
    del found["weights"]

    def negative_objective(vector):
        params = _unpack(covariance_type, vector, k, d, with_weights=False)
        covs = _covariances(covariance_type, params, k, d)
        expected_ll = sum(weighted_resp[:, j] @ stats.multivariate_normal(params["mu"][j], covs[j]).logpdf(x)
                          for j in range(k))
        return -(expected_ll + _naive_component_log_prior(covariance_type, params, prior))

    start = _pack(covariance_type, found, with_weights=False)
    result = optimize.minimize(negative_objective, start + 0.1 * rng.standard_normal(start.size), method="BFGS",
                               options={"gtol": 1e-9})
    assert -result.fun <= -negative_objective(start) + 1e-8  # the M-step's answer is not beaten
    optimum = _unpack(covariance_type, result.x, k, d, with_weights=False)
    for name, value in optimum.items():
        np.testing.assert_allclose(found[name], value, rtol=2e-5, atol=2e-5, err_msg=name)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_map_em_is_the_mode_of_the_naive_log_posterior(covariance_type):
    x, frequency = _data(seed=2, n=60)
    k, d = 3, x.shape[1]
    tree = mixflow.fit(mixflow.GaussianMixture(k, covariance=covariance_type), x, weights=frequency, method="map",
                       tol=1e-14, max_iter=5000, random_seed=1)
    estimate = {name: tree["em/estimate"][name].values for name in tree["em/estimate"].data_vars}
    prior = _readme_prior(x, frequency, covariance_type, k)

    def log_posterior(params):
        covs = _covariances(covariance_type, params, k, d)
        density = sum(w * stats.multivariate_normal(m, c).pdf(x)
                      for w, m, c in zip(params["weights"], params["mu"], covs, strict=True))
        return (frequency @ np.log(density) + stats.dirichlet(prior["concentration"]).logpdf(params["weights"])
                + _naive_component_log_prior(covariance_type, params, prior))

    def negative(vector):
        return -log_posterior(_unpack(covariance_type, vector, k, d, with_weights=True))

    start = _pack(covariance_type, estimate, with_weights=True)
    assert log_posterior(estimate) == pytest.approx(tree["em"].attrs["log_posterior"], rel=1e-9)
    result = optimize.minimize(negative, start + 0.02, method="BFGS", options={"gtol": 1e-8})
    assert -result.fun <= log_posterior(estimate) + 1e-7
    found = _unpack(covariance_type, result.x, k, d, with_weights=True)
    for name, value in found.items():
        np.testing.assert_allclose(value, estimate[name], rtol=1e-4, atol=1e-4, err_msg=name)


def test_readme_headline_old_faithful(faithful):
    """README: Old Faithful, full covariance, K = 2: log-likelihood -1130.264."""
    tree = mixflow.fit(mixflow.GaussianMixture(2, covariance="full"), faithful, method="em", random_seed=1)
    assert round(tree["em"].attrs["log_likelihood"], 3) == -1130.264
    mu = tree["em/estimate"]["mu"].values
    # published (e.g. mclust's VVV, G = 2, on the same data): means (2.04, 54.5) and (4.29, 80.0)
    np.testing.assert_allclose(mu, [[2.037, 54.48], [4.290, 79.97]], atol=0.01)


@pytest.mark.parametrize("covariance_type", ["full", "tied"])
def test_log_prior_of_an_ill_conditioned_covariance_is_its_density_not_an_error(covariance_type):
    """A covariance of condition number 1e12 (positive definite: an EM point or an extrapolated one can have
    it) under the Normal part of the prior: scipy's multivariate_normal refuses it (LinAlgError, its
    eigenvalue threshold); the MAP objective must be its density, here written through the eigenvalues."""
    d, kappa = 2, 0.01
    model = mixflow.GaussianMixture(2, covariance=covariance_type, prior={"shrinkage": kappa})
    cov = np.diag([1.0, 1e-12])
    prior = model.resolve_prior(model.prepare(validate_data(np.random.default_rng(0).normal(size=(50, d)))))
    mu = np.array([[0.1, 2e-7], [-0.2, -1e-7]])
    params = {"weights": np.array([0.5, 0.5]), "mu": mu,
              "covariance": cov if covariance_type == "tied" else np.stack([cov, cov])}
    with pytest.raises(np.linalg.LinAlgError):
        stats.multivariate_normal.logpdf(mu[0], prior.mean, cov / kappa)
    variances = np.diag(cov) / kappa
    normal = (-0.5 * ((mu - prior.mean) ** 2 / variances + np.log(2 * np.pi * variances))).sum()
    inverse_wishart = stats.invwishart.logpdf(cov, df=prior.dof, scale=prior.scale)
    expected = normal + inverse_wishart * (1 if covariance_type == "tied" else 2)
    assert model.log_prior(params, prior) == pytest.approx(expected, rel=1e-12)
