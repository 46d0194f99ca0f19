"""Every shipped workflow end to end, and every benchmark's --quick mode (slow: PyMC sampling).

The workflows run from modified copies of their TOML files with fewer draws, tuning steps, chains,
bootstrap replicates, EM starts and ADVI iterations, and ranges of K cut to their first two values;
everything else (data, models, methods, outputs) is as shipped. Old Faithful, the main job of
``make run``, runs through ``python -m mixflow.cli`` as a user would: with progress messages and the
default ``--out``.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import mixflow
from mixflow.cli import main

ROOT = Path(__file__).parent.parent
WORKFLOWS = sorted((ROOT / "workflows").glob("*.toml"))
# the scripts (a module the scripts share, such as benchmarks/peers.py, has no ``__main__`` block to run)
BENCHMARKS = sorted(p for p in (ROOT / "benchmarks").glob("*.py") if 'if __name__ == "__main__"' in p.read_text())
SMALL = {"draws": 40, "tune": 40, "chains": 2, "n_replicates": 3, "n_init": 2}
ADVI_ITERATIONS = 300

pytestmark = pytest.mark.slow


def _small_copy(path: Path, directory: Path) -> Path:
    text = path.read_text()
    for key, value in SMALL.items():
        text = re.sub(rf"(?m)^{key}\s*=\s*\d+", f"{key} = {value}", text)
    # a range of K keeps its first two values: the choice of K still runs (NUTS at every K), at a fraction of the cost
    text = re.sub(r"(?m)^n_components\s*=\s*\{from\s*=\s*(\d+),\s*to\s*=\s*(\d+)\}",
                  lambda m: f"n_components = {{from = {m.group(1)}, to = {min(int(m.group(2)), int(m.group(1)) + 1)}}}",
                  text)
    # ADVI stops when q settles; a cap keeps its iterations few (it then warns that it did not settle)
    text = re.sub(r"(?m)^\[methods\.advi\][^\n]*$", lambda m: f"{m.group(0)}\nn = {ADVI_ITERATIONS}", text)
    copy = directory / path.name
    copy.write_text(text)
    return copy


def _environment():
    package_root = str(Path(mixflow.__file__).parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")])}


def _check_outputs(out: Path, methods_expected: set):
    containers = sorted(out.glob("*.nc"))
    assert containers, sorted(p.name for p in out.iterdir())
    assert (out / "workflow.json").exists()
    for container in containers:
        tree = mixflow.load(container)
        stem = container.stem
        table = pd.read_csv(out / f"{stem}-comparison.csv")
        assert methods_expected <= set(table["method"]), (stem, set(table["method"]))
        assert table["estimate"].notna().all()
        assert (out / f"{stem}-report.html").stat().st_size > 10_000
        assert list((out / "figures").glob(f"{stem}-*.png"))
        assert set(tree.children) >= {"em", "observed_data"}


def _methods(path: Path) -> set:
    text = path.read_text()
    methods = {"em"} | {m for m in ("mcmc", "advi") if f"[methods.{m}]" in text}
    return methods | ({"bootstrap"} if "[methods.bootstrap]" in text else set())


def test_the_main_job_through_the_command_line(tmp_path):
    """``make run``: the faithful workflow with bootstrap, NUTS and ADVI; default --out, not quiet."""
    workflow = _small_copy(ROOT / "workflows" / "faithful.toml", tmp_path)
    completed = subprocess.run([sys.executable, "-m", "mixflow.cli", "run", str(workflow)], cwd=tmp_path,
                               capture_output=True, text=True, env=_environment(), timeout=1800)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.strip() or completed.stderr.strip()  # progress messages were printed
    _check_outputs(tmp_path / "out", {"em", "bootstrap", "mcmc", "advi"})
    tree = mixflow.load(tmp_path / "out" / "gaussian-full-k2.nc")
    assert round(tree["em"].attrs["log_likelihood"], 3) == -1130.264


@pytest.mark.parametrize("path", [p for p in WORKFLOWS if p.stem != "faithful"], ids=lambda p: p.stem)
def test_shipped_workflow_runs_end_to_end(path, tmp_path):
    workflow = _small_copy(path, tmp_path)
    assert main(["run", str(workflow), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    _check_outputs(tmp_path / "out", _methods(path))


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.stem)
def test_benchmark_quick_mode_runs(path):
    completed = subprocess.run([sys.executable, str(path), "--quick"], cwd=ROOT, capture_output=True, text=True,
                               env=_environment(), timeout=3600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.strip()
