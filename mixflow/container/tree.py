"""The results container's own type: an ``xarray.DataTree`` whose ``repr`` says what was fitted.

:class:`Container` adds two things to a DataTree. Its display: in a terminal, ``repr(tree)`` is
:func:`mixflow.describe`'s screenful (the model, the data, each method's state and warnings, the estimates
side by side) and its groups; in a notebook, the same text above xarray's own view, folded. And its Zarr
writer: ``tree.to_zarr`` records in the store how many chunks each array has, for :func:`mixflow.load` to refuse
a store that lost some (:mod:`mixflow.container.zarr_chunks`). Every other DataTree operation works unchanged and
returns plain DataTrees (``tree["em"]``, ``tree.copy()`` keeps the type), so a subtree displays as xarray
displays it. xarray's full view stays one call away: ``xr.DataTree.__repr__(tree)``.

The text comes from the presentation layer, which registers it with :func:`set_describer` when mixflow is
imported (this layer sits below it); without one, or if describing fails, the display is xarray's.
"""

import html
from collections.abc import Callable

import xarray as xr

from mixflow.container.layout import OBSERVED_DATA
from mixflow.container.zarr_chunks import write_zarr

__all__ = ["Container", "as_container", "set_describer"]

_DESCRIBER: list[Callable[[xr.DataTree], str]] = []


def set_describer(describer: Callable[[xr.DataTree], str]) -> None:
    """Register the function whose text a container displays (``mixflow.present.summary.describe``)."""
    _DESCRIBER[:] = [describer]


class Container(xr.DataTree):
    """A mixflow results container: an ``xarray.DataTree`` that displays what it holds in a screenful."""

    __slots__ = ()  # the layout of a DataTree, so that a plain tree's class can be switched in place

    def to_zarr(self, store, mode="w-", encoding=None, consolidated=True, group=None, write_inherited_coords=False,
                compute=True, **kwargs):
        """Write the container to a Zarr store, as ``xarray.DataTree.to_zarr`` does, with a count of its chunks.

        Zarr reads a missing chunk as the fill value (NaN, 0); the count, a root attribute of the store, lets
        :func:`mixflow.load` refuse a store that lost chunk files rather than read NaN in place of the values.
        """
        return write_zarr(self, store, mode=mode, encoding=encoding, consolidated=consolidated, group=group,
                          write_inherited_coords=write_inherited_coords, compute=compute, **kwargs)

    def _description(self) -> str | None:
        if not _DESCRIBER or self.parent is not None:
            return None
        try:
            return _DESCRIBER[0](self)
        except Exception:  # a display must never raise; xarray's view is shown instead
            return None

    def _groups_line(self) -> str:
        return "groups:\n" + "\n".join(
            f"  {node.path}" + (f": {', '.join(node.children)}" if node.children else "")
            for node in self.children.values())

    def __repr__(self) -> str:
        text = self._description()
        if text is None:
            return xr.DataTree.__repr__(self)
        return (f"<mixflow results: xarray.DataTree>\n{text}\n\n{self._groups_line()}\n"
                "xarray's view of every group: xarray.DataTree.__repr__(tree)")

    def _repr_html_(self) -> str:
        text = self._description()
        xarray_view = xr.DataTree._repr_html_(self)
        if text is None:
            return xarray_view
        return (f"<pre>{html.escape(text)}\n\n{html.escape(self._groups_line())}</pre>"
                f"<details><summary>xarray view</summary>{xarray_view}</details>")


def as_container(tree: xr.DataTree) -> xr.DataTree:
    """``tree`` displayed as a mixflow container when it is one (the root of a result); others unchanged."""
    if (type(tree) is xr.DataTree and tree.parent is None and "model" in tree.attrs
            and OBSERVED_DATA in tree.children):
        tree.__class__ = Container
    return tree
