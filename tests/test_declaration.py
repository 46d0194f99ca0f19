"""Model declarations, priors, JSON, and the shipped datasets."""

import numpy as np
import pytest

import mixflow
from mixflow.errors import InputTypeError


def test_model_is_an_immutable_value_and_round_trips_through_json():
    model = mixflow.GaussianMixture(3, covariance="tied", prior={"shrinkage": 0.1, "mean": [0.0, 1.0]})
    assert model == mixflow.model_from_json(model.to_json())
    assert hash(model) == hash(mixflow.model_from_json(model.to_json()))
    with pytest.raises(AttributeError):
        model.n_components = 4
    assert mixflow.GaussianMixture(2).prior == mixflow.GaussianPrior()


@pytest.mark.parametrize("kwargs, error, message", [
    ({"n_components": 0}, ValueError, r"n_components: expected an integer >= 1, got 0"),
    ({"n_components": 2.5}, InputTypeError, r"n_components: expected an integer >= 1, got 2.5"),  # as n_init=3.5
    ({"n_components": True}, InputTypeError, r"n_components: expected an integer >= 1, got True"),
    ({"n_components": 2, "covariance": "VVV"}, ValueError,
     r"covariance: expected one of \['full', 'tied', 'diag', 'spherical'\], got 'VVV'"),
    ({"n_components": 2, "prior": "flat"}, ValueError, r"prior: expected 'default', a GaussianPrior or a dict"),
    ({"n_components": 2, "prior": {"kappa": 1}}, ValueError, r"prior: unknown hyperparameter \['kappa'\]"),
    ({"n_components": 2, "prior": {"shrinkage": -1}}, ValueError, r"shrinkage: expected a positive number, got -1"),
    ({"n_components": 2, "prior": {"weights_concentration": [1, 1, 1]}}, ValueError,
     r"prior.weights_concentration: expected 1 or 2 values, got 3"),
    ({"n_components": 2, "prior": 3}, TypeError, r"prior: expected 'default', a GaussianPrior or a dict, got int"),
])
def test_bad_declarations_are_refused(kwargs, error, message):
    with pytest.raises(error, match=message):
        mixflow.GaussianMixture(**kwargs)


def test_default_prior_is_scaled_to_the_data(faithful):
    import json

    tree = mixflow.fit(mixflow.GaussianMixture(2), faithful, method="map", random_seed=0)
    prior = json.loads(tree["em"].attrs["prior"])
    x = faithful.to_numpy()
    np.testing.assert_allclose(prior["mean"], x.mean(axis=0))
    np.testing.assert_allclose(prior["scale"], np.cov(x.T, bias=True) / 2 ** (2 / 2))
    assert prior["dof"] == 4 and prior["shrinkage"] == 0.01


@pytest.mark.parametrize("prior, message", [
    ({"mean": [1.0]}, r"prior.mean: expected 2 values \(one per feature\), got shape \(1,\)"),
    ({"scale": [[1, 0], [0, -1]]}, r"prior.scale: expected a positive definite scale"),
    ({"scale": [1.0, 1.0]}, r"prior.scale: expected shape \(2, 2\) for covariance='full', got \(2,\)"),
    ({"dof": 0.5}, r"prior.dof: expected more than d - 1 = 1 degrees of freedom, got 0.5"),
])
def test_prior_hyperparameters_are_checked_against_the_data(prior, message, faithful):
    with pytest.raises(ValueError, match=message):
        mixflow.fit(mixflow.GaussianMixture(2, prior=prior), faithful, method="map")


@pytest.mark.parametrize("covariance", ["full", "tied", "diag", "spherical"])
def test_one_feature_s_prior_mean_and_scale_may_be_numbers(covariance):
    """With one feature a number is the prior's mean and scale whatever the covariance: the same fit as the
    1x1 matrix (or 1-vector) that the covariance's shape asks for, which alone was accepted."""
    import json

    galaxies = mixflow.load_dataset("galaxies")
    shaped = {"full": [[600.0]], "tied": [[600.0]], "diag": [600.0], "spherical": 600.0}[covariance]
    fits = [mixflow.fit(mixflow.GaussianMixture(2, covariance=covariance, prior=prior), galaxies, method="map",
                        random_seed=0) for prior in ({"mean": 20000.0, "scale": 600.0},
                                                     {"mean": [20000.0], "scale": shaped})]
    assert json.loads(fits[0]["em"].attrs["prior"]) == json.loads(fits[1]["em"].attrs["prior"])
    assert json.loads(fits[0]["em"].attrs["prior"])["scale"] == shaped
    assert fits[0]["em"].attrs["log_posterior"] == fits[1]["em"].attrs["log_posterior"]


def test_explicit_prior_hyperparameters_are_used(faithful):
    import json

    prior = {"mean": [3.0, 70.0], "scale": [[0.5, 0.0], [0.0, 20.0]], "dof": 5.0, "shrinkage": 0.5,
             "weights_concentration": 2.0}
    tree = mixflow.fit(mixflow.GaussianMixture(2, prior=prior), faithful, method="map", random_seed=0)
    used = json.loads(tree["em"].attrs["prior"])
    assert used == {"concentration": [2.0, 2.0], "mean": [3.0, 70.0], "shrinkage": 0.5, "dof": 5.0,
                    "scale": [[0.5, 0.0], [0.0, 20.0]]}


def test_datasets_are_listed_and_loaded():
    listing = mixflow.list_datasets()
    assert {"faithful", "iris", "galaxies", "acidity", "enzyme", "london_deaths", "crabs", "tone"} == set(listing.index)
    assert listing.loc["faithful", "rows"] == 272
    assert all(listing["description"].str.len() > 10)
    faithful = mixflow.load_dataset("faithful")
    assert list(faithful.columns) == ["eruptions", "waiting"] and faithful.shape == (272, 2)
    assert mixflow.load_dataset("galaxies").shape == (82, 1)
    assert mixflow.load_dataset("london_deaths")["days"].sum() == 1096
    assert mixflow.load_dataset("crabs")["count"].sum() == 1000
    faithful.iloc[0, 0] = -1.0
    assert mixflow.load_dataset("faithful").iloc[0, 0] == 3.6
    with pytest.raises(ValueError, match=r"name: expected one of \[.*'faithful'.*\], got 'old_faithful'"):
        mixflow.load_dataset("old_faithful")
