"""Faults: failed, interrupted and terminated writes, permissions, full disks, and the command line's one
error path (every reproduction of issue 15's "The command line" section)."""

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import mixflow
from mixflow import atomic
from mixflow.atomic import atomic_write

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
