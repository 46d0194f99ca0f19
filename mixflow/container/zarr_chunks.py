"""A Zarr store's count of its chunks: written with the store by mixflow, compared with the store on load.

Zarr stores no chunk wholly of the fill value (NaN, 0, False: its ``write_empty_chunks``, False by default) and
reads a chunk that is not there as the fill value. So a chunk file lost from a store (a copy cut short, a file
deleted) reads as NaN or 0 in place of the values, as silently as a chunk never written. A container's
``to_zarr`` (:func:`write_zarr`) counts the chunks each array holds once written into a root attribute of the
store; :func:`missing_chunks` finds the arrays that hold fewer now, which :func:`mixflow.load` refuses.
"""

import json
from pathlib import Path

import xarray as xr

from mixflow.container.layout import ZARR_STORED_CHUNKS
from mixflow.errors import InputError

__all__ = ["missing_chunks", "write_zarr"]


def write_zarr(tree: xr.DataTree, store, **kwargs):
    """Write a tree as xarray's ``DataTree.to_zarr`` does, and count in the store the chunks each array holds.

    The count, the store's root attribute :data:`~mixflow.container.layout.ZARR_STORED_CHUNKS`, is of the store
    as it is after the write (one added to with ``mode="a"``, or a ``region``, is counted whole). A write not
    computed yet (``compute=False``) has no chunks to count, and records none.
    """
    result = xr.DataTree.to_zarr(tree, store, **kwargs)
    if not kwargs.get("compute", True):
        return result
    import zarr

    options = {"storage_options": kwargs["storage_options"]} if kwargs.get("storage_options") else {}
    root = zarr.open_group(store, mode="r+", **options)
    counts = {}
    for name, node in root.members(max_depth=None):
        if isinstance(node, zarr.Array) and (stored := node.nchunks_initialized):
            counts[f"/{name}"] = [stored, node.nchunks]
    root.attrs[ZARR_STORED_CHUNKS] = json.dumps(counts)
    if root.metadata.consolidated_metadata is not None:  # format 2's holds the root's attributes too
        zarr.consolidate_metadata(store, **options)
    return result


def missing_chunks(path: Path) -> list[str]:
    """The arrays of a Zarr store that hold fewer chunks than the store's record says were written.

    Empty for a store without the record (written by xarray alone): there a missing chunk cannot be told from one
    wholly of the fill value, which Zarr does not store. An array whose chunk grid is not the one recorded
    (written again, chunked otherwise) is not compared. One listing of each recorded array's chunks.
    """
    import zarr

    root = zarr.open_group(path, mode="r")
    recorded = root.attrs.get(ZARR_STORED_CHUNKS)
    if recorded is None:
        return []
    counts = _stored_chunks(recorded)
    missing = []
    for name, (stored, of) in counts.items():
        try:
            array = root[name.lstrip("/")]
        except KeyError:  # an array no longer in the store: its variable is not read either
            continue
        if isinstance(array, zarr.Array) and array.nchunks == of and (now := array.nchunks_initialized) < stored:
            missing.append(f"{name}: {now} of the {stored} written")
    return missing


def _stored_chunks(recorded) -> dict:
    """The record of a Zarr store's chunks as ``{array path: (stored, of)}``.

    An :class:`~mixflow.errors.InputError` if it is not one, which :func:`mixflow.load` says of the store, as of
    any store it cannot read.
    """
    try:
        counts = json.loads(recorded)
    except (TypeError, ValueError):
        counts = None
    if not isinstance(counts, dict) or not all(
            isinstance(value, list) and len(value) == 2 and all(type(n) is int and n >= 0 for n in value)
            for value in counts.values()):
        raise InputError(f"its root attribute {ZARR_STORED_CHUNKS!r} is not the count of its arrays' chunks as "
                         f"mixflow writes it ({{array path: [stored, of]}} as JSON), got {str(recorded)[:100]!r}")
    return {str(name): tuple(value) for name, value in counts.items()}
