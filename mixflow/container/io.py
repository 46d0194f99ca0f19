"""Saving and loading the container: atomic writes, checks of what is read, migration of older layouts."""

import contextlib
import sys
from functools import cache, partial
from pathlib import Path

import xarray as xr

from mixflow.atomic import atomic_write, interrupts_deferred
from mixflow.container.layout import ZARR_STORED_CHUNKS
from mixflow.container.migrate import migrate
from mixflow.container.tree import as_container
from mixflow.container.zarr_chunks import missing_chunks
from mixflow.errors import InputError, InputTypeError, MissingPathError

__all__ = ["load", "save"]

#: what load reads, as its errors say it
_RESULTS_FILE = ("a mixflow results file (NetCDF written by 'mixflow run' or mixflow.save, or a Zarr store of one "
                 "written by tree.to_zarr)")
#: files that mark a directory as a Zarr store (format 2's root group and metadata, format 3's)
_ZARR_MARKS = (".zgroup", ".zmetadata", "zarr.json")


def save(tree: xr.DataTree, path) -> Path:
    """Write the container to NetCDF (h5netcdf) atomically: a temporary file, then a rename.

    Parameters
    ----------
    tree : xarray.DataTree
    path : str or os.PathLike
        Destination file; its directory must exist. An existing file is replaced only once the new
        one is completely written.

    Returns
    -------
    pathlib.Path

    """
    if not isinstance(tree, xr.DataTree):
        raise InputTypeError(f"tree: expected an xarray.DataTree, got {type(tree).__name__}")
    path = Path(path)
    if path.suffix.lower() == ".zarr":  # written as NetCDF under that name, no Zarr reader could open it
        raise InputError(f"path: expected the name of a NetCDF file (mixflow.save writes NetCDF, e.g. 'fit.nc'), got "
                         f"{str(path)!r}, a Zarr store's name: write a Zarr store with tree.to_zarr({str(path)!r}), "
                         "which mixflow.load reads too")
    if path.is_dir():
        raise InputError(f"path: expected a file name, got {str(path)!r}, which is a directory")
    if not path.parent.is_dir():
        folder = str(path.parent)
        what = f"{folder!r} is a file" if path.parent.exists() else f"no directory {folder!r}"
        raise MissingPathError(f"path: expected a file in an existing directory, got {str(path)!r} ({what})")
    # HDF5 aborts the whole process (or crashes in a destructor) when a write to disk fails, a full disk or a
    # file-size limit: an upstream crash, not an exception. So the file is made in memory, and only its bytes
    # are written to disk, by Python, whose failures are OSErrors; free space for those bytes (the file's exact
    # size) is checked first and the file is verified after.
    with interrupts_deferred():  # HDF5's callbacks swallow a KeyboardInterrupt
        content = _netcdf_bytes(tree)
        atomic_write(path, partial(_write_bytes, content), expected_bytes=len(content), verify=_readable_hdf5)
    return path


def _netcdf_bytes(tree: xr.DataTree) -> memoryview:
    """The container as the bytes of a NetCDF (HDF5) file, made in memory.

    xarray locks a write by its target under the active Dask scheduler; a ``dask.distributed`` lock cannot be
    named by an in-memory buffer, so the write runs under Dask's synchronous scheduler (the container's
    arrays are in memory: there is nothing to compute).
    """
    synchronous = (sys.modules["dask"].config.set(scheduler="synchronous") if "dask" in sys.modules
                   else contextlib.nullcontext())
    with synchronous:
        return _with_checksums(tree).to_netcdf(engine="h5netcdf")


def _with_checksums(tree: xr.DataTree) -> xr.DataTree:
    """A shallow copy of ``tree`` whose arrays are written with HDF5's Fletcher-32 checksum filter.

    Changed bytes in a checksummed array (a damaged disk or copy) make its read an error, not wrong numbers.
    HDF5 filters only chunked arrays of fixed-size elements: scalars (stored whole in the file's metadata) and
    text arrays (variable-length strings, such as the feature names) go without. The cost is a checksum per
    chunk and a chunk index per array (the README gives the sizes and times measured).
    """
    tree = tree.copy()  # shallow: the arrays are shared, each variable's encoding is its own
    for node in tree.subtree:
        for variable in node.variables.values():
            if variable.ndim and variable.dtype.kind not in "OU":
                variable.encoding["fletcher32"] = True
    return tree


def _write_bytes(content, path: Path) -> None:
    with open(path, "wb") as file:
        file.write(content)


def _readable_hdf5(path: Path) -> bool:
    import h5py

    try:
        with h5py.File(path, "r") as file:
            return len(file.keys()) > 0 or len(file.attrs) > 0
    except OSError:
        return False


def _damaged_arrays(path: Path) -> list[str]:
    """The arrays of an HDF5 file whose Fletcher-32 checksum (:func:`_with_checksums`) fails on reading them."""
    import h5py

    damaged = []

    def check(name, item):
        if isinstance(item, h5py.Dataset) and item.fletcher32:
            try:
                item[()]
            except OSError:
                damaged.append(f"/{name}")

    try:
        with h5py.File(path, "r") as file:
            file.visititems(check)
    except (OSError, RuntimeError, KeyError, ValueError):  # not HDF5, or metadata unreadable: the arrays found so far
        pass
    return damaged


def _read_netcdf(path: Path) -> xr.DataTree:
    """A NetCDF file's groups read into memory, as ``xr.open_datatree(path, engine="h5netcdf").load()`` reads them.

    The same reading (h5netcdf's file, xarray's decoding of each group), but the file's HDF5 objects are looked up
    once each: h5netcdf looks an array up by its path whenever its shape, chunks or dimensions are asked for, and
    its dimensions' sizes likewise, dozens of lookups per array that took most of a load. The file is only read,
    so an object found once stays what it was.
    """
    from xarray.backends import H5NetCDFStore

    # the options and the absolute path xarray's h5netcdf engine opens a file with (the variables' encoding records
    # the path as their source)
    with _reading_file_class()(path.absolute(), "r", decode_vlen_strings=True, phony_dims="access") as file:
        groups = {}

        def read(group, name: str) -> None:
            # not closed here: closing a group's store closes the file (the store's manager is the file itself)
            groups[name] = xr.open_dataset(H5NetCDFStore(group), engine="store").load()
            for child_name, child in group.groups.items():
                read(child, f"{name.rstrip('/')}/{child_name}")

        read(file, "/")
    return xr.DataTree.from_dict(groups)


@cache
def _reading_file_class() -> type:
    """h5netcdf's file class for reading, its HDF5 objects looked up once each; made on first use (h5py loads late).

    Its h5py file keeps what it looks up by path (the file is only read: an object found once stays what it was).
    A file whose opening failed part way (damaged metadata) closes quietly: h5netcdf's, once HDF5 has opened the
    file, reads its metadata before it is whole, and when that fails its ``__del__`` raises ``AttributeError`` (no
    ``_writable``), which Python prints as "Exception ignored" with a traceback, under the command line's one-line
    error. Such a file has nothing of its own to flush, and h5py closes the HDF5 file with its object.
    """
    import h5netcdf
    import h5py

    class LookedUpOnce(h5py.File):
        def __getitem__(self, name):
            if not isinstance(name, str):
                return super().__getitem__(name)
            found = self.__dict__.setdefault("_found", {})
            if name not in found:
                found[name] = super().__getitem__(name)
            return found[name]

    class ReadingFile(h5netcdf.File):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._h5file.__class__ = LookedUpOnce

        def close(self):
            if not self.__dict__.get("_closed", True) and "_writable" not in self.__dict__:
                self._closed = True
                return
            super().close()

        __del__ = close

    return ReadingFile


def load(path) -> xr.DataTree:
    """Read a container written by :func:`save` (or a Zarr store of one, ``tree.to_zarr``), fully into memory.

    The file is closed on return. A file whose arrays' checksums (written by :func:`save`) no longer match
    their bytes is refused, as is a Zarr store written by mixflow that lost chunk files (which Zarr reads as
    NaN or 0, :mod:`mixflow.container.zarr_chunks`). Files written without checksums are read as they are.
    """
    path = Path(path)
    store = path.is_dir() and any((path / name).is_file() for name in _ZARR_MARKS)
    if not path.exists():
        raise MissingPathError(f"path: expected an existing mixflow results file, got {str(path)!r}")
    if path.is_dir() and not store:
        raise InputError(f"path: expected {_RESULTS_FILE}, got {str(path)!r}, a directory that is no Zarr store")
    kind, what = ("a Zarr store", "a Zarr store") if store else ("NetCDF", "a NetCDF file")
    try:
        missing = missing_chunks(path) if store else []
        if store and not missing:
            with interrupts_deferred(), xr.open_datatree(path, engine="zarr") as tree:
                tree = tree.load().copy()
        elif not store:
            with interrupts_deferred():
                tree = _read_netcdf(path)
    except PermissionError:
        raise
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as error:  # RuntimeError: a codec's, on bad bytes
        damaged = [] if store or not isinstance(error, OSError) else _damaged_arrays(path)
        if damaged:
            shown = ", ".join(damaged[:5]) + (f" and {len(damaged) - 5} more" if len(damaged) > 5 else "")
            raise InputError(f"path: expected {_RESULTS_FILE}, got {str(path)!r}, a damaged file: the bytes of "
                             f"{shown} no longer match the checksum written with them (changed since, by a disk or "
                             "copy error); copy the file again whole, or write it again from the fit") from None
        raise InputError(f"path: expected {_RESULTS_FILE}, got {str(path)!r}, which cannot be read as {kind} "
                         f"({error})") from None
    if missing:
        shown = "; ".join(missing[:5]) + (f"; and {len(missing) - 5} more arrays" if len(missing) > 5 else "")
        raise InputError(f"path: expected {_RESULTS_FILE}, got {str(path)!r}, an incomplete or damaged Zarr store: "
                         f"chunk files are missing ({shown}), which Zarr would read as fill values (NaN, 0) in "
                         "place of the data; copy the store again whole, or write it again from the fit")
    tree.attrs.pop(ZARR_STORED_CHUNKS, None)  # the store's, not the results'
    if "model" not in tree.attrs or "observed_data" not in tree.children:
        raise InputError(f"path: expected {_RESULTS_FILE}, got {str(path)!r}, {what} without the model attribute and "
                         f"/observed_data (groups {sorted(tree.children)}, attributes {sorted(tree.attrs)[:8]})")
    return as_container(migrate(tree))
