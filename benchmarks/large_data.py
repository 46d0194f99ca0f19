"""The default EM fit of many rows: the search on a sample of rows against the search of every row, and scikit-learn.

Data of more than ``SEARCH_ROWS`` rows run ``init="auto"``'s starts and local searches on a uniform sample of
``SEARCH_SAMPLE`` rows, then continue the best maxima and a last local search on every row (README, "Large
data"). Each case here is fitted three ways, each in a fresh subprocess (so that its peak resident memory is its
own): mixflow's default; the same with the search on every row (``SEARCH_ROWS`` raised above n: what the default
did before); scikit-learn's GaussianMixture with ``n_init=10`` at its default tolerance (the peer users reach
for). Printed per fit: wall and CPU seconds, peak resident memory, log-likelihood and its shortfall from the best
of the three; per case, the every-row search's time over the default's.

The data: six 2-D Gaussian groups of 1-sd noise, centres drawn with sd 4 (overlapping: a rugged likelihood) or 10
(far apart), seed 0, K=6.

Usage: python benchmarks/large_data.py [--rows=20000,100000] [--every-row-up-to=40000] [--quick]
(``--quick``: 2000 rows of the far-apart groups alone, with ``SEARCH_ROWS`` and ``SEARCH_SAMPLE`` scaled down to
1024 and 512 so that the default still searches a sample: a smoke run, no figures to quote.)
"""

import argparse
import json
import resource
import subprocess
import sys
import time
import warnings

import numpy as np

import mixflow
from mixflow.engines import em

K = 6
SPREADS = (4.0, 10.0)
MODES = ("default", "every row", "scikit-learn")
QUICK_ROWS, QUICK_SEARCH = 2000, (1024, 512)  # --quick: more rows than SEARCH_ROWS, so the default searches a sample


def groups(n: int, spread: float) -> np.ndarray:
    """Six 2-D groups of sd 1 whose centres are drawn with sd ``spread`` (seed 0)."""
    rng = np.random.default_rng(0)
    centres = rng.normal(0, spread, size=(K, 2))
    return centres[rng.integers(0, K, n)] + rng.normal(size=(n, 2))


def fit_once(n: int, spread: float, mode: str) -> dict:
    """One fit in this process: its times, peak memory and log-likelihood."""
    x = groups(n, spread)
    wall, cpu = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if mode == "scikit-learn":
            from sklearn.mixture import GaussianMixture

            value = float(GaussianMixture(K, n_init=10, random_state=0).fit(x).score(x) * n)
        else:
            if mode == "every row":
                em.SEARCH_ROWS = n
            value = float(mixflow.fit(mixflow.GaussianMixture(K), x, random_seed=0)["em"].attrs["log_likelihood"])
    return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu, "log_likelihood": value,
            "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def in_subprocess(n: int, spread: float, mode: str, search: tuple[int, int] | None = None) -> dict:
    """:func:`fit_once` in a fresh process; ``search``: its ``SEARCH_ROWS`` and ``SEARCH_SAMPLE`` (--quick)."""
    given = [str(v) for v in search] if search else []
    out = subprocess.run([sys.executable, __file__, "--worker", str(n), str(spread), mode, *given], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="20000,100000", help="row counts, comma-separated")
    parser.add_argument("--every-row-up-to", type=int, default=40000,
                        help="fit with the search on every row only up to this many rows (it is slow)")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_ROWS} rows of the far-apart groups alone, the search thresholds scaled down")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        n, spread, mode, *search = args.worker
        if search:
            em.SEARCH_ROWS, em.SEARCH_SAMPLE = (int(v) for v in search)
        print(json.dumps(fit_once(int(n), float(spread), mode)))
        return
    if args.quick:
        em.SEARCH_ROWS, em.SEARCH_SAMPLE = QUICK_SEARCH
    print(f"SEARCH_ROWS {em.SEARCH_ROWS}, SEARCH_SAMPLE {em.SEARCH_SAMPLE}; K={K}, 2-D groups, seed 0")
    print(f"{'rows':>7} {'spread':>6} {'fit':>13} {'wall s':>8} {'CPU s':>8} {'peak MiB':>9} {'log-likelihood':>16} "
          f"{'shortfall':>10}")
    for n in [QUICK_ROWS] if args.quick else [int(v) for v in args.rows.split(",")]:
        for spread in SPREADS[-1:] if args.quick else SPREADS:
            modes = [m for m in MODES if m != "every row" or n <= args.every_row_up_to]
            results = {mode: in_subprocess(n, spread, mode, QUICK_SEARCH if args.quick else None) for mode in modes}
            best = max(r["log_likelihood"] for r in results.values())
            for mode, r in results.items():
                print(f"{n:>7} {spread:>6g} {mode:>13} {r['wall']:>8.1f} {r['cpu']:>8.1f} {r['rss_mib']:>9.0f} "
                      f"{r['log_likelihood']:>16.4f} {best - r['log_likelihood']:>10.4f}", flush=True)
            if "every row" in results:
                print(f"{'':>15} every row / default, wall time: "
                      f"{results['every row']['wall'] / results['default']['wall']:.2f}", flush=True)


if __name__ == "__main__":
    main()
