"""The data with the fitted mixtures, drawn the way each family's data look.

One drawing per family, picked by the model's class (:func:`functools.singledispatch`):

- Gaussian (and soft k-means, a spherical Gaussian with a fixed variance): a histogram with the mixture
  and component densities for one feature, a scatter with component ellipses for two;
- Poisson: the observed frequency of each count with the mixture and component probabilities;
- regression: the response against a covariate with each component's line, points coloured by
  responsibilities;
- grouped data: a histogram over the class limits with the mixture and component densities.
"""

import dataclasses

import numpy as np
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse, Patch
from scipy import stats as st

from mixflow.container.layout import EM_ESTIMATE, RESPONSIBILITY_GROUPS
from mixflow.container.read import available_methods, check_tree, data_units, method_draws, observed_data
from mixflow.engines.em_steps import responsibilities
from mixflow.errors import InputError, UnsupportedError
from mixflow.families.base import model_from_json
from mixflow.families.sampling import full_covariances
from mixflow.present.compare import METHOD_LABELS
from mixflow.present.plots.common import METHOD_COLORS, check_path, finish
from mixflow.units import DIMENSIONLESS, axis_label

__all__ = ["plot_data"]

_COMPONENT_COLORS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666")
_MAX_DRAWS = 200


def _parameter_sets(tree, method: str, rng: np.random.Generator) -> list[dict]:
    """The EM estimate, or up to 200 draws of a sampling method (NaN replicates dropped)."""
    if method == "em":
        estimate = tree[EM_ESTIMATE].to_dataset()
        return [{name: estimate[name].values for name in estimate.data_vars}]
    draws = method_draws(tree, method)
    arrays = {}  # each parameter's draws as one array, (chain, draw) flattened chain by chain in front
    for name, da in draws.data_vars.items():
        values = da.transpose("chain", "draw", ...).values
        arrays[name] = values.reshape(-1, *values.shape[2:])
    n_draws = draws.sizes["chain"] * draws.sizes["draw"]
    picks = np.sort(rng.choice(n_draws, size=min(n_draws, _MAX_DRAWS), replace=False))
    sets = [{name: values[i] for name, values in arrays.items()} for i in picks]
    return [params for params in sets if np.isfinite(params["weights"]).all()]


def _component_densities(params: dict, grid: np.ndarray, feature: int, n_features: int) -> np.ndarray:
    """Weighted marginal component densities on a grid, shape (K, n_grid)."""
    covariances = full_covariances(params, n_features)
    sd = np.sqrt(covariances[:, feature, feature])
    return params["weights"][:, None] * st.norm.pdf(grid[None, :], params["mu"][:, feature, None], sd[:, None])


def _point_parameters(sets: list[dict]) -> dict:
    """Mean of the parameter draws (for ellipses); the estimate itself for EM."""
    return {name: np.mean([s[name] for s in sets], axis=0) for name in sets[0]}


def _responsibilities(tree, model, method: str, params: dict, data) -> np.ndarray:
    """Stored responsibilities of a method (posterior mean for draws), else one E-step at ``params``."""
    group = RESPONSIBILITY_GROUPS.get(method)
    head = group.split("/")[0] if group else None
    if group and head in tree.children and "responsibilities" in tree[head].children:
        node = tree[group]
        name = "responsibilities_mean" if "responsibilities_mean" in node.data_vars else "responsibilities"
        resp = node[name]
        sample = [d for d in ("chain", "draw") if d in resp.dims]
        return (resp.mean(sample) if sample else resp).transpose("obs", "component").values
    k = np.asarray(params["weights"]).size
    model = model if model.n_components == k else dataclasses.replace(model, n_components=k)
    return responsibilities(model, params, data)


def _mixed_colors(resp: np.ndarray) -> np.ndarray:
    palette = np.array([to_rgb(c) for c in _COMPONENT_COLORS])
    return np.clip(resp @ palette[np.arange(resp.shape[1]) % len(palette)], 0, 1)


def _component_color(component: int) -> str:
    return _COMPONENT_COLORS[component % len(_COMPONENT_COLORS)]


def _check_features(features, names: np.ndarray) -> list[int]:
    names = [str(n) for n in names]
    if features is None:
        return list(range(min(2, len(names))))
    requested = [features] if isinstance(features, str) else list(features)
    unknown = [f for f in requested if f not in names]
    if unknown or not 1 <= len(requested) <= 2 or len(set(requested)) != len(requested):
        raise InputError(f"features: expected one or two distinct names among {names}, got {requested}")
    return [names.index(f) for f in requested]


def plot_data(tree, *, features=None, methods=None, random_seed: int = 0, path=None) -> Figure:
    """The data with each method's fitted mixture, drawn the way the family's data look.

    Gaussian, one feature: a histogram with, per method, the mixture density (solid) and the weighted
    component densities (dashed); for sampling methods these are averaged over up to 200 draws (the
    posterior predictive density). Two features: one scatter per method, each point coloured by its
    responsibilities (a mix of the component colours), with the 50% and 95% ellipses of each component
    (posterior-mean parameters for sampling methods). Soft k-means: as a spherical Gaussian with its
    fixed variance. Poisson: bars of the observed frequency of each count, with per method the
    mixture probabilities (solid) and the weighted component probabilities (dashed). Regression: one
    scatter per method of the response against a covariate, points coloured by responsibilities, with
    each component's line and its +-2 sd band (other covariates at their mean). Grouped data: a
    histogram over the class limits (open classes hatched, drawn over their recorded limits) with the
    mixture and component densities.

    Parameters
    ----------
    tree : xarray.DataTree
    features : str or sequence of str, optional
        Gaussian: one or two features to show (default the first two; the marginal mixture is exact
        for Gaussians). Regression: the covariate on the x axis (default the first). Not used by the
        other families.
    methods : sequence of str, optional
        Subset of the container's methods (default all; the bootstrap is left out of the scatter
        panels unless it is the only method).
    random_seed : int, default 0
        Seed of the draws averaged.
    path : str or pathlib.Path, optional

    Returns
    -------
    matplotlib.figure.Figure

    """
    check_tree(tree)
    path = check_path(path)
    present = available_methods(tree)
    if methods is None:
        methods = present
    methods = [methods] if isinstance(methods, str) else list(methods)
    if not methods or any(m not in present for m in methods):
        raise InputError(f"methods: expected some of the container's methods {present}, got {methods}")
    model = model_from_json(tree.attrs["model"])
    rng = np.random.default_rng(random_seed)
    sets = {m: _parameter_sets(tree, m, rng) for m in methods}
    sets = {m: s for m, s in sets.items() if s}
    return finish(_draw(model, tree, observed_data(tree), sets, features), path)


def _panel_sets(sets: dict) -> dict:
    """The methods that get a panel of their own: all but the bootstrap, unless it is the only one."""
    return {m: s for m, s in sets.items() if m != "bootstrap" or len(sets) == 1}


def _no_features(model, features) -> None:
    if features is not None:
        raise InputError(f"features: expected None for a {type(model).__name__} (its data plot has one layout), "
                         f"got {features!r}")


def _draw(model, tree, data, sets: dict, features) -> Figure:
    drawer = _DRAWERS.get(model.data_plot)
    if drawer is None:
        raise UnsupportedError(f"plot_data: no data plot {model.data_plot!r} for the {model.family!r} family")
    sets = {m: [model.plot_parameters(p) for p in s] for m, s in sets.items()}
    return drawer(model, tree, data, sets, features)


def _draw_points(model, tree, data, sets, features):
    chosen = _check_features(features, data.features)
    if len(chosen) == 1:
        return _histogram(data, chosen[0], sets, data_units(tree))
    return _scatter(tree, model, data, chosen, _panel_sets(sets))


def _density_label(unit: str) -> str:
    """A density's axis: probability per unit of the x axis."""
    return f"density (per {unit})" if unit and unit != DIMENSIONLESS else "density"


def _histogram(data, feature: int, sets: dict, units: dict) -> Figure:
    values, frequency = data.values[:, feature], data.frequency
    figure = Figure(figsize=(7.5, 4.2), layout="constrained")
    ax = figure.subplots()
    bins = min(80, max(15, int(2.5 * np.sqrt(frequency.sum()))))
    ax.hist(values, bins=bins, weights=frequency, density=True, color="#d9d9d9", edgecolor="white", label="data")
    span = np.ptp(values) or 1.0
    grid = np.linspace(values.min() - 0.1 * span, values.max() + 0.1 * span, 400)
    for method, parameter_sets in sets.items():
        components = np.mean([_component_densities(p, grid, feature, data.n_features) for p in parameter_sets],
                             axis=0)
        color = METHOD_COLORS[method]
        ax.plot(grid, components.sum(axis=0), color=color, linewidth=2.2, alpha=0.7,
                label=f"{METHOD_LABELS[method]} mixture")
        for density in components:
            ax.plot(grid, density, "--", color=color, linewidth=1.1, zorder=3)
    name = str(data.features[feature])
    ax.set_xlabel(axis_label(name, units.get(name)))
    ax.set_ylabel(_density_label(units.get(name, "")))
    ax.set_title("Data with mixture (solid) and weighted component densities (dashed)", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    return figure


def _ellipse(ax, mean: np.ndarray, covariance: np.ndarray, probability: float, color, style: str) -> None:
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    radius = np.sqrt(st.chi2.ppf(probability, df=2) * np.maximum(eigenvalues, 0.0))
    angle = np.degrees(np.arctan2(eigenvectors[1, -1], eigenvectors[0, -1]))
    ax.add_patch(Ellipse(mean, 2 * radius[-1], 2 * radius[0], angle=angle, fill=False, edgecolor=color,
                         linestyle=style, linewidth=1.6))


def _scatter(tree, model, data, chosen: list[int], sets: dict) -> Figure:
    n_panels = len(sets)
    figure = Figure(figsize=(4.6 * n_panels, 4.4), layout="constrained")
    axes = figure.subplots(1, n_panels, squeeze=False, sharex=True, sharey=True).ravel()
    x, units = data.values, data_units(tree)
    names = [str(data.features[c]) for c in chosen]
    for ax, (method, parameter_sets) in zip(axes, sets.items(), strict=True):
        params = _point_parameters(parameter_sets)
        resp = _responsibilities(tree, model, method, params, data)
        k = resp.shape[1]
        sizes = 14 * np.sqrt(data.frequency / data.frequency.max()) + 4
        ax.scatter(x[:, chosen[0]], x[:, chosen[1]], c=_mixed_colors(resp), s=sizes, alpha=0.75, linewidths=0)
        covariances = full_covariances(params, data.n_features)[:, chosen][:, :, chosen]
        for component in range(k):
            color = _component_color(component)
            mean = params["mu"][component, chosen]
            _ellipse(ax, mean, covariances[component], 0.5, color, "-")
            _ellipse(ax, mean, covariances[component], 0.95, color, ":")
            ax.plot(*mean, "x", color="black", markersize=6)
        ax.set_title(f"{METHOD_LABELS[method]}", fontsize=10)
        ax.set_xlabel(axis_label(names[0], units.get(names[0])))
        ax.grid(alpha=0.2)
    axes[0].set_ylabel(axis_label(names[1], units.get(names[1])))
    figure.suptitle("Points coloured by responsibilities; 50% (solid) and 95% (dotted) component ellipses",
                    fontsize=10)
    return figure


# -- Poisson ---------------------------------------------------------------------------------------------
def _draw_counts(model, tree, data, sets, features):
    _no_features(model, features)
    counts, frequency = data.values[:, 0].astype(int), data.frequency
    top = int(max(counts.max(), max(np.max(p["rate"]) for s in sets.values() for p in s) * 1.5 + 2))
    support = np.arange(top + 1)
    observed = np.bincount(counts, weights=frequency, minlength=top + 1)[:top + 1] / frequency.sum()
    figure = Figure(figsize=(7.5, 4.2), layout="constrained")
    ax = figure.subplots()
    ax.bar(support, observed, width=0.8, color="#d9d9d9", edgecolor="white", label="data (relative frequency)")
    for method, parameter_sets in sets.items():
        components = np.mean([np.asarray(p["weights"])[:, None] * st.poisson.pmf(support[None, :],
                              np.asarray(p["rate"])[:, None]) for p in parameter_sets], axis=0)
        color = METHOD_COLORS[method]
        ax.plot(support, components.sum(axis=0), "o-", color=color, linewidth=1.8, markersize=4, alpha=0.8,
                label=f"{METHOD_LABELS[method]} mixture")
        for pmf in components:
            ax.plot(support, pmf, "--", color=color, linewidth=1.0, alpha=0.8)
    ax.set_xticks(support if top <= 30 else support[::max(top // 15, 1)])
    ax.set_xlabel(axis_label(str(data.features[0]), data_units(tree).get(str(data.features[0]))))
    ax.set_ylabel("probability")
    ax.set_title("Observed frequencies with mixture (solid) and weighted component probabilities (dashed)",
                 fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    return figure


# -- regression ------------------------------------------------------------------------------------------
def _draw_regression(model, tree, data, sets, features):
    if features is not None and (not isinstance(features, str) or features not in model.covariates):
        raise InputError(f"features: expected one covariate of the model {list(model.covariates)}, got {features!r}")
    design, response = model.design(data)
    covariate = features if features is not None else (model.covariates[0] if model.covariates else None)
    column = len(model.coefficient_names) - len(model.covariates) + model.covariates.index(covariate) \
        if covariate is not None else None
    x = design[:, column] if column is not None else np.arange(data.n_obs, dtype=float)
    y = data.values[:, response]
    panels, units = _panel_sets(sets), data_units(tree)
    figure = Figure(figsize=(4.6 * len(panels), 4.4), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False, sharex=True, sharey=True).ravel()
    grid = np.linspace(x.min() - 0.05 * np.ptp(x), x.max() + 0.05 * np.ptp(x), 100)
    typical = data.frequency @ design / data.frequency.sum()
    rows = np.tile(typical, (grid.size, 1))
    if column is not None:
        rows[:, column] = grid
    for ax, (method, parameter_sets) in zip(axes, panels.items(), strict=True):
        params = _point_parameters(parameter_sets)
        resp = _responsibilities(tree, model, method, params, data)
        sizes = 14 * np.sqrt(data.frequency / data.frequency.max()) + 6
        ax.scatter(x, y, c=_mixed_colors(resp), s=sizes, alpha=0.8, linewidths=0)
        for component, coefficients in enumerate(np.asarray(params["coefficients"])):
            line, sd = rows @ coefficients, np.sqrt(np.asarray(params["variance"])[component])
            color = _component_color(component)
            ax.plot(grid, line, color=color, linewidth=1.8, label=f"k = {component}")
            ax.fill_between(grid, line - 2 * sd, line + 2 * sd, color=color, alpha=0.12, linewidth=0)
        ax.set_title(METHOD_LABELS[method], fontsize=10)
        ax.set_xlabel(axis_label(covariate, units.get(covariate)) if covariate is not None else "row")
        ax.grid(alpha=0.2)
    axes[0].set_ylabel(axis_label(model.response, units.get(model.response)))
    axes[0].legend(fontsize=8, frameon=False)
    figure.suptitle("Points coloured by responsibilities; each component's line with a +-2 sd band", fontsize=10)
    return figure


# -- grouped data ----------------------------------------------------------------------------------------
def _draw_classes(model, tree, data, sets, features):
    _no_features(model, features)
    lower, upper = model.class_limits(data)
    frequency = data.frequency
    open_class = np.zeros(lower.size, dtype=bool)
    if model.open_below is not None:
        open_class |= upper <= model.open_below
    if model.open_above is not None:
        open_class |= lower >= model.open_above
    figure = Figure(figsize=(7.5, 4.2), layout="constrained")
    ax = figure.subplots()
    heights = frequency / (frequency.sum() * (upper - lower))
    ax.bar(lower, heights, width=upper - lower, align="edge", color="#d9d9d9", edgecolor="white",
           hatch=None, label="class counts (density)")
    if open_class.any():
        ax.bar(lower[open_class], heights[open_class], width=(upper - lower)[open_class], align="edge",
               color="#d9d9d9", edgecolor="#9a9a9a", hatch="//", linewidth=0)
    span = upper.max() - lower.min()
    grid = np.linspace(lower.min() - 0.1 * span, upper.max() + 0.1 * span, 400)
    for method, parameter_sets in sets.items():
        components = np.mean([_grouped_densities(p, grid) for p in parameter_sets], axis=0)
        color = METHOD_COLORS[method]
        ax.plot(grid, components.sum(axis=0), color=color, linewidth=2.2, alpha=0.7,
                label=f"{METHOD_LABELS[method]} mixture")
        for density in components:
            ax.plot(grid, density, "--", color=color, linewidth=1.1, zorder=3)
    handles, labels = ax.get_legend_handles_labels()
    if open_class.any():
        handles.append(Patch(facecolor="#d9d9d9", edgecolor="#9a9a9a", hatch="//"))
        labels.append("open class (drawn over its recorded limits)")
    ax.legend(handles, labels, fontsize=8, frameon=False)
    unit = data_units(tree).get(model.bounds[0], "")
    ax.set_xlabel(axis_label("class limits" if list(model.bounds) == [str(f) for f in data.features] else
                             f"{data.features[0]} to {data.features[1]}", unit))
    ax.set_ylabel(_density_label(unit))
    ax.set_title(f"Class counts with mixture (solid) and weighted component densities (dashed); "
                 f"{model.likelihood} likelihood", fontsize=10)
    return figure


def _grouped_densities(params: dict, grid: np.ndarray) -> np.ndarray:
    mu = np.asarray(params["mu"], dtype=float)
    sd = np.broadcast_to(np.sqrt(np.asarray(params["variance"], dtype=float)), mu.shape)
    return np.asarray(params["weights"])[:, None] * st.norm.pdf(grid[None, :], mu[:, None], sd[:, None])


_DRAWERS = {"points": _draw_points, "counts": _draw_counts, "regression": _draw_regression,
            "classes": _draw_classes}
