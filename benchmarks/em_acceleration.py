"""Iterations and time for EM to reach its maximum: plain EM against SQUAREM-accelerated EM.

For each case both runs start from the same parameters (one start, the same seed) and stop on the default
criterion (Aitken's estimate of the objective still to gain below ``tol`` per observation). A run counts
as having reached the maximum when its final objective is within 1e-8 relative of a reference: the best
of a plain and an accelerated run from the same start at ``tol=1e-14``. Iterations are passes over the
data (each SQUAREM extrapolation counts as one); the time of a run is the best of ``repeats``, the two
methods' runs interleaved. The ratio columns are plain / accelerated (above 1: acceleration helps).

Cases: London deaths (Poisson, K=2), where EM famously crawls; the galaxies (1-D Gaussian, K=3..6) by
MAP as the shipped workflow fits them, and by maximum likelihood; an overlapping 2-D simulation; and
Old Faithful (K=2, well separated), where EM is fast already; and overlapping Poisson counts near 1e6 (the
expected counts of 0.4 Poisson(1e6) + 0.6 Poisson(1e6 + 1200) as frequency weights, whose maximum is the
truth), where the objective stops resolving the gains before the parameters settle and the parameter
criterion decides the stop (column ``stop``: ``obj`` the objective's criterion, ``par`` the parameters').

Usage: python benchmarks/em_acceleration.py [--quick]
(``--quick``: a smoke run, one repeat of London deaths and the galaxies at K=4, by MAP and maximum likelihood:
both families, both fits and both stops; no figures to quote)
"""

import sys
import time
import warnings

import numpy as np
from scipy import stats

import mixflow

REACHED = 1e-8


def overlapping_simulation(n: int = 1000, seed: int = 0) -> np.ndarray:
    """Two unit-covariance Gaussians in 2-D whose means are 1.8 standard deviations apart."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(2, size=n)
    return rng.normal(size=(n, 2)) + np.array([[0.0, 0.0], [1.5, 1.0]])[labels]


def poisson_near_a_million(separation: float = 1.2, width: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
    """Counts and their expected numbers (out of 1e6) under 0.4 Poisson(1e6) + 0.6 Poisson(1e6 + 1000 separation)."""
    rates = np.array([1e6, 1e6 + separation * 1e3])
    counts = np.arange(int(rates[0] - width * 1e3), int(rates[1] + width * 1e3) + 1)
    return counts, 1e6 * (0.4 * stats.poisson.pmf(counts, rates[0]) + 0.6 * stats.poisson.pmf(counts, rates[1]))


def cases(quick: bool) -> list[dict]:
    """Name, model, data, weights and method of each case."""
    deaths = mixflow.load_dataset("london_deaths")
    galaxies = mixflow.load_dataset("galaxies")[["velocity"]]
    london = {"name": "london deaths", "model": mixflow.PoissonMixture(2), "data": deaths["deaths"],
              "weights": deaths["days"], "method": "em"}
    simulated = {"name": "overlapping 2-D", "model": mixflow.GaussianMixture(2), "data": overlapping_simulation(),
                 "weights": None, "method": "em"}
    ks = (4,) if quick else (3, 4, 5, 6)
    gal = [{"name": "galaxies", "model": mixflow.GaussianMixture(k), "data": galaxies, "weights": None,
            "method": method} for method in ("map", "em") for k in ks]
    faithful = [] if quick else [{"name": "faithful", "model": mixflow.GaussianMixture(2),
                                  "data": mixflow.load_dataset("faithful"), "weights": None, "method": "em"}]
    counts, expected = poisson_near_a_million()
    poisson = {"name": "poisson near 1e6", "model": mixflow.PoissonMixture(2), "data": counts, "weights": expected,
               "method": "em"}
    if quick:  # Poisson with weights, Gaussian by MAP and ML: every path (the simulations' data are still made above)
        return [london, *gal]
    return [london, *gal, simulated, *faithful, poisson]


def run(case: dict, accelerate, tol: float | None = None, max_iter: int = 1000) -> tuple[float, dict]:
    """Wall time and ``/em`` attributes of one single-start fit."""
    options = {} if tol is None else {"tol": tol}
    begin = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixflow.MixflowWarning)
        # one k-means start, the same for both: init="auto" would add its short runs to the count
        tree = mixflow.fit(case["model"], case["data"], case["method"], weights=case["weights"], n_init=1,
                           init="kmeans", random_seed=0, accelerate=accelerate, max_iter=max_iter, **options)
    elapsed = time.perf_counter() - begin
    attrs = dict(tree["em"].attrs)
    attrs["objective"] = attrs.get("log_posterior", attrs["log_likelihood"])
    return elapsed, attrs


def measure(case: dict, repeats: int) -> dict:
    """Iterations, best time and shortfall from the reference of both methods on one case."""
    reference = max(run(case, accelerate, tol=1e-14, max_iter=100_000)[1]["objective"]
                    for accelerate in (None, "squarem"))
    times = {None: [], "squarem": []}
    attrs = {}
    for _ in range(repeats):
        for accelerate in times:
            elapsed, attrs[accelerate] = run(case, accelerate, max_iter=100_000)
            times[accelerate].append(elapsed)
    out = {}
    for accelerate, label in ((None, "plain"), ("squarem", "squarem")):
        shortfall = (reference - attrs[accelerate]["objective"]) / abs(reference)
        out[label] = {"n_iter": int(attrs[accelerate]["n_iter"]), "time": min(times[accelerate]),
                      "stop": "obj" if attrs[accelerate]["convergence_criterion"].startswith("aitken") else "par",
                      "shortfall": shortfall, "converged": bool(attrs[accelerate]["converged"]),
                      "collapsed": attrs[accelerate]["collapsed_components"] != "[]"}
    return out


def row(case: dict, result: dict) -> str:
    plain, fast = result["plain"], result["squarem"]
    flags = "".join(("" if r["shortfall"] <= REACHED and r["converged"] else " NOT REACHED")
                    + (" collapsed" if r["collapsed"] else "") for r in (plain, fast))
    return (f"{case['name']:16s} {case['model'].n_components:>2d} {case['method']:>4s} "
            f"{plain['n_iter']:>7d} {1e3 * plain['time']:>9.1f} {plain['shortfall']:>9.1e} {plain['stop']:>4s}   "
            f"{fast['n_iter']:>7d} {1e3 * fast['time']:>9.1f} {fast['shortfall']:>9.1e} {fast['stop']:>4s}   "
            f"{plain['n_iter'] / fast['n_iter']:>6.1f}x {plain['time'] / fast['time']:>6.1f}x{flags}")


def main() -> None:
    quick = "--quick" in sys.argv
    repeats = 1 if quick else 3
    print(f"EM to its maximum from one start, default tol; reached = final objective within {REACHED:g} relative "
          "of a tol=1e-14 reference")
    print(f"{'':23s} {'plain EM':^32s}   {'SQUAREM':^32s}   {'plain / SQUAREM':^15s}")
    print(f"{'case':16s} {'K':>2s} {'fit':>4s} {'iters':>7s} {'time ms':>9s} {'shortfall':>9s} {'stop':>4s}   "
          f"{'iters':>7s} {'time ms':>9s} {'shortfall':>9s} {'stop':>4s}   {'iters':>7s} {'time':>7s}")
    for case in cases(quick):
        print(row(case, measure(case, repeats)), flush=True)


if __name__ == "__main__":
    main()
