"""Per-iteration cost of mixflow's EM against scikit-learn's GaussianMixture (full covariance).

Both start from the same parameters on the same data. Each library is timed at four iteration counts;
the per-iteration time is the slope of a least-squares line through (iterations, seconds), so set-up,
initialisation and the final E-step go into the intercept. The slope is fitted once per round; a round
times every count of both libraries in turn (interleaved, so a slow spell of a shared machine falls on
both), and the figures are the median slope over ``repeats`` rounds with its range (min-max), and the
median of the per-round ratios sklearn/mixflow with their range (above 1: mixflow is faster). Also
printed: the BLAS libraries and thread counts in use (threadpoolctl), the load average, and the peak
memory (tracemalloc, which sees NumPy's buffers) of a two-iteration fit of each library.

Usage: python benchmarks/em_vs_sklearn.py [--quick]
(``--quick``: a smoke run, the smallest case alone, one round, no figures to quote)
"""

import os
import sys
import time
import tracemalloc
import warnings

import numpy as np
import threadpoolctl
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


def per_iteration(timers, x, start, counts, repeats):
    """Per-round slopes (seconds per iteration) of each timer; the rounds interleave the two libraries."""
    slopes = {name: [] for name in timers}
    for timer in timers.values():  # one untimed run each: first-call costs (imports, caches) are not iterations
        timer(x, start, counts[0])
    for _ in range(repeats):
        for name, timer in timers.items():
            seconds = [timer(x, start, n) for n in counts]
            slopes[name].append(float(np.polyfit(counts, seconds, 1)[0]))
    return {name: np.array(values) for name, values in slopes.items()}


def peak_memory_mb(timer, x, start):
    tracemalloc.start()
    timer(x, start, 2)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def blas_setup() -> str:
    info = threadpoolctl.threadpool_info()
    return "; ".join(f"{lib['internal_api']} {lib.get('version')} ({lib['num_threads']} threads)" for lib in info)


def main():
    quick = "--quick" in sys.argv
    print(f"BLAS/OpenMP: {blas_setup()}; CPUs: {os.cpu_count()}; load average before: {os.getloadavg()}")
    print(f"{'n':>8} {'d':>3} {'k':>3} {'mixflow ms/iter':>22} {'sklearn ms/iter':>22} {'sklearn/mixflow':>20}"
          f" {'data MB':>8} {'peak MB mixflow':>16} {'peak MB sklearn':>16}")
    timers = {"mixflow": time_mixflow, "sklearn": time_sklearn}
    for n, d, k in CASES[:1] if quick else CASES:
        x, start = make_data(n, d, k)
        counts = (2, 4, 6, 8) if n > 50_000 else (5, 15, 30, 45)
        repeats = 1 if quick else (3 if n > 50_000 else 5)
        slopes = per_iteration(timers, x, start, counts, repeats)
        ours, theirs = slopes["mixflow"] * 1e3, slopes["sklearn"] * 1e3
        ratios = theirs / ours

        def spread(values, unit=""):
            return f"{np.median(values):.3g}{unit} [{values.min():.3g}, {values.max():.3g}]"

        print(f"{n:>8} {d:>3} {k:>3} {spread(ours):>22} {spread(theirs):>22} {spread(ratios, 'x'):>20}"
              f" {x.nbytes / 2**20:>8.1f} {peak_memory_mb(time_mixflow, x, start):>16.1f}"
              f" {peak_memory_mb(time_sklearn, x, start):>16.1f}")
    print(f"load average after: {os.getloadavg()}; each cell: median [min, max] over the rounds")


if __name__ == "__main__":
    main()
