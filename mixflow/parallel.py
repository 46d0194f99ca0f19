"""Where mixflow's work runs: the cores it may use, worker processes, and one BLAS thread where asked.

- :func:`available_cores`: the cores this process may run on; 1 inside a worker of :func:`parallel_map`,
  whose siblings already share out the cores.
- :func:`parallel_map`: a list of tasks on worker processes, results in task order. The workers come
  from a fork server (spawn where there is none), never from a fork of the caller: the caller may be a
  process in which PyMC, nutpie or numba have started threads, and a fork copies whatever locks those
  threads hold at that moment.
- :func:`fork_context_ending_with_this_process`: a fork context whose processes end when this process ends,
  for samplers that start processes of their own (PyMC's chains).
- :func:`one_blas_thread`: BLAS limited to one thread for a block (threads of ours do the sharing out).
- :func:`active_client`: the active ``dask.distributed`` client; with one, :func:`parallel_map` sends its
  tasks to the cluster (``client.map``) instead of local processes, and :func:`default_jobs` counts the
  cluster's threads.
"""

import multiprocessing
import os
import select
import signal
import sys
import threading
import time
import types
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import contextmanager
from functools import cache

from threadpoolctl import ThreadpoolController

__all__ = ["active_client", "available_cores", "default_jobs", "fork_context_ending_with_this_process",
           "one_blas_thread", "parallel_map", "parallel_results"]

# The fork server imports these once, so each worker forked from it starts with them loaded.
# Ctrl-C's handler first (mixflow.worker_signals), before the imports it may interrupt.
_PRELOAD = ["mixflow.worker_signals", "mixflow.analysis.bootstrap", "mixflow.analysis.select"]
_in_worker = False
_blas_lock = threading.RLock()


def available_cores() -> int:
    """CPU cores this process may use (1 in a worker of :func:`parallel_map`)."""
    if _in_worker:
        return 1
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def active_client():
    """The active ``dask.distributed`` client, or None: none made, Dask not installed, or inside a Dask task.

    Without ``distributed`` imported there can be no client, so it is not imported here.
    """
    if "distributed" not in sys.modules:
        return None
    from distributed import get_client, get_worker

    try:
        get_worker()
        return None  # a task on a worker runs its own work locally
    except ValueError:
        pass
    try:
        return get_client()
    except ValueError:
        return None


def default_jobs() -> int:
    """Tasks to run at once by default: the active client's worker threads, else :func:`available_cores`."""
    client = active_client()
    if client is not None:
        threads = sum(w.get("nthreads", 1) for w in client.scheduler_info().get("workers", {}).values())
        if threads:
            return int(threads)
    return available_cores()


def parallel_map(function, tasks: list[tuple], n_jobs: int) -> list:
    """``[function(*task) for task in tasks]`` on ``n_jobs`` worker processes, results in task order.

    ``n_jobs=1`` runs in this process. Workers are forked from a fork server (started once per process,
    with mixflow's modules loaded) where the platform has one, else spawned. They are started without
    the caller's main script (:func:`_without_main_script`), so a script needs no
    ``if __name__ == "__main__":`` guard. ``function`` must be importable by name (a module-level function
    of a module other than the main script). In a worker, :func:`available_cores` is 1, so the EM passes
    it runs do not start threads of their own. With an active ``dask.distributed`` client
    (:func:`active_client`) and ``n_jobs > 1`` the tasks run on its workers instead.
    """
    return list(parallel_results(function, tasks, n_jobs))


def parallel_results(function, tasks: list[tuple], n_jobs: int):
    """:func:`parallel_map` as a generator: each result in task order as soon as it and those before it are done.

    So a caller can say each one's progress while the later tasks still run. A task's error is raised as soon as it
    comes, before the results of the tasks ahead of it, and stops the pool; closing the generator early (or an
    interrupt while it waits) stops it too.
    """
    if n_jobs == 1 or len(tasks) <= 1:
        for task in tasks:
            yield function(*task)
        return
    client = active_client()
    if client is not None:  # independent tasks on the cluster, results in task order
        for future in client.map(function, *zip(*tasks, strict=True), pure=False):
            yield future.result()
        return
    pool = ProcessPoolExecutor(max_workers=n_jobs, mp_context=_context(), initializer=_mark_worker,
                               initargs=(os.getpid(),))
    try:
        with _without_main_script():  # the workers start as the tasks are submitted
            futures = [pool.submit(function, *task) for task in tasks]
        pending = set(futures)
        for future in futures:
            while not future.done():  # any task's error ends the wait, not only this one's
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for failed in (other for other in done if other.exception() is not None):
                    failed.result()
            yield future.result()
    except BaseException:
        _stop(pool)
        raise
    pool.shutdown()


def _stop(pool: ProcessPoolExecutor) -> None:
    """End a pool now: its queued tasks cancelled and its workers terminated (SIGTERM), not waited for.

    On an interrupt, a signal to this process alone (``kill``, a batch scheduler) or a task's error, the pool's own
    exit would wait for every task already queued: minutes of work after the run was stopped. The workers' results
    are not wanted, and they write nothing of the run's.
    """
    workers = list((getattr(pool, "_processes", None) or {}).values())  # ProcessPoolExecutor has no public handle
    pool.shutdown(wait=False, cancel_futures=True)
    for worker in workers:
        if worker.is_alive():
            worker.terminate()
    for worker in workers:
        worker.join(timeout=5)


@contextmanager
def _without_main_script():
    """Hide the caller's ``__main__`` while workers start, so that they do not import it.

    A fork server or spawn start re-imports the main script in every worker (to find functions defined
    there); the tasks here only use mixflow's functions, and re-running an analyst's unguarded script in
    each worker would start the analysis over (or fail, as it starts workers of its own).
    """
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def _context():
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(_PRELOAD)
    return context


@contextmanager
def one_blas_thread():
    """BLAS limited to one thread inside the block, restored after it (also on errors).

    The limit is process-wide, so blocks in concurrent threads of the caller take turns: one block's
    restore cannot undo another's limit.
    """
    with _blas_lock, _controller().limit(limits=1, user_api="blas"):
        yield


def _mark_worker(main: int) -> None:
    """The pool's initializer: a worker uses one core, ends quietly on Ctrl-C, and ends when ``main`` ends.

    Ctrl-C: see mixflow.worker_signals. A main process killed outright (SIGKILL, the out-of-memory killer, a
    notebook's kernel restarted) stops no pool: its workers, children of the fork server, would run the tasks queued
    for them and then wait forever for more. A thread of each worker waits for the main process's end (a pidfd on
    Linux, else a check every second).
    """
    global _in_worker
    _in_worker = True
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # an ignored Ctrl-C (a background job) stays ignored
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    threading.Thread(target=_end_with, args=(main,), daemon=True, name="mixflow-main-watch").start()


def fork_context_ending_with_this_process() -> multiprocessing.context.BaseContext:
    """A ``fork`` multiprocessing context whose processes end when the process that started them ends (POSIX only).

    For a library that starts processes of its own from a context it is given (PyMC's ``mp_ctx``): killed
    outright, this process could not stop them, and PyMC's chains would wait forever, orphaned, for their next
    message (each holds, forked, this process's end of the pipes). Each process watches this one as the workers
    of :func:`parallel_map` do (:func:`_end_with`).
    """
    return _ForkEndingWithStarter()


def _end_with(main: int) -> None:
    """Wait until process ``main`` has ended, then end this one at once (its work is nobody's any more)."""
    try:
        handle = os.pidfd_open(main)
    except ProcessLookupError:
        os._exit(1)
    except (AttributeError, OSError):  # no pidfd (not Linux, or an old kernel): look every second
        while _alive(main):
            time.sleep(1.0)
        os._exit(1)
    select.select([handle], [], [])  # readable once the process has ended
    os._exit(1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # gone, or another user's process took the number
        return False
    return True


if sys.platform != "win32":  # the fork context is POSIX's alone
    class _ProcessEndingWithStarter(multiprocessing.context.ForkProcess):
        """A forked process that ends when the process that started it ends."""

        def start(self):
            self._starter = os.getpid()  # read before the fork: once orphaned, the parent's pid is another's
            super().start()

        def run(self):
            threading.Thread(target=_end_with, args=(self._starter,), daemon=True, name="mixflow-main-watch").start()
            super().run()

    class _ForkEndingWithStarter(multiprocessing.context.ForkContext):
        Process = _ProcessEndingWithStarter


@cache
def _controller() -> ThreadpoolController:
    return ThreadpoolController()
