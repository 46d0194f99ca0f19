"""The PyMC model is the declared model: its log posterior is the EM MAP objective, its mode the EM MAP."""

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
import pytest
from scipy import stats

import mixflow
from mixflow.data import validate_data
from mixflow.engines.em_steps import data_pass, objective
from mixflow.families.gaussian.pymc import free_values, standardization
from mixflow.families.pymc_parts import build_model

COVARIANCES = ["full", "tied", "diag", "spherical"]
FAST = "FAST_COMPILE"  # these checks are about values, not speed: skip the numba compilation


@pytest.fixture(scope="module")
def weighted_data():
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.normal([0.0, 10.0], [1.0, 5.0], (60, 2)), rng.normal([3.0, 30.0], [0.5, 3.0], (40, 2))])
    return validate_data(x, weights=rng.integers(1, 4, len(x)).astype(float))


def _random_parameters(covariance, k, d, rng):
    scales = np.array([1.0, 5.0])[:d]
    params = {"weights": rng.dirichlet(np.ones(k)), "mu": rng.normal([1.0, 20.0][:d], scales, (k, d))}
    if covariance == "full":
        params["covariance"] = stats.invwishart.rvs(d + 4, np.diag(scales**2) * 3, size=k, random_state=rng)
    elif covariance == "tied":
        params["covariance"] = stats.invwishart.rvs(d + 4, np.diag(scales**2) * 3, random_state=rng)
    elif covariance == "diag":
        params["variance"] = rng.uniform(0.3, 2.0, (k, d)) * scales**2
    else:
        params["variance"] = rng.uniform(0.3, 2.0, k) * 4.0
    return params


def _forward(pymc_model):
    """A function taking free-variable values (untransformed) to the value variables' (transformed)."""
    inputs, outputs = [], []
    for rv in pymc_model.free_RVs:
        value = rv.type()
        transform = pymc_model.rvs_to_transforms[rv]
        inputs.append(value)
        outputs.append(value if transform is None else transform.forward(value, *rv.owner.inputs))
    function = pytensor.function(inputs, outputs, mode=FAST, on_unused_input="ignore")
    names = [pymc_model.rvs_to_values[rv].name for rv in pymc_model.free_RVs]

    def forward(values):
        return dict(zip(names, function(*[values[rv.name] for rv in pymc_model.free_RVs]), strict=True))

    return forward


def assert_em_map_is_the_mode(pymc_model, estimate: dict, start: dict, nudged: dict, rtol: float, atol: float,
                              ftol: float = 1e-15, gtol: float = 1e-10):
    """``pm.find_MAP`` from ``nudged`` walks back to the EM MAP ``estimate`` (to rtol/atol) and finds nothing
    higher than the log posterior (without Jacobian) at ``start``, the EM estimate's free values."""
    result = pm.find_MAP(initvals=nudged, model=pymc_model, progressbar=False, return_inferencedata=True,
                         jitter=False, compile_kwargs={"mode": FAST},
                         options={"ftol": ftol, "gtol": gtol, "maxiter": 5000})
    found = result["posterior"].isel(chain=0, draw=0)
    for name, value in estimate.items():
        np.testing.assert_allclose(found[name].values, value, rtol=rtol, atol=atol, err_msg=name)
    log_density = pymc_model.compile_logp(jacobian=False, mode=FAST)
    forward = _forward(pymc_model)
    at_optimum = log_density(forward({name: found[name].values for name in start}))
    assert at_optimum - log_density(forward(start)) < 1e-7  # nothing higher than the EM estimate was found


def _em_objective(model, data, params):
    """EM's MAP objective at data-unit ``params`` (the engine works in the family's working units)."""
    prepared = model.prepare(data)
    working = model.to_working(params, prepared)
    log_likelihood = data_pass(model, working, prepared, data.n_obs).log_likelihood
    return objective(model, working, log_likelihood, model.working_prior(prepared), np.arange(model.n_components))


@pytest.mark.parametrize("covariance", COVARIANCES)
def test_log_posterior_is_the_em_map_objective_up_to_a_constant(weighted_data, covariance):
    model = mixflow.GaussianMixture(3, covariance=covariance, prior={"weights_concentration": 2.5})
    pymc_model = build_model(model, weighted_data)
    log_density = pymc_model.compile_logp(jacobian=False, mode=FAST)
    forward = _forward(pymc_model)
    rng = np.random.default_rng(11)
    gaps = []
    for _ in range(5):
        params = _random_parameters(covariance, 3, 2, rng)
        point = forward(free_values(model, weighted_data, params))
        gaps.append(log_density(point) - _em_objective(model, weighted_data, params))
    # the one constant is the log Jacobian of the fixed map to standardised units
    assert np.ptp(gaps) < 1e-8 * np.abs(gaps).max() + 1e-9


@pytest.mark.parametrize("covariance", COVARIANCES)
def test_sampled_density_adds_exactly_the_jacobian_of_the_transforms(weighted_data, covariance):
    """logp(jacobian=True) - logp(jacobian=False) = log |det d(parameters) / d(unconstrained)| (by autodiff)."""
    model = mixflow.GaussianMixture(2, covariance=covariance)
    pymc_model = build_model(model, weighted_data)
    values = pymc_model.value_vars
    flat = pt.vector("flat")
    sizes, pieces, start = [], [], 0
    params = _random_parameters(covariance, 2, 2, np.random.default_rng(3))
    point = _forward(pymc_model)(free_values(model, weighted_data, params))
    for var in values:
        size = int(np.size(point[var.name]))
        pieces.append(flat[start:start + size].reshape(np.shape(point[var.name])))
        sizes.append(size)
        start += size
    replace = dict(zip(values, pieces, strict=True))
    free = [pymc_model[name] for name in ("weights", "mu_std", model.covariance_name() + "_std")]
    weights, mu, dispersion = pytensor.graph.clone_replace(pymc_model.replace_rvs_by_values(free), replace)
    if covariance in ("full", "tied"):  # a symmetric matrix: its upper triangle are the free entries
        rows, cols = np.triu_indices(2)
        dispersion = dispersion[..., rows, cols]
    parameters = pt.concatenate([weights[:-1], mu.ravel(), dispersion.ravel()])
    jacobian = pytensor.function([flat], pytensor.gradient.jacobian(parameters, flat), mode=FAST)
    vector = np.concatenate([np.ravel(point[var.name]) for var in values])
    log_det = np.linalg.slogdet(jacobian(vector))[1]
    with_jacobian = pymc_model.compile_logp(jacobian=True, mode=FAST)(point)
    without = pymc_model.compile_logp(jacobian=False, mode=FAST)(point)
    assert with_jacobian - without == pytest.approx(log_det, rel=1e-7)


@pytest.mark.parametrize("covariance", COVARIANCES)
def test_em_map_estimate_is_the_mode_of_the_pymc_posterior(covariance, faithful):
    model = mixflow.GaussianMixture(2, covariance=covariance)
    tree = mixflow.fit(model, faithful, method="map", random_seed=0, tol=1e-14, max_iter=5000)
    estimate = {name: tree["em/estimate"][name].values for name in tree["em/estimate"].data_vars}
    data = validate_data(faithful)
    pymc_model = build_model(model, data)
    start = free_values(model, data, estimate)
    nudged = {**start, "mu_std": start["mu_std"] + 0.05}  # the optimiser has to walk back
    assert_em_map_is_the_mode(pymc_model, estimate, start, nudged, rtol=2e-5, atol=1e-7, ftol=1e-14, gtol=1e-9)


def test_deterministics_are_in_data_units_with_em_names_and_dims(weighted_data):
    model = mixflow.GaussianMixture(2, covariance="full")
    pymc_model = build_model(model, weighted_data)
    for name, dims in model.parameter_dims().items():
        assert pymc_model.named_vars_to_dims[name] == dims
    params = _random_parameters("full", 2, 2, np.random.default_rng(5))
    values = free_values(model, weighted_data, params)
    evaluate = pytensor.function(pymc_model.value_vars, pymc_model.replace_rvs_by_values(
        [pymc_model["weights"], pymc_model["mu"], pymc_model["covariance"]]), mode=FAST)
    point = _forward(pymc_model)(values)
    weights, mu, covariance = evaluate(*[point[v.name] for v in pymc_model.value_vars])
    np.testing.assert_allclose(weights, params["weights"], rtol=1e-12)
    np.testing.assert_allclose(mu, params["mu"], rtol=1e-12)
    np.testing.assert_allclose(covariance, params["covariance"], rtol=1e-10)


def test_spherical_standardisation_keeps_spheres():
    data = validate_data(np.random.default_rng(0).normal([0, 0], [1, 10], (50, 2)))
    scale = standardization(mixflow.GaussianMixture(2, covariance="spherical"), data).scale
    assert scale[0] == scale[1]


def test_minibatch_scales_the_likelihood_to_the_full_data(weighted_data):
    model = mixflow.GaussianMixture(2, covariance="diag")
    pymc_model = build_model(model, weighted_data, minibatch_size=25)
    potential = pymc_model["log_likelihood"]
    assert any(node.op.__class__.__name__ == "MinibatchOp" for node in pytensor.graph.traversal.applys_between(
        pymc_model.value_vars, [potential]))


def test_a_family_without_a_pymc_module_is_refused_by_name(weighted_data):
    from dataclasses import dataclass

    from mixflow.families.base import MixtureModel
    from mixflow.families.pymc_parts import supports_pymc

    @dataclass(frozen=True)
    class EMOnly(MixtureModel):  # a family registered for EM alone
        n_components: int = 2

    model = EMOnly()
    assert not supports_pymc(model) and supports_pymc(mixflow.SoftKMeans(2, 1.0))
    with pytest.raises(TypeError, match="model: expected a mixflow model with a PyMC form .* EMOnly, which has none"):
        model.pymc_model(weighted_data)
    with pytest.raises(TypeError, match="model: expected a mixflow model with a PyMC form .* got EMOnly"):
        build_model(model, weighted_data)


def test_bad_inputs_name_the_argument(weighted_data):
    model = mixflow.GaussianMixture(2)
    with pytest.raises(TypeError, match="model: expected a mixflow model with a PyMC form .* got str"):
        build_model("gmm", weighted_data)
    with pytest.raises(TypeError, match="data: expected validated mixflow.data.Data"):
        build_model(model, np.zeros((10, 2)))
    with pytest.raises(TypeError, match="prior: expected None or a resolved prior"):
        build_model(model, weighted_data, prior={"dof": 3})
    with pytest.raises(ValueError, match=r"minibatch_size: expected None or an integer in \[1, n_obs = 100\]"):
        build_model(model, weighted_data, minibatch_size=0)
