"""ADVI: pm.fit on the one PyMC model, started at the MAP, stopped when q settles, checked against NUTS."""

import logging
import warnings

import numpy as np
import pytest

import mixflow
from mixflow.data import validate_data
from mixflow.engines.advi import ADVIDivergenceError, factor_step_scale, fit_advi
from mixflow.engines.em import EMOptions, fit_em
from mixflow.families.pymc_parts import build_model
from mixflow.warnings import ConvergenceWarning

FULL = mixflow.GaussianMixture(2, covariance="full")
PARAMETERS = ("weights", "mu", "covariance")


def _map_estimate(model, data, seed=0):
    em = fit_em(model, data, EMOptions(map=True), seed)
    return {name: value for name, (_, value) in em["estimate"].items()}


def _draws(result, name):
    """Draws of one parameter from fit_advi's plain output, chain axis dropped."""
    return result["groups"]["posterior"]["variables"][name][1][0]


def _simulate_1d(seed, n=1000):
    rng = np.random.default_rng(seed)
    weights, means, sds = np.array([0.3, 0.5, 0.2]), np.array([-3.0, 0.0, 4.0]), np.array([1.0, 0.7, 1.5])
    labels = rng.choice(3, size=n, p=weights)
    return rng.normal(means[labels], sds[labels]), {"weights": weights, "mu": means[:, None],
                                                     "variance": sds[:, None] ** 2}


@pytest.fixture(scope="module")
def faithful_data(faithful):
    return validate_data(faithful)


@pytest.fixture(scope="module")
def faithful_advi_logged(faithful_data):
    """The ADVI fit of the faithful data, with the messages PyMC logged (INFO and above) as it ran."""
    messages = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("pymc")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        result = fit_advi(FULL, faithful_data, _map_estimate(FULL, faithful_data), random_seed=11)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return result, messages


@pytest.fixture(scope="module")
def faithful_advi(faithful_advi_logged):
    return faithful_advi_logged[0]


@pytest.fixture(scope="module")
def faithful_nuts(faithful):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixflow.MixflowWarning)
        return mixflow.fit(FULL, faithful, method=["map", "mcmc"], random_seed=5, chains=2, draws=1000,
                           sampler="pymc", progressbar=False, posterior_predictive=False)


# -- arguments: no PyMC work happens before they are checked ------------------------------------------------
@pytest.mark.parametrize("kwargs, error, message", [
    ({"variant": "lowrank"}, ValueError, r"variant: expected one of \['meanfield', 'fullrank'\], got 'lowrank'"),
    ({"n": 0}, ValueError, r"n: expected an integer >= 1, got 0"),
    ({"n": 10.5}, ValueError, r"n: expected an integer >= 1, got 10.5"),
    ({"draws": True}, ValueError, r"draws: expected an integer >= 1, got True"),
    ({"check_every": 5}, ValueError, r"check_every: expected an integer >= 10, got 5"),
    ({"learning_rate": 0.0}, ValueError, r"learning_rate: expected a positive number, got 0.0"),
    ({"learning_rate": np.nan}, ValueError, r"learning_rate: expected a positive number, got nan"),
    ({"settle_tol": -1}, ValueError, r"settle_tol: expected a positive number, got -1"),
    ({"minibatch_size": 0}, ValueError, r"minibatch_size: expected None or an integer in \[1, n_obs = 272\], got 0"),
    ({"minibatch_size": 273}, ValueError, r"minibatch_size: .* got 273"),
    ({"random_seed": -3}, ValueError, r"random_seed: expected None or a non-negative integer below 2\*\*63 .*got -3"),
    ({"progressbar": "yes"}, TypeError, r"progressbar: expected True or False, got 'yes'"),
])
def test_bad_arguments_name_the_argument(faithful_data, kwargs, error, message):
    reference = _map_estimate(FULL, faithful_data)
    with pytest.raises(error, match=message):
        fit_advi(FULL, faithful_data, reference, **kwargs)


def test_bad_model_data_and_reference(faithful, faithful_data):
    reference = _map_estimate(FULL, faithful_data)
    with pytest.raises(TypeError, match=r"data: expected validated mixflow.data.Data, got DataFrame"):
        fit_advi(FULL, faithful, reference)
    with pytest.raises(TypeError, match=r"reference: expected a dict of parameters \(the EM estimate\), got list"):
        fit_advi(FULL, faithful_data, [reference])
    with pytest.raises(ValueError, match=r"reference\['mu'\]: expected shape \(2, 2\), got \(3, 2\)"):
        fit_advi(FULL, faithful_data, {**reference, "mu": np.zeros((3, 2))})
    with pytest.raises(TypeError, match=r"model: expected a mixflow model with a PyMC form .* got str"):
        fit_advi("gmm", faithful_data, reference)
    weighted = validate_data(faithful, weights=np.ones(272))
    with pytest.raises(ValueError, match=r"minibatch_size: expected None with frequency weights"):
        fit_advi(FULL, weighted, reference, minibatch_size=50)


def test_unknown_option_through_fit_is_refused(faithful):
    with pytest.raises(TypeError, match=r"fit: unexpected option \['chains'\] for method \['advi'\]"):
        mixflow.fit(FULL, faithful, method="advi", chains=2)


# -- the fit -------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_output_shapes_names_and_history(faithful_advi, faithful_data):
    result = faithful_advi
    attrs = result["attrs"]
    assert attrs["method"] == "advi" and attrs["variant"] == "meanfield"
    assert attrs["converged"] == 1 and 0 < attrs["n_iter"] < attrs["max_iter"]
    assert 0 < attrs["compile_time"] < attrs["wall_time"]  # to the first step, which the optimisation follows
    posterior = result["groups"]["posterior"]["variables"]
    assert set(posterior) == set(PARAMETERS)
    assert posterior["covariance"][0] == ("chain", "draw", "component", "feature", "feature_")
    assert _draws(result, "mu").shape == (1000, 2, 2) and posterior["mu"][1].shape == (1, 1000, 2, 2)
    elbo = result["groups"]["sample_stats"]["variables"]["elbo"][1]
    assert elbo.shape == (attrs["n_iter"],) == result["coords"]["iteration"].shape
    assert np.isfinite(elbo).all()
    # the ELBO rises from the start and ends on its plateau: the last 100 iterations' mean is above the first
    # 10's and within three of its standard errors of the best 100-iteration window (it does not fall back)
    windows = elbo[: elbo.size // 100 * 100].reshape(-1, 100).mean(axis=1)
    standard_error = elbo[-100:].std() / 10.0
    assert elbo[-100:].mean() > elbo[:10].mean() + 3 * elbo[:10].std() / np.sqrt(10)
    assert elbo[-100:].mean() > windows.max() - 3 * standard_error
    rates = result["groups"]["sample_stats"]["variables"]["learning_rate"][1]
    assert rates[0] == attrs["learning_rate"] and np.all(np.diff(rates) <= 0)
    covariance = _draws(result, "covariance")
    assert np.all(np.linalg.eigvalsh(covariance) > 0)
    np.testing.assert_allclose(_draws(result, "weights").sum(axis=1), 1.0, rtol=1e-12)
    responsibilities = result["groups"]["responsibilities"]["variables"]
    mean, sd = responsibilities["responsibilities_mean"][1], responsibilities["responsibilities_sd"][1]
    assert mean.shape == sd.shape == (272, 2)
    np.testing.assert_allclose(mean.sum(axis=1), 1.0, rtol=1e-12)
    em = fit_em(FULL, faithful_data, EMOptions(map=True), 0)["responsibilities"]["responsibilities"][1]
    assert np.abs(mean - em).max() < 0.1 and sd.max() < 0.2


@pytest.mark.slow
def test_same_seed_same_numbers_bit_for_bit(faithful_advi, faithful_data):
    again = fit_advi(FULL, faithful_data, _map_estimate(FULL, faithful_data), random_seed=11)
    for group in ("posterior", "sample_stats", "responsibilities"):
        for name, (dims, value) in faithful_advi["groups"][group]["variables"].items():
            assert again["groups"][group]["variables"][name][0] == dims
            np.testing.assert_array_equal(again["groups"][group]["variables"][name][1], value)
    assert again["attrs"]["n_iter"] == faithful_advi["attrs"]["n_iter"]


@pytest.mark.slow
@pytest.mark.parametrize("variant, sd_ratio_range", [("meanfield", (0.6, 1.2)), ("fullrank", (0.75, 1.3))])
def test_faithful_means_within_half_a_posterior_sd_of_nuts(faithful, faithful_nuts, variant, sd_ratio_range):
    tree = mixflow.fit(FULL, faithful, method="advi", variant=variant, random_seed=5, tree=faithful_nuts,
                       progressbar=False)
    assert tree["advi"].attrs["converged"] == 1
    ratios, distances = [], []
    for name in PARAMETERS:
        nuts = tree["mcmc/posterior"][name].values.reshape((-1,) + tree["mcmc/posterior"][name].shape[2:])
        advi = tree["advi/posterior"][name].values[0]
        distance = np.abs(advi.mean(axis=0) - nuts.mean(axis=0)) / nuts.std(axis=0)
        assert distance.max() < 0.5, f"{variant} {name}: ADVI mean {distance.max():.2f} NUTS sd from NUTS"
        ratios.append((advi.std(axis=0) / nuts.std(axis=0)).ravel())
        distances.append(distance.max())
    ratios = np.concatenate(ratios)
    print(f"{variant}: largest |ADVI mean - NUTS mean| / NUTS sd {max(distances):.2f}; sd ratio ADVI/NUTS "
          f"min {ratios.min():.2f} median {np.median(ratios):.2f} max {ratios.max():.2f}")
    assert sd_ratio_range[0] < np.median(ratios) < sd_ratio_range[1]


@pytest.mark.slow
def test_simulated_three_component_mixture_is_recovered():
    # q centres on the posterior's mode (the MAP start), and the truth is within its reach; this sample's first
    # weight is 0.256 by MAP against 0.3 true, three binomial standard errors (0.0145) off, and mean-field ADVI
    # gives the weights less spread (0.012) than the posterior has: the truth within 4 of its sds
    x, truth = _simulate_1d(seed=0)
    model = mixflow.GaussianMixture(3, covariance="diag")
    data = validate_data(x)
    start = _map_estimate(model, data)
    result = fit_advi(model, data, start, random_seed=2)
    assert result["attrs"]["converged"] == 1
    for name, true in truth.items():
        draws = _draws(result, name)
        centre = np.abs(draws.mean(axis=0) - start[name].reshape(true.shape)) / draws.std(axis=0)
        assert centre.max() < 1.0, f"{name}: {draws.mean(axis=0).ravel()} vs MAP {start[name].ravel()}"
        z = np.abs(draws.mean(axis=0) - true) / draws.std(axis=0)
        assert z.max() < 4.0, f"{name}: {draws.mean(axis=0).ravel()} vs truth {true.ravel()}"


@pytest.mark.slow
def test_minibatches_agree_with_full_batch_within_the_approximations_sd():
    rng = np.random.default_rng(5)
    labels = rng.choice(2, size=2000, p=[0.4, 0.6])
    x = np.array([[-2.0, 0.0], [2.0, 1.0]])[labels] + rng.normal(size=(2000, 2)) * np.array(
        [[1.0, 0.6], [0.7, 1.2]])[labels]
    model = mixflow.GaussianMixture(2, covariance="diag")
    data = validate_data(x)
    reference = _map_estimate(model, data)
    full = fit_advi(model, data, reference, random_seed=1)
    batched = fit_advi(model, data, reference, random_seed=1, minibatch_size=200)
    assert batched["attrs"]["minibatch_size"] == 200 and batched["attrs"]["converged"] == 1
    ratios = []
    for name in ("weights", "mu", "variance"):
        whole, mini = _draws(full, name), _draws(batched, name)
        z = np.abs(mini.mean(axis=0) - whole.mean(axis=0)) / whole.std(axis=0)
        assert z.max() < 1.0, f"{name}: minibatch mean {z.max():.2f} sd from full batch"
        ratios.append(mini.std(axis=0).ravel() / whole.std(axis=0).ravel())
    # The minibatch ELBO's gradient is an unbiased estimate of the full batch's, so both converge to the same
    # q; the sds differ only by the noise of the last iterate (0.78 to 1.13 over seeds 1-3, 8 parameters each).
    # A likelihood scaled by N/B wrongly by a factor 2 moves every ratio by sqrt(2): the ratios' geometric mean
    # (-0.04 to 0.00 in log over seeds 1-3) must stay within 10%, each ratio within (0.7, 1/0.7).
    ratios = np.concatenate(ratios)
    assert np.all((ratios > 0.7) & (ratios < 1 / 0.7)), ratios
    assert abs(np.log(ratios).mean()) < np.log(1.1), np.exp(np.log(ratios).mean())


@pytest.mark.slow
def test_absurd_learning_rate_stops_with_a_clear_error(faithful_data):
    with pytest.raises(ADVIDivergenceError, match=r"ADVI diverged at iteration \d+: the ELBO is (NaN|infinite).*"
                                                  r"not finite\. Try a smaller learning_rate \(got 10000; .*MAP "
                                                  r"estimate.*stronger prior"):
        fit_advi(FULL, faithful_data, _map_estimate(FULL, faithful_data), random_seed=0, learning_rate=1e4)


def test_a_full_rank_factor_row_steps_by_one_over_its_count_of_off_diagonal_entries():
    # L_tril row by row for D = 4: (0,0), (1,0) (1,1), (2,0) (2,1) (2,2), (3,0) (3,1) (3,2) (3,3)
    third = 1.0 / 3.0
    np.testing.assert_array_equal(factor_step_scale(4), [1.0, 1.0, 1.0, 0.5, 0.5, 1.0, third, third, third, 1.0])
    assert factor_step_scale(1).tolist() == [1.0]


@pytest.mark.slow
def test_full_rank_on_three_8d_groups_keeps_q_near_the_posterior_and_its_draws_evaluate():
    """Three groups of 60 rows in 8-D, full covariances: q has 134 dimensions and its factor 9045 entries.

    At Adam's full step on every entry of the factor, each row's entries wander by gradient noise as far as a mean
    does and q's sd in a coordinate grows with its row's length: q leaves the posterior within a few iterations,
    the ELBO runs below -1e20, and draws of the covariances are not positive definite in floating point (the fit
    fails evaluating them). Each off-diagonal entry stepped at one over its row's count of them
    (factor_step_scale), q stays near the posterior (its sd in the standardised unconstrained units about 0.07 at
    the start and below it after).
    """
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(centre, 1.0, (60, 8)) for centre in rng.normal(0.0, 8.0, (3, 8))])
    model, data = mixflow.GaussianMixture(3, covariance="full"), validate_data(x)
    start = _map_estimate(model, data)
    result = fit_advi(model, data, start, variant="fullrank", random_seed=0, draws=100, posterior_predictive=False)
    assert result["attrs"]["converged"] == 1
    elbo = result["groups"]["sample_stats"]["variables"]["elbo"][1]
    # no iteration far below the start (every ELBO is near -3000 here), and the fit ends above it
    assert np.isfinite(elbo).all() and elbo.min() > 10 * elbo[0] and result["attrs"]["final_elbo"] > elbo[0]
    mu = _draws(result, "mu")  # a group's mean has a posterior sd of about 1 / sqrt(60) = 0.13
    assert mu.std(axis=0).max() < 0.5 and np.abs(mu.mean(axis=0) - start["mu"]).max() < 0.5
    assert np.isfinite(result["groups"]["log_likelihood"]["variables"]["x"][1]).all()


class _Shared:
    """A stand-in of a PyTensor shared variable: get_value and set_value."""

    def __init__(self, value):
        self.value = value

    def get_value(self):
        return self.value

    def set_value(self, value):
        self.value = value


def _drive(check, steps: int, rng, drift: float, noise: float, target: float) -> tuple[int, float]:
    """Iterations of a mean-field q of two directions under ``check``: the first's mean wanders about 0 by noise (per
    unit of learning rate), the second's scale parameter (rho) drifts towards ``target`` at ``drift`` per unit of
    learning rate, as Adam's steps of a slow direction do. The iteration it stopped at and rho then."""
    from types import SimpleNamespace

    mu, rho = _Shared(np.zeros(2)), _Shared(np.zeros(2))
    approx = SimpleNamespace(groups=[SimpleNamespace(params_dict={"mu": mu, "rho": rho})])
    losses = []
    for i in range(1, steps + 1):
        rate = check.learning_rate.get_value()
        mu.value = np.array([noise * rate * rng.normal(), 0.0])
        rho.value = np.array([0.0, max(target, rho.value[1] - drift * rate)])
        losses.append(0.0)
        try:
            check(approx, np.array(losses), i)
        except StopIteration:
            return i, float(rho.value[1])
    return steps, float(rho.value[1])


def test_the_step_is_cut_and_q_settles_only_once_nothing_drifts():
    """One direction's mean wanders by noise wider than settle_tol, another's scale drifts slowly towards its value.

    Cut on the noise alone, the step slowed the drift as much as the noise, and the small moves per window then passed
    for settling with q's scale far from its value (a narrow component's sd 8 times its posterior's, beside a wide
    one). The step is cut only once nothing drifts, and q settles with the scale at its value.
    """
    from mixflow.engines import advi

    check = advi.SettleCheck("meanfield", _Shared(0.02), 0.05, 50)
    stopped, rho = _drive(check, 40000, np.random.default_rng(0), drift=1.0, noise=60.0, target=-6.0)
    assert check.converged and stopped < 40000
    assert rho == -6.0  # the drift's end: reached before anything settled
    first_cut = next(i for i, rate in enumerate(check.learning_rates) if rate < 0.02)
    assert first_cut > 6.0 / (1.0 * 0.02)  # the step was cut (the noise is wider than tol), but not while it drifted


def test_many_parameters_wandering_by_noise_alone_settle():
    """150 means and 150 scales of q wander about their optimum by autocorrelated noise (AR(1), 0.99 per iteration,
    as Adam's iterates do), with no drift: q settles, its step cut as the noise asks.

    A drift test on each of q's parameters alone found a chance run among many in most checks, and a model of 134
    parameters never settled.
    """
    from types import SimpleNamespace

    from mixflow.engines import advi

    rng = np.random.default_rng(3)
    check = advi.SettleCheck("meanfield", _Shared(0.02), 0.05, 50)
    mu, rho = _Shared(np.zeros(150)), _Shared(np.zeros(150))
    approx = SimpleNamespace(groups=[SimpleNamespace(params_dict={"mu": mu, "rho": rho})])
    noise, losses = np.zeros(300), []
    stopped = None
    for i in range(1, 20001):
        noise = 0.99 * noise + np.sqrt(1 - 0.99**2) * rng.normal(size=300)
        rate = check.learning_rate.get_value()
        mu.value, rho.value = 10 * rate * noise[:150], 10 * rate * noise[150:]
        losses.append(0.0)
        try:
            check(approx, np.array(losses), i)
        except StopIteration:
            stopped = i
            break
    assert check.converged and stopped is not None and stopped < 5000
    assert check.learning_rates[-1] < 0.02  # the noise was wider than settle_tol: the step was cut


def _fake_q(size: int):
    """A mean-field q of ``size`` directions, as the settle check and the divergence message read it."""
    from types import SimpleNamespace

    return SimpleNamespace(groups=[SimpleNamespace(params_dict={"mu": _Shared(np.zeros(size)),
                                                                "rho": _Shared(np.zeros(size))},
                                                   ordering={"mu": (None, slice(0, size), None, None)})])


def test_an_elbo_fallen_far_below_its_start_is_a_divergence_not_a_settled_fit():
    """q still in its own units (its parameters barely move) while the ELBO falls from about -2000 to -1e12: a scale
    grown far past the posterior's, which the settle check alone would call settled."""
    from mixflow.engines import advi

    approx, rng = _fake_q(2), np.random.default_rng(0)
    check = advi.SettleCheck("meanfield", _Shared(0.02), 0.05, 50)
    losses = list(2000.0 + 5.0 * rng.normal(size=50))
    for i in range(1, 51):
        check(approx, np.array(losses[:i]), i)
    losses += list(1e12 * (1 + rng.random(50)))
    said = (r"ADVI diverged at iteration 100: the ELBO fell below where it started: its median over the last 50 "
            r"iterations, -1\.\d+e\+12, is below the first 50 \(-2\d+\.\d+ to -19\d\d\.\d+\) by more than their "
            r"range, so q left the posterior\. Try a smaller learning_rate")
    with pytest.raises(ADVIDivergenceError, match=said):
        for i in range(51, 101):
            check(approx, np.array(losses[:i]), i)
    # an ELBO that only varies by its noise about where it started, in the shortest windows, is no divergence
    check = advi.SettleCheck("meanfield", _Shared(0.02), 0.05, 10)
    losses = 2000.0 + 5.0 * rng.standard_t(3, size=20000)
    for i in range(1, 20001):
        try:
            check(approx, losses[:i], i)
        except StopIteration:
            break
    assert check.converged


@pytest.mark.slow
def test_a_narrow_component_beside_a_wide_one_gets_its_posterior_sd():
    """200 rows of sd 0.05 beside 200 of sd 1, 10 apart (MAP start): the narrow component's mean has a posterior sd
    of about sqrt(its variance / 200), 0.013 (the prior widens its variance to 0.035; NUTS: 0.0129).

    ADVI stopped after 550 iterations, "settled", with that sd at 0.10 and an ELBO 21 below its optimum: its step had
    been cut on noise while q's scale still shrank towards the narrow component's.
    """
    rng = np.random.default_rng(1)
    data = validate_data(np.r_[rng.normal(0, 0.05, 200), rng.normal(10, 1, 200)][:, None])
    model = mixflow.GaussianMixture(2)
    start = _map_estimate(model, data)
    result = fit_advi(model, data, start, random_seed=5, draws=2000)
    assert result["attrs"]["converged"] == 1
    narrow = int(np.argmin(start["mu"][:, 0]))
    expected = np.sqrt(start["covariance"][narrow, 0, 0] / 200)
    assert 0.8 < _draws(result, "mu")[:, narrow, 0].std() / expected < 1.3


@pytest.mark.slow
def test_not_settling_warns_and_keeps_the_averaged_iterate(faithful_data):
    # one window of check_every iterations: nothing to compare it with (no change to say, where NaN was said)
    with pytest.warns(ConvergenceWarning, match=r"ADVI did not settle in n=150 iterations \(too few to compare two "
                                                r"windows of check_every=100 iterations\); increase n"):
        result = fit_advi(FULL, faithful_data, _map_estimate(FULL, faithful_data), random_seed=0, n=150,
                          check_every=100, draws=10)
    assert result["attrs"]["converged"] == 0 and result["attrs"]["n_iter"] == 150
    assert np.isfinite(_draws(result, "mu")).all()


@pytest.mark.slow
def test_fit_adds_advi_to_the_container_and_save_load_loses_nothing(faithful, tmp_path):
    tree = mixflow.fit(FULL, faithful, method="advi", random_seed=4, draws=50, progressbar=False)
    assert tree["em"].attrs["method"] == "map"  # the start, computed first and kept
    assert tree["advi/posterior"]["mu"].dims == ("chain", "draw", "component", "feature")
    assert tree["advi/posterior"]["mu"].shape == (1, 50, 2, 2)
    assert tree["advi/sample_stats"]["elbo"].sizes["iteration"] == tree["advi"].attrs["n_iter"]
    assert tree["em/sample_stats"].sizes["iteration"] != tree["advi/sample_stats"].sizes["iteration"]
    loaded = mixflow.load(mixflow.save(tree, tmp_path / "advi.nc"))
    for path in ("advi", "advi/posterior", "advi/sample_stats", "advi/responsibilities"):
        assert loaded[path].to_dataset().identical(tree[path].to_dataset()), path


@pytest.mark.slow
def test_stopping_once_settled_logs_no_pymc_interrupted_line(faithful_advi_logged):
    result, messages = faithful_advi_logged  # without a progress bar (the default)
    assert result["attrs"]["converged"] == 1 and result["attrs"]["n_iter"] < result["attrs"]["max_iter"]
    assert not [m for m in messages if "Interrupted" in m]


@pytest.mark.slow
def test_stopping_once_settled_with_a_progressbar_logs_no_pymc_interrupted_line(faithful_data, caplog):
    caplog.set_level(logging.INFO, logger="pymc")
    result = fit_advi(FULL, faithful_data, _map_estimate(FULL, faithful_data), random_seed=0, draws=10,
                      progressbar=True)
    assert result["attrs"]["converged"] == 1 and result["attrs"]["n_iter"] < result["attrs"]["max_iter"]
    assert not [r for r in caplog.records if "Interrupted" in r.getMessage()]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::mixflow.ConvergenceWarning")  # 80 iterations: q need not settle
def test_fits_from_several_starts_share_one_step_function_and_match_separate_pm_fit_calls():
    import pymc as pm
    import pytensor
    from pymc.variational.updates import adam

    from mixflow.engines import advi

    counts = np.random.default_rng(2).poisson(np.repeat([[2.0], [9.0]], 20, axis=0))
    model, data = mixflow.PoissonMixture(2), validate_data(counts)  # the cheapest graph to compile
    reference = _map_estimate(model, data)
    starts = [reference, {**reference, "rate": reference["rate"] * 1.5}]
    options = {"variant": "meanfield", "n": 80, "draws": 5, "learning_rate": 0.02, "settle_tol": 0.05,
               "check_every": 20, "progressbar": False}
    pymc_model = model.pymc_model(data, model.resolve_prior(model.prepare(data)))
    seeds = np.random.SeedSequence(7).spawn(len(starts))
    fitter = advi._Fitter(model, data, pymc_model, options)
    shared = [fitter.fit(point, seed) for point, seed in zip(starts, seeds, strict=True)]
    # what pm.fit gives from the second start: its own ADVI, optimiser and compiled step function (the first
    # fit builds the shared step function as pm.fit does, so a difference in it would show here too)
    for point, seed, fit in zip(starts[1:], seeds[1:], shared[1:], strict=True):
        fit_seed, draw_seed = (int(s) for s in seed.generate_state(2))
        inference = pm.ADVI(model=pymc_model, start=model.pymc_start(data, point), random_seed=fit_seed)
        advi._set_initial_spread(inference.approx.groups[0], "meanfield", 1.0 / np.sqrt(data.total_weight))
        step = pytensor.shared(np.float64(0.02))
        check = advi.SettleCheck("meanfield", step, 0.05, 20)
        approx = pm.fit(80, method=inference, model=pymc_model, callbacks=[check],
                        obj_optimizer=adam(learning_rate=step), progressbar=False)
        if not check.converged:
            advi.set_parameters(approx, check.final_average())
        np.testing.assert_array_equal(fit["check"].losses, check.losses)
        assert fit["check"].learning_rates == check.learning_rates
        for name, value in advi._draws(model, data, approx, 5, draw_seed).items():
            np.testing.assert_array_equal(fit["draws"][name], value)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::mixflow.ConvergenceWarning")  # 60 iterations: q need not settle
def test_a_fit_of_a_model_of_the_same_structure_reuses_the_compiled_step_with_a_fresh_fit_s_numbers(monkeypatch):
    from mixflow.engines import advi

    compiled = []
    original = advi._Fitter._compile
    monkeypatch.setattr(advi._Fitter, "_compile", lambda self, mode=None: (compiled.append(1), original(self, mode)))
    monkeypatch.setattr(advi, "_FITTERS", type(advi._FITTERS)())
    counts = np.random.default_rng(2).poisson(np.repeat([[2.0], [9.0]], 20, axis=0))
    model, data = mixflow.PoissonMixture(2), validate_data(counts)  # the cheapest graph to compile
    reference = _map_estimate(model, data)
    options = {"n": 60, "draws": 5, "check_every": 20}
    first = fit_advi(model, data, reference, random_seed=3, **options)
    other = fit_advi(model, data, reference, random_seed=4, **{**options, "draws": 7, "n": 40})
    again = fit_advi(model, data, reference, random_seed=3, **options)
    assert len(compiled) == 1
    _assert_same_groups(again, first)
    assert other["groups"]["posterior"]["variables"]["rate"][1].shape[1] == 7
    # a fit that raised took the kept one and did not put it back (its state is not known): the next compiles anew
    with pytest.raises(ADVIDivergenceError):
        fit_advi(model, data, reference, random_seed=3, learning_rate=1e30, **options)
    assert len(compiled) == 1
    fit_advi(model, data, reference, random_seed=3, **options)
    assert len(compiled) == 2
    # other data (other rows, with frequency weights) and another prior: the same structure, the kept step, and
    # the numbers of a fit compiled for them
    cases = [(model, validate_data(counts[5:] + 1, weights=np.arange(35) % 3 + 1.0)),
             (mixflow.PoissonMixture(2, prior={"shape": 2.0}), data)]
    reused = [fit_advi(case, values, reference, random_seed=5, **options) for case, values in cases]
    assert len(compiled) == 2
    for (case, values), kept in zip(cases, reused, strict=True):
        monkeypatch.setattr(advi, "_FITTERS", type(advi._FITTERS)())
        _assert_same_groups(fit_advi(case, values, reference, random_seed=5, **options), kept)
    assert len(compiled) == 2 + len(cases)
    # another minibatch size, another K, another variant: compiled anew
    fit_advi(model, data, reference, random_seed=3, minibatch_size=20, **options)
    assert len(compiled) == 3 + len(cases)
    plain = {"variant": "meanfield", "minibatch_size": None}
    key = advi._fitter_key(build_model(model, data), data, plain)[0]
    three = mixflow.PoissonMixture(3)
    assert len({key, advi._fitter_key(build_model(three, data), data, plain)[0],
                advi._fitter_key(build_model(model, data), data, {**plain, "variant": "fullrank"})[0]}) == 3
    # a regression's means and scales of the data are inputs of its graph too: other data, the same structure
    tone = mixflow.load_dataset("tone")[["stretchratio", "tuned"]]
    regression = mixflow.RegressionMixture(2, "tuned ~ stretchratio")
    keys = {advi._fitter_key(build_model(regression, values), values, plain)[0]
            for values in (validate_data(tone), validate_data(tone.iloc[::2] * 3.0))}
    assert len(keys) == 1 and None not in keys


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::mixflow.ConvergenceWarning")  # 60 iterations: q need not settle
def test_a_new_process_links_the_stored_step_of_the_structure_with_the_numbers_of_a_rewritten_one(tmp_path,
                                                                                                monkeypatch):
    import json

    from mixflow.engines import advi, advi_step, stored_graphs

    folder = tmp_path / "graphs"
    monkeypatch.setattr(stored_graphs, "FOLDER", [folder])
    counts = np.random.default_rng(2).poisson(np.repeat([[2.0], [9.0]], 20, axis=0))
    model, data = mixflow.PoissonMixture(2), validate_data(counts)  # the cheapest graph to compile
    other = validate_data(counts[5:] + 1, weights=np.arange(35) % 3 + 1.0)
    reference = _map_estimate(model, data)
    options = {"n": 60, "draws": 5, "check_every": 20, "random_seed": 3}

    def fit(values):
        """A fit as the first of a new process: only the disk is shared; how many steps it rewrote and linked."""
        monkeypatch.setattr(advi, "_FITTERS", type(advi._FITTERS)())
        before = advi_step.step_counts()
        result = fit_advi(model, values, reference, **options)
        return result, {name: count - before[name] for name, count in advi_step.step_counts().items()}

    first, seen = fit(data)
    assert seen == {"rewritten": 1, "loaded": 0}
    [stored] = folder.glob("advi-step-graphs-*.bin")
    again, seen = fit(data)
    assert seen == {"rewritten": 0, "loaded": 1}
    _assert_same_groups(again, first)
    # other data of the structure: the stored graph holds none, and gives the numbers of a step rewritten for them
    linked, seen = fit(other)
    assert seen == {"rewritten": 0, "loaded": 1}
    monkeypatch.setattr(stored_graphs, "FOLDER", [tmp_path / "empty"])
    rewritten, seen = fit(other)
    assert seen == {"rewritten": 1, "loaded": 0}
    _assert_same_groups(linked, rewritten)
    monkeypatch.setattr(stored_graphs, "FOLDER", [folder])
    # minibatches' rows are constants of the graph: not stored (it would keep a file per data set)
    fit_advi(model, data, reference, minibatch_size=20, **options)
    assert list(folder.glob("*")) == [stored]
    # a stored graph whose linked kernel is not the one recorded is not used (rewritten, the same numbers), and the
    # rewriting stores it again (files damaged, of other versions or unwritable: tests of the nutpie store)
    header = json.loads(stored.read_bytes()[len(stored_graphs.MAGIC):].partition(b"\n")[0])
    content = stored_graphs.load("advi-step", header["structure"])
    stored_graphs.store("advi-step", header["structure"], dict(content, key="0" * 64))
    other_key, seen = fit(data)
    assert seen == {"rewritten": 1, "loaded": 0}
    _assert_same_groups(other_key, first)
    assert fit(data)[1] == {"rewritten": 0, "loaded": 1}


def _assert_same_groups(result, expected):
    """Two fit_advi results hold the same numbers, bit for bit, in every group."""
    for name in ("posterior", "sample_stats", "log_likelihood", "posterior_predictive"):
        for variable, (_, value) in expected["groups"][name]["variables"].items():
            np.testing.assert_array_equal(result["groups"][name]["variables"][variable][1], value)


@pytest.mark.slow
def test_a_degenerate_mle_is_no_start_the_map_is_and_the_run_says_so():
    # rounded data: the MLE's components collapse onto the values (a singularity, no posterior mass there);
    # ADVI started there settled at an ELBO near -7e22 with variances of 1e-24
    values = np.round(np.random.default_rng(0).normal(0, 1, 60), 0)
    model = mixflow.GaussianMixture(4)
    with pytest.warns(mixflow.DegenerateComponentWarning, match=r"the MLE in /em is degenerate .*MCMC and ADVI "
                                                                r"start from, and are labelled after, the MAP"):
        tree = mixflow.fit(model, values, method=["em", "advi"], random_seed=0, draws=50, progressbar=False)
    assert tree["em"].attrs["method"] == "mle" and tree["em"].attrs["degenerate"] == 1
    assert tree["advi"].attrs["reference"] == "the MAP estimate (the MLE in /em is degenerate)"
    reference = mixflow.fit(model, values, method="map", random_seed=0)["em/estimate"]
    assert tree["advi"].attrs["final_elbo"] > -100  # the MAP's log posterior is 20.37
    covariance = tree["advi/posterior"]["covariance"].mean(("chain", "draw")).values.ravel()
    assert covariance.min() > 0.1 * reference["covariance"].values.min()  # the MAP's: about 2e-3 on the values


@pytest.mark.slow
def test_after_em_trimmed_components_advi_fits_the_components_it_kept():
    # EM's trim dropped two of four components; ADVI was given the declared four and refused EM's estimate as
    # its start ("reference['weights']: expected shape (4,), got (2,)")
    values = np.round(np.random.default_rng(0).normal(0, 1, 60), 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixflow.DegenerateComponentWarning)
        tree = mixflow.fit(mixflow.GaussianMixture(4), values, method=["em", "advi"], random_seed=0, trim=0.05,
                           draws=50, progressbar=False)
    assert tree["em/estimate"].sizes["component"] == 2
    assert tree["advi/posterior"]["weights"].shape == (1, 50, 2)
    assert tree["advi"].attrs["n_components"] == "2: the components EM kept (trim dropped 2 of the 4 declared)"
    assert mixflow.predict_proba(tree, values[:3], method="advi").shape == (3, 2)


@pytest.mark.slow
def test_one_component_of_one_feature_fits_where_numba_cannot_compile_the_step():
    # PyTensor's numba backend failed on this graph (its rewrites reduce it to scalars): "internal error:
    # IndexError: tuple index out of range" (full or tied covariance), and a workflow whose choice of K preferred K=1
    # stopped there.
    # The step is then compiled by PyTensor's C backend; q sits where the posterior is: its mean within 3 sd
    # of the data's mean (1 / sqrt(n) sd), its variance within 30% of the data's
    x = np.random.default_rng(0).normal(10.0, 2.0, size=(200, 1))
    tree = mixflow.fit(mixflow.GaussianMixture(1), x, method=["map", "advi"], random_seed=1,
                       draws=200, progressbar=False)
    posterior = tree["advi/posterior"]
    assert tree["advi"].attrs["step_compiled_by"] == "pytensor-c (numba could not compile the step)"
    assert abs(float(posterior["mu"].mean()) - x.mean()) < 3 * x.std() / np.sqrt(x.size)
    assert float(posterior["covariance"].mean()) == pytest.approx(x.var(), rel=0.3)


def test_an_error_of_the_compiled_step_is_not_taken_for_a_numba_compile_failure():
    # any frame under PyTensor's link/numba counted: a failure of the step as it ran (a parameter check) would
    # have been retried on the C backend, silently
    import numba

    from mixflow.engines.advi import _numba_failure

    def raised(function):
        try:
            function()
        except Exception as error:  # noqa: BLE001 - the error itself is examined
            return error
        raise AssertionError("nothing raised")

    assert _numba_failure(raised(lambda: numba.njit(lambda v: v.no_such_attribute)(1.0)))
    assert not _numba_failure(raised(lambda: np.linalg.cholesky(-np.eye(2))))
    import pytensor
    import pytensor.tensor as pt
    from pytensor.raise_op import Assert

    x = pt.dvector("x")
    checked = pytensor.function([x], Assert("x must be positive")(x, pt.all(x > 0)).sum(), mode="NUMBA")
    assert checked(np.ones(3)) == 3.0
    assert not _numba_failure(raised(lambda: checked(-np.ones(3))))  # compiled by numba, failing as it runs
