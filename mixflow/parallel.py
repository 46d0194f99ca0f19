"""Where mixflow's work runs: the cores it may use, worker processes, and one BLAS thread where asked.

- :func:`available_cores`: the cores this process may run on; 1 inside a worker of :func:`parallel_map`,
  whose siblings already share out the cores.
- :func:`parallel_map`: a list of tasks on worker processes, results in task order.
- :func:`one_blas_thread`: BLAS limited to one thread for a block (threads of ours do the sharing out).
"""

import multiprocessing
import os
import sys
import threading
import warnings
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from functools import cache

from threadpoolctl import ThreadpoolController

__all__ = ["available_cores", "one_blas_thread", "parallel_map"]

_START_METHOD = "fork" if sys.platform.startswith("linux") else "spawn"
_in_worker = False
_blas_lock = threading.RLock()


def available_cores() -> int:
    """CPU cores this process may use (1 in a worker of :func:`parallel_map`)."""
    if _in_worker:
        return 1
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def parallel_map(function, tasks: list[tuple], n_jobs: int) -> list:
    """``[function(*task) for task in tasks]`` on ``n_jobs`` worker processes, results in task order.

    ``n_jobs=1`` runs in this process. On Linux the workers are forked (no re-import, no ``__main__``
    guard needed in scripts); elsewhere they are spawned. In a worker, :func:`available_cores` is 1, so
    the EM passes it runs do not start threads of their own.
    """
    if n_jobs == 1 or len(tasks) <= 1:
        return [function(*task) for task in tasks]
    context = multiprocessing.get_context(_START_METHOD if _START_METHOD in multiprocessing.get_all_start_methods()
                                          else "spawn")
    with warnings.catch_warnings(), ProcessPoolExecutor(max_workers=n_jobs, mp_context=context,
                                                        initializer=_mark_worker) as pool:
        # The workers only run numpy/scipy code; OpenBLAS's own threads are fork-safe (pthread_atfork).
        warnings.filterwarnings("ignore", message=r"This process .* is multi-threaded", category=DeprecationWarning)
        futures = [pool.submit(function, *task) for task in tasks]
        return [future.result() for future in futures]


@contextmanager
def one_blas_thread():
    """BLAS limited to one thread inside the block, restored after it (also on errors).

    The limit is process-wide, so blocks in concurrent threads of the caller take turns: one block's
    restore cannot undo another's limit.
    """
    with _blas_lock, _controller().limit(limits=1, user_api="blas"):
        yield


def _mark_worker() -> None:
    global _in_worker
    _in_worker = True


@cache
def _controller() -> ThreadpoolController:
    return ThreadpoolController()
