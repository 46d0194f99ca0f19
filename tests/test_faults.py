"""Faults: failed, interrupted and terminated writes, permissions, full disks, and the command line's one
error path (every reproduction of issue 15's "The command line" section)."""

import contextlib
import errno
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

import mixflow
from mixflow import atomic
from mixflow.atomic import atomic_write
from mixflow.wording import agreeing, counted

ROOT = Path(__file__).resolve().parents[1]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.fixture
def umask():
    def set_umask(value):
        previous.append(os.umask(value))

    previous = []
    yield set_umask
    for value in reversed(previous):
        os.umask(value)


# -- atomic writes -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_honour_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    path = atomic_write(tmp_path / "table.csv", lambda p: p.write_text("a\n1\n"))
    assert path.stat().st_mode & 0o777 == mode


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "report.html"
    path.write_text("previous")

    def fails(temporary):
        temporary.write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        atomic_write(path, fails)
    assert path.read_text() == "previous"
    assert _leftovers(tmp_path) == []


def test_an_empty_or_unverified_file_is_refused(tmp_path):
    path = tmp_path / "figure.png"
    path.write_text("previous")
    with pytest.raises(OSError, match="empty or unreadable"):
        atomic_write(path, lambda p: None)
    with pytest.raises(OSError, match="empty or unreadable"):
        atomic_write(path, lambda p: p.write_text("x"), verify=lambda p: False)
    assert path.read_text() == "previous"
    assert _leftovers(tmp_path) == []


def test_a_device_node_or_named_pipe_is_never_replaced_by_a_file(tmp_path):
    # the rename put a regular file in place of whatever the path named: mixflow.save(tree, "/dev/full") as root
    # replaced the system's /dev/full
    pipe = tmp_path / "report.html"
    os.mkfifo(pipe)
    with pytest.raises(OSError, match=r"it is a named pipe, not a file: .*choose a file name") as raised:
        atomic_write(pipe, lambda p: p.write_text("x"))
    assert raised.value.filename == str(pipe) and Path(pipe).is_fifo()
    device = tmp_path / "full.nc"
    try:  # a private copy of /dev/full (root only)
        os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 7))
    except PermissionError:
        device = None
    if device is not None:
        with pytest.raises(OSError, match=r"it is a character device, not a file"):
            atomic_write(device, lambda p: p.write_text("x"))
        assert device.is_char_device()
    assert _leftovers(tmp_path) == []
    with pytest.raises(IsADirectoryError, match="it is a directory"):
        atomic_write(tmp_path, lambda p: p.write_text("x"))


def test_a_symbolic_link_is_written_through_and_kept(tmp_path):
    (tmp_path / "real").mkdir()
    link = tmp_path / "table.csv"
    link.symlink_to(tmp_path / "real" / "table.csv")
    assert atomic_write(link, lambda p: p.write_text("a\n1\n")) == link
    assert link.is_symlink() and (tmp_path / "real" / "table.csv").read_text() == "a\n1\n"


def test_an_interrupt_inside_hdf5_work_is_delivered_when_it_ends(tmp_path, faithful, monkeypatch):
    # HDF5's callbacks and destructors swallow a KeyboardInterrupt ("Exception ignored in ..."): a Ctrl-C during
    # mixflow.save was lost in 8 of 30 tries, save returning as if none had come
    from mixflow.container import io

    tree = mixflow.fit(mixflow.GaussianMixture(2), faithful[["eruptions", "waiting"]], random_seed=1, n_init=1)
    write = io._write_bytes

    def swallowing(content, path):  # an interrupt arriving where HDF5 would swallow it
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        write(content, path)

    monkeypatch.setattr(io, "_write_bytes", swallowing)
    with pytest.raises(KeyboardInterrupt):
        mixflow.save(tree, tmp_path / "fit.nc")
    assert mixflow.load(tmp_path / "fit.nc").attrs["model"] == tree.attrs["model"]  # written whole, then said
    assert _leftovers(tmp_path) == []


def test_free_space_is_checked_before_writing(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda path: type("usage", (), {"free": 1000})())
    called = []
    with pytest.raises(OSError, match=r"not enough free space to write it \(about 1\.3 MB needed, 0\.0 MB free\)"):
        atomic_write(tmp_path / "x.nc", called.append, expected_bytes=200_000)
    assert called == [] and _leftovers(tmp_path) == []


def test_save_checks_free_space_and_keeps_the_previous_container(tmp_path, faithful, monkeypatch):
    tree = mixflow.fit(mixflow.GaussianMixture(2), faithful[["eruptions", "waiting"]], random_seed=1, n_init=1)
    path = mixflow.save(tree, tmp_path / "fit.nc")
    before = path.read_bytes()
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda p: type("usage", (), {"free": 10})())
    with pytest.raises(OSError, match="not enough free space") as caught:
        mixflow.save(tree, path)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(path)
    assert path.read_bytes() == before and _leftovers(tmp_path) == []


_SAVE_UNDER_A_SIZE_LIMIT = """
import errno, resource, sys
import numpy as np, mixflow
tree = mixflow.fit(mixflow.GaussianMixture(2), np.random.default_rng(0).normal(size=(200, 2)), random_seed=1, n_init=1)
path = mixflow.save(tree, sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    mixflow.save(tree, path)
except OSError as error:
    print("errno", error.errno == errno.EFBIG, error.filename == str(path))
"""


def test_save_under_a_file_size_limit_is_an_oserror_not_a_crash(tmp_path):
    """A write that fails on disk (here a file-size limit, EFBIG; a full disk alike) inside HDF5 crashes the
    process from a destructor; the container is made in memory and its bytes written by Python, so the failure
    is an OSError naming the file, the previous container stays, and no temporary is left."""
    path = tmp_path / "fit.nc"
    done = subprocess.run([sys.executable, "-c", _SAVE_UNDER_A_SIZE_LIMIT, str(path)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["errno", "True", "True"]
    assert mixflow.load(path)["em"].attrs["n_iter"] > 0 and _leftovers(tmp_path) == []


def test_save_honours_the_umask(tmp_path, faithful, umask):
    umask(0o022)
    tree = mixflow.fit(mixflow.GaussianMixture(1), faithful[["eruptions"]], random_seed=1, n_init=1)
    assert mixflow.save(tree, tmp_path / "fit.nc").stat().st_mode & 0o777 == 0o644


_TERMINATED_WRITE = """
import os, signal, sys
from pathlib import Path
from mixflow.atomic import atomic_write

def write(temporary):
    temporary.write_bytes(b"x" * 1_000_000)
    os.kill(os.getpid(), signal.SIGTERM)
    temporary.write_bytes(b"never")

Path(sys.argv[1], "out.nc").write_text("previous")
atomic_write(Path(sys.argv[1], "out.nc"), write)
"""


def test_sigterm_during_a_write_removes_the_temporary(tmp_path):
    done = subprocess.run([sys.executable, "-c", _TERMINATED_WRITE, str(tmp_path)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    assert (tmp_path / "out.nc").read_text() == "previous"
    assert _leftovers(tmp_path) == []


# -- the command line: one error path ------------------------------------------------------------------------
SMALL = """
name = "small"
seed = 1

[data]
dataset = "faithful"
columns = ["eruptions", "waiting"]

[[models]]
n_components = 2

[methods.em]
n_init = 1

[output]
figures = false
report = false
"""


@pytest.fixture
def workflow_file(tmp_path):
    path = tmp_path / "small.toml"
    path.write_text(SMALL)
    return path


def test_a_progress_reader_that_stops_early_does_not_stop_the_run(tmp_path, workflow_file):
    """`mixflow run wf.toml 2>&1 | head -1`: the progress' pipe breaks once its reader has gone; the run goes on
    (its progress in run.log) and writes everything, rather than stop with status 0 and nothing written."""
    import subprocess
    import sys

    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "mixflow.cli", "run", str(workflow_file), "--out", str(out)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    process.stdout.close()  # the reader is gone before the first line: every line written breaks the pipe
    assert process.wait(timeout=600) == 0
    assert sorted(path.name for path in out.iterdir()) == ["gaussian-full-k2-comparison.csv", "gaussian-full-k2.nc",
                                                           "run.log", "workflow.json"]
    assert "wrote 4 files to" in (out / "run.log").read_text(encoding="utf-8")  # the progress went on, logged


def _cli(capsys, *argv):
    from mixflow.cli import main

    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.err


def _no_fit(monkeypatch):
    import mixflow.workflow.run

    def fails(*args, **kwargs):
        raise AssertionError("fitted before the output directory was checked")

    monkeypatch.setattr(mixflow.workflow.run, "fit", fails)


def _one_error_line(err: str, command: str = "run") -> str:
    """The one error line, last on stderr after any progress messages, and no traceback."""
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("mixflow")]
    assert len(errors) == 1 and lines[-1] == errors[0] and errors[0].startswith(f"mixflow {command}: error: "), err
    assert "Traceback" not in err
    return errors[0]


def test_out_is_an_existing_file(tmp_path, workflow_file, capsys, monkeypatch):
    _no_fit(monkeypatch)
    (tmp_path / "f").touch()
    status, err = _cli(capsys, "run", workflow_file, "--out", tmp_path / "f")
    assert status == 2
    assert "f': exists and is not a directory; choose another --out" in _one_error_line(err)


def test_out_is_a_link_to_nothing(tmp_path, workflow_file, capsys, monkeypatch):
    # a dangling link was said to be "a file of that name exists"
    _no_fit(monkeypatch)
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    status, err = _cli(capsys, "run", workflow_file, "--out", tmp_path / "link")
    assert status == 2
    assert _one_error_line(err).endswith(f"link': is a symbolic link to '{tmp_path / 'gone'}', which does not exist; "
                                         "create that directory or choose another --out")


def test_out_under_a_file(tmp_path, workflow_file, capsys, monkeypatch):
    _no_fit(monkeypatch)
    (tmp_path / "f").touch()
    status, err = _cli(capsys, "run", workflow_file, "--out", tmp_path / "f" / "sub")
    assert status == 2
    assert "sub': cannot write the output directory: Not a directory" in _one_error_line(err)


def test_out_that_cannot_be_created(workflow_file, capsys, monkeypatch):
    _no_fit(monkeypatch)
    status, err = _cli(capsys, "run", workflow_file, "--out", "/proc/mixflow-cannot-be-here")
    assert status == 2
    assert "'/proc/mixflow-cannot-be-here': cannot write the output directory" in _one_error_line(err)


def test_read_only_out_is_refused_before_fitting(tmp_path, workflow_file, capsys, monkeypatch):
    import mixflow.workflow.run

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "out" / "tmpxyz"))

    _no_fit(monkeypatch)
    monkeypatch.setattr(mixflow.workflow.run.tempfile, "TemporaryFile", read_only)
    status, err = _cli(capsys, "run", workflow_file, "--out", tmp_path / "out")
    assert status == 2
    line = _one_error_line(err)
    assert f"'{tmp_path / 'out'}': cannot write the output directory: Read-only file system" in line
    assert "writable file system" in line
    assert not (tmp_path / "out").exists()  # the directory it created for nothing is gone again


def test_a_run_that_wrote_nothing_removes_the_parent_directories_it_created(tmp_path, workflow_file, capsys,
                                                                           monkeypatch):
    # a failed run removed the --out it created but left the parents it had created for it
    import mixflow.workflow.run

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "a" / "b" / "out" / "x.nc"))

    monkeypatch.setattr(mixflow.workflow.run, "fit", full)
    (tmp_path / "kept").mkdir()
    for out in (tmp_path / "a" / "b" / "out", tmp_path / "kept" / "c" / "out"):
        status, err = _cli(capsys, "run", workflow_file, "--out", out)
        assert status == 2 and "No space left on device" in _one_error_line(err)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["kept"]  # existing before: kept
    assert not any((tmp_path / "kept").iterdir())


def _run_with_the_disk_full_at_figure(number, tmp_path, workflow_file, capsys, monkeypatch) -> tuple[int, str]:
    """The workflow run with figures, the disk full when the ``number``-th figure is written (half of it written)."""
    write_bytes, figures = Path.write_bytes, []

    def full(self, data):
        if self.parent.name != "figures":
            return write_bytes(self, data)
        figures.append(self)
        if len(figures) < number:
            return write_bytes(self, data)
        write_bytes(self, data[:12])
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    workflow_file.write_text(SMALL.replace("figures = false", "figures = true"))
    monkeypatch.setattr(Path, "write_bytes", full)
    status, err = _cli(capsys, "run", workflow_file, "--out", tmp_path / "out")
    return status, _one_error_line(err)


def test_full_disk_while_writing_figures(tmp_path, workflow_file, capsys, monkeypatch):
    status, line = _run_with_the_disk_full_at_figure(1, tmp_path, workflow_file, capsys, monkeypatch)
    assert status == 2
    assert "figures/gaussian-full-k2-data.png': No space left on device; free some space" in line
    assert _leftovers(tmp_path / "out" / "figures") == []
    # the files completed before the failure stay, and are said, with the log that ends on the failure
    out = tmp_path / "out"
    kept = ["gaussian-full-k2.nc", "gaussian-full-k2-comparison.csv", "run.log"]
    assert f"; the 4 files completely written before the error are kept ({out / kept[0]}, " in line
    assert line.endswith(f"{out / 'run.log'}, {out / 'workflow.json'})")  # the claim is said with the files it lists
    # with the record that claims the directory for its workflow, listing them
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == sorted([*kept, "workflow.json"])
    assert sorted(json.loads((out / "workflow.json").read_text())["outputs"]) == sorted([*kept, "workflow.json"])
    assert "failed: " in (out / "run.log").read_text().strip().splitlines()[-1]


def test_figures_written_before_the_disk_filled_are_said_to_be_kept(tmp_path, workflow_file, capsys, monkeypatch):
    # the figures already written stayed on disk but were missing from the list of files kept
    status, line = _run_with_the_disk_full_at_figure(2, tmp_path, workflow_file, capsys, monkeypatch)
    first = tmp_path / "out" / "figures" / "gaussian-full-k2-data.png"
    assert status == 2 and first.is_file() and "the 5 files completely written before the error are kept" in line
    assert str(first) in line and _leftovers(tmp_path / "out" / "figures") == []


def test_a_rerun_that_fills_the_disk_names_the_file_where_it_was_to_go(tmp_path, workflow_file, capsys,
                                                                          monkeypatch):
    # a rerun writes into a staging folder beside the earlier run's files, which its failure moves to run-failed/:
    # the error named the staging path, gone by the time it was read
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("the analyst's")  # an existing directory: the run stages its files
    status, line = _run_with_the_disk_full_at_figure(1, tmp_path, workflow_file, capsys, monkeypatch)
    assert status == 2
    assert f"'{tmp_path / 'out' / 'figures' / 'gaussian-full-k2-data.png'}': No space left on device" in line
    assert ".mixflow-run" not in line.split(": No space left")[0]


def test_a_rerun_sets_aside_what_an_earlier_run_wrote_and_it_did_not(tmp_path, workflow_file, capsys):
    # they were removed: a K=3 fit's NUTS draws, say, gone with a rerun at K=2
    out = tmp_path / "out"
    workflow_file.write_text(SMALL.replace("n_components = 2", "n_components = 3"))
    assert _cli(capsys, "run", workflow_file, "--out", out)[0] == 0
    earlier = {name: (out / name).read_bytes() for name in ("gaussian-full-k3.nc", "workflow.json", "run.log")}
    (out / "notes.txt").write_text("the analyst's own file")  # not the run's: never touched
    workflow_file.write_text(SMALL)
    status, err = _cli(capsys, "run", workflow_file, "--out", out)
    assert status == 0
    [aside] = [p for p in out.iterdir() if p.name.startswith("superseded-")]
    assert sorted(p.name for p in out.iterdir() if p != aside) == [
        "gaussian-full-k2-comparison.csv", "gaussian-full-k2.nc", "notes.txt", "run.log", "workflow.json"]
    assert sorted(p.name for p in aside.iterdir()) == ["gaussian-full-k3-comparison.csv", "gaussian-full-k3.nc",
                                                        "run.log", "workflow.json"]
    assert {name: (aside / name).read_bytes() for name in earlier} == earlier  # as they were, with their record
    said = (f"moved 2 files an earlier run wrote to {out} that this run did not write again into {aside} (with "
            "that run's workflow.json and run.log): gaussian-full-k3.nc, gaussian-full-k3-comparison.csv")
    assert said in err and said in (out / "run.log").read_text()
    outputs = json.loads((out / "workflow.json").read_text())["outputs"]
    assert outputs == ["gaussian-full-k2.nc", "gaussian-full-k2-comparison.csv", "workflow.json", "run.log"]
    # a workflow of another name is refused: its run replaced this one's record (workflow.json, run.log), and left
    # this one's files beside it unlisted
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    workflow_file.write_text(SMALL.replace('name = "small"', 'name = "other"').replace("n_components = 2",
                                                                                      "n_components = 3"))
    status, err = _cli(capsys, "run", workflow_file, "--out", out)
    assert status == 2 and _one_error_line(err).endswith(
        f"'{out / 'workflow.json'}': holds the results of another workflow, 'small' (this one is 'other'), whose "
        "record this run would replace; nothing was fitted: choose another --out, or move them away")
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    # another tool's workflow.json, and the files it names, are never removed
    (out / "gaussian-full-k3.nc").write_bytes(before["gaussian-full-k2.nc"])
    (out / "workflow.json").write_text(json.dumps({"outputs": "gaussian-full-k3.nc"}))
    (out / "g").write_text("")
    workflow_file.write_text(SMALL)
    assert _cli(capsys, "run", workflow_file, "--out", out)[0] == 0
    assert {"g", "gaussian-full-k3.nc", "notes.txt"} <= {p.name for p in out.iterdir()}


def test_a_folder_where_a_rerun_writes_a_file_is_refused_not_removed(tmp_path, workflow_file, capsys):
    # a folder named like an output, the analyst's files in it, was renamed aside and removed
    out = tmp_path / "out"
    (out / "gaussian-full-k2.nc").mkdir(parents=True)
    (out / "gaussian-full-k2.nc" / "mine.txt").write_text("the analyst's own file")
    status, err = _cli(capsys, "run", workflow_file, "--out", out)
    assert status == 2
    # refused before anything is fitted, not once the run moves its files in (after hours of NUTS, say)
    assert _one_error_line(err, "run") == (
        f"mixflow run: error: '{out / 'gaussian-full-k2.nc'}': is a directory where this run writes a file; nothing "
        "was fitted: move it away, or choose another --out")
    assert (out / "gaussian-full-k2.nc" / "mine.txt").read_text() == "the analyst's own file"
    assert sorted(p.name for p in out.iterdir()) == ["gaussian-full-k2.nc"] and "fitting" not in err
    # a folder made while the run fits is refused as the files move in: all or none, this run's kept apart
    from mixflow.workflow import run as runner

    (out / "gaussian-full-k2.nc" / "mine.txt").unlink()
    (out / "gaussian-full-k2.nc").rmdir()
    (out / "notes.txt").write_text("an earlier file: the run writes beside it, then moves its files in")
    made = runner._run_models

    def made_meanwhile(workflow, into, progress, written):
        made(workflow, into, progress, written)
        (out / "gaussian-full-k2.nc").mkdir()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner, "_run_models", made_meanwhile)
        status, err = _cli(capsys, "run", workflow_file, "--out", out)
    assert status == 2 and "nothing was replaced: move it away, or choose another --out; the " in err
    assert (out / "run-failed" / "gaussian-full-k2.nc").is_file() and (out / "gaussian-full-k2.nc").is_dir()


def test_report_into_a_read_only_directory(tmp_path, workflow_file, capsys, monkeypatch, no_report_plots):
    assert _cli(capsys, "run", workflow_file, "--out", tmp_path / "out")[0] == 0
    results = tmp_path / "out" / "gaussian-full-k2.nc"
    for target in ("/sys/r.html", "/proc/r.html"):
        status, err = _cli(capsys, "report", results, "--out", target)
        assert status == 2
        assert f"'{target}':" in _one_error_line(err, "report")
    read_only = tmp_path / "ro"
    read_only.mkdir()

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(read_only / ".r.html.abc.tmp"))

    monkeypatch.setattr(atomic.tempfile, "mkstemp", refuse)
    status, err = _cli(capsys, "report", results, "--out", read_only / "r.html")
    assert status == 2
    assert f"'{read_only / 'r.html'}': Permission denied; choose a location you may write to" in \
        _one_error_line(err, "report")


def test_report_into_a_read_only_directory_given_by_a_relative_path(tmp_path, workflow_file, capsys, monkeypatch,
                                                                    no_report_plots):
    assert _cli(capsys, "run", workflow_file, "--out", tmp_path / "out")[0] == 0
    (tmp_path / "ro").mkdir()
    monkeypatch.chdir(tmp_path)
    real_open = os.open

    def refuse_temporaries(path, *args, **kwargs):  # as a directory without write permission does
        if str(path).endswith(".tmp"):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse_temporaries)
    status, err = _cli(capsys, "report", "out/gaussian-full-k2.nc", "--out", "ro/r.html")
    assert status == 2
    assert _one_error_line(err, "report") == ("mixflow report: error: --out: 'ro/r.html': Permission denied; choose "
                                              "a location you may write to")


def test_interrupt_during_compilation_is_one_line(tmp_path, workflow_file, capsys, monkeypatch):
    import mixflow.workflow.run

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(mixflow.workflow.run, "fit", interrupted)
    status, err = _cli(capsys, "run", workflow_file, "--out", tmp_path / "out")
    assert status == 130
    assert _one_error_line(err).endswith("interrupted; no output was written; no half-written file was left")
    assert not (tmp_path / "out").exists()


def test_the_command_line_starts_without_the_numerical_stack():
    """Only what starts the command line loads before its error handling: a Ctrl-C in the first moment, while the
    numerical libraries load, then falls inside it (next test) instead of printing a traceback."""
    code = ("import sys, mixflow.cli, mixflow\n"
            "print(sorted(m for m in ('numpy', 'pandas', 'scipy', 'xarray', 'pymc', 'mixflow.fitting') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_interrupt_while_the_libraries_load_is_one_line(tmp_path, workflow_file, capsys, monkeypatch):
    import importlib.abc

    class Interrupting(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "mixflow.workflow.run":
                raise KeyboardInterrupt

    monkeypatch.delitem(sys.modules, "mixflow.workflow.run", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Interrupting(), *sys.meta_path])
    status, err = _cli(capsys, "run", workflow_file, "--out", tmp_path / "out")
    assert status == 130
    assert _one_error_line(err).endswith("interrupted; no output was written; no half-written file was left")


def test_public_names_load_on_first_use():
    code = ("import sys, mixflow\n"
            "before = 'mixflow.fitting' in sys.modules\n"
            "model = mixflow.PoissonMixture(2)\n"
            "print(before, 'mixflow.fitting' in sys.modules, mixflow.engines.em.__name__, "
            "sorted(mixflow.__all__) == sorted(n for n in dir(mixflow) if n in mixflow.__all__))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False True mixflow.engines.em True"
    # the registry of families is complete however little was imported before it is read
    code = "from mixflow.families.base import family_names\nprint(' '.join(sorted(family_names())))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["gaussian", "grouped_gaussian", "poisson", "regression", "soft_kmeans"]


def test_interrupt_after_a_model_lists_what_was_saved(tmp_path, workflow_file, capsys, monkeypatch):
    import mixflow.workflow.run

    text = SMALL.replace("[methods.em]", "[[models]]\nn_components = 3\n\n[methods.em]")
    workflow_file.write_text(text)
    real_fit, calls = mixflow.workflow.run.fit, []

    def second_interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(mixflow.workflow.run, "fit", second_interrupted)
    status, err = _cli(capsys, "run", workflow_file, "--out", tmp_path / "out")
    assert status == 130
    line = _one_error_line(err)
    assert "the 4 files completely written before it are kept" in line and "gaussian-full-k2.nc" in line
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["gaussian-full-k2-comparison.csv",
                                                                    "gaussian-full-k2.nc", "run.log", "workflow.json"]
    assert (tmp_path / "out" / "run.log").read_text().rstrip().endswith("interrupted")


def test_an_interrupted_rerun_leaves_the_earlier_run_as_it_was(tmp_path, workflow_file, capsys, monkeypatch):
    # a rerun into an earlier run's directory replaced its files one by one: interrupted after the first model,
    # the directory held that model's new container beside the earlier report and workflow.json (whose hash no
    # longer matched it). The rerun writes in a folder of its own and moves its files in once it completes
    import mixflow.workflow.run

    text = SMALL.replace("[methods.em]", "[[models]]\nn_components = 3\n\n[methods.em]")
    workflow_file.write_text(text)
    out = tmp_path / "out"
    assert _cli(capsys, "run", workflow_file, "--out", out)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    real_fit, calls = mixflow.workflow.run.fit, []

    def second_interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_fit(*args, **{**kwargs, "random_seed": 7})

    monkeypatch.setattr(mixflow.workflow.run, "fit", second_interrupted)
    status, err = _cli(capsys, "run", workflow_file, "--out", out)
    assert status == 130
    kept = out / "run-interrupted"
    assert _one_error_line(err).endswith(
        f"interrupted; the 3 files completely written before it are kept ({kept / 'gaussian-full-k2.nc'}, "
        f"{kept / 'gaussian-full-k2-comparison.csv'}, {out / 'run-interrupted.log'}); no half-written file was left")
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != "run-interrupted.log"} == \
        before
    assert sorted(p.name for p in kept.iterdir() if not p.name.startswith(".")) == [
        "gaussian-full-k2-comparison.csv", "gaussian-full-k2.nc"]
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no working folder left
    monkeypatch.setattr(mixflow.workflow.run, "fit", real_fit)
    assert _cli(capsys, "run", workflow_file, "--out", out)[0] == 0  # a run that completes clears the attempt away
    assert not kept.exists() and not (out / "run-interrupted.log").exists()
    assert sorted(p.name for p in out.iterdir()) == sorted(before)


def test_a_rerun_s_files_are_moved_in_whole_and_its_own_records_only(tmp_path, workflow_file, capsys, monkeypatch):
    # review of the staged rerun: (1) a file written outside the output directory (NUTS's compiled-graph cache)
    # was recorded as an output, and the rerun failed moving it in ("internal error"), its results deleted; (2) a
    # Ctrl-C while the files moved in left some of each run's, and a message naming files that were not there;
    # (3) a folder named run-failed that mixflow did not make was removed; (4) a figures folder on another file
    # system failed every rerun (a rename cannot cross file systems)
    import mixflow.workflow.run

    out = tmp_path / "out"
    workflow_file.write_text(SMALL.replace("figures = false", "figures = true"))
    assert _cli(capsys, "run", workflow_file, "--out", out)[0] == 0
    (out / "run-failed").mkdir()
    (out / "run-failed" / "notes.txt").write_text("mine")
    real_fit, real_replace = mixflow.workflow.run.fit, os.replace

    def fit_writing_elsewhere(*args, **kwargs):
        atomic_write(tmp_path / "cache.bin", lambda p: p.write_bytes(b"graphs"))
        return real_fit(*args, **kwargs)

    def moving_in_interrupted(source, target):
        real_replace(source, target)
        if Path(target).suffix == ".nc" and ".mixflow-run-" in str(source) and ".mixflow-run-" not in str(target):
            os.kill(os.getpid(), signal.SIGINT)  # held until every file is in place

    monkeypatch.setattr(mixflow.workflow.run, "fit", fit_writing_elsewhere)
    monkeypatch.setattr(mixflow.workflow.run.os, "replace", moving_in_interrupted)
    status, err = _cli(capsys, "run", workflow_file, "--out", out)
    assert status == 130
    record = json.loads((out / "workflow.json").read_text())
    assert "cache.bin" not in err and not any("cache" in name for name in record["outputs"])
    names = record["outputs"]
    assert _one_error_line(err).endswith(f"interrupted; the {counted(len(names), 'file')} completely written before "
                                         f"it {agreeing(len(names), 'is', 'are')} kept ("
                                         + ", ".join(str(out / name) for name in names)
                                         + "); no half-written file was left")
    assert all((out / name).is_file() for name in names) and not (out / "run.log.partial").exists()
    assert (out / "run-failed" / "notes.txt").read_text() == "mine"
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
    # a working folder of a run killed outright (its process gone) is removed by the next run that completes; one
    # of a process still running, or not marked as mixflow's, is left
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    for name, marked in ((f".mixflow-run-{dead.stdout.strip()}-0a1b2c3d", True),
                         (f".mixflow-run-{os.getpid()}-0a1b2c3d", True), (".mixflow-run-1-notmine", False)):
        (out / name).mkdir()
        (out / name / ("x.nc" if not marked else ".mixflow-run")).write_text("small")

    def across_file_systems(source, target):
        if ".mixflow-run-" in str(source) and ".mixflow-run-" not in str(target):  # moving in, not writing
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_replace(source, target)

    monkeypatch.setattr(mixflow.workflow.run, "fit", real_fit)
    monkeypatch.setattr(mixflow.workflow.run.os, "replace", across_file_systems)
    assert _cli(capsys, "run", workflow_file, "--out", out)[0] == 0
    assert sorted(json.loads((out / "workflow.json").read_text())["outputs"]) == sorted(names)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == sorted(
        [f".mixflow-run-{os.getpid()}-0a1b2c3d", ".mixflow-run-1-notmine"])


@pytest.mark.parametrize("refused", ["gaussian-full-k2.nc", "workflow.json"])
def test_a_rerun_whose_file_cannot_replace_the_earlier_one_puts_everything_back(tmp_path, workflow_file, capsys,
                                                                                  monkeypatch, refused):
    """A file of the earlier run that may not be replaced (immutable, say): the files are moved in all or none."""
    import mixflow.workflow.run

    out = tmp_path / "out"
    assert _cli(capsys, "run", workflow_file, "--out", out)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    real_replace = os.replace

    def refusing(source, target):
        if Path(source) == out / refused:  # renaming the earlier run's file (aside, or over it) is refused
            raise PermissionError(errno.EPERM, "Operation not permitted", str(source))
        real_replace(source, target)

    monkeypatch.setattr(mixflow.workflow.run.os, "replace", refusing)
    workflow_file.write_text(SMALL.replace("seed = 1", "seed = 2"))
    status, err = _cli(capsys, "run", workflow_file, "--out", out)
    assert status == 2
    line = _one_error_line(err)
    assert line.startswith(f"mixflow run: error: '{out / refused}': Operation not permitted; this run's file could "
                           "not take its place: make it replaceable, or choose another --out; the ")
    kept = out / "run-failed"
    assert f"{kept / 'gaussian-full-k2.nc'}" in line and f"{out / 'run-failed.log'}" in line
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != "run-failed.log"} == before
    assert sorted(p.name for p in kept.iterdir() if not p.name.startswith(".")) == sorted(
        name for name in before if name != "run.log")
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no working folder, no file set aside
    assert json.loads((kept / "workflow.json").read_text())["config"]["seed"] == 2


def test_a_rerun_in_place_leaves_a_folder_of_the_users_where_an_earlier_output_was(tmp_path, workflow_file, capsys):
    """An earlier output that is now a directory (of the user's, say) is not the earlier run's file: it was removed
    with what it held; now the rerun is refused there, its own files kept apart and the earlier run's as they were."""
    out = tmp_path / "out"
    assert _cli(capsys, "run", workflow_file, "--out", out)[0] == 0
    earlier = (out / "gaussian-full-k2.nc").read_bytes()
    (out / "workflow.json").unlink()
    (out / "workflow.json").mkdir()
    (out / "workflow.json" / "notes.txt").write_text("mine")
    workflow_file.write_text(SMALL.replace("seed = 1", "seed = 2"))
    status, err = _cli(capsys, "run", workflow_file, "--out", out)
    assert status == 2 and "workflow.json': is a directory where this run writes a file; nothing was fitted" in \
        _one_error_line(err)
    assert (out / "workflow.json" / "notes.txt").read_text() == "mine"
    assert (out / "gaussian-full-k2.nc").read_bytes() == earlier  # the earlier run's files stay
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [] and not (out / "run-failed").exists()


@pytest.mark.parametrize("what", ["file", "link to nothing"])
def test_a_file_where_the_run_makes_its_figures_folder_is_refused_before_fitting(tmp_path, workflow_file, capsys,
                                                                                 monkeypatch, what):
    # the run fitted every model, then failed making the folder: "[Errno 17] File exists: 'out/figures'"
    _no_fit(monkeypatch)
    out = tmp_path / "out"
    out.mkdir()
    if what == "file":
        (out / "figures").write_text("the analyst's")
    else:
        (out / "figures").symlink_to(tmp_path / "gone")
    workflow_file.write_text(SMALL.replace("figures = false", "figures = true"))
    status, err = _cli(capsys, "run", workflow_file, "--out", out)
    assert status == 2 and _one_error_line(err).endswith(
        f"'{out / 'figures'}': is not a directory where this run makes the folder of its figures; nothing was "
        "fitted: move it away, or choose another --out")
    assert [p.name for p in out.iterdir()] == ["figures"]  # no working folder, no log
    assert what != "file" or (out / "figures").read_text() == "the analyst's"
    # without figures the run makes no such folder: the file is no obstacle
    workflow_file.write_text(SMALL)
    monkeypatch.undo()
    assert _cli(capsys, "run", workflow_file, "--out", out)[0] == 0


def test_a_rerun_that_cannot_start_its_working_folder_names_the_directory_and_leaves_none(tmp_path, workflow_file,
                                                                                         capsys, monkeypatch):
    # `ulimit -f 0` into earlier results: "[Errno 27] File too large", naming nothing, and a .mixflow-run-* left
    out = tmp_path / "out"
    assert _cli(capsys, "run", workflow_file, "--out", out)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    write_text = Path.write_text

    def limited(self, *args, **kwargs):
        if self.name == ".mixflow-run":  # the working folder's mark, its first file
            raise OSError(errno.EFBIG, "File too large")  # as a failed write() raises it: no file name
        return write_text(self, *args, **kwargs)

    _no_fit(monkeypatch)
    monkeypatch.setattr(Path, "write_text", limited)
    status, err = _cli(capsys, "run", workflow_file, "--out", out)
    assert status == 2 and _one_error_line(err).endswith(
        f"'{out}': cannot write in the output directory: File too large; a file-size limit was reached (ulimit -f, "
        "or the file system's largest file); raise it or choose another location")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no working folder, the results as they were


def test_a_log_that_could_not_be_written_is_not_said_to_be_kept(tmp_path, workflow_file, capsys, monkeypatch):
    # into an existing empty folder, `ulimit -f 0` kept an empty run.log, said to be "completely written"
    out = tmp_path / "out"
    out.mkdir()
    open_path = Path.open

    def limited(self, mode="r", *args, **kwargs):
        if self.name == "run.log.partial" and mode.startswith("a"):  # appending the first line fails
            raise OSError(errno.EFBIG, "File too large")
        return open_path(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", limited)
    status, err = _cli(capsys, "run", workflow_file, "--out", out)
    line = _one_error_line(err)
    assert status == 2 and line.endswith(f"'{out / 'run.log.partial'}': File too large; the run's log could not be "
                                         "written (raise the file-size limit, or choose another --out)")
    assert "kept" not in line and list(out.iterdir()) == []


@pytest.mark.parametrize(("number", "said"), [
    (errno.EFBIG, "File too large; a file-size limit was reached (ulimit -f, or the file system's largest file); "
                  "raise it or choose another location"),
    (errno.ENOSPC, "No space left on device; free some space or choose another location")])
def test_a_rerun_whose_container_fills_the_disk_names_it_in_its_log(tmp_path, workflow_file, capsys, monkeypatch,
                                                                     number, said):
    # the log said "failed: [Errno 27] File too large: 'out/gaussian-full-k2.nc' -> None"
    import mixflow.workflow.run

    out = tmp_path / "out"
    assert _cli(capsys, "run", workflow_file, "--out", out)[0] == 0

    def full(tree, path):
        raise OSError(number, os.strerror(number), str(path))

    monkeypatch.setattr(mixflow.workflow.run, "save", full)
    workflow_file.write_text(SMALL.replace("seed = 1", "seed = 2"))
    status, err = _cli(capsys, "run", workflow_file, "--out", out)
    line = _one_error_line(err)
    assert status == 2 and line.startswith(f"mixflow run: error: '{out / 'gaussian-full-k2.nc'}': {said}; the 1 file "
                                           f"completely written before the error is kept ({out / 'run-failed.log'})")
    log = (out / "run-failed.log").read_text().strip().splitlines()[-1]
    assert log.endswith(f"failed: '{out / 'gaussian-full-k2.nc'}': {said}") and "None" not in log
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


def test_a_log_that_fills_with_the_failure_keeps_the_error_and_leaves_no_temporary(tmp_path, workflow_file, capsys,
                                                                                   monkeypatch):
    # the failure's own log line, failing on the full disk too, replaced the container's error and left the
    # working folder with its files
    import mixflow.workflow.run

    out = tmp_path / "out"
    assert _cli(capsys, "run", workflow_file, "--out", out)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    full, open_path = [], Path.open

    def save(tree, path):
        full.append(path)
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    def limited(self, mode="r", *args, **kwargs):
        if full and self.name == "run.log.partial" and mode.startswith("a"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return open_path(self, mode, *args, **kwargs)

    monkeypatch.setattr(mixflow.workflow.run, "save", save)
    monkeypatch.setattr(Path, "open", limited)
    workflow_file.write_text(SMALL.replace("seed = 1", "seed = 2"))
    status, err = _cli(capsys, "run", workflow_file, "--out", out)
    line = _one_error_line(err)
    assert status == 2 and line.endswith(f"'{out / 'gaussian-full-k2.nc'}': No space left on device; free some space "
                                         "or choose another location")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no working folder, no half-written log


def test_a_swallowed_termination_is_raised_again_inside_a_nested_block():
    # the inner block leaves the outer one's handler: it must not hide the SIGTERM the outer block noted
    from mixflow.errors import Terminated, stop_if_terminated, terminating_as_interrupt

    with terminating_as_interrupt():
        with contextlib.suppress(Terminated):  # a library that catches the interrupt and goes on
            os.kill(os.getpid(), signal.SIGTERM)
        with terminating_as_interrupt(), pytest.raises(Terminated):
            stop_if_terminated()


def test_a_held_termination_goes_before_a_held_interrupt():
    from mixflow.errors import Terminated, terminating_as_interrupt

    with terminating_as_interrupt(), pytest.raises(Terminated):
        with atomic.interrupts_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)


def test_an_interrupt_held_while_the_container_is_written_lists_it(tmp_path, workflow_file, capsys, monkeypatch):
    # a Ctrl-C while the container's bytes are made or written is held until the file is in place, then raised:
    # the run said the files "completely written before it are kept" without the container, which it had replaced
    from mixflow.container import io

    write = io._write_bytes

    def interrupted_meanwhile(content, path):
        os.kill(os.getpid(), signal.SIGINT)  # held: delivered once the file is renamed into place
        write(content, path)

    monkeypatch.setattr(io, "_write_bytes", interrupted_meanwhile)
    status, err = _cli(capsys, "run", workflow_file, "--out", tmp_path / "out")
    assert status == 130
    line = _one_error_line(err)
    assert "the 3 files completely written before it are kept" in line and "gaussian-full-k2.nc" in line, line
    assert mixflow.load(tmp_path / "out" / "gaussian-full-k2.nc").attrs["model"]
    assert _leftovers(tmp_path / "out") == []


def _terminated_run(workflow_file, out, target: str, swallowed: bool, before: bool = True, sent: str = "SIGTERM",
                    in_finaliser: bool = False):
    """``mixflow run`` in a process of its own (a test process would end on SIGTERM) whose
    ``mixflow.workflow.run.<target>`` sends itself SIGTERM (or ``sent``) before (or after) its work: the interrupt
    raised, or ``swallowed`` as a library that catches ``KeyboardInterrupt`` and carries on would, or raised
    ``in_finaliser`` (an object's ``__del__``, like a weak reference's callback): Python prints it, goes on."""
    kill = f"os.kill(os.getpid(), signal.{sent})\n"
    send = (f"    try:\n        {kill}        time.sleep(5)\n    except KeyboardInterrupt:\n        pass\n" if swallowed
            else "    Finaliser()\n" if in_finaliser else f"    {kill}")
    call = "    result = original(*args, **kwargs)\n"
    code = ("import os, signal, sys, time, mixflow.workflow.run as run\n"
            f"original = run.{target}\n"
            f"class Finaliser:\n    def __del__(self):\n        {kill}        time.sleep(5)\n"
            "def patched(*args, **kwargs):\n" + (send + call if before else call + send) + "    return result\n"
            f"run.{target} = patched\n"
            "from mixflow.cli import main\n"
            f"sys.exit(main(['run', {str(workflow_file)!r}, '--out', {str(out)!r}, '--quiet']))\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


@pytest.mark.parametrize("sent", ["SIGTERM", "SIGHUP"])
@pytest.mark.parametrize("first_run", [False, True])
def test_sigterm_and_sighup_stop_a_run_as_an_interrupt_does(tmp_path, workflow_file, first_run, sent):
    # SIGTERM (kill, timeout) and SIGHUP (the terminal closed, an ssh session lost) ended the process at once: exit
    # 143 or 129 with no message, run.log.partial left behind (beside an earlier run's run.log on a rerun), no
    # run-interrupted.log. Each is stopped as Ctrl-C is, with its own status (128 + its number) and name, in a
    # process of its own (a test process would end on it)
    out = tmp_path / "out"
    if not first_run:
        assert subprocess.run([sys.executable, "-m", "mixflow.cli", "run", str(workflow_file), "--out", str(out),
                               "--quiet"], capture_output=True).returncode == 0
    done = _terminated_run(workflow_file, out, "fit", swallowed=False, sent=sent)
    assert done.returncode == 128 + getattr(signal, sent), done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"mixflow run: error: terminated ({sent}); " + ("the 1 file completely written before it is kept ("
                                                        f"{out / 'run-interrupted.log'})" if not first_run
                                                        else "no output was written")
        + "; no half-written file was left")
    if first_run:
        assert not out.exists()
    else:
        assert sorted(p.name for p in out.iterdir() if p.is_file()) == sorted(
            json.loads((out / "workflow.json").read_text())["outputs"] + ["run-interrupted.log"])
        assert (out / "run-interrupted.log").read_text().rstrip().endswith(f"terminated ({sent})")


def test_a_sighup_during_a_write_removes_the_temporary(tmp_path):
    done = subprocess.run([sys.executable, "-c", _TERMINATED_WRITE.replace("SIGTERM", "SIGHUP"), str(tmp_path)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 128 + signal.SIGHUP, done.stderr
    assert (tmp_path / "out.nc").read_text() == "previous"
    assert _leftovers(tmp_path) == []


def test_a_held_sighup_is_delivered_as_a_termination():
    from mixflow.errors import Terminated, terminating_as_interrupt

    with terminating_as_interrupt() as received, pytest.raises(Terminated, match=r"terminated \(SIGHUP\)"):
        with atomic.interrupts_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGHUP)
    assert received == [signal.SIGHUP]


def test_a_sigterm_a_library_swallowed_stops_the_run_at_its_next_stage(tmp_path, workflow_file):
    # a library that catches the interrupt SIGTERM's handler raised and carries on (code compiling, a sampler): the
    # run went on to the end, every file written, as if no SIGTERM had come. It stops at the next progress line
    out = tmp_path / "out"
    done = _terminated_run(workflow_file, out, "fit", swallowed=True)
    assert done.returncode == 143, done.stderr
    assert done.stderr.strip().splitlines()[-1] == ("mixflow run: error: terminated (SIGTERM); no output was written; "
                                                    "no half-written file was left")
    assert not out.exists()


@pytest.mark.parametrize("sent, status, said", [("SIGINT", 130, "interrupted"),
                                                ("SIGTERM", 143, "terminated (SIGTERM)")])
@pytest.mark.parametrize("how", ["swallowed", "in a finaliser"])
def test_an_interrupt_swallowed_or_ignored_stops_the_run_at_its_next_stage(tmp_path, workflow_file, sent, status, said,
                                                                          how):
    # Ctrl-C that a library swallowed, or that came in a finaliser or a weak reference's callback (Python printed
    # "Exception ignored in ..." with the interrupt's traceback and went on): the run completed, exit 0. It stops at
    # the next progress line, and an interrupt Python ignored is not printed
    out = tmp_path / "out"
    done = _terminated_run(workflow_file, out, "fit", swallowed=how == "swallowed", sent=sent,
                           in_finaliser=how == "in a finaliser")
    assert done.returncode == status, done.stderr
    assert done.stderr.strip().splitlines() == [f"mixflow run: error: {said}; no output was written; no half-written "
                                                "file was left"]
    assert not out.exists()


def test_a_sigterm_swallowed_in_a_reruns_last_stage_leaves_the_earlier_run_in_place(tmp_path, workflow_file):
    # swallowed as the container is saved, after the last progress line: the rerun's files moved in over the earlier
    # run's, and the interrupt was raised only among the final renames. It stops before any file moves in, the
    # rerun's files kept apart in run-interrupted/ as an interrupt that was not swallowed leaves them
    out = tmp_path / "out"
    assert subprocess.run([sys.executable, "-m", "mixflow.cli", "run", str(workflow_file), "--out", str(out),
                           "--quiet"], capture_output=True).returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    done = _terminated_run(workflow_file, out, "save", swallowed=True, before=False)
    assert done.returncode == 143, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("mixflow run: error: terminated (SIGTERM); the ") and str(out / "run-interrupted") in line
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != "run-interrupted.log"} == before
    assert (out / "run-interrupted.log").read_text().rstrip().endswith("terminated (SIGTERM)")


def test_a_swallowed_sigterm_is_raised_again_only_outside_its_handling():
    from mixflow.errors import Terminated, stop_if_terminated, terminating_as_interrupt

    stop_if_terminated()  # no block: nothing
    with terminating_as_interrupt() as received:
        stop_if_terminated()  # none arrived: nothing
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        except KeyboardInterrupt:
            pass
        assert received == [signal.SIGTERM]
        try:
            raise Terminated("terminated (SIGTERM)")
        except KeyboardInterrupt:
            stop_if_terminated()  # while it is handled (its message said): nothing raised again
        with pytest.raises(Terminated):
            stop_if_terminated()
    stop_if_terminated()  # the block over: nothing


@pytest.mark.parametrize("when", ["write", "flush"])
def test_a_full_standard_output_is_named(capsys, monkeypatch, when):
    # `mixflow datasets > file` on a full disk said "[Errno 28] No space left on device", naming nothing
    import io

    class Full(io.StringIO):
        def write(self, text):
            if when == "write":
                raise OSError(errno.ENOSPC, "No space left on device")
            return super().write(text)

        def flush(self):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sys, "stdout", Full())
    status, err = _cli(capsys, "datasets")
    assert status == 2
    assert _one_error_line(err, "datasets") == ("mixflow datasets: error: '<standard output>': No space left on "
                                                "device; free some space or choose another location")


@pytest.mark.parametrize(("fault", "how"), [(KeyboardInterrupt, "interrupted"), (OSError, "failed")])
def test_a_rerun_that_does_not_complete_keeps_the_earlier_runs_log(tmp_path, workflow_file, capsys, monkeypatch,
                                                                   fault, how):
    # the earlier complete run's log (listed in its workflow.json) was replaced by the failed rerun's
    import mixflow.workflow.run

    out = tmp_path / "out"
    assert _cli(capsys, "run", workflow_file, "--out", out)[0] == 0
    before = (out / "run.log").read_text()
    seen = []

    def broken(*args, **kwargs):
        seen.append(sorted(p.name for p in out.iterdir()))  # the log as the run goes on
        raise fault(28, "No space left on device") if fault is OSError else fault()

    monkeypatch.setattr(mixflow.workflow.run, "fit", broken)
    status, err = _cli(capsys, "run", workflow_file, "--out", out)
    assert status == (130 if fault is KeyboardInterrupt else 2)
    assert "run.log.partial" in seen[0]
    assert (out / "run.log").read_text() == before
    kept = out / f"run-{how}.log"
    assert kept.read_text().rstrip().splitlines()[-1].split("] ", 1)[1].startswith(how)
    assert str(kept) in _one_error_line(err)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["gaussian-full-k2-comparison.csv", "gaussian-full-k2.nc", "run.log", kept.name, "workflow.json"])


@pytest.mark.parametrize("method", ["mcmc", "advi"])
def test_interrupt_of_a_sampler_in_an_existing_directory_keeps_a_truthful_log(tmp_path, workflow_file, capsys,
                                                                              monkeypatch, method):
    import mixflow.workflow.run
    from mixflow.errors import SamplerInterrupted

    workflow_file.write_text(SMALL.replace("[methods.em]", f"[methods.{method}]\n\n[methods.em]"))
    real_fit = mixflow.workflow.run.fit

    def sampler_interrupted(*args, method, **kwargs):
        if method in ("em", "map"):
            return real_fit(*args, method=method, **kwargs)
        raise SamplerInterrupted(f"{method} interrupted")

    monkeypatch.setattr(mixflow.workflow.run, "fit", sampler_interrupted)
    (tmp_path / "out").mkdir()
    status, err = _cli(capsys, "run", workflow_file, "--out", tmp_path / "out")
    assert status == 130
    log = tmp_path / "out" / "run.log"
    assert _one_error_line(err).endswith(f"interrupted; the 2 files completely written before it are kept ({log}, "
                                         f"{tmp_path / 'out' / 'workflow.json'}); "
                                         "no half-written file was left")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["run.log", "workflow.json"]  # and its claim
    assert log.read_text().rstrip().endswith("interrupted")


_SIGINT_RUN = """
import sys, time
import mixflow.workflow.run
from mixflow.cli import main

def slow_fit(*args, **kwargs):
    print("fitting", file=sys.stderr, flush=True)
    time.sleep(120)

mixflow.workflow.run.fit = slow_fit
sys.exit(main(["run", sys.argv[1], "--out", sys.argv[2], "--quiet"]))
"""


def test_sigint_to_the_command_exits_130_without_a_traceback(tmp_path, workflow_file):
    # the command as from a terminal: SIGINT at its default, whatever this process inherited (a background job
    # of a shell starts with it ignored, and so would the command)
    process = subprocess.Popen([sys.executable, "-c", _SIGINT_RUN, str(workflow_file), str(tmp_path / "out")],
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert process.stderr.readline().strip() == "fitting"
    process.send_signal(signal.SIGINT)
    err = process.stderr.read()
    assert process.wait(timeout=60) == 130
    assert _one_error_line(err).endswith("interrupted; no output was written; no half-written file was left")


def test_internal_error_is_status_1_with_the_traceback_under_debug(tmp_path, workflow_file, capsys, monkeypatch):
    import mixflow.workflow.run

    def bug(*args, **kwargs):
        raise RuntimeError("an engine bug")

    monkeypatch.setattr(mixflow.workflow.run, "fit", bug)
    status, err = _cli(capsys, "run", workflow_file, "--out", tmp_path / "out")
    assert status == 1
    assert _one_error_line(err) == ("mixflow run: error: internal error: RuntimeError: an engine bug; rerun with "
                                    "--debug for the traceback, and report it")
    status, err = _cli(capsys, "run", workflow_file, "--out", tmp_path / "out", "--debug")
    assert status == 1
    assert "Traceback" in err and err.strip().splitlines()[-1] == \
        "mixflow run: error: internal error: RuntimeError: an engine bug"


# -- samplers that swallow an interrupt ------------------------------------------------------------------------
def test_nutpie_interrupt_stops_the_sampler_and_is_an_interrupt(monkeypatch):
    import dataclasses

    import numpy as np
    import pymc as pm

    nutpie = pytest.importorskip("nutpie")
    from mixflow.engines import mcmc

    @dataclasses.dataclass(frozen=True)
    class Compiled:
        initial_point_func: object = None

    class Running:
        cancelled = False

        def wait(self):
            raise KeyboardInterrupt

        def cancel(self):
            Running.cancelled = True

    sampled = {}
    monkeypatch.setattr(mcmc, "compile_nutpie", lambda model, initial_point, **kwargs: Compiled(initial_point))
    monkeypatch.setattr(nutpie, "sample", lambda compiled, **kwargs: sampled.update(kwargs) or Running())
    with pm.Model() as model:
        pm.Normal("x")
    options = {"draws": 10, "tune": 10, "chains": 2, "cores": 1, "progressbar": False, "target_accept": 0.8,
               "adaptation": "diag"}
    with pytest.raises(mcmc.SamplingInterrupted, match="MCMC interrupted: the sampler was stopped"):
        mcmc._sample_nutpie(model, [{"x": np.zeros(())}], 0.0, np.random.SeedSequence(1), 1, options)
    assert sampled["blocking"] is False and Running.cancelled
    assert issubclass(mcmc.SamplingInterrupted, KeyboardInterrupt)


def test_a_short_trace_from_an_interrupted_sampler_is_an_interrupt():
    import numpy as np
    import xarray as xr

    from mixflow.engines import mcmc

    short = {"posterior": xr.Dataset({"mu": (("chain", "draw"), np.zeros((2, 3)))})}
    with pytest.raises(mcmc.SamplingInterrupted, match="stopped before all draws were made"):
        mcmc._check_complete(short, {"chains": 2, "draws": 10})
    mcmc._check_complete(short, {"chains": 2, "draws": 3})


# -- workflows: validated whole, every error at once, before anything is fitted ------------------------------
def _workflow_errors(tmp_path, text: str, monkeypatch, csv: bytes | None = None) -> list[str]:
    """The error lines of running a workflow (which must fail before any fit, with status 2)."""
    if csv is not None:
        (tmp_path / "mine.csv").write_bytes(csv)
    path = tmp_path / "flow.toml"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    _no_fit(monkeypatch)
    import contextlib
    import io

    from mixflow.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = main(["run", str(path), "--out", str(tmp_path / "out"), "--quiet"])
    assert status == 2, err.getvalue()
    assert "Traceback" not in err.getvalue() and not (tmp_path / "out").exists()
    lines = err.getvalue().strip().splitlines()
    assert all(line.startswith(f"mixflow run: error: {path}:") for line in lines), lines
    return [line.removeprefix(f"mixflow run: error: {path}:") for line in lines]


@pytest.mark.parametrize(("old", "new", "message"), [
    ("n_init = 1", 'n_init = 0', r"^13: \[methods.em\] n_init: expected an integer from 1 to 10000, got 0$"),
    ("n_init = 1", 'n_init = 100000000000', r"^13: \[methods.em\] n_init: expected an integer from 1 to 10000, got "
                                         r"100000000000$"),
    ("n_init = 1", "tol = -1.0", r"^13: \[methods.em\] tol: expected a non-negative number, got -1.0$"),
    ("n_init = 1", 'init = "foo"', r"^13: \[methods.em\] init: expected one of \['auto', 'kmeans', 'kmeans\+\+', "
     r"'random', 'standardised-kmeans', 'random-partition', 'random-centres', 'hierarchical', "
     r"'hierarchical-pca', 'low-kurtosis', 'kmeans\|\|'\]"),
    ("[methods.em]\nn_init = 1", "[methods.bootstrap]\nn_replicates = 0",
     r"^13: \[methods.bootstrap\] n_replicates: expected an integer >= 2, got 0$"),
    ("[methods.em]\nn_init = 1", '[methods.bootstrap]\nkind = "foo"',
     r"^13: \[methods.bootstrap\] kind: expected one of \['nonparametric', 'parametric'\], got 'foo'$"),
    ("[methods.em]\nn_init = 1", "[methods.mcmc]\nchains = 0",
     r"^13: \[methods.mcmc\] chains: expected an integer >= 1"),
    ("[methods.em]\nn_init = 1", "[methods.mcmc]\ndraws = 0", r"^13: \[methods.mcmc\] draws: expected an integer >= 1"),
    ("[methods.em]\nn_init = 1", '[methods.mcmc]\nsampler = "foo"',
     r"^13: \[methods.mcmc\] sampler: expected one of \['auto', 'nutpie', 'pymc'\], got 'foo'$"),
    ("[methods.em]\nn_init = 1", '[methods.mcmc]\nstarts = "foo"',
     r"^13: \[methods.mcmc\] starts: expected one of \['reference', 'em-optima'\] or a list of parameter dicts, "
     r"got 'foo'$"),
    ("[methods.em]\nn_init = 1", '[methods.advi]\nvariant = "foo"',
     r"^13: \[methods.advi\] variant: expected one of \['meanfield', 'fullrank'\], got 'foo'$"),
    ("[methods.em]\nn_init = 1", "[methods.advi]\nn = 0", r"^13: \[methods.advi\] n: expected an integer >= 1, got 0$"),
    ("[methods.em]\nn_init = 1", '[methods.advi]\nstarts = "optima"',
     r"^13: \[methods.advi\] starts: expected one of \['reference', 'em-optima'\] or a list of parameter dicts, "
     r"got 'optima'$"),
    ("n_components = 2", "n_components = {from = 1.5, to = 3}",
     r"^10: \[\[models\]\] #1 n_components: expected {from = a, to = b} with integers a <= b, got {'from': 1.5"),
    ("[methods.em]\nn_init = 1", "[methods]\nem = 3", r"^13: \[methods.em\]: expected a table, got an integer 3$"),
    ("figures = false", "figures = false\ncontainer = false\ntable = false",
     r"^15: \[output\]: expected at least one of container, figures, report, table to be true, got every one false "
     r"with no choice of K: the run would fit every model and write nothing but its log and workflow.json$"),
    ("[[models]]\nn_components = 2", "[models]\nn_components = 2",
     r"^9: \[\[models\]\]: expected at least one \[\[models\]\] table, got {'n_components': 2}$"),
    ("figures = false", 'figures = "no"', r"^16: \[output\] figures: expected true or false, got a string \"no\"$"),
    ('seed = 1', 'seed = 1\ntitle = 3', r"^4: title: expected a string, got an integer 3$"),
])
def test_workflow_errors_name_file_line_and_key(tmp_path, monkeypatch, old, new, message):
    assert old in SMALL
    errors = _workflow_errors(tmp_path, SMALL.replace(old, new), monkeypatch)
    assert len(errors) == 1, errors
    assert __import__("re").search(message, errors[0]), errors[0]


def test_models_that_are_not_tables(tmp_path, monkeypatch):
    text = SMALL.replace("[[models]]\nn_components = 2\n", "").replace("seed = 1", "seed = 1\nmodels = [1, 2]")
    assert _workflow_errors(tmp_path, text, monkeypatch) == [
        "4: [[models]]: expected tables ([[models]] sections), got item #1 = 1",
        "4: [[models]]: expected tables ([[models]] sections), got item #2 = 2"]


def test_output_that_is_not_a_table(tmp_path, monkeypatch):
    text = SMALL.replace("[output]\nfigures = false\nreport = false", "").replace("seed = 1", "seed = 1\noutput = 3")
    assert _workflow_errors(tmp_path, text, monkeypatch) == ["4: [output]: expected a table, got an integer 3"]


def test_every_error_is_reported_at_once_in_file_order(tmp_path, monkeypatch):
    text = (SMALL.replace("n_components = 2", "n_components = {from = 1.5, to = 3}")
            .replace("n_init = 1", 'n_init = 0\ninit = "foo"\n\n[methods.advi]\nvariant = "foo"')
            .replace("figures = false", 'figures = "no"').replace('seed = 1', 'seed = 1\ntitle = 3'))
    errors = _workflow_errors(tmp_path, text, monkeypatch)
    assert [error.split(":")[0] for error in errors] == ["4", "11", "14", "15", "18", "21"]


def test_every_mistake_of_a_prior_table_is_reported_at_once(tmp_path, monkeypatch):
    # a prior with three mistakes took three runs to learn of them: its class stopped at the first
    text = SMALL.replace("n_components = 2", 'n_components = 2\nprior = {shrinkage = -1, dof = "x", foo = 1}')
    assert _workflow_errors(tmp_path, text, monkeypatch) == [
        "11: [[models]] #1: prior: unknown hyperparameter ['foo']; expected some of ['weights_concentration', 'mean', "
        "'shrinkage', 'dof', 'scale']",
        "11: [[models]] #1: prior.shrinkage: expected a positive number, got -1",
        "11: [[models]] #1: prior.dof: expected a number or a sequence of numbers, got 'x'"]


def test_every_mistake_of_a_models_table_is_reported_at_once(tmp_path, monkeypatch):
    # each key of a [[models]] table is checked apart: the first mistake no longer hides the others
    text = SMALL.replace("n_components = 2", 'n_components = 0\ncovariance = "round"\nname = "a b"\nvariance = 2\n'
                                             'colour = "red"\nprior = {shrinkage = 0}')
    errors = _workflow_errors(tmp_path, text, monkeypatch)
    assert [error.split(": ")[1] for error in errors] == [
        "[[models]] #1 n_components", "[[models]] #1", "[[models]] #1 name", "[[models]] #1", "[[models]] #1",
        "[[models]] #1"]
    assert [error.split(":")[0] for error in errors] == ["10", "11", "12", "13", "14", "15"]
    assert [error.split(": ")[2].split(" ")[0] for error in errors] == [
        "expected", "covariance", "expected", "key", "unknown", "prior.shrinkage"]


def test_a_python_prior_with_several_mistakes_says_them_all():
    from mixflow.errors import InputProblems

    with pytest.raises(InputProblems) as raised:
        mixflow.GaussianMixture(2, prior={"shrinkage": -1, "dof": "x"})
    assert str(raised.value).splitlines() == ["prior.shrinkage: expected a positive number, got -1",
                                              "prior.dof: expected a number or a sequence of numbers, got 'x'"]
    with pytest.raises(TypeError, match=r"^prior.dof: expected a number"):  # one mistake: its own error, as before
        mixflow.GaussianMixture(2, prior={"dof": "x"})


LABELLED = SMALL.replace('dataset = "faithful"\ncolumns = ["eruptions", "waiting"]',
                         'path = "mine.csv"\ncolumns = ["x"]')


def test_labels_naming_a_feature_column(tmp_path, monkeypatch):
    errors = _workflow_errors(tmp_path, LABELLED.replace('columns = ["x"]', 'columns = ["x"]\nlabels = "x"'),
                              monkeypatch, csv=b"x,w\n1.0,1\n2.0,2\n5.0,1\n")
    assert errors == ["8: [data] labels: expected a column that is not fitted, got 'x', which is also in [data] "
                      "columns; remove it from one of them"]


def test_weights_column_of_strings(tmp_path, monkeypatch):
    errors = _workflow_errors(tmp_path, LABELLED.replace('columns = ["x"]', 'columns = ["x"]\nweights = "w"'),
                              monkeypatch, csv=b"x,w\n1.0,one\n2.0,two\n5.0,one\n")
    assert len(errors) == 1
    assert __import__("re").fullmatch(r"8: \[data\] weights: expected a numeric column of frequency weights, got 'w' "
                                      r"of type (object|str) \(e.g. 'one'\)", errors[0]), errors



@pytest.mark.parametrize(("csv", "message"), [
    (b"x,w\n1.0,0\n2.0,0\n5.0,0\n", "expected at least one positive weight, got all zeros in 'w'"),
    # by data row, counted from 1 after the header, as the fitted columns' cells are
    (b"x,w\n1.0,-1\n2.0,-2\n5.0,-1\n", "expected finite, non-negative frequency weights, got negative values in 3 "
                                       "data rows: 1 ('w'), 2 ('w'), 3 ('w') (rows counted from 1 after the header)"),
    (b"x,w\n1.0,1\n2.0,inf\n5.0,1\n", "expected finite, non-negative frequency weights, got NaN or infinite values "
                                      "in 1 data row: 2 ('w') (rows counted from 1 after the header)"),
])
def test_weights_that_count_no_observation_are_said_of_the_weights_not_of_n_components(tmp_path, monkeypatch, csv,
                                                                                       message):
    errors = _workflow_errors(tmp_path, LABELLED.replace('columns = ["x"]', 'columns = ["x"]\nweights = "w"'),
                              monkeypatch, csv=csv)
    assert errors == [f"8: [data] weights: {message}"]

@pytest.mark.parametrize(("csv", "message"), [
    (b"", r"^6: \[data\] path: expected a CSV file with a header and rows, got '.*mine.csv', which is empty$"),
    (b"x,w\n", r"^6: \[data\] path: expected a CSV file with at least one row, got .* columns \['x', 'w'\] and no"),
    (b"x\n1.0\n\xe9\xff\n", r"^6: \[data\] path: expected a UTF-8 CSV file, got .*, which is not UTF-8 \(invalid"),
    (b"x,name\n1.0,caf\xe9\n2.0,b\n", r"^6: \[data\] path: expected a UTF-8 CSV file, got .*, which is not UTF-8 "
                                   r"\(invalid continuation byte at byte 14, line 2\)$"),
    (b'x,w\n1,2\n3,4,5,6\n"7,8\n', r"^6: \[data\] path: expected a readable CSV file, got .*mine.csv' \(Error"),
    (b"x,x\n1,2\n3,4\n", r"^6: \[data\] path: expected distinct column names, got .* with duplicated \['x'\]"),
    # a results file given as the data: pandas said "(No objects to concatenate)"
    (b"\x89HDF\r\n\x1a\n\x00\x00\x00\x00", r"^6: \[data\] path: expected a CSV file, got '.*mine.csv', which is an "
                                      r"HDF5 or NetCDF-4 file \(a mixflow results file is one: mixflow show reads "
                                      r"it\)$"),
    (b"PK\x03\x04\x14\x00", r"^6: \[data\] path: expected a CSV file, got .*, which is a ZIP archive \(a spreadsheet"),
    # compressed: pandas reads them by their name's ending, the checks here as text (a UnicodeDecodeError, status 1)
    (__import__("gzip").compress(b"x,w\n1,2\n", mtime=0), r"^6: \[data\] path: expected a CSV file, got .*, which is "
                                                 r"gzip-compressed: decompress it first \(gunzip\)$"),
    (__import__("bz2").compress(b"x,w\n1,2\n"), r"which is bzip2-compressed: decompress it first \(bunzip2\)$"),
    (__import__("lzma").compress(b"x,w\n1,2\n"), r"which is xz-compressed: decompress it first \(unxz\)$"),
    # every row a field more than the header names: pandas took the first field as the rows' labels and shifted the
    # others under the names (x read 2.0 and 4.0, w the third fields), and the run fitted the wrong columns
    (b"x,w\n1.0,2.0,7\n3,4,9\n", r"^6: \[data\] path: expected rows of as many fields as the header names \(got "
                                  r"'.*mine.csv', whose header names 2 columns and whose line 2 has 3 "
                                  r"fields\)$"),
    (b"x,w\n1.0,2.0,7\n3,4\n", r"whose header names 2 columns and whose line 2 has 3 fields\)$"),
    # a byte-order mark (spreadsheets write one) before the same header: pandas drops it, and so must the check
    (b"\xef\xbb\xbfx,x\n1,2\n3,4\n", r"^6: \[data\] path: expected distinct column names, got .* with duplicated "
                                      r"\['x'\]"),
    # separated by semicolons (as spreadsheets of some locales save CSV): one column named by the whole header
    (b"x;w\n1,5;2\n3;4\n", r"^6: \[data\] path: expected comma-separated values, got '.*mine.csv', whose header "
                          r"'x;w' is separated by ';': save the file with commas \(e.g. pandas.read_csv\(path, "
                          r"sep=';', decimal=','\).to_csv\(new_path, index=False\)\)$"),
    (b"x\tw\n1\t2\n", r"whose header 'x\\tw' is separated by '\\t': save the file with commas \(e.g. "
                      r"pandas.read_csv\(path, sep='\\t'\).to_csv"),
])
def test_malformed_csv_data(tmp_path, monkeypatch, csv, message):
    errors = _workflow_errors(tmp_path, LABELLED, monkeypatch, csv=csv)
    assert len(errors) == 1 and __import__("re").search(message, errors[0]), errors


def test_a_workflow_that_is_not_utf8(tmp_path, monkeypatch):
    errors = _workflow_errors(tmp_path, SMALL.encode().replace(b'"small"', b'"caf\xe9"'), monkeypatch)
    assert errors == ["2: expected a UTF-8 text file (TOML), got a byte that is not UTF-8 (invalid continuation "
                      "byte at byte 12)"]


def test_a_failed_first_run_claims_its_directory_for_its_workflow(tmp_path, workflow_file, capsys, monkeypatch):
    # a first run into a new directory that failed part way kept its files but wrote no workflow.json: a run of
    # another workflow then ran into the directory unrefused, replacing the kept log and files of the same names
    import mixflow.workflow.run

    workflow_file.write_text(SMALL.replace("[methods.em]", "[[models]]\nn_components = 3\n\n[methods.em]"))
    fit, calls = mixflow.workflow.run.fit, []

    def second_fails(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise mixflow.InputError("a component collapsed onto one point")
        return fit(*args, **kwargs)

    monkeypatch.setattr(mixflow.workflow.run, "fit", second_fails)
    out = tmp_path / "out"
    status, err = _cli(capsys, "run", workflow_file, "--out", out)
    # the claim is said among the files kept: they were said without it, which the directory held
    assert status == 2 and "the 4 files completely written before the error are kept" in _one_error_line(err)
    assert _one_error_line(err).endswith(f"{out / 'workflow.json'})")
    record = json.loads((out / "workflow.json").read_text())
    assert record["completed"] is False and record["config"]["name"] == "small"
    assert sorted(record["outputs"]) == sorted(p.name for p in out.iterdir()) == [
        "gaussian-full-k2-comparison.csv", "gaussian-full-k2.nc", "run.log", "workflow.json"]
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr(mixflow.workflow.run, "fit", fit)
    other = tmp_path / "other.toml"
    other.write_text(SMALL.replace('name = "small"', 'name = "other"'))
    status, err = _cli(capsys, "run", other, "--out", out)
    assert status == 2 and _one_error_line(err).endswith(
        f"'{out / 'workflow.json'}': holds the files a run of another workflow, 'small', kept when it did not "
        "complete (this one is 'other'), whose record this run would replace; nothing was fitted: choose another "
        "--out, or move them away")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # the same workflow runs there again, and its completed record replaces the claim
    assert _cli(capsys, "run", workflow_file, "--out", out)[0] == 0
    record = json.loads((out / "workflow.json").read_text())
    assert record["completed"] is True and sorted(record["outputs"]) == sorted(p.name for p in out.iterdir())


def test_a_first_run_killed_outright_has_claimed_the_files_it_wrote(tmp_path, workflow_file, capsys):
    # SIGKILL (or a power cut) leaves no chance to write anything: the claim written at the start listed only itself,
    # and the container the run had written was nobody's. The claim now lists each file as it lands.
    import subprocess
    import sys

    out = tmp_path / "out"
    script = ("import os, signal, sys, pandas\n"
              "from mixflow.cli import main\n"
              "def killed(*args, **kwargs):  # the second file: the comparison table, after the container\n"
              "    os.kill(os.getpid(), signal.SIGKILL)\n"
              "pandas.DataFrame.to_csv = killed\n"
              f"sys.exit(main(['run', {str(workflow_file)!r}, '--out', {str(out)!r}, '--quiet']))\n")
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert completed.returncode == -signal.SIGKILL, completed.stderr[-2000:]
    record = json.loads((out / "workflow.json").read_text())
    assert record["completed"] is False and record["outputs"] == ["gaussian-full-k2.nc", "workflow.json"]
    # beside them the log so far, and the table's temporary file, which nothing could remove at the SIGKILL
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "gaussian-full-k2.nc", "run.log.partial", "workflow.json"]
    (left,) = [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert re.fullmatch(r"\.gaussian-full-k2-comparison\.csv\.[a-z0-9_]{8}\.tmp", left), left
    # the next run that completes there removes it, and says so; hidden files not of its own writes stay
    users = [".notes.abcdefgh.tmp", ".gaussian-full-k2-comparison.csv.tmp", ".other-k2.nc.abcdefgh.tmp"]
    for name in users:
        (out / name).write_text("a user's")
    status, err = _cli(capsys, "run", workflow_file, "--out", out)
    assert status == 0 and f"removed what earlier attempts that did not complete left in {out}: {left}" in err
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == sorted(users)


def test_a_fit_that_fails_on_the_data_is_reported_at_the_model(tmp_path, workflow_file, capsys, monkeypatch):
    import mixflow.workflow.run

    def collapses(*args, **kwargs):  # mixflow's checks of the data raise InputError (a plain ValueError is a bug)
        raise mixflow.InputError("a component collapsed onto one point")

    monkeypatch.setattr(mixflow.workflow.run, "fit", collapses)
    status, err = _cli(capsys, "run", workflow_file, "--out", tmp_path / "out")
    assert status == 2
    assert _one_error_line(err) == (f"mixflow run: error: {workflow_file}:9: [[models]] #1: the fit of K=2 failed: "
                                    "a component collapsed onto one point")


def test_an_interrupt_that_pymc_advi_swallows_is_an_interrupt():
    from mixflow.engines import advi
    from mixflow.errors import SamplerInterrupted

    class Inference:  # PyMC's Inference.refine swallows Ctrl-C and returns with the partial fit
        def __init__(self, interrupt):
            self.interrupt, self.approx, self.state = interrupt, "approximation", None

        def refine(self, n, progressbar=True):
            if self.interrupt:
                try:
                    os.kill(os.getpid(), signal.SIGINT)  # the handler raises as soon as the call returns
                except KeyboardInterrupt:
                    pass

    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)  # as from a terminal, whatever was inherited
    try:
        with pytest.raises(SamplerInterrupted, match="ADVI interrupted: the optimisation was stopped"):
            advi._run(Inference(True), None, None, {"n": 10, "progressbar": False})
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # given back as it was
        assert advi._run(Inference(False), None, None, {"n": 10, "progressbar": False}) == "approximation"
    finally:
        signal.signal(signal.SIGINT, inherited)


def test_a_sigterm_that_pymc_advi_swallows_is_a_termination():
    # the same loop swallows the interrupt SIGTERM's handler raises: the partial fit was kept as the result
    from mixflow.engines import advi
    from mixflow.errors import Terminated, terminating_as_interrupt

    class Inference:
        approx, state = "approximation", None

        def refine(self, n, progressbar=True):
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
            except KeyboardInterrupt:
                pass

    with terminating_as_interrupt(), pytest.raises(Terminated):
        advi._run(Inference(), None, None, {"n": 10, "progressbar": False})


def test_an_ignored_sigint_stays_ignored_while_interrupts_are_noted():
    """A process started with SIGINT ignored (nohup, a shell's background job) is not made interruptible."""
    from mixflow.errors import noting_interrupts

    inherited = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with noting_interrupts() as noted:
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
        assert noted == [] and signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, inherited)


def test_advi_minibatch_is_checked_against_the_data_before_fitting(tmp_path, monkeypatch):
    text = SMALL.replace("[output]", "[methods.advi]\nminibatch_size = 500\n\n[output]")
    assert _workflow_errors(tmp_path, text, monkeypatch) == [
        "16: [methods.advi] minibatch_size: expected None or an integer in [1, n_obs = 272], got 500"]


def test_a_model_attribute_that_is_json_but_not_a_declaration():
    from mixflow.families.base import model_from_json

    with pytest.raises(ValueError, match=r"model: expected the model declaration as a JSON object, got '\[1, 2\]'"):
        model_from_json("[1, 2]")
    with pytest.raises(ValueError, match=r"model: expected the model declaration as JSON \(as mixflow writes it\), "
                                         r"got 'GaussianMixture\(2\)' \(Expecting value"):
        model_from_json("GaussianMixture(2)")


@pytest.mark.parametrize("debug", [False, True])
def test_a_value_error_inside_a_fit_is_an_internal_error_not_bad_input(tmp_path, workflow_file, capsys, monkeypatch,
                                                                        debug):
    """A ValueError that mixflow did not raise as an InputError (a bug, here numpy's) is status 1, not 2."""
    import mixflow.engines.em

    def bug(*args, **kwargs):
        raise ValueError("operands could not be broadcast together with shapes (2,) (3,)")

    monkeypatch.setattr(mixflow.engines.em, "run_together", bug)
    status, err = _cli(capsys, "run", workflow_file, "--out", tmp_path / "out", *(["--debug"] if debug else []))
    assert status == 1
    message = "mixflow run: error: internal error: ValueError: operands could not be broadcast together with shapes " \
              "(2,) (3,)"
    if debug:
        assert "Traceback" in err and "in bug" in err and err.strip().splitlines()[-1] == message
    else:
        assert _one_error_line(err) == f"{message}; rerun with --debug for the traceback, and report it"



def test_a_formula_naming_a_text_column_says_it_is_not_numeric(tmp_path, monkeypatch):
    """The CSV's text column is left out of the data's columns; a regression whose formula names it is told that the
    column is not numeric, not that it is missing."""
    text = ('name = "lines"\nseed = 1\n\n[data]\npath = "mine.csv"\n\n[[models]]\nfamily = "regression"\n'
            'formula = "y ~ state"\nn_components = 2\n\n[methods.em]\nn_init = 1\n')
    csv = b"x,y,state\n" + b"".join(f"{i},{2 * i + 1},s{i % 3}\n".encode() for i in range(12))
    errors = _workflow_errors(tmp_path, text, monkeypatch, csv=csv)
    assert errors == ["7: [[models]] #1 on [data]: the data do not suit this model: it reads column ['state'], "
                      "which is not numeric (e.g. 's0'); the columns a model names must hold numbers"], errors


def test_the_folds_are_checked_only_where_k_is_chosen(tmp_path, monkeypatch):
    # one K is fitted, not chosen: no cross-validation runs, yet four rows failed with "[select] n_folds: expected
    # at most the number of observations (total weight 4), got 5", a key the workflow never wrote
    text = ('name = "w"\nseed = 1\n\n[data]\npath = "mine.csv"\ncolumns = ["x"]\n\n[[models]]\n'
            'n_components = {}\n\n[methods.em]\nn_init = 1\n')
    from mixflow.workflow.config import read_workflow

    csv = b"x\n0.1\n0.5\n2.0\n3.5\n"
    (tmp_path / "mine.csv").write_bytes(csv)
    (tmp_path / "one.toml").write_text(text.format(2))
    assert read_workflow(tmp_path / "one.toml").models[0].ks == (2,)
    errors = _workflow_errors(tmp_path, text.format("{from = 1, to = 2}"), monkeypatch, csv=csv)
    assert len(errors) == 1 and errors[0].endswith("[select] n_folds: expected at most the number of observations "
                                                   "(total weight 4), got 5"), errors


@pytest.mark.parametrize(("weights", "folds", "message"), [
    ("2.5", "5", r"^16: \[select\] n_folds: expected at most the number of rows \(4; non-integer frequency weights "
                 r"hold out whole rows\), got 5$"),
    ("0.25", "false", r"^6: \[data\] weights: expected frequency weights .* totalling at least n_components = 2, got "
                      r"a total of 1;"),
])
def test_weights_that_cannot_serve_the_folds_or_the_components_fail_before_any_fit(tmp_path, monkeypatch, weights,
                                                                                  folds, message):
    text = ('name = "w"\nseed = 1\n\n[data]\npath = "mine.csv"\nweights = "w"\ncolumns = ["x"]\n\n[[models]]\n'
            f'n_components = {{from = 1, to = 2}}\n\n[methods.em]\nn_init = 1\n\n[select]\nn_folds = {folds}\n')
    csv = b"x,w\n" + b"".join(f"{v},{weights}\n".encode() for v in (0.1, 0.5, 2.0, 3.5))
    errors = _workflow_errors(tmp_path, text, monkeypatch, csv=csv)
    assert len(errors) == 1 and __import__("re").search(message, errors[0]), errors


def test_a_choice_of_k_with_every_output_off_is_read_its_table_being_written_whatever_they_say(tmp_path):
    from mixflow.workflow.config import read_workflow

    text = (SMALL.replace("n_components = 2", "n_components = {from = 1, to = 2}")
            .replace("figures = false", "figures = false\ncontainer = false\ntable = false"))
    (tmp_path / "range.toml").write_text(text)
    workflow = read_workflow(tmp_path / "range.toml")
    assert workflow.models[0].ks == (1, 2) and not any(workflow.output.values())
