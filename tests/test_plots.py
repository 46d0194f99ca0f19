"""Every plot runs on containers with one, two and three methods and writes a non-empty file."""

import matplotlib
import pandas as pd
import pytest
from matplotlib import pyplot
from matplotlib.figure import Figure
from test_compare import make_container

import mixflow
from mixflow.present import plots
from mixflow.present.plots.data import plot_data

matplotlib.use("Agg")

# one method, two methods, and all three (EM with its bootstrap, MCMC, ADVI)
CONTAINERS = {"em": ("em",), "mcmc": ("mcmc",), "em+mcmc": ("em", "mcmc"), "em+mcmc+advi": ("em", "mcmc", "advi")}
NEEDS_DRAWS = ("plot_posteriors", "plot_trace", "plot_rank")
FUNCTIONS = {"plot_forest": plots.plot_forest, "plot_posteriors": plots.plot_posteriors, "plot_trace": plots.plot_trace,
             "plot_rank": plots.plot_rank, "plot_ppc": plots.plot_ppc, "plot_convergence": plots.plot_convergence,
             "plot_data": plot_data}
CASES = [(plot, container) for plot in FUNCTIONS
         for container in ("mcmc" if plot in NEEDS_DRAWS else "em", "em+mcmc", "em+mcmc+advi")]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    pyplot.close("all")  # ArviZ draws through pyplot, which keeps every figure open (a warning beyond 20)


@pytest.fixture(scope="module")
def containers():
    built = {name: make_container(methods, draws=30, with_bootstrap=name == "em+mcmc+advi")
             for name, methods in CONTAINERS.items()}
    built["em+bootstrap 2-D"] = make_container(("em",), d=2, with_bootstrap=True)
    return built


@pytest.mark.parametrize(("plot", "container"), CASES)
def test_plot_writes_a_non_empty_file(tmp_path, containers, plot, container):
    suffix = ".svg" if len(container) % 2 else ".png"
    path = tmp_path / f"{plot}{suffix}"
    figure = FUNCTIONS[plot](containers[container], path=path)
    assert isinstance(figure, Figure)
    assert path.stat().st_size > 1000


def test_two_dimensional_data_and_bootstrap_only(tmp_path, containers):
    tree = containers["em+bootstrap 2-D"]
    for function in (plot_data, plots.plot_posteriors, plots.plot_ppc):
        path = tmp_path / f"{function.__name__}.png"
        function(tree, path=path)
        assert path.stat().st_size > 1000
    plot_data(tree, features=["x1"], path=tmp_path / "one.png")


def test_choice_of_k_plot(tmp_path):
    table = pd.DataFrame({"bic": [10.0, 8.0, 9.0], "aic": [9.0, 7.0, 7.5], "icl": [10.0, 8.5, 9.5],
                          "cv_log_likelihood": [-5.0, -4.0, -4.5], "cv_log_likelihood_se": [1.0, 1.0, 1.0],
                          "elpd_loo": [-5.0, -3.9, -4.2], "elpd_loo_se": [0.5, 0.5, 0.5]},
                         index=pd.Index([1, 2, 3], name="k"))
    path = tmp_path / "k.svg"
    plots.plot_select_k(table, path=path)
    assert path.stat().st_size > 1000
    plots.plot_select_k(table[["bic", "aic", "icl"]])


def test_bad_arguments(tmp_path, containers):
    tree = containers["em"]
    with pytest.raises(ValueError, match=r"path: expected a file name ending in one of \['.png', '.svg', '.pdf'\]"):
        plots.plot_forest(tree, path=tmp_path / "forest.jpg")
    with pytest.raises(FileNotFoundError, match="path: expected a file in an existing directory"):
        plots.plot_forest(tree, path=tmp_path / "missing" / "forest.png")
    with pytest.raises(TypeError, match="path: expected None or a file path"):
        plots.plot_forest(tree, path=3)
    with pytest.raises(ValueError, match=r"var_names: expected some of \['weights', 'mu', 'covariance'\], got \['s'\]"):
        plots.plot_forest(tree, var_names="s")
    with pytest.raises(ValueError, match="tree: expected draws to plot"):
        plots.plot_posteriors(tree)
    with pytest.raises(ValueError, match=r"tree: expected a /mcmc group for this plot, got methods \['em'\]"):
        plots.plot_trace(tree)
    with pytest.raises(ValueError, match="method: expected 'mcmc', 'advi' or 'bootstrap', got 'em'"):
        plots.plot_rank(tree, method="em")
    for method in ("advi", "bootstrap"):  # one chain each: nothing to rank against
        with pytest.raises(ValueError, match=f"method: expected a method with at least 2 chains .*, got '{method}' "
                                             "with 1"):
            plots.plot_rank(containers["em+mcmc+advi"], method=method)
    with pytest.raises(ValueError, match=r"method: expected one of the container's methods \['em'\], got 'advi'"):
        plots.plot_ppc(tree, method="advi")
    with pytest.raises(ValueError, match="num_samples: expected an integer >= 1, got 0"):
        plots.plot_ppc(tree, num_samples=0)
    with pytest.raises(ValueError, match="tree: expected /em/sample_stats or an ADVI ELBO history"):
        plots.plot_convergence(containers["mcmc"])
    with pytest.raises(ValueError, match=r"features: expected one or two distinct names among \['x0'\], got \['y'\]"):
        plot_data(tree, features="y")
    with pytest.raises(ValueError, match=r"methods: expected some of the container's methods \['em'\], got \['mcmc'\]"):
        plot_data(tree, methods="mcmc")
    with pytest.raises(TypeError, match="table: expected the DataFrame returned by mixflow.select_k"):
        plots.plot_select_k({"bic": [1, 2]})


@pytest.fixture(scope="module")
def family_trees():
    """EM fits with a small bootstrap of every non-Gaussian family, on the shipped data sets."""
    import warnings

    import mixflow

    deaths, tone = mixflow.load_dataset("london_deaths"), mixflow.load_dataset("tone")
    crabs, faithful = mixflow.load_dataset("crabs"), mixflow.load_dataset("faithful")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fits = {
            "poisson": mixflow.fit(mixflow.PoissonMixture(2), deaths[["deaths"]], weights=deaths["days"],
                                   random_seed=1, n_init=1, tol=1e-8),
            "regression": mixflow.fit(mixflow.RegressionMixture(2, "tuned ~ stretchratio"), tone, method="map",
                                      random_seed=1, n_init=2),
            "grouped": mixflow.fit(mixflow.GroupedGaussianMixture(2, open_below=0.5835, open_above=0.6915),
                                   crabs[["lower", "upper"]], weights=crabs["count"], random_seed=1, n_init=2),
            "soft_kmeans": mixflow.fit(mixflow.SoftKMeans(2, 1.0), faithful, random_seed=1, n_init=1),
        }
        return {name: mixflow.bootstrap(tree, n_replicates=4, random_seed=1, n_jobs=1) for name, tree in fits.items()}


@pytest.mark.parametrize("family", ["poisson", "regression", "grouped", "soft_kmeans"])
def test_data_plot_and_predictive_check_of_every_family(tmp_path, family_trees, family):
    tree = family_trees[family]
    figure = plot_data(tree, path=tmp_path / "data.png")
    assert (tmp_path / "data.png").stat().st_size > 5000
    lines = [line for ax in figure.axes for line in ax.lines]
    if family in ("poisson", "grouped"):  # mixture + 2 components, for EM and for the bootstrap
        assert len(lines) == 2 * 3
    if family == "regression":  # one panel (the bootstrap has no panel of its own), one line per component
        assert len(figure.axes) == 1 and len(lines) == 2
    figure = plots.plot_ppc(tree, method="bootstrap", num_samples=3, path=tmp_path / "ppc.png")
    assert (tmp_path / "ppc.png").stat().st_size > 5000


def test_predictive_units_per_family(family_trees):
    from mixflow import model_from_json
    from mixflow.container.read import observed_data

    expected = {"poisson": (1096, ["deaths"], "ecdf"), "regression": (150, ["tuned"], None),
                "grouped": (1000, ["class midpoint"], "ecdf"), "soft_kmeans": (272, ["eruptions", "waiting"], None)}
    for family, (n_units, features, kind) in expected.items():
        tree = family_trees[family]
        units, got_kind = model_from_json(tree.attrs["model"]).predictive_units(observed_data(tree))
        assert units.sizes["obs"] == n_units and list(units["feature"].values) == features and got_kind == kind


def test_family_data_plots_bad_features(family_trees):
    with pytest.raises(ValueError, match=r"features: expected None for a PoissonMixture .*, got 'deaths'"):
        plot_data(family_trees["poisson"], features="deaths")
    with pytest.raises(ValueError, match=r"features: expected one covariate of the model \['stretchratio'\], "
                                         r"got 'tuned'"):
        plot_data(family_trees["regression"], features="tuned")


def test_posteriors_of_a_four_dimensional_full_covariance_fit_get_every_panel():
    iris = mixflow.load_dataset("iris").drop(columns="Species")
    tree = mixflow.bootstrap(mixflow.fit(mixflow.GaussianMixture(3), iris, random_seed=1, n_init=1),
                             n_replicates=5, random_seed=1)
    figure = plots.plot_posteriors(tree)  # 3 weights + 12 means + 30 covariance elements > ArviZ's 40
    assert sum(axis.has_data() for axis in figure.axes) == 45


def test_trace_of_every_parameter_beyond_twenty_rows_asks_for_var_names_and_draws_what_is_named(tmp_path):
    # 4 features, full covariances: more rows than ArviZ's 40 subplots, whose own error named no argument
    tree = make_container(("em", "mcmc"), d=4, draws=10)
    with pytest.raises(mixflow.InputError, match=r"var_names: expected the parameters to trace .*got None, which asks "
                                                  r"for every parameter: \d+ rows here, more than 20; e\.g\. "
                                                  r"var_names=\['weights'\]"):
        plots.plot_trace(tree)
    figure = plots.plot_trace(tree, var_names=["weights", "mu", "covariance"], path=tmp_path / "trace.png")
    assert len(figure.axes) > 40


def test_axes_read_in_full_without_an_offset():
    # AIC of 1311.50 to 1311.58 was drawn as ticks 0.50-0.58 under "+1.311e3": a difference of 0.08 read as a trend
    table = pd.DataFrame({"bic": [1324.51, 1324.55, 1324.59], "aic": [1311.50, 1311.58, 1311.54],
                          "icl": [1346.4, 1346.5, 1346.45]}, index=pd.Index([1, 2, 3], name="k"))
    figure = plots.plot_select_k(table)
    figure.canvas.draw()
    for ax in figure.axes:
        if ax.get_visible():
            assert ax.yaxis.get_offset_text().get_text() == ""
            assert any(label.get_text().startswith("13") for label in ax.get_yticklabels())


def test_forest_of_many_panels_of_large_values_keeps_every_axis_apart(tmp_path):
    # three components' full covariances of features on unequal scales: many rows of panels, and variances of
    # millions whose tick labels get a multiplier ("1e6") beneath them; constrained layout gave up on the whole
    # figure ("axes sizes collapsed to zero"), leaving a panel's axes on top of each other
    import warnings

    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    rng = np.random.default_rng(1)
    scales = np.array([30.0, 300.0, 1000.0, 3000.0])
    centres = np.array([[-3.0], [0.0], [3.0]]) * [1.0, -1.0, 1.0, -1.0]
    frame = pd.DataFrame((centres[rng.integers(3, size=90)] + rng.normal(size=(90, 4))) * scales,
                         columns=["a", "b", "c", "d"])
    tree = mixflow.fit(mixflow.GaussianMixture(3, covariance="full"), frame, random_seed=1, n_init=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        figure = plots.plot_forest(tree, path=tmp_path / "forest.png")
        canvas = FigureCanvasAgg(figure)
        canvas.draw()
    assert not [str(w.message) for w in caught if "constrained_layout" in str(w.message)]
    renderer = canvas.get_renderer()
    assert len(figure.subfigs) == 1 + 4 + 10  # weights, 4 means, 10 covariance entries
    for subfigure in figure.subfigs:
        assert all(ax.get_window_extent(renderer).height > 5 for ax in subfigure.axes)
        for upper, lower in zip(subfigure.axes, subfigure.axes[1:], strict=False):
            # each component's axis with its own tick labels (and multiplier), all above the next component's axis
            assert any(label.get_text() for label in upper.get_xticklabels())
            assert upper.get_tightbbox(renderer).y0 >= lower.get_window_extent(renderer).y1


@pytest.mark.parametrize(("method", "title", "source", "colour"),
                         [("bootstrap", "Bootstrap predictive check, EM", "bootstrap refits of EM", "light grey"),
                          ("em", "Plug-in predictive check, EM estimate", "the EM estimate", "grey")])
def test_predictive_check_says_what_its_replicates_are_and_names_their_colour(containers, method, title, source,
                                                                              colour):
    # the bootstrap's replicates were titled a posterior predictive check, and said to be coloured though grey
    from matplotlib.colors import to_hex

    figure = plots.plot_ppc(containers["em+bootstrap 2-D"], method=method, num_samples=4)
    assert figure.get_suptitle() == title
    (legend,) = figure.legends
    assert [text.get_text() for text in legend.get_texts()] == [
        "observed data (black)", f"4 data sets replicated from {source} ({colour})"]
    drawn = {(to_hex(line.get_color()), line.get_alpha()) for ax in figure.axes for line in ax.lines}
    keys = {(to_hex(handle.get_color()), handle.get_alpha()) for handle in legend.legend_handles}
    assert drawn == keys  # the legend's lines are those drawn: black for the data, the method's for the replicates
