"""Plots of the fitting itself: convergence curves (EM restarts, ADVI ELBO) and the choice of K."""

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from mixflow.container.layout import ADVI, EM_SAMPLE_STATS, group
from mixflow.container.read import available_methods, check_tree
from mixflow.errors import InputError, InputTypeError
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
        raise InputError("tree: expected /em/sample_stats or an ADVI ELBO history in /advi/sample_stats, got "
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
    """The ELBO per iteration and its running mean; one curve per fit when ADVI ran from several starts."""
    curves = np.atleast_2d(np.asarray(elbo.values, dtype=float))
    several = curves.shape[0] > 1
    for fit, curve in enumerate(curves):
        values = curve[np.isfinite(curve)] if several else curve  # a fit's history ends with NaN past its end
        iterations = np.arange(values.size)
        color = f"C{fit}" if several else METHOD_COLORS["advi"]
        ax.plot(iterations, values, color=color, alpha=0.35, linewidth=0.8, label=f"fit {fit}" if several else "ELBO")
        window = max(values.size // 50, 1)
        if window > 1:
            smooth = np.convolve(values, np.ones(window) / window, mode="valid")
            ax.plot(iterations[window - 1:], smooth, color=color, linewidth=1.8,
                    label=None if several else f"running mean ({window})")
    values = curves.ravel()
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
_CRITERION_PANELS = {  # column: (title, y label); lower is better for the information criteria
    "bic": ("BIC (EM; lower is better)", "BIC"),
    "aic": ("AIC (EM; lower is better)", "AIC"),
    "icl": ("ICL (EM; lower is better)", "ICL"),
    "cv_log_likelihood": ("Held-out log-likelihood (EM, cross-validation; higher is better)", "log-likelihood"),
    "elpd_loo": ("PSIS-LOO ELPD (MCMC; higher is better)", "ELPD"),
}


def plot_select_k(table, *, path=None) -> Figure:
    """Choice of K: each criterion against K in a panel of its own, its preferred K marked.

    BIC, AIC and ICL, the held-out log-likelihood and the LOO ELPD each get their own panel and y scale
    (their scales differ: ICL adds the entropy of the classification, LOO and the held-out likelihood are
    on the scale of a log density), with their standard errors where the table has them; a grey line marks
    the K each prefers.

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
        raise InputTypeError(f"table: expected the DataFrame returned by mixflow.select_k (indexed by k), "
                        f"got {type(table).__name__}")
    columns = [c for c in _CRITERION_PANELS if c in table and table[c].notna().any()]
    if not columns:
        raise InputError(f"table: expected some of the criteria {list(_CRITERION_PANELS)}, got columns "
                         f"{list(table.columns)}")
    n_cols = min(3, len(columns))
    n_rows = -(-len(columns) // n_cols)
    figure = Figure(figsize=(4.3 * n_cols, 3.3 * n_rows), layout="constrained")
    axes = figure.subplots(n_rows, n_cols, squeeze=False).ravel()
    ks = table.index.to_numpy()
    preferred = table.attrs.get("preferred") or {  # select_k's, which never prefer a degenerate EM fit
        c: ks[np.nanargmin(table[c])] if c in ("bic", "aic", "icl") else ks[np.nanargmax(table[c])] for c in columns}
    for ax, column in zip(axes, columns, strict=False):
        values = table[column].to_numpy(dtype=float)
        error = table.get(f"{column}_se")
        ax.errorbar(ks, values, yerr=None if error is None else error.to_numpy(dtype=float), marker="o", capsize=3)
        if column in preferred:
            ax.axvline(preferred[column], color="#b0b0b0", linewidth=0.8, zorder=0)
        title, label = _CRITERION_PANELS[column]
        ax.set_title(title, fontsize=9)
        ax.set_ylabel(label)
        ax.set_xlabel("number of components K")
        ax.set_xticks(ks)
        ax.grid(alpha=0.3)
    for ax in axes[len(columns):]:
        ax.set_visible(False)
    figure.suptitle("Choice of K (grey line: the K each criterion prefers)", fontsize=10)
    return finish(figure, path)
