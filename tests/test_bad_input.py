"""Every bad input gets a clear error naming the argument, what was expected and what came."""

import json
import warnings

import dask.array
import numpy as np
import pandas as pd
import pytest
import xarray as xr

import mixflow
from mixflow.errors import InputTypeError

MODEL = mixflow.GaussianMixture(2)


def data():
    return np.column_stack([np.linspace(0, 1, 20), np.linspace(0, 1, 20) ** 2])


@pytest.mark.parametrize("bad, message", [
    (np.array([[1.0, 2.0], [np.nan, 1.0], [3.0, 1.0], [4.0, np.inf]]),
     r"data: expected finite values, got NaN or infinite values in 2 rows: \[1, 3\] \(columns \['x0', 'x1'\]\)"),
    (pd.DataFrame({"a": [1.0, 2.0, np.nan], "b": 1.0}, index=[10, 11, 12]), r"in 1 row: \[12\] \(column \['a'\]\)$"),
    (np.ones((2, 2, 2)), r"data: expected a 1-D or 2-D array, got an array of shape \(2, 2, 2\)"),
    (np.empty((0, 2)), r"data: expected at least one row and one column, got shape \(0, 2\)"),
])
def test_bad_values(bad, message):
    with pytest.raises(ValueError, match=message):
        mixflow.fit(MODEL, bad)


def test_nan_rows_are_listed_with_a_count_beyond_five():
    x = np.ones((20, 1))
    x[2:10] = np.nan
    with pytest.raises(ValueError, match=r"8 rows: \[2, 3, 4, 5, 6\] and 3 more"):
        mixflow.fit(MODEL, x)


def test_non_numeric_columns_are_named():
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "species": ["x", "y", "z"], "ok": [True, False, True]})
    with pytest.raises(TypeError, match=r"data: expected numeric columns, got non-numeric column \['species'\]"):
        mixflow.fit(MODEL, frame)
    with pytest.raises(TypeError, match=r"data: expected numeric columns, got non-numeric column \['ok'\]"):
        mixflow.fit(MODEL, frame[["a", "ok"]])
    with pytest.raises(TypeError, match=r"data: expected a numpy array, pandas DataFrame/Series or xarray"):
        mixflow.fit(MODEL, "1,2,3")


def test_a_text_cell_in_a_numeric_column_is_named_with_its_row_as_nan_rows_are():
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [1.5, None, "abc", "x"]})
    with pytest.raises(TypeError, match=r"non-numeric column \['b'\] \(first: 'abc' in 'b' at row 2\)$"):
        mixflow.fit(MODEL, frame)
    with pytest.raises(TypeError, match=r"\(first: True in 'ok' at row 'p'\)$"):
        mixflow.fit(MODEL, pd.DataFrame({"ok": [True, False]}, index=["p", "q"]))
    with pytest.raises(ValueError, match=r"NaN or infinite values in 1 row: \[1\] \(column \['b'\]\)$"):
        mixflow.fit(MODEL, frame.iloc[:2].astype(float))


def test_fewer_observations_than_components():
    with pytest.raises(ValueError, match=r"data: expected at least n_components = 3 distinct rows with positive "
                                         r"weight, got 2"):
        mixflow.fit(mixflow.GaussianMixture(3), np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="got 2"):
        mixflow.fit(mixflow.GaussianMixture(3), np.arange(5.0), weights=[0, 1, 0, 1, 0])


@pytest.mark.parametrize("weights, message", [
    (-np.ones(20), r"weights: expected non-negative values, got negative values at rows \[0, 1, 2, 3, 4\]"),
    (np.ones(19), r"weights: expected shape \(20,\) to match the data, got \(19,\)"),
    (np.zeros(20), r"weights: expected at least one positive weight, got all zeros"),
    (np.full(20, np.nan), r"weights: expected finite values"),
    (["a"] * 20, r"weights: expected real numbers, got list of dtype <U1"),
    ("w", r"weights: expected real numbers, one per row, got the string 'w': to weight by a column of the data, "
          r"pass the column itself \(data\['w'\]\)"),
])
def test_bad_weights(weights, message):
    with pytest.raises((ValueError, TypeError), match=message):
        mixflow.fit(MODEL, data(), weights=weights)


@pytest.mark.parametrize("weights, expected", [
    (np.r_[1e300, np.ones(19)], r"weights: expected frequency weights of at most 1e\+250 \(the sums of weighted "
                                r"squares and log-densities over the data must stay within float64\), got larger ones "
                                r"at rows \[0\]"),
    (np.full(20, 1e249), r"weights: expected frequency weights \(how many observations each row stands for\) "
                         r"totalling at most 1e\+250 \(the sums of weighted squares and log-densities over the data "
                         r"must stay within float64\), got a total of 2e\+250"),
])
def test_weights_whose_sums_would_overflow_are_refused(weights, expected):
    """A weight of 1e300 made the passes overflow: a log-likelihood of 7e302 with numpy's overflow warnings, said
    converged. Refused before any fit, as a workflow's weights column is (uniform weights of 1e200 still fit:
    tests/test_numbers.py)."""
    with pytest.raises(ValueError, match=expected):
        mixflow.fit(MODEL, data(), weights=weights)
    with pytest.raises(ValueError, match=expected):
        mixflow.select_k(MODEL, data(), weights=weights, ks=[1, 2], methods=("em",))


@pytest.mark.parametrize("scale", [1 / 20, 1e-20])
def test_weights_totalling_less_than_an_observation_per_component_are_refused(scale):
    """Weights summing to 1 (probabilities) or tiny ones are not frequencies: the total weight is the sample size,
    so each component would be less than an observation (flagged degenerate, BIC of n = 1) or the passes
    underflow; refused before any fit, naming the fix. The choice of K checks its largest K at once."""
    expected = (r"weights: expected frequency weights \(how many observations each row stands for\) totalling at "
                r"least n_components = 2, got a total of [0-9.e-]+; weights scaled to sum to 1 .* multiply them by "
                "the number of observations they stand for")
    with pytest.raises(ValueError, match=expected):
        mixflow.fit(MODEL, data(), weights=np.full(20, scale))
    with pytest.raises(ValueError, match=expected.replace("= 2", "= 3")):
        mixflow.select_k(MODEL, data(), weights=np.full(20, scale), ks=[1, 2, 3], methods=("em",))
    # non-integer weights hold out whole rows: more folds than rows is an error naming why, not an empty fold
    with pytest.raises(ValueError, match=r"n_folds: expected at most the number of rows \(3; non-integer frequency "
                                         r"weights hold out whole rows\), got 5"):
        mixflow.select_k(mixflow.GaussianMixture(1), data()[:3], weights=np.full(3, 2.5), ks=[1], methods=("em",),
                         n_folds=5, random_seed=1)
    one = mixflow.GaussianMixture(1)  # one observation's worth is enough for one component
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.isfinite(mixflow.fit(one, data(), weights=np.full(20, 1 / 20))["em"].attrs["log_likelihood"])


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "bayes"}, r"method: expected one of \['em', 'map', 'mcmc', 'advi'\] or a list of them without "
                          r"repeats, got 'bayes'"),
    ({"method": ["em", "em"]}, r"method: expected one of .* without repeats, got \['em', 'em'\]"),
    ({"method": ["em", "map"]}, r"method: expected at most one of 'em' and 'map'"),
    ({"n_init": 0}, r"n_init: expected an integer from 1 to 10000, got 0"),
    ({"n_init": 10**11}, r"n_init: expected an integer from 1 to 10000, got 100000000000"),
    ({"init": "kmedoids"}, r"init: expected one of \['auto', 'kmeans', 'kmeans\+\+', .*'hierarchical', "
                           r"'hierarchical-pca', 'low-kurtosis', 'kmeans\|\|'\] or a dict"),
    ({"tol": -1.0}, r"tol: expected a non-negative number, got -1.0"),
    ({"max_iter": 0}, r"max_iter: expected an integer >= 1, got 0"),
    ({"trim": 1.5}, r"trim: expected None or a weight threshold in \(0, 1\), got 1.5"),
    ({"chunk_size": 0}, r"chunk_size: expected None \(rows per pass .*\) or an integer >= 1, got 0"),
    ({"random_seed": -3}, r"random_seed: expected None or a non-negative integer below 2\*\*63 .*got -3"),
])
def test_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        mixflow.fit(MODEL, data(), **kwargs)


@pytest.mark.parametrize("kwargs, message", [
    ({"tol": True}, r"tol: expected a non-negative number, got True"),  # was taken as tol=1.0
    ({"tol": "1e-3"}, r"tol: expected a non-negative number, got '1e-3'"),
    ({"trim": True}, r"trim: expected None or a weight threshold in \(0, 1\), got True"),
])
def test_a_bool_or_string_where_a_number_belongs_is_a_type_error(kwargs, message):
    with pytest.raises(InputTypeError, match=message):
        mixflow.fit(MODEL, data(), **kwargs)


def test_unknown_options_and_mismatched_trees():
    with pytest.raises(TypeError, match=r"fit: unexpected option \['draws'\] for method \['em'\]$"):
        mixflow.fit(MODEL, data(), draws=100)  # an option of another method: no guess
    with pytest.raises(TypeError, match=r"fit: unexpected option \['drawz'\] for method \['em'\]$"):
        mixflow.fit(MODEL, data(), drawz=100)  # nor is one suggested: EM would refuse it too
    with pytest.raises(TypeError, match=r"fit: unexpected option \['drawz'\] for method \['mcmc'\] \(did you mean "
                                        r"'draws'\?\)$"):
        mixflow.fit(MODEL, data(), method="mcmc", drawz=100)
    with pytest.raises(TypeError, match=r"^fit: unexpected options \['n_inits', 'zzz'\] for method \['em'\] "
                                        r"\(did you mean 'n_init' for 'n_inits'\?\)$"):
        mixflow.fit(MODEL, data(), n_inits=5, zzz=1)  # a slip: the option meant, named among several
    with pytest.raises(TypeError, match=r"^fit: unexpected option \['n_inits'\] for method \['em'\] "
                                        r"\(did you mean 'n_init'\?\)$"):
        mixflow.fit(MODEL, data(), n_inits=5)
    # another library's name of an engine's option: the engine's own, not fit's max_iter (EM's iterations)
    with pytest.raises(TypeError, match=r"^fit: unexpected option \['advi_max_iter'\] for method \['advi'\] "
                                        r"\(did you mean 'n' for 'advi_max_iter': ADVI's number of iterations\?\)$"):
        mixflow.fit(MODEL, data(), method="advi", advi_max_iter=100)
    with pytest.raises(TypeError, match=r"^fit: unexpected options \['num_samples', 'num_warmup'\] for method "
                                        r"\['mcmc'\] \(did you mean 'draws' for 'num_samples': NUTS's draws kept per "
                                        r"chain; or 'tune' for 'num_warmup': NUTS's tuning steps per chain\?\)$"):
        mixflow.fit(MODEL, data(), method="mcmc", num_samples=100, num_warmup=100)
    tree = mixflow.fit(MODEL, data(), random_seed=0)
    with pytest.raises(ValueError, match=r"tree: expected a result of the same model"):
        mixflow.fit(mixflow.GaussianMixture(3), data(), method="map", tree=tree)
    with pytest.raises(ValueError, match=r"tree: expected a result fitted to the same data"):
        mixflow.fit(MODEL, data() + 1, method="map", tree=tree)
    # the frequency weights are the data too: forgotten, or others, a fit of another sample beside the first
    with pytest.raises(ValueError, match=r"^weights: expected the frequency weights of the result's data \(tree, "
                                         r"fitted without weights\), got data with them; pass no weights to add"):
        mixflow.fit(MODEL, data(), method="map", tree=tree, weights=np.full(len(data()), 2.0))
    counts = np.arange(1.0, len(data()) + 1)
    weighted = mixflow.fit(MODEL, data(), random_seed=0, weights=counts)
    with pytest.raises(ValueError, match=r"^weights: expected the frequency weights of the result's data \(tree, "
                                         r"fitted with weights\), got data without them; pass the same weights="):
        mixflow.fit(MODEL, data(), method="map", tree=weighted)
    with pytest.raises(ValueError, match=r"^weights: expected the frequency weights of the result's data \(tree\), "
                                         r"got other weights in 1 row \(the first, row 3: 9 against 4\)$"):
        mixflow.fit(MODEL, data(), method="map", tree=weighted, weights=np.where(counts == 4, 9.0, counts))
    added = mixflow.fit(MODEL, data(), method="map", tree=weighted, weights=counts)
    # weights of 1 are no weights: the same data either way
    ones = mixflow.fit(MODEL, data(), random_seed=0, weights=np.ones(len(data())))
    for result, given in ((ones, None), (tree, np.ones(len(data())))):
        assert "log_posterior" in mixflow.fit(MODEL, data(), method="map", tree=result, weights=given)["em"].attrs
    # units other than the result's would relabel the fits it holds; none given keeps them, and a result without
    # units may be given some
    minutes = mixflow.fit(MODEL, data(), random_seed=0, units={"x0": "min", "x1": "min"})
    with pytest.raises(ValueError, match=r"^units: expected the units of the result's data \(tree\), \{'x0': 'min', "
                                         r"'x1': 'min'\}, or none, got \{'x0': 's', 'x1': 'min'\}"):
        mixflow.fit(MODEL, data(), method="map", tree=minutes, units={"x0": "s", "x1": "min"})
    assert json.loads(mixflow.fit(MODEL, data(), method="map", tree=minutes).attrs["units"])["x0"] == "min"
    assert "units" in mixflow.fit(MODEL, data(), method="map", tree=tree, units={"x0": "min", "x1": "min"}).attrs
    assert "log_posterior" in added["em"].attrs  # the MAP estimate, now in /em
    with pytest.raises(TypeError, match=r"tree: expected a mixflow result to add methods to, got dict"):
        mixflow.fit(MODEL, data(), tree={})


def test_bad_model_and_init_types():
    with pytest.raises(TypeError, match=r"model: expected a mixflow model such as GaussianMixture\(2\), got str"):
        mixflow.fit("gmm", data())
    with pytest.raises(TypeError, match=r"init: expected .* or a dict of parameters, got list"):
        mixflow.fit(MODEL, data(), init=[1, 2])


@pytest.mark.parametrize("init, message", [
    ({"weights": [0.5, 0.5], "mu": [[0, 0], [1, 1]]}, r"init: expected keys \['covariance', 'mu', 'weights'\].*"
                                                      r"missing \['covariance'\]"),
    ({"weights": [0.5, 0.5], "mu": [[0, 0, 0], [1, 1, 1]], "covariance": np.ones((2, 2, 2))},
     r"init\['mu'\]: expected shape \(2, 2\), got \(2, 3\)"),
    ({"weights": [0.5, 0.5], "mu": [[0, 0], [1, 1]], "covariance": np.ones((2, 2))},
     r"init\['covariance'\]: expected shape \(2, 2, 2\), got \(2, 2\)"),
    ({"weights": [0.7, 0.7], "mu": [[0, 0], [1, 1]], "covariance": [np.eye(2)] * 2},
     r"init\['weights'\]: expected non-negative weights summing to 1, got \[0.7, 0.7\]"),
    ({"weights": [0.5, 0.5], "mu": [[0, 0], [1, 1]], "covariance": [np.eye(2), -np.eye(2)]},
     r"init\['covariance'\]: expected symmetric positive definite matrices"),
    ({"weights": [0.5, 0.5], "mu": [[0, np.nan], [1, 1]], "covariance": [np.eye(2)] * 2},
     r"init\['mu'\]: expected finite values"),
])
def test_bad_initial_parameters(init, message):
    with pytest.raises(ValueError, match=message):
        mixflow.fit(MODEL, data(), init=init)


def test_initial_weights_rounded_for_print_are_renormalised():
    # weights rounded for print sum to 1 within their rounding: taken as given, EM's first objective would be above
    # its second (normalised by the M-step), which EM's monotone check reports as an internal error
    faithful = mixflow.load_dataset("faithful")
    fitted = mixflow.fit(mixflow.GaussianMixture(2), faithful, method="em", random_seed=0)["em/estimate"]
    exact = {name: fitted[name].values for name in ("weights", "mu", "covariance")}
    rounded = {**exact, "weights": exact["weights"] + np.array([2e-6, 1e-6])}  # sums to 1.000003
    with warnings.catch_warnings():
        warnings.simplefilter("error", mixflow.MixflowInternalWarning)
        trees = [mixflow.fit(mixflow.GaussianMixture(2), faithful, method="em", init=init) for init in (exact, rounded)]
    first = [tree["em/sample_stats"]["log_likelihood"].values[0, 0] for tree in trees]
    assert first[1] == pytest.approx(first[0], abs=1e-3) and first[1] <= trees[1]["em"].attrs["log_likelihood"]
    np.testing.assert_allclose(trees[1]["em/estimate"]["weights"].values, exact["weights"], atol=1e-6)


def test_constant_feature_warns():
    x = np.column_stack([np.arange(10.0), np.full(10, 3.0)])
    with pytest.warns(mixflow.ConstantFeatureWarning,
                      match=r"data: feature \['x1'\] \(column 1 of the array\) takes a single value"):
        mixflow.fit(mixflow.GaussianMixture(2, covariance="diag"), x, method="map", random_seed=0)
    frame = pd.DataFrame({"a": np.arange(10.0), "b": 3.0, "c": -1.0})
    with pytest.warns(mixflow.ConstantFeatureWarning,
                      match=r"data: features \['b', 'c'\] take a single value each: every component sits on them"):
        mixflow.fit(mixflow.GaussianMixture(2, covariance="diag"), frame, method="map", random_seed=0)


def test_a_constant_feature_beside_others_is_said_to_distort_k_under_the_prior_only():
    # under the prior (MAP here) a constant column adds a term that depends on the components, so the gain in
    # log-likelihood from K=1 to K=2 is not the other features' alone, and the warning says to leave it out; the
    # MLE's gain is the other features' (its spread there collapses, which the fit flags), and a regression's
    # constant covariate is an intercept, not to be left out: neither is told so
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"a": np.r_[rng.normal(0, 1, 60), rng.normal(4, 1, 60)], "b": rng.normal(size=120)})

    def gain_and_said(data, method):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            values = [mixflow.fit(mixflow.GaussianMixture(k), data, method=method, random_seed=0)["em"].attrs[
                "log_likelihood"] for k in (1, 2)]
        said = " ".join(str(w.message) for w in caught if issubclass(w.category, mixflow.ConstantFeatureWarning))
        return values[1] - values[0], said

    advice = "leave such features out to compare fits of different K"
    plain, _ = gain_and_said(frame, "map")
    constant, said = gain_and_said(frame.assign(c=1.0), "map")
    assert abs(constant - plain) > 1.0 and said.endswith(advice)
    plain, _ = gain_and_said(frame, "em")
    constant, said = gain_and_said(frame.assign(c=1.0), "em")
    assert constant == pytest.approx(plain, abs=1e-6) and said and advice not in said
    covariate = pd.DataFrame({"y": rng.normal(size=50), "x": rng.normal(size=50), "z": 1.0})
    with pytest.warns(mixflow.ConstantFeatureWarning) as caught:
        mixflow.fit(mixflow.RegressionMixture(2, "y ~ x + z - 1"), covariate, method="map", random_seed=0)
    assert not any(advice in str(w.message) for w in caught)


@pytest.mark.parametrize("chunks", [None, 25])
def test_data_of_one_constant_feature_are_said_as_their_value(chunks):
    # one feature: the observations are all one value, which is said; a name mixflow made up (x0) is not
    counts = np.full((100, 1), 4)
    data = counts if chunks is None else dask.array.from_array(counts, chunks=chunks)
    with pytest.warns(mixflow.ConstantFeatureWarning) as record:
        mixflow.fit(mixflow.PoissonMixture(2), data, method="em", random_seed=0)
    said = [str(w.message) for w in record if issubclass(w.category, mixflow.ConstantFeatureWarning)]
    assert said == ["data: every observation is 4: every component sits on it, and no component can be told from "
                    "another (where the family fits a spread, the spread there is its floor or the prior's)"]
    with pytest.warns(mixflow.ConstantFeatureWarning, match=r"^data: every observation of 'deaths' is 4: "):
        mixflow.fit(mixflow.PoissonMixture(2), pd.DataFrame({"deaths": counts[:, 0]}), method="em", random_seed=0)
    # names the user gave that look like mixflow's own are the user's
    with pytest.warns(mixflow.ConstantFeatureWarning, match=r"^data: every observation of 'x0' is 4: "):
        mixflow.fit(mixflow.PoissonMixture(2), pd.Series(counts[:, 0], name="x0"), method="em", random_seed=0)
    with pytest.warns(mixflow.ConstantFeatureWarning, match=r"^data: feature \['x1'\] takes a single value: "):
        mixflow.fit(mixflow.GaussianMixture(2, covariance="diag"), pd.DataFrame({"x0": np.arange(100.0), "x1": 4.0}),
                    method="map", random_seed=0)


def test_accepted_input_types_give_the_same_fit():
    x = data()
    frame = pd.DataFrame(x, columns=["a", "b"])
    results = [
        mixflow.fit(MODEL, x, random_seed=0),
        mixflow.fit(MODEL, frame, random_seed=0),
        mixflow.fit(MODEL, xr.DataArray(x, dims=("obs", "feature"), coords={"feature": ["a", "b"]}), random_seed=0),
        mixflow.fit(MODEL, x.tolist(), random_seed=0),
    ]
    for tree in results[1:]:
        np.testing.assert_allclose(tree["em/estimate"]["mu"].values, results[0]["em/estimate"]["mu"].values)
    assert list(results[1]["observed_data"]["feature"].values) == ["a", "b"]
    one_d = mixflow.fit(MODEL, x[:, 0], random_seed=0)
    assert one_d["observed_data"]["x"].shape == (20, 1)


def test_prediction_errors():
    tree = mixflow.fit(MODEL, pd.DataFrame(data(), columns=["a", "b"]), random_seed=0)
    with pytest.raises(ValueError, match=r"new_data: expected features \['a', 'b'\], got \['a', 'c'\] "
                                         r"\(missing \['b'\]\)"):
        mixflow.predict(tree, pd.DataFrame({"a": [1.0], "c": [2.0]}))
    with pytest.raises(ValueError, match=r"new_data: expected finite values"):
        mixflow.predict(tree, np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match=r"tree: expected a mixflow result with an /em estimate"):
        mixflow.predict(xr.DataTree(), data())


def test_lists_of_rows_of_unequal_length_or_of_huge_integers():
    # a ragged list raised numpy's own ValueError; integers beyond int64 (a column of 10**30) were said to be
    # "non-numeric column(s) ['x0', 'x1']", both columns named though only one held them
    with pytest.raises(mixflow.InputError, match=r"^data: expected a list of rows of equal length \(a table\), got "
                                                 r"rows of lengths \[1, 2\]"):
        mixflow.fit(mixflow.GaussianMixture(1), [[1.0, 2.0], [3.0]], method="em")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixflow.MixflowWarning)
        tree = mixflow.fit(mixflow.GaussianMixture(1), [[10**30, 1.0], [2.0, 3.0], [5.0, 1.0]], method="em")
    np.testing.assert_allclose(tree["em/estimate"]["mu"].values, [[(10**30 + 7.0) / 3, 5 / 3]], rtol=1e-12)


def test_integers_that_float64_rounds_are_said():
    from mixflow.data import validate_data

    # an int64 column near 2**62 (an identifier, a count in nanoseconds) lost its spread in the float64 every fit
    # computes in, without a word: values 1000 apart became a handful of distinct values
    rng = np.random.default_rng(0)
    ids = (2**62 + rng.integers(0, 1000, 20)).astype(np.int64)
    frame = pd.DataFrame({"id": ids, "y": rng.normal(size=20)})
    with pytest.warns(mixflow.PrecisionWarning, match=r"^data: feature \['id'\] holds integers beyond 2\*\*53 "
                                                      r"\(up to 4\.61e\+18\), which float64, the type of every fit, "
                                                      r"rounds by up to 512: values closer than that"):
        validate_data(frame)
    for exact in (np.array([2**53, -(2**53), 3], dtype=np.int64),  # within float64's integers
                  np.array([2**60, 2**61 + 2**10, 5], dtype=np.int64),  # beyond, but multiples it holds exactly
                  np.array([-(2**63), 0, 5], dtype=np.int64),
                  np.array([2**63, 2**62, 5], dtype=np.uint64), np.array([2**64 - 2048, 0, 5], dtype=np.uint64)):
        with warnings.catch_warnings():
            warnings.simplefilter("error", mixflow.PrecisionWarning)
            validate_data(pd.DataFrame({"x": exact}))
    with pytest.warns(mixflow.PrecisionWarning, match=r"\['u'\] holds integers beyond 2\*\*53 \(up to 1\.84e\+19\)"):
        validate_data(pd.DataFrame({"u": np.array([2**64 - 1, 7], dtype=np.uint64)}))
    with pytest.warns(mixflow.PrecisionWarning, match=r"\['i'\] holds integers beyond 2\*\*53 \(up to 9\.22e\+18\)"):
        validate_data(pd.DataFrame({"i": np.array([2**63 - 1, 7], dtype=np.int64)}))
    with pytest.warns(mixflow.PrecisionWarning, match=r"\['x0'\] holds integers beyond 2\*\*53 \(up to 1e\+30\)"):
        validate_data([[10**30 + 1, 1.0], [2.0, 3.0]])


def test_more_free_parameters_than_observations_is_said_before_fitting():
    # K=40 lines on 56 rows (159 parameters) ran for minutes without a word about the number of components. The
    # warning comes before any fitting, so one named start (init="kmeans") serves: the default portfolio's local
    # search over the pairs of 20 components adds nothing to what is checked
    rows = np.random.default_rng(0).normal(size=(56, 2))
    frame = pd.DataFrame({"y": rows[:, 0], "x": rows[:, 1]})
    with pytest.warns(mixflow.MixflowWarning, match=r"^n_components: 20 components have 79 free parameters, as many "
                                                    r"as or more than the 56 observations: the data cannot determine "
                                                    r"them .* compare fewer components \(select_k\)$"):
        mixflow.fit(mixflow.RegressionMixture(20, "y ~ x"), frame, random_seed=0, n_init=1, max_iter=20,
                    init="kmeans")
    with warnings.catch_warnings(record=True) as caught:  # 11 parameters on 56 rows: nothing to say
        warnings.simplefilter("always")
        mixflow.fit(mixflow.RegressionMixture(3, "y ~ x"), frame, random_seed=0, n_init=1, max_iter=5,
                    init="kmeans")
    assert not any("free parameters" in str(w.message) for w in caught)
