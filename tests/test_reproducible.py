"""Rerun bit for bit: what README's promise covers, checked where it can break (chain processes' BLAS)."""

import os
import sys
import warnings

import numpy as np
import pytest
from threadpoolctl import threadpool_info

import mixflow
from mixflow.data import validate_data
from mixflow.engines import mcmc


def _blas_threads() -> int:
    return max(info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas")


def test_pymc_sampler_asks_for_one_blas_thread_per_chain_process(monkeypatch):
    seen = {}

    def sample(**kwargs):
        seen.update(kwargs, blas_threads_here=_blas_threads())
        raise KeyboardInterrupt

    monkeypatch.setattr(mcmc.pm, "sample", sample)
    options = {"chains": 3, "cores": 2, "draws": 5, "tune": 5, "progressbar": False, "target_accept": 0.8}
    with pytest.raises(KeyboardInterrupt):
        mcmc._sample_pymc(None, [{"x": np.zeros(2)}], 0.0, np.random.SeedSequence(0), 1, options)
    assert seen["blas_cores"] == seen["cores"] == 2  # PyMC gives each chain process blas_cores // cores = 1
    assert seen["blas_threads_here"] == 1  # and chains run in this process (cores=1) get one too


@pytest.mark.slow
@pytest.mark.parametrize("start_method", [None])
def test_chain_processes_run_with_one_blas_thread(tmp_path, monkeypatch, start_method):
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
        monkeypatch.setattr(mcmc, "_CHAIN_START", start_method)
    options = {"chains": 2, "cores": 2, "draws": 3, "tune": 3, "progressbar": False, "target_accept": 0.8}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mcmc._sample_pymc(model, [{"x": np.zeros(())}], 0.0, np.random.SeedSequence(0), 1, options)
    records = [line.split() for line in log.read_text().splitlines()]
    chain_processes = {pid for pid, _ in records} - {str(os.getpid())}
    assert len(chain_processes) == 2
    assert {threads for pid, threads in records if pid in chain_processes} == {"1"}


@pytest.mark.slow
def test_same_draws_with_chains_in_one_process_or_in_parallel(faithful):
    data = validate_data(faithful[["eruptions", "waiting"]])
    model = mixflow.GaussianMixture(2, covariance="full")
    tree = mixflow.fit(model, faithful[["eruptions", "waiting"]], method="map", random_seed=0, n_init=1)
    reference = {name: tree["em/estimate"][name].values for name in tree["em/estimate"].data_vars}
    run = {"draws": 30, "tune": 30, "chains": 2, "sampler": "pymc", "progressbar": False,
           "posterior_predictive": False, "random_seed": 3}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixflow.SamplingWarning)
        parallel = mcmc.fit_mcmc(model, data, reference, cores=2, **run)
        serial = mcmc.fit_mcmc(model, data, reference, cores=1, **run)
    for name, (_, values) in parallel["groups"]["posterior"]["variables"].items():
        np.testing.assert_array_equal(values, serial["groups"]["posterior"]["variables"][name][1], err_msg=name)
