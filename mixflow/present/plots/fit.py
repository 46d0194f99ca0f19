"""Plots of the fitting itself: convergence curves (EM restarts, ADVI ELBO) and the choice of K."""

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from mixflow.container.layout import ADVI, EM_SAMPLE_STATS, group
from mixflow.container.read import available_methods, check_tree
from mixflow.present.plots.common import METHOD_COLORS, check_path, finish

__all__ = ["elbo_history", "plot_convergence", "plot_select_k"]


# -- convergence -----------------------------------------------------------------------------------------
def elbo_history(tree) -> xr.DataArray | None:
    """The ADVI ELBO per iteration (``elbo``, or minus ``loss``) from ``/advi/sample_stats``, or None."""
    if "advi" not in tree.children or "sample_stats" not in tree["advi"].children:
        return None
    stats = tree[group(ADVI, "sample_stats")].to_dataset()
    for name in stats.data_vars:
        if name.lower() == "elbo":
            return stats[name]
    for name in stats.data_vars:
        if name.lower() == "loss":
            return -stats[name]
    return None


def plot_convergence(tree, *, path=None) -> Figure:
    """Convergence curves: the EM objective per iteration for every restart, and the ADVI ELBO.

    Parameters
    ----------
    tree : xarray.DataTree
        Must hold ``/em/sample_stats`` or ``/advi/sample_stats`` with an ELBO (or loss) per iteration.
    path : str or pathlib.Path, optional

    Returns
    -------
    matplotlib.figure.Figure

    """
    check_tree(tree)
    path = check_path(path)
    has_em = "em" in tree.children and "sample_stats" in tree["em"].children
    elbo = elbo_history(tree)
    if not (has_em or elbo is not None):
        raise ValueError("tree: expected /em/sample_stats or an ADVI ELBO history in /advi/sample_stats, got "
                         f"methods {available_methods(tree)}")
    figure = Figure(figsize=(5.5 * (has_em + (elbo is not None)), 3.6), layout="constrained")
    axes = list(figure.subplots(1, has_em + (elbo is not None), squeeze=False).ravel())
    if has_em:
        _em_curves(axes.pop(0), tree)
    if elbo is not None:
        _elbo_curve(axes.pop(0), elbo)
    return finish(figure, path)


def _em_curves(ax, tree) -> None:
    stats = tree[EM_SAMPLE_STATS].to_dataset()
    is_map = tree["em"].attrs.get("method") == "map" and "log_posterior" in stats
    history = stats["log_posterior" if is_map else "log_likelihood"].transpose("restart", "iteration").values
    best = int(tree["em"].attrs.get("best_restart", np.nanargmax(history[:, -1])))
    for restart, curve in enumerate(history):
        iterations = np.flatnonzero(np.isfinite(curve))
        is_best = restart == best
        ax.plot(iterations, curve[iterations], color=METHOD_COLORS["em"] if is_best else "#b0b0b0",
                linewidth=1.8 if is_best else 1.0, zorder=3 if is_best else 2,
                label="best restart" if is_best else ("other restarts" if restart == (best == 0) else None))
    ax.set_xlabel("iteration")
    ax.set_ylabel("log posterior density" if is_map else "log-likelihood")
    ax.set_title(f"EM ({history.shape[0]} restart{'s' if history.shape[0] > 1 else ''})", fontsize=10)
    finite = history[np.isfinite(history)]
    if finite.size:
        top, spread = finite.max(), np.ptp(finite)
        low = np.quantile(finite, 0.1)
        ax.set_ylim(low - 0.05 * (top - low + 1e-9), top + 0.05 * (spread + 1e-9))
    ax.legend(fontsize=8, frameon=False)
    ax.grid(alpha=0.3)


def _elbo_curve(ax, elbo: xr.DataArray) -> None:
    values = np.asarray(elbo.values, dtype=float).ravel()
    iterations = np.arange(values.size)
    ax.plot(iterations, values, color=METHOD_COLORS["advi"], alpha=0.35, linewidth=0.8, label="ELBO")
    window = max(values.size // 50, 1)
    if window > 1:
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")
        ax.plot(iterations[window - 1:], smooth, color=METHOD_COLORS["advi"], linewidth=1.8,
                label=f"running mean ({window})")
    finite = values[np.isfinite(values)]
    if finite.size > 10:
        low = np.quantile(finite, 0.05)
        ax.set_ylim(low - 0.05 * (finite.max() - low + 1e-9), finite.max() + 0.05 * (finite.max() - low + 1e-9))
    ax.set_xlabel("iteration")
    ax.set_ylabel("ELBO")
    ax.set_title("ADVI", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    ax.grid(alpha=0.3)


# -- choice of K --------------------------------------------------------------------------------------
def plot_select_k(table, *, path=None) -> Figure:
    """Choice of K: information criteria, cross-validated log-likelihood and LOO ELPD against K.

    Parameters
    ----------
    table : pandas.DataFrame
        The result of :func:`mixflow.select_k`.
    path : str or pathlib.Path, optional

    Returns
    -------
    matplotlib.figure.Figure

    """
    import pandas as pd

    if not isinstance(table, pd.DataFrame) or table.index.name != "k":
        raise TypeError(f"table: expected the DataFrame returned by mixflow.select_k (indexed by k), "
                        f"got {type(table).__name__}")
    panels = [("criteria", [c for c in ("bic", "aic", "icl") if c in table])]
    if "cv_log_likelihood" in table:
        panels.append(("cv", ["cv_log_likelihood"]))
    if "elpd_loo" in table and table["elpd_loo"].notna().any():
        panels.append(("loo", ["elpd_loo"]))
    figure = Figure(figsize=(4.4 * len(panels), 3.5), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False).ravel()
    ks = table.index.to_numpy()
    for ax, (kind, columns) in zip(axes, panels, strict=True):
        for column in columns:
            values = table[column].to_numpy(dtype=float)
            error = table.get(f"{column}_se")
            ax.errorbar(ks, values, yerr=None if error is None else error.to_numpy(dtype=float), marker="o",
                        capsize=3, label=column.upper() if kind == "criteria" else None)
            best = ks[np.nanargmin(values)] if kind == "criteria" else ks[np.nanargmax(values)]
            ax.axvline(best, color="#b0b0b0", linewidth=0.8, zorder=0)
        ax.set_xlabel("number of components K")
        ax.set_xticks(ks)
        ax.grid(alpha=0.3)
        title, label = {"criteria": ("Information criteria (EM; lower is better)", "criterion"),
                        "cv": ("Held-out log-likelihood (EM, cross-validation)", "log-likelihood"),
                        "loo": ("PSIS-LOO ELPD (MCMC; higher is better)", "ELPD")}[kind]
        ax.set_title(title, fontsize=9)
        ax.set_ylabel(label)
        if kind == "criteria":
            ax.legend(fontsize=8, frameon=False)
    return finish(figure, path)
