"""EM engine behaviour: monotone objective, MAP optimality, chunks, weights, seeds, prediction."""

import warnings

import numpy as np
import pytest
from conftest import full_covariances, naive_log_likelihood, simulate_gaussian_mixture
from scipy import optimize, stats

import mixflow
from mixflow.families.gaussian import numerics as gn

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]


@pytest.mark.parametrize("method", ["em", "map"])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_objective_never_decreases(covariance_type, method, faithful):
    tree = mixflow.fit(mixflow.GaussianMixture(4, covariance=covariance_type), faithful, method=method,
                       init="random", n_init=3, random_seed=5, tol=1e-12)
    name = "log_posterior" if method == "map" else "log_likelihood"
    for history in tree["em/sample_stats"][name].values:
        history = history[~np.isnan(history)]
        assert history.size > 5
        steps = np.diff(history)
        assert (steps >= -1e-10 * np.abs(history[1:])).all(), steps.min()


def _naive_log_prior(covariance_type, params, prior):
    kappa, dof, mean, scale = prior["shrinkage"], prior["dof"], np.array(prior["mean"]), np.array(prior["scale"])
    total = stats.dirichlet.logpdf(params["weights"], prior["concentration"])
    for k, mu in enumerate(params["mu"]):
        if covariance_type == "full":
            cov = params["covariance"][k]
            total += stats.invwishart.logpdf(cov, dof, scale) + stats.multivariate_normal.logpdf(mu, mean, cov / kappa)
        elif covariance_type == "diag":
            var = params["variance"][k]
            total += stats.invgamma.logpdf(var, dof / 2, scale=scale / 2).sum()
            total += stats.norm.logpdf(mu, mean, np.sqrt(var / kappa)).sum()
    return total


def _unpack(covariance_type, vector, k, d):
    logits = np.concatenate([[0.0], vector[: k - 1]])
    weights = np.exp(logits - logits.max())
    params = {"weights": weights / weights.sum(), "mu": vector[k - 1: k - 1 + k * d].reshape(k, d)}
    rest = vector[k - 1 + k * d:]
    if covariance_type == "diag":
        params["variance"] = np.exp(rest).reshape(k, d)
    else:
        covs = []
        for chunk in rest.reshape(k, -1):
            lower = np.zeros((d, d))
            lower[np.tril_indices(d)] = chunk
            lower[np.diag_indices(d)] = np.exp(np.diag(lower))
            covs.append(lower @ lower.T)
        params["covariance"] = np.array(covs)
    return params


def _pack(covariance_type, params):
    k = params["weights"].size
    logits = np.log(params["weights"][1:] / params["weights"][0])
    if covariance_type == "diag":
        rest = np.log(params["variance"]).ravel()
    else:
        rest = []
        for cov in params["covariance"]:
            lower = np.linalg.cholesky(cov)
            lower[np.diag_indices(len(cov))] = np.log(np.diag(lower))
            rest.append(lower[np.tril_indices(len(cov))])
        rest = np.concatenate(rest)
    assert logits.size == k - 1
    return np.concatenate([logits, params["mu"].ravel(), rest])


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_map_estimate_maximises_the_log_posterior(covariance_type):
    """A direct numerical maximisation of a naive scipy log posterior lands on the MAP-EM estimate."""
    import json

    x, _ = simulate_gaussian_mixture(60, [0.4, 0.6], [[0, 0], [2.5, 1]], [np.eye(2), 0.5 * np.eye(2)], seed=2)
    tree = mixflow.fit(mixflow.GaussianMixture(2, covariance=covariance_type), x, method="map", tol=1e-14,
                       random_seed=1)
    prior = json.loads(tree["em"].attrs["prior"])
    estimate = {name: tree["em/estimate"][name].values for name in tree["em/estimate"].data_vars}

    def negative_log_posterior(vector):
        params = _unpack(covariance_type, vector, 2, 2)
        covs = full_covariances(covariance_type, {k: _Values(v) for k, v in params.items()}, 2)
        ll = naive_log_likelihood(x, params["weights"], params["mu"], covs)
        return -(ll + _naive_log_prior(covariance_type, params, prior))

    start = _pack(covariance_type, estimate)
    result = optimize.minimize(negative_log_posterior, start + 0.05, method="BFGS", options={"gtol": 1e-8})
    found = _unpack(covariance_type, result.x, 2, 2)
    assert -result.fun == pytest.approx(tree["em"].attrs["log_posterior"], rel=1e-9)
    for name, value in found.items():
        np.testing.assert_allclose(value, estimate[name], atol=2e-4)


class _Values:
    def __init__(self, value):
        self.values = value
        self.size = np.size(value)


@pytest.mark.parametrize("chunk_size", [17, 50])  # 272 rows: equal chunks, and a short last chunk
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_chunked_passes_equal_one_pass(covariance_type, chunk_size, faithful):
    model = mixflow.GaussianMixture(3, covariance=covariance_type)
    whole = mixflow.fit(model, faithful, random_seed=3)
    chunked = mixflow.fit(model, faithful, random_seed=3, chunk_size=chunk_size)
    assert chunked["em"].attrs["log_likelihood"] == pytest.approx(whole["em"].attrs["log_likelihood"], rel=1e-12)
    for name in whole["em/estimate"].data_vars:
        np.testing.assert_allclose(chunked["em/estimate"][name], whole["em/estimate"][name], rtol=1e-9, atol=1e-12)


def test_frequency_weights_equal_repeated_rows():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, 40), rng.normal(5, 1, 40)])
    counts = rng.integers(0, 4, size=x.size)
    start = {"weights": np.array([0.5, 0.5]), "mu": np.array([[1.0], [4.0]]), "covariance": np.ones((2, 1, 1))}
    model = mixflow.GaussianMixture(2)
    weighted = mixflow.fit(model, x, weights=counts, init=start, tol=1e-14)
    repeated = mixflow.fit(model, np.repeat(x, counts), init=start, tol=1e-14)
    assert weighted["em"].attrs["log_likelihood"] == pytest.approx(repeated["em"].attrs["log_likelihood"], rel=1e-10)
    assert weighted["em"].attrs["n_observations"] == counts.sum()
    np.testing.assert_allclose(weighted["em/estimate"]["mu"], repeated["em/estimate"]["mu"], rtol=1e-8)
    np.testing.assert_allclose(weighted["observed_data"]["weights"].values, counts)


def test_same_seed_same_numbers_bitwise(faithful):
    model = mixflow.GaussianMixture(3)
    first = mixflow.fit(model, faithful, init="random", random_seed=42)
    second = mixflow.fit(model, faithful, init="random", random_seed=42)
    other = mixflow.fit(model, faithful, init="random", random_seed=43)
    for group in ("em/estimate", "em/responsibilities", "em/sample_stats"):
        assert first[group].to_dataset().identical(second[group].to_dataset())
    assert not np.array_equal(first["em/sample_stats"]["log_likelihood"].values,
                              other["em/sample_stats"]["log_likelihood"].values)


def test_seed_is_drawn_and_recorded_when_not_given(faithful):
    model = mixflow.GaussianMixture(2)
    tree = mixflow.fit(model, faithful, init="random")
    seed = tree.attrs["random_seed"]
    again = mixflow.fit(model, faithful, init="random", random_seed=seed)
    assert tree["em/estimate"].to_dataset().identical(again["em/estimate"].to_dataset())


def test_components_come_in_canonical_order(faithful):
    tree = mixflow.fit(mixflow.GaussianMixture(3), faithful, random_seed=9)
    first_coordinate = tree["em/estimate"]["mu"].values[:, 0]
    assert (np.diff(first_coordinate) > 0).all()


def test_information_criteria(faithful):
    tree = mixflow.fit(mixflow.GaussianMixture(2, covariance="full"), faithful, random_seed=0)
    attrs = tree["em"].attrs
    ll, n = attrs["log_likelihood"], len(faithful)
    assert attrs["n_parameters"] == 1 + 4 + 6
    assert attrs["bic"] == pytest.approx(-2 * ll + 11 * np.log(n))
    assert attrs["aic"] == pytest.approx(-2 * ll + 22)
    resp = tree["em/responsibilities"]["responsibilities"].values
    entropy = -(resp * np.log(np.clip(resp, 1e-300, None))).sum()
    assert attrs["icl"] == pytest.approx(attrs["bic"] + 2 * entropy)


def test_responsibilities_and_predictions(faithful):
    tree = mixflow.fit(mixflow.GaussianMixture(2), faithful, random_seed=0)
    resp = tree["em/responsibilities"]["responsibilities"]
    np.testing.assert_allclose(resp.sum("component"), 1.0)
    proba = mixflow.predict_proba(tree, faithful)
    np.testing.assert_allclose(proba.values, resp.values, rtol=1e-10, atol=1e-14)
    labels = mixflow.predict(tree, faithful.iloc[:5])
    assert labels.dims == ("obs",)
    np.testing.assert_array_equal(labels.values, resp.values[:5].argmax(axis=1))
    # columns matched by name, whatever their order; plain arrays by position
    swapped = mixflow.predict_proba(tree, faithful[["waiting", "eruptions"]])
    np.testing.assert_allclose(swapped.values, proba.values)
    np.testing.assert_allclose(mixflow.predict_proba(tree, faithful.to_numpy()).values, proba.values)


def test_collapsing_component_is_floored_with_a_warning():
    x = np.concatenate([np.random.default_rng(1).normal(0, 1, 50), [7.0]])
    start = {"weights": np.array([0.98, 0.02]), "mu": np.array([[0.0], [7.0]]),
             "covariance": np.array([[[1.0]], [[0.01]]])}
    with pytest.warns(mixflow.DegenerateComponentWarning, match=r"component \[1\].*method='map'"):
        tree = mixflow.fit(mixflow.GaussianMixture(2), x, init=start)
    assert np.isfinite(tree["em"].attrs["log_likelihood"])
    # MAP has no singularity: the prior keeps the covariance away from zero, without warning
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", mixflow.DegenerateComponentWarning)
        mapped = mixflow.fit(mixflow.GaussianMixture(2), x, init=start, method="map")
    assert mapped["em/estimate"]["covariance"].values[1, 0, 0] > 1e-3


def test_trimming_drops_vanishing_components(faithful):
    start = {"weights": np.array([0.49, 0.49, 0.02]), "mu": np.array([[2.0, 55.0], [4.3, 80.0], [3.0, 95.0]]),
             "covariance": np.array([np.diag([0.1, 30.0])] * 2 + [np.diag([0.01, 0.5])])}
    tree = mixflow.fit(mixflow.GaussianMixture(3), faithful, init=start, trim=0.01)
    assert tree["em/estimate"].sizes["component"] == 2
    assert tree["em"].attrs["trimmed_components"] == 1
    assert tree["em"].attrs["n_parameters"] == 11


def test_a_trim_above_every_weight_is_said_not_silently_ignored(faithful):
    with pytest.warns(mixflow.MixflowWarning, match=r"trim=0\.9 is above every component's weight \(the largest is "
                      r"0\.644\): trimming would leave no component, so none was trimmed; a threshold of at most "
                      r"1/n_components = 0\.5 never trims them all"):
        tree = mixflow.fit(mixflow.GaussianMixture(2), faithful, trim=0.9, random_seed=0)
    assert tree["em"].attrs["trimmed_components"] == 0 and tree["em/estimate"].sizes["component"] == 2
    with warnings.catch_warnings():  # a trim that keeps a component is not warned of
        warnings.simplefilter("error", mixflow.MixflowWarning)
        mixflow.fit(mixflow.GaussianMixture(2), faithful, trim=0.5, random_seed=0)


def test_the_callers_data_is_not_modified(faithful):
    before = faithful.copy()
    array = faithful.to_numpy().copy()
    weights = np.ones(len(array))
    mixflow.fit(mixflow.GaussianMixture(2), faithful, random_seed=0)
    mixflow.fit(mixflow.GaussianMixture(2), array, weights=weights, random_seed=0)
    assert faithful.equals(before)
    np.testing.assert_array_equal(array, before.to_numpy())
    np.testing.assert_array_equal(weights, 1.0)


@pytest.mark.parametrize("d", [1, 3, 7])
def test_outer_features_are_the_upper_triangle_products(d):
    z = np.random.default_rng(d).normal(size=(11, d))
    rows, cols = np.triu_indices(d)
    expected = z[:, rows] * z[:, cols]
    np.testing.assert_array_equal(gn.outer_features(z), expected)
    buffer = np.full((d * (d + 1) // 2, 20), np.nan)  # a reused buffer wider than the chunk
    np.testing.assert_array_equal(gn.outer_features(z, buffer), expected)


def test_precisions_and_log_determinants_match_numpy():
    rng = np.random.default_rng(0)
    factors = rng.normal(size=(4, 5, 5))
    covariances = factors @ np.swapaxes(factors, 1, 2) + 0.1 * np.eye(5)
    precisions, logdets, factors = gn._precision_and_logdet(covariances)
    np.testing.assert_allclose(precisions, np.linalg.inv(covariances), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(logdets, np.linalg.slogdet(covariances)[1], rtol=1e-12)
    np.testing.assert_array_equal(factors, np.linalg.cholesky(covariances))
    # one feature: square roots and reciprocals, the bits LAPACK's factor and inverse give
    variances = rng.lognormal(0.0, 50.0, size=(6, 1, 1))
    precisions, logdets, factors = gn._precision_and_logdet(variances)
    inverse = np.linalg.inv(np.linalg.cholesky(variances))
    np.testing.assert_array_equal(factors, np.linalg.cholesky(variances))
    np.testing.assert_array_equal(precisions, np.swapaxes(inverse, -1, -2) @ inverse)
    np.testing.assert_array_equal(logdets, 2.0 * np.log(np.diagonal(factors, axis1=-2, axis2=-1)).sum(axis=-1))



def test_one_feature_hathaway_ratios_are_lapacks():
    # one feature: a division by the square root, twice, for the factor, the two solves and the 1 x 1 eigenvalue,
    # the bits the batched linear algebra gives (a product with the reciprocal differs in about 40% of cases)
    rng = np.random.default_rng(3)
    for k in (1, 2, 3, 6):
        for scale in (1.0, 100.0):
            variances = rng.lognormal(0.0, scale, size=(k, 1, 1))
            for wanted in (None, [k - 1], list(range(0, k, 2))):
                found = gn.hathaway_ratios("full", variances, wanted)
                expected = np.full(k, np.inf)
                h_all = np.arange(k) if wanted is None else np.asarray(wanted)
                factors = np.linalg.cholesky(variances)
                j, h = np.nonzero(~np.eye(k, dtype=bool)[:, h_all])
                h = h_all[h]
                if j.size:
                    whitened = np.linalg.solve(factors[j], np.swapaxes(np.linalg.solve(factors[j], variances[h]),
                                                                       -1, -2))
                    np.minimum.at(expected, h, np.linalg.eigvalsh(whitened)[:, 0])
                np.testing.assert_array_equal(found, expected)

@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_e_step_in_chunks_matches_scipy(covariance_type, monkeypatch):
    from mixflow.data import validate_data
    from mixflow.engines import em_steps

    rng = np.random.default_rng(2)
    x = rng.normal(0, 2, size=(40, 3))
    model = mixflow.GaussianMixture(2, covariance=covariance_type)
    # k-means starts: a well-conditioned estimate (the default's portfolio finds, on this noise, a higher
    # maximum whose 4-point component has a covariance of condition number 2e4, where scipy's own rounding
    # reaches 1e-11); the check is of the chunked E-step, at the same tolerance
    estimate = mixflow.fit(model, x, init="kmeans", random_seed=0)["em/estimate"]
    params = {name: value.values for name, value in estimate.data_vars.items()}
    monkeypatch.setattr(em_steps, "chunk_rows", lambda n_obs, width: 7)  # 40 rows: 5 chunks and a short one
    data = validate_data(x)
    resp, log_density = em_steps.e_step(model, params, model.prepare(data), data.n_features)
    covariances = full_covariances(covariance_type, estimate, 3)
    log_joint = np.column_stack([np.log(params["weights"][k]) + stats.multivariate_normal.logpdf(
        x, params["mu"][k], covariances[k]) for k in range(2)])
    np.testing.assert_allclose(log_density, np.logaddexp(log_joint[:, 0], log_joint[:, 1]), rtol=1e-12)
    np.testing.assert_allclose(resp, np.exp(log_joint - log_density[:, None]), rtol=1e-10, atol=1e-14)


def _pass_inputs(covariance_type, n_rows):
    from mixflow.data import validate_data

    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(0, 1, size=(n_rows // 2, 5)), rng.normal(2, 1.5, size=(n_rows - n_rows // 2, 5))])
    model = mixflow.GaussianMixture(3, covariance=covariance_type)
    params = {name: value.values for name, value in mixflow.fit(model, x[:500], random_seed=0)["em/estimate"].items()}
    return model, params, model.prepare(validate_data(x, weights=rng.integers(1, 4, size=x.shape[0])))


@pytest.mark.parametrize("rows", [300, 12_000])  # 101 chunks; and chunks longer than BLAS splits a dot product at
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_threaded_pass_equals_the_sequential_pass_bitwise(covariance_type, rows, blas_threads):
    """Runs of chunks in threads sum to exactly the numbers of the runs one after the other.

    Also with BLAS's own threads in the sequential pass: OpenBLAS shares a matrix product out by blocks of
    the result, not of the summed rows, and the weighted log-likelihood is summed by numpy, not by BLAS's
    dot product (which splits long vectors over its threads).
    """
    from mixflow.engines import em_steps
    from mixflow.parallel import one_blas_thread

    model, params, prepared = _pass_inputs(covariance_type, 30_011)
    threaded = em_steps.data_pass(model, params, prepared, rows, threaded=True)
    with one_blas_thread():
        one_thread = em_steps.data_pass(model, params, prepared, rows)
    for sequential in (one_thread, em_steps.data_pass(model, params, prepared, rows)):
        assert threaded.log_likelihood == sequential.log_likelihood
        np.testing.assert_array_equal(threaded.counts, sequential.counts)
        for key, value in sequential.statistics.items():
            np.testing.assert_array_equal(threaded.statistics[key], value)


def test_threaded_runs_have_their_own_scratch_and_the_callers_errstate(monkeypatch):
    from mixflow.engines import em_steps

    model, params, prepared = _pass_inputs("full", 2_000)
    seen = []
    log_density = type(model).log_density

    def recording(self, constants, chunk):
        seen.append((constants, np.geterr()["over"]))
        return log_density(self, constants, chunk)

    monkeypatch.setattr(type(model), "log_density", recording)
    with np.errstate(over="raise"):
        em_steps.data_pass(model, params, prepared, 300, threaded=True)
    assert len({id(constants) for constants, _ in seen}) == 2  # one shallow copy per run
    assert {state for _, state in seen} == {"raise"}


def test_threads_only_for_large_data_on_several_cores(monkeypatch):
    from mixflow.engines import em_steps

    monkeypatch.setattr(em_steps, "available_cores", lambda: 2)
    assert em_steps.use_threads(200_000, 560)
    assert not em_steps.use_threads(2_000, 11)
    monkeypatch.setattr(em_steps, "available_cores", lambda: 1)
    assert not em_steps.use_threads(200_000, 560)


def _family_case(family, rng):
    """A model, data, weights and a chunk size that gives several chunks, for each family."""
    import pandas as pd

    labels = rng.integers(2, size=5000)
    if family == "gaussian":
        return mixflow.GaussianMixture(2), rng.normal(3.0 * labels[:, None], 1.0, size=(5000, 4)), None, 400
    if family == "softkmeans":
        return mixflow.SoftKMeans(2, variance=1.0), rng.normal(3.0 * labels[:, None], 1.0, size=(5000, 2)), None, 400
    if family == "poisson":
        return mixflow.PoissonMixture(2), rng.poisson(np.where(labels == 1, 8.0, 2.0)), None, 400
    if family == "regression":
        x = rng.uniform(0, 1, 5000)
        y = np.where(labels == 1, 1.0 + 2.0 * x, -x) + rng.normal(0, 0.2, 5000)
        return mixflow.RegressionMixture(2, "y ~ x"), pd.DataFrame({"x": x, "y": y}), None, 400
    edges = np.linspace(-3.0, 7.0, 41)
    counts = np.histogram(rng.normal(4.0 * labels, 1.0), bins=edges)[0]
    classes = pd.DataFrame({"lower": edges[:-1], "upper": edges[1:]})
    return mixflow.GroupedGaussianMixture(2, open_below=-3.0, open_above=7.0), classes, counts, 6


@pytest.mark.parametrize("family", ["gaussian", "softkmeans", "poisson", "regression", "grouped"])
def test_fit_is_the_same_with_and_without_threads(family, monkeypatch):
    from mixflow.engines import em

    model, data, weights, chunk_size = _family_case(family, np.random.default_rng(6))
    fits = []
    for threaded in (False, True):
        monkeypatch.setattr(em, "use_threads", lambda n_obs, width, threaded=threaded: threaded)
        fits.append(mixflow.fit(model, data, weights=weights, random_seed=1, n_init=2, chunk_size=chunk_size))
    for name in fits[0]["em/estimate"].data_vars:
        np.testing.assert_array_equal(fits[1]["em/estimate"][name], fits[0]["em/estimate"][name])
    assert fits[1]["em"].attrs["log_likelihood"] == fits[0]["em"].attrs["log_likelihood"]
    assert fits[1]["em"].attrs["n_iter"] == fits[0]["em"].attrs["n_iter"]


def test_tol_zero_runs_every_iteration(faithful):
    """A fixed point (the objective no longer changes) ends EM at a positive tol, never at tol=0 (sklearn's way)."""
    model = mixflow.GaussianMixture(2)
    settled = mixflow.fit(model, faithful, n_init=1, tol=1e-300, max_iter=400, random_seed=0)["em"]
    assert settled.attrs["converged"] and settled.attrs["n_iter"] < 400
    longer = int(settled.attrs["n_iter"]) + 5
    with pytest.warns(mixflow.ConvergenceWarning, match="max_iter"):
        every = mixflow.fit(model, faithful, n_init=1, tol=0.0, max_iter=longer, random_seed=0)["em"]
    assert every.attrs["n_iter"] == longer and not every.attrs["converged"]


def test_the_fit_says_how_many_maxima_its_runs_reached_and_how_many_reached_the_best():
    """Wine (13 features), K=3 full: the runs end at several maxima; the estimate's is reached by at least one of
    them, and the summary says so. Old Faithful K=2 has one maximum, reached by every run. The runs counted are
    those continued to convergence (within tol per observation of their maximum) and the short runs stopped by
    the screening's own rule (within its tolerance, 1e-6 per observation)."""
    from sklearn.datasets import load_wine

    wine = mixflow.fit(mixflow.GaussianMixture(3), load_wine().data, random_seed=0)
    attrs = wine["em"].attrs
    stats = wine["em/sample_stats"]
    sound = stats["converged"].values & ~stats["degenerate"].values & ~stats["spurious"].values
    finals = stats["final_objective"].values[sound]
    within = np.where(stats["continued"].values[sound], 1e-10, 1e-6) * 178
    assert attrs["n_maxima"] > 1 and 1 <= attrs["n_runs_at_best"] <= sound.sum()
    assert attrs["n_runs_at_best"] == np.sum(np.abs(finals - attrs["log_likelihood"]) <= within)
    assert f"best of {attrs['n_maxima']} maxima" in mixflow.summary(wine, kind="text")
    faithful = mixflow.fit(mixflow.GaussianMixture(2), mixflow.load_dataset("faithful"), random_seed=0)
    assert faithful["em"].attrs["n_maxima"] == 1 and faithful["em"].attrs["n_runs_at_best"] >= 2
    assert "maxima" not in mixflow.summary(faithful, kind="text")


def test_the_maxima_the_short_runs_saw_are_counted_when_one_run_is_continued():
    """Three groups fitted with K=2: two mirror maxima (the left or the right pair merged). The short runs agree
    early, so one run is continued; the others that settled in the screening saw both maxima, and the fit says
    so (it said one maximum, reached by one run, before they were counted)."""
    rng = np.random.default_rng(21)
    x = np.concatenate([rng.normal(-4, 1, 100), rng.normal(0, 1, 100), rng.normal(4, 1, 100)])
    tree = mixflow.fit(mixflow.GaussianMixture(2), x, method="map", random_seed=2)
    stats, attrs = tree["em/sample_stats"], tree["em"].attrs
    assert stats["continued"].values.sum() == 1
    settled = np.round(stats["final_objective"].values[stats["converged"].values], 3)
    assert sorted(set(settled)) == [-755.567, -752.164]
    assert (attrs["n_maxima"], attrs["n_runs_at_best"]) == (2, np.sum(settled == -752.164))
    assert attrs["log_posterior"] == pytest.approx(-752.164, abs=1e-3)
    assert f"best of 2 maxima the runs reached, by {attrs['n_runs_at_best']} runs" in \
        mixflow.summary(tree, kind="text")
    from mixflow.present.report.cards import _em_findings

    assert ("warn", "EM restarts reached different optima (log posterior density from -755.567 to -752.164): the "
                    "posterior density is multimodal; the best is kept (the runs reached 2 maxima, the best by "
                    f"{attrs['n_runs_at_best']} runs).") in _em_findings(tree)


def test_runs_stopped_at_max_iter_reached_no_maximum():
    """With max_iter too small every run stops unconverged at a different value: none of those is a maximum, so the
    fit counts none, and neither the summary nor the report calls the likelihood multimodal."""
    from mixflow.present.report.cards import _em_findings

    with pytest.warns(mixflow.ConvergenceWarning):
        tree = mixflow.fit(mixflow.GaussianMixture(3), mixflow.load_dataset("faithful"), random_seed=0, max_iter=5)
    stats = tree["em/sample_stats"]
    continued = stats["final_objective"].values[stats["continued"].values]
    assert not stats["converged"].values.any() and np.ptp(continued) > 1
    assert tree["em"].attrs["n_maxima"] == 0 and tree["em"].attrs["n_runs_at_best"] == 0
    assert "maxima" not in mixflow.summary(tree, kind="text")
    assert not [text for _, text in _em_findings(tree) if "different optima" in text]


def test_runs_counted_at_the_best_maximum_are_those_of_its_maximum():
    """Final objectives chained within the stopping threshold are one maximum, and all its runs are at it."""
    from mixflow.engines.em import _maxima_found
    from mixflow.engines.em_run import Run

    within = 1.0
    finals = [-101.5, -100.8, -100.0, -110.0, np.nan]
    runs = [Run(params={}, history_objective=[value], converged=True) for value in finals]
    restarts = {"continued": np.array([True, True, True, True, True]), "degenerate": np.zeros(5, dtype=bool),
                "spurious": np.zeros(5, dtype=bool)}
    assert _maxima_found(runs, restarts, 2, within) == (3, 2)
    restarts["continued"][0] = False  # a short run that was not continued is not counted
    assert _maxima_found(runs, restarts, 2, within) == (2, 2)
    runs[3].converged = False  # nor a run stopped at max_iter: -110 is no maximum
    assert _maxima_found(runs, restarts, 2, within) == (2, 1)


def test_responsibilities_and_weight_logs_warn_of_nothing_at_zero_or_infinite_entries():
    """The quiet paths (no np.errstate) are taken only where no warning can arise: a row of zero density, an
    infinite log density, a zero or infinite weight go through the guarded path, silently, with the same values."""
    from mixflow.engines.accelerate import centred_log_ratios, log_weights
    from mixflow.engines.em_steps import log_normalise

    rows = np.array([[-1.0, -2.0], [-np.inf, -np.inf], [np.inf, 0.0], [np.nan, 0.0], [-800.0, -801.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resp = rows.copy()
        log_px = np.concatenate([log_normalise(row) for row in np.split(resp, len(resp))])  # each row alone too
        log_normalise(rows.copy())
        ratios = np.concatenate([centred_log_ratios(row) for row in np.array([[[0.5, 0.5]], [[0.0, 1.0]],
                                                                               [[np.inf, 1.0]]])])
        logs = log_weights(np.array([0.0, 1.0]))
    np.testing.assert_allclose(resp[0], np.exp([-1.0, -2.0]) / np.exp([-1.0, -2.0]).sum())
    assert np.isnan(resp[1:4]).any(axis=1).all() and np.isfinite(resp[[0, 4]]).all()
    assert log_px[0] == pytest.approx(np.logaddexp(-1.0, -2.0)) and log_px[1] == -np.inf
    np.testing.assert_array_equal(ratios[0], [0.0, 0.0])
    assert np.isnan(ratios[1, 0]) and np.isnan(ratios[2]).any() and logs.tolist() == [-np.inf, 0.0]


def test_every_warning_of_a_call_points_at_the_callers_line():
    # a warning about the user's data or call names the user's line, however deep in mixflow it was raised: fits
    # (not converged, collapsed, constant features, too many parameters), the choice of K re-raising its fits'
    # warnings and its own, a bootstrap's, standard errors'
    faithful = mixflow.load_dataset("faithful")
    constant = faithful.assign(site=1.0)
    calls = {
        "not converged": lambda: mixflow.fit(mixflow.GaussianMixture(2), faithful, method="em", init="kmeans",
                                             max_iter=2, random_seed=0),
        "constant and collapsed": lambda: mixflow.standard_errors(mixflow.fit(
            mixflow.GaussianMixture(2, covariance="diag"), constant, method="em", random_seed=0)),
        "too many parameters": lambda: mixflow.fit(mixflow.GaussianMixture(2), faithful.iloc[:5], method="map",
                                                   random_seed=0),
        "select_k": lambda: mixflow.select_k(mixflow.GaussianMixture(1), faithful, ks=[1, 2], methods=("em",),
                                             n_folds=None, random_seed=0, n_jobs=1, fit_kwargs={"max_iter": 2}),
        "bootstrap": lambda: mixflow.bootstrap(mixflow.fit(mixflow.GaussianMixture(2), faithful, method="em",
                                                           init="kmeans", max_iter=3, random_seed=0),
                                               faithful, n_replicates=2, random_seed=0, n_jobs=1),
    }
    seen = set()
    for name, call in calls.items():
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            call()
        ours = [w for w in said if issubclass(w.category, mixflow.MixflowWarning)]
        assert all(w.filename == __file__ for w in ours), (name, {(w.filename, str(w.message)[:60]) for w in ours})
        seen |= {(name, w.category.__name__) for w in ours}
    assert seen >= {("not converged", "ConvergenceWarning"), ("constant and collapsed", "ConstantFeatureWarning"),
                    ("constant and collapsed", "DegenerateComponentWarning"),
                    ("constant and collapsed", "MixflowWarning"), ("too many parameters", "MixflowWarning"),
                    ("select_k", "ConvergenceWarning"), ("select_k", "MixflowWarning"),
                    ("bootstrap", "ConvergenceWarning"), ("bootstrap", "MixflowWarning")}


def test_a_fits_warnings_reach_a_caller_whose_file_is_no_loaded_module():
    # a notebook's cell, python -c, python -m's runner: the fit's warnings, recorded and raised again, were raised
    # with no module there, which the warnings machinery drops under the "default" action a workflow's console uses
    code = compile('mixflow.fit(mixflow.GaussianMixture(2), faithful, method="em", init="kmeans", max_iter=2, '
                   'random_seed=0)', "<cell 1>", "exec")
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("default")
        exec(code, {"mixflow": mixflow, "faithful": mixflow.load_dataset("faithful")})
    assert [(w.category, w.filename, w.lineno) for w in said] == [(mixflow.ConvergenceWarning, "<cell 1>", 1)]
