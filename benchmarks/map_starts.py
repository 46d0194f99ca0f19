"""The default MAP call (``mixflow.fit(model, X, method="map")``) against the best known MAP maximum, per case.

The cases are those of ``benchmarks/starts.py``. A MAP fit maximises the log posterior density, whose maxima
differ from the likelihood's: the prior bounds every dispersion, so a component on one row, or one value of a
0/1 code, is a maximum, not a singularity, and scikit-learn has no such objective to compare with. The best
known maximum is the highest log posterior of: the default call from each seed, three calls with ``n_init=20``
(seeds 100-102), and 30 starts each of ``init="random"`` and ``init="kmeans"`` (seed 7). Printed per case: the
best known value, the default's log posterior per seed, its worst relative shortfall, how many seeds are at the
best (shortfall < 1e-6) and the default's mean CPU time (one BLAS thread).

Usage: python benchmarks/map_starts.py [--quick] [--seeds=S] [part of a case name ...]
(S: seeds 0..S-1, 5 by default; --quick: the two small cases of ``starts.py --quick``, one seed, one ``n_init=5``
fit in place of the ``n_init=20`` ones and 5 starts of each named strategy for the best known)
"""

import sys
import time
import warnings

import numpy as np
from starts import TARGET, cases
from threadpoolctl import threadpool_limits

import mixflow


def log_posterior(model, data, weights, **options) -> tuple[float, float]:
    """The log posterior density of one MAP call and its CPU seconds."""
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        begin = time.process_time()
        tree = mixflow.fit(model, data, method="map", weights=weights, **options)
        return float(tree["em"].attrs["log_posterior"]), time.process_time() - begin


def main(only: list[str], n_seeds: int, quick: bool = False) -> None:
    at_max, total = 0, 0
    n_wide, n_init_wide, n_named = (1, 5, 5) if quick else (3, 20, 30)
    for name, model, data, weights in cases(quick):
        if only and not any(part in name for part in only):
            continue
        defaults = [log_posterior(model, data, weights, random_seed=seed) for seed in range(n_seeds)]
        values = [value for value, _ in defaults]
        others = [log_posterior(model, data, weights, random_seed=100 + i, n_init=n_init_wide)[0]
                  for i in range(n_wide)]
        others += [log_posterior(model, data, weights, random_seed=7, n_init=n_named, init=init)[0]
                   for init in ("random", "kmeans")]
        best = max(values + others)
        shortfalls = [(best - value) / abs(best) for value in values]
        seeds_at_max = sum(shortfall < TARGET for shortfall in shortfalls)
        at_max, total = at_max + seeds_at_max, total + n_seeds
        print(f"{name:34s} best known {best:.4f}  default {' '.join(f'{v:.4f}' for v in values)}  "
              f"worst shortfall {max(shortfalls):.1e}  seeds at max {seeds_at_max}/{n_seeds}  "
              f"time {np.mean([s for _, s in defaults]):.2f} s", flush=True)
    print(f"\nthe default MAP call at the best known maximum in {at_max}/{total} fits")


if __name__ == "__main__":
    given = [int(a.split("=")[1]) for a in sys.argv[1:] if a.startswith("--seeds=")]
    quick = "--quick" in sys.argv
    main([a for a in sys.argv[1:] if not a.startswith("--")], given[0] if given else 1 if quick else 5, quick)
