"""Property-based checks of MAP-EM on arbitrary small data sets (hypothesis)."""

import numpy as np
from conftest import full_covariances, naive_log_likelihood
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mixflow

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(6, 40), d=st.integers(1, 3), k=st.integers(1, 3), seed=st.integers(0, 2**31),
       covariance=st.sampled_from(COVARIANCE_TYPES), scale=st.floats(1e-3, 1e3))
def test_map_em_invariants(n, d, k, seed, covariance, scale):
    rng = np.random.default_rng(seed)
    x = scale * rng.standard_t(df=3, size=(n, d)) + rng.normal(0, 10 * scale, size=d)
    tree = mixflow.fit(mixflow.GaussianMixture(k, covariance=covariance), x, method="map", init="random",
                       n_init=2, random_seed=seed, tol=1e-10, max_iter=300)
    # the log posterior never decreases (relative rounding allowance 1e-10)
    for history in tree["em/sample_stats"]["log_posterior"].values:
        history = history[~np.isnan(history)]
        assert (np.diff(history) >= -1e-10 * np.abs(history[1:])).all()
    # responsibilities are a distribution per observation
    resp = tree["em/responsibilities"]["responsibilities"].values
    np.testing.assert_allclose(resp.sum(axis=1), 1.0, rtol=1e-12)
    # the reported log-likelihood is the naive scipy one at the estimate (relative 1e-9)
    estimate = tree["em/estimate"]
    expected = naive_log_likelihood(x, estimate["weights"].values, estimate["mu"].values,
                                    full_covariances(covariance, estimate, d))
    assert abs(tree["em"].attrs["log_likelihood"] - expected) <= 1e-9 * abs(expected) + 1e-9
    # canonical order and a finite, symmetric positive definite dispersion
    assert (np.diff(estimate["mu"].values[:, 0]) >= 0).all()
    assert (np.linalg.eigvalsh(full_covariances(covariance, estimate, d)) > 0).all()
