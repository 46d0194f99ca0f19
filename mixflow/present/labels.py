"""Reference labels kept with a result (e.g. the iris species), and how well each method's clusters match them.

The labels are for evaluation only: no method sees them. They live in the container's
``/reference_labels`` group (variable ``label`` along ``obs``; attribute ``column``, the name of the
labels), so a saved result can be reported again with the same agreement table.
"""

import numpy as np
import pandas as pd
import xarray as xr

from mixflow.container.layout import OBSERVED_DATA, REFERENCE_LABELS
from mixflow.container.read import available_methods, check_tree, frequency_weights, hard_labels
from mixflow.errors import InputError, InputTypeError
from mixflow.present.compare import METHOD_LABELS, adjusted_rand_index

__all__ = ["GROUP", "cross_tabulation", "reference_agreement", "reference_labels", "with_reference_labels"]

#: The container group that holds the reference labels.
GROUP = REFERENCE_LABELS


def with_reference_labels(tree, labels, *, name: str = "labels") -> xr.DataTree:
    """A copy of ``tree`` that carries ``labels`` in ``/reference_labels``.

    Parameters
    ----------
    tree : xarray.DataTree
        A mixflow result.
    labels : array-like of shape (n_obs,)
        One label per observation, in the order of ``/observed_data`` (stored as strings).
    name : str, default "labels"
        What the labels are (e.g. the data column ``"Species"``); shown in tables and the report.

    Returns
    -------
    xarray.DataTree

    """
    check_tree(tree)
    if not isinstance(name, str) or not name:
        raise InputTypeError(f"name: expected a non-empty str, got {name!r}")
    values = np.asarray(labels)
    n_obs = tree[OBSERVED_DATA].sizes["obs"]
    if values.shape != (n_obs,):
        raise InputError(f"labels: expected one label per observation, shape ({n_obs},), got shape {values.shape}")
    missing = pd.isna(values)
    if missing.any():
        raise InputError(f"labels: expected no missing values, got {int(missing.sum())} at rows "
                         f"{np.flatnonzero(missing)[:5].tolist()}")
    group = xr.Dataset({"label": (("obs",), values.astype(str))},
                       coords={"obs": tree[OBSERVED_DATA]["obs"].values}, attrs={"column": name})
    result = tree.copy()
    result[GROUP] = xr.DataTree(group)
    return result


def reference_labels(tree) -> tuple[str, np.ndarray] | None:
    """``(name, labels)`` stored by :func:`with_reference_labels`, or None when the result has none."""
    if GROUP not in tree.children or "label" not in tree[GROUP].data_vars:
        return None
    group = tree[GROUP]
    return str(group.attrs.get("column", "labels")), group["label"].values.astype(str)


def reference_agreement(tree) -> pd.DataFrame:
    """Agreement of each method's hard cluster labels with the reference labels.

    Parameters
    ----------
    tree : xarray.DataTree
        A mixflow result with ``/reference_labels``.

    Returns
    -------
    pandas.DataFrame
        Indexed by method (``em``, ``mcmc``, ``advi``: those with responsibilities), with columns
        ``adjusted_rand_index`` (1 = the same partition up to relabelling, about 0 = unrelated),
        ``n_clusters`` (clusters that hold at least one observation) and ``n_classes`` (distinct
        reference labels). ``attrs["column"]`` names the labels. Empty when the result has no labels.

    """
    check_tree(tree)
    stored = reference_labels(tree)
    if stored is None:
        return pd.DataFrame(columns=["adjusted_rand_index", "n_clusters", "n_classes"],
                            index=pd.Index([], name="method"))
    name, labels = stored
    weights = frequency_weights(tree)
    rows = {}
    for method in available_methods(tree):
        clusters = hard_labels(tree, method)
        if clusters is not None:
            rows[method] = {"adjusted_rand_index": adjusted_rand_index(clusters, labels, weights),
                            "n_clusters": int(np.unique(clusters).size),
                            "n_classes": int(np.unique(labels).size)}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "method"
    table.attrs["column"] = name
    return table


def cross_tabulation(tree, method: str = "em") -> pd.DataFrame | None:
    """Counts of reference label x hard cluster of one method (frequency weights counted), or None.

    Rows are the reference labels (sorted), columns the components of the fit.
    """
    check_tree(tree)
    stored, clusters = reference_labels(tree), hard_labels(tree, method)
    if stored is None or clusters is None:
        return None
    name, labels = stored
    weights = frequency_weights(tree)
    frame = pd.DataFrame({name: labels, "component": clusters,
                          "count": np.ones(labels.size) if weights is None else weights})
    table = frame.pivot_table(index=name, columns="component", values="count", aggfunc="sum", fill_value=0)
    table.columns.name = f"component ({METHOD_LABELS[method]})"
    return table
