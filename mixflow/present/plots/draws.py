"""Plots of a mixflow container: every method side by side.

ArviZ-plots draws what it has (marginal densities, trace, rank, posterior predictive checks);
matplotlib draws the rest: the forest of all methods here, convergence curves and the choice of K in
:mod:`mixflow.present.plots.fit`, the data plots in :mod:`mixflow.present.plots.data`. Every function takes the
container first, returns a matplotlib ``Figure`` and writes it to ``path`` (``.png``, ``.svg`` or
``.pdf``) when one is given.

The forest stays mixflow's own: ``arviz_plots.plot_forest`` (1.3) draws every parameter element of every
method on one shared x axis, so weights (0 to 1) beside velocities (about 20,000 km/s) or variances
(about 4e6 (km/s)²) collapse to points, and it has no place for the EM point with its Wald interval. Here
each element and component gets its own scale and the EM point is drawn beside the draws. For ArviZ's
own, ``az.plot_forest({"NUTS": tree["mcmc"], "ADVI": tree["advi"]})`` works on the container as it is.

Symmetric matrices (covariances) are shown by their upper triangle only, as an ``entry`` dim labelled
``"row, column"``.
"""

import dataclasses

import numpy as np
import xarray as xr
from arviz_base import rc_context
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, ScalarFormatter

from mixflow.arguments import check_count
from mixflow.container.layout import ADVI, ADVI_MODES, EM_ESTIMATE, MCMC, MCMC_MODES, OBSERVED_DATA
from mixflow.container.layout import group as layout_group
from mixflow.container.read import available_methods, check_tree, has_group, method_draws, parameter_names
from mixflow.engines.modes import chains_text
from mixflow.errors import InputError
from mixflow.families.base import model_from_json
from mixflow.present.compare import METHOD_LABELS, compare_dataset
from mixflow.present.plots.common import METHOD_COLORS, REPLICATE_COLOR_NAMES, check_path, finish
from mixflow.present.units import ParameterUnits
from mixflow.units import axis_label

__all__ = [
    "plot_forest",
    "plot_posteriors",
    "plot_ppc",
    "plot_rank",
    "plot_trace",
]


#: plot_trace of every parameter (``var_names=None``) draws at most this many rows (ArviZ's default limit of
#: subplots, two per row); asked for by name, every element gets its row
TRACE_ROWS = 20


def check_var_names(tree, var_names) -> list[str]:
    """The parameters to plot: all by default; unknown names raise naming the known ones."""
    names = parameter_names(tree)
    if var_names is None:
        return names
    requested = [var_names] if isinstance(var_names, str) else list(var_names)
    unknown = [name for name in requested if name not in names]
    if unknown or not requested:
        raise InputError(f"var_names: expected some of {names}, got {requested}")
    return requested


def upper_triangle(dataset: xr.Dataset) -> xr.Dataset:
    """Replace each (feature, feature_) matrix by its upper triangle along an ``entry`` dim."""
    out = {}
    for name, da in dataset.data_vars.items():
        if "feature_" not in da.dims:
            out[name] = da
            continue
        features = list(da["feature"].values)
        pairs = [(a, b) for i, a in enumerate(features) for b in features[i:]]
        entries = [da.sel(feature=a, feature_=b, drop=True) for a, b in pairs]
        stacked = xr.concat(entries, dim="entry").assign_coords(entry=[f"{a}, {b}" for a, b in pairs])
        out[name] = stacked.transpose(..., "entry")
    return xr.Dataset(out)


def _draw_methods(tree, exclude=()) -> list[str]:
    return [m for m in available_methods(tree) if m != "em" and m not in exclude]


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise InputError(message)


def _figure_of(plot_collection) -> Figure:
    return plot_collection.viz["figure"].item()


# -- forest --------------------------------------------------------------------------------------------
def _panels(dataset: xr.Dataset, names: list[str]) -> list[tuple[str, str, xr.DataArray, dict]]:
    """(parameter, title, DataArray (method, statistic[, component]), element) for each panel of the forest."""
    panels = []
    triangle = upper_triangle(dataset[names])
    for name in names:
        da = triangle[name]
        extra = [d for d in da.dims if d not in ("method", "statistic", "component")]
        if not extra:
            panels.append((name, name, da, {}))
            continue
        stacked = da.stack(panel=extra)
        for i in range(stacked.sizes["panel"]):
            index = stacked["panel"].values[i]
            index = index if isinstance(index, tuple) else (index,)
            panels.append((name, f"{name}[{', '.join(map(str, index))}]",
                           stacked.isel(panel=i, drop=True), _element(dict(zip(extra, index, strict=True)))))
    return panels


def plot_forest(tree, *, var_names=None, ci_prob: float | None = None, path=None) -> Figure:
    """Forest plot of every parameter across EM, its bootstrap, MCMC and ADVI.

    One panel per parameter element, in it one small axis per component (labelled by its index, with
    its own x scale, so that well separated components do not squash the intervals), and one line per
    method: the point (EM estimate or posterior mean) and the interval of :func:`mixflow.compare`
    (credible intervals at ``ci_prob``; the EM point's Wald interval from the observed information,
    dashed).

    Parameters
    ----------
    tree : xarray.DataTree
    var_names : str or list of str, optional
        Parameters to show (default all).
    ci_prob : float, optional
        Interval probability, ``rcParams["stats.ci_prob"]`` by default.
    path : str or pathlib.Path, optional
        Where to save the figure (.png, .svg or .pdf).

    Returns
    -------
    matplotlib.figure.Figure

    """
    check_tree(tree)
    path = check_path(path)
    names = check_var_names(tree, var_names)
    dataset = compare_dataset(tree, ci_prob=ci_prob)
    methods = list(dataset["method"].values)
    panels = _panels(dataset, names)
    n_cols = min(3, len(panels))
    n_rows = -(-len(panels) // n_cols)
    figure = Figure(figsize=(4.3 * n_cols, 1.0), layout="constrained")
    grid = figure.add_gridspec(n_rows, n_cols, left=0, right=1, bottom=0, top=1)
    units = ParameterUnits(tree)
    rows = [[] for _ in range(n_rows)]
    for i, (name, title, da, element) in enumerate(panels):
        subfigure = figure.add_subfigure(grid[i // n_cols, i % n_cols])
        _forest_panel(subfigure, da, methods)
        subfigure.suptitle(units.label(title, name, element), fontsize=10)
        rows[i // n_cols].extend(subfigure.axes)
    # each row as high as its panels need: a component's axis holds its tick labels and a line per method, and
    # a multiplier ("1e6") beneath the tick labels of very large or small values; with less, constrained layout
    # gives up on the whole figure ("axes sizes collapsed to zero") and leaves a panel's axes on top of each other
    n_components = dataset.sizes.get("component", 1)
    heights = [0.45 + n_components * (0.2 + 0.2 * len(methods)
                                      + (0.25 if any(_has_multiplier(ax) for ax in row) else 0)) for row in rows]
    grid.set_height_ratios(heights)
    figure.set_size_inches(4.3 * n_cols, sum(heights) + 0.7)
    handles = [Line2D([], [], marker="D" if m == "em" else "o", linestyle="--" if m == "em" else "-",
                      color=METHOD_COLORS[m], markerfacecolor=None if m == "em" else "white",
                      label=_em_label(dataset) if m == "em" else METHOD_LABELS[m]) for m in methods]
    figure.legend(handles=handles, loc="outside lower center", ncols=len(methods), frameon=False)
    figure.suptitle(f"Estimates and {dataset.attrs['ci_prob']:.0%} intervals (each component on its own scale)",
                    fontsize=11)
    return finish(figure, path)


def _em_label(dataset: xr.Dataset) -> str:
    method = dataset.attrs.get("em_method", "")
    return f"EM {method.upper()} (Wald interval)" if method else "EM (Wald interval)"


def _has_multiplier(ax) -> bool:
    """Whether the x tick labels of ``ax``, read in full as :func:`finish` has them, get a multiplier ("1e6")."""
    formatter = ax.xaxis.get_major_formatter()
    if not isinstance(formatter, ScalarFormatter):
        return False
    formatter.set_useOffset(False)
    formatter.set_locs(ax.get_xticks())
    return bool(formatter.get_offset())


def _forest_panel(subfigure, da: xr.DataArray, methods: list[str]) -> None:
    """One small axis per component (its own x scale), one line per method."""
    components = da["component"].values if "component" in da.dims else [None]
    # no space between them as a fraction of the figure (constrained layout's hspace), which in a tall figure of many
    # rows would outgrow the axes; the layout's padding and the tick labels keep them apart
    axes = np.atleast_1d(subfigure.subplots(len(components), 1, squeeze=False, gridspec_kw={"hspace": 0}).ravel())
    positions = -np.arange(len(methods), dtype=float)
    for ax, component in zip(axes, components, strict=True):
        values = da.sel(component=component) if component is not None else da
        for y, method in zip(positions, methods, strict=True):
            stats = values.sel({"method": method})
            lower, upper = float(stats.sel(statistic="lower")), float(stats.sel(statistic="upper"))
            if np.isfinite(lower) and np.isfinite(upper):
                ax.plot([lower, upper], [y, y], "--" if method == "em" else "-", color=METHOD_COLORS[method],
                        linewidth=1.6)
            ax.plot(float(stats.sel(statistic="estimate")), y, "D" if method == "em" else "o",
                    color=METHOD_COLORS[method], markersize=5, markerfacecolor="white" if method != "em" else None)
        ax.set_ylim(positions[-1] - 0.6, 0.6)
        ax.set_yticks([])
        ax.set_ylabel(f"k = {component}" if component is not None else "", rotation=0, ha="right", va="center",
                      fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(axis="x", labelsize=8)
        # a few round ticks, so that values of six digits do not run into each other
        ax.xaxis.set_major_locator(MaxNLocator(5, steps=[1, 2, 2.5, 5, 10]))
        ax.margins(x=0.08)


# -- ArviZ-plots: densities, trace, rank -----------------------------------------------------------------
_SAMPLE_DIMS = ("chain", "draw")


def _posterior_tree(draws: xr.Dataset, sample_stats: xr.Dataset | None = None) -> xr.DataTree:
    groups = {"posterior": upper_triangle(draws)}
    if sample_stats is not None:
        groups["sample_stats"] = sample_stats
    return xr.DataTree.from_dict(groups)


def plot_posteriors(tree, *, var_names=None, path=None) -> Figure:
    """Marginal densities of the bootstrap, MCMC and ADVI draws, with the EM point as a reference line.

    Drawn by ``arviz_plots.plot_dist`` (one colour per method) and ``arviz_plots.add_lines``.

    Parameters
    ----------
    tree : xarray.DataTree
        Must hold at least one of ``/em/bootstrap``, ``/mcmc``, ``/advi``.
    var_names : str or list of str, optional
    path : str or pathlib.Path, optional

    Returns
    -------
    matplotlib.figure.Figure

    """
    import arviz_plots as azp

    check_tree(tree)
    path = check_path(path)
    names = check_var_names(tree, var_names)
    methods = _draw_methods(tree)
    _require(bool(methods), "tree: expected draws to plot (/em/bootstrap, /mcmc or /advi), got only "
                            f"{available_methods(tree) or 'no methods'}; run mixflow.bootstrap or fit by MCMC/ADVI")
    bulk = _central_draws([upper_triangle(method_draws(tree, m)[names]) for m in methods])
    data = {METHOD_LABELS[m]: xr.DataTree.from_dict({"posterior": draws}) for m, draws in
            zip(methods, _common_draws(bulk), strict=True)}
    colors = [METHOD_COLORS[m] for m in methods]
    visuals = {"credible_interval": False, "point_estimate": False, "point_estimate_text": False}
    source = data if len(data) > 1 else next(iter(data.values()))
    if len(data) > 1:
        kwargs = {"aes": {"color": ["model"]}, "color": colors, "visuals": visuals}
    else:
        kwargs = {"visuals": {**visuals, "dist": {"color": colors[0]}}}
    with rc_context({"plot.max_subplots": None}):  # every element asked for gets a panel (4-D full: 45)
        plot_collection = azp.plot_dist(source, var_names=names,
                                        **_wrap_layout(method_draws(tree, methods[0])[names]), **kwargs)
    if "em" in available_methods(tree):
        estimate = upper_triangle(tree[EM_ESTIMATE].to_dataset()[names])
        azp.add_lines(plot_collection, values=estimate, visuals={"ref_line": {"color": METHOD_COLORS["em"]}})
    if len(data) > 1:
        plot_collection.add_legend("model", title="method")
    _unit_labels(plot_collection, ParameterUnits(tree))
    figure = _figure_of(plot_collection)
    figure.suptitle("Marginal densities" + (" (vertical line: EM estimate)" if "em" in available_methods(tree)
                                             else "") + f"; draws beyond {_FENCE:g} interquartile ranges past the "
                    "quartiles left out", fontsize=11)
    return finish(figure, path)


#: Tukey's far-out fences: draws more than this many interquartile ranges beyond the quartiles of all
#: methods' draws of an element are left out of its density. A long tail (a variance's, with few points in
#: a component) would otherwise stretch the axis and flatten the bulk; a normal posterior loses nothing
#: (the fences lie 4.7 sd from its mean).
_FENCE = 3.0


def _central_draws(datasets: list[xr.Dataset]) -> list[xr.Dataset]:
    """Each method's draws with those beyond the far-out fences of all methods' draws set to NaN."""
    pooled = xr.concat([ds.stack(sample=_SAMPLE_DIMS, create_index=False).drop_vars(_SAMPLE_DIMS, errors="ignore")
                        for ds in datasets], dim="sample", join="outer")
    quartiles = pooled.quantile([0.25, 0.75], dim="sample", skipna=True)
    first, third = quartiles.isel(quantile=0, drop=True), quartiles.isel(quantile=1, drop=True)
    lower, upper = first - _FENCE * (third - first), third + _FENCE * (third - first)
    return [ds.where((ds >= lower) & (ds <= upper)) for ds in datasets]


def _element(coords: dict) -> dict:
    """A panel's coordinates as a parameter element (an ``entry`` "a, b" back to feature and feature_)."""
    element = {dim: value for dim, value in coords.items() if dim != "entry"}
    if "entry" in coords:
        element["feature"], element["feature_"] = str(coords["entry"]).split(", ", 1)
    return element


def _unit_labels(plot_collection, units: ParameterUnits) -> None:
    """Write each panel's unit on its value axis: x of a density, y of a trace (``column`` "trace").

    A trace's y axis carries the unit alone: the density beside it names the element, and the name and unit
    together ran into the rows above and below.
    """
    panels = plot_collection.viz["plot"].to_dataset()
    for name, axes in panels.data_vars.items():
        for index in np.ndindex(axes.shape):
            coords = {dim: axes[dim].values[i] for dim, i in zip(axes.dims, index, strict=True) if dim in axes.coords}
            column = coords.pop("column", None)
            unit = units(str(name), _element(coords))
            ax = axes.values[index]
            if column != "trace":  # a few ticks, so that values of five digits do not run into each other
                ax.xaxis.set_major_locator(MaxNLocator(5))
            if column == "trace":
                ax.set_ylabel(unit, fontsize=9)
            elif not unit:
                continue
            elif column == "dist":
                ax.set_xlabel(f"{ax.get_xlabel()} ({unit})")
            else:
                ax.set_xlabel(unit, fontsize=9)


def _wrap_layout(draws: xr.Dataset) -> dict:
    """Four panels a row, each about 3.2 x 2.4 inches (ArviZ's default packs them too tightly)."""
    n_panels = sum(int(np.prod([size for dim, size in da.sizes.items() if dim not in ("chain", "draw")]))
                   for da in upper_triangle(draws).data_vars.values())
    n_rows = -(-n_panels // 4)
    return {"col_wrap": 4, "figure_kwargs": {"figsize": (13, 2.4 * n_rows + 0.6), "layout": "constrained"}}


def _common_draws(datasets: list[xr.Dataset]) -> list[xr.Dataset]:
    """Renumber chain/draw from 0 and pad with NaN to common sizes, so methods align exactly."""
    n_chains = max(ds.sizes["chain"] for ds in datasets)
    n_draws = max(ds.sizes["draw"] for ds in datasets)
    return [ds.assign_coords(chain=np.arange(ds.sizes["chain"]), draw=np.arange(ds.sizes["draw"]))
            .reindex(chain=np.arange(n_chains), draw=np.arange(n_draws)) for ds in datasets]


def _mcmc_like(tree, method: str, names) -> xr.DataTree:
    _require(method in ("mcmc", "advi", "bootstrap"),
             f"method: expected 'mcmc', 'advi' or 'bootstrap', got {method!r}")
    draws = method_draws(tree, method)
    _require(draws is not None, f"tree: expected a /{method} group for this plot, got methods "
                                f"{available_methods(tree)}")
    sample_stats = None
    if method == "mcmc" and "sample_stats" in tree["mcmc"].children:
        stats = tree[layout_group(MCMC, "sample_stats")].to_dataset()
        sample_stats = stats[["diverging"]] if "diverging" in stats else None
    return _posterior_tree(draws[names], sample_stats)


def _chain_plot_inputs(tree, var_names, method: str, path):
    """Checked path and variable names, and the method's draws shaped like an MCMC posterior."""
    check_tree(tree)
    path = check_path(path)
    names = check_var_names(tree, var_names)
    return path, names, _mcmc_like(tree, method, names)


def plot_trace(tree, *, var_names=None, method: str = "mcmc", path=None) -> Figure:
    """Trace and marginal density per chain (``arviz_plots.plot_trace_dist``), divergences marked.

    Parameters
    ----------
    tree : xarray.DataTree
    var_names : str or list of str, optional
    method : {"mcmc", "advi", "bootstrap"}, default "mcmc"
    path : str or pathlib.Path, optional

    Returns
    -------
    matplotlib.figure.Figure

    """
    import arviz_plots as azp

    path, names, data = _chain_plot_inputs(tree, var_names, method, path)
    n_rows = sum(int(np.prod([size for dim, size in da.sizes.items() if dim not in ("chain", "draw")]))
                 for da in data["posterior"].to_dataset().data_vars.values())
    _require(var_names is not None or n_rows <= TRACE_ROWS,
             f"var_names: expected the parameters to trace (a row of two panels per element), got None, which asks "
             f"for every parameter: {n_rows} rows here, more than {TRACE_ROWS}; e.g. var_names={[names[0]]!r}")
    with rc_context({"plot.max_subplots": None}):  # every element asked for gets its row
        plot_collection = azp.plot_trace_dist(data, var_names=names, compact=False,
                                              figure_kwargs={"figsize": (11, 1.5 * n_rows + 0.5),
                                                             "layout": "constrained"})
    _unit_labels(plot_collection, ParameterUnits(tree))
    return finish(_figure_of(plot_collection), path)


def plot_rank(tree, *, var_names=None, method: str = "mcmc", path=None) -> Figure:
    """Fractional rank ECDF per chain (``arviz_plots.plot_rank``): uniform when the chains mix.

    Parameters
    ----------
    tree : xarray.DataTree
    var_names : str or list of str, optional
    method : {"mcmc", "advi", "bootstrap"}, default "mcmc"
        A method with at least 2 chains: MCMC, or ADVI started from several EM optima.
    path : str or pathlib.Path, optional

    Returns
    -------
    matplotlib.figure.Figure

    """
    import arviz_plots as azp

    path, names, data = _chain_plot_inputs(tree, var_names, method, path)
    chains = data["posterior"].sizes["chain"]
    _require(chains >= 2, f"method: expected a method with at least 2 chains (a rank plot compares chains), got "
                          f"{method!r} with {chains} (ADVI from one start and the bootstrap are one chain; "
                          "use plot_trace)")
    with rc_context({"plot.max_subplots": None}):
        plot_collection = azp.plot_rank(data, var_names=names, **_wrap_layout(data["posterior"].to_dataset()))
    return finish(_figure_of(plot_collection), path)


# -- posterior predictive check ---------------------------------------------------------------------------
def _predictive_draws(tree, method: str, num_samples: int, random_seed: int) -> tuple[xr.DataArray, xr.DataArray,
                                                                                           str | None]:
    """Replicated units (chain, draw, obs, feature), observed units (obs, feature) and the density kind.

    The stored ``posterior_predictive`` of MCMC/ADVI when there is one; otherwise data sets simulated from
    the draws (or the EM estimate) by the family's sampler (its ``simulate_data``).
    """
    from mixflow.container.read import observed_data

    model = model_from_json(tree.attrs["model"])
    data = observed_data(tree)
    observed, kind = model.predictive_units(data)
    group = {m: layout_group(m, "posterior_predictive") for m in (MCMC, ADVI)}.get(method)
    if group is not None and group.split("/")[0] in tree.children and "posterior_predictive" in tree[
            group.split("/")[0]].children and "x" in tree[group].data_vars:  # (grouped data replicate counts)
        stored = tree[group].to_dataset()["x"]
        stored = stored.rename(unit="obs") if "unit" in stored.dims else stored  # weighted data: one row per unit
        if "feature" in stored.dims:  # every column (a container written before a regression stored its response)
            stored = stored.sel(feature=observed["feature"].values)
        else:  # one column: a regression's response
            stored = stored.expand_dims(feature=observed["feature"].values, axis=-1)
        return stored.transpose("chain", "draw", "obs", "feature"), observed, kind
    rng = np.random.default_rng(random_seed)
    if method == "em":
        estimate = tree[EM_ESTIMATE].to_dataset()
        parameter_sets = [{name: estimate[name].values for name in estimate.data_vars}] * num_samples
    else:
        draws = method_draws(tree, method).stack(sample=("chain", "draw"))
        picks = rng.choice(draws.sizes["sample"], size=min(num_samples, draws.sizes["sample"]), replace=False)
        parameter_sets = [{name: draws[name].isel(sample=i).values for name in draws.data_vars} for i in picks]
        parameter_sets = [p for p in parameter_sets if np.isfinite(p["weights"]).all()]
    k = parameter_sets[0]["weights"].size
    model = model if model.n_components == k else dataclasses.replace(model, n_components=k)
    replicated = [model.predictive_units(model.simulate_data(params, data, rng))[0] for params in parameter_sets]
    stacked = xr.concat([r.drop_vars("obs", errors="ignore") for r in replicated], dim="draw")
    return stacked.expand_dims(chain=1).transpose("chain", "draw", "obs", "feature"), observed, kind


def plot_ppc(tree, *, method: str | None = None, num_samples: int = 50, random_seed: int = 0,
             path=None) -> Figure:
    """Predictive check of the data density, per feature (``arviz_plots.plot_ppc_dist``).

    The stored ``posterior_predictive`` of MCMC/ADVI is used when present; otherwise replicated data
    sets are simulated by the family's sampler (its ``simulate_data``) from ``num_samples`` posterior draws
    (a posterior predictive check), bootstrap refits (a bootstrap predictive check) or from the EM estimate
    itself (a plug-in predictive check). What is compared is the family's ``predictive_units``: every feature
    of a Gaussian, the counts of a Poisson mixture and the class midpoints of grouped data (both as ECDFs,
    being discrete), the response of a regression (its covariates are held fixed). A legend names the colour
    of the observed data and of the replicates.

    Parameters
    ----------
    tree : xarray.DataTree
    method : {"mcmc", "advi", "bootstrap", "em"}, optional
        Default: the first of mcmc, advi, bootstrap, em that the container holds.
    num_samples : int, default 50
        Replicated data sets drawn.
    random_seed : int, default 0
        Seed of the simulated replicates and of the draws shown.
    path : str or pathlib.Path, optional

    Returns
    -------
    matplotlib.figure.Figure

    """
    import arviz_plots as azp

    check_tree(tree)
    path = check_path(path)
    present = available_methods(tree)
    if method is None:
        method = next((m for m in ("mcmc", "advi", "bootstrap", "em") if m in present), None)
    _require(method in present, f"method: expected one of the container's methods {present}, got {method!r}")
    check_count("num_samples", num_samples, 1)
    predictive, observed, kind = _predictive_draws(tree, method, num_samples, random_seed)
    dt = xr.DataTree.from_dict({
        "posterior_predictive": xr.Dataset({"x": predictive.drop_vars("obs", errors="ignore")}),
        OBSERVED_DATA: xr.Dataset({"x": observed.drop_vars("obs", errors="ignore")}),
    })
    n_draws = predictive.sizes["chain"] * predictive.sizes["draw"]
    kind = kind or ("ecdf" if observed.sizes["obs"] < 100 else "kde")  # ArviZ's "auto", made explicit for the label
    observed_line = {"color": "black"}
    replicate_line = {"color": METHOD_COLORS[method], "alpha": 0.3}
    plot_collection = azp.plot_ppc_dist(dt, num_samples=min(num_samples, n_draws), sample_dims=["chain", "draw"],
                                        kind=kind,
                                        cols=["__variable__", "feature"],
                                        visuals={"predictive_dist": replicate_line, "observed_dist": observed_line})
    figure = _figure_of(plot_collection)
    _ppc_labels(plot_collection, tree, kind, min(num_samples, n_draws))
    title, source = _ppc_title(method)
    figure.set_layout_engine("constrained")
    figure.suptitle(title, fontsize=10)
    handles = [Line2D([], [], **observed_line, label="observed data (black)"),
               Line2D([], [], **replicate_line, label=f"{min(num_samples, n_draws)} data sets replicated from "
                                                      f"{source} ({REPLICATE_COLOR_NAMES[method]})")]
    figure.legend(handles=handles, loc="outside lower center", ncols=2, frameon=False, fontsize=9)
    return finish(figure, path)


def _ppc_title(method: str) -> tuple[str, str]:
    """A predictive check's title, and what its replicated data sets are drawn from."""
    if method == "em":  # one parameter set: the estimate, its uncertainty left out
        return "Plug-in predictive check, EM estimate", "the EM estimate"
    if method == "bootstrap":  # refits of EM on resampled data, not draws from a posterior
        return "Bootstrap predictive check, EM", "bootstrap refits of EM"
    return f"Posterior predictive check, {METHOD_LABELS[method]}", f"{METHOD_LABELS[method]} posterior draws"


def _ppc_labels(plot_collection, tree, kind: str | None, n_replicates: int) -> None:
    """Each panel titled by its feature, its x axis in the feature's unit, its y axis named."""
    from mixflow.container.read import data_units

    units = data_units(tree)
    columns = {str(f) for f in tree["observed_data"]["feature"].values}
    # a replicated variable that is not a column (one column's "x"): the columns' unit, when all share one
    common = next(iter(set(units.values()))) if len(set(units.values())) == 1 and set(units) == columns else ""
    axes = plot_collection.viz["plot"].to_dataset()["x"]
    for index in np.ndindex(axes.shape):
        ax = axes.values[index]
        feature = str(axes["feature"].values[index[axes.dims.index("feature")]]) if "feature" in axes.dims else "x"
        ax.set_title(f"{feature}: observed and {n_replicates} replicates", fontsize=10)
        ax.set_xlabel(axis_label(feature, units.get(feature, "") if feature in columns else common), fontsize=9)
        ax.set_ylabel("cumulative probability" if kind == "ecdf" else "density", fontsize=9)


# -- modes ----------------------------------------------------------------------------------------------
#: Per method with modes: its modes group, what its chains are, and how a result gets them.
_MODES_OF = {"mcmc": (MCMC_MODES, "chains", "fit by method='mcmc'"),
             "advi": (ADVI_MODES, "fits", "fit by method='advi' with starts='em-optima' or a list of starts")}


def plot_modes(tree, *, var_names=None, ci_prob: float | None = None, path=None, method: str = "mcmc") -> Figure:
    """Forest plot of the draws by mode: one line per mode (its chains' draws), per parameter element.

    Each mode's draws are pooled over its chains and evenly thinned to one chain's number of draws.

    Drawn by ``arviz_plots.plot_forest`` with one model per mode, labelled by the mode's chains (ADVI: fits)
    and stacking weight (``/mcmc/modes`` or ``/advi/modes``, see :mod:`mixflow.engines.modes`).

    Parameters
    ----------
    tree : xarray.DataTree
        Must hold the method's ``modes`` group.
    var_names : str or list of str, optional
        Parameters to show (default all).
    ci_prob : float, optional
        Interval probability, ``rcParams["stats.ci_prob"]`` by default.
    path : str or pathlib.Path, optional
        Where to save the figure (.png, .svg or .pdf).
    method : {"mcmc", "advi"}, default "mcmc"
        Whose modes: NUTS's chains, or ADVI's fits from several starts (``starts="em-optima"``).

    Returns
    -------
    matplotlib.figure.Figure

    """
    import arviz_plots as azp

    check_tree(tree)
    path = check_path(path)
    names = check_var_names(tree, var_names)
    if method not in _MODES_OF:
        raise InputError(f"method: expected one of {list(_MODES_OF)}, got {method!r}")
    modes_path, unit, needs = _MODES_OF[method]
    if not has_group(tree, modes_path):
        raise InputError(f"tree: expected a result with /{modes_path} ({needs}), got none")
    modes = tree[modes_path]
    chain_mode = modes["chain_mode"].values
    draws = method_draws(tree, method)[names]
    n_draws = draws.sizes["draw"]
    data = {}
    for mode, weight in enumerate(modes["weight"].values):
        chains = np.flatnonzero(chain_mode == mode)
        label = f"mode {mode}: {chains_text(unit, chains)}, weight {weight:.2f}"
        # every mode as one chain of the same length (its draws evenly thinned), so the modes line up
        pooled = draws.isel(chain=chains).stack(sample=("chain", "draw")).transpose("sample", ...)
        keep = np.linspace(0, pooled.sizes["sample"] - 1, n_draws).round().astype(int)
        pooled = pooled.isel(sample=keep).drop_vars(["sample", "chain", "draw"])
        pooled = pooled.rename(sample="draw").expand_dims(chain=1).assign_coords(chain=[0], draw=np.arange(n_draws))
        data[label] = xr.DataTree.from_dict({"posterior": upper_triangle(pooled)})
    plot_collection = azp.plot_forest(data, var_names=names, combined=True,
                                      ci_probs=None if ci_prob is None else [ci_prob])
    plot_collection.add_legend("model")
    figure = plot_collection.viz["figure"].item()
    figure.suptitle(f"{'MCMC' if method == 'mcmc' else 'ADVI'} draws by mode ({unit} grouped by pair R-hat and "
                    "overlap)", fontsize=11)
    return finish(figure, path)
