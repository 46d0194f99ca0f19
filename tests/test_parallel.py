"""Cores, worker processes and the one-BLAS-thread block (mixflow.parallel)."""

import contextlib
import os
from pathlib import Path

import pytest
from threadpoolctl import threadpool_info

from mixflow import parallel


def _blas_threads():
    return [library["num_threads"] for library in threadpool_info() if library["user_api"] == "blas"]


def _cores_and_pid(_):
    return parallel.available_cores(), os.getpid()


def test_workers_see_one_core_so_their_passes_start_no_threads():
    results = parallel.parallel_map(_cores_and_pid, [(0,), (1,), (2,)], n_jobs=2)
    assert [cores for cores, _ in results] == [1, 1, 1]
    assert all(pid != os.getpid() for _, pid in results)
    assert parallel.available_cores() >= 1


def test_one_blas_thread_limits_and_restores_even_on_errors(blas_threads):
    before = _blas_threads()
    with pytest.raises(RuntimeError, match="inside"):
        with parallel.one_blas_thread():
            assert set(_blas_threads()) <= {1}
            with parallel.one_blas_thread():  # re-entrant in one thread
                pass
            raise RuntimeError("inside")
    assert _blas_threads() == before


def _threads_and_start_method(_):
    import multiprocessing

    return len(os.listdir("/proc/self/task")), multiprocessing.get_start_method(allow_none=True)


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads through /proc (Linux)")
def test_workers_are_not_forked_from_a_threaded_caller():
    """A caller with running threads (as after PyMC, nutpie or numba) does not pass them, or the locks they
    hold, to the workers: these come from a fork server (or are spawned), not from a fork of the caller."""
    import threading

    stop = threading.Event()
    busy = [threading.Thread(target=stop.wait) for _ in range(6)]
    for thread in busy:
        thread.start()
    try:
        caller_threads = len(os.listdir("/proc/self/task"))
        results = parallel.parallel_map(_threads_and_start_method, [(0,), (1,)], n_jobs=2)
    finally:
        stop.set()
        for thread in busy:
            thread.join()
    assert caller_threads >= 7
    for threads, method in results:
        assert method in ("forkserver", "spawn")
        assert threads < caller_threads  # at most BLAS's idle workers, which are fork-safe (pthread_atfork)


def test_an_unguarded_script_runs_a_parallel_bootstrap_once(tmp_path):
    """Workers start without the caller's main script: a script with no ``if __name__ == "__main__":``
    guard runs its analysis once, in the parent, and its parallel bootstrap completes."""
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "analysis.py"
    marker = tmp_path / "runs.txt"
    script.write_text(
        "import mixflow\n"
        f"open({str(marker)!r}, 'a').write('ran\\n')\n"
        "tree = mixflow.fit(mixflow.GaussianMixture(2), mixflow.load_dataset('faithful'), random_seed=1)\n"
        "tree = mixflow.bootstrap(tree, n_replicates=4, random_seed=1, n_jobs=2)\n"
        "print(tree['em/bootstrap/posterior'].sizes['draw'])\n")
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "4"
    assert marker.read_text() == "ran\n"


def _first_at_once_then_wait_for_go(folder, index):
    """Task 0 returns at once; task 1 waits for the caller's "go", written once task 0's result reached it."""
    import time

    deadline = time.monotonic() + 300
    while index and not Path(folder, "go").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return index if not index or Path(folder, "go").exists() else "never told to go"


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_results_come_in_task_order_as_soon_as_each_is_done(tmp_path, n_jobs):
    # the choice of K says each K's fit as it ends, not all of them once the last K is done
    results = parallel.parallel_results(_first_at_once_then_wait_for_go, [(str(tmp_path), i) for i in range(2)],
                                        n_jobs)
    assert next(results) == 0  # before task 1 ends: it waits for the "go" written only now
    (tmp_path / "go").touch()
    assert list(results) == [1]


def _sigint_handler(_):
    import signal

    return signal.getsignal(signal.SIGINT) is signal.SIG_DFL


def test_workers_end_on_ctrl_c_by_the_default_action():
    assert parallel.parallel_map(_sigint_handler, [(0,), (1,)], n_jobs=2) == [True, True]


_POOL_OF_SLEEPERS = """
import sys
from mixflow import parallel
sys.path.insert(0, sys.argv[2])
from test_parallel import _say_pid_then_sleep
try:
    parallel.parallel_map(_say_pid_then_sleep, [(sys.argv[1], i) for i in range(int(sys.argv[3]))], n_jobs=2)
except KeyboardInterrupt:
    print("interrupted")
"""


def _say_pid_then_sleep(folder, index):
    import time
    from pathlib import Path

    Path(folder, f"started-{index}").write_text(str(os.getpid()))
    time.sleep(600)


def _pool_of_sleepers(folder: Path, tasks: int):
    """A process running ``tasks`` ten-minute tasks on two workers, once both workers have started: it, their pids."""
    import subprocess
    import sys
    import time

    process = subprocess.Popen([sys.executable, "-c", _POOL_OF_SLEEPERS, str(folder), os.path.dirname(__file__),
                                str(tasks)], start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    def pids():  # a file is created empty and then written: only those written count
        return [int(text) for text in (path.read_text() for path in folder.glob("started-*")) if text]

    deadline = time.monotonic() + 120
    while len(pids()) < 2 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    return process, pids()


def test_ctrl_c_to_the_process_group_prints_no_worker_traceback(tmp_path):
    """A terminal's Ctrl-C reaches the workers too; they end without a KeyboardInterrupt traceback each, and the
    main process, interrupted, stops the pool at once (without waiting for the tasks)."""
    import signal

    process, _ = _pool_of_sleepers(tmp_path, 2)
    os.killpg(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert out.strip() == "interrupted", err
    assert "Traceback" not in err, err


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_an_interrupt_to_the_main_process_alone_stops_the_workers_and_their_queue(tmp_path):
    """kill, a batch scheduler or a supervisor signal the main process only: the pool's own exit would wait for
    every queued task (here four of ten minutes each on two workers); the workers are terminated instead."""
    import signal
    import time

    process, workers = _pool_of_sleepers(tmp_path, 4)
    assert len(workers) == 2
    os.kill(process.pid, signal.SIGINT)
    try:
        out, err = process.communicate(timeout=120)  # far less than a task's ten minutes
    finally:  # nothing left running when the test fails
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            for pid in workers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    assert out.strip() == "interrupted", err
    deadline = time.monotonic() + 60
    while any(_running(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_running(pid) for pid in workers)
    assert len(list(tmp_path.glob("started-*"))) == 2  # the queued tasks never started


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_workers_end_when_the_main_process_is_killed_outright(tmp_path):
    """SIGKILL (or the out-of-memory killer) leaves Python no chance to stop its pool: the workers, children of the
    fork server, would run their queued tasks and then wait forever. Each watches the main process and ends with it."""
    import signal
    import time

    process, workers = _pool_of_sleepers(tmp_path, 4)
    assert len(workers) == 2
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=60)
    deadline = time.monotonic() + 60
    while any(_running(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        assert not any(_running(pid) for pid in workers)
    finally:
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert len(list(tmp_path.glob("started-*"))) == 2  # the queued tasks never started


def _wait_for_go_or_fail(folder, index):
    """Task 0 waits for a "go" that never comes (then says it finished); task 1 fails at once."""
    import time

    if index == 1:
        raise ValueError("task 1 failed")
    deadline = time.monotonic() + 300
    while not Path(folder, "go").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    Path(folder, f"finished-{index}").touch()
    return index


def test_a_task_s_error_stops_the_pool_before_the_tasks_ahead_of_it_end(tmp_path):
    # the results come in task order, but an error need not wait for them: task 0 would run five minutes more
    with pytest.raises(ValueError, match="task 1 failed"):
        parallel.parallel_map(_wait_for_go_or_fail, [(str(tmp_path), i) for i in range(3)], n_jobs=2)
    assert not list(tmp_path.glob("finished-*"))


_IGNORING_POOL = """
import sys
from mixflow import parallel
sys.path.insert(0, sys.argv[2])
from test_parallel import _started_then_sleep_briefly
print(parallel.parallel_map(_started_then_sleep_briefly, [(sys.argv[1], i) for i in range(2)], n_jobs=2))
"""


def _started_then_sleep_briefly(folder, index):
    """Say it started, then wait for the test's "go" (sent after its Ctrl-C), so that it cannot end before it."""
    import time
    from pathlib import Path

    Path(folder, f"started-{index}").touch()
    deadline = time.monotonic() + 60
    while not Path(folder, "go").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return index


def test_a_run_started_with_ctrl_c_ignored_keeps_ignoring_it_in_its_workers(tmp_path):
    """A background job of a shell script starts with SIGINT ignored; its workers inherit that, and a Ctrl-C to
    the group ends nothing: the tasks finish and return."""
    import signal
    import subprocess
    import sys
    import time

    folder = os.path.dirname(__file__)
    process = subprocess.Popen([sys.executable, "-c", _IGNORING_POOL, str(tmp_path), folder], start_new_session=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("started-*"))) < 2 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    assert process.poll() is None, process.communicate()  # the tasks wait for "go": running, unless it failed
    os.killpg(process.pid, signal.SIGINT)
    time.sleep(0.5)  # the Ctrl-C reaches every process of the group, which ignores it
    (tmp_path / "go").touch()
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0 and out.strip() == "[0, 1]", err


_PYMC_CHAINS = """
import sys
from pathlib import Path

import numpy as np
import pymc.sampling.parallel

import mixflow

# only observes: each chain process's pid, in a file of its own, once PyMC has started it
started = pymc.sampling.parallel.ProcessAdapter.__init__
def say_pid(self, *args, **kwargs):
    started(self, *args, **kwargs)
    Path(sys.argv[1], f"chain-{self.chain}").write_text(str(self._process.pid))
pymc.sampling.parallel.ProcessAdapter.__init__ = say_pid

x = np.random.default_rng(0).normal(size=(40, 1))
mixflow.fit(mixflow.GaussianMixture(1), x, method=["em", "mcmc"], sampler="pymc", chains=2, cores=2, tune=10,
            draws=10**6, progressbar=False, posterior_predictive=False)
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_pymc_chain_processes_end_when_the_main_process_is_killed_outright(tmp_path):
    """PyMC's own chain processes (sampler="pymc", cores=2), forked from the main process, would wait forever for
    its next message once it is killed outright; they end with it, as mixflow's own workers do."""
    import signal
    import subprocess
    import sys
    import time

    log = tmp_path / "log"  # not a pipe: the chains, forked, would hold it open after the main process's end
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-c", _PYMC_CHAINS, str(tmp_path)], start_new_session=True,
                                   stdout=out, stderr=subprocess.STDOUT)

    def pids():  # a file is created empty and then written: only those written count
        return [int(text) for text in (path.read_text() for path in tmp_path.glob("chain-*")) if text]

    chains = []
    try:
        deadline = time.monotonic() + 600  # the fit before the chains and their compilation, on a loaded machine
        while len(chains := pids()) < 2 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.1)
        assert len(chains) == 2, log.read_text()
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
        deadline = time.monotonic() + 120
        while any(_running(pid) for pid in chains) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_running(pid) for pid in chains)
    finally:  # nothing left running when the test fails
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        for pid in chains:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
