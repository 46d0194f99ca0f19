"""The data with the fitted mixtures: 1-D histogram with densities, 2-D scatter with component ellipses."""

import numpy as np
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse
from scipy import stats as st
from scipy.special import logsumexp

from mixflow.bootstrap import full_covariances, observed_data
from mixflow.compare import METHOD_LABELS, available_methods, check_tree, method_draws
from mixflow.plots import METHOD_COLORS, check_path, finish, require_gaussian

__all__ = ["plot_data"]

_COMPONENT_COLORS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666")
_MAX_DRAWS = 200


def _parameter_sets(tree, method: str, rng: np.random.Generator) -> list[dict]:
    """The EM estimate, or up to 200 draws of a sampling method (NaN replicates dropped)."""
    if method == "em":
        estimate = tree["em/estimate"].to_dataset()
        return [{name: estimate[name].values for name in estimate.data_vars}]
    draws = method_draws(tree, method).stack(sample=("chain", "draw"))
    n_draws = draws.sizes["sample"]
    picks = np.sort(rng.choice(n_draws, size=min(n_draws, _MAX_DRAWS), replace=False))
    sets = [{name: draws[name].isel(sample=i).values for name in draws.data_vars} for i in picks]
    return [params for params in sets if np.isfinite(params["weights"]).all()]


def _component_densities(params: dict, grid: np.ndarray, feature: int, n_features: int) -> np.ndarray:
    """Weighted marginal component densities on a grid, shape (K, n_grid)."""
    covariances = full_covariances(params, n_features)
    sd = np.sqrt(covariances[:, feature, feature])
    return params["weights"][:, None] * st.norm.pdf(grid[None, :], params["mu"][:, feature, None], sd[:, None])


def _point_parameters(sets: list[dict]) -> dict:
    """Mean of the parameter draws (for ellipses); the estimate itself for EM."""
    return {name: np.mean([s[name] for s in sets], axis=0) for name in sets[0]}


def _responsibilities(tree, method: str, params: dict, x: np.ndarray) -> np.ndarray:
    group = {"em": "em/responsibilities", "mcmc": "mcmc/responsibilities", "advi": "advi/responsibilities"}.get(method)
    head = group.split("/")[0] if group else None
    if group and head in tree.children and "responsibilities" in tree[head].children:
        node = tree[group]
        name = "responsibilities_mean" if "responsibilities_mean" in node.data_vars else "responsibilities"
        resp = node[name]
        sample = [d for d in ("chain", "draw") if d in resp.dims]
        return (resp.mean(sample) if sample else resp).transpose("obs", "component").values
    covariances = full_covariances(params, x.shape[1])
    log_joint = np.stack([np.log(w) + st.multivariate_normal(m, c, allow_singular=True).logpdf(x).reshape(-1)
                          for w, m, c in zip(params["weights"], params["mu"], covariances, strict=True)], axis=1)
    return np.exp(log_joint - logsumexp(log_joint, axis=1, keepdims=True))


def _check_features(features, names: np.ndarray) -> list[int]:
    names = [str(n) for n in names]
    if features is None:
        return list(range(min(2, len(names))))
    requested = [features] if isinstance(features, str) else list(features)
    unknown = [f for f in requested if f not in names]
    if unknown or not 1 <= len(requested) <= 2 or len(set(requested)) != len(requested):
        raise ValueError(f"features: expected one or two distinct names among {names}, got {requested}")
    return [names.index(f) for f in requested]


def plot_data(tree, *, features=None, methods=None, random_seed: int = 0, path=None) -> Figure:
    """The data with each method's fitted mixture.

    One feature: a histogram with, per method, the mixture density (solid) and the weighted component
    densities (dashed); for sampling methods these are averaged over up to 200 draws (the posterior
    predictive density). Two features: one scatter per method, each point coloured by its
    responsibilities (a mix of the component colours), with the 50% and 95% ellipses of each component
    (posterior-mean parameters for sampling methods).

    Parameters
    ----------
    tree : xarray.DataTree
    features : str or sequence of one or two str, optional
        Features to show (default the first two; the marginal mixture is exact for Gaussians).
    methods : sequence of str, optional
        Subset of the container's methods (default all; the bootstrap is left out of the scatter).
    random_seed : int, default 0
        Seed of the draws averaged.
    path : str or pathlib.Path, optional

    Returns
    -------
    matplotlib.figure.Figure

    """
    check_tree(tree)
    require_gaussian(tree, "plot_data")
    path = check_path(path)
    present = available_methods(tree)
    if methods is None:
        methods = present
    methods = [methods] if isinstance(methods, str) else list(methods)
    if not methods or any(m not in present for m in methods):
        raise ValueError(f"methods: expected some of the container's methods {present}, got {methods}")
    data = observed_data(tree)
    chosen = _check_features(features, data.features)
    rng = np.random.default_rng(random_seed)
    sets = {m: _parameter_sets(tree, m, rng) for m in methods}
    sets = {m: s for m, s in sets.items() if s}
    if len(chosen) == 1:
        figure = _histogram(data, chosen[0], sets)
    else:
        figure = _scatter(tree, data, chosen, {m: s for m, s in sets.items() if m != "bootstrap" or len(sets) == 1})
    return finish(figure, path)


def _histogram(data, feature: int, sets: dict) -> Figure:
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
    ax.set_xlabel(str(data.features[feature]))
    ax.set_ylabel("density")
    ax.set_title("Data with mixture (solid) and weighted component densities (dashed)", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    return figure


def _ellipse(ax, mean: np.ndarray, covariance: np.ndarray, probability: float, color, style: str) -> None:
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    radius = np.sqrt(st.chi2.ppf(probability, df=2) * np.maximum(eigenvalues, 0.0))
    angle = np.degrees(np.arctan2(eigenvectors[1, -1], eigenvectors[0, -1]))
    ax.add_patch(Ellipse(mean, 2 * radius[-1], 2 * radius[0], angle=angle, fill=False, edgecolor=color,
                         linestyle=style, linewidth=1.6))


def _scatter(tree, data, chosen: list[int], sets: dict) -> Figure:
    n_panels = len(sets)
    figure = Figure(figsize=(4.6 * n_panels, 4.4), layout="constrained")
    axes = figure.subplots(1, n_panels, squeeze=False, sharex=True, sharey=True).ravel()
    x = data.values
    palette = np.array([to_rgb(c) for c in _COMPONENT_COLORS])
    for ax, (method, parameter_sets) in zip(axes, sets.items(), strict=True):
        params = _point_parameters(parameter_sets)
        resp = _responsibilities(tree, method, params, x)
        k = resp.shape[1]
        colors = resp @ palette[np.arange(k) % len(palette)]
        sizes = 14 * np.sqrt(data.frequency / data.frequency.max()) + 4
        ax.scatter(x[:, chosen[0]], x[:, chosen[1]], c=np.clip(colors, 0, 1), s=sizes, alpha=0.75, linewidths=0)
        covariances = full_covariances(params, data.n_features)[:, chosen][:, :, chosen]
        for component in range(k):
            color = _COMPONENT_COLORS[component % len(_COMPONENT_COLORS)]
            mean = params["mu"][component, chosen]
            _ellipse(ax, mean, covariances[component], 0.5, color, "-")
            _ellipse(ax, mean, covariances[component], 0.95, color, ":")
            ax.plot(*mean, "x", color="black", markersize=6)
        ax.set_title(f"{METHOD_LABELS[method]}", fontsize=10)
        ax.set_xlabel(str(data.features[chosen[0]]))
        ax.grid(alpha=0.2)
    axes[0].set_ylabel(str(data.features[chosen[1]]))
    figure.suptitle("Points coloured by responsibilities; 50% (solid) and 95% (dotted) component ellipses",
                    fontsize=10)
    return figure
