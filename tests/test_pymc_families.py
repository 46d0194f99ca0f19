"""The Poisson and regression mixtures in PyMC: the declared posterior, the EM MAP as its mode, and the
MCMC and ADVI fits in the one container (London deaths, tone), checked against a known truth."""


import numpy as np
import pymc as pm
import pytest
from test_pymc_model import FAST, _em_objective, _forward

import mixflow
from mixflow.data import validate_data
from mixflow.engines.advi import fit_advi
from mixflow.engines.mcmc import fit_mcmc
from mixflow.families.poisson import PoissonMixture
from mixflow.families.regression import RegressionMixture
from mixflow.pymc_model import build_model

POISSON = PoissonMixture(2, prior={"weights_concentration": 1.5})
REGRESSION = RegressionMixture(2, "tuned ~ stretchratio", prior={"weights_concentration": 2.0})
QUICK_MCMC = {"draws": 300, "tune": 300, "chains": 2, "progressbar": False}


@pytest.fixture(scope="module")
def deaths():
    frame = mixflow.load_dataset("london_deaths")
    return frame["deaths"], frame["days"]


@pytest.fixture(scope="module")
def deaths_data(deaths):
    return validate_data(deaths[0], weights=deaths[1])


@pytest.fixture(scope="module")
def tone():
    return mixflow.load_dataset("tone")


def _random_poisson(rng):
    return {"weights": rng.dirichlet([2.0, 2.0]), "rate": rng.uniform(0.3, 5.0, 2)}


def _random_regression(rng):
    return {"weights": rng.dirichlet([2.0, 2.0]), "coefficients": rng.normal([[1.9, 0.05], [0.0, 1.0]], 0.3),
            "variance": rng.uniform(0.001, 0.2, 2)}


def _estimate(tree, group="em/estimate"):
    return {name: tree[group][name].values for name in tree[group].data_vars}


def _cases(deaths_data, tone):
    return {"poisson": (POISSON, deaths_data, _random_poisson),
            "regression": (REGRESSION, validate_data(tone), _random_regression)}


# -- the declared posterior ----------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["poisson", "regression"])
def test_log_posterior_is_the_em_map_objective_up_to_a_constant(family, deaths_data, tone):
    model, data, draw = _cases(deaths_data, tone)[family]
    pymc_model = model.pymc_model(data)
    log_density = pymc_model.compile_logp(jacobian=False, mode=FAST)
    forward = _forward(pymc_model)
    rng = np.random.default_rng(21)
    gaps = []
    for _ in range(6):
        params = draw(rng)
        gaps.append(log_density(forward(model.pymc_start(data, params))) - _em_objective(model, data, params))
    assert np.ptp(gaps) < 1e-8 * np.abs(_em_objective(model, data, params)) + 1e-9


@pytest.mark.parametrize("family", ["poisson", "regression"])
def test_em_map_estimate_is_the_mode_of_the_pymc_posterior(family, deaths, tone):
    model, fit_args = (POISSON, {"data": deaths[0], "weights": deaths[1]}) if family == "poisson" else (
        REGRESSION, {"data": tone})
    tree = mixflow.fit(model, method="map", random_seed=0, tol=1e-14, max_iter=20000, **fit_args)
    estimate = _estimate(tree)
    data = validate_data(fit_args["data"], weights=fit_args.get("weights"))
    pymc_model = model.pymc_model(data)
    start = model.pymc_start(data, estimate)
    free = [name for name in start if name != "weights"][0]
    nudged = {**start, free: start[free] * 1.1}  # the optimiser has to walk back
    result = pm.find_MAP(initvals=nudged, model=pymc_model, progressbar=False, return_inferencedata=True,
                         jitter=False, compile_kwargs={"mode": FAST},
                         options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 5000})
    found = result["posterior"].isel(chain=0, draw=0)
    for name, value in estimate.items():  # London deaths' mode sits on a flat ridge: L-BFGS stops 3e-5 short
        np.testing.assert_allclose(found[name].values, value, rtol=1e-4, atol=1e-7, err_msg=name)
    log_density = pymc_model.compile_logp(jacobian=False, mode=FAST)
    forward = _forward(pymc_model)
    at_optimum = log_density(forward({name: found[name].values for name in start}))
    assert at_optimum - log_density(forward(start)) < 1e-7  # nothing higher than the EM estimate was found


@pytest.mark.parametrize("family", ["poisson", "regression"])
def test_free_variables_and_deterministics_carry_the_em_names_and_dims(family, deaths_data, tone):
    model, data, draw = _cases(deaths_data, tone)[family]
    pymc_model = model.pymc_model(data)
    for name, dims in model.parameter_dims(data.features).items():
        assert pymc_model.named_vars_to_dims[name] == dims
    assert {rv.name for rv in pymc_model.free_RVs} == set(model.pymc_start(data, draw(np.random.default_rng(0))))


def test_regression_start_maps_back_to_the_same_parameters(tone):
    import pytensor

    data = validate_data(tone)
    params = _random_regression(np.random.default_rng(4))
    pymc_model = REGRESSION.pymc_model(data)
    evaluate = pytensor.function(pymc_model.value_vars, pymc_model.replace_rvs_by_values(
        [pymc_model["coefficients"], pymc_model["variance"]]), mode=FAST, on_unused_input="ignore")
    point = _forward(pymc_model)(REGRESSION.pymc_start(data, params))
    coefficients, variance = evaluate(*[point[v.name] for v in pymc_model.value_vars])
    np.testing.assert_allclose(coefficients, params["coefficients"], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(variance, params["variance"], rtol=1e-12)


def test_label_signatures_are_unitless_per_component(deaths_data, tone):
    poisson = POISSON.label_signature(deaths_data)({"weights": np.array([0.25, 0.75]), "rate": np.array([1.0, 4.0])})
    np.testing.assert_allclose(poisson, [[2.0, 0.5], [4.0, np.sqrt(0.75)]])
    data = validate_data(tone)
    signature = REGRESSION.label_signature(data)
    params = _random_regression(np.random.default_rng(1))
    rescaled = validate_data(tone * 10.0)  # both columns ten times larger: the same signature
    scaled = {**params, "coefficients": params["coefficients"] * [10.0, 1.0], "variance": params["variance"] * 100}
    np.testing.assert_allclose(REGRESSION.label_signature(rescaled)(scaled), signature(params), rtol=1e-10)
    assert signature(params).shape == (2, 4)


def test_bad_inputs_name_the_argument(deaths_data, tone):
    with pytest.raises(ValueError, match=r"minibatch_size: expected None or an integer in \[1, n_obs = 10\], got 11"):
        build_model(POISSON, deaths_data, minibatch_size=11)
    data = validate_data(tone)
    with pytest.raises(ValueError, match=r"minibatch_size: expected None or an integer in \[1, n_obs = 150\], got 0"):
        REGRESSION.pymc_model(data, minibatch_size=0)
    with pytest.raises(TypeError, match=r"prior: expected None or a resolved prior"):
        REGRESSION.pymc_model(data, prior=POISSON.resolve_prior(POISSON.prepare(deaths_data)))
    reference = {"weights": np.array([0.5, 0.5]), "rate": np.array([1.0, 3.0])}
    with pytest.raises(ValueError, match=r"minibatch_size: expected None with frequency weights"):
        fit_advi(POISSON, deaths_data, reference, minibatch_size=5)
    with pytest.raises(ValueError, match=r"reference\['rate'\]: expected positive rates"):
        fit_mcmc(POISSON, deaths_data, {**reference, "rate": np.array([-1.0, 3.0])})
    fractional = validate_data(tone, weights=np.full(150, 0.5))
    estimate = {"weights": np.array([0.5, 0.5]), "coefficients": np.array([[2.0, 0.0], [0.0, 1.0]]),
                "variance": np.array([0.01, 0.01])}
    with pytest.raises(ValueError, match=r"weights: expected integer frequency weights"):
        fit_mcmc(REGRESSION, fractional, estimate)  # no replicate of fractional rows: said before sampling
