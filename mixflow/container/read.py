"""Reading a container back: is it one, which methods it holds, their estimates, draws and data."""

import dataclasses
import json

import numpy as np
import xarray as xr

from mixflow.container.layout import (
    DRAW_GROUPS,
    EM,
    EM_ESTIMATE,
    METHODS,
    OBSERVED_DATA,
    RESPONSIBILITY_GROUPS,
    RUN_WARNINGS,
    UNITS,
)
from mixflow.data import Data
from mixflow.errors import InputError, InputTypeError
from mixflow.families.base import model_from_json

__all__ = [
    "available_methods",
    "check_tree",
    "data_units",
    "fitted_estimate",
    "fitted_model",
    "flagged_fit",
    "frequency_weights",
    "hard_labels",
    "has_group",
    "mean_responsibilities",
    "method_draws",
    "observed_data",
    "parameter_names",
]

_SAMPLE_DIMS = ("chain", "draw")


def flagged_fit(attrs) -> tuple[bool, bool]:
    """Whether an EM fit (its ``/em`` attributes) is degenerate (a collapsed or empty component) and spurious."""
    degenerate = bool(attrs.get("degenerate", 0)) or bool(json.loads(attrs.get("collapsed_components", "[]")))
    return degenerate, bool(json.loads(attrs.get("spurious_components", "[]")))


def check_tree(tree, name: str = "tree") -> None:
    """Raise unless ``tree`` is a mixflow container (a DataTree with the model declaration)."""
    if not isinstance(tree, xr.DataTree):
        raise InputTypeError(f"{name}: expected a mixflow result (xarray.DataTree from mixflow.fit), "
                        f"got {type(tree).__name__}")
    if "model" not in tree.attrs or OBSERVED_DATA not in tree.children:
        raise InputError(f"{name}: expected a mixflow result with the model in its attributes and "
                         f"/observed_data, got a DataTree with groups {sorted(tree.children)}")
    model_from_json(tree.attrs["model"])  # an attribute that is not a model declaration says so here
    try:
        names = parameter_names(tree)
    except (KeyError, ValueError, TypeError) as error:  # /observed_data without its feature coordinate
        raise InputError(f"{name}: expected a mixflow result whose /observed_data has the features, got one "
                         f"without ({type(error).__name__}: {error})") from None
    for group in (EM_ESTIMATE, *DRAW_GROUPS.values()):
        if has_group(tree, group):
            missing = [parameter for parameter in names if parameter not in tree[group].data_vars]
            if missing:
                raise InputError(f"{name}: expected the model's parameters {names} in /{group}, got "
                                 f"{sorted(tree[group].data_vars)} (missing {missing})")
    observed = tree[OBSERVED_DATA].to_dataset(inherit=False)
    if "x" not in observed.data_vars or observed["x"].dims != ("obs", "feature"):
        raise InputError(f"{name}: expected /observed_data to hold the data, x (obs, feature), got "
                         f"{sorted(observed.data_vars)} (a damaged or altered file)")
    if has_group(tree, EM_ESTIMATE):  # EM's estimates are numbers, whatever the fit
        bad = [parameter for parameter in names if not np.isfinite(tree[EM_ESTIMATE][parameter].values).all()]
        if bad:
            raise InputError(f"{name}: expected finite numbers in /{EM_ESTIMATE}, got values that are not in {bad} "
                             "(a damaged or altered file)")
    _check_rows(tree, name)
    _check_run_warnings(tree, name)


def _check_run_warnings(tree, name: str) -> None:
    """Raise unless the root's recorded warnings (if any) are a JSON list of ``{"category", "message", ...}``.

    The summary and the report list them; an attribute altered into something else is a damaged file, said here
    rather than left to fail (or to be skipped without a word) where they are read.
    """
    text = tree.attrs.get(RUN_WARNINGS)
    if text is None or text == "":
        return
    try:
        recorded = json.loads(text)
    except (TypeError, ValueError):
        recorded = None
    if isinstance(recorded, list) and all(isinstance(entry, dict) and isinstance(entry.get("category"), str)
                                          and isinstance(entry.get("message"), str) for entry in recorded):
        return
    shown = text if len(str(text)) <= 80 else f"{str(text)[:77]}..."
    raise InputError(f"{name}: expected the attribute {RUN_WARNINGS!r} to be a JSON list of the warnings recorded, "
                     f'each {{"category": ..., "message": ...}}, got {shown!r} (a damaged or altered file)')


def _check_rows(tree, name: str) -> None:
    """Raise unless every group's observations are /observed_data's rows (a file cut short or mixed from two fits).

    A group with an ``obs`` dimension (responsibilities, pointwise log-likelihood, replicates) has one entry per
    row of /observed_data; the EM fit's ``n_observations`` is their total weight, unless /observed_data holds a
    uniform sample of the rows (its ``n_obs`` attribute).
    """
    observed = tree[OBSERVED_DATA]
    if "obs" not in observed.dims:
        raise InputError(f"{name}: expected /observed_data with an 'obs' dimension (its rows), got dimensions "
                         f"{sorted(observed.dims)}")
    rows = observed.sizes["obs"]
    for node in tree.subtree:
        sizes = node.to_dataset(inherit=False).sizes
        if node.path != f"/{OBSERVED_DATA}" and sizes.get("obs", rows) != rows:
            raise InputError(f"{name}: expected {node.path} to have one entry per row of /observed_data ({rows}), "
                             f"got {sizes['obs']} (a file cut short, or groups of two fits)")
    recorded = tree[EM].attrs.get("n_observations") if EM in tree.children else None
    if recorded is None or "n_obs" in observed.attrs:
        return
    total = float(observed["weights"].sum()) if "weights" in observed.data_vars else float(rows)
    if not abs(total - float(recorded)) <= 1e-9 * max(total, 1.0):
        raise InputError(f"{name}: expected /observed_data to hold the {float(recorded):.6g} observations the EM fit "
                         f"recorded (/em n_observations), got {total:.6g} (a file cut short, or groups of two fits)")


def data_units(tree) -> dict:
    """The units of the data's columns recorded in the container (``{column: unit}``; empty when none are)."""
    try:
        units = json.loads(tree.attrs.get(UNITS, "{}") or "{}")
    except (TypeError, ValueError):
        return {}
    return {str(k): str(v) for k, v in units.items()} if isinstance(units, dict) else {}


def parameter_names(tree) -> list[str]:
    """The model's parameter names (``weights``, ``mu``, ``covariance`` or ``variance``), in order."""
    model = model_from_json(tree.attrs["model"])
    return list(model.parameter_dims(tree[OBSERVED_DATA]["feature"].values))


def has_group(tree, path: str) -> bool:
    """Whether the container has the group at ``path`` (e.g. ``"em/estimate"``)."""
    node = tree
    for part in path.split("/"):
        if part not in node.children:
            return False
        node = node[part]
    return True


def available_methods(tree) -> list[str]:
    """The methods present in a container, in :data:`METHODS` order."""
    present = {EM: has_group(tree, EM_ESTIMATE), **{m: has_group(tree, path) for m, path in DRAW_GROUPS.items()}}
    return [method for method in METHODS if present[method]]


def method_draws(tree, method: str) -> xr.Dataset | None:
    """The draws of one method (``bootstrap``, ``mcmc``, ``advi``): the model's parameters only.

    Returns None for ``em`` and for a method the container does not hold.
    """
    if method not in DRAW_GROUPS or not has_group(tree, DRAW_GROUPS[method]):
        return None
    dataset = tree[DRAW_GROUPS[method]].to_dataset()
    names = [name for name in parameter_names(tree) if name in dataset.data_vars]
    return dataset[names]


def hard_labels(tree, method: str) -> np.ndarray | None:
    """Most probable component of each observation under a method, or None if it has no responsibilities.

    The argmax of :func:`mean_responsibilities`.
    """
    resp = mean_responsibilities(tree, method)
    return None if resp is None else resp.argmax(axis=1)


def mean_responsibilities(tree, method: str) -> np.ndarray | None:
    """Each observation's responsibilities (obs, component) under a method, or None if it has none.

    Uses ``/em/responsibilities`` for EM and the posterior-mean responsibilities
    (``responsibilities_mean``, or ``responsibilities`` averaged over any chain/draw dims) of MCMC and ADVI.
    """
    path = RESPONSIBILITY_GROUPS.get(method)
    if path is None or not has_group(tree, path):
        return None
    group = tree[path]
    name = "responsibilities_mean" if "responsibilities_mean" in group.data_vars else "responsibilities"
    if name not in group.data_vars:
        return None
    resp = group[name]
    sample = [dim for dim in _SAMPLE_DIMS if dim in resp.dims]
    if sample:
        resp = resp.mean(sample)
    return resp.transpose("obs", "component").values


def frequency_weights(tree) -> np.ndarray | None:
    """The frequency weight of each row of ``/observed_data`` (float), or None when the data had none."""
    observed = tree.children.get(OBSERVED_DATA)
    if observed is None or "weights" not in observed.data_vars:
        return None
    return observed["weights"].values.astype(float)


def observed_data(tree) -> Data:
    """The data a container was fitted on, as validated :class:`mixflow.data.Data` (copies)."""
    observed = tree[OBSERVED_DATA]
    weights = observed["weights"].values.copy() if "weights" in observed.data_vars else None
    return Data(values=observed["x"].transpose("obs", "feature").values.astype(float),
                features=observed["feature"].values.astype(str), obs=observed["obs"].values.copy(),
                weights=weights)


def fitted_estimate(tree) -> dict:
    """Copies of the ``/em/estimate`` arrays by name (ValueError naming ``tree`` when there is none)."""
    if "em" not in tree.children or "estimate" not in tree["em"].children:
        raise InputError("tree: expected a result with an /em/estimate (from mixflow.fit), got groups "
                         f"{sorted(tree.children)}")
    estimate = tree[EM_ESTIMATE].to_dataset()
    return {name: estimate[name].values.copy() for name in estimate.data_vars}


def fitted_model(tree, n_active: int):
    """The declared model, with as many components as the (possibly trimmed) estimate."""
    model = model_from_json(tree.attrs["model"])
    return model if model.n_components == n_active else dataclasses.replace(model, n_components=n_active)


