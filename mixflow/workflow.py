"""Run a validated workflow: fit each model by each method, write container, table, figures, report."""

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mixflow.fitting import fit
from mixflow.results import save
from mixflow.workflow_config import Workflow, _build_model, read_workflow

__all__ = ["atomic_write", "estimate_table", "run_workflow"]


def atomic_write(path: Path, write) -> Path:
    """Call ``write(temporary_path)`` then rename onto ``path``: no half-written file under the final name."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(Path(temporary))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


class _Progress:
    def __init__(self, quiet: bool):
        self.quiet, self.start = quiet, time.perf_counter()

    def __call__(self, message: str):
        if not self.quiet:
            print(f"[{time.perf_counter() - self.start:7.1f}s] {message}", file=sys.stderr, flush=True)


def estimate_table(tree) -> pd.DataFrame:
    """The EM point estimate as a tidy table: parameter, component, feature(s), value."""
    estimate = tree["em/estimate"].to_dataset()
    frames = []
    for name, variable in estimate.data_vars.items():
        frame = variable.to_dataframe(name="value").reset_index()
        frame.insert(0, "parameter", name)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _em_options(methods: dict) -> dict:
    options = dict(methods.get("em", {}))
    return {"method": "map" if options.pop("map", False) else "em", **options}


def _choose_k(workflow: Workflow, spec, data, weights, progress) -> tuple[int, pd.DataFrame]:
    """Fit each K of a range by EM and pick the lowest BIC."""
    rows = []
    em = _em_options(workflow.methods)
    for k in spec.ks:
        progress(f"{spec.label}: EM with K={k}")
        tree = fit(_build_model(spec, k), data, weights=weights, random_seed=workflow.seed,
                   data_name=workflow.data_name, **em)
        attrs = tree["em"].attrs
        rows.append({"n_components": k, **{key: attrs[key] for key in
                                           ("log_likelihood", "n_parameters", "bic", "aic", "icl")}})
    table = pd.DataFrame(rows)
    return int(table.loc[table["bic"].idxmin(), "n_components"]), table


def run_workflow(path, out_dir, *, quiet: bool = False) -> list[Path]:
    """Run a workflow file and write its outputs into ``out_dir``.

    Parameters
    ----------
    path : str or os.PathLike
        The workflow TOML file; it is validated completely before anything is fitted.
    out_dir : str or os.PathLike
        Created if needed. Receives ``<model>.nc`` containers, ``<model>-estimates.csv`` tables, the
        choice-of-K tables, and ``workflow.json`` (the resolved configuration with its hash).
    quiet : bool
        Silence the progress messages (on stderr).

    Returns
    -------
    list of pathlib.Path
        The files written.
    """
    workflow = read_workflow(path)
    progress = _Progress(quiet)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = workflow.data[list(workflow.columns)]
    weights = None if workflow.weights is None else workflow.data[workflow.weights].to_numpy()
    written = []
    for spec in workflow.models:
        k = spec.ks[0]
        if len(spec.ks) > 1:
            k, selection = _choose_k(workflow, spec, data, weights, progress)
            written.append(atomic_write(out / f"{spec.label}-choice-of-k.csv",
                                        lambda p, t=selection: t.to_csv(p, index=False)))
            progress(f"{spec.label}: BIC prefers K={k}")
        progress(f"{spec.label}: fitting K={k} by {', '.join(workflow.methods)}")
        tree = fit(_build_model(spec, k), data, weights=weights, random_seed=workflow.seed,
                   data_name=workflow.data_name, **_em_options(workflow.methods))
        tree.attrs.update({"workflow": workflow.name, "workflow_config_sha256": workflow.config_hash})
        stem = f"{spec.label.rsplit('-k', 1)[0]}-k{k}"
        if workflow.output["container"]:
            written.append(save(tree, out / f"{stem}.nc"))
        if workflow.output["table"]:
            table = estimate_table(tree)
            written.append(atomic_write(out / f"{stem}-estimates.csv", lambda p, t=table: t.to_csv(p, index=False)))
        progress(f"{spec.label}: log-likelihood {tree['em'].attrs['log_likelihood']:.3f}, "
                 f"BIC {tree['em'].attrs['bic']:.3f}")
    resolved = {"config": workflow.config, "sha256": workflow.config_hash}
    written.append(atomic_write(out / "workflow.json",
                                lambda p: p.write_text(json.dumps(resolved, indent=2, default=_jsonable))))
    progress(f"wrote {len(written)} file(s) to {out}")
    return written


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot serialise {type(value).__name__}")
