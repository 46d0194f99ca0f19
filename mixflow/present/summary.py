"""One summary of a results container: a table of every parameter by method, and a screenful of text.

The table is :func:`mixflow.compare`'s estimate, sd and interval per parameter x component x method, with
the convergence diagnostics of the NUTS draws (R-hat, bulk and tail ESS, from ``arviz_stats``) beside
them. The text says what was fitted, by which methods, and what needs a look (EM not converged, collapsed
or empty components, failed bootstrap replicates, high R-hat, low ESS, divergences, ADVI not settled),
then the estimates of every method side by side.
"""

import json
import textwrap

import numpy as np
import pandas as pd
import xarray as xr

from mixflow.container.build import recorded_warnings
from mixflow.container.layout import (
    ADVI,
    ADVI_MODES,
    ADVI_STACKED,
    DRAW_GROUPS,
    EM,
    EM_BOOTSTRAP,
    MCMC,
    MCMC_MODES,
)
from mixflow.container.read import available_methods, check_tree, has_group, method_draws
from mixflow.container.tree import set_describer
from mixflow.engines.mode_rule import TAIL_PROB, rhat_within
from mixflow.engines.modes import CROSSING_WINDOW, describe_group, left_out_modes, left_out_reason, mode_caveats
from mixflow.engines.sampling_diagnostics import format_ess, format_rhat
from mixflow.engines.stacking import WEIGHT_INTERVAL
from mixflow.errors import InputError
from mixflow.families.base import model_from_json
from mixflow.present.compare import METHOD_LABELS, compare_dataset, dataset_to_frame, element_columns
from mixflow.present.numbers import (
    advi_progress,
    format_with_sd,
    recorded_warning_line,
    searched_a_sample,
    set_aside_runs,
)
from mixflow.present.rank_test import mcmc_rank_finding
from mixflow.present.units import ParameterUnits
from mixflow.wording import counted, fixed_places, pairs_text

__all__ = ["DIAGNOSTICS", "describe", "summary", "summary_table", "summary_text"]

#: The diagnostics of the NUTS draws in :func:`summary_table` (NaN for the other methods).
DIAGNOSTICS = ("r_hat", "ess_bulk", "ess_tail")
_STATISTICS = ("estimate", "sd", "lower", "upper")
_KINDS = ("table", "text")
_TEXT_ROWS = 24  # parameter elements shown in the text form, so it stays within a screenful
_RUN_WARNINGS_SHOWN = 5  # the first warnings a run recorded; the report and run.log have them all


def summary(tree, *, kind: str = "table", ci_prob: float | None = None, ci_kind: str | None = None):
    """Summarise a result: one table of every parameter by method, or a short text.

    Parameters
    ----------
    tree : xarray.DataTree
        A mixflow result (from :func:`mixflow.fit`, :func:`mixflow.bootstrap`, :func:`mixflow.load`).
    kind : {"table", "text"}, default "table"
        The table of :func:`summary_table` or the text of :func:`summary_text`.
    ci_prob, ci_kind
        Probability and kind of the intervals, as for :func:`mixflow.compare`.

    Returns
    -------
    pandas.DataFrame or str

    Examples
    --------
    >>> print(mixflow.summary(tree, kind="text"))
    >>> mixflow.summary(tree).query("method == 'mcmc'")[["parameter", "component", "r_hat", "ess_bulk"]]

    """
    if kind not in _KINDS:
        raise InputError(f"kind: expected one of {list(_KINDS)}, got {kind!r}")
    if kind == "text":
        return summary_text(tree, ci_prob=ci_prob, ci_kind=ci_kind)
    return summary_table(tree, ci_prob=ci_prob, ci_kind=ci_kind)


def summary_table(tree, *, ci_prob: float | None = None, ci_kind: str | None = None) -> pd.DataFrame:
    """Estimate, sd and interval per parameter x component x method, and NUTS's R-hat and ESS.

    Returns
    -------
    pandas.DataFrame
        One row per parameter element and method: ``parameter``, the element columns of
        :func:`mixflow.present.compare.element_columns`, ``method``, ``estimate`` (the EM point, else the
        mean of the draws), ``sd`` (EM: the standard error from the observed information), ``lower`` and
        ``upper`` (the interval; Wald for EM), and for ``mcmc`` ``r_hat`` (rank-normalised split R-hat; of one
        chain, that of its two halves, as the sampler's ``max_rhat``), ``ess_bulk`` and ``ess_tail``; NaN for the
        other methods, whose draws are independent (the bootstrap replicates, ADVI's draws from its
        approximation). ``attrs`` as for
        :func:`mixflow.compare`.

    """
    return _summary_frame(tree, compare_dataset(tree, ci_prob=ci_prob, ci_kind=ci_kind))


def _summary_frame(tree, dataset: xr.Dataset) -> pd.DataFrame:
    """:func:`summary_table` from the comparison ``dataset`` of ``tree`` (:func:`mixflow.compare_dataset`)."""
    diagnostics = _nuts_diagnostics(tree)
    variables = {}
    for name, array in dataset.data_vars.items():
        if name == "adjusted_rand_index":
            variables[name] = array
            continue
        extra = [xr.concat([_diagnostic(diagnostics, statistic, name, method, array) for method in
                            array["method"].values], dim="method") for statistic in DIAGNOSTICS]
        stacked = xr.concat([array.sel(statistic=list(_STATISTICS)).drop_vars(["statistic", "method"]),
                             *(e.expand_dims("statistic") for e in extra)], dim="statistic")
        variables[name] = stacked.assign_coords(statistic=np.array(_STATISTICS + DIAGNOSTICS),
                                                method=array["method"].values)
    return dataset_to_frame(xr.Dataset(variables, attrs=dataset.attrs))


def _nuts_diagnostics(tree) -> dict | None:
    """R-hat (of one chain, its halves'), bulk and tail ESS of the NUTS draws, or None without them."""
    draws = method_draws(tree, MCMC)
    if draws is None:
        return None
    import arviz_stats

    with np.errstate(divide="ignore", invalid="ignore"):  # a constant (the weight of K=1) has none
        # one chain: its halves', as the sampler's own max_rhat (none for a chain too short to split)
        return {"r_hat": rhat_within(draws) if draws.sizes["chain"] > 1 or draws.sizes["draw"] >= 8 else None,
                "ess_bulk": arviz_stats.ess(draws, method="bulk"),
                "ess_tail": arviz_stats.ess(draws, method="tail", prob=TAIL_PROB)}


def _diagnostic(diagnostics, statistic: str, name: str, method: str, array: xr.DataArray) -> xr.DataArray:
    template = array.sel({"method": method, "statistic": "estimate"}, drop=True).reset_coords(drop=True)
    nan = xr.full_like(template, np.nan, dtype=float)
    if method != MCMC or diagnostics is None or diagnostics[statistic] is None:
        return nan
    return diagnostics[statistic][name].astype(float).reset_coords(drop=True).broadcast_like(nan)


def summary_text(tree, *, ci_prob: float | None = None, ci_kind: str | None = None) -> str:
    """What was fitted, by which methods, what needs a look, and the estimates side by side (a screenful).

    Returns
    -------
    str
        The model and data; a line per method with its headline numbers and diagnostics; the warnings
        (or "none"); the estimate of every method per parameter element, ``mean (sd)`` for draws, the
        first elements only when there are many (the whole table is :func:`summary_table`).

    """
    check_tree(tree)
    model = model_from_json(tree.attrs["model"])
    observed = tree["observed_data"]
    features = [str(f) for f in observed["feature"].values]
    declaration = repr(model)
    lines = [declaration if len(declaration) <= 150 else declaration[:146] + " ...",
             f"fitted to {tree.attrs.get('data_name', 'data')!r}: {observed.sizes['obs']} rows, "
             + model.columns_text(features) + (", frequency weights" if "weights" in observed else "")
             + f"; random_seed {tree.attrs.get('random_seed')}"]
    methods = available_methods(tree)
    # one comparison (its standard errors, intervals and label agreement) for the table and the findings
    compared = compare_dataset(tree, ci_prob=ci_prob, ci_kind=ci_kind) if methods else None
    table = _summary_frame(tree, compared) if methods else None
    warnings = []
    for method in methods:
        line, found = _METHOD_LINES[method](tree)
        lines.append(f"{METHOD_LABELS[method]}: {line}")
        warnings += [f"{METHOD_LABELS[method]}: {text}" for text in found]
    undefined = table.attrs.get("em_standard_errors_undefined") if table is not None else None
    if undefined:
        warnings.append(f"{METHOD_LABELS['em']}: no standard errors: {undefined} "
                        f"({table.attrs['em_standard_errors_remedy']})")
    if methods:  # what the report also finds across the methods and restarts (its words, cut to a line)
        from mixflow.present.report.cards import cross_method_findings

        frame = dataset_to_frame(compared)
        warnings += [_shortened(text) for text in cross_method_findings(tree, frame)]
    recorded = _run_warnings(tree)
    lines.append("warnings: " + ("none" if not warnings and not recorded else ""))
    lines += [f"  - {text}" for text in warnings]
    if recorded and warnings:  # the diagnostics above, read from the results, are often also raised as warnings
        lines.append("  raised during the run (some say the findings above in their own words):")
    lines += [f"  - {_shortened(text)}" for text in recorded[:_RUN_WARNINGS_SHOWN]]
    if len(recorded) > _RUN_WARNINGS_SHOWN:
        lines.append(f"  ... {len(recorded) - _RUN_WARNINGS_SHOWN} more raised during the run (the report and "
                     "run.log list them all)")
    if any(line.startswith("  - ") and line.endswith(" ...") for line in lines):
        lines.append("  (a message cut at ' ...' is given whole in the report, and in a workflow's run.log)")
    if methods:  # hard labels that differ only on rows no method places confidently: information, not warnings
        from mixflow.present.report.cards import label_agreement_findings

        lines += [f"note: {text}" for level, text in label_agreement_findings(frame) if level == "info"]
    lines += _reference_line(tree)
    if methods:
        lines += ["", *_estimates_text(table, ParameterUnits(tree))]
    return "\n".join(lines)


def describe(tree) -> str:
    """A screenful saying what a container holds: :func:`summary_text` (``print(mixflow.describe(tree))``).

    It is also what a container shows as its ``repr`` in a terminal and a notebook
    (:class:`mixflow.container.tree.Container`).
    """
    return summary_text(tree)


set_describer(describe)


def _run_warnings(tree) -> list[str]:
    """The warnings a workflow recorded while producing the container, each ``[stage] Category: message``."""
    return [recorded_warning_line(w) for w in recorded_warnings(tree)]


def _shortened(text: str, width: int = 150) -> str:
    """``text`` cut to ``width`` characters at a word's end, `` ...`` said where it was cut."""
    return text if len(text) <= width else textwrap.shorten(text, width, placeholder=" ...")


def _reference_line(tree) -> list[str]:
    from mixflow.present.labels import reference_agreement

    reference = reference_agreement(tree)
    if not len(reference):
        return []
    return [f"agreement with {reference.attrs['column']!r} (adjusted Rand index): " + ", ".join(
        f"{METHOD_LABELS[m]} {value:.4f}" for m, value in reference["adjusted_rand_index"].items())]


def _listed(attrs, key: str) -> list:
    value = attrs.get(key, "[]")
    return json.loads(value) if isinstance(value, str) else list(value)


def _first(names: list, count: int = 4) -> str:
    """The first names of a list, and how many more, so a line of warnings stays a line."""
    shown = ", ".join(str(name) for name in names[:count])
    return shown + (f" and {len(names) - count} more" if len(names) > count else "")


def _em_line(tree) -> tuple[str, list[str]]:
    attrs = tree[EM].attrs
    kind = str(attrs.get("method", "mle")).upper()
    converged = bool(attrs.get("converged", True))
    line = (f"{kind}, log-likelihood {fixed_places(attrs['log_likelihood'], 4)}, BIC {fixed_places(attrs['bic'], 2)}, "
            f"{'converged' if converged else 'NOT converged'} in {attrs.get('n_iter')} iterations")
    if int(attrs.get("n_maxima", 1)) > 1:  # what the restarts saw: a best reached once may not be the highest
        at_best = int(attrs["n_runs_at_best"])
        line += f"; best of {attrs['n_maxima']} maxima the runs reached, by " + (
            f"{at_best} runs" if at_best > 1 else "only one run")
        if int(attrs.get("start_rounds", 1)) > 1:
            line += f", over {attrs['start_rounds']} rounds of starts"
    if searched_a_sample(attrs):  # large data: where the starts ran
        line += f"; starts searched on a uniform sample of {attrs['search_rows']} of the {attrs['n_rows']} rows"
    if not int(attrs.get("degenerate", 0)):  # runs a sound (or spurious) winner outranked, whatever their value
        line += set_aside_runs(attrs, "; ")
    found = [] if converged else [f"not converged in {attrs.get('n_iter')} iterations (raise max_iter)"]
    for key, what in (("collapsed_components", "degenerate (collapsed) components"),
                      ("empty_components", "empty components")):
        if _listed(attrs, key):
            found.append(f"{what} {_listed(attrs, key)}")
    if _listed(attrs, "duplicate_components"):
        found.append("components with the same parameters "
                     + pairs_text(_listed(attrs, "duplicate_components")))
    return line, found


def _bootstrap_line(tree) -> tuple[str, list[str]]:
    attrs = tree[EM_BOOTSTRAP].attrs
    counts = {key: int(attrs.get(key, 0)) for key in ("n_failed", "n_not_converged", "n_degenerate")}
    line = (f"{attrs.get('n_replicates')} {attrs.get('kind', '')} replicates, {counts['n_failed']} failed, "
            f"{counts['n_not_converged']} not converged, {counts['n_degenerate']} degenerate")
    if "n_elsewhere" in attrs:  # checked (data in memory, results of this version)
        counts["n_elsewhere"] = int(attrs["n_elsewhere"])
        line += f", {counts['n_elsewhere']} at another solution"
    return line, [f"{counted(value, 'replicate')} {key[2:].replace('_', ' ')}"
                  for key, value in counts.items() if value]


def _mcmc_line(tree) -> tuple[str, list[str]]:
    attrs = tree[MCMC].attrs
    halves = " (the chain's halves)" if int(attrs.get("chains", 2)) == 1 else ""  # one chain: its halves compared
    rhat = f"max R-hat{halves} {format_rhat(attrs.get('max_rhat', float('nan')))}"
    if int(attrs.get("n_modes", 1)) > 1 and "max_rhat_all_chains" in attrs:  # max_rhat and min_ess_* are within
        rhat = (f"max R-hat within modes {format_rhat(attrs['max_rhat'])} (over all chains "
                f"{format_rhat(attrs['max_rhat_all_chains'])})")
    starts = str(attrs.get("starts", "reference"))
    started = "" if starts == "reference" else f", started from {starts}"
    line = (f"{attrs.get('sampler')}, {counted(int(attrs.get('chains', 0)), 'chain')} x {attrs.get('draws')} draws"
            f"{started}; {rhat}, min ESS bulk {format_ess(attrs.get('min_ess_bulk', float('nan')))} / tail "
            f"{format_ess(attrs.get('min_ess_tail', float('nan')))}, "
            f"{counted(int(attrs.get('n_divergences', 0)), 'divergence')}")
    from mixflow.present.report.cards import too_few_draws, too_few_draws_text

    few = too_few_draws(tree)  # no R-hat nor ESS to list: the report's problem, in its words
    found = [f"{too_few_draws_text(few)}; run more draws"] if few is not None else [
        f"{what} at {_first(_listed(attrs, key))}" for key, what in
        (("high_rhat", "R-hat above 1.01"), ("low_ess_bulk", "low bulk ESS"), ("low_ess_tail", "low tail ESS"))
        if _listed(attrs, key)]
    if int(attrs.get("n_divergences", 0)):
        found.append(counted(int(attrs["n_divergences"]), "divergent transition"))
    if attrs.get("extended"):  # the draws are a second, longer run's
        found.insert(0, f"extended: {attrs['extended']}")
    ranks = mcmc_rank_finding(tree)
    if ranks is not None:
        found.append(f"rank plots: {ranks}")
    if int(attrs.get("n_modes", 1)) > 1:
        found.insert(0, f"the chains fall into {attrs['n_modes']} modes (the R-hat and ESS findings are within modes; "
                        "see /mcmc/modes and the stacked draws)")
        modes = tree[MCMC_MODES] if has_group(tree, MCMC_MODES) else None
        if modes is not None and "loo_reliable" in modes:  # results saved before it lack the reliability
            caveats = mode_caveats(modes)
            found += [caveats] if caveats else []
    if has_group(tree, MCMC_MODES) and "crosses" in tree[MCMC_MODES]:
        crossing = np.flatnonzero(tree[MCMC_MODES]["crosses"].values)
        if crossing.size:
            found.append(f"chain{'s' if crossing.size > 1 else ''} {', '.join(map(str, crossing))} move"
                         f"{'' if crossing.size > 1 else 's'} between places that the chain's own windows of "
                         f"{tree[MCMC_MODES].attrs.get('crossing_window', CROSSING_WINDOW)} draws do not share: the "
                         "chains cross between them slowly, so R-hat "
                         "measures how unevenly they share their time (see /mcmc/modes crosses)")
    return line, found


def _advi_line(tree) -> tuple[str, list[str]]:
    attrs = tree["advi"].attrs
    settled = bool(attrs.get("converged", True))
    progress, elbo = advi_progress(attrs)
    line = f"{attrs.get('variant')}, {progress}, {elbo}, {attrs.get('draws')} draws"
    found = [] if settled else ["the approximation did not settle (raise n or lower learning_rate)"]
    if has_group(tree, ADVI_MODES):
        modes = tree[ADVI_MODES]
        chain_mode, weights = modes["chain_mode"].values, modes["weight"].values
        line += f", {chain_mode.size} fits from EM's distinct optima or given starts"
        if weights.size > 1:
            described = describe_group(modes, "fits")
            found.insert(0, f"the fits fall into {described} (see "
                            f"/{ADVI_MODES} and the stacked draws in /{ADVI_STACKED}; /{ADVI}/posterior holds "
                            "every fit)")
    return line, found


def _stacked_line(tree, modes_path: str = MCMC_MODES, method: str = "stacked", unit: str = "chains"
                  ) -> tuple[str, list[str]]:
    modes = tree[modes_path]
    weights = modes["weight"].values
    groups = " | ".join(", ".join(str(c) for c in np.flatnonzero(modes["chain_mode"].values == m))
                        for m in range(weights.size))
    said = ", ".join(f"{w:.3f}" for w in weights)
    if "weight_low" in modes:  # recorded since the Bayesian bootstrap of the weights
        left_out = left_out_modes(modes)
        said = ", ".join("0 (left out)" if m in left_out else f"{w:.3f} [{low:.3f}, {high:.3f}]"
                         for m, (w, low, high) in enumerate(zip(weights, modes["weight_low"].values,
                                                                 modes["weight_high"].values, strict=True)))
        said += f" (in brackets, {WEIGHT_INTERVAL:.0%} Bayesian-bootstrap intervals)"
    line = (f"{weights.size} modes ({unit} {groups}), stacking weights {said}, "
            f"{tree[DRAW_GROUPS[method]].sizes['draw']} draws resampled by weight")
    dominant = int(modes.attrs.get("dominant_mode", -1))
    if dominant >= 0:
        line += f"; mode {dominant} dominates (weight {weights[dominant]:.3f}), the others are negligible"
    left_out = left_out_modes(modes)
    if left_out:
        line += "; " + "; ".join(f"mode {m} left out of the stacking ({left_out_reason(modes, m)})" for m in left_out)
    return line, []


def _advi_stacked_line(tree) -> tuple[str, list[str]]:
    return _stacked_line(tree, ADVI_MODES, "advi_stacked", "fits")


_METHOD_LINES = {"em": _em_line, "bootstrap": _bootstrap_line, "mcmc": _mcmc_line, "stacked": _stacked_line,
                 "advi": _advi_line, "advi_stacked": _advi_stacked_line}


def _estimates_text(table: pd.DataFrame, units: ParameterUnits) -> list[str]:
    """Estimate (sd) per element and method, each to the precision of its sd, the first :data:`_TEXT_ROWS`."""
    elements = element_columns(table)

    def label(row) -> str:
        element = {c: row[c] for c in elements if not pd.isna(row[c])}
        unit = units(row["parameter"], element)
        index = f"[{', '.join(map(str, element.values()))}]" if element else ""  # a shared scalar has none
        return f"{row['parameter']}{index}" + (f" ({unit})" if unit else "")

    labels = table.apply(label, axis=1)
    cells = [_cell(e, s) for e, s in zip(table["estimate"], table["sd"], strict=True)]
    frame = pd.DataFrame({"element": labels, "method": table["method"].astype(str), "cell": cells})
    wide = frame.pivot(index="element", columns="method", values="cell")
    wide = wide.loc[list(dict.fromkeys(labels)), [m for m in METHOD_LABELS if m in wide.columns]]
    wide.columns = [METHOD_LABELS[m] for m in wide.columns]
    wide.index.name = None
    shown = wide.iloc[:_TEXT_ROWS].fillna("")
    out = ["estimates (EM: point (standard error); draws: mean (sd); to the precision of the sd):"]
    with pd.option_context("display.width", 160, "display.max_columns", None, "display.max_colwidth", 30):
        out.append(shown.to_string())
    if len(wide) > _TEXT_ROWS:
        out.append(f"... {len(wide) - _TEXT_ROWS} more elements: mixflow.summary(tree) has them all, with "
                   "intervals, R-hat and ESS")
    return out



def _cell(estimate, sd) -> str:
    value, sd_text = format_with_sd(estimate, None if pd.isna(sd) else sd)
    return value + (f" ({sd_text})" if sd_text else "")


