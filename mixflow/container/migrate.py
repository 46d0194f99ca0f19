"""Containers written by earlier layouts, brought to the current one on load.

- ``/em/bootstrap`` held the replicates itself; they are now ``/em/bootstrap/posterior`` (an ArviZ tree).
- The sampling methods' subtrees lacked ``observed_data`` beside ``posterior_predictive``; it is copied
  from the root where it matches the predictive variable's dims (unweighted data).
- ``sample_dims`` and other list attributes of the sampling groups were stored as JSON text; ArviZ
  reads them as lists.
"""

import json

import xarray as xr

from mixflow.container.layout import EM_BOOTSTRAP

__all__ = ["migrate"]


def _list_attribute(value):
    if isinstance(value, str) and value.startswith("["):
        try:
            decoded = json.loads(value)
        except json.JSONDecodeError:
            return value
        if isinstance(decoded, list) and decoded and all(isinstance(v, str) for v in decoded):
            return decoded
    return value


def migrate(tree: xr.DataTree) -> xr.DataTree:
    """``tree`` in the current layout (returned unchanged when it already is)."""
    nodes = {node.path: node.to_dataset(inherit=False) for node in tree.subtree}
    changed = False
    bootstrap = "/" + EM_BOOTSTRAP
    if bootstrap in nodes and nodes[bootstrap].data_vars and f"{bootstrap}/posterior" not in nodes:
        old = nodes[bootstrap]
        nodes[f"{bootstrap}/posterior"] = old.drop_attrs()
        nodes[bootstrap] = xr.Dataset(attrs=old.attrs)
        changed = True
    for method in ("/mcmc", "/advi"):
        predictive = nodes.get(f"{method}/posterior_predictive")
        if predictive is None or f"{method}/observed_data" in nodes:
            continue
        observed = nodes["/observed_data"]
        shared = {name: observed[name] for name in predictive.data_vars if name in observed.data_vars
                  and predictive[name].dims[2:] == observed[name].dims}
        if shared:
            nodes[f"{method}/observed_data"] = xr.Dataset(shared)
            changed = True
    for path, dataset in list(nodes.items()):
        if "sample_dims" in dataset.attrs and isinstance(dataset.attrs["sample_dims"], str):
            nodes[path] = dataset.assign_attrs(sample_dims=_list_attribute(dataset.attrs["sample_dims"]))
            changed = True
    if not changed:
        return tree
    return xr.DataTree.from_dict(nodes)
