"""Dask input: EM blockwise on the threaded scheduler and on a LocalCluster, against numpy input of the same data."""

import json
import subprocess
import sys
import threading
import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import mixflow
from mixflow import ConstantFeatureWarning

da = pytest.importorskip("dask.array")
dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")

N, CHUNK = 3001, 700  # five blocks, the last one short: chunk sizes that do not divide n
RTOL = 1e-12  # the same estimate: largest difference over the largest value of each parameter


def _mixture(seed=0, d=3):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(0, 1, (1500, d)), rng.normal(4, 0.5, (N - 1500, d))])
    return x, rng.integers(1, 4, N).astype(float)


def _relative(a: xr.DataTree, b: xr.DataTree) -> float:
    estimate_a, estimate_b = a["em/estimate"], b["em/estimate"]
    return max(float(np.max(np.abs(estimate_a[k].values - estimate_b[k].values)) / np.max(np.abs(estimate_a[k].values)))
               for k in estimate_a.data_vars)


def _fit_both(model, x, w, method="em", **options):
    """A fit of numpy input and one of the same rows as Dask input (every row in the subsample: fitted in memory),
    after checking that EM's passes over the blocks give what passes over the rows in memory give
    (:func:`_assert_blockwise_passes_are_the_rows_in_memory`). From a given start, the Dask fit itself runs over
    the blocks (a subsample of 1000 rows: the start is the same)."""
    expected = mixflow.fit(model, x, method, random_seed=3, weights=w, **options)
    weights = None if w is None else da.from_array(w, chunks=CHUNK)
    lazy = da.from_array(x, chunks=CHUNK)
    if isinstance(options.get("init"), dict):
        options = {**options, "subsample": 1000}
    else:
        _assert_blockwise_passes_are_the_rows_in_memory(model, x, w, lazy, weights, method, expected)
    got = mixflow.fit(model, lazy, method, random_seed=3, weights=weights, **options)
    return expected, got


def _assert_blockwise_passes_are_the_rows_in_memory(model, x, w, lazy, lazy_weights, method, fitted):
    """EM from one start (``fitted``'s estimate with equal weights) on Dask input whose subsample is not every row,
    so that every pass is a pass over the blocks, ends where the same start ends on the rows in memory."""
    start = {name: value.values for name, value in fitted["em/estimate"].data_vars.items()}
    start["weights"] = np.full(start["weights"].size, 1 / start["weights"].size)
    in_memory = mixflow.fit(model, x, method, init=start, weights=w)
    part = min(1000, len(x) // 2)
    blockwise = mixflow.fit(model, lazy, method, init=start, weights=lazy_weights, subsample=part)
    assert blockwise["observed_data"].sizes["obs"] == part < len(x)
    assert in_memory["em"].attrs["n_iter"] == blockwise["em"].attrs["n_iter"] > 1
    assert _relative(in_memory, blockwise) < RTOL
    assert blockwise["em"].attrs["log_likelihood"] == pytest.approx(in_memory["em"].attrs["log_likelihood"], rel=RTOL)


@pytest.mark.parametrize("covariance", ["full", "tied", "diag", "spherical"])
@pytest.mark.parametrize("method", ["em", "map"])
def test_gaussian_estimate_equals_numpy_input(covariance, method):
    x, w = _mixture()
    expected, got = _fit_both(mixflow.GaussianMixture(2, covariance=covariance), x, w, method, n_init=2)
    assert _relative(expected, got) < RTOL
    for name in ("log_likelihood", "bic", "aic", "icl"):
        assert got["em"].attrs[name] == pytest.approx(expected["em"].attrs[name], rel=RTOL)
    # every row is in the sample here: the stored responsibilities are all of them
    np.testing.assert_allclose(got["em/responsibilities"]["responsibilities"].values,
                               expected["em/responsibilities"]["responsibilities"].values, atol=1e-12)
    assert got["observed_data"].attrs["n_obs"] == N


def test_dask_data_whose_subsample_is_every_row_are_fitted_in_memory(monkeypatch):
    """The sample of every row holds the data in memory already: no pass over the blocks, the numpy estimate."""
    from mixflow.engines.em_chunked import ChunkedPrepared

    x, w = _mixture()
    expected = mixflow.fit(mixflow.GaussianMixture(2), x, random_seed=3, weights=w)

    def no_pass(*args, **kwargs):
        raise AssertionError("a pass over the blocks")

    for name in ("data_pass", "final_pass", "run_together"):
        monkeypatch.setattr(ChunkedPrepared, name, no_pass)
    got = mixflow.fit(mixflow.GaussianMixture(2), da.from_array(x, chunks=CHUNK), random_seed=3,
                      weights=da.from_array(w, chunks=CHUNK))
    assert _relative(expected, got) < RTOL and got["observed_data"].sizes["obs"] == N
    with pytest.raises(AssertionError, match="a pass over the blocks"):  # a subsample of fewer rows: passes
        mixflow.fit(mixflow.GaussianMixture(2), da.from_array(x, chunks=CHUNK), random_seed=3, subsample=N - 1)


def test_kmeans_parallel_on_dask_data_whose_subsample_is_every_row_seeds_from_the_blocks():
    """init="kmeans||" keeps the blocks, whose passes seed it, when the subsample holds every row (it raised
    AttributeError when such data were fitted in memory): it reaches numpy input's maximum."""
    x, w = _mixture()
    expected = mixflow.fit(mixflow.GaussianMixture(2), x, random_seed=5, weights=w)
    got = mixflow.fit(mixflow.GaussianMixture(2), da.from_array(x, chunks=CHUNK), init="kmeans||", random_seed=5,
                      n_init=2, weights=da.from_array(w, chunks=CHUNK))
    assert got["em"].attrs["best_start"] == "kmeans||" and got["observed_data"].sizes["obs"] == N
    assert got["em"].attrs["log_likelihood"] == pytest.approx(expected["em"].attrs["log_likelihood"], rel=1e-9)


def test_large_data_search_the_same_sample_as_numpy_input(monkeypatch):
    # more rows than SEARCH_ROWS (lowered to 1000 for 3001, the sample to 1000 rows): Dask input whose sample is every
    # row runs the starts and local searches on the same uniform sample of them as numpy input, and the rest on every
    # row: the same estimate
    from mixflow.engines import em

    monkeypatch.setattr(em, "SEARCH_ROWS", 1000)
    monkeypatch.setattr(em, "SEARCH_SAMPLE", 1000)
    x, w = _mixture()
    expected, got = _fit_both(mixflow.GaussianMixture(2), x, w, n_init=2)
    for tree in (expected, got):
        assert tree["em"].attrs["search_rows"] == 1000 and tree["em"].attrs["n_rows"] == N
    assert _relative(expected, got) < RTOL
    assert got["em"].attrs["log_likelihood"] == pytest.approx(expected["em"].attrs["log_likelihood"], rel=RTOL)


def test_soft_kmeans_and_poisson_estimates_equal_numpy_input():
    x, w = _mixture()
    expected, got = _fit_both(mixflow.SoftKMeans(2, variance=0.5), x, w)
    assert _relative(expected, got) < RTOL
    rng = np.random.default_rng(1)
    counts = np.concatenate([rng.poisson(2.0, 1500), rng.poisson(9.0, N - 1500)]).astype(float)
    expected, got = _fit_both(mixflow.PoissonMixture(2), counts, w, "map")
    assert _relative(expected, got) < RTOL
    expected, got = _fit_both(mixflow.PoissonMixture(2), counts, None)
    assert _relative(expected, got) < RTOL


def _two_lines():
    """Two regression lines, their rows and frequency weights (the same draws for every test of them)."""
    rng = np.random.default_rng(2)
    covariate = rng.uniform(1, 5, N)
    line = rng.integers(2, size=N)
    response = np.where(line == 1, 1.0 + 2.0 * covariate, 8.0 - 1.5 * covariate) + rng.normal(0, 0.4, N)
    return pd.DataFrame({"x": covariate, "y": response}), rng.integers(1, 3, N).astype(float), rng


@pytest.mark.parametrize("intercept", [True, False])
def test_regression_estimate_equals_numpy_input(intercept):
    frame, w, _ = _two_lines()
    model = mixflow.RegressionMixture(2, response="y", covariates=["x"], intercept=intercept)
    for method in ("em", "map"):
        expected = mixflow.fit(model, frame, method, random_seed=3, weights=w, n_init=2)
        got = mixflow.fit(model, dd.from_pandas(frame, npartitions=4), method, random_seed=3, n_init=2,
                          weights=da.from_array(w, chunks=CHUNK))
        assert _relative(expected, got) < RTOL
        _assert_blockwise_passes_are_the_rows_in_memory(model, frame, w, dd.from_pandas(frame, npartitions=4),
                                                        da.from_array(w, chunks=CHUNK), method, expected)


def test_a_regression_of_dask_data_predicts_bootstraps_and_chooses_k_as_the_rows_in_memory():
    """What does not depend on the intercept, once: predictions, the bootstrap, columns beside the formula's."""
    frame, w, rng = _two_lines()
    model = mixflow.RegressionMixture(2, response="y", covariates=["x"])
    expected = mixflow.fit(model, frame, "map", random_seed=3, weights=w, n_init=2)
    got = mixflow.fit(model, dd.from_pandas(frame, npartitions=4), "map", random_seed=3, n_init=2,
                      weights=da.from_array(w, chunks=CHUNK))
    # predictions of a Dask DataFrame holding the response and the covariates (columns in another order),
    # lazily, equal to those of the frame in memory, from a fit of numpy and of Dask input
    lazy_frame = dd.from_pandas(frame[["y", "x"]], npartitions=3)
    for tree in (expected, got):
        for predict in (mixflow.predict_proba, mixflow.score_samples, mixflow.predict):
            lazy = predict(tree, lazy_frame)
            assert hasattr(lazy.data, "dask")
            np.testing.assert_allclose(lazy.values, predict(tree, frame).values, rtol=1e-12, atol=1e-12)
    # the bootstrap of a regression fitted to a sample of the Dask rows refits every row, by column name
    sampled = mixflow.fit(model, dd.from_pandas(frame, npartitions=4), random_seed=3, n_init=1, subsample=500)
    booted = mixflow.bootstrap(sampled, dd.from_pandas(frame, npartitions=4), n_replicates=2, random_seed=1)
    assert booted["em/bootstrap"].attrs["n_failed"] == 0
    spread = booted["em/bootstrap/posterior"]["coefficients"].std("draw").values
    assert np.all(spread > 0) and np.all(spread < 0.1)
    with pytest.raises(ValueError, match=r"new_data: expected features \['x', 'y'\], got \['x'\] \(missing \['y'\]\)"):
        mixflow.predict_proba(got, dd.from_pandas(frame[["x"]], npartitions=2))
    # a column fitted beside the formula's is not needed in new rows, Dask or not, as with rows in memory
    extra = mixflow.fit(model, frame.assign(note=rng.normal(size=N)), random_seed=3, n_init=2)
    for predict in (mixflow.predict_proba, mixflow.score_samples, mixflow.predict):
        np.testing.assert_allclose(predict(extra, lazy_frame).values, predict(extra, frame).values, atol=1e-12)
    np.testing.assert_allclose(mixflow.responsibilities(extra, frame).compute(),
                               mixflow.predict_proba(extra, frame).values, atol=1e-12)
    # a column the formula does not name, with missing values, is dropped from Dask data as from the same rows in
    # memory (as R's formulas do), by fit and by select_k
    gaps = frame.assign(note=np.where(np.arange(N) % 50 == 3, np.nan, 1.0 + rng.normal(size=N)))
    lazy_gaps = dd.from_pandas(gaps, npartitions=4)
    expected = mixflow.fit(model, gaps, random_seed=3, n_init=2)
    got = mixflow.fit(model, lazy_gaps, random_seed=3, n_init=2)
    assert _relative(expected, got) < RTOL
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixflow.MixflowWarning)  # a larger K may be preferred: not the point here
        chosen, in_memory = (mixflow.select_k(model, rows, ks=[1, 2], methods=["em"], random_seed=3, n_folds=None)
                             for rows in (lazy_gaps, gaps))
    np.testing.assert_allclose(chosen["bic"].to_numpy(), in_memory["bic"].to_numpy(), rtol=RTOL)
    # a text column beside the formula's (a state's name) too, through the folds of the choice of K, the
    # predictions and the responsibilities, which read only the formula's columns
    named = dd.from_pandas(frame.assign(state="a"), npartitions=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixflow.MixflowWarning)
        folded = mixflow.select_k(model, named, ks=[1, 2], methods=["em"], random_seed=3, n_folds=2)
    assert np.isfinite(folded["bic"].to_numpy()).all()
    np.testing.assert_allclose(mixflow.predict_proba(got, named).values, mixflow.predict_proba(got, frame).values,
                               atol=1e-12)
    assert mixflow.responsibilities(got, named).shape == (N, 2)


def test_grouped_estimate_equals_numpy_input():
    rng = np.random.default_rng(4)
    values = np.concatenate([rng.normal(10, 2, 3000), rng.normal(18, 1.5, 2000)])
    edges = np.arange(2.0, 25.0, 0.5)
    counts, _ = np.histogram(values, edges)
    frame = pd.DataFrame({"lower": edges[:-1], "upper": edges[1:]})
    model = mixflow.GroupedGaussianMixture(2, open_below=2.5, open_above=24.0)
    for method in ("em", "map"):
        expected = mixflow.fit(model, frame, method, random_seed=3, weights=counts, n_init=2)
        got = mixflow.fit(model, dd.from_pandas(frame, npartitions=3), method, random_seed=3, n_init=2,
                          weights=da.from_array(counts.astype(float), chunks=7))
        assert _relative(expected, got) < RTOL
        _assert_blockwise_passes_are_the_rows_in_memory(model, frame, counts, dd.from_pandas(frame, npartitions=3),
                                                        da.from_array(counts.astype(float), chunks=7), method,
                                                        expected)
    lazy = mixflow.predict_proba(got, da.from_array(frame.to_numpy(), chunks=7))
    np.testing.assert_allclose(lazy.values, mixflow.predict_proba(got, frame).values, atol=1e-12)
    bad = frame.to_numpy().copy()
    bad[9] = bad[9, ::-1]
    with pytest.raises(ValueError, match=r"lower bound below its upper bound, got .*9"):
        mixflow.fit(model, da.from_array(bad, chunks=7), weights=da.from_array(counts.astype(float), chunks=7))


def test_dataframe_and_xarray_input_give_numpy_estimate():
    x, _ = _mixture(d=2)
    model = mixflow.GaussianMixture(2)
    frame = pd.DataFrame(x, columns=["a", "b"])
    expected = mixflow.fit(model, frame, random_seed=3)
    from_frame = mixflow.fit(model, dd.from_pandas(frame, npartitions=4), random_seed=3)
    assert _relative(expected, from_frame) < RTOL
    assert list(from_frame["observed_data"]["feature"].values) == ["a", "b"]
    dataset = xr.Dataset({"a": ("row", x[:, 0]), "b": ("row", x[:, 1])}).chunk({"row": CHUNK})
    from_dataset = mixflow.fit(model, dataset, random_seed=3)
    assert _relative(expected, from_dataset) < RTOL
    array = xr.DataArray(x, dims=("row", "feature"), coords={"feature": ["a", "b"]}).chunk({"row": CHUNK})
    assert _relative(expected, mixflow.fit(model, array, random_seed=3)) < RTOL


def test_partition_lengths_come_from_parquet_footers_without_reading_the_rows(tmp_path):
    from dask.callbacks import Callback

    from mixflow.chunked import as_chunked

    x, _ = _mixture(d=2)
    for i, part in enumerate(np.array_split(np.arange(N), 3)):
        pd.DataFrame(x[part], columns=["a", "b"]).to_parquet(tmp_path / f"part-{i}.parquet")
    frame = dd.read_parquet(tmp_path / "part-*.parquet")
    ran = []

    class Tasks(Callback):
        def _pretask(self, key, dsk, state):
            ran.append(key)

    with Tasks():  # on Dask's own schedulers (the module's LocalCluster is active only in its own tests)
        chunked = as_chunked(frame)
        assert ran == [] and chunked.values.chunks[0] == (1001, 1000, 1000)
        # a filtered frame's lengths are not recorded: its partitions are counted (a pass)
        filtered = as_chunked(frame[frame["a"] > 1.0])
        assert ran and filtered.n_obs == int(np.count_nonzero(x[:, 0] > 1.0))
    np.testing.assert_array_equal(chunked.values.compute(), x)


def test_chunked_data_get_one_round_of_starts():
    # each run continued on chunked data is passes over the whole data: the continued runs below disagree
    # (n_maxima > 1), which in memory would call a second round of starts, here not
    rng = np.random.default_rng(123)
    label = rng.choice(3, 600, p=[0.9, 0.05, 0.05])
    x = np.array([[0, 0], [4, 4], [-4, 5]])[label] + rng.normal(size=(600, 2)) * np.array([[1.5, 1]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixflow.MixflowWarning)
        attrs = mixflow.fit(mixflow.GaussianMixture(5), da.from_array(x, chunks=200), random_seed=1,
                            subsample=300)["em"].attrs
    assert attrs["start_rounds"] == 1 and attrs["n_maxima"] > 1


def test_subsample_starts_are_reproducible_and_find_the_numpy_maximum():
    x, _ = _mixture()
    model = mixflow.GaussianMixture(2)
    expected = mixflow.fit(model, x, random_seed=3)
    data = da.from_array(x, chunks=CHUNK)
    first = mixflow.fit(model, data, random_seed=3, subsample=500)
    again = mixflow.fit(model, data, random_seed=3, subsample=500)
    assert _relative(first, again) == 0.0
    # different starts, the same maximum: equal to the convergence tolerance
    assert _relative(expected, first) < 1e-6
    assert first["em"].attrs["log_likelihood"] == pytest.approx(expected["em"].attrs["log_likelihood"], rel=1e-10)
    observed = first["observed_data"]
    assert observed.sizes["obs"] == 500 and observed.attrs["n_obs"] == N
    rows = observed["obs"].values
    assert np.all(np.diff(rows) > 0)
    np.testing.assert_array_equal(observed["x"].values, x[rows])
    np.testing.assert_allclose(first["em/responsibilities"]["responsibilities"].values,
                               mixflow.predict_proba(first, x[rows]).values, atol=1e-12)


def test_predictions_are_lazy_and_equal_numpy_predictions(tmp_path):
    x, w = _mixture()
    tree = mixflow.fit(mixflow.GaussianMixture(2), x, random_seed=3, weights=w)
    data = da.from_array(x, chunks=CHUNK)
    proba = mixflow.predict_proba(tree, data)
    assert isinstance(proba.data, da.Array)
    np.testing.assert_allclose(proba.values, mixflow.predict_proba(tree, x).values, atol=1e-12)
    scores = mixflow.score_samples(tree, data)
    assert isinstance(scores.data, da.Array)
    np.testing.assert_allclose(scores.values, mixflow.score_samples(tree, x).values, rtol=1e-12)
    np.testing.assert_array_equal(mixflow.predict(tree, data).values, mixflow.predict(tree, x).values)
    # the rows' positions along obs, as for numpy rows: the lazy and the in-memory predictions align
    for predict in (mixflow.predict_proba, mixflow.score_samples, mixflow.predict):
        xr.testing.assert_allclose(predict(tree, data).compute(), predict(tree, x), atol=1e-12)
    resp = mixflow.responsibilities(tree, data)
    assert isinstance(resp, da.Array) and resp.chunks[0] == data.chunks[0]
    stored = mixflow.responsibilities(tree, data, to_zarr=tmp_path / "resp.zarr")
    np.testing.assert_allclose(stored.compute(), mixflow.predict_proba(tree, x).values, atol=1e-12)
    assert (tmp_path / "resp.zarr").exists()
    np.testing.assert_allclose(mixflow.responsibilities(tree, x, chunks=1000).compute(), stored.compute(), atol=0)
    # a store replaces the earlier one whole, or not at all: a block that fails leaves the earlier store as it was
    before = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "resp.zarr").rglob("*"))
    bad = x.copy()
    bad[-3, 0] = np.nan
    with pytest.raises(ValueError, match=r"NaN or infinite values"):
        mixflow.responsibilities(tree, bad, chunks=1000, to_zarr=tmp_path / "resp.zarr")
    assert sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "resp.zarr").rglob("*")) == before
    np.testing.assert_array_equal(da.from_zarr(str(tmp_path / "resp.zarr")).compute(), stored.compute())
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    # a folder of other files is no store to replace: it was emptied into one
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("the analyst's own file")
    with pytest.raises(ValueError, match=r"^to_zarr: expected a new path or a Zarr store to replace, got '.*mine', "
                                         r"which holds other files: choose another path$"):
        mixflow.responsibilities(tree, data, to_zarr=tmp_path / "mine")
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]


def test_bad_rows_are_named_with_their_chunk():
    x, w = _mixture()
    x[2 * CHUNK + 3, 1] = np.nan
    x[2 * CHUNK + 9, 0] = np.inf
    model = mixflow.GaussianMixture(2)
    with pytest.raises(ValueError, match=r"data: expected finite values, got NaN or infinite values in 2 rows, "
                                         r"the first in chunk 2 \(rows 1400-2099\): \[1403, 1409\]"):
        mixflow.fit(model, da.from_array(x, chunks=CHUNK))
    x, _ = _mixture()
    w[CHUNK + 1] = -1.0
    with pytest.raises(ValueError, match=r"weights: expected non-negative values, got negative values in 1 row, "
                                         r"in chunk 1 \(rows 700-1399\): \[701\]"):
        mixflow.fit(model, da.from_array(x, chunks=CHUNK), weights=da.from_array(w, chunks=CHUNK))
    with pytest.raises(ValueError, match=r"weights: expected at least one positive weight"):
        mixflow.fit(model, da.from_array(x, chunks=CHUNK), weights=da.zeros(N, chunks=CHUNK))
    with pytest.raises(ValueError, match=r"weights: expected shape \(3001,\)"):
        mixflow.fit(model, da.from_array(x, chunks=CHUNK), weights=da.ones(N - 1, chunks=CHUNK))
    with pytest.raises(TypeError, match=r"weights: expected real numbers, one per row, got the string 'w'"):
        mixflow.fit(model, da.from_array(x, chunks=CHUNK), weights="w")
    tree = mixflow.fit(model, x, random_seed=3)
    bad = x.copy()
    bad[CHUNK + 5] = np.nan
    lazy = mixflow.predict_proba(tree, da.from_array(bad, chunks=CHUNK))  # checked as each block is computed
    with pytest.raises(ValueError, match=r"new_data: expected finite values, .* chunk 1 \(rows 700-1399\): \[705\]"):
        lazy.compute()


def test_type_and_option_errors_name_the_argument():
    x, _ = _mixture()
    data = da.from_array(x, chunks=CHUNK)
    frame = dd.from_pandas(pd.DataFrame({"a": x[:, 0], "b": ["u"] * N}), npartitions=2)
    with pytest.raises(TypeError, match=r"data: expected numeric columns, got non-numeric column \['b'\]"):
        mixflow.fit(mixflow.GaussianMixture(2), frame)
    with pytest.raises(TypeError, match=r"data: expected numeric columns"):
        mixflow.fit(mixflow.GaussianMixture(2), data > 0)
    from mixflow.families.base import MixtureModel

    class Bare(MixtureModel):  # a family defined elsewhere without the chunked hooks
        family, n_components = "bare", 2

    with pytest.raises(ValueError, match=r"data: expected numpy or pandas data for the 'bare' family, got Dask data, "
                                         r"which the families \['gaussian', .*'regression'.*\] take"):
        mixflow.fit(Bare(), data)
    with pytest.raises(ValueError, match=r"persist: expected 'auto', True or False, got 'yes'"):
        mixflow.fit(mixflow.GaussianMixture(2), data, persist="yes")
    with pytest.raises(ValueError, match=r"subsample: expected an integer >= n_components = 2, got 1"):
        mixflow.fit(mixflow.GaussianMixture(2), data, subsample=1)
    tree = mixflow.fit(mixflow.GaussianMixture(2), x, random_seed=3)
    with pytest.raises(ValueError, match=r"tree: expected None with Dask data"):
        mixflow.fit(mixflow.GaussianMixture(2), data, tree=tree)
    with pytest.raises(ValueError, match=r"new_data: expected 3 columns, the features \[.*\], got 2 unnamed columns"):
        mixflow.predict_proba(tree, data[:, :2])
    with pytest.raises(ValueError, match=r"method: expected 'em' with Dask new_data"):
        booted = mixflow.bootstrap(tree, x, n_replicates=2, random_seed=1, n_jobs=1)
        mixflow.score_samples(booted, data, method="bootstrap")


def test_constant_feature_warns_and_counts_are_checked_blockwise():
    x, _ = _mixture()
    x[:, 2] = 5.0
    with pytest.warns(ConstantFeatureWarning,
                      match=r"data: feature \['x2'\] \(column 2 of the array\) takes a single value"):
        mixflow.fit(mixflow.GaussianMixture(2, covariance="diag"), da.from_array(x, chunks=CHUNK), "map",
                    random_seed=3)
    counts = np.arange(N, dtype=float) % 7
    counts[CHUNK * 3 + 2] = 1.5
    with pytest.raises(ValueError, match=r"data: expected non-negative integer counts, got other values in .*2102"):
        mixflow.fit(mixflow.PoissonMixture(2), da.from_array(counts, chunks=CHUNK))


def test_persist_choices_give_the_same_estimate():
    x, _ = _mixture()
    model = mixflow.GaussianMixture(2)
    data = da.from_array(x, chunks=CHUNK)
    kept = mixflow.fit(model, data, random_seed=3, persist=True)
    streamed = mixflow.fit(model, data, random_seed=3, persist=False)
    assert _relative(kept, streamed) == 0.0


def test_importing_mixflow_needs_no_dask_and_dask_requests_say_how_to_install():
    script = ("import sys\n"
              "for name in ('dask', 'dask.array', 'dask.dataframe', 'distributed', 'zarr'):\n"
              "    sys.modules[name] = None\n"
              "import numpy as np, mixflow\n"
              "tree = mixflow.fit(mixflow.GaussianMixture(1), np.arange(20.0), random_seed=1)\n"
              "try:\n"
              "    mixflow.responsibilities(tree, np.arange(20.0))\n"
              "except ImportError as error:\n"
              "    print(error)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.startswith("data: mixflow.responsibilities needs the optional dependencies")
    assert 'pip install "mixflow[dask]"' in out


# -- k-means|| starts ----------------------------------------------------------------------------------------------


def _with_small_cluster():
    """Two large clusters and six far rows: a subsample of 300 of the 3006 rows holds none of them."""
    x, w = _mixture()
    far = np.random.default_rng(8).normal(30.0, 0.2, (6, 3))
    return np.concatenate([x, far]), np.concatenate([w, np.ones(6)])


@pytest.fixture(scope="module")
def scalable_fit():
    x, w = _with_small_cluster()
    data, weights = da.from_array(x, chunks=CHUNK), da.from_array(w, chunks=CHUNK)
    model = mixflow.GaussianMixture(3, covariance="diag")
    # one EM step from each start: what the starts are, not where EM goes from them
    options = {"random_seed": 5, "weights": weights, "subsample": 300, "n_init": 2, "max_iter": 1}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixflow.ConvergenceWarning)
        return x, w, model, data, options, mixflow.fit(model, data, init="kmeans||", **options)


def test_kmeans_parallel_finds_a_cluster_the_subsample_misses(scalable_fit):
    x, w, model, data, options, tree = scalable_fit
    sample_rows = tree["observed_data"]["obs"].values
    assert not np.any(sample_rows >= N)  # the six far rows are not in the subsample
    estimate = tree["em/estimate"]
    small = int(np.argmin(estimate["weights"].values))
    # the six far rows get a component of their own: weight 6 of the total weight, mean theirs
    assert estimate["weights"].values[small] * w.sum() == pytest.approx(6.0, rel=1e-6)
    np.testing.assert_allclose(estimate["mu"].values[small], x[N:].mean(axis=0), rtol=1e-6)
    assert list(tree["em/sample_stats"]["start"].values) == ["kmeans||", "kmeans||"]
    # the starts drawn on the subsample put no component there, and are far below
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixflow.ConvergenceWarning)
        kmeans = mixflow.fit(model, data, init="kmeans", **options)
    assert kmeans["em/estimate"]["mu"].values.max() < 20
    assert kmeans["em"].attrs["log_likelihood"] < tree["em"].attrs["log_likelihood"] - 1000


def test_kmeans_parallel_is_reproducible_and_checked(scalable_fit):
    x, w, model, data, options, tree = scalable_fit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixflow.ConvergenceWarning)
        again = mixflow.fit(model, data, init="kmeans||", **options)
    assert _relative(tree, again) == 0.0
    with pytest.raises(ValueError, match=r"init: expected one of \[.*\] or a dict of parameters for data in "
                                         r"memory, got 'kmeans\|\|', the start of Dask input"):
        mixflow.fit(model, x, init="kmeans||")
    regression = mixflow.RegressionMixture(2, response="x1", covariates=["x0"])
    with pytest.raises(ValueError, match=r"init: expected a start other than 'kmeans\|\|' for a regression"):
        mixflow.fit(regression, data[:, :2], init="kmeans||")


# -- the bootstrap (Poisson(1) weights) and the cross-validation of Dask data, blockwise ---------------------------


def test_bootstrap_of_dask_data_draws_poisson_weights_blockwise():
    from mixflow.analysis.bootstrap import _poisson_weights

    x, w = _mixture(d=2)
    data, weights = da.from_array(x, chunks=CHUNK), da.from_array(w, chunks=CHUNK)
    model = mixflow.GaussianMixture(2, covariance="diag")
    tree = mixflow.fit(model, data, weights=weights, random_seed=2, subsample=400, n_init=1)
    booted = mixflow.bootstrap(tree, data, weights=weights, n_replicates=3, random_seed=4)
    again = mixflow.bootstrap(tree, data, weights=weights, n_replicates=3, random_seed=4)
    posterior = booted["em/bootstrap/posterior"]
    xr.testing.assert_equal(posterior.to_dataset(), again["em/bootstrap/posterior"].to_dataset())
    assert posterior.sizes["draw"] == 3 and booted["em/bootstrap"].attrs["n_failed"] == 0
    # a replicate's checks see as many rows as the fit's sample: two clusters apart are never one in two parts
    assert booted["em/bootstrap"].attrs["n_degenerate"] == 0
    # each replicate is the numpy fit of the same rows with its Poisson(1) weights times the data's, from the
    # estimate: its weights re-drawn the way the replicate drew them
    chunked = mixflow.chunked.validate_chunked(data, weights=weights)
    seeds = np.random.SeedSequence(4).spawn(3)
    estimate = {name: value.values for name, value in tree["em/estimate"].data_vars.items()}
    for b in (0, 2):
        rng = np.random.default_rng(seeds[b])
        drawn = _poisson_weights(chunked, rng).compute()
        assert set(np.unique(drawn / w)) <= set(range(20)) and abs(drawn.sum() / w.sum() - 1) < 0.1
        expected = mixflow.fit(model, x, weights=drawn, init=estimate, n_init=1, tol=tree["em"].attrs["tol"],
                               random_seed=int(rng.integers(2**63)))
        got = posterior.isel(chain=0, draw=b)
        order = np.argsort(expected["em/estimate"]["mu"].values[:, 0])  # the estimate's order, by the means
        np.testing.assert_allclose(got["mu"].values, expected["em/estimate"]["mu"].values[order], rtol=1e-10)
    # a tree of Dask data is not bootstrapped from its sample, nor with other data
    with pytest.raises(ValueError, match=r"data: expected the Dask data the tree was fitted on \(its "
                                         r"/observed_data holds a sample of 400 of their 3001 rows"):
        mixflow.bootstrap(tree, n_replicates=2)
    with pytest.raises(ValueError, match=r"weights: expected the frequency weights the tree was fitted with"):
        mixflow.bootstrap(tree, data, n_replicates=2)
    with pytest.raises(ValueError, match=r"data: expected the data the tree was fitted on \(3001 rows"):
        mixflow.bootstrap(tree, data * 2, weights=weights, n_replicates=2)
    with pytest.raises(ValueError, match=r"data: expected the data the tree was fitted on \(3001 rows.*got 2000 rows"):
        mixflow.bootstrap(tree, data[:2000], weights=weights[:2000], n_replicates=2)
    with pytest.raises(ValueError, match=r"kind: expected 'nonparametric' with Dask data"):
        mixflow.bootstrap(tree, data, weights=weights, kind="parametric", n_replicates=2)


def test_cross_validation_of_dask_data_holds_out_rows_drawn_blockwise():
    from mixflow.analysis.select import cross_validated_chunked, weighted_sum_and_se

    x, w = _mixture(d=2)
    data, weights = da.from_array(x, chunks=CHUNK), da.from_array(w, chunks=CHUNK)
    model = mixflow.GaussianMixture(2, covariance="diag")
    total, se = cross_validated_chunked(model, data, weights, n_folds=3, random_seed=5, n_init=1)
    # the reference: the same folds drawn in numpy (each block's rows from the split's key and its first row),
    # numpy fits of the other folds' rows, the held-out rows' log densities summed with their weights
    seeds = np.random.SeedSequence(5).spawn(4)
    key = seeds[0].generate_state(2).tolist()
    folds = np.concatenate([np.random.default_rng([*key, start]).integers(3, size=min(CHUNK, N - start))
                            for start in range(0, N, CHUNK)])
    values, frequency = [], []
    for fold in range(3):
        tree = mixflow.fit(model, x, weights=np.where(folds == fold, 0.0, w), n_init=1,
                           random_seed=int(seeds[fold + 1].generate_state(1)[0]))
        values.append(mixflow.score_samples(tree, x[folds == fold]).values)
        frequency.append(w[folds == fold])
    expected_total, expected_se = weighted_sum_and_se(np.concatenate(values), np.concatenate(frequency))
    assert total == pytest.approx(expected_total, rel=1e-10) and se == pytest.approx(expected_se, rel=1e-6)
    table = mixflow.select_k(model, data, weights=weights, ks=[1, 2], methods=["em"], n_folds=2, random_seed=4,
                             fit_kwargs={"n_init": 1})
    assert np.all(np.isfinite(table[["cv_log_likelihood", "cv_log_likelihood_se"]].to_numpy()))
    assert table.attrs["preferred"]["cv_log_likelihood"] == 2


# -- workflows: [data] path = "x.zarr", chunks, [cluster] -----------------------------------------------------

FLOW = """name = "large"
seed = 7
{cluster}
[data]
path = "rows.zarr"
chunks = 800
{data}
[[models]]
family = "gaussian"
n_components = {k}
covariance = "full"

[methods.em]
map = false
n_init = 2
{methods}
[output]
figures = false
report = false
"""


def _flow(tmp_path, cluster="", data="", k="2", methods=""):
    from mixflow.workflow.config import read_workflow

    x, w = _mixture(d=2)
    xr.Dataset({"a": ("row", x[:, 0]), "b": ("row", x[:, 1]), "w": ("row", w)}).chunk({"row": 1000}).to_zarr(
        tmp_path / "rows.zarr", mode="w")
    path = tmp_path / "flow.toml"
    path.write_text(FLOW.format(cluster=cluster, data=data, k=k, methods=methods))
    return path, read_workflow, x, w


def test_workflow_fits_a_zarr_store_blockwise(tmp_path):
    from mixflow.workflow.run import run_workflow

    path, read_workflow, x, w = _flow(tmp_path, data='columns = ["a", "b"]\nweights = "w"', k="{from = 1, to = 2}",
                                      methods="[methods.bootstrap]\nn_replicates = 2\n[select]\nn_folds = false\n")
    flow = read_workflow(path)
    assert flow.large and flow.chunks == 800 and flow.columns == ("a", "b") and flow.select["n_folds"] is None
    written = run_workflow(path, tmp_path / "out", quiet=True)
    table = pd.read_csv(next(p for p in written if p.name.endswith("choice-of-k.csv")), index_col="k")
    assert list(table.index) == [1, 2] and table["bic"].idxmin() == 2 and "cv_log_likelihood" not in table
    tree = mixflow.load(next(p for p in written if p.suffix == ".nc"))
    expected = mixflow.fit(mixflow.GaussianMixture(2), pd.DataFrame(x, columns=["a", "b"]), random_seed=7, weights=w,
                           n_init=2)
    assert _relative(expected, tree) < RTOL
    assert tree["observed_data"].attrs["n_obs"] == N
    # the data are not hashed (a pass over every block), and workflow.json says so as the container does
    resolved = json.loads((tmp_path / "out" / "workflow.json").read_text())
    assert resolved["data_sha256"] == tree.attrs["workflow_data_sha256"] == (
        "not hashed (data read lazily with Dask: hashing them would be a pass over every block)")
    # the bootstrap of the rows read with Dask: Poisson(1) weights times the data's, blockwise
    assert tree["em/bootstrap/posterior"].sizes["draw"] == 2 and tree["em/bootstrap"].attrs["n_failed"] == 0


def test_workflow_cross_validates_the_choice_of_k_of_a_zarr_store(tmp_path):
    from mixflow.workflow.config import read_workflow
    from mixflow.workflow.run import run_workflow

    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(0, 1, (120, 2)), rng.normal(5, 1, (121, 2))])
    xr.Dataset({"a": ("row", x[:, 0]), "b": ("row", x[:, 1])}).chunk({"row": 100}).to_zarr(tmp_path / "rows.zarr")
    path = tmp_path / "flow.toml"
    path.write_text(FLOW.format(cluster="", data="", k="{from = 1, to = 2}", methods="[select]\nn_folds = 2\n")
                    .replace("chunks = 800", "chunks = 100"))
    written = run_workflow(path, tmp_path / "out", quiet=True)
    table = pd.read_csv(next(p for p in written if p.name.endswith("choice-of-k.csv")), index_col="k")
    # the held-out log-likelihood of the rows read with Dask, as select_k gives it in Python (folds blockwise)
    expected = mixflow.select_k(mixflow.GaussianMixture(1), read_workflow(path).data[["a", "b"]], ks=[1, 2],
                                methods=["em"], n_folds=2, random_seed=7, fit_kwargs={"n_init": 2})
    np.testing.assert_allclose(table["cv_log_likelihood"].to_numpy(), expected["cv_log_likelihood"].to_numpy(),
                               rtol=RTOL)
    assert table["cv_log_likelihood"].idxmax() == 2


@pytest.mark.parametrize("cluster, data, k, methods, message", [
    ("", "chunks = 0", "2", "", r"\[data\] chunks: expected rows per block, an integer >= 1, got 0"),
    ("[cluster]\naddress = 'tcp://127.0.0.1:1'\nlocal = {n_workers = 2}\n", "", "2", "",
     r"\[cluster\]: expected exactly one of 'address'"),
    ("[cluster]\naddress = 'localhost'\n", "", "2", "", r"\[cluster\] address: expected a scheduler address"),
    ("[cluster]\nlocal = {n_workers = 0}\n", "", "2", "", r"\[cluster\] local.n_workers: expected an integer >= 1"),
    ("[cluster]\nlocal = {workers = 2}\n", "", "2", "", r"\[cluster\] local: unknown key \['workers'\]"),
    ("", "", "2", "[methods.mcmc]\ndraws = 10\n", r"\[methods.mcmc\]: expected only \[methods.em\] and "
     r"\[methods.bootstrap\] with data read with Dask"),
    ("", "", "2", "[methods.bootstrap]\nkind = 'parametric'\n",
     r"\[methods.bootstrap\] kind: expected 'nonparametric' with data read with Dask"),
    ("", "labels = 'a'", "2", "", r"\[data\] labels: expected no labels with data read with Dask"),
])
def test_workflow_errors_for_dask_data_name_the_key(tmp_path, cluster, data, k, methods, message):
    from mixflow.workflow.config import WorkflowError

    text_data = data if data.startswith("chunks") else data
    path, read_workflow, _, _ = _flow(tmp_path, cluster, text_data, k, methods)
    if data.startswith("chunks"):
        path.write_text(path.read_text().replace("chunks = 800\n", ""))
    with pytest.raises(WorkflowError, match=message):
        read_workflow(path)


def test_workflow_errors_of_dask_data_are_all_said_at_once(tmp_path):
    from mixflow.workflow.config import WorkflowError

    path, read_workflow, _, _ = _flow(tmp_path, data='labels = "a"\nweights = "ww"\ncolumns = ["a", "c"]')
    with pytest.raises(WorkflowError) as raised:
        read_workflow(path)
    lines = str(raised.value).splitlines()
    assert [line.split(": ")[1] for line in lines] == ["[data] labels", "[data] weights", "[data] columns"], lines


def test_workflow_starts_a_local_cluster_and_reports_its_dashboard(tmp_path, capsys):
    from mixflow.workflow.run import run_workflow

    path, _, _, _ = _flow(tmp_path, cluster="[cluster]\nlocal = {n_workers = 1}\n")
    run_workflow(path, tmp_path / "out", quiet=True)
    log = (tmp_path / "out" / "run.log").read_text()
    assert "Dask: a LocalCluster of 1 worker; dashboard http" in log
    assert "Dask: LocalCluster stopped" in log


def test_workflow_reads_parquet_and_netcdf_globs_lazily(tmp_path):
    from mixflow.workflow.config import read_workflow

    x, _ = _mixture(d=2)
    frame = pd.DataFrame(x, columns=["a", "b"])
    for i, part in enumerate(np.array_split(np.arange(N), 2)):
        frame.iloc[part].to_parquet(tmp_path / f"part-{i}.parquet")
        xr.Dataset({"a": ("row", x[part, 0]), "b": ("row", x[part, 1])}, coords={"row": part}).to_netcdf(
            tmp_path / f"part-{i}.nc")
    expected = mixflow.fit(mixflow.GaussianMixture(2), frame, random_seed=7, n_init=2)
    for pattern in ("part-*.parquet", "part-*.nc"):
        path = tmp_path / "flow.toml"
        path.write_text(FLOW.format(cluster="", data="", k="2", methods="").replace("rows.zarr", pattern))
        flow = read_workflow(path)
        assert flow.large and flow.columns == ("a", "b")
        tree = mixflow.fit(mixflow.GaussianMixture(2), flow.data[list(flow.columns)], random_seed=7, n_init=2,
                           chunks=flow.chunks)
        assert _relative(expected, tree) < RTOL
    # without [data] columns, a column of numbers stored as text is refused, not silently left out
    from mixflow.workflow.config import WorkflowError

    frame.assign(b=frame["b"].round(3).astype(str)).to_parquet(tmp_path / "text.parquet")
    path.write_text(FLOW.format(cluster="", data="", k="2", methods="").replace("rows.zarr", "text.parquet"))
    with pytest.raises(WorkflowError, match=r"\[data\] columns: not given, so every numeric column is fitted; "
                                            r"column 'b' is stored as text, though its first 1000 rows hold numbers "
                                            r"\(e\.g\. '[-0-9.]+'\), so none of its cells would be read as a number: "
                                            r"store the column as numbers, or list the columns to fit"):
        read_workflow(path)
    # a file of groups (mixflow's results) has no columns at its root: said, not "No objects to concatenate"
    mixflow.save(expected, tmp_path / "results.nc")
    path.write_text(FLOW.format(cluster="", data="", k="2", methods="").replace("rows.zarr", "results.nc"))
    with pytest.raises(WorkflowError, match=r"\[data\] path: expected NetCDF files whose variables are the data's "
                                            r"columns, got '.*results\.nc', which has none at its root: its "
                                            r"variables are in groups \(em, observed_data; mixflow's results keep"):
        read_workflow(path)


def test_given_start_and_trim_give_the_numpy_estimate():
    x, w = _mixture()
    start = {"weights": np.array([0.48, 0.04, 0.48]), "mu": np.array([[0.0, 0, 0], [2.0, 2, 2], [4.0, 4, 4]]),
             "variance": np.ones((3, 3))}  # the middle component is trimmed at once
    model = mixflow.GaussianMixture(3, covariance="diag")
    expected, got = _fit_both(model, x, w, init=start, trim=0.05)
    assert _relative(expected, got) < RTOL
    assert got["em"].attrs["best_start"] == "user parameters"
    assert got["em"].attrs["trimmed_components"] == expected["em"].attrs["trimmed_components"] == 1


def test_restarts_continued_on_all_rows_share_each_pass(monkeypatch):
    import mixflow.engines.em_chunked as em_chunked

    calls = []
    original = em_chunked.map_reduce

    def counting(function, *args):
        calls.append(function.__name__)
        return original(function, *args)

    monkeypatch.setattr(em_chunked, "map_reduce", counting)
    x, w = _mixture()
    model = mixflow.GaussianMixture(2, covariance="diag")
    # three runs to convergence on all rows (a subsample of fewer rows: their passes are over the blocks)
    got = mixflow.fit(model, da.from_array(x, chunks=CHUNK), random_seed=3, weights=da.from_array(w, chunks=CHUNK),
                      init="random", n_init=3, subsample=N - 1)
    passes = got["em/sample_stats"]["n_iter"].values
    assert passes.size == 3 and calls.count("_block_pass") == 0
    # the three runs' passes in one shared pass per round: as many rounds as the longest run's passes (plus
    # its first evaluation), not the sum over the runs
    assert calls.count("_block_passes") <= passes.max() + 1 < passes.sum()


def test_select_k_takes_dask_data():
    x, w = _mixture(d=2)
    model = mixflow.GaussianMixture(1)
    options = {"ks": [1, 2], "methods": ["map"], "n_folds": None, "random_seed": 4, "fit_kwargs": {"n_init": 2}}
    expected = mixflow.select_k(model, x, weights=w, n_jobs=1, **options)
    got = mixflow.select_k(model, da.from_array(x, chunks=CHUNK), weights=da.from_array(w, chunks=CHUNK), **options)
    for column in ("log_likelihood", "bic", "aic", "icl"):
        np.testing.assert_allclose(got[column].to_numpy(), expected[column].to_numpy(), rtol=RTOL)
    assert got.attrs["preferred"] == expected.attrs["preferred"]
    with pytest.raises(ValueError, match=r"methods: expected 'em' or 'map' with Dask data"):
        mixflow.select_k(model, da.from_array(x, chunks=CHUNK), ks=[1, 2], n_folds=None)


def test_select_k_refuses_more_folds_than_rows_of_dask_data_before_any_fit(monkeypatch):
    """Each row of Dask data goes whole to one fold: 500 folds of 442 rows cannot all hold one out."""
    def never(*args, **kwargs):
        raise AssertionError("a fit ran before the folds were checked")

    monkeypatch.setattr("mixflow.analysis.select._em_row", never)
    rows = da.from_array(np.random.default_rng(1).normal(size=(442, 2)), chunks=100)
    with pytest.raises(mixflow.InputError, match=r"n_folds: expected at most the number of rows \(442; Dask data's "
                                                 r"folds hold out whole rows\), got 500"):
        mixflow.select_k(mixflow.GaussianMixture(1), rows, ks=[1, 2], methods=["em"], n_folds=500)


@pytest.mark.slow
def test_nuts_on_the_subsample_and_advi_on_streamed_minibatches():
    x, _ = _mixture(d=2)  # stored in order: the first 1500 rows one component, the rest the other
    data = da.from_array(x, chunks=CHUNK)
    options = {"random_seed": 3, "draws": 100, "posterior_predictive": False}
    model = mixflow.GaussianMixture(2, covariance="diag")  # the smaller graphs of PyMC to compile
    with pytest.warns(mixflow.SamplingWarning, match=r"starts='em-optima': EM's restarts reached one distinct "
                                                     r"maximum .* so every chain starts there"):
        tree = mixflow.fit(model, data, ["map", "mcmc", "advi"], subsample=400, tune=100, chains=2,
                           progressbar=False, starts="em-optima", minibatch_size=500, **options)
    attrs = tree["mcmc"].attrs
    assert attrs["subsample_rows"] == 400 and attrs["n_obs"] == N and "uniform sample of 400" in attrs["data"]
    # the chains start at the distinct maxima of EM's restarts on every row (here one: the two mirror
    # labellings are one maximum)
    assert attrs["starts"] == "em-optima (1 distinct)"
    assert tree["observed_data"].sizes["obs"] == 400
    posterior_mu = tree["mcmc/posterior"]["mu"].mean(("chain", "draw")).values
    np.testing.assert_allclose(posterior_mu, tree["em/estimate"]["mu"].values, atol=0.3)  # 400 rows: sd ~ 0.07

    # ADVI: the posterior given all the rows, its minibatches of 500 rows streamed from the blocks (every
    # 100 iterations 100 x 500 rows drawn uniformly, only the rows drawn computed into the client)
    attrs = tree["advi"].attrs
    assert attrs["minibatch_size"] == 500 and attrs["minibatch_refill_every"] == 100
    assert "streamed from the 5 Dask blocks of all 3001 rows" in attrs["minibatch_source"]
    assert "given all 3001 rows" in attrs["data"] and attrs["initial_sd"] == pytest.approx(N**-0.5)
    refills = attrs["n_iter"] // 100 + 1
    assert attrs["minibatch_blocks_read"] <= 5 * refills and attrs["minibatch_rows_computed"] <= N * refills
    # the same posterior as full-data ADVI, within the gradient noise: posterior means within 0.5 posterior
    # sd and sds within 30% (measured: 0.28 sd and 0.91 to 1.12; minibatches from 4 random blocks per
    # refill instead settle on those blocks' mixing weights on these ordered rows, several sd away)
    full = mixflow.fit(model, x, ["map", "advi"], **options)
    for name, expected in full["advi/posterior"].data_vars.items():
        got = tree["advi/posterior"][name]
        sd = expected.std(("chain", "draw")).values
        gap = np.abs(got.mean(("chain", "draw")).values - expected.mean(("chain", "draw")).values) / sd
        assert np.all(gap < 0.5)
        np.testing.assert_allclose(got.std(("chain", "draw")).values, sd, rtol=0.3)



# -- k-means|| starts share their passes ----------------------------------------------------------------------


@pytest.fixture
def on_threads():
    """Dask's threads whatever client is active: the tests count reads in this process."""
    import dask

    with dask.config.set(scheduler="threads"):
        yield


def test_kmeans_parallel_starts_share_their_passes(monkeypatch, on_threads):
    from mixflow.engines.em_chunked import KMEANS_ROUNDS, ChunkedPrepared

    x, w = _with_small_cluster()
    lock, reads = threading.Lock(), []

    def counted(block):  # every read of a block of the data, on any of Dask's threads
        with lock:
            reads.append(block.shape[0])
        return block

    data = da.from_array(x, chunks=CHUNK).map_blocks(counted, dtype=float)
    original, kmeans_reads = ChunkedPrepared.scalable_kmeans_passes, []

    def passes(self, *args):
        before = len(reads)
        result = original(self, *args)
        kmeans_reads.append(len(reads) - before)
        return result

    monkeypatch.setattr(ChunkedPrepared, "scalable_kmeans_passes", passes)
    model, totals = mixflow.GaussianMixture(3, covariance="diag"), []
    for n_init in (1, 3):
        reads.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", mixflow.ConvergenceWarning)
            tree = mixflow.fit(model, data, init="kmeans||", random_seed=5, subsample=300, n_init=n_init, max_iter=1,
                               persist=False)  # every pass reads the blocks again
        assert list(tree["em/sample_stats"]["start"].values) == ["kmeans||"] * n_init
        totals.append(len(reads))
    n_blocks = len(data.chunks[0])
    # k-means||: a first cost pass, then per round a drawing pass and (but the last) a cost pass, the
    # candidates' weights and the starts' statistics; three starts read the blocks as often as one
    assert kmeans_reads == [(2 * KMEANS_ROUNDS + 2) * n_blocks] * 2
    assert totals[0] == totals[1]


# -- minibatch ADVI streamed from the blocks ---------------------------------------------------------------------


def _stream(data, seed=4, **options):
    from mixflow.chunked import validate_chunked
    from mixflow.data import validate_data
    from mixflow.engines.advi_stream import MinibatchStream

    model = mixflow.GaussianMixture(2, covariance="diag")
    reference = validate_data(data.compute())
    stream = MinibatchStream(validate_chunked(data, persist=False), 40, seed, **options)
    stream.build(model, reference, model.resolve_prior(model.prepare(reference)))
    return stream, reference


def _batches(stream, n):
    """The first ``n`` minibatches of a fit, as the model's shared variable holds them."""
    stream.begin()
    out = [stream._shared[0].get_value().copy()]
    for _ in range(n - 1):
        stream.advance()
        out.append(stream._shared[0].get_value().copy())
    return np.stack(out)


def test_streamed_minibatches_are_uniform_rows_read_from_few_blocks(on_threads):
    x, _ = _mixture(d=2)
    lock, reads = threading.Lock(), []

    def counted(block):
        with lock:
            reads.append(block.shape[0])
        return block

    data = da.from_array(x, chunks=CHUNK).map_blocks(counted, dtype=float)
    stream, reference = _stream(data, refill_every=10, blocks_per_refill=2)
    reads.clear()
    batches = _batches(stream, 101)
    # the minibatches are rows of the data in the model's z units: 40 rows, each a row of x
    from mixflow.families.gaussian.pymc import standardization

    std = standardization(mixflow.GaussianMixture(2, covariance="diag"), reference)
    position = {row.tobytes(): i for i, row in enumerate((x - std.center) / std.scale)}
    assert batches.shape == (101, 40, 2) and all(row.tobytes() in position for row in batches.reshape(-1, 2))
    # bounded work: each refill reads at most 2 blocks and sends the client at most 10 x 40 rows
    assert stream.refills == 11 and len(reads) == stream.blocks_read <= 2 * stream.refills
    assert stream.rows_computed <= 10 * 40 * stream.refills < 40 * x.shape[0]
    # every row has chance 1/n per slot: by default rows drawn from all the rows (6000 here: sd of a
    # block's share below 0.006), with a few blocks per refill the blocks drawn in proportion to their
    # rows (700, the last 201; 800 block draws here: sd of a share below 0.015)
    share = np.asarray(data.chunks[0]) / x.shape[0]
    for options, tolerance in (({"refill_every": 50}, 0.02), ({"refill_every": 1, "blocks_per_refill": 8}, 0.05)):
        fresh, _ = _stream(data, **options)
        rows = np.array([position[row.tobytes()] for row in _batches(fresh, 150 if len(options) == 1 else 100
                                                                      ).reshape(-1, 2)])
        np.testing.assert_allclose(np.bincount(rows // CHUNK, minlength=5) / rows.size, share, atol=tolerance)
    assert fresh.attrs()["minibatch_blocks_read"] <= 8 * 100
    # reproducible from the seed on any scheduler; another seed, other rows
    import dask

    with dask.config.set(scheduler="synchronous"):
        again, _ = _stream(data)
    first, _ = _stream(data)
    np.testing.assert_array_equal(_batches(first, 60), _batches(again, 60))
    other, _ = _stream(data, seed=5)
    assert not np.array_equal(_batches(other, 5), _batches(first, 5))


@pytest.mark.parametrize("size, message", [
    (0, r"minibatch_size: expected None or an integer in \[1, n_obs = 3001\], got 0"),
    (3002, r"minibatch_size: expected None or an integer in \[1, n_obs = 3001\], got 3002"),
    (2.5, r"minibatch_size: expected None or an integer in \[1, n_obs = 3001\], got 2.5"),
])
def test_streamed_minibatch_size_is_checked_before_any_pass(size, message, monkeypatch):
    x, _ = _mixture(d=2)

    def no_fitting(*args, **kwargs):
        raise AssertionError("EM started")

    monkeypatch.setattr("mixflow.fitting._fit_em", no_fitting)
    with pytest.raises(mixflow.errors.InputError, match=message):
        mixflow.fit(mixflow.GaussianMixture(2), da.from_array(x, chunks=CHUNK), ["map", "advi"], minibatch_size=size)


def test_streamed_rows_follow_each_familys_pymc_form():
    from mixflow.chunked import validate_chunked
    from mixflow.data import validate_data
    from mixflow.engines.advi_stream import MinibatchStream

    rng = np.random.default_rng(2)
    counts = rng.poisson([[2.0]] * 300 + [[9.0]] * 301).astype(float)
    for model, x in ((mixflow.PoissonMixture(2), counts), (mixflow.SoftKMeans(2, variance=1.0), _mixture(d=2)[0])):
        reference = validate_data(x)
        stream = MinibatchStream(validate_chunked(da.from_array(x, chunks=CHUNK)), 30, 1)
        # the build checks the stream's map of rows against the arrays the family's PyMC form makes
        stream.build(model, reference, model.resolve_prior(model.prepare(reference)))
        stream.begin()
        assert stream._shared[0].get_value().shape[0] == 30 and stream.rows_computed <= 100 * 30
    with pytest.raises(mixflow.errors.InputError, match=r"model: expected a family whose ADVI streams .* got "
                                                        r"'regression'"):
        regression = mixflow.RegressionMixture(2, response="x1", covariates=["x0"])
        stream.build(regression, reference, None)


def test_the_report_compares_no_short_run_of_the_sample_with_the_whole_data_s_maxima():
    """A Dask fit's short runs are scored on its subsample (another sum than the whole data's): the report's
    finding on different optima once set -15495.4 on 400 rows beside -1545.6 on 4000 and called the likelihood
    multimodal where the runs had reached one maximum."""
    from mixflow.present.report.cards import _em_findings

    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal([0, 0], 1, (1500, 2)), rng.normal([4, 0], 1, (1500, 2)),
                   rng.normal([0, 5], 1, (1000, 2))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tree = mixflow.fit(mixflow.GaussianMixture(3), da.from_array(x, chunks=(1000, 2)), random_seed=0,
                           subsample=400)
    assert tree["em"].attrs["n_maxima"] == 1
    assert not [text for _, text in _em_findings(tree) if "different optima" in text]


def test_dask_data_whose_estimate_underflows_are_warned_of_without_reading_them_again():
    # the warning's advice computed each column's spread from the data: on Dask input a lazy array reached a format
    # string, and the fit failed with "TypeError: unsupported format string passed to Array.__format__"
    x, _ = _mixture(d=2)
    with pytest.warns(mixflow.PrecisionWarning, match=r"underflow float64 .* multiply the columns of tiny spread by a "
                                                      r"power of ten and fit again$"):
        tree = mixflow.fit(mixflow.GaussianMixture(2), da.from_array(1e-300 * x, chunks=CHUNK), "em", random_seed=3)
    np.testing.assert_allclose(np.sort(tree["em/estimate"]["weights"].values), [1500 / N, 1501 / N], rtol=1e-3)


# -- on a LocalCluster -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_cluster():
    """One LocalCluster of two worker processes for the module's distributed tests, and a client of it that is not
    the default one: it is the active client only within a test that asks for it (:func:`cluster_client`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
        client = distributed.Client(cluster, set_as_default=False)
    yield client
    client.close()
    cluster.close()


@pytest.fixture
def cluster_client(local_cluster):
    """The module's LocalCluster as the active client for one test: its Dask computations run on the cluster's
    workers, and the other tests' on Dask's threads, in whatever order they run."""
    import dask

    with dask.config.set(scheduler="dask.distributed"), local_cluster.as_current():
        yield local_cluster


def test_local_cluster_gives_the_numpy_estimate_and_predictions(cluster_client, scalable_fit):
    x, w = _mixture()
    model = mixflow.GaussianMixture(2, covariance="full")
    expected = mixflow.fit(model, x, random_seed=3, weights=w, init="kmeans", n_init=1)
    data = da.from_array(x, chunks=CHUNK)
    got = mixflow.fit(model, data, random_seed=3, weights=da.from_array(w, chunks=CHUNK), init="kmeans", n_init=1)
    assert _relative(expected, got) < RTOL
    # EM's passes over the blocks, on the cluster's workers
    _assert_blockwise_passes_are_the_rows_in_memory(model, x, w, data, da.from_array(w, chunks=CHUNK), "em", expected)
    np.testing.assert_allclose(mixflow.predict_proba(got, data).values, mixflow.predict_proba(expected, x).values,
                               atol=1e-10)
    assert len(cluster_client.scheduler_info()["workers"]) == 2
    # k-means|| draws the same rows on the cluster as on Dask's threads, where the module's fixture ran
    _, _, model, data, options, threaded = scalable_fit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixflow.ConvergenceWarning)
        assert _relative(threaded, mixflow.fit(model, data, init="kmeans||", **options)) < RTOL


def test_select_k_and_bootstrap_fan_out_on_the_active_client(cluster_client):
    x, _ = _mixture(d=2)
    model = mixflow.GaussianMixture(2)
    with distributed.get_task_stream() as stream:
        table = mixflow.select_k(model, x, ks=[1, 2], methods=["em"], random_seed=5)
        tree = mixflow.bootstrap(mixflow.fit(model, x, random_seed=5), x, n_replicates=4, random_seed=5)
    ran = {task["key"].split("-")[0] if isinstance(task["key"], str) else str(task["key"]) for task in stream.data}
    assert any("_em_row" in name for name in ran) and any("_replicate_chunk" in name for name in ran)
    # the same numbers as in this process
    local = mixflow.select_k(model, x, ks=[1, 2], methods=["em"], random_seed=5, n_jobs=1)
    pd.testing.assert_frame_equal(table, local)
    booted = mixflow.bootstrap(mixflow.fit(model, x, random_seed=5), x, n_replicates=4, random_seed=5, n_jobs=1)
    xr.testing.assert_equal(tree["em/bootstrap/posterior"].to_dataset(), booted["em/bootstrap/posterior"].to_dataset())
