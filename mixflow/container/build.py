"""One converter builds the container from plain ``{group: {"variables", "attrs"}}`` dicts, with provenance."""

import json
from datetime import UTC, datetime
from functools import cache
from importlib import metadata

import numpy as np
import xarray as xr

from mixflow.container.layout import RUN_WARNINGS

__all__ = ["build_tree", "make_attrs", "record_warnings", "recorded_warnings"]

_LIBRARIES = ("numpy", "scipy", "xarray", "pandas", "pymc", "pytensor", "arviz", "h5netcdf", "nutpie")


@cache
def _version(name: str) -> str:
    """The installed version of a distribution, read once per process (each read parses its metadata files)."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def make_attrs(model, *, data_name: str, random_seed: int) -> dict:
    """Root provenance attributes: versions, the model declaration, the data name and the seed."""
    attrs = {
        "mixflow_version": _version("mixflow"),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": model.to_json(),
        "data_name": data_name,
        "random_seed": int(random_seed),
    }
    attrs.update({f"{name}_version": _version(name) for name in _LIBRARIES})
    return attrs


def _dataset(variables: dict, coords: dict, attrs: dict | None = None) -> xr.Dataset:
    used = {dim for dims, _ in variables.values() for dim in dims}
    return xr.Dataset(
        {name: (dims, np.asarray(value)) for name, (dims, value) in variables.items()},
        coords={dim: values for dim, values in coords.items() if dim in used},
        attrs=attrs or {},
    )


def build_tree(groups: dict, *, coords: dict, attrs: dict) -> xr.DataTree:
    """Build the container from plain arrays.

    Parameters
    ----------
    groups : dict
        ``{path: {"variables": {name: (dims, array)}, "attrs": {...}, "coords": {...}}}``, e.g.
        ``"em/estimate"``; a group's own ``coords`` (optional) take precedence over ``coords``.
    coords : dict
        Coordinate values per dimension name (only the dims a group uses are attached to it).
    attrs : dict
        Root attributes (see :func:`make_attrs`).

    Returns
    -------
    xarray.DataTree

    """
    nodes = {"/": xr.Dataset(attrs=attrs)}
    for path, group in groups.items():
        nodes[f"/{path}"] = _dataset(group.get("variables", {}), {**coords, **group.get("coords", {})},
                                     group.get("attrs"))
    return xr.DataTree.from_dict(nodes)


def recorded_warnings(tree) -> list[dict]:
    """The warnings recorded in ``tree``'s root ``run_warnings`` (:func:`record_warnings`; a workflow's), as dicts.

    None where the attribute is missing or not a JSON list; entries that are not dicts are left out.
    """
    return [w for w in _recorded(tree) if isinstance(w, dict)]


def _recorded(tree) -> list:
    """``tree``'s root ``run_warnings`` as it is, every entry (none where it is missing or not a JSON list)."""
    try:
        recorded = json.loads(tree.attrs.get(RUN_WARNINGS, "[]") or "[]")
    except (TypeError, ValueError):
        return []
    return recorded if isinstance(recorded, list) else []


def record_warnings(tree: xr.DataTree, caught: list, stage: str, methods: list | None = None,
                    replaced: list = ()) -> xr.DataTree:
    """``tree`` with the warnings ``caught`` (``warnings.WarningMessage``) added to its root ``run_warnings``.

    Each distinct message once per method, as ``{"stage", "category", "message"}`` (the form a workflow records),
    with ``"method"`` where ``methods`` gives the method that raised each (None: the data's checks); the summary
    and the report list them. The warnings recorded of the methods ``replaced`` (fitted again into the tree) are
    dropped first: they were said of fits the tree no longer holds. (Warnings recorded without a method, the data's
    or a workflow's other stages, or in results saved before methods were recorded, stay.)
    """
    recorded = _recorded(tree)
    kept = [w for w in recorded if not (isinstance(w, dict) and w.get("method") in replaced)]
    if not caught and len(kept) == len(recorded):
        return tree
    # once per method: a message two methods raised stays the other's when one of them is fitted again
    seen = {(w.get("category"), w.get("message"), w.get("method")) for w in kept if isinstance(w, dict)}
    for warning, method in zip(caught, methods or [None] * len(caught), strict=True):
        key = (warning.category.__name__, str(warning.message), method)
        if key not in seen:
            seen.add(key)
            kept.append({"stage": stage, "category": key[0], "message": key[1]}
                        | ({"method": method} if method is not None else {}))
    tree.attrs[RUN_WARNINGS] = json.dumps(kept)
    return tree
