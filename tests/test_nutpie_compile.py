"""nutpie's C callbacks cached on disk (mixflow.engines.nutpie_compile): the same function as nutpie's own, cached."""

import ctypes
import dataclasses
from functools import partial

import numpy as np
import pytest

nutpie = pytest.importorskip("nutpie")
pm = pytest.importorskip("pymc")
pytensor = pytest.importorskip("pytensor")

from mixflow.engines import stored_graphs  # noqa: E402
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


# -- a graph whose data are inputs: compiled once per structure, reused with other values ----------------
def _gaussian(n: int, k: int = 2, seed: int = 0):
    import mixflow
    from mixflow.data import validate_data

    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(-2.0, 1.0, n // 2), rng.normal(1.5 + seed, 0.7, n - n // 2)])[:, None]
    model = mixflow.GaussianMixture(k, covariance="diag")
    data = validate_data(x)
    return model.pymc_model(data, model.resolve_prior(model.prepare(data)))


def _expand(compiled, point: np.ndarray) -> tuple[int, np.ndarray]:
    x = np.ascontiguousarray(point, dtype=float)
    out = np.zeros(compiled.n_expanded)
    pointer = ctypes.POINTER(ctypes.c_double)
    code = compiled.compiled_expand_func.ctypes(x.size, compiled.n_expanded, x.ctypes.data_as(pointer),
                                                out.ctypes.data_as(pointer), compiled.user_data.ctypes.data)
    return code, out


def test_a_model_of_other_data_reuses_the_compilation_with_its_own_values():
    from mixflow.engines.nutpie_compile import compile_count

    first, second = _gaussian(40, seed=0), _gaussian(57, seed=1)  # other rows, prior and standardisation
    point = np.array([0.2, -0.1, 0.4, 0.5, -0.3])  # weights (stick-breaking), mu_std, log variance_std
    assert sum(np.size(v) for v in first.initial_point().values()) == point.size
    before = compile_count()
    compiled = [compile_nutpie(model, lambda seed: point, var_names=["weights", "mu", "variance"])
                for model in (first, second)]
    assert compile_count() - before <= 1  # the second model (at least) reused a compilation
    assert compiled[0].compiled_logp_func is compiled[1].compiled_logp_func
    for model, own in zip((first, second), compiled, strict=True):
        expected_logp, expected_grad = model.logp_dlogp_function(ravel_inputs=True)(point)
        x = np.ascontiguousarray(point)
        grad, logp = np.zeros(point.size), np.zeros(())
        pointer = ctypes.POINTER(ctypes.c_double)
        code = own.compiled_logp_func.ctypes(point.size, x.ctypes.data_as(pointer), grad.ctypes.data_as(pointer),
                                             logp.ctypes.data_as(pointer), own.user_data.ctypes.data)
        assert code == 0
        np.testing.assert_allclose(float(logp), expected_logp, rtol=1e-12)
        np.testing.assert_allclose(grad, expected_grad, rtol=1e-12, atol=1e-12)
        code, values = _expand(own, point)
        assert code == 0
        names = [model.rvs_to_values[rv].name for rv in model.free_RVs]  # nutpie's order of the flat point
        sizes = [int(np.prod(model.initial_point()[name].shape)) for name in names]
        pieces = dict(zip(names, np.split(point, np.cumsum(sizes)[:-1]), strict=True))
        outputs = model.replace_rvs_by_values([model["weights"], model["mu"], model["variance"]])
        traced = pytensor.function(model.value_vars, outputs, on_unused_input="ignore")
        expected = traced(*[pieces[v.name].reshape(model.initial_point()[v.name].shape) for v in model.value_vars])
        np.testing.assert_allclose(values[point.size:], np.concatenate([np.ravel(v) for v in expected]), rtol=1e-12)
    assert not np.allclose(compiled[0].user_data, compiled[1].user_data)


def test_the_structure_key_is_that_of_the_graph_not_of_the_values():
    from mixflow.engines.nutpie_compile import _structure_key

    key = partial(_structure_key, var_names=None, numba_opt=1)
    assert key(_gaussian(30, seed=0)) == key(_gaussian(45, seed=2))  # other rows, prior and standardisation
    assert key(_gaussian(30, k=2)) != key(_gaussian(30, k=3))
    assert key(_gaussian(30)) != _structure_key(_gaussian(30), var_names=["mu"], numba_opt=1)


def test_graphs_that_differ_in_a_constant_do_not_share_a_compilation(model):
    from mixflow.engines.nutpie_compile import _structure_key

    def with_data(data):
        with pm.Model() as pymc_model:
            mu = pm.Normal("mu", 0.0, 2.0)
            pm.Potential("likelihood", pm.logp(pm.Normal.dist(mu, 1.0), data).sum())
        return pymc_model

    data = np.linspace(-1.0, 1.0, 1000)  # printed abbreviated: the key hashes the values themselves
    other = data.copy()
    other[500] += 1e-9
    assert _structure_key(with_data(data), None, 1) == _structure_key(with_data(data.copy()), None, 1)
    assert _structure_key(with_data(data), None, 1) != _structure_key(with_data(other), None, 1)


@pytest.mark.slow
def test_a_second_nuts_fit_of_other_data_reuses_the_compilation():
    import warnings

    import mixflow
    from mixflow.data import validate_data
    from mixflow.engines.mcmc import fit_mcmc
    from mixflow.engines.nutpie_compile import compile_count

    model = mixflow.GaussianMixture(2, covariance="diag")
    run = {"draws": 30, "tune": 30, "chains": 2, "sampler": "nutpie", "random_seed": 1, "progressbar": False,
           "posterior_predictive": False}
    counts = []
    for n, seed, high in ((60, 0, 3.0), (75, 1, 7.0)):  # another data set of the same structure
        rng = np.random.default_rng(seed)
        x = np.concatenate([rng.normal(-3.0, 1.0, n // 2), rng.normal(high, 1.0, n - n // 2)])[:, None]
        tree = mixflow.fit(model, x, method="map", random_seed=0)
        estimate = {name: tree["em/estimate"][name].values for name in tree["em/estimate"].data_vars}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", mixflow.SamplingWarning)  # 30 draws are too few for the ESS check
            result = fit_mcmc(model, validate_data(x), estimate, **run)
        counts.append(compile_count())
        mu = result["groups"]["posterior"]["variables"]["mu"][1]
        assert abs(mu[..., 1, 0].mean() - x[x > 0].mean()) < 0.5  # each fit samples its own data's posterior
        assert abs(mu[..., 1, 0].mean() - high) < 1.0
    assert counts[1] == counts[0]


# -- the rewritten graphs on disk: a new process links them without rewriting ---------------------------------
def _logp_of(compiled, point: np.ndarray) -> tuple[int, float, np.ndarray]:
    x = np.ascontiguousarray(point, dtype=float)
    grad, logp = np.zeros(point.size), np.zeros(())
    pointer = ctypes.POINTER(ctypes.c_double)
    code = compiled.compiled_logp_func.ctypes(point.size, x.ctypes.data_as(pointer), grad.ctypes.data_as(pointer),
                                              logp.ctypes.data_as(pointer), compiled.user_data.ctypes.data)
    return code, float(logp), grad


@pytest.fixture
def graphs_dir(tmp_path, monkeypatch):
    """An empty folder for the rewritten graphs, and no compilation kept in this process."""
    from mixflow.engines import nutpie_compile

    monkeypatch.setattr(stored_graphs, "FOLDER", [tmp_path / "graphs"])
    monkeypatch.setattr(nutpie_compile, "_COMPILED", {})
    return tmp_path / "graphs"


@pytest.fixture(scope="module")
def gaussian_40():
    """The model of 40 rows the tests of the stored graphs compile, a point, and PyMC's own log density and
    gradient there (the reference every compilation of this model is checked against, compiled once)."""
    model, point = _gaussian(40, seed=0), np.array([0.2, -0.1, 0.4, 0.5, -0.3])
    return model, point, model.logp_dlogp_function(ravel_inputs=True)(point)


def _compiled_with_counts(model, point, expected=None):
    """Compile as a new process would; check the callback against ``expected`` (PyMC's log density and gradient
    at ``point``, computed here when not given); the compilation and the counts of graphs rewritten and loaded."""
    from mixflow.engines import nutpie_compile

    before = dict(nutpie_compile._GRAPH_COUNTS)
    nutpie_compile._COMPILED.clear()  # as in a new process: only the disk is shared
    compiled = compile_nutpie(model, lambda seed: point, var_names=["weights", "mu", "variance"])
    counts = {name: nutpie_compile._GRAPH_COUNTS[name] - before[name] for name in before}
    code, logp, grad = _logp_of(compiled, point)
    expected_logp, expected_grad = expected or model.logp_dlogp_function(ravel_inputs=True)(point)
    assert code == 0
    np.testing.assert_allclose(logp, expected_logp, rtol=1e-12)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-12, atol=1e-12)
    return compiled, counts


def test_the_stored_graphs_are_linked_without_rewriting_and_give_the_same_callbacks(graphs_dir, gaussian_40):
    model, point, expected = gaussian_40
    first, counts = _compiled_with_counts(model, point, expected)
    assert counts == {"rewritten": 1, "loaded": 0}
    assert len(list(graphs_dir.glob("nutpie-graphs-*.bin"))) == 1
    for other_data in (model, _gaussian(57, seed=1)):  # the stored graphs hold no data: any data set of the structure
        second, counts = _compiled_with_counts(other_data, point, expected if other_data is model else None)
        assert counts == {"rewritten": 0, "loaded": 1}
        assert second.logp_func is None and second.n_expanded == first.n_expanded
        assert second._shapes == first._shapes and second.dims == first.dims
        assert second.shape_info[0] == first.shape_info[0] and second.shape_info[1] == first.shape_info[1]
        code, values = _expand(second, point)
        assert code == 0 and np.array_equal(values[:point.size], point)
    assert _logp_of(second, point)[1] != _logp_of(first, point)[1]  # its own data


@pytest.fixture(scope="module")
def stored_file(gaussian_40, tmp_path_factory):
    """The graph file a compilation of ``gaussian_40`` into an empty folder stores: (its name, its bytes)."""
    from mixflow.engines import nutpie_compile

    folder = tmp_path_factory.mktemp("stored") / "graphs"
    model, point, expected = gaussian_40
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(stored_graphs, "FOLDER", [folder])
        patch.setattr(nutpie_compile, "_COMPILED", {})
        _, counts = _compiled_with_counts(model, point, expected)
    assert counts == {"rewritten": 1, "loaded": 0}
    [path] = folder.glob("nutpie-graphs-*.bin")
    return path.name, path.read_bytes()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "payload", "unpicklable", "other key"])
def test_a_damaged_graph_file_is_ignored_and_rewritten(graphs_dir, damage, gaussian_40, stored_file):
    import hashlib
    import json
    import pickle


    model, point, expected = gaussian_40
    name, content = stored_file  # the file this model's compilation stores (its graphs, before any damage)
    graphs_dir.mkdir(parents=True, exist_ok=True)
    path = graphs_dir / name
    header, _, payload = content[len(stored_graphs.MAGIC):].partition(b"\n")
    if damage == "garbage":
        content = b"\x00 not a graph file"
    elif damage == "truncated":
        content = content[:len(content) // 2]
    elif damage == "payload":  # a changed byte: the checksum no longer matches
        content = content[:-10] + bytes([content[-10] ^ 1]) + content[-9:]
    else:  # a file whose checksum matches: what it holds is checked too
        if damage == "unpicklable":
            payload = b"\x80\x05 not a pickle"
        else:  # a kernel key other than the linked kernel's: its graph is not the one recorded
            graphs = pickle.loads(payload)
            graphs["logp"]["key"] = "0" * 64
            payload = pickle.dumps(graphs)
        header = json.dumps(dict(json.loads(header), sha256=hashlib.sha256(payload).hexdigest()), sort_keys=True)
        content = stored_graphs.MAGIC + header.encode() + b"\n" + payload
    path.write_bytes(content)
    _, counts = _compiled_with_counts(model, point, expected)
    assert counts == {"rewritten": 1, "loaded": 0}
    assert list(graphs_dir.glob("nutpie-graphs-*.bin")) == [path]  # the damaged file was the one read, rewritten
    _, counts = _compiled_with_counts(model, point, expected)  # the rewriting stored the graphs again
    assert counts == {"rewritten": 0, "loaded": 1}


def test_graphs_of_other_versions_are_not_used(graphs_dir, monkeypatch, gaussian_40):

    model, point, expected = gaussian_40
    _compiled_with_counts(model, point, expected)
    versions = stored_graphs.versions()
    monkeypatch.setattr(stored_graphs, "versions", lambda: dict(versions, pytensor="0.0.0"))
    _, counts = _compiled_with_counts(model, point, expected)
    assert counts == {"rewritten": 1, "loaded": 0}
    assert len(list(graphs_dir.glob("nutpie-graphs-*.bin"))) == 2


def test_a_folder_that_cannot_be_written_does_not_stop_the_compilation(tmp_path, monkeypatch, gaussian_40):
    from mixflow.engines import nutpie_compile

    (tmp_path / "a file").write_text("")
    monkeypatch.setattr(stored_graphs, "FOLDER", [tmp_path / "a file" / "graphs"])  # cannot be created
    monkeypatch.setattr(nutpie_compile, "_COMPILED", {})
    model, point, expected = gaussian_40
    for _ in range(2):
        _, counts = _compiled_with_counts(model, point, expected)
        assert counts == {"rewritten": 1, "loaded": 0}
    monkeypatch.setattr(stored_graphs, "atomic_write", lambda *args, **kwargs: _raise(OSError(28, "No space left")))
    monkeypatch.setattr(stored_graphs, "FOLDER", [tmp_path / "full disk"])
    _, counts = _compiled_with_counts(model, point, expected)
    assert counts == {"rewritten": 1, "loaded": 0}


def _raise(error):
    raise error


def test_stored_arrays_keep_their_strides():
    import io

    from pytensor.tensor.utils import hash_from_ndarray

    from mixflow.engines.stored_graphs import GraphPickler

    row = np.lib.stride_tricks.as_strided(np.array([1.0, 2.0, 1.0]), shape=(1, 3), strides=(8, 8))
    # an empty array may have any strides: PyTensor's size argument of a scalar draw is one with strides (0,)
    empty = np.broadcast_to(np.zeros((), dtype=np.int64), (0,))
    for array in (row, np.asfortranarray(np.arange(6.0).reshape(3, 2)), np.arange(3.0), np.float64(2.0), empty):
        buffer = io.BytesIO()
        GraphPickler(buffer).dump(array)
        back = __import__("pickle").loads(buffer.getvalue())
        assert np.array_equal(back, array) and np.shape(back) == np.shape(array)
        if isinstance(array, np.ndarray):
            assert back.strides == array.strides and hash_from_ndarray(back) == hash_from_ndarray(array)
    with pytest.raises(Exception, match="not contiguous"):
        GraphPickler(io.BytesIO()).dump(np.arange(6.0)[::2])


_NEW_PROCESS_FIT = """
import hashlib, json, sys, warnings
from pathlib import Path
import numpy as np
import mixflow
from mixflow.data import validate_data
from mixflow.engines import nutpie_compile
from mixflow.engines.mcmc import fit_mcmc

from mixflow.engines import stored_graphs
stored_graphs.FOLDER[0] = Path(sys.argv[1])
rng = np.random.default_rng(0)
x = np.concatenate([rng.normal(-3.0, 1.0, 30), rng.normal(3.0, 1.0, 30)])[:, None]
model = mixflow.GaussianMixture(2, covariance="diag")
tree = mixflow.fit(model, x, method="map", random_seed=0)
estimate = {name: tree["em/estimate"][name].values for name in tree["em/estimate"].data_vars}
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    result = fit_mcmc(model, validate_data(x), estimate, draws=30, tune=30, chains=2, sampler="nutpie",
                      random_seed=1, progressbar=False, posterior_predictive=False)
digest = hashlib.sha256()
for name, (_, values) in sorted(result["groups"]["posterior"]["variables"].items()):
    digest.update(np.ascontiguousarray(values).tobytes())
print("RESULT " + json.dumps({"counts": nutpie_compile._GRAPH_COUNTS, "draws": digest.hexdigest()}))
"""


@pytest.mark.slow
def test_a_new_process_with_the_stored_graphs_draws_the_same(tmp_path):
    import json
    import subprocess
    import sys

    def new_process() -> dict:
        done = subprocess.run([sys.executable, "-c", _NEW_PROCESS_FIT, str(tmp_path)], capture_output=True,
                              text=True, timeout=600, check=False)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
        return json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])

    first, second = new_process(), new_process()
    assert first["counts"] == {"rewritten": 1, "loaded": 0}
    assert second["counts"] == {"rewritten": 0, "loaded": 1}
    assert second["draws"] == first["draws"]  # (a damaged file: test_a_damaged_graph_file_is_ignored_and_rewritten)
