"""PyMC models of grouped data and soft k-means: the log posterior is the EM MAP objective, its mode the MAP."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from scipy.special import log_ndtr
from test_pymc_model import FAST, _em_objective, _forward, assert_em_map_is_the_mode

import mixflow
from mixflow.data import validate_data
from mixflow.families.grouped.model import interval_log_probability
from mixflow.families.grouped.pymc import build_model as grouped_model
from mixflow.families.grouped.pymc import free_values as grouped_start
from mixflow.families.grouped.pymc import interval_log_probability_tensor, log_standard_cdf
from mixflow.families.softkmeans.pymc import build_model as soft_kmeans_model
from mixflow.families.softkmeans.pymc import free_values as soft_kmeans_start

OPEN = {"open_below": 0.5835, "open_above": 0.6915}


@pytest.fixture(scope="module")
def crabs():
    data = mixflow.load_dataset("crabs")
    return validate_data(data[["lower", "upper"]], weights=data["count"])


@pytest.fixture(scope="module")
def weighted_faithful(faithful):
    rng = np.random.default_rng(4)
    return validate_data(faithful, weights=rng.integers(1, 4, len(faithful)).astype(float))


def _random_grouped(common, rng):
    return {"weights": rng.dirichlet([1.0, 1.0, 1.0]), "mu": rng.normal(0.64, 0.03, 3),
            "variance": rng.uniform(2e-5, 8e-4, () if common else 3)}


def _random_soft_kmeans(rng):
    return {"weights": rng.dirichlet([1.0, 1.0, 1.0]), "mu": rng.normal([3.5, 70.0], [1.0, 12.0], (3, 2))}


def _gaps(model, data, pymc_model, start, draw, n_points=5):
    log_density = pymc_model.compile_logp(jacobian=False, mode=FAST)
    forward = _forward(pymc_model)
    rng = np.random.default_rng(12)
    gaps = []
    for _ in range(n_points):
        params = draw(rng)
        gaps.append(log_density(forward(start(params))) - _em_objective(model, data, params))
    return np.array(gaps)


def test_log_standard_cdf_and_interval_probability_against_scipy():
    x = pt.dvector("x")
    log_cdf, gradient = pytensor.function([x], [log_standard_cdf(x), pytensor.grad(log_standard_cdf(x).sum(), x)])(
        np.linspace(-60.0, 12.0, 1441))
    np.testing.assert_allclose(log_cdf, log_ndtr(np.linspace(-60.0, 12.0, 1441)), rtol=1e-13, atol=1e-300)
    assert np.isfinite(gradient).all()
    alpha, beta = pt.dvector("alpha"), pt.dvector("beta")
    interval = pytensor.function([alpha, beta], interval_log_probability_tensor(alpha, beta))
    low = np.linspace(-38.0, 38.0, 400)
    high = low + np.tile([1e-4, 0.01, 0.5, 3.0], 100)
    np.testing.assert_allclose(interval(low, high), interval_log_probability(low, high), rtol=1e-12)


@pytest.mark.parametrize("likelihood", ["interval", "midpoint"])
@pytest.mark.parametrize("common", [False, True])
def test_grouped_log_posterior_is_the_em_map_objective_up_to_a_constant(crabs, likelihood, common):
    model = mixflow.GroupedGaussianMixture(3, common_variance=common, likelihood=likelihood,
                                           prior={"weights_concentration": 2.5, "shrinkage": 0.3}, **OPEN)
    gaps = _gaps(model, crabs, grouped_model(model, crabs), lambda p: grouped_start(model, crabs, p),
                 lambda rng: _random_grouped(common, rng))
    # the one constant is the log Jacobian of the fixed map to standardised units
    assert np.ptp(gaps) < 1e-8 * np.abs(gaps).max() + 1e-9


def test_grouped_classes_without_open_ends_and_in_far_tails(crabs):
    """Finite end classes, and components far outside the classes: still the EM objective, finite gradients."""
    model = mixflow.GroupedGaussianMixture(2)
    pymc_model = grouped_model(model, crabs)
    far = {"weights": np.array([0.3, 0.7]), "mu": np.array([0.2, 1.3]), "variance": np.array([1e-4, 4e-4])}
    near = {"weights": np.array([0.4, 0.6]), "mu": np.array([0.63, 0.66]), "variance": np.array([1e-4, 2e-4])}
    forward = _forward(pymc_model)
    log_density = pymc_model.compile_logp(jacobian=False, mode=FAST)
    gradient = pymc_model.compile_dlogp(jacobian=False, mode=FAST)
    gaps = []
    for params in (far, near):
        point = forward(grouped_start(model, crabs, params))
        gaps.append(log_density(point) - _em_objective(model, crabs, params))
        assert np.isfinite(gradient(point)).all()
    assert _em_objective(model, crabs, far) < -1e5  # hundreds of standard deviations into the tails
    assert gaps[0] == pytest.approx(gaps[1], rel=1e-9)


def test_soft_kmeans_log_posterior_is_the_em_map_objective_up_to_a_constant(weighted_faithful):
    model = mixflow.SoftKMeans(3, 30.0, prior={"weights_concentration": 2.0, "shrinkage": 0.5})
    gaps = _gaps(model, weighted_faithful, soft_kmeans_model(model, weighted_faithful),
                 lambda p: soft_kmeans_start(model, weighted_faithful, p), _random_soft_kmeans)
    assert np.ptp(gaps) < 1e-8 * np.abs(gaps).max() + 1e-9


def _assert_em_map_is_the_mode(pymc_model, estimate, start, nudge):
    nudged = {**start, "mu_std": start["mu_std"] + nudge}  # the optimiser has to walk back
    assert_em_map_is_the_mode(pymc_model, estimate, start, nudged, rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize("likelihood", ["interval", "midpoint"])
def test_grouped_em_map_estimate_is_the_mode_of_the_pymc_posterior(crabs, likelihood):
    model = mixflow.GroupedGaussianMixture(2, likelihood=likelihood, **OPEN)
    tree = mixflow.fit(model, crabs.values, weights=crabs.weights, method="map", random_seed=0, tol=1e-15,
                       max_iter=20000, n_init=2)
    estimate = {name: tree["em/estimate"][name].values for name in tree["em/estimate"].data_vars}
    _assert_em_map_is_the_mode(grouped_model(model, crabs), estimate, grouped_start(model, crabs, estimate), 0.1)


def test_soft_kmeans_em_map_estimate_is_the_mode_of_the_pymc_posterior(faithful):
    model = mixflow.SoftKMeans(2, 40.0)
    tree = mixflow.fit(model, faithful, method="map", random_seed=0, tol=1e-15, max_iter=5000)
    estimate = {name: tree["em/estimate"][name].values for name in tree["em/estimate"].data_vars}
    data = validate_data(faithful)
    _assert_em_map_is_the_mode(soft_kmeans_model(model, data), estimate, soft_kmeans_start(model, data, estimate), 0.05)


def test_deterministics_carry_the_em_names_and_dims(crabs, weighted_faithful):
    for model, data, build in ((mixflow.GroupedGaussianMixture(2), crabs, grouped_model),
                               (mixflow.GroupedGaussianMixture(2, common_variance=True), crabs, grouped_model),
                               (mixflow.SoftKMeans(2, 30.0), weighted_faithful, soft_kmeans_model)):
        pymc_model = build(model, data)
        for name, dims in model.parameter_dims(data.features).items():
            assert tuple(pymc_model.named_vars_to_dims.get(name, ())) == dims, (model, name)


def test_minibatch_likelihood_is_unbiased(crabs):
    model = mixflow.GroupedGaussianMixture(2, **OPEN)
    params = {"weights": np.array([0.4, 0.6]), "mu": np.array([0.63, 0.66]), "variance": np.array([1e-4, 2e-4])}
    full = grouped_model(model, crabs)
    batched = grouped_model(model, crabs, minibatch_size=20)
    values = []
    for pymc_model in (full, batched):
        point = _forward(pymc_model)(grouped_start(model, crabs, params))
        graph = pymc_model.replace_rvs_by_values([pymc_model["log_likelihood"]])[0]
        potential = pymc_model.compile_fn(graph, inputs=pymc_model.value_vars, mode=FAST, random_seed=3)
        values.append(np.array([potential(point) for _ in range(1 if pymc_model is full else 300)]))
    estimate, error = values[1].mean(), values[1].std() / np.sqrt(values[1].size)
    assert abs(estimate - values[0][0]) < 4 * error
    assert values[1].std() > 0  # the batches did change


@pytest.mark.parametrize(("build", "model", "kwargs", "error", "message"), [
    (grouped_model, mixflow.GaussianMixture(2), {}, TypeError, "model: expected a mixflow GroupedGaussian"),
    (grouped_model, mixflow.GroupedGaussianMixture(2), {"minibatch_size": 0}, ValueError,
     r"minibatch_size: expected None or an integer in \[1, n_obs = 29\], got 0"),
    (soft_kmeans_model, mixflow.GroupedGaussianMixture(2), {}, TypeError, "model: expected a mixflow SoftKMeans"),
    (soft_kmeans_model, mixflow.SoftKMeans(2, 1.0), {"minibatch_size": 30}, ValueError,
     r"minibatch_size: expected None or an integer in \[1, n_obs = 29\], got 30"),
])
def test_bad_builder_inputs_are_refused(crabs, build, model, kwargs, error, message):
    with pytest.raises(error, match=message):
        build(model, crabs, **kwargs)


@pytest.mark.parametrize(("build", "model"), [(grouped_model, mixflow.GroupedGaussianMixture(2)),
                                              (soft_kmeans_model, mixflow.SoftKMeans(2, 1.0))])
def test_unvalidated_data_are_refused(crabs, build, model):
    with pytest.raises(TypeError, match=r"data: expected validated mixflow.data.Data .*got ndarray"):
        build(model, crabs.values)
