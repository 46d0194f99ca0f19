"""The API refuses, with a message naming the argument or key, what it cannot fit, save or read back."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import mixflow
from mixflow.cli import main


def test_seed_and_data_name_that_save_cannot_write(faithful, tmp_path):
    data = faithful[["eruptions"]]
    with pytest.raises(ValueError, match=r"random_seed: expected None or a non-negative integer below 2\*\*63 "
                                         r"\(stored as int64\), got 1180591620717411303424"):
        mixflow.fit(mixflow.GaussianMixture(1), data, random_seed=2**70)
    with pytest.raises(TypeError, match=r"data_name: expected a str \(recorded in the result\), got 5"):
        mixflow.fit(mixflow.GaussianMixture(1), data, random_seed=1, data_name=5)
    tree = mixflow.fit(mixflow.GaussianMixture(1), data, random_seed=2**63 - 1, n_init=1)
    assert mixflow.load(mixflow.save(tree, tmp_path / "x.nc")).attrs["random_seed"] == 2**63 - 1


def test_draws_that_do_not_fit_in_memory_are_refused_with_an_estimate(faithful, monkeypatch):
    from mixflow import checks as arguments

    data = faithful[["eruptions", "waiting"]]
    with pytest.raises(ValueError, match=r"draws: 4 chains x 1000000000000 draws of the parameters, pointwise "
                                         r"log-likelihood and posterior predictive replicates \(1374 values each\) "
                                         r"would need about [\d.e+]+ GB of memory, more than the .* GB available; "
                                         r"ask for at most about \d+ draws per chain"):
        mixflow.fit(mixflow.GaussianMixture(2), data, method="mcmc", random_seed=1, draws=10**12, chains=4)
    monkeypatch.setattr(arguments, "available_memory", lambda: 10**6)
    with pytest.raises(ValueError, match=r"draws: 1 chain x 1000 draws of the parameters and pointwise "
                                         r"log-likelihood \(830 values each\) would need about 0.0199 GB"):
        mixflow.fit(mixflow.GaussianMixture(2), data, method="advi", random_seed=1, draws=1000)


def test_repeated_column_names_are_not_called_non_numeric():
    frame = pd.DataFrame(np.arange(12.0).reshape(4, 3), columns=["a", "b", "a"])
    with pytest.raises(ValueError, match=r"data: expected distinct column names, got \['a'\] more than once"):
        mixflow.fit(mixflow.GaussianMixture(1), frame, random_seed=1)


def test_complex_data_is_refused_not_cut_to_its_real_part():
    with pytest.raises(TypeError, match=r"data: expected real numbers, got complex column \['x0'\]"):
        mixflow.fit(mixflow.GaussianMixture(1), np.arange(10) + 1j, random_seed=1)


@pytest.mark.parametrize("weights", [np.array(["1", "2", "1", "3"]), ["1", "2", "1", "3"], [True, False, True, True],
                                     np.ones(4) + 0j])
def test_weights_that_are_not_real_numbers(weights):
    with pytest.raises(TypeError, match=r"weights: expected real numbers, got .* of dtype"):
        mixflow.fit(mixflow.GaussianMixture(1), np.arange(4.0), weights=weights, random_seed=1)


@pytest.mark.parametrize(("prior", "error", "message"), [
    ({"shrinkage": "a"}, TypeError, r"prior.shrinkage: expected a number or a sequence of numbers, got 'a'"),
    ({"mean": [np.nan, 0]}, ValueError, r"prior.mean: expected finite numbers, got \[nan, 0\]"),
    ({"scale": [[1, 0], [0]]}, TypeError, r"prior.scale: expected a number or a sequence of numbers"),
    ({"shrinkage": -1.0}, ValueError, r"prior.shrinkage: expected a positive number, got -1.0"),
])
def test_prior_messages_name_the_key(prior, error, message):
    with pytest.raises(error, match=message):
        mixflow.GaussianMixture(2, prior=prior)


def test_data_whose_squares_overflow_say_so(faithful):
    data = faithful[["eruptions", "waiting"]] * 1e300
    with pytest.raises(ValueError, match=r"data: expected values whose squares fit in float64, got features "
                                         r"\['eruptions', 'waiting'\] with values up to 9.6e\+301, which overflow; "
                                         r"rescale them \(e.g. divide by 1e\+301\)"):
        mixflow.fit(mixflow.GaussianMixture(2), data, random_seed=1)


def test_load_of_a_netcdf_that_is_not_a_mixflow_result(tmp_path):
    path = tmp_path / "other.nc"
    xr.Dataset({"t": ("time", np.arange(3.0))}).to_netcdf(path, engine="h5netcdf")
    with pytest.raises(ValueError, match=r"path: expected a mixflow results file \(NetCDF written by 'mixflow run' or "
                                         r"mixflow.save, or a Zarr store of one written by tree.to_zarr\), got "
                                         r"'.*other.nc', a NetCDF file without the model"):
        mixflow.load(path)
    (tmp_path / "text.nc").write_text("not netcdf")
    with pytest.raises(ValueError, match=r"path: expected a mixflow results file .* got '.*text.nc', which cannot "
                                         r"be read as NetCDF"):
        mixflow.load(tmp_path / "text.nc")


def test_show_of_a_container_whose_model_is_not_json_names_the_file(faithful, tmp_path, capsys):
    tree = mixflow.fit(mixflow.GaussianMixture(1), faithful[["eruptions"]], random_seed=1, n_init=1)
    tree.attrs["model"] = "GaussianMixture(1)"
    path = mixflow.save(tree, tmp_path / "odd.nc")
    assert main(["show", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mixflow show: error: model: expected the model declaration as JSON (as mixflow writes "
                          "it), got 'GaussianMixture(1)'")
    assert err.endswith(f"(file {str(path)!r})") and len(err.splitlines()) == 1


def test_a_shipped_data_set_is_recorded_by_its_name():
    """load_dataset names its frame (``attrs["name"]``), which fit records; an array, or a name given, as before."""
    faithful = mixflow.load_dataset("faithful")
    assert mixflow.fit(mixflow.GaussianMixture(1), faithful, n_init=1).attrs["data_name"] == "faithful"
    assert mixflow.fit(mixflow.GaussianMixture(1), faithful.to_numpy(), n_init=1).attrs["data_name"] == "data"
    given = mixflow.fit(mixflow.GaussianMixture(1), faithful, n_init=1, data_name="geyser 1990")
    assert given.attrs["data_name"] == "geyser 1990"
    assert "fitted to 'faithful'" in mixflow.summary(mixflow.fit(mixflow.GaussianMixture(1), faithful[["waiting"]],
                                                                 n_init=1), kind="text")
