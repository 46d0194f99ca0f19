"""EM on Dask: one iteration on data in memory against numpy, and on data larger than a worker's share, from Zarr.

1. In memory: 2M x 8 rows, K=8 full covariances. One EM iteration (a pass over the data, E-step and
   sufficient statistics, then the M-step) on the numpy path (:func:`mixflow.engines.em_steps.data_pass`,
   two threads) against the Dask path on Dask's threaded scheduler (the same per-block functions, blocks of
   250000 rows, a fixed tree-sum). Best of ``--repeats``; target: Dask at most 1.5x numpy's time.
2. From disk: 10^7 x 8 rows (640 MB of float64) written to a Zarr store in blocks of 250000 rows, K=8
   full, streamed from the store at every pass (``persist=False``) by a ``LocalCluster`` of 1 and then 2
   worker processes (one thread each): time per iteration, rows per second, and the peak resident memory
   of the client and of each worker (sampled every 20 ms while the data are read and iterated; targets:
   every process below the data's 640 MB, the client below 400 MB). The Zarr store is deleted at the end.

3. ``--starts`` (instead of 1 and 2): the starts of Dask input on 10^6 x 4 rows held in memory (threaded
   scheduler) from four clusters of about 250000 rows and two far clusters of 30 rows each, which the
   uniform subsample of 100000 rows (the starts' default) holds 3 rows of on average: ``init="auto"`` (the
   portfolio on the subsample, the best continued on all the rows) against ``init="kmeans||"`` (k-means||
   over every row), K=6 full, for a few seeds: the log-likelihood EM reaches, its time, and whether each
   small cluster got a component of its own.

The parameters are a fixed K=8 mixture near the simulated truth (the time of a pass does not depend on
how far EM has come). The machine has 2 cores, shared with other work while this runs: the figures are
for one quiet-ish run, not a controlled benchmark.

Usage: python benchmarks/dask_scale.py [--quick] [--repeats R] [--iterations I] [--store PATH] [--starts]
``--quick`` uses 200000 rows in memory and 300000 on disk (two blocks: one for each of two workers), 2 repeats
and 2 iterations unless given (a smoke run); with ``--starts``, 10^5 rows and a subsample of 10000.
"""

import argparse
import shutil
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np

K, D, SEED = 8, 8, 1
BLOCK = 250_000


def truth():
    rng = np.random.default_rng(SEED)
    mu = rng.normal(0, 4, (K, D))
    factors = rng.normal(0, 0.4, (K, D, D))
    covariance = factors @ np.swapaxes(factors, 1, 2) + 0.5 * np.eye(D)
    return {"weights": np.full(K, 1 / K), "mu": mu, "covariance": covariance}


def simulate_block(block_id, rows: int):
    """Rows of the K=8 mixture, drawn from a seed of their own (the block's index)."""
    params = truth()
    rng = np.random.default_rng([SEED, block_id])
    labels = rng.integers(K, size=rows)
    noise = rng.standard_normal((rows, D))
    factors = np.linalg.cholesky(params["covariance"])
    return params["mu"][labels] + np.einsum("kij,nj->nki", factors, noise)[np.arange(rows), labels]


class PeakMemory:
    """The peak resident memory of this process while the sampler runs (psutil, every 20 ms).

    ``ru_maxrss`` would not do: it survives fork and exec, so a worker would report its parent's peak.
    """

    def __init__(self):
        import psutil

        self.process = psutil.Process()
        self.peak = self.process.memory_info().rss
        self.running = True
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.02)

    def stop(self) -> float:
        self.running = False
        return max(self.peak, self.process.memory_info().rss) / 1e6


def start_sampler(dask_worker=None):
    dask_worker.mixflow_peak = PeakMemory()


def stop_sampler(dask_worker=None) -> float:
    return dask_worker.mixflow_peak.stop()


def _iteration(model, prepared, working, repeat=0):
    """One pass and M-step at ``working``, its weights moved by ``repeat`` ulps-worth: a new task graph each
    time (the same keys again could be served from a result the scheduler still holds)."""
    from mixflow.engines.em_run import maximisation_step
    from mixflow.engines.em_steps import chunk_rows, data_pass, use_threads

    working = {**working, "weights": working["weights"] * (1 + 1e-12 * repeat)}
    rows = chunk_rows(prepared.n_obs, model.chunk_width(D))
    start = time.perf_counter()
    step = data_pass(model, working, prepared, rows, use_threads(prepared.n_obs, model.chunk_width(D)))
    maximisation_step(model, step, prepared, None, np.arange(K))
    return time.perf_counter() - start, step.log_likelihood


def in_memory(n: int, repeats: int) -> None:
    import dask.array as da

    import mixflow
    from mixflow.chunked import validate_chunked
    from mixflow.data import validate_data
    from mixflow.engines.em_chunked import prepare_chunked

    x = np.concatenate([simulate_block(b, min(BLOCK, n - s)) for b, s in enumerate(range(0, n, BLOCK))])
    model = mixflow.GaussianMixture(K, covariance="full")
    prepared = model.prepare(validate_data(x))
    working = model.to_working(truth(), prepared)
    numpy_times = [_iteration(model, prepared, working, r) for r in range(repeats)]
    chunked = prepare_chunked(model, validate_chunked(da.from_array(x, chunks=(BLOCK, D)), persist=True))
    working_chunked = model.to_working(truth(), chunked)
    dask_times = [_iteration(model, chunked, working_chunked, r) for r in range(repeats)]
    best_numpy, best_dask = min(t for t, _ in numpy_times), min(t for t, _ in dask_times)
    print(f"in memory: {n} x {D} rows, K={K} full, one EM iteration (best of {repeats})")
    print(f"  numpy path (2 threads)          {best_numpy:7.3f} s")
    print(f"  Dask, threaded scheduler         {best_dask:7.3f} s   ({best_dask / best_numpy:.2f}x numpy; "
          f"{x.shape[0] // BLOCK + (x.shape[0] % BLOCK > 0)} blocks of {BLOCK} rows)")
    gap = abs(numpy_times[0][1] - dask_times[0][1]) / abs(numpy_times[0][1])
    print(f"  log-likelihoods agree to {gap:.1e} relative")


def write_store(path: Path, n: int) -> None:
    import dask.array as da

    blocks = [da.from_delayed(_delayed_block(b, min(BLOCK, n - s)), shape=(min(BLOCK, n - s), D), dtype=float)
              for b, s in enumerate(range(0, n, BLOCK))]
    da.concatenate(blocks).rechunk((BLOCK, D)).to_zarr(str(path), overwrite=True)


def _delayed_block(block_id, rows):
    import dask

    return dask.delayed(simulate_block, pure=True)(block_id, rows)


def from_disk(path: Path, n: int, iterations: int, workers: int) -> dict:
    import dask.array as da
    import distributed

    import mixflow
    from mixflow.chunked import validate_chunked
    from mixflow.engines.em_chunked import prepare_chunked

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                           dashboard_address=None, memory_limit="4GiB")
        client = distributed.Client(cluster)
    try:
        client.run(start_sampler)
        client_peak = PeakMemory()
        model = mixflow.GaussianMixture(K, covariance="full")
        start = time.perf_counter()
        data = validate_chunked(da.from_zarr(str(path)), persist=False)
        checked = time.perf_counter() - start
        prepared = prepare_chunked(model, data)
        working = model.to_working(truth(), prepared)
        times = [_iteration(model, prepared, working, r)[0] for r in range(iterations)]
        worker_peaks = client.run(stop_sampler)
        return {"workers": workers, "validation": checked, "iteration": min(times), "rows_per_s": n / min(times),
                "client_mb": client_peak.stop(), "worker_mb": sorted(worker_peaks.values())}
    finally:
        client.close()
        cluster.close()


def small_clusters(n: int, small: int) -> tuple[np.ndarray, np.ndarray]:
    """Four unit-variance clusters in 4-D and two far ones of ``small`` rows each (sd 0.3), shuffled; their centres."""
    rng = np.random.default_rng(SEED)
    big = np.array([[0, 0, 0, 0], [5, 0, 0, 0], [0, 5, 0, 0], [5, 5, 0, 0.0]])
    far = np.array([[12, -8, 6, 0], [-9, 10, 0, -7.0]])
    labels = rng.integers(4, size=n - 2 * small)
    rows = [big[labels] + rng.standard_normal((n - 2 * small, 4))]
    rows += [centre + 0.3 * rng.standard_normal((small, 4)) for centre in far]
    return np.concatenate(rows)[rng.permutation(n)], far


def compare_starts(n: int, subsample: int, seeds: list[int]) -> None:
    import dask.array as da

    import mixflow

    small = 30
    x, far = small_clusters(n, small)
    data = da.from_array(x, chunks=(n // 8, -1)).persist()
    model = mixflow.GaussianMixture(6, covariance="full")
    print(f"starts of Dask input: {n} x 4 rows, K=6 full, two clusters of {small} rows "
          f"({small * subsample / n:.1f} expected in the subsample of {subsample}), threaded scheduler")
    for init in ("auto", "kmeans||"):
        for seed in seeds:
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tree = mixflow.fit(model, data, init=init, random_seed=seed, subsample=subsample)
            elapsed = time.perf_counter() - start
            mu, weights = tree["em/estimate"]["mu"].values, tree["em/estimate"]["weights"].values
            found = sum(bool(np.any((np.abs(mu - centre).max(axis=1) < 0.5) & (weights * n < 2 * small)))
                        for centre in far)
            passes = int(tree["em/sample_stats"]["n_iter"].values.sum())
            print(f"  init={init!r:10} seed {seed}: log-likelihood {tree['em'].attrs['log_likelihood']:.1f}, "
                  f"{elapsed:.1f} s, {passes} EM iterations over all restarts, small clusters with a component "
                  f"of their own: {found} of 2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller data (a smoke run)")
    parser.add_argument("--repeats", type=int, default=None, help="3 (--quick: 2)")
    parser.add_argument("--iterations", type=int, default=None, help="EM iterations timed on the Zarr data: 3 "
                        "(--quick: 2)")
    parser.add_argument("--store", type=Path, default=None, help="where to write the Zarr store (deleted after)")
    parser.add_argument("--starts", action="store_true", help="only compare init='auto' and init='kmeans||'")
    args = parser.parse_args()
    args.repeats = args.repeats or (2 if args.quick else 3)
    args.iterations = args.iterations or (2 if args.quick else 3)
    if args.starts:
        compare_starts(*((100_000, 10_000, [1, 2]) if args.quick else (1_000_000, 100_000, [1, 2, 3])))
        return
    n_memory, n_disk = (200_000, 300_000) if args.quick else (2_000_000, 10_000_000)
    in_memory(n_memory, args.repeats)
    directory = Path(tempfile.mkdtemp(dir=args.store))
    store = directory / "rows.zarr"
    try:
        start = time.perf_counter()
        write_store(store, n_disk)
        size = sum(f.stat().st_size for f in store.rglob("*") if f.is_file()) / 1e6
        print(f"\nfrom Zarr: {n_disk} x {D} rows ({n_disk * D * 8 / 1e6:.0f} MB as float64, {size:.0f} MB on disk, "
              f"written in {time.perf_counter() - start:.1f} s), K={K} full, streamed at every pass (persist=False)")
        results = [from_disk(store, n_disk, args.iterations, workers) for workers in (1, 2)]
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    for r in results:
        print(f"  LocalCluster, {r['workers']} worker(s): validation + moments {r['validation']:.1f} s; one EM "
              f"iteration {r['iteration']:.2f} s (best of {args.iterations}), {r['rows_per_s'] / 1e6:.2f} M rows/s; "
              f"peak RSS client {r['client_mb']:.0f} MB, workers {[round(m) for m in r['worker_mb']]} MB")
    print(f"  scaling 1 -> 2 workers: {results[0]['iteration'] / results[1]['iteration']:.2f}x faster per iteration")


if __name__ == "__main__":
    main()
