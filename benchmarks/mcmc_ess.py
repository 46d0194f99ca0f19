"""MCMC efficiency: minimum bulk ESS per wall-clock second, compilation included: mixflow against NumPyro
and plain PyMC on the same posterior.

Two cases, each run here, one after the other, on the same machine:

- Old Faithful, full covariance, K = 2;
- a simulated 1-D mixture, n = 1000, K = 3.

Runs (``--runs``, every one in a fresh Python process, timed from after the imports, JAX's included where
it is installed: see :func:`one_run`):

- ``ours``, ``ours_pymc``, ``ours_nutpie``: the whole call a user makes, ``mixflow.fit(method="map")`` then
  ``mixflow.fit(method="mcmc", tree=...)`` (model building, compilation, sampling, alignment, pointwise
  log-likelihood, responsibilities, posterior predictive draws, modes, diagnostics, the container), with
  mixflow's defaults and with each sampler forced. Their time is broken down by phase (the fit's
  ``attrs["timings"]``; "EM/MAP start" is the first call, "container build and the rest" what is left).
- ``numpyro_parallel``, ``numpyro_sequential``: NumPyro's NUTS on a NumPyro model of the same posterior
  (``numpyro_peer.py``: same priors, same unconstrained coordinates, Jacobians included; its log density is
  checked against mixflow's PyMC model at 5 random unconstrained points, to 1e-10 relative, in a fresh
  process before any timing), started like ours (the EM/MAP estimate plus the same jitter), with
  ``chain_method="parallel"`` on one host device per chain (``numpyro.set_host_device_count``) or
  ``"sequential"``; 1000 tuning steps; the EM fit and JAX's compilation are in the time.
- ``plain_pymc``: the same model written the usual PyMC way (``peers.py``: ``pm.Mixture`` of ``pm.MvNormal``
  with Wishart precisions, or ``pm.NormalMixture`` with ordered means), default ``pm.sample`` (nutpie when
  installed), 1000 tuning steps.
- not run unless named: ``ours_pymc_1process`` (PyMC's chains one after the other in the one process, no
  chain processes), ``ours_diag_tune1000`` and ``ours_numba_opt3`` (levers of the nutpie path), and
  ``ours_new_data``, ``ours_pymc_new_data``, ``ours_nutpie_new_data``: the first fit of data no process has
  fitted (the case's data perturbed by 1e-3 sd from fresh entropy; the model's structure may be cached).

All keep 1000 draws and 4 chains. ESS is arviz_stats' bulk ESS, the minimum over every entry of weights,
means and covariances/variances, on draws aligned to the EM/MAP labelling (mixflow aligns its own draws;
NumPyro's and plain PyMC's are aligned afterwards with the same relabelling, ``peers.aligned_draws``).
The line TARGET is mixflow's default over NumPyro's parallel chains, in ESS per second.

Run: ``python benchmarks/mcmc_ess.py [--repeats 3] [--cases faithful,1d] [--runs ours,numpyro_parallel]``:
each figure is the median wall time of ``repeats`` fresh processes, the runs interleaved (every run once
per round); the draws are seeded, so the ESS is the same in every repeat. The machine may be shared: the
load average is printed. ``--quick`` (a smoke run, no figures to quote) uses 100 draws, 100 tuning steps
and 2 chains, once. NumPyro is an optional extra: ``pip install -e ".[bench]"``.
"""

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import time
import warnings
from functools import partial

import arviz_stats as azs
import numpy as np
import nutpie  # noqa: F401  (imported before any timing, for both sides)
import peers
import pymc as pm
import xarray as xr

import mixflow
from mixflow.data import validate_data

QUICK = os.environ.get("MIXFLOW_BENCH_QUICK") == "1"  # set by --quick, read by every fresh process
QUICK_SETTINGS, FULL_SETTINGS = (100, 100, 2), (1000, 1000, 4)  # draws, tuning steps, chains
(DRAWS, TUNE, CHAINS), SEED = QUICK_SETTINGS if QUICK else FULL_SETTINGS, 20260101


def min_bulk_ess(posterior: dict) -> float:
    """Smallest bulk ESS over every entry of ``{name: (dims, (chain, draw, ...) array)}`` or ``{name: array}``."""
    dataset = xr.Dataset({name: item if isinstance(item, tuple)
                          else (("chain", "draw", *(f"{name}_{i}" for i in range(item.ndim - 2))), item)
                          for name, item in posterior.items()})
    ess = azs.ess(dataset, method="bulk")
    return float(min(np.nanmin(ess[name].values) for name in ess.data_vars))


def ours(model, x, **options):
    """The whole call a user makes (EM/MAP, then NUTS into the container); returns the seconds, the min bulk
    ESS, the /mcmc attributes and the breakdown of the time."""
    began = time.perf_counter()
    tree = mixflow.fit(model, x, method="map", random_seed=SEED)
    em_done = time.perf_counter()
    tree = mixflow.fit(model, x, method="mcmc", tree=tree, random_seed=SEED, draws=DRAWS, chains=CHAINS,
                       progressbar=False, **options)
    elapsed = time.perf_counter() - began
    attrs = dict(tree["mcmc"].attrs)
    phases = {"em_map": em_done - began, **json.loads(attrs["timings"])}
    phases["container_and_rest"] = elapsed - sum(value for key, value in phases.items() if key != "draws")
    posterior = {name: tree["mcmc/posterior"][name].values for name in model.parameter_dims()}
    return elapsed, min_bulk_ess(posterior), attrs, phases


def peer_faithful(x, prior):
    with peers.faithful_model(x, prior):
        return pm.sample(draws=DRAWS, tune=TUNE, chains=CHAINS, random_seed=SEED, progressbar=False)


def peer_1d(x, prior, k):
    with peers.ordered_1d_model(x, prior, k):
        return pm.sample(draws=DRAWS, tune=TUNE, chains=CHAINS, random_seed=SEED, progressbar=False)


def peer(model, x, build):
    data = validate_data(x)
    prior = model.resolve_prior(model.prepare(data))
    began = time.perf_counter()
    idata = build(x, prior)
    elapsed = time.perf_counter() - began
    values = {name: idata["posterior"][name].values for name in model.parameter_dims()}
    aligned, switched = peers.aligned_draws(model, x, values, SEED)
    return elapsed, min_bulk_ess(values), min_bulk_ess(aligned), switched


def numpyro_run(model, x, chain_method: str):
    """NumPyro's NUTS on the same posterior, started like ours (EM/MAP plus the same jitter), compilation
    included: the EM fit, the model's inputs, NUTS (jit-compiled), and the samples back as numpy."""
    import jax
    import numpyro_peer
    from numpyro.infer import MCMC, NUTS

    began = time.perf_counter()
    data = validate_data(x)
    tree = mixflow.fit(model, x, method="map", random_seed=SEED)
    reference = {name: tree["em/estimate"][name].values for name in tree["em/estimate"].data_vars}
    inputs = numpyro_peer.model_inputs(model, data, model.resolve_prior(model.prepare(data)))
    base = numpyro_peer.free_point(inputs, reference)
    jitter_sd = 1.0 / np.sqrt(max(1.0, float(reference["weights"].min() * data.total_weight)))  # as fit_mcmc's
    rng = np.random.default_rng(SEED)
    init = {name: value + jitter_sd * rng.standard_normal((CHAINS, *np.shape(value))) for name, value in base.items()}
    assert chain_method == "sequential" or jax.local_device_count() == CHAINS, "one host device per chain"
    mcmc = MCMC(NUTS(numpyro_peer.mixture_model), num_warmup=TUNE, num_samples=DRAWS, num_chains=CHAINS,
                chain_method=chain_method, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(SEED), inputs, init_params=init)
    samples = {name: np.asarray(value) for name, value in mcmc.get_samples(group_by_chain=True).items()}
    elapsed = time.perf_counter() - began
    values = {name: samples[name] for name in model.parameter_dims()}
    aligned, switched = peers.aligned_draws(model, x, values, SEED)
    divergences = int(np.asarray(mcmc.get_extra_fields()["diverging"]).sum())
    return {"seconds": elapsed, "raw_ess": min_bulk_ess(values), "ess": min_bulk_ess(aligned), "switched": switched,
            "max_rhat": max_rhat(aligned), "divergences": divergences, "devices": jax.local_device_count()}


def max_rhat(posterior: dict) -> float:
    dataset = xr.Dataset({name: (("chain", "draw", *(f"{name}_{i}" for i in range(item.ndim - 2))), item)
                          for name, item in posterior.items()})
    rhat = azs.rhat(dataset)
    return float(max(np.nanmax(rhat[name].values) for name in rhat.data_vars))


CASES = ("faithful", "1d")
RUNS = {  # label, fit_mcmc options (mixflow's runs)
    "ours": ("mixflow, defaults", {}),
    "ours_pymc": ("mixflow, sampler='pymc'", {"sampler": "pymc"}),
    "ours_nutpie": ("mixflow, sampler='nutpie'", {"sampler": "nutpie"}),
    "numpyro_parallel": ("NumPyro, parallel chains (host devices = chains)", None),
    "numpyro_sequential": ("NumPyro, sequential chains", None),
    "plain_pymc": ("plain PyMC, default pm.sample, aligned", None),
    # not run unless asked for (--runs): levers of our own runs
    "ours_pymc_1process": ("mixflow, sampler='pymc', chains in one process (cores=1)",
                           {"sampler": "pymc", "cores": 1}),
    "ours_diag_tune1000": ("mixflow, nutpie, tune=1000, adaptation='diag'",
                           {"sampler": "nutpie", "tune": 1000, "adaptation": "diag"}),
    "ours_numba_opt3": ("mixflow, nutpie, callbacks compiled at -O3", {"sampler": "nutpie"}),
    "ours_new_data": ("mixflow, defaults, first fit of new data", {}),
    "ours_pymc_new_data": ("mixflow, sampler='pymc', first fit of new data", {"sampler": "pymc"}),
    "ours_nutpie_new_data": ("mixflow, sampler='nutpie', first fit of new data", {"sampler": "nutpie"}),
}
QUICK_CASES, QUICK_RUNS = "1d", "ours,plain_pymc"  # a smoke run: mixflow's default path and the peer's
DEFAULT_RUNS = ("ours", "ours_pymc", "ours_nutpie", "numpyro_parallel", "numpyro_sequential", "plain_pymc")


def case_data(case):
    if case == "faithful":
        return mixflow.GaussianMixture(2, covariance="full"), mixflow.load_dataset("faithful").to_numpy(), peer_faithful
    rng = np.random.default_rng(3)
    labels = rng.choice(3, size=1000, p=[0.3, 0.4, 0.3])
    x = (np.array([-4.0, 0.0, 3.5])[labels] + np.array([1.0, 0.8, 1.2])[labels] * rng.standard_normal(1000))[:, None]
    return mixflow.GaussianMixture(3, covariance="diag"), x, partial(peer_1d, k=3)


def one_run(case, run):
    """Child process: one measurement (or the log-density check), printed as JSON."""
    warnings.simplefilter("ignore")
    if run.startswith("numpyro"):
        import numpyro

        numpyro.set_host_device_count(CHAINS)  # before JAX's backend starts (numpyro_run checks the count)
    with contextlib.suppress(ImportError):
        # every process imports JAX before the clock where it is installed, as NumPyro's do: arviz_base registers
        # it for a lazy import, which scipy's array checks (in mixflow's hierarchical start) would otherwise
        # trigger inside mixflow's timing, an import a user without the benchmark extra never makes
        import jax  # noqa: F401
    model, x, build = case_data(case)
    if run.endswith("_new_data"):  # data no process has fitted: a perturbation drawn from fresh entropy
        x = x + 1e-3 * x.std(axis=0) * np.random.default_rng().standard_normal(x.shape)
    if run == "numpyro_check":
        import numpyro_peer

        data = validate_data(x)
        prior = model.resolve_prior(model.prepare(data))
        out = {"relative_difference": numpyro_peer.check_log_density(model.pymc_model(data, prior),
                                                                     numpyro_peer.model_inputs(model, data, prior))}
    elif run.startswith("numpyro"):
        out = numpyro_run(model, x, run.removeprefix("numpyro_"))
    elif run == "plain_pymc":
        seconds, raw_ess, aligned_ess, switched = peer(model, x, build)
        out = {"seconds": seconds, "raw_ess": raw_ess, "ess": aligned_ess, "switched": switched}
    else:
        if run == "ours_numba_opt3":
            from mixflow.engines import mcmc

            mcmc._NUTPIE_NUMBA_OPT = 3
        seconds, ess, attrs, phases = ours(model, x, **RUNS[run][1])
        out = {"seconds": seconds, "ess": ess, "max_rhat": attrs["max_rhat"], "sampler": attrs["sampler"],
               "phases": phases, "divergences": attrs["n_divergences"]}
    print("RESULT " + json.dumps(out))


def one_process(case, run):
    """One measurement in a fresh process."""
    completed = subprocess.run([sys.executable, __file__, "--one", case, run], capture_output=True, text=True)
    if completed.returncode:
        raise RuntimeError(f"{case}/{run} failed:\n{completed.stderr[-3000:]}")
    line = next(line for line in completed.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def measure_interleaved(case, runs, repeats):
    """Median wall time per run over ``repeats`` rounds, each round running every run once in turn, so that a
    slow spell of a shared machine falls on all of them rather than on one (the draws are seeded)."""
    results = {run: [] for run in runs}
    for _ in range(repeats):
        for run in runs:
            results[run].append(one_process(case, run))
    out = {}
    for run, rounds in results.items():
        assert run.endswith("_new_data") or len({round(r["ess"], 6) for r in rounds}) == 1, \
            f"{run}: same seed, same draws"
        out[run] = {**rounds[0], "seconds": float(np.median([r["seconds"] for r in rounds])),
                    "all_seconds": [r["seconds"] for r in rounds]}
        if "phases" in rounds[0]:
            out[run]["phases"] = {key: float(np.median([r["phases"][key] for r in rounds if key in r["phases"]]))
                                  for key in rounds[0]["phases"]}
    return out


PHASES = (  # key in the breakdown, label
    ("em_map", "EM/MAP start"), ("build", "PyMC model build, start points"),
    ("compile", "graph rewriting + compilation"), ("tune_and_draw", "tuning + draws (chains)"),
    ("draws", "  of which kept draws (slowest chain)"), ("align", "alignment (relabelling)"),
    ("log_likelihood_responsibilities", "pointwise log-lik + responsibilities"),
    ("posterior_predictive", "posterior predictive"), ("modes", "modes (grouping, stacking)"),
    ("diagnostics", "R-hat, ESS"), ("container_and_rest", "container build and the rest"),
)


def print_case(case, measured, titles):
    print(f"\n{titles[case]}  (draws={DRAWS}, chains={CHAINS}; mixflow tune=500 unless stated, NumPyro and "
          f"plain PyMC tune={TUNE})")
    print(f"  {'run':58s} {'wall s':>7s} {'min bulk ESS':>13s} {'ESS / s':>8s} {'max R-hat':>9s}  runs (s)")
    for run, result in measured.items():
        if run == "numpyro_check":
            continue
        label = RUNS[run][0] + (f" [{result['sampler']}]" if "sampler" in result else "")
        rhat = f"{result['max_rhat']:9.4f}" if "max_rhat" in result else f"{'':9s}"
        runs = ", ".join(f"{s:.1f}" for s in result["all_seconds"])
        print(f"  {label:58s} {result['seconds']:7.1f} {result['ess']:13.0f} {result['ess'] / result['seconds']:8.1f}"
              f" {rhat}  {runs}")
    rates = {run: r["ess"] / r["seconds"] for run, r in measured.items() if run != "numpyro_check"}
    if "ours" in rates and "numpyro_parallel" in rates:
        ratio = rates["ours"] / rates["numpyro_parallel"]
        print(f"  TARGET mixflow default / NumPyro parallel, ESS per second: {ratio:.2f}x (target >= 1.0)")
    for run in ("ours_pymc", "ours_nutpie", "numpyro_sequential", "plain_pymc"):
        if "ours" in rates and run in rates:
            print(f"  mixflow default / {RUNS[run][0]}: {rates['ours'] / rates[run]:.2f}x")
    with_phases = [run for run in measured if "phases" in measured[run]]
    if with_phases:
        print(f"\n  where mixflow's time goes (s, median){'':22s}" + "".join(f"{run:>14s}" for run in with_phases))
        for key, label in PHASES:
            cells = [measured[run]["phases"].get(key) for run in with_phases]
            if any(cell is not None for cell in cells):
                print(f"  {label:58s}" + "".join(f"{'-':>14s}" if c is None else f"{c:14.2f}" for c in cells))


def main(cases, runs, repeats):
    print(f"load average before: {os.getloadavg()}, CPUs: {os.cpu_count()}; median of {repeats} runs each")
    if any(run.startswith("numpyro") for run in runs) and importlib.util.find_spec("numpyro") is None:
        print("NumPyro is not installed (pip install -e '.[bench]'): its runs are left out")
        runs = [run for run in runs if not run.startswith("numpyro")]
    titles = {"faithful": "Old Faithful, full covariance, K=2, n=272", "1d": "Simulated 1-D, K=3, n=1000"}
    for case in cases:
        if any(run.startswith("numpyro") for run in runs):
            check = one_process(case, "numpyro_check")["relative_difference"]
            print(f"\n{case}: NumPyro's log density (Jacobians included) against mixflow's PyMC model at 5 random "
                  f"unconstrained points: largest relative difference {check:.1e}")
            assert check < 1e-10, "the NumPyro model is not the same posterior"
        print_case(case, measure_interleaved(case, runs, repeats), titles)
    print(f"\nload average after: {os.getloadavg()}")
    print("ESS is arviz_stats' bulk ESS, the minimum over every entry of weights, means and covariances/variances, "
          "on draws aligned to the EM/MAP labelling (mixflow aligns its own; NumPyro's and plain PyMC's are aligned "
          "the same way afterwards). Wall time: from the start of the EM fit (mixflow, NumPyro) or of the model "
          "(plain PyMC) to the draws in hand, in a fresh process, compilation included.")


def parse(argv):
    import argparse

    parser = argparse.ArgumentParser(description="MCMC ESS per second: mixflow against NumPyro and plain PyMC")
    parser.add_argument("repeats", nargs="?", type=int, default=3, help="fresh processes per run (median)")
    parser.add_argument("--repeats", dest="repeats_flag", type=int, help="the same as the positional")
    parser.add_argument("--cases", help=f"comma-separated subset of {CASES} (default all; --quick: {QUICK_CASES})")
    parser.add_argument("--runs", help=f"comma-separated subset of {list(RUNS)} (default {','.join(DEFAULT_RUNS)}; "
                                       f"--quick: {QUICK_RUNS})")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 100 draws, 100 tuning steps, 2 chains, once, one case and two runs unless "
                             "--cases or --runs say otherwise (no figures to quote)")
    args = parser.parse_args(argv)
    cases = (args.cases or (QUICK_CASES if args.quick else ",".join(CASES))).split(",")
    runs = (args.runs or (QUICK_RUNS if args.quick else ",".join(DEFAULT_RUNS))).split(",")
    unknown = [c for c in cases if c not in CASES] + [r for r in runs if r not in RUNS]
    if unknown:
        parser.error(f"unknown cases or runs: {unknown}")
    return args, cases, runs


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--one":
        one_run(sys.argv[2], sys.argv[3])
    else:
        arguments, chosen_cases, chosen_runs = parse(sys.argv[1:])
        if arguments.quick:
            os.environ["MIXFLOW_BENCH_QUICK"] = "1"  # every run's fresh process reads the quick settings
            DRAWS, TUNE, CHAINS = QUICK_SETTINGS  # and so does this one, which prints them
            main(chosen_cases, chosen_runs, 1)
        else:
            main(chosen_cases, chosen_runs, arguments.repeats_flag or arguments.repeats)
