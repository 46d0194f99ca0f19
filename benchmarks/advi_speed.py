"""Time to an answer and its accuracy: mixflow's ADVI against PyMC's default ``pm.fit(method="advi")``.

Three cases: Old Faithful (full covariance, K=2) and a simulated 1-D mixture (K=3, means -3, 0, 4, sds 1,
0.7, 1.5, weights 0.3, 0.5, 0.2) with n=1000 and with n=20000. On the two small data sets the PyTensor
compilation, which both methods pay, is most of our time; at n=20000 the iterations are. The reference
is NUTS (mixflow's MCMC engine, 4 chains x 1000 draws) on the same posterior. Accuracy is the largest
distance, over every parameter entry, between a method's posterior mean and the NUTS mean, in NUTS
posterior sds; the sd ratio method/NUTS is reported too.

- mixflow: ``mixflow.fit(model, x, method="advi")`` from the raw data: validation, the MAP-EM that gives
  the start, the model, ``pm.fit`` until q settles, 1000 draws, responsibilities, the container.
- PyMC's default: the same posterior written the usual PyMC way (1-D: ``pm.NormalMixture`` with the same
  Normal-Inverse-Gamma prior and Dirichlet weights; Old Faithful: PyMC has no Inverse-Wishart, so the
  model is the one :func:`mixflow.families.pymc_parts.build_model` writes), then ``pm.fit(method="advi")`` with
  its defaults (n=10000, PyMC's start, adagrad_window) and ``approx.sample(1000)``. Its draws are aligned
  to the EM labelling before they are compared (a favour PyMC does not do).

Every timing runs in a fresh process and includes graph compilation (disk caches are warm for both).
Each timing is the best of ``--repeats``. When PyMC's default answer is less accurate than ours, it is run
again with more iterations (``--longer``, default 40000 to 160000, in turn) until it is at least as accurate;
the ratio is printed as a bracket between the last run short of that and the first run that reached it
(">" when none did).

Usage: python benchmarks/advi_speed.py [--quick] [--repeats R] [--longer N ...]
"""

import argparse
import json
import subprocess
import sys
import time
import warnings
from functools import partial

import numpy as np

SEED = 1
DRAWS = 1000
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
    """The posterior written the usual PyMC way (see the module docstring)."""
    import pymc as pm
    import pytensor.tensor as pt

    from mixflow.data import validate_data
    from mixflow.families.pymc_parts import build_model

    model = case_model(case)
    data = validate_data(x)
    if case == "faithful":
        return build_model(model, data)
    prior = model.resolve_prior(model.prepare(data))
    with pm.Model(coords={"component": np.arange(3)}) as usual:
        weights = pm.Dirichlet("weights", a=prior.concentration, dims="component")
        variance = pm.InverseGamma("variance", alpha=prior.dof / 2, beta=prior.scale[0] / 2, dims="component")
        mu = pm.Normal("mu", mu=prior.mean[0], sigma=pt.sqrt(variance / prior.shrinkage), dims="component")
        pm.NormalMixture("x", w=weights, mu=mu, sigma=pt.sqrt(variance), observed=x)
    return usual


def run_pymc_default(case, n):
    import pymc as pm

    from mixflow.data import validate_data
    from mixflow.engines.em import EMOptions, fit_em
    from mixflow.families.gaussian.pymc import standardization
    from mixflow.families.relabel import align, gaussian_signature

    x, model = case_data(case), case_model(case)
    began = time.perf_counter()
    usual = usual_model(case, x)
    with usual:
        approx = pm.fit(n=n, method="advi", random_seed=SEED, progressbar=False)
        trace = approx.sample(DRAWS, random_seed=SEED, return_inferencedata=False)
    elapsed = time.perf_counter() - began
    data = validate_data(x)
    reference = {name: value for name, (_, value) in fit_em(model, data, EMOptions(map=True), SEED)["estimate"].items()}
    dims = model.parameter_dims(data.features)
    raw = {}
    for name in dims:
        value = np.asarray(trace.get_values(name), dtype=float)
        if case in SIZES and name != "weights":
            value = value[..., None]  # (draw, component) -> (draw, component, feature)
        raw[name] = (("chain", "draw", *dims[name]), value[None])
    aligned, _ = align(raw, reference, partial(gaussian_signature, data_scale=standardization(model, data).scale))
    draws = {name: value[0] for name, (_, value) in aligned.items()}
    return {"time": elapsed, "summary": summary(draws), "n_iter": n, "final_elbo": float(-approx.hist[-100:].mean())}


def run_nuts(case):
    import mixflow

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixflow.MixflowWarning)
        began = time.perf_counter()
        tree = mixflow.fit(case_model(case), case_data(case), method=["map", "mcmc"], random_seed=SEED, chains=4,
                           draws=DRAWS, progressbar=False, posterior_predictive=False)
    elapsed = time.perf_counter() - began
    posterior = tree["mcmc/posterior"]
    draws = {name: posterior[name].values.reshape((-1,) + posterior[name].shape[2:]) for name in posterior.data_vars}
    return {"time": elapsed, "summary": summary(draws)}


def in_fresh_process(*args) -> dict:
    completed = subprocess.run([sys.executable, __file__, "--worker", *map(str, args)], capture_output=True,
                               text=True, check=False)
    if completed.returncode:
        raise RuntimeError(f"worker {args} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


# -- comparison ----------------------------------------------------------------------------------------------
def accuracy(result: dict, nuts: dict) -> tuple[float, float, float]:
    """Largest |mean - NUTS mean| / NUTS sd, and the min and median sd ratio method/NUTS."""
    distances, ratios = [], []
    for name, reference in nuts["summary"].items():
        mean, sd = np.asarray(result["summary"][name]["mean"]), np.asarray(result["summary"][name]["sd"])
        nuts_mean, nuts_sd = np.asarray(reference["mean"]), np.asarray(reference["sd"])
        distances.append(np.max(np.abs(mean - nuts_mean) / nuts_sd))
        ratios.append((sd / nuts_sd).ravel())
    ratios = np.concatenate(ratios)
    return float(max(distances)), float(ratios.min()), float(np.median(ratios))


def best(runs: list[dict]) -> dict:
    return min(runs, key=lambda run: run["time"])


def describe_1d(result: dict) -> str:
    s = result["summary"]
    sds = np.sqrt(np.asarray(s["variance"]["mean"]).ravel())
    means = np.round(np.ravel(s["mu"]["mean"]), 2).tolist()
    return f"weights {np.round(s['weights']['mean'], 2).tolist()}, means {means}, sds {np.round(sds, 2).tolist()}"


def bracket(short_of: dict | None, as_accurate: dict | None, ours: dict, distance: float) -> str:
    """The time ratio, bracketed by PyMC's last run short of our accuracy and its first run that reached it.

    PyMC's time to reach the accuracy lies between the two runs' times (its accuracy is not monotone in
    n at this level, so the upper end is the first grid point that reached it, not a tight bound).
    """
    if as_accurate is None:
        return (f"> {short_of['time'] / ours['time']:.1f}x (PyMC's default did not get within {distance:.2f} "
                f"NUTS sd in the runs tried, up to n={short_of['n_iter']})")
    high = as_accurate["time"] / ours["time"]
    if short_of is None:
        return f"{high:.1f}x (PyMC's default run was already as accurate)"
    low, high = sorted((short_of["time"] / ours["time"], high))  # timing noise can invert them
    return (f"between {low:.1f}x and {high:.1f}x (n={short_of['n_iter']}: not yet as accurate; "
            f"n={as_accurate['n_iter']}: as accurate)")


def main(quick: bool, repeats: int, longer: list[int]) -> None:
    longer = [] if quick else longer
    for case in list(CASES)[:1] if quick else CASES:  # --quick: a smoke run of one case
        print(f"\n== {case} ({CASES[case][0]} covariance, K={CASES[case][1]}) ==")
        nuts = in_fresh_process("nuts", case)
        print(f"NUTS reference: 4 chains x {DRAWS} draws in {nuts['time']:.1f} s")
        ours = [in_fresh_process("ours", case) for _ in range(repeats)]
        default = [in_fresh_process("pymc", case, 10_000) for _ in range(repeats)]
        ours_best, default_best = best(ours), best(default)
        ours_acc, default_acc = accuracy(ours_best, nuts), accuracy(default_best, nuts)
        print(f"mixflow ADVI   : {ours_best['time']:6.1f} s  ({ours_best['n_iter']} iterations, converged="
              f"{ours_best['converged']}, ELBO {ours_best['final_elbo']:.1f})  max |mean - NUTS| = "
              f"{ours_acc[0]:.2f} NUTS sd, sd ratio min {ours_acc[1]:.2f} median {ours_acc[2]:.2f}")
        elbo = f", ELBO {default_best['final_elbo']:.1f}" if case == "faithful" else ""  # same model: comparable
        print(f"PyMC default   : {default_best['time']:6.1f} s  (10000 iterations{elbo})  max |mean - NUTS| = "
              f"{default_acc[0]:.2f} NUTS sd, sd ratio min {default_acc[1]:.2f} median {default_acc[2]:.2f}")
        if case in SIZES:
            print(f"  truth        : weights {TRUTH_1D['weights']}, means {TRUTH_1D['mu']}, sds {TRUTH_1D['sd']}")
            print(f"  mixflow      : {describe_1d(ours_best)}")
            print(f"  PyMC default : {describe_1d(default_best)}")
        print(f"time ratio PyMC default / mixflow (default run, whatever its accuracy): "
              f"{default_best['time'] / ours_best['time']:.1f}x")
        as_accurate = default_best if default_acc[0] <= ours_acc[0] else None
        short_of = None if as_accurate else default_best  # the longest PyMC run not yet as accurate
        for n in sorted(longer) if as_accurate is None else []:
            tried = in_fresh_process("pymc", case, n)
            distance = accuracy(tried, nuts)[0]
            print(f"PyMC, n={n:<6}: {tried['time']:6.1f} s  max |mean - NUTS| = {distance:.2f} NUTS sd")
            if distance <= ours_acc[0]:
                as_accurate = tried
                break
            short_of = tried
        if quick and as_accurate is None:
            print("time to an answer at least as accurate: not measured (--quick runs no longer PyMC fits)")
        else:
            print(f"time to an answer at least as accurate, PyMC / mixflow: "
                  f"{bracket(short_of, as_accurate, ours_best, ours_acc[0])}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one case (Old Faithful), no longer PyMC runs")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--longer", type=int, nargs="*", default=[40_000, 60_000, 80_000, 120_000, 160_000],
                        help="iteration counts of the longer PyMC runs, tried in turn until one is as accurate")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.worker:
        kind, case, *rest = arguments.worker
        run = {"ours": run_ours, "pymc": lambda c: run_pymc_default(c, int(rest[0])), "nuts": run_nuts}[kind]
        print(json.dumps(run(case)))
    else:
        main(arguments.quick, arguments.repeats, arguments.longer)
