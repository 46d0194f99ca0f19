"""Per-iteration cost of mixflow's EM against scikit-learn's GaussianMixture (full covariance).

Both start from the same parameters on the same data. The per-iteration time is the difference between
a run of ``long`` and a run of ``short`` iterations divided by ``long - short``, so set-up, initialisation
and the final E-step cancel out. Each timing is the best of ``repeats``, the two libraries' runs
interleaved. Prints the ratio sklearn/mixflow (above 1: mixflow is faster) and the peak memory of one
mixflow iteration.

Usage: python benchmarks/em_vs_sklearn.py [--quick]
"""

import sys
import time
import tracemalloc
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning as SkConvergenceWarning
from sklearn.mixture import GaussianMixture as SkGaussianMixture

import mixflow

CASES = [(2_000, 2, 3), (100_000, 8, 8), (200_000, 32, 16)]


def make_data(n, d, k, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 4, size=(k, d))
    labels = rng.integers(k, size=n)
    x = centers[labels] + rng.normal(size=(n, d)) @ (0.3 * np.eye(d) + 0.1 * rng.normal(size=(d, d)))
    start = {"weights": np.full(k, 1.0 / k), "mu": x[rng.choice(n, k, replace=False)],
             "covariance": np.broadcast_to(np.cov(x.T), (k, d, d)).copy()}
    return x, start


def time_mixflow(x, start, iterations):
    model = mixflow.GaussianMixture(len(start["weights"]))
    begin = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixflow.MixflowWarning)
        # every iteration a plain EM step, as sklearn's (SQUAREM's extrapolations are timed in em_acceleration.py)
        mixflow.fit(model, x, init=start, tol=0.0, max_iter=iterations, random_seed=0, accelerate=None)
    return time.perf_counter() - begin


def time_sklearn(x, start, iterations):
    model = SkGaussianMixture(len(start["weights"]), covariance_type="full", weights_init=start["weights"],
                              means_init=start["mu"], precisions_init=np.linalg.inv(start["covariance"]),
                              init_params="random_from_data", reg_covar=0.0, tol=0.0, max_iter=iterations)
    begin = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkConvergenceWarning)
        model.fit(x)
    return time.perf_counter() - begin


def per_iteration(timers, x, start, short, long, repeats):
    """Per-iteration time of each timer; the repeats of all timers are interleaved, so that a slow spell
    of the machine (this VM has some) falls on both libraries rather than on one of them."""
    times = {(name, n): [] for name in timers for n in (short, long)}
    for _ in range(repeats):
        for name, timer in timers.items():
            for n in (short, long):
                times[name, n].append(timer(x, start, n))
    return {name: (min(times[name, long]) - min(times[name, short])) / (long - short) for name in timers}


def peak_memory_mb(x, start):
    tracemalloc.start()
    time_mixflow(x, start, 2)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def main():
    quick = "--quick" in sys.argv
    print(f"{'n':>8} {'d':>3} {'k':>3} {'mixflow s/iter':>15} {'sklearn s/iter':>15} {'sklearn/mixflow':>16}"
          f" {'data MB':>8} {'mixflow peak MB':>16}")
    for n, d, k in CASES[:2] if quick else CASES:
        x, start = make_data(n, d, k)
        short, long = (2, 6) if n > 50_000 else (5, 45)
        repeats = 3 if n > 50_000 else 5
        timed = per_iteration({"mixflow": time_mixflow, "sklearn": time_sklearn}, x, start, short, long, repeats)
        ours, theirs = timed["mixflow"], timed["sklearn"]
        print(f"{n:>8} {d:>3} {k:>3} {ours:>15.5f} {theirs:>15.5f} {theirs / ours:>15.2f}x"
              f" {x.nbytes / 2**20:>8.1f} {peak_memory_mb(x, start):>16.1f}")


if __name__ == "__main__":
    main()
