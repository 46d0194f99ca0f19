"""Rerun bit for bit: what README's promise covers (values, not times), checked where it can break."""

import os
import sys
import warnings

import numpy as np
import pytest
from threadpoolctl import threadpool_info

import mixflow
from mixflow.engines import mcmc


def _blas_threads() -> int:
    return max(info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas")


def test_pymc_sampler_asks_for_one_blas_thread_per_chain_process(monkeypatch, blas_threads):
    seen = {}

    def sample(**kwargs):
        seen.update(kwargs, blas_threads_here=_blas_threads())
        raise KeyboardInterrupt

    monkeypatch.setattr(mcmc.pm, "sample", sample)
    monkeypatch.setattr(mcmc, "_logp_dlogp", lambda model: (None, lambda: None))
    monkeypatch.setattr(mcmc, "_nuts_compiled_here", lambda model, initvals, seed, options, function: (initvals, {}))
    options = {"chains": 3, "cores": 2, "draws": 5, "tune": 5, "progressbar": False, "target_accept": 0.8}
    with pytest.raises(KeyboardInterrupt):
        mcmc._sample_pymc(None, [{"x": np.zeros(2)}], 0.0, np.random.SeedSequence(0), 1, options)
    assert seen["blas_cores"] == seen["cores"] == 2  # PyMC gives each chain process blas_cores // cores = 1
    assert seen["blas_threads_here"] == 1  # and chains run in this process (cores=1) get one too


@pytest.mark.slow
@pytest.mark.parametrize("start_method", [None])
def test_chain_processes_run_with_one_blas_thread(tmp_path, monkeypatch, start_method, blas_threads):
    """A probe in the log-density records the BLAS threads of the processes that evaluate it.

    None is mixflow's choice (fork on Linux, which the chains' limit survives). Under a forkserver (Python
    3.14's default on Linux, PyMC's on Intel macOS) the limit can miss scipy's BLAS when it loads in the
    chain process after PyMC applies it, depending on what the server preloaded: not tested, as its
    outcome depends on the process's history (README, "Rerun bit for bit").
    """
    import cloudpickle
    import pymc as pm
    import pytensor.tensor as pt
    from pytensor.graph.op import Op

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the chain processes cannot import tests/
    log = tmp_path / "threads.txt"

    class Probe(Op):
        itypes, otypes = [pt.dscalar], [pt.dscalar]

        def perform(self, node, inputs, outputs):
            with open(log, "a") as file:
                file.write(f"{os.getpid()} {_blas_threads()}\n")
            outputs[0][0] = np.asarray(0.0)

        def grad(self, inputs, gradients):
            return [pt.zeros_like(inputs[0])]

    with pm.Model() as model:
        x = pm.Normal("x")
        pm.Potential("probe", Probe()(x))
    if start_method is not None:
        monkeypatch.setattr(mcmc, "_chain_start", lambda: start_method)
    options = {"chains": 2, "cores": 2, "draws": 3, "tune": 3, "progressbar": False, "target_accept": 0.8}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mcmc._sample_pymc(model, [{"x": np.zeros(())}], 0.0, np.random.SeedSequence(0), 1, options)
    records = [line.split() for line in log.read_text().splitlines()]
    chain_processes = {pid for pid, _ in records} - {str(os.getpid())}
    assert len(chain_processes) == 2
    assert {threads for pid, threads in records if pid in chain_processes} == {"1"}



@pytest.mark.slow
def test_pymc_chain_processes_compile_nothing_themselves(tmp_path, monkeypatch):
    """The graph NUTS evaluates is compiled here before PyMC forks the chains, so they all run one code.

    Chain processes that each compiled it ran different code when one had cached a kernel that another then
    loaded instead of compiling it with the graph: one chain of a same-seed rerun differed (issue 15).
    """
    import pymc as pm
    from numba.core import event
    from pytensor.link.numba import cache

    (tmp_path / "numba").mkdir()
    monkeypatch.setattr(cache, "NUMBA_CACHE_PATH", tmp_path / "numba")  # an empty cache: all is compiled
    log = tmp_path / "compiled-by.txt"

    class Compiled(event.Listener):
        def on_start(self, started):
            with open(log, "a") as file:
                file.write(f"{os.getpid()}\n")

        def on_end(self, ended):
            pass

    with pm.Model() as model:
        x = pm.Normal("x", shape=2)
        pm.Normal("y", mu=x.sum(), observed=np.array([0.5, 1.5]))
    options = {"chains": 2, "cores": 2, "draws": 3, "tune": 3, "progressbar": False, "target_accept": 0.8}
    listener = Compiled()
    event.register("numba:compile", listener)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mcmc._sample_pymc(model, [{"x": np.zeros(2)}], 0.0, np.random.SeedSequence(0), 1, options)
    finally:
        event.unregister("numba:compile", listener)
    assert set(log.read_text().split()) == {str(os.getpid())}  # this process compiled; no chain process did

# What README's "Rerun bit for bit" leaves out: times, which differ on every run.
TIMES_ATTRS = {"created_at", "wall_time", "sampling_time", "timings", "compile_time"}
TIMES_VARIABLES = {"perf_counter_start", "perf_counter_diff", "process_time_diff"}  # PyMC's per-draw timings


def _same(one, two) -> bool:
    """Equal attribute values, a NaN equal to a NaN (an estimate not made in either run)."""
    one, two = np.asarray(one), np.asarray(two)
    numeric = one.dtype.kind in "fc" and two.dtype.kind in "fc"
    return np.array_equal(one, two, equal_nan=numeric)


def _differences(one, two) -> set[tuple[str, str]]:
    """(node path, name) of every attribute and variable that is not identical in the two trees."""
    found = set()
    for node in one.subtree:
        ours, theirs = node.to_dataset(inherit=False), two[node.path].to_dataset(inherit=False)
        for key in ours.attrs.keys() | theirs.attrs.keys():
            if key not in ours.attrs or key not in theirs.attrs or not _same(ours.attrs[key], theirs.attrs[key]):
                found.add((node.path, key))
        for name in ours.variables.keys() | theirs.variables.keys():
            if name not in ours.variables or name not in theirs.variables or not ours[name].identical(theirs[name]):
                found.add((node.path, name))
    assert {n.path for n in one.subtree} == {n.path for n in two.subtree}
    return found


@pytest.mark.slow
def test_a_rerun_is_identical_but_for_times_with_chains_in_one_process_or_in_parallel(faithful):
    """Two same-seed fits in one process: chains in parallel processes, then in this one (cores=1)."""
    run = {"method": ["map", "mcmc"], "random_seed": 4, "sampler": "pymc", "draws": 30, "tune": 30, "chains": 2,
           "n_init": 1, "progressbar": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixflow.SamplingWarning)
        one, two = (mixflow.fit(mixflow.GaussianMixture(2, covariance="full"), faithful[["eruptions", "waiting"]],
                                cores=cores, **run) for cores in (2, 1))
    differing = _differences(one, two)
    assert {name for _, name in differing} <= TIMES_ATTRS | TIMES_VARIABLES, sorted(differing)
    assert {("/mcmc", "wall_time"), ("/mcmc/sample_stats", "perf_counter_diff")} <= differing  # times do differ
    assert {"posterior", "posterior_predictive", "log_likelihood", "modes"} <= set(one["mcmc"].children)
