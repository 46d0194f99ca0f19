"""Time to an answer and its accuracy: mixflow's ADVI against PyMC's default ``pm.fit(method="advi")``.

Three cases: Old Faithful (full covariance, K=2) and a simulated 1-D mixture (K=3, means -3, 0, 4, sds 1,
0.7, 1.5, weights 0.3, 0.5, 0.2) with n=1000 and with n=20000. On the two small data sets the PyTensor
compilation, which both methods pay, is most of our time; at n=20000 the iterations are.

- mixflow: ``mixflow.fit(model, x, method="advi")`` from the raw data: validation, the MAP-EM that gives
  the start, the model, ``pm.fit`` until q settles, 1000 draws, responsibilities, the container.
- PyMC's default, given what a competent user would give it: the same posterior written the usual PyMC way
  (``benchmarks/peers.py``; 1-D: ``pm.NormalMixture`` with ordered means started at spread data quantiles;
  Old Faithful: PyMC has no Inverse-Wishart that ADVI can transform, so the model is the one
  :func:`mixflow.families.pymc_parts.build_model` writes, with the means started at two spread data
  quantiles rather than PyMC's symmetric default, where every component is identical), then
  ``pm.fit(method="advi")`` with its defaults (n=10000, adagrad_window) and ``approx.sample(1000)``. Its
  draws are aligned to the EM labelling before they are compared.

Accuracy is judged against an independent reference: PyMC's own NUTS on the peer's model
(``benchmarks/peers.py``: Wishart precisions for Old Faithful, ordered means for 1-D), 4 chains of 4000
draws, each chain started from its own randomly chosen data rows, aligned to the EM labelling; never
mixflow's engine. Two distances, over every parameter entry: the largest |mean - reference mean| in
reference sds, and the largest |log(sd / reference sd)| (the sd error of a mean-field fit shows here).
"At least as accurate" means no worse on both.

Timing is symmetric: every timed run is a fresh process and includes graph compilation (disk caches are
warm for both); each figure is the median of ``--repeats`` runs, ours and the peer's interleaved (one of
each in turn), so a slow spell of a shared machine falls on both. When PyMC's default is less accurate than
ours, longer PyMC runs (``--longer``, default 40000 to 160000) are tried in turn, once each, for their
accuracy (seeded, so it does not change between repeats), and the last one short of ours and the first
one as accurate are then timed like the others; the ratio is printed as a bracket between the two (">"
when none reached it).

Usage: python benchmarks/advi_speed.py [--quick] [--repeats R] [--longer N ...]
(``--quick``: a smoke run for the test suite, one case, one repeat, a short reference (100 tuning steps and 100
draws per chain), no figures to quote)
"""

import argparse
import json
import subprocess
import sys
import time
import warnings

import numpy as np

SEED = 1
DRAWS = 1000
REFERENCE_CHAINS, REFERENCE_DRAWS, REFERENCE_DRAWS_QUICK = 4, 4000, 100
REFERENCE_TUNE, REFERENCE_TUNE_QUICK = 1000, 100
CASES = {"faithful": ("full", 2), "sim1d": ("diag", 3), "sim1d_20k": ("diag", 3)}
SIZES = {"sim1d": 1000, "sim1d_20k": 20_000}
TRUTH_1D = {"weights": [0.3, 0.5, 0.2], "mu": [-3.0, 0.0, 4.0], "sd": [1.0, 0.7, 1.5]}


def case_data(case):
    import mixflow

    if case == "faithful":
        return mixflow.load_dataset("faithful")
    rng = np.random.default_rng(0)
    labels = rng.choice(3, size=SIZES[case], p=TRUTH_1D["weights"])
    return rng.normal(np.array(TRUTH_1D["mu"])[labels], np.array(TRUTH_1D["sd"])[labels])


def case_model(case):
    import mixflow

    covariance, k = CASES[case]
    return mixflow.GaussianMixture(k, covariance=covariance)


def summary(draws: dict) -> dict:
    """Posterior mean and sd per parameter from {name: (n_draws, ...)}."""
    return {name: {"mean": value.mean(axis=0).tolist(), "sd": value.std(axis=0).tolist()}
            for name, value in draws.items()}


# -- workers: one timed fit in a fresh process ----------------------------------------------------------------
def run_ours(case):
    import pymc  # noqa: F401  (imported before the clock starts, as in the PyMC run)

    import mixflow
    import mixflow.engines.advi  # noqa: F401  (fit imports its engine lazily)

    x, model = case_data(case), case_model(case)
    began = time.perf_counter()
    tree = mixflow.fit(model, x, method="advi", random_seed=SEED, draws=DRAWS, progressbar=False)
    elapsed = time.perf_counter() - began
    posterior = tree["advi/posterior"]
    draws = {name: posterior[name].values[0] for name in posterior.data_vars}
    return {"time": elapsed, "summary": summary(draws), "n_iter": int(tree["advi"].attrs["n_iter"]),
            "converged": int(tree["advi"].attrs["converged"]), "final_elbo": float(tree["advi"].attrs["final_elbo"])}


def usual_model(case, x):
    """The posterior written the usual PyMC way, started where a competent user would (module docstring)."""
    import peers

    from mixflow.data import validate_data
    from mixflow.families.gaussian.pymc import standardization
    from mixflow.families.pymc_parts import build_model

    model = case_model(case)
    data = validate_data(x)
    if case != "faithful":
        return peers.ordered_1d_model(x, model.resolve_prior(model.prepare(data)), CASES[case][1])
    usual = build_model(model, data)
    std = standardization(model, data)
    z = (np.asarray(x, dtype=float) - std.center) / std.scale
    k = CASES[case][1]
    usual.set_initval(usual["mu_std"], np.quantile(z, (np.arange(k) + 0.5) / k, axis=0))
    return usual


def peer_values(case, trace) -> dict:
    """The peer's draws as {name: (chain, draw, ...)} in the declaration's parameters."""
    model = case_model(case)
    return {name: np.asarray(trace.get_values(name), dtype=float)[None] for name in model.parameter_dims()}


def run_pymc_default(case, n):
    import peers
    import pymc as pm

    x = case_data(case)
    began = time.perf_counter()
    usual = usual_model(case, x)
    with usual:
        approx = pm.fit(n=n, method="advi", random_seed=SEED, progressbar=False)
        trace = approx.sample(DRAWS, random_seed=SEED, return_inferencedata=False)
    elapsed = time.perf_counter() - began
    aligned, _ = peers.aligned_draws(case_model(case), x, peer_values(case, trace), SEED)
    draws = {name: value[0] for name, value in aligned.items()}
    return {"time": elapsed, "summary": summary(draws), "n_iter": n, "final_elbo": float(-approx.hist[-100:].mean())}


def run_reference(case, draws, tune):
    """Independent reference: PyMC's NUTS on the peer's model, each chain from its own random data rows."""
    import arviz_stats as azs
    import peers
    import pymc as pm
    import xarray as xr

    from mixflow.data import validate_data

    x, model = case_data(case), case_model(case)
    k = CASES[case][1]
    prior = model.resolve_prior(model.prepare(validate_data(x)))
    rng = np.random.default_rng(SEED)
    rows = np.asarray(x, dtype=float).reshape(len(x), -1)
    starts = [rows[rng.choice(len(rows), k, replace=False)] for _ in range(REFERENCE_CHAINS)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if case == "faithful":
            usual = peers.faithful_model(rows, prior, k)
            initvals = [{"mu": start} for start in starts]
        else:
            usual = peers.ordered_1d_model(rows, prior, k)
            initvals = [{"mu": np.sort(start[:, 0])} for start in starts]  # the ordered transform's order
        with usual:
            idata = pm.sample(draws=draws, tune=tune, chains=REFERENCE_CHAINS, initvals=initvals, random_seed=SEED,
                              nuts_sampler="pymc", progressbar=False, compute_convergence_checks=False)
    values = {name: idata["posterior"][name].values for name in model.parameter_dims()}
    aligned, switched = peers.aligned_draws(model, x, values, SEED)
    flat = {name: value.reshape((-1,) + value.shape[2:]) for name, value in aligned.items()}
    rhat = azs.rhat(xr.Dataset({name: (("chain", "draw", *(f"{name}_{i}" for i in range(value.ndim - 2))), value)
                                for name, value in aligned.items()}))
    return {"summary": summary(flat), "switched": switched,
            "max_rhat": float(max(np.nanmax(rhat[name].values) for name in rhat.data_vars))}


def in_fresh_process(*args) -> dict:
    completed = subprocess.run([sys.executable, __file__, "--worker", *map(str, args)], capture_output=True,
                               text=True, check=False)
    if completed.returncode:
        raise RuntimeError(f"worker {args} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


# -- comparison ----------------------------------------------------------------------------------------------
def accuracy(result: dict, reference: dict) -> tuple[float, float]:
    """Largest |mean - reference mean| / reference sd, and largest |log(sd / reference sd)|, over every entry."""
    means, sds = [], []
    for name, ref in reference["summary"].items():
        mean, sd = np.asarray(result["summary"][name]["mean"]), np.asarray(result["summary"][name]["sd"])
        ref_mean, ref_sd = np.asarray(ref["mean"]), np.asarray(ref["sd"])
        means.append(np.max(np.abs(mean - ref_mean) / ref_sd))
        sds.append(np.max(np.abs(np.log(sd / ref_sd))))
    return float(max(means)), float(max(sds))


def as_accurate(theirs: tuple[float, float], ours: tuple[float, float]) -> bool:
    return theirs[0] <= ours[0] and theirs[1] <= ours[1]


def median_time(runs: list[dict]) -> float:
    return float(np.median([run["time"] for run in runs]))


def timed_interleaved(kinds: list[tuple], repeats: int) -> list[list[dict]]:
    """``repeats`` rounds, each running every kind once in a fresh process, in turn."""
    rounds = [[in_fresh_process(*kind) for kind in kinds] for _ in range(repeats)]
    return [[one_round[i] for one_round in rounds] for i in range(len(kinds))]


def describe_1d(result: dict) -> str:
    s = result["summary"]
    sds = np.sqrt(np.asarray(s["variance"]["mean"]).ravel())
    means = np.round(np.ravel(s["mu"]["mean"]), 2).tolist()
    return f"weights {np.round(s['weights']['mean'], 2).tolist()}, means {means}, sds {np.round(sds, 2).tolist()}"


def bracket(short_of: tuple | None, reached: tuple | None, ours: float) -> str:
    """The time ratio, bracketed by PyMC's last run short of our accuracy and its first run that reached it.

    Each is ``(n, median seconds)``. PyMC's time to reach the accuracy lies between the two (its accuracy is
    not monotone in n at this level, so the upper end is the first grid point that reached it).
    """
    if reached is None:
        return (f"> {short_of[1] / ours:.1f}x (PyMC's default was not as accurate in the runs tried, "
                f"up to n={short_of[0]})")
    if short_of is None:
        return f"{reached[1] / ours:.1f}x (PyMC's default run was already as accurate)"
    low, high = sorted((short_of[1] / ours, reached[1] / ours))  # timing noise can invert them
    return f"between {low:.1f}x and {high:.1f}x (n={short_of[0]}: not yet as accurate; n={reached[0]}: as accurate)"


def describe(label: str, result: dict, seconds: float, distances: tuple, extra: str) -> str:
    return (f"{label:15s}: {seconds:6.1f} s median  ({extra})  max |mean - ref| = {distances[0]:.2f} ref sd, "
            f"max |log sd ratio| = {distances[1]:.2f}")


def main(quick: bool, repeats: int, longer: list[int]) -> None:
    import os

    longer = [] if quick else longer
    print(f"load average before: {os.getloadavg()}, CPUs: {os.cpu_count()}; median of {repeats} runs each")
    for case in ["sim1d"] if quick else CASES:  # --quick: a smoke run of the case quickest to compile and run
        print(f"\n== {case} ({CASES[case][0]} covariance, K={CASES[case][1]}) ==")
        reference = in_fresh_process("reference", case, *((REFERENCE_DRAWS_QUICK, REFERENCE_TUNE_QUICK) if quick
                                                          else (REFERENCE_DRAWS, REFERENCE_TUNE)))
        print(f"reference: PyMC NUTS on the peer's model, {REFERENCE_CHAINS} chains from random data rows "
              f"({reference['switched']} draws relabelled), max R-hat {reference['max_rhat']:.3f}")
        if reference["max_rhat"] > 1.01:  # chains from different starts that disagree are no reference
            print("  the reference's chains disagree (R-hat above 1.01): this case's accuracy figures are not valid")
        ours, default = timed_interleaved([("ours", case), ("pymc", case, 10_000)], repeats)
        ours_time, default_time = median_time(ours), median_time(default)
        ours_acc, default_acc = accuracy(ours[0], reference), accuracy(default[0], reference)
        print(describe("mixflow ADVI", ours[0], ours_time, ours_acc,
                       f"{ours[0]['n_iter']} iterations, converged={ours[0]['converged']}, "
                       f"ELBO {ours[0]['final_elbo']:.1f}"))
        elbo = f", ELBO {default[0]['final_elbo']:.1f}" if case == "faithful" else ""  # same model: comparable
        print(describe("PyMC default", default[0], default_time, default_acc, f"10000 iterations{elbo}"))
        if case in SIZES:
            print(f"  truth        : weights {TRUTH_1D['weights']}, means {TRUTH_1D['mu']}, sds {TRUTH_1D['sd']}")
            print(f"  mixflow      : {describe_1d(ours[0])}")
            print(f"  PyMC default : {describe_1d(default[0])}")
        print(f"time ratio PyMC default / mixflow (default runs, whatever their accuracy): "
              f"{default_time / ours_time:.1f}x")
        reached = (10_000, default_time) if as_accurate(default_acc, ours_acc) else None
        short_of, short_n, reached_n = (None if reached else (10_000, default_time)), None, None
        for n in sorted(longer) if reached is None else []:
            tried = in_fresh_process("pymc", case, n)
            distances = accuracy(tried, reference)
            print(f"PyMC, n={n:<6}: max |mean - ref| = {distances[0]:.2f} ref sd, "
                  f"max |log sd ratio| = {distances[1]:.2f}")
            if as_accurate(distances, ours_acc):
                reached_n = n
                break
            short_n = n
        if reached_n or short_n:  # time the bracket's ends like the default runs, interleaved with ours
            kinds = [("ours", case)] + [("pymc", case, n) for n in (short_n, reached_n) if n]
            timed = timed_interleaved(kinds, repeats)
            ours_time = median_time(timed[0] + ours)
            times = dict(zip([n for n in (short_n, reached_n) if n], map(median_time, timed[1:]), strict=True))
            short_of = (short_n, times[short_n]) if short_n else short_of
            reached = (reached_n, times[reached_n]) if reached_n else None
        if quick and reached is None:
            print("time to an answer at least as accurate: not measured (--quick runs no longer PyMC fits)")
        else:
            print(f"time to an answer at least as accurate, PyMC / mixflow: {bracket(short_of, reached, ours_time)}")
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="one case (the 1-D simulation, n=1000), no longer PyMC runs")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--longer", type=int, nargs="*", default=[40_000, 60_000, 80_000, 120_000, 160_000],
                        help="iteration counts of the longer PyMC runs, tried in turn until one is as accurate")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.worker:
        kind, case, *rest = arguments.worker
        run = {"ours": run_ours, "pymc": lambda c: run_pymc_default(c, int(rest[0])),
               "reference": lambda c: run_reference(c, int(rest[0]), int(rest[1]))}[kind]
        print(json.dumps(run(case)))
    else:
        main(arguments.quick, 1 if arguments.quick else arguments.repeats, arguments.longer)
