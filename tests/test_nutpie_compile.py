"""nutpie's C callbacks cached on disk (mixflow.engines.nutpie_compile): the same function as nutpie's own, cached."""

import ctypes
import dataclasses

import numpy as np
import pytest

nutpie = pytest.importorskip("nutpie")
pm = pytest.importorskip("pymc")

from mixflow.engines.nutpie_compile import _numba_optimisation, compile_nutpie  # noqa: E402


@pytest.fixture(scope="module")
def model():
    data = np.array([0.3, -1.2, 2.5, 0.7, 1.1])  # a constant of the graph, as in mixflow's models
    with pm.Model() as pymc_model:
        mu = pm.Normal("mu", 0.0, 2.0)
        sigma = pm.HalfNormal("sigma", 1.5)
        pm.Potential("likelihood", pm.logp(pm.Normal.dist(mu, sigma), data).sum())
        pm.Deterministic("twice", 2 * mu)
    return pymc_model


def _evaluate(callback, n_dim: int, point: np.ndarray) -> tuple[int, float, np.ndarray]:
    x = np.ascontiguousarray(point, dtype=float)
    grad, logp = np.zeros(n_dim), np.zeros(())
    pointer = ctypes.POINTER(ctypes.c_double)
    code = callback.ctypes(n_dim, x.ctypes.data_as(pointer), grad.ctypes.data_as(pointer),
                           logp.ctypes.data_as(pointer), None)
    return code, float(logp), grad


def test_the_cached_callback_is_the_log_density_and_gradient_and_is_on_disk(model):
    point = np.array([0.4, -0.3])  # mu, log(sigma)
    compiled = compile_nutpie(model, lambda seed: point, var_names=["mu", "sigma"])
    assert compiled.initial_point_func(0) is point
    logp_dlogp = model.logp_dlogp_function(ravel_inputs=True)
    expected_logp, expected_grad = logp_dlogp(point)
    code, logp, grad = _evaluate(compiled.compiled_logp_func, 2, point)
    assert code == 0
    np.testing.assert_allclose(logp, expected_logp, rtol=1e-12)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-12)
    assert _evaluate(compiled.compiled_logp_func, 3, np.zeros(3))[0] == -1  # the wrong size is refused, as nutpie's
    for callback in (compiled.compiled_logp_func, compiled.compiled_expand_func):  # numba saved it to disk
        assert callback._cache.load_overload(callback._sig, callback._targetdescr.target_context) is not None


@pytest.mark.slow
def test_the_cached_callbacks_make_nutpies_own_draws(model):
    point = np.array([0.4, -0.3])
    ours = compile_nutpie(model, lambda seed: point + 0.1 * np.random.default_rng(int(seed) % 2**32).normal(size=2))
    with _numba_optimisation(0):  # nutpie's own callbacks, compiled quickly: the kernels inside are the same
        own = nutpie.compile_pymc_model(model, jitter_rvs=set())
    own = dataclasses.replace(own, initial_point_func=ours.initial_point_func)
    run = {"draws": 50, "tune": 50, "chains": 2, "cores": 1, "seed": 3, "progress_bar": False}
    first, second = nutpie.sample(ours, **run), nutpie.sample(own, **run)
    for name in ("mu", "sigma", "twice"):
        np.testing.assert_array_equal(first["posterior"][name].values, second["posterior"][name].values)


def test_another_nutpie_gets_its_own_compilation(model, monkeypatch):
    # the cached path builds on nutpie's private functions; a nutpie they were not written against compiles
    # the model itself
    @dataclasses.dataclass
    class Compiled:
        initial_point_func: object = None

    calls = []
    monkeypatch.setattr(nutpie, "__version__", "0.17.0")
    monkeypatch.setattr(nutpie, "compile_pymc_model", lambda *args, **kwargs: calls.append(kwargs) or Compiled())
    start = lambda seed: np.zeros(2)  # noqa: E731
    compiled = compile_nutpie(model, start)
    assert calls and compiled.initial_point_func is start
