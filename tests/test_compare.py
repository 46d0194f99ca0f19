"""The comparison table: numbers against hand computation, label agreement against scikit-learn."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy.special import logsumexp
from sklearn.metrics import adjusted_rand_score

import mixflow
from mixflow.analysis.bootstrap import bootstrap
from mixflow.analysis.information import standard_errors
from mixflow.container.build import build_tree
from mixflow.container.read import observed_data
from mixflow.families.sampling import gaussian_points
from mixflow.present.compare import adjusted_rand_index, agreement_of, compare, compare_dataset, label_agreement


def simulated_data(d: int, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.4
    centres = np.where(labels[:, None], -2.0, 2.0) * np.ones(d)
    return centres + rng.normal(scale=0.8, size=(n, d))


def _draws(estimate: xr.Dataset, chains: int, draws: int, rng) -> dict:
    """Parameter draws scattered around the estimate (valid: weights on the simplex, PD covariances)."""
    out = {}
    for name, da in estimate.data_vars.items():
        shape = (chains, draws, *da.shape)
        if name == "weights":
            value = rng.dirichlet(60 * da.values, size=(chains, draws))
        elif name in ("covariance", "variance"):
            factor = np.exp(rng.normal(scale=0.1, size=(chains, draws) + (1,) * da.ndim))
            value = da.values * factor
        else:
            value = da.values + rng.normal(scale=0.15, size=shape)
        out[name] = (("chain", "draw", *da.dims), value)
    return out


def _method_groups(tree, method: str, chains: int, draws: int, rng) -> xr.DataTree:
    estimate = tree["em/estimate"].to_dataset()
    model = mixflow.model_from_json(tree.attrs["model"])
    data = _observed(tree)
    posterior = _draws(estimate, chains, draws, rng)
    params = [{n: posterior[n][1][c, s] for n in posterior} for c in range(chains) for s in range(draws)]
    log_lik = np.array([logsumexp(_log_joint(model, p, data), axis=1) for p in params]).reshape(chains, draws, -1)
    mean_params = {n: v[1].mean(axis=(0, 1)) for n, v in posterior.items()}
    resp = np.exp(_log_joint(model, mean_params, data))
    resp /= resp.sum(axis=1, keepdims=True)
    coords = {dim: tree["em/estimate"][dim].values for dim in estimate.dims}
    coords.update(chain=np.arange(chains), draw=np.arange(draws), obs=tree["observed_data"]["obs"].values,
                  feature=tree["observed_data"]["feature"].values, iteration=np.arange(200))
    groups = {"posterior": {"variables": posterior},
              "responsibilities": {"variables": {"responsibilities_mean": (("obs", "component"), resp),
                                                 "responsibilities_sd": (("obs", "component"), 0 * resp)}}}
    if method == "mcmc":
        replicated = np.stack([gaussian_points(p, data.n_obs, rng)[0] for p in params]).reshape(
            chains, draws, data.n_obs, data.n_features)
        groups.update({
            "log_likelihood": {"variables": {"x": (("chain", "draw", "obs"), log_lik)}},
            "posterior_predictive": {"variables": {"x": (("chain", "draw", "obs", "feature"), replicated)}},
            "sample_stats": {"variables": {"diverging": (("chain", "draw"), np.zeros((chains, draws), bool))}},
        })
    else:
        elbo = -500 - 300 * np.exp(-np.arange(200) / 20) + rng.normal(scale=3, size=200)
        groups["sample_stats"] = {"variables": {"elbo": (("iteration",), elbo)}}
    prior = json.dumps(model.resolve_prior(model.prepare(data)).to_dict())  # recorded as fit_mcmc and fit_advi do
    return build_tree(groups, coords=coords, attrs={"prior": prior})


def _observed(tree):
    return observed_data(tree)


def _log_joint(model, params, data):
    prepared = model.prepare(data)
    log_density, _ = model.log_density(model.e_step_constants(model.to_working(params, prepared), prepared), prepared)
    return log_density + np.log(params["weights"])


def make_container(methods=("em", "mcmc", "advi"), *, d: int = 1, n: int = 60, with_bootstrap: bool = False,
                   chains: int = 2, draws: int = 40, seed: int = 0, covariance: str = "full") -> xr.DataTree:
    """A small container with synthetic /mcmc and /advi groups built around the EM estimate."""
    tree = mixflow.fit(mixflow.GaussianMixture(2, covariance=covariance), simulated_data(d, n, seed),
                       random_seed=seed, n_init=2, data_name="simulated")
    if with_bootstrap:
        tree = bootstrap(tree, n_replicates=12, random_seed=seed, n_jobs=1)
    rng = np.random.default_rng(seed + 1)
    for method in ("mcmc", "advi"):
        if method in methods:
            tree[method] = _method_groups(tree, method, chains if method == "mcmc" else 1, draws, rng)
    if "em" not in methods:
        tree = xr.DataTree.from_dict({node.path: node.to_dataset(inherit=False) for node in tree.subtree
                                      if not node.path.startswith("/em")})
    return tree


@pytest.fixture(scope="module")
def container():
    return make_container(with_bootstrap=True)


def _hand(draws: np.ndarray, probability: float) -> dict:
    flat = draws.reshape(-1)
    lower, upper = np.quantile(flat, [(1 - probability) / 2, (1 + probability) / 2])
    return {"estimate": flat.mean(), "sd": flat.std(ddof=1), "lower": lower, "upper": upper}


def test_numbers_against_hand_computation(container):
    table = compare(container)
    probability = 0.89
    assert table.attrs["ci_prob"] == probability
    em_point = container["em/estimate"]["mu"].values
    mcmc = container["mcmc/posterior"]["mu"].values
    advi = container["advi/posterior"]["mu"].values
    boot = container["em/bootstrap/posterior"]["mu"].values
    for component in (0, 1):
        rows = table[(table.parameter == "mu") & (table.component == component)].set_index("method")
        nuts = _hand(mcmc[:, :, component, 0], probability)
        for method, draws in (("mcmc", mcmc), ("advi", advi), ("bootstrap", boot)):
            expected = _hand(draws[:, :, component, 0], probability)
            for key, value in expected.items():
                assert rows.loc[method, key] == pytest.approx(value, rel=1e-12), (method, key)
            inside = expected["lower"] <= em_point[component, 0] <= expected["upper"]
            assert bool(rows.loc[method, "em_inside"]) is bool(inside)
            if method != "mcmc":
                assert rows.loc[method, "distance_to_mcmc"] == pytest.approx(
                    (expected["estimate"] - nuts["estimate"]) / nuts["sd"], rel=1e-12)
                assert rows.loc[method, "sd_ratio_to_mcmc"] == pytest.approx(expected["sd"] / nuts["sd"], rel=1e-12)
        assert pd.isna(rows.loc["mcmc", "distance_to_mcmc"]) and pd.isna(rows.loc["em", "em_inside"])


def test_em_row_is_the_estimate_with_a_wald_interval(container):
    table = compare(container)
    errors = standard_errors(container)
    em = table[(table.method == "em") & (table.parameter == "weights")].set_index("component")
    z = 1.5981931399228173  # standard normal quantile at 0.945
    for component in (0, 1):
        point = container["em/estimate"]["weights"].values[component]
        sd = errors["weights"].values[component]
        assert em.loc[component, "estimate"] == point
        assert em.loc[component, "sd"] == pytest.approx(sd, rel=1e-12)
        logit, spread = np.log(point / (1 - point)), z * sd / (point * (1 - point))  # the logit scale's interval
        assert em.loc[component, "lower"] == pytest.approx(1 / (1 + np.exp(spread - logit)), rel=1e-9)
        assert em.loc[component, "upper"] == pytest.approx(1 / (1 + np.exp(-spread - logit)), rel=1e-9)
    for name in ("mu", "covariance"):  # means and off-diagonal covariances on the natural scale, variances on the log
        rows = table[(table.method == "em") & (table.parameter == name)]
        assert len(rows) > 0
        for _, row in rows.iterrows():
            index = {dim: row[dim] for dim in container["em/estimate"][name].dims}
            point = float(container["em/estimate"][name].sel(index))
            sd = float(errors[name].sel(index))
            diagonal = name == "covariance" and row["feature"] == row["feature_"]
            expected = (point * np.exp(-z * sd / point), point * np.exp(z * sd / point)) if diagonal else (
                point - z * sd, point + z * sd)
            assert (row["lower"], row["upper"]) == pytest.approx(expected, rel=1e-9)


def test_tidy_layout_and_xarray_twin(container):
    table = compare(container)
    dataset = compare_dataset(container)
    assert list(table.columns[:5]) == ["parameter", "component", "feature", "feature_", "method"]
    assert list(table["method"].cat.categories) == ["em", "bootstrap", "mcmc", "advi"]
    # full covariance, d=1: one (feature, feature_) entry per component; 2 + 2 + 2 elements x 4 methods
    assert len(table) == 6 * 4
    assert dataset["mu"].dims == ("method", "statistic", "component", "feature")
    row = table[(table.parameter == "covariance") & (table.component == 1) & (table.method == "advi")].iloc[0]
    cell = dataset["covariance"].sel({"method": "advi", "component": 1, "feature": "x0", "feature_": "x0"})
    assert row["upper"] == cell.sel(statistic="upper").item()
    assert dataset["adjusted_rand_index"].sel({"method": "em", "method_": "mcmc"}).item() == pytest.approx(
        table.attrs["label_agreement"]["em"]["mcmc"])


def test_upper_triangle_of_full_covariances_in_two_dimensions():
    table = compare(make_container(("em",), d=2))
    covariance = table[table.parameter == "covariance"]
    assert sorted(zip(covariance.feature, covariance.feature_, strict=True)) == sorted(
        [("x0", "x0"), ("x0", "x1"), ("x1", "x1")] * 2)


def test_missing_methods_are_left_out():
    only_em = compare(make_container(("em",)))
    assert set(only_em["method"]) == {"em"} and only_em["em_inside"].isna().all()
    only_mcmc = compare(make_container(("mcmc",)))
    assert set(only_mcmc["method"]) == {"mcmc"} and only_mcmc["distance_to_mcmc"].isna().all()
    two = compare(make_container(("em", "advi")))
    assert set(two["method"]) == {"em", "advi"} and two["distance_to_mcmc"].isna().all()


def test_interval_probability_and_kind_are_arguments(container):
    wide = compare(container, ci_prob=0.99)
    narrow = compare(container, ci_prob=0.5)
    assert ((wide.upper - wide.lower) > (narrow.upper - narrow.lower)).all()
    hdi = compare(container, ci_kind="hdi")
    assert hdi.attrs["ci_kind"] == "hdi"


@pytest.mark.parametrize("seed", range(5))
def test_adjusted_rand_index_matches_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 3, size=50)
    b = np.where(rng.random(50) < 0.7, a, rng.integers(0, 4, size=50))
    assert adjusted_rand_index(a, b) == pytest.approx(adjusted_rand_score(a, b), abs=1e-12)
    assert adjusted_rand_index(a, (a + 1) % 3) == pytest.approx(1.0)


@pytest.mark.parametrize(("a", "b"), [([0, 0, 0], [1, 1, 1]), ([0, 1, 2], [2, 1, 0]), ([0, 0, 1, 1], [0, 1, 0, 1]),
                                      ([0, 1, 2, 3], [0, 0, 0, 0]), ([5], [7])])
def test_adjusted_rand_index_edge_cases(a, b):
    assert adjusted_rand_index(a, b) == pytest.approx(adjusted_rand_score(a, b), abs=1e-12)


def test_weighted_adjusted_rand_index_equals_repeated_rows():
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 3, 30), rng.integers(0, 2, 30)
    counts = rng.integers(0, 4, 30)
    assert adjusted_rand_index(a, b, counts) == pytest.approx(
        adjusted_rand_score(np.repeat(a, counts), np.repeat(b, counts)), abs=1e-12)


def test_label_agreement_table(container):
    agreement = label_agreement(container)
    assert list(agreement.index) == ["em", "mcmc", "advi"]
    np.testing.assert_allclose(np.diag(agreement), 1.0)
    np.testing.assert_allclose(agreement.values, agreement.values.T)
    # the components each method's hard labels use, kept by compare for the report's findings
    from mixflow.container.read import hard_labels

    assert agreement.attrs["clusters"] == {m: int(np.unique(hard_labels(container, m)).size)
                                           for m in ("em", "mcmc", "advi")}
    assert agreement_of(compare(container)).attrs["clusters"] == agreement.attrs["clusters"]
    pd.testing.assert_frame_equal(agreement_of(compare(container)), agreement)


def test_compare_tables_of_two_fits_concatenate(container):
    """``pd.concat`` keeps equal ``attrs`` and drops unequal ones, asking each value whether it is equal."""
    other = compare(make_container(("em", "mcmc")))
    both = pd.concat([compare(container), other])
    assert len(both) == len(compare(container)) + len(other)
    assert both.attrs.get("label_agreement") in (None, {})  # the two fits' agreements differ: not kept
    assert pd.concat([other, compare(make_container(("em", "mcmc")))]).attrs["label_agreement"] == other.attrs[
        "label_agreement"]


def test_bad_arguments(container):
    with pytest.raises(TypeError, match="tree: expected a mixflow result"):
        compare({"em": 1})
    with pytest.raises(ValueError, match=r"ci_prob: expected a probability strictly between 0 and 1, got 1.5"):
        compare(container, ci_prob=1.5)
    with pytest.raises(ValueError, match=r"ci_kind: expected 'eti' or 'hdi', got 'quantile'"):
        compare(container, ci_kind="quantile")
    with pytest.raises(ValueError, match=r"labels_b: expected the shape of labels_a \(3,\), got \(2,\)"):
        adjusted_rand_index([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="tree: expected a mixflow result with the model"):
        compare(xr.DataTree())


@pytest.fixture(scope="module")
def regression_container():
    tone = mixflow.load_dataset("tone")
    tree = mixflow.fit(mixflow.RegressionMixture(2, "tuned ~ stretchratio"), tone, method="map", random_seed=1,
                       n_init=2)
    return bootstrap(tree, n_replicates=6, random_seed=1, n_jobs=1)


def test_regression_coefficients_keep_their_coefficient_dim(regression_container):
    table = compare(regression_container)
    # no parameter of a regression has a feature dim: no all-empty feature, feature_ columns
    assert table.attrs["element_columns"] == ["component", "coefficient"]
    assert "feature_" not in table.columns
    coefficients = table[table.parameter == "coefficients"]
    assert len(coefficients) == 2 * 2 * 2  # components x coefficients x methods (em, bootstrap)
    estimate = regression_container["em/estimate"]["coefficients"]
    boot = regression_container["em/bootstrap/posterior"]["coefficients"]
    for component in (0, 1):
        for name in ("intercept", "stretchratio"):
            rows = coefficients[(coefficients.component == component)
                                & (coefficients.coefficient == name)].set_index("method")
            assert rows.loc["em", "estimate"] == estimate.sel(component=component, coefficient=name).item()
            assert rows.loc["bootstrap", "estimate"] == pytest.approx(
                boot.sel(component=component, coefficient=name).mean().item(), rel=1e-12)
    assert table.loc[table.parameter == "variance", "coefficient"].isna().all()
    assert not table.duplicated(["parameter", *table.attrs["element_columns"], "method"]).any()


def test_bootstrap_replicates_of_a_regression_keep_the_column_names(regression_container):
    assert regression_container["em/bootstrap"].attrs["n_failed"] == 0
    assert np.isfinite(regression_container["em/bootstrap/posterior"]["coefficients"].values).all()


def _shortest_interval(values: np.ndarray, probability: float) -> tuple[float, float]:
    """The narrowest interval spanning floor(probability * n) + 1 of the sorted draws (by hand)."""
    ordered = np.sort(values.reshape(-1))
    span = int(np.floor(probability * ordered.size))
    widths = ordered[span:] - ordered[: ordered.size - span]
    start = int(np.argmin(widths))
    return ordered[start], ordered[start + span]


def test_hdi_rows_are_the_highest_density_intervals_of_the_same_draws(container):
    import arviz_stats

    probability = 0.8
    table = compare(container, ci_prob=probability, ci_kind="hdi")
    assert not table[["lower", "upper"]].equals(compare(container, ci_prob=probability)[["lower", "upper"]])
    checked = 0
    groups = (("mcmc", "mcmc/posterior"), ("advi", "advi/posterior"), ("bootstrap", "em/bootstrap/posterior"))
    for method, group in groups:
        draws = container[group].to_dataset()
        reference = arviz_stats.hdi(draws, prob=probability, dim=["chain", "draw"])
        for parameter in ("weights", "mu", "covariance"):
            rows = table[(table.method == method) & (table.parameter == parameter)].set_index("component")
            for component in (0, 1):
                values = draws[parameter].isel(component=component).values
                expected = reference[parameter].isel(component=component).values.reshape(-1, 2)[0]
                lower, upper = rows.loc[component, "lower"], rows.loc[component, "upper"]
                assert (lower, upper) == pytest.approx(tuple(expected), rel=1e-12), (method, parameter)
                assert (lower, upper) == pytest.approx(_shortest_interval(values, probability), rel=1e-12)
                inside = np.mean((values >= lower) & (values <= upper))
                assert inside >= probability
                checked += 1
    assert checked == 3 * 3 * 2


def _naive_log_likelihood_1d(theta, x):
    """Two-component 1-D Gaussian log-likelihood in (w1, mu0, mu1, var0, var1), written with scipy."""
    from scipy import stats

    w1, mu0, mu1, var0, var1 = theta
    density = (1 - w1) * stats.norm.pdf(x, mu0, np.sqrt(var0)) + w1 * stats.norm.pdf(x, mu1, np.sqrt(var1))
    return np.log(density).sum()


def test_wald_sd_equals_a_naive_numerical_hessian(container):
    """The EM row's sd is the inverse observed information, here from finite differences of a scipy
    log-likelihood in the natural parameters (the delta method makes the parameterisation immaterial)."""
    estimate = container["em/estimate"]
    x = container["observed_data"]["x"].values[:, 0]
    theta = np.array([estimate["weights"].values[1], *estimate["mu"].values[:, 0],
                      *estimate["covariance"].values[:, 0, 0]])
    steps = 1e-4 * np.maximum(np.abs(theta), 0.1)
    hessian = np.empty((5, 5))
    for i in range(5):
        for j in range(5):
            ei, ej = np.eye(5)[i] * steps[i], np.eye(5)[j] * steps[j]
            hessian[i, j] = (_naive_log_likelihood_1d(theta + ei + ej, x) - _naive_log_likelihood_1d(theta + ei - ej, x)
                             - _naive_log_likelihood_1d(theta - ei + ej, x)
                             + _naive_log_likelihood_1d(theta - ei - ej, x)) / (4 * steps[i] * steps[j])
    sd = np.sqrt(np.diag(np.linalg.inv(-hessian)))
    table = compare(container)
    em = table[table.method == "em"]
    expected = {"weights": [sd[0], sd[0]], "mu": sd[1:3], "covariance": sd[3:5]}
    for parameter, values in expected.items():
        rows = em[em.parameter == parameter].set_index("component")
        np.testing.assert_allclose(rows.loc[[0, 1], "sd"].values, values, rtol=2e-3, err_msg=parameter)


def test_wald_intervals_stay_inside_each_parameter_s_range():
    from mixflow.present.compare import _wald_interval

    dims = ("component", "feature", "feature_")
    covariance = xr.DataArray([[[0.04, -0.03], [-0.03, 2.0]]], dims=dims)
    sd = xr.DataArray([[[0.05, 0.04], [0.04, 0.5]]], dims=dims)
    lower, upper = _wald_interval("covariance", covariance, sd, 1.96)
    np.testing.assert_allclose(lower.values[0], [[0.04 * np.exp(-1.96 * 0.05 / 0.04), -0.03 - 1.96 * 0.04],
                                                 [-0.03 - 1.96 * 0.04, 2.0 * np.exp(-1.96 * 0.5 / 2.0)]])
    np.testing.assert_allclose(upper.values[0, 0, 1], -0.03 + 1.96 * 0.04)  # off the diagonal: the natural scale
    rate_lower, _ = _wald_interval("rate", xr.DataArray([0.01, 3.0]), xr.DataArray([0.02, 0.1]), 1.96)
    weight_lower, weight_upper = _wald_interval("weights", xr.DataArray([0.01]), xr.DataArray([0.02]), 1.96)
    assert (rate_lower.values > 0).all() and 0 < weight_lower.values[0] < 0.01 < weight_upper.values[0] < 1
    one = _wald_interval("weights", xr.DataArray([1.0]), xr.DataArray([0.0]), 1.96)  # K=1: the point itself
    assert one[0].values[0] == one[1].values[0] == 1.0
    # an error far above its point (a flat direction of the likelihood): the interval spans the range, silently
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wide_weight = _wald_interval("weights", xr.DataArray([0.2]), xr.DataArray([1e3]), 1.96)
        wide_rate = _wald_interval("rate", xr.DataArray([0.2]), xr.DataArray([1e3]), 1.96)
    assert (wide_weight[0].values[0], wide_weight[1].values[0]) == (0.0, 1.0)
    assert (wide_rate[0].values[0], wide_rate[1].values[0]) == (0.0, np.inf)


def test_label_differences_count_rows_by_weight_after_matching_the_components():
    # where hard labels differ and how confidently either method places those rows; the components matched first
    from mixflow.present.compare import label_differences

    a = np.array([[0.9, 0.1], [0.8, 0.2], [0.55, 0.45], [0.95, 0.05], [0.1, 0.9], [0.3, 0.7]])
    b = np.array([[0.1, 0.9], [0.2, 0.8], [0.6, 0.4], [0.9, 0.1], [0.9, 0.1], [0.7, 0.3]])  # components swapped
    record = label_differences(a, b, weights=[3.0, 0.0, 1.0, 1.0, 2.0, 2.0], obs=list("uvwxyz"), names=("em", "advi"))
    # rows w (ambiguous in both) and x (confident in both) differ once b's components are matched to a's
    assert record == {"rows": 2.0, "total": 9.0, "confident": 1.0, "confident_by": {"em": 1.0, "advi": 1.0},
                      "top": {"em": 0.95, "advi": 0.9}, "examples": ["x"], "weighted": True}
    assert label_differences(a, a[:, ::-1])["rows"] == 0.0  # a relabelling is no difference
