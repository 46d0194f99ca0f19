"""Units of measurement: from the shipped datasets and the caller into the container, its plots and report."""

import json
import re

import matplotlib
import matplotlib.pyplot
import pytest
from test_compare import make_container

import mixflow
from mixflow.container.read import data_units
from mixflow.data import check_units
from mixflow.present import plots
from mixflow.present.report.page import report
from mixflow.units import axis_label, unit_power, unit_product, unit_ratio, unit_root

matplotlib.use("Agg")


def test_units_compose_as_a_physicist_writes_them():
    assert unit_power("min") == "min²" and unit_power("km/s") == "(km/s)²" and unit_power("") == ""
    assert unit_product("min", "min") == "min²" and unit_product("cm", "km/s") == "cm·(km/s)"
    # a column without a unit is of unknown unit: what involves it has none (the covariance of alcohol in %vol with
    # flavanoids of no stated unit was said to be in %vol); one declared dimensionless ("1") is neutral
    assert unit_product("", "cm") == "" and unit_product("cm", "") == "" and unit_product("", "") == ""
    assert unit_product("1", "cm") == "cm" and unit_product("cm", "1") == "cm" and unit_power("1") == ""
    assert unit_ratio("cm", "s") == "cm/s" and unit_ratio("cm", "cm") == ""
    assert unit_ratio("", "km/s") == "" and unit_ratio("cm", "") == ""
    assert unit_ratio("1", "km/s") == "1/(km/s)" and unit_ratio("cm", "1") == "cm"
    assert axis_label("ratio", "1") == "ratio"
    assert unit_root("(km/s)²") == "km/s" and unit_root("min²") == "min" and unit_root("min") == ""
    assert axis_label("waiting", "min") == "waiting (min)" and axis_label("ratio", "") == "ratio"


@pytest.mark.parametrize(("units", "error", "message"), [
    ("min", TypeError, r"units: expected a mapping of column name to unit .* got str 'min'"),
    ({"speed": "km/s"}, ValueError, r"units: expected units of the data's columns \['velocity'\], got a unit "
                                    r"for \['speed'\]"),
    ({"velocity": 3}, ValueError, r"units: expected each unit to be a non-empty string .* got \{'velocity': 3\}"),
    ({"velocity": " "}, ValueError, r"units: expected each unit to be a non-empty string"),
])
def test_bad_units_are_refused_naming_the_argument(units, error, message):
    galaxies = mixflow.load_dataset("galaxies")
    with pytest.raises(error, match=message):
        mixflow.fit(mixflow.GaussianMixture(2), galaxies, units=units, random_seed=1)
    with pytest.raises(error, match=message):
        check_units(units, ["velocity"])


def test_shipped_datasets_carry_their_units_into_the_container_and_through_save_and_load(tmp_path):
    faithful = mixflow.load_dataset("faithful")
    assert faithful.attrs["units"] == {"eruptions": "min", "waiting": "min"}
    assert "velocity (km/s)" in mixflow.list_datasets().loc["galaxies", "columns"]
    tree = mixflow.fit(mixflow.GaussianMixture(2), faithful[["waiting"]], random_seed=1, n_init=2)
    assert data_units(tree) == {"waiting": "min"}  # only the fitted columns
    tree = mixflow.fit(mixflow.GaussianMixture(2), faithful, random_seed=1, n_init=2, units={"waiting": "s"})
    assert data_units(tree) == {"waiting": "s"}  # the caller's units replace the dataset's
    plain = mixflow.fit(mixflow.GaussianMixture(2), faithful.to_numpy(), random_seed=1, n_init=2)
    assert data_units(plain) == {} and "units" not in plain.attrs
    mixflow.save(tree, tmp_path / "f.nc")
    assert data_units(mixflow.load(tmp_path / "f.nc")) == {"waiting": "s"}


def test_each_family_gives_its_parameters_their_units():
    units = {"eruptions": "min", "waiting": "min", "velocity": "km/s"}
    full = mixflow.GaussianMixture(2, covariance="full")
    assert full.parameter_unit("weights", {}, units) == ""
    assert full.parameter_unit("mu", {"feature": "velocity"}, units) == "km/s"
    assert full.parameter_unit("covariance", {"feature": "velocity", "feature_": "eruptions"}, units) == "(km/s)·min"
    spherical = mixflow.GaussianMixture(2, covariance="spherical")
    assert spherical.parameter_unit("variance", {}, {"eruptions": "min", "waiting": "min"}) == "min²"
    assert spherical.parameter_unit("variance", {}, units) == ""  # no common unit
    assert mixflow.PoissonMixture(2).parameter_unit("rate", {}, {"deaths": "deaths/day"}) == "deaths/day"
    regression = mixflow.RegressionMixture(2, "tuned ~ stretch")
    lines = {"tuned": "Hz", "stretch": "cm"}
    assert regression.parameter_unit("coefficients", {"coefficient": "intercept"}, lines) == "Hz"
    assert regression.parameter_unit("coefficients", {"coefficient": "stretch"}, lines) == "Hz/cm"
    assert regression.parameter_unit("variance", {}, lines) == "Hz²"
    grouped = mixflow.GroupedGaussianMixture(2)
    assert grouped.parameter_unit("variance", {}, {"lower": "mm", "upper": "mm"}) == "mm²"
    assert grouped.parameter_unit("mu", {}, {"lower": "mm", "upper": "mm"}) == "mm"


@pytest.fixture(autouse=True)
def close_figures():
    """ArviZ draws through pyplot, which keeps every figure open until closed."""
    yield
    matplotlib.pyplot.close("all")


@pytest.fixture(scope="module")
def with_units():
    tree = make_container(("em", "mcmc", "advi"), d=2, draws=30)
    tree.attrs["units"] = json.dumps({"x0": "min", "x1": "km/s"})
    return tree


def _texts(figure) -> set[str]:
    texts = {t.get_text() for t in figure.findobj(matplotlib.text.Text)}
    for ax in figure.get_axes():
        texts |= {ax.get_xlabel(), ax.get_ylabel(), ax.get_title()}
    return texts


def test_plots_put_the_units_on_their_axes(with_units):
    scatter = _texts(plots.plot_data(with_units))
    assert {"x0 (min)", "x1 (km/s)"} <= scatter
    histogram = _texts(plots.plot_data(with_units, features="x1"))
    assert {"x1 (km/s)", "density (per km/s)"} <= histogram
    forest = _texts(plots.plot_forest(with_units))
    assert {"mu[x0] (min)", "covariance[x0, x1] (min·(km/s))", "covariance[x1, x1] ((km/s)²)", "weights"} <= forest


def test_posterior_densities_have_units_and_a_legend_titled_method(with_units):
    figure = plots.plot_posteriors(with_units)
    assert {"min", "km/s", "min²", "(km/s)²", "min·(km/s)"} <= _texts(figure)
    assert {legend.get_title().get_text() for legend in figure.legends} == {"method"}


def test_trace_panels_give_the_units_of_their_values(with_units):
    figure = plots.plot_trace(with_units, var_names="mu")
    assert {"mu\n0, x0 (min)", "mu\n1, x1 (km/s)"} <= _texts(figure)  # the densities name the element
    # the traces beside them give the unit alone: name and unit ("mu\n0, volume (1e8 m^3)") ran into the next row
    assert {ax.get_ylabel() for ax in figure.get_axes() if ax.get_ylabel()} == {"min", "km/s"}


def test_predictive_check_panels_are_titled_and_labelled(with_units):
    figure = plots.plot_ppc(with_units)
    axes = [ax for ax in figure.get_axes() if ax.get_title()]
    assert sorted(ax.get_xlabel() for ax in axes) == ["x0 (min)", "x1 (km/s)"]
    assert all(ax.get_title().startswith(("x0: observed", "x1: observed")) for ax in axes)
    assert {ax.get_ylabel() for ax in axes} == {"cumulative probability"}  # 60 rows: ArviZ's ECDF


def test_posterior_densities_span_the_bulk_of_the_draws_not_a_long_tail(with_units):
    tree = with_units.copy()
    draws = tree["mcmc/posterior"].to_dataset()
    covariance = draws["covariance"].values.copy()
    covariance[0, 0, 0, 0, 0] = 5e7  # one wild draw of a variance, as a component with few points gives
    tree["mcmc/posterior"] = draws.assign(covariance=(draws["covariance"].dims, covariance))
    figure = plots.plot_posteriors(tree, var_names="covariance")
    right = max(ax.get_xlim()[1] for ax in figure.get_axes() if ax.get_xlabel() == "min²")
    assert right < 10  # the bulk is below 2; the tail draw is left out of the panel
    assert "draws beyond 3 interquartile ranges past the quartiles left out" in figure.get_suptitle()


def test_choice_of_k_criteria_get_a_panel_each():
    import pandas as pd

    table = pd.DataFrame({"bic": [500.0, 480.0, 490.0], "aic": [495.0, 470.0, 460.0], "icl": [500.0, 520.0, 600.0],
                          "cv_log_likelihood": [-250.0, -240.0, -238.0]}, index=pd.Index([1, 2, 3], name="k"))
    figure = plots.plot_select_k(table)
    visible = [ax for ax in figure.get_axes() if ax.get_visible()]
    assert [ax.get_ylabel() for ax in visible] == ["BIC", "AIC", "ICL", "log-likelihood"]
    preferred = [[line.get_xdata()[0] for line in ax.get_lines()[1:]] for ax in visible]
    assert preferred == [[2], [3], [1], [3]]


def test_the_report_gives_units_in_its_tables(tmp_path, with_units, no_report_plots):
    text = report(with_units, tmp_path / "r.html").read_text(encoding="utf-8")
    comparison = text[text.index('<section id="comparison">'):text.index('<section id="plots">')]
    assert '<th class="unit">unit</th>' in comparison
    for unit in ("min", "km/s", "(km/s)²", "min·(km/s)"):
        assert f'<td class="unit">{unit}</td>' in comparison, unit
    assert re.search(r"<small>sd [0-9.,]+ km/s</small>", comparison)  # the sd of a variance, in the data's unit
    data = text[text.index('<section id="data">'):text.index('<section id="fits">')]
    assert "<th>unit</th>" in data and "<td>km/s</td>" in data


def test_a_report_without_units_has_no_unit_column(tmp_path, no_report_plots):
    tree = make_container(("em",), d=1)
    text = report(tree, tmp_path / "r.html").read_text(encoding="utf-8")
    assert 'class="unit"' not in text



def test_a_fit_shows_no_unit_where_a_column_of_unknown_unit_enters():
    # alcohol (%vol) with flavanoids (no unit given): their covariance was labelled "(%vol)"
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"alcohol": rng.normal(13, 0.8, 60), "flavanoids": rng.normal(2, 1, 60),
                          "ratio": rng.normal(1, 0.1, 60)})
    tree = mixflow.fit(mixflow.GaussianMixture(1), frame, method="em", random_seed=0,
                       units={"alcohol": "%vol", "ratio": "1"})
    import re

    units = {}  # the unit after each parameter's name: "mu[0, alcohol] (%vol)   13.06 (0.09)"
    for line in mixflow.summary(tree, kind="text").splitlines():
        if line.startswith(("covariance", "mu")):
            unit = re.match(r"^[^\]]*\] \(([^)]*)\) ", line)
            units[line.split("]")[0] + "]"] = unit.group(1) if unit else ""
    assert units["covariance[0, alcohol, flavanoids]"] == "" and units["mu[0, flavanoids]"] == ""
    assert units["covariance[0, alcohol, ratio]"] == "%vol"  # a dimensionless column: the other's unit
    assert units["covariance[0, alcohol, alcohol]"] == "%vol²" and units["mu[0, alcohol]"] == "%vol"
    assert units["mu[0, ratio]"] == "" and units["covariance[0, ratio, ratio]"] == ""


def test_variances_of_diag_and_spherical_fits_and_a_dimensionless_count_show_their_own_units():
    # a "diag" variance showed its feature's unit (%vol, not %vol²); a spherical variance the square of the one
    # unit given though the other column's is unknown; a dimensionless count's rate "(1)"
    import numpy as np
    import pandas as pd

    from mixflow.present.plots.data import _density_label
    from mixflow.present.units import ParameterUnits

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"alcohol": rng.normal(13, 0.8, 60), "flavanoids": rng.normal(2, 1, 60)})
    for covariance, element, unit in (("diag", {"feature": "alcohol"}, "%vol²"),
                                      ("diag", {"feature": "flavanoids"}, ""), ("spherical", {}, "")):
        tree = mixflow.fit(mixflow.GaussianMixture(1, covariance=covariance), frame, method="em", random_seed=0,
                           units={"alcohol": "%vol"})
        assert ParameterUnits(tree)("variance", element) == unit, (covariance, element)
    tree = mixflow.fit(mixflow.GaussianMixture(1, covariance="spherical"), frame, method="em", random_seed=0,
                       units={"alcohol": "cm", "flavanoids": "cm"})
    assert ParameterUnits(tree)("variance", {}) == "cm²"
    counts = pd.DataFrame({"n": rng.poisson(3, 100)})
    poisson = mixflow.fit(mixflow.PoissonMixture(1), counts, method="em", random_seed=0, units={"n": "1"})
    assert ParameterUnits(poisson)("rate", {}) == ""
    assert _density_label("1") == "density" and _density_label("cm") == "density (per cm)"
