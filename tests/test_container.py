"""The results container: layout, and save/load losing nothing."""

import numpy as np
import pytest
import xarray as xr

import mixflow
from mixflow.cli import main


def assert_trees_identical(left: xr.DataTree, right: xr.DataTree):
    """Every group, value, dtype, coordinate and attribute equal."""
    assert sorted(n.path for n in left.subtree) == sorted(n.path for n in right.subtree)
    for node in left.subtree:
        other = right[node.path] if node.path != "/" else right
        assert node.attrs.keys() == other.attrs.keys(), node.path
        for key, value in node.attrs.items():
            np.testing.assert_array_equal(value, other.attrs[key], err_msg=f"{node.path} attrs {key}")
            if isinstance(value, list):  # e.g. sample_dims, which ArviZ reads as a list
                assert isinstance(other.attrs[key], list), key
            else:
                assert type(np.asarray(value).item()) is type(np.asarray(other.attrs[key]).item()), key
        ours, theirs = node.to_dataset(inherit=False), other.to_dataset(inherit=False)
        assert ours.identical(theirs), node.path
        for name, variable in ours.variables.items():
            assert variable.dtype == theirs[name].dtype, (node.path, name)


@pytest.mark.parametrize("method", ["em", "map"])
def test_save_and_load_lose_nothing(tmp_path, faithful, method):
    tree = mixflow.fit(mixflow.GaussianMixture(2, covariance="full"), faithful, method=method,
                       weights=np.arange(len(faithful)) % 3 + 1.0, random_seed=1, data_name="faithful")
    path = mixflow.save(tree, tmp_path / "result.nc")
    loaded = mixflow.load(path)
    assert_trees_identical(tree, loaded)
    assert not list(tmp_path.glob(".*tmp"))


def test_layout_of_the_container(faithful):
    tree = mixflow.fit(mixflow.GaussianMixture(2, covariance="diag"), faithful, random_seed=1, data_name="faithful")
    assert {"observed_data", "em"} <= set(tree.children)
    assert {"estimate", "responsibilities", "sample_stats"} == set(tree["em"].children)
    assert tree["em/estimate"]["mu"].dims == ("component", "feature")
    assert tree["em/estimate"]["variance"].dims == ("component", "feature")
    assert list(tree["observed_data"]["feature"].values) == ["eruptions", "waiting"]
    assert mixflow.model_from_json(tree.attrs["model"]) == mixflow.GaussianMixture(2, covariance="diag")
    for key in ("mixflow_version", "pymc_version", "arviz_version", "created_at", "random_seed", "data_name"):
        assert key in tree.attrs
    for key in ("method", "log_likelihood", "n_iter", "converged", "n_parameters", "bic", "aic", "icl"):
        assert key in tree["em"].attrs


def test_save_is_atomic_and_replaces_only_when_complete(tmp_path, faithful, monkeypatch):
    tree = mixflow.fit(mixflow.GaussianMixture(2), faithful, random_seed=1)
    path = mixflow.save(tree, tmp_path / "result.nc")
    before = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(xr.DataTree, "to_netcdf", broken)
    with pytest.raises(OSError, match="disk full"):
        mixflow.save(tree, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.nc"]


def test_save_and_load_errors(tmp_path, faithful):
    tree = mixflow.fit(mixflow.GaussianMixture(2), faithful, random_seed=1)
    with pytest.raises(FileNotFoundError, match="path: expected a file in an existing directory"):
        mixflow.save(tree, tmp_path / "missing" / "result.nc")
    with pytest.raises(mixflow.InputError, match=f"path: expected a file name, got '{tmp_path}', which is a "
                                                 "directory"):
        mixflow.save(tree, tmp_path)
    with pytest.raises(TypeError, match="tree: expected an xarray.DataTree, got dict"):
        mixflow.save({}, tmp_path / "result.nc")
    with pytest.raises(FileNotFoundError, match="path: expected an existing mixflow results file"):
        mixflow.load(tmp_path / "nothing.nc")
    # a missing path is bad input too (an InputError), as well as Python's FileNotFoundError
    with pytest.raises(mixflow.MissingPathError):
        mixflow.load(tmp_path / "nothing.nc")
    assert issubclass(mixflow.MissingPathError, mixflow.InputError)


def test_a_zarr_store_is_not_written_as_netcdf_under_its_name_and_is_read(tmp_path, faithful):
    # save writes NetCDF: under a Zarr store's name no Zarr reader would open it; load reads a Zarr store
    tree = mixflow.fit(mixflow.GaussianMixture(2), faithful, random_seed=1)
    with pytest.raises(mixflow.InputError, match=r"^path: expected the name of a NetCDF file \(mixflow.save writes "
                                                 r"NetCDF, e.g. 'fit.nc'\), got '.*fit.zarr', a Zarr store's name: "
                                                 r"write a Zarr store with tree.to_zarr\(.*\), which mixflow.load "
                                                 r"reads too$"):
        mixflow.save(tree, tmp_path / "fit.zarr")
    assert not (tmp_path / "fit.zarr").exists()
    tree.to_zarr(tmp_path / "fit.zarr")
    loaded = mixflow.load(tmp_path / "fit.zarr")
    assert loaded["em"].attrs["log_likelihood"] == tree["em"].attrs["log_likelihood"]
    for name in ("weights", "mu", "covariance"):
        np.testing.assert_array_equal(loaded["em/estimate"][name].values, tree["em/estimate"][name].values)
    (tmp_path / "other").mkdir()
    with pytest.raises(mixflow.InputError, match=r"a directory that is no Zarr store$"):
        mixflow.load(tmp_path / "other")
    # the command line shows it as it shows a NetCDF file
    assert main(["show", str(tmp_path / "fit.zarr")]) == 0
    # a store whose bytes a codec cannot decode is bad input, not an internal error
    chunks = [p for p in (tmp_path / "fit.zarr" / "em" / "estimate").rglob("*") if p.is_file() and "c" in p.parts]
    assert chunks
    for chunk in chunks:
        chunk.write_bytes(b"not a chunk" * 10)
    with pytest.raises(mixflow.InputError, match=r"cannot be read as a Zarr store"):
        mixflow.load(tmp_path / "fit.zarr")
    assert main(["show", str(tmp_path / "fit.zarr")]) == 2



def _chunk_files(store, array: str) -> list:
    """The chunk files of one array of a Zarr store (format 3: under its ``c`` folder)."""
    return sorted(p for p in (store / array / "c").rglob("*") if p.is_file())


@pytest.mark.parametrize("array", ["em/estimate/mu", "observed_data/x", "em/responsibilities/responsibilities",
                                   "em/sample_stats/n_iter"])
def test_a_zarr_store_that_lost_a_chunk_file_is_refused(tmp_path, faithful, array):
    # Zarr reads a missing chunk as the fill value: NaN (or 0) in place of the values, unless refused
    tree = mixflow.fit(mixflow.GaussianMixture(2), faithful, random_seed=1)
    tree.to_zarr(tmp_path / "fit.zarr")
    (chunk,) = _chunk_files(tmp_path / "fit.zarr", array)
    chunk.unlink()
    with pytest.raises(mixflow.InputError, match=rf"^path: expected a mixflow results file .* got '.*fit.zarr', an "
                                                 rf"incomplete or damaged Zarr store: chunk files are missing "
                                                 rf"\(/{array}: 0 of the 1 written\), which Zarr would read as "
                                                 rf"fill values \(NaN, 0\) in place of the data; copy the store "
                                                 rf"again whole, or write it again from the fit$"):
        mixflow.load(tmp_path / "fit.zarr")


def test_a_zarr_store_that_lost_one_of_an_arrays_chunks_is_refused(tmp_path, faithful):
    tree = mixflow.fit(mixflow.GaussianMixture(2), faithful, random_seed=1)
    tree.to_zarr(tmp_path / "fit.zarr", encoding={"/observed_data": {"x": {"chunks": (100, 2)}}})
    chunks = _chunk_files(tmp_path / "fit.zarr", "observed_data/x")
    assert len(chunks) == 3
    chunks[1].unlink()
    with pytest.raises(mixflow.InputError, match=r"damaged Zarr store: chunk files are missing \(/observed_data/x: "
                                                 r"2 of the 3 written\)"):
        mixflow.load(tmp_path / "fit.zarr")



def test_a_zarr_format_2_store_that_lost_a_chunk_file_is_refused(tmp_path, faithful):
    tree = mixflow.fit(mixflow.GaussianMixture(2), faithful, random_seed=1)
    tree.to_zarr(tmp_path / "fit.zarr", zarr_format=2)
    assert_trees_identical(tree, mixflow.load(tmp_path / "fit.zarr"))
    (tmp_path / "fit.zarr" / "em" / "estimate" / "mu" / "0.0").unlink()
    with pytest.raises(mixflow.InputError, match=r"damaged Zarr store: chunk files are missing \(/em/estimate/mu: 0 "
                                                 r"of the 1 written\)"):
        mixflow.load(tmp_path / "fit.zarr")

@pytest.mark.parametrize("command", ["show", "report"])
def test_the_command_line_refuses_a_zarr_store_that_lost_a_chunk_file(tmp_path, faithful, capsys, command):
    tree = mixflow.fit(mixflow.GaussianMixture(2), faithful, random_seed=1)
    store = tmp_path / "fit.zarr"
    tree.to_zarr(store)
    for chunk in _chunk_files(store, "em/estimate/mu") + _chunk_files(store, "observed_data/x"):
        chunk.unlink()
    capsys.readouterr()
    assert main([command, str(store)]) == 2
    assert capsys.readouterr().err == (
        f"mixflow {command}: error: results: expected a mixflow results file (NetCDF written by 'mixflow run' or "
        f"mixflow.save, or a Zarr store of one written by tree.to_zarr), got {str(store)!r}, an incomplete or "
        "damaged Zarr store: chunk files are missing (/em/estimate/mu: 0 of the 1 written; /observed_data/x: 0 of "
        "the 1 written), which Zarr would read as fill values (NaN, 0) in place of the data; copy the store again "
        "whole, or write it again from the fit\n")
    assert not list(tmp_path.glob("*.html"))


def test_a_zarr_store_with_all_nan_and_all_false_variables_loads(tmp_path, faithful):
    # Zarr stores no chunk wholly of the fill value (NaN, False): such a variable has none, and none is missing
    tree = mixflow.fit(mixflow.GaussianMixture(2), faithful, random_seed=1)
    tree["em/sample_stats"]["aitken_gap"] = tree["em/sample_stats"]["aitken_gap"] * np.nan  # a NaN diagnostic
    assert not tree["em/sample_stats"]["degenerate"].values.any()
    tree.to_zarr(tmp_path / "fit.zarr")
    for array in ("em/sample_stats/aitken_gap", "em/sample_stats/degenerate", "em/sample_stats/spurious"):
        assert not _chunk_files(tmp_path / "fit.zarr", array), array
    loaded = mixflow.load(tmp_path / "fit.zarr")
    assert np.isnan(loaded["em/sample_stats"]["aitken_gap"].values).all()
    assert_trees_identical(tree, loaded)  # the store's count of its chunks is not the results'
    # a lost chunk beside them is refused
    _chunk_files(tmp_path / "fit.zarr", "em/estimate/weights")[0].unlink()
    with pytest.raises(mixflow.InputError, match=r"missing \(/em/estimate/weights: 0 of the 1 written\)"):
        mixflow.load(tmp_path / "fit.zarr")


def test_a_zarr_store_written_again_by_xarray_or_without_a_count_is_read(tmp_path, faithful):
    tree = mixflow.fit(mixflow.GaussianMixture(2), faithful, random_seed=1)
    tree.to_zarr(tmp_path / "fit.zarr")
    # read and written again by xarray alone: the same chunks, the count kept with the attributes
    xr.open_datatree(tmp_path / "fit.zarr", engine="zarr").load().to_zarr(tmp_path / "again.zarr")
    # chunked otherwise: an array whose chunks are not those counted is not compared
    xr.open_datatree(tmp_path / "fit.zarr", engine="zarr").load().to_zarr(
        tmp_path / "rechunked.zarr", encoding={"/observed_data": {"x": {"chunks": (100, 2)}}})
    # written by xarray from the start: no count, so a missing chunk cannot be told from one of fill values
    xr.DataTree.to_zarr(tree, tmp_path / "plain.zarr")
    for name in ("again.zarr", "rechunked.zarr", "plain.zarr"):
        assert_trees_identical(tree, mixflow.load(tmp_path / name))
    _chunk_files(tmp_path / "plain.zarr", "em/estimate/mu")[0].unlink()
    assert np.isnan(mixflow.load(tmp_path / "plain.zarr")["em/estimate/mu"].values).all()


def test_the_count_of_a_zarr_stores_chunks_is_of_the_store_as_written(tmp_path, faithful):
    tree = mixflow.fit(mixflow.GaussianMixture(2), faithful, random_seed=1)
    tree.to_zarr(tmp_path / "fit.zarr", consolidated=False)
    tree.to_zarr(tmp_path / "fit.zarr", mode="a", write_empty_chunks=True)  # added to: counted whole
    assert _chunk_files(tmp_path / "fit.zarr", "em/sample_stats/degenerate")
    _chunk_files(tmp_path / "fit.zarr", "em/sample_stats/degenerate")[0].unlink()
    with pytest.raises(mixflow.InputError, match=r"missing \(/em/sample_stats/degenerate: 0 of the 1 written\)"):
        mixflow.load(tmp_path / "fit.zarr")
    zarr = pytest.importorskip("zarr")
    zarr.open_group(tmp_path / "fit.zarr", mode="r+").attrs["zarr_stored_chunks"] = "[1, 2]"
    zarr.consolidate_metadata(tmp_path / "fit.zarr")
    with pytest.raises(mixflow.InputError, match=r"cannot be read as a Zarr store \(its root attribute "
                                                 r"'zarr_stored_chunks' is not the count of its arrays' chunks as "
                                                 r"mixflow writes it \(\{array path: \[stored, of\]\} as JSON\), "
                                                 r"got '\[1, 2\]'\)$"):
        mixflow.load(tmp_path / "fit.zarr")


def _data_offset(path, array: str) -> int:
    """Where the bytes of ``array``'s (first) chunk start in an HDF5 file."""
    import h5py

    with h5py.File(path, "r") as file:
        dataset = file[array]
        return dataset.id.get_chunk_info(0).byte_offset if dataset.chunks else dataset.id.get_offset()


def test_every_array_but_text_and_scalars_is_saved_with_a_checksum(tmp_path, faithful):
    import h5py

    tree = mixflow.fit(mixflow.GaussianMixture(2), faithful, random_seed=1)
    path = mixflow.save(tree, tmp_path / "fit.nc")
    unchecked = []
    with h5py.File(path, "r") as file:
        file.visititems(lambda name, item: unchecked.append(name) if isinstance(item, h5py.Dataset) and item.shape
                        and item.dtype.kind != "O" and not item.fletcher32 else None)
    assert not unchecked
    assert tree["em/estimate"].to_dataset()["mu"].encoding.get("fletcher32") is None  # the tree saved is not changed


@pytest.mark.parametrize("command", ["show", "report"])
def test_changed_bytes_in_an_array_make_reading_the_file_an_error_that_names_it(tmp_path, faithful, capsys, command):
    # without a checksum the changed bytes were read as other numbers, silently
    tree = mixflow.fit(mixflow.GaussianMixture(2), faithful, random_seed=1)
    path = mixflow.save(tree, tmp_path / "fit.nc")
    content = bytearray(path.read_bytes())
    content[_data_offset(path, "em/estimate/mu") + 7] ^= 0x40  # the exponent of the first mean
    path.write_bytes(bytes(content))
    said = (f"got {str(path)!r}, a damaged file: the bytes of /em/estimate/mu no longer match the checksum written "
            "with them (changed since, by a disk or copy error); copy the file again whole, or write it again from "
            "the fit")
    with pytest.raises(mixflow.InputError) as raised:
        mixflow.load(path)
    assert str(raised.value).endswith(said)
    capsys.readouterr()
    assert main([command, str(path)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"mixflow {command}: error: results: expected a mixflow results file") and error.endswith(
        said + "\n")
    assert "Traceback" not in error and not list(tmp_path.glob("*.html"))


def test_a_file_saved_without_checksums_is_read(tmp_path, faithful):
    import h5py

    tree = mixflow.fit(mixflow.GaussianMixture(2), faithful, random_seed=1)
    tree.to_netcdf(tmp_path / "before.nc", engine="h5netcdf")  # as mixflow.save wrote files before checksums
    with h5py.File(tmp_path / "before.nc", "r") as file:
        assert not file["em/estimate/mu"].fletcher32
    assert_trees_identical(tree, mixflow.load(tmp_path / "before.nc"))


def test_load_reads_every_group_as_xarray_s_h5netcdf_engine_does_looking_each_object_up_once(tmp_path, monkeypatch):
    # the file's objects are looked up by path once each and kept (h5netcdf alone looks an array up dozens of times);
    # what is read is what xr.open_datatree reads: values, dtypes, attributes and their types, encodings
    import h5py
    from test_compare import make_container

    from mixflow.container.io import _read_netcdf

    path = mixflow.save(make_container(("em", "mcmc", "advi"), d=2, with_bootstrap=True), tmp_path / "all.nc")
    expected = xr.open_datatree(path, engine="h5netcdf").load()
    lookups = []
    original = h5py.Group.__getitem__

    def counted(self, name):
        lookups.append(name)
        return original(self, name)

    monkeypatch.setattr(h5py.Group, "__getitem__", counted)
    read = _read_netcdf(path)
    monkeypatch.undo()
    assert_trees_identical(expected, read)
    for node in expected.subtree:
        for name, variable in node.variables.items():
            theirs = read[node.path].variables[name].encoding
            assert variable.encoding.keys() == theirs.keys(), (node.path, name)
            for key, value in variable.encoding.items():
                np.testing.assert_array_equal(value, theirs[key], err_msg=f"{node.path} {name} {key}")
    with h5py.File(path, "r") as file:
        objects = []
        file.visit(objects.append)
    # h5netcdf opening the file and listing each group's members, then each object found once (without keeping
    # them: over forty lookups per object)
    assert len(lookups) <= 4 * (len(objects) + 1)


def test_two_threads_loading_containers_at_once_read_what_one_reads(tmp_path, faithful):
    from concurrent.futures import ThreadPoolExecutor

    paths = [mixflow.save(mixflow.fit(mixflow.GaussianMixture(k), faithful, random_seed=1, n_init=1),
                          tmp_path / f"k{k}.nc") for k in (2, 3)]
    alone = [mixflow.load(path) for path in paths]
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(mixflow.load, paths * 4))
    for i, tree in enumerate(together):
        assert_trees_identical(alone[i % 2], tree)


def test_an_array_s_checksum_failing_before_damaged_metadata_is_still_an_input_error(tmp_path, faithful, monkeypatch):
    # a group's arrays are read as it is opened: a damaged array can fail before a later group's damaged metadata,
    # which the search for damaged arrays then meets: its RuntimeError must not escape
    import h5py

    from mixflow.container import io
    from mixflow.errors import InputError

    path = mixflow.save(mixflow.fit(mixflow.GaussianMixture(2), faithful, random_seed=1, n_init=1), tmp_path / "f.nc")

    def failing(*args, **kwargs):
        raise OSError("Can't synchronously read data (filter returned failure during read)")

    def unreadable(self, visit):
        raise RuntimeError("Object visitation failed (incorrect metadata checksum after all read attempts)")

    monkeypatch.setattr(io, "_read_netcdf", failing)
    monkeypatch.setattr(h5py.Group, "visititems", unreadable)
    with pytest.raises(InputError, match="which cannot be read as NetCDF .*filter returned failure"):
        mixflow.load(path)


def test_a_load_by_a_relative_path_records_the_absolute_one_as_xarray_does(tmp_path, faithful, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mixflow.save(mixflow.fit(mixflow.GaussianMixture(2), faithful, random_seed=1, n_init=1), "f.nc")
    assert mixflow.load("f.nc")["em/estimate"]["mu"].encoding["source"] == str(tmp_path / "f.nc")


def test_a_file_whose_opening_failed_part_way_closes_quietly():
    # h5netcdf's own file raises AttributeError from __del__ here, printed as "Exception ignored" with a traceback
    import h5netcdf

    from mixflow.container.io import _reading_file_class

    half_built = h5netcdf.File.__new__(h5netcdf.File)
    half_built._closed = False
    with pytest.raises(AttributeError, match="_writable"):
        half_built.close()
    half_built._closed = True
    ours = _reading_file_class().__new__(_reading_file_class())
    ours._closed = False
    ours.close()
    assert ours._closed
