"""MCMC efficiency: minimum bulk ESS per wall-clock second, compilation included, ours against plain PyMC.

Two cases, each run here, one after the other, on the same machine:

- Old Faithful, full covariance, K = 2;
- a simulated 1-D mixture, n = 1000, K = 3.

"Ours" is the whole call a user makes: the MAP estimate by EM, then ``fit_mcmc`` (model building,
compilation, sampling, alignment, pointwise log-likelihood, responsibilities and posterior predictive
draws): with its defaults (sampler "auto", i.e. nutpie when installed, tune=500, low-rank mass matrix),
with plain PyMC's tuning length and mass matrix (to separate the levers), and with PyMC's own NUTS.

"Plain PyMC" is the same model (same likelihood, same Normal-Inverse-Wishart / Normal-Inverse-Gamma
prior with the same hyperparameters) written the usual way: ``pm.Mixture`` of ``pm.MvNormal`` components
(precisions ``pm.Wishart(dof, scale^-1)``, so covariances are Inverse-Wishart) or ``pm.NormalMixture``
with ordered means for 1-D, sampled by default ``pm.sample`` (which picks nutpie when installed, with
its default initialisation) with the same draws and chains and PyMC's default 1000 tuning steps. Its
ESS is reported on its raw draws and after aligning them with our relabelling (so that label switching
does not count against it).

Both sides keep the same draws (1000) and chains (4). ESS is arviz_stats' bulk ESS, the
minimum over every entry of weights, means and covariances/variances. Every run is a fresh Python process
(timed from after the imports), so no run inherits another's warm caches or one-time initialisation.

Run: ``.venv/bin/python benchmarks/mcmc_ess.py [repeats] [--quick]``: each figure is the median wall time of
``repeats`` (default 3) fresh processes, the runs interleaved (every run once per round); the draws are
seeded, so the ESS is the same in every repeat. The row "numba at its default -O3" separates our compile
lever (LLVM -O0 for nutpie's thin numba wrapper) from the rest.
The machine may be shared: the load average is printed. ``--quick`` (a smoke run for the test suite, no
figures to quote) runs Old Faithful only, once, with 100 draws, 100 tuning steps and 2 chains.
"""

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
from mixflow.engines.mcmc import fit_mcmc

QUICK = os.environ.get("MIXFLOW_BENCH_QUICK") == "1"  # set by --quick, read by every fresh process
DRAWS, TUNE, CHAINS, SEED = (100, 100, 2, 20260101) if QUICK else (1000, 1000, 4, 20260101)


def min_bulk_ess(posterior: dict) -> float:
    """Smallest bulk ESS over every entry of ``{name: (dims, (chain, draw, ...) array)}`` or ``{name: array}``."""
    dataset = xr.Dataset({name: item if isinstance(item, tuple)
                          else (("chain", "draw", *(f"{name}_{i}" for i in range(item.ndim - 2))), item)
                          for name, item in posterior.items()})
    ess = azs.ess(dataset, method="bulk")
    return float(min(np.nanmin(ess[name].values) for name in ess.data_vars))


def ours(model, x, **options):
    began = time.perf_counter()
    tree = mixflow.fit(model, x, method="map", random_seed=SEED)
    reference = {name: tree["em/estimate"][name].values for name in tree["em/estimate"].data_vars}
    result = fit_mcmc(model, validate_data(x), reference, draws=DRAWS, chains=CHAINS, random_seed=SEED,
                      progressbar=False, **options)
    elapsed = time.perf_counter() - began
    return elapsed, min_bulk_ess(result["groups"]["posterior"]["variables"]), result["attrs"]


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


CASES = ("faithful", "1d")
RUNS = {  # label, fit_mcmc options
    "ours": ("ours, defaults (auto sampler, tune=500, low_rank)", {}),
    "ours_diag_tune1000": ("ours, tune=1000, adaptation='diag'", {"tune": TUNE, "adaptation": "diag"}),
    "ours_pymc": ("ours, sampler='pymc' (tune=500)", {"sampler": "pymc"}),
    # the compile-level lever alone: our defaults with numba's own optimisation level for nutpie's wrapper
    "ours_numba_opt3": ("ours, defaults but numba at its default -O3", {}),
}


def case_data(case):
    if case == "faithful":
        return mixflow.GaussianMixture(2, covariance="full"), mixflow.load_dataset("faithful").to_numpy(), peer_faithful
    rng = np.random.default_rng(3)
    labels = rng.choice(3, size=1000, p=[0.3, 0.4, 0.3])
    x = (np.array([-4.0, 0.0, 3.5])[labels] + np.array([1.0, 0.8, 1.2])[labels] * rng.standard_normal(1000))[:, None]
    return mixflow.GaussianMixture(3, covariance="diag"), x, partial(peer_1d, k=3)


def one_run(case, run):
    """Child process: one measurement, printed as JSON."""
    warnings.simplefilter("ignore")
    model, x, build = case_data(case)
    if run == "peer":
        seconds, raw_ess, aligned_ess, switched = peer(model, x, build)
        out = {"seconds": seconds, "raw_ess": raw_ess, "ess": aligned_ess, "switched": switched}
    else:
        if run == "ours_numba_opt3":
            from mixflow.engines import mcmc

            mcmc._NUTPIE_NUMBA_OPT = 3
        seconds, ess, attrs = ours(model, x, **RUNS[run][1])
        out = {"seconds": seconds, "ess": ess, "max_rhat": attrs["max_rhat"], "sampler": attrs["sampler"]}
    print("RESULT " + json.dumps(out))


def one_process(case, run):
    """One measurement in a fresh process."""
    completed = subprocess.run([sys.executable, __file__, "--one", case, run], capture_output=True, text=True,
                               check=True)
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
        assert len({r["ess"] for r in rounds}) == 1, "same seed, same draws"
        out[run] = {**rounds[0], "seconds": float(np.median([r["seconds"] for r in rounds]))}
    return out


def main(repeats=3):
    print(f"load average before: {os.getloadavg()}, CPUs: {os.cpu_count()}; median of {repeats} runs each")
    titles = {"faithful": "Old Faithful, full covariance, K=2, n=272", "1d": "Simulated 1-D, K=3, n=1000"}
    for case in CASES[:1] if QUICK else CASES:
        rows = []
        # --quick: a smoke run of our default against the peer; the full run measures every variant
        runs = list(RUNS)[:1] if QUICK else list(RUNS)
        measured = measure_interleaved(case, [*runs, "peer"], repeats)
        for run in runs:
            label, result = RUNS[run][0], measured[run]
            note = "" if result["max_rhat"] < 1.01 else f" [max R-hat {result['max_rhat']:.3f}]"
            rows.append((f"{label} [{result['sampler']}]{note}", result["seconds"], result["ess"]))
        result = measured["peer"]
        peer_raw = ("plain PyMC, default pm.sample (raw draws)", result["seconds"], result["raw_ess"])
        peer_aligned = (f"plain PyMC, aligned ({result['switched']} draws relabelled)", result["seconds"],
                        result["ess"])
        print(f"\n{titles[case]}  (draws={DRAWS}, chains={CHAINS}; plain PyMC tune={TUNE})")
        print(f"  {'run':60s} {'wall s':>7s} {'min bulk ESS':>13s} {'ESS / s':>8s} {'vs plain':>9s}")
        rate = peer_aligned[2] / peer_aligned[1]
        for name, seconds, ess in rows + [peer_raw, peer_aligned]:
            print(f"  {name:60s} {seconds:7.1f} {ess:13.0f} {ess / seconds:8.1f} {ess / seconds / rate:8.2f}x")
    print(f"\nload average after: {os.getloadavg()}")
    print("'vs plain' is the ESS-per-second ratio against plain PyMC with its draws aligned to the EM labelling.")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--one":
        one_run(sys.argv[2], sys.argv[3])
    elif "--quick" in sys.argv:
        os.environ["MIXFLOW_BENCH_QUICK"] = "1"
        subprocess.run([sys.executable, __file__, "1"], check=True)  # a fresh process reads the quick settings
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
