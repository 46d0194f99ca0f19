"""One self-contained HTML report per analysis: model, data, comparison, plots, diagnostics, provenance.

Figures are PNGs embedded as base64 ``data:`` URIs and the style sheet is inline, so the file opens
offline in any browser and can be mailed as it is. The file is written atomically.
"""

import base64
import html
import io
import json
import os
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from mixflow.analysis.select import CRITERION_NAMES, SKIPPED_FEW_ROWS
from mixflow.atomic import atomic_write
from mixflow.container.build import recorded_warnings
from mixflow.container.layout import ADVI_MODES, MCMC_MODES, OBSERVED_DATA
from mixflow.container.read import available_methods, check_tree, data_units, flagged_fit, has_group
from mixflow.engines.modes import alike_modes, left_out_modes, left_out_reason
from mixflow.engines.sampling_diagnostics import RHAT_MAX, format_rhat
from mixflow.engines.stacking import WEIGHT_INTERVAL
from mixflow.errors import InputError, InputTypeError, MissingPathError
from mixflow.present.compare import METHOD_LABELS, agreement_of, compare_dataset, dataset_to_frame, element_columns
from mixflow.present.labels import cross_tabulation, reference_agreement
from mixflow.present.numbers import format_number, format_with_sd, plot_problem, warnings_and_diagnostics
from mixflow.present.report.cards import (
    ADVI_SD_RATIO,
    card,
    fit_findings,
    fit_summaries,
    key_values,
    label_agreement_findings,
    low_ess,
    provenance_rows,
    run_warnings,
    too_few_draws,
    too_few_draws_text,
)
from mixflow.present.units import ParameterUnits
from mixflow.units import unit_root
from mixflow.warnings import MixflowWarning
from mixflow.wording import counted, fixed_places

__all__ = ["FIGURE_DPI", "SECTIONS", "render_plots", "report"]

#: CSS pixels per inch of the figures; they are drawn at twice this resolution (sharp on high-density screens).
FIGURE_DPI = 96

#: The section ids of every report, in order.
SECTIONS = ("summary", "diagnostics", "model", "data", "fits", "comparison", "plots", "provenance")

_STYLE = """
:root { --ink: #1d232a; --muted: #5b6570; --line: #dde2e7; --soft: #f5f7f9; --accent: #1f77b4; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--ink); background: #fff; }
header { padding: 28px 40px 12px; border-bottom: 1px solid var(--line); background: var(--soft); }
h1 { margin: 0 0 4px; font-size: 26px; font-weight: 600; }
h2 { margin: 36px 0 12px; font-size: 20px; font-weight: 600; border-bottom: 2px solid var(--accent);
     padding-bottom: 4px; }
h3 { margin: 22px 0 8px; font-size: 16px; font-weight: 600; color: var(--muted); }
.sub { margin: 0; color: var(--muted); }
nav { margin-top: 12px; display: flex; flex-wrap: wrap; gap: 14px; }
nav a { color: var(--accent); text-decoration: none; font-size: 14px; }
main { padding: 0 40px 40px; max-width: 1280px; }
.badge { display: inline-block; margin-right: 6px; padding: 2px 10px; border-radius: 12px; font-size: 13px;
         color: #fff; background: #555; }
.badge.em { background: #222; } .badge.bootstrap { background: #8c8c8c; }
.badge.mcmc { background: #1f77b4; } .badge.advi { background: #e8710a; }
.badge.stacked { background: #17becf; } .badge.advi_stacked { background: #bcbd22; }
.table { border-collapse: collapse; margin: 8px 0 16px; font-size: 13.5px; font-variant-numeric: tabular-nums; }
.table th, .table td { padding: 5px 10px; border-bottom: 1px solid var(--line); text-align: right;
                       vertical-align: top; }
.table th { text-align: left; background: var(--soft); font-weight: 600; }
.table.kv th { min-width: 150px; } .table.kv td { text-align: left; }
.cards { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 4px 14px 4px; }
.card h3 { margin-top: 10px; }
#summary .table.kv td { font-weight: 500; }
.table.compare td { min-width: 150px; } .table.compare td.unit { min-width: 0; text-align: left; }
.scroll { overflow-x: auto; }
small { color: var(--muted); }
.flag { display: inline-block; margin-top: 2px; padding: 0 6px; border-radius: 8px; font-size: 11.5px; }
.flag.bad { background: #fde2e1; color: #a4161a; } .flag.warn { background: #fff1d6; color: #8a5a00; }
figure { margin: 18px 0 26px; } figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 13.5px; margin-top: 6px; }
ul.findings { padding-left: 0; list-style: none; }
ul.findings li { margin: 6px 0; padding: 8px 12px; border-left: 4px solid var(--line); background: var(--soft); }
ul.findings li.bad { border-color: #c62828; } ul.findings li.warn { border-color: #f0a202; }
ul.findings li.ok { border-color: #2e7d32; }
code { background: var(--soft); padding: 1px 5px; border-radius: 4px; font-size: 13px; }
footer { padding: 16px 40px; color: var(--muted); font-size: 13px; border-top: 1px solid var(--line); }
"""


def _table(frame: pd.DataFrame, *, index: bool = True, classes: str = "", digits: int = 4) -> str:
    return frame.to_html(index=index, escape=True, border=0, classes=f"table {classes}".strip(), na_rep="",
                         float_format=lambda value: format_number(value, digits=digits))


def render_png(figure) -> bytes:
    """A figure as the PNG the report embeds (twice :data:`FIGURE_DPI`, cropped to its content); closes it."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, format="png", dpi=2 * FIGURE_DPI, bbox_inches="tight")
    finally:
        plt.close(figure)
    return buffer.getvalue()


def _figure_html(png: bytes, caption: str) -> str:
    width, height = (int.from_bytes(png[at:at + 4], "big") // 2 for at in (16, 20))  # the IHDR chunk
    encoded = base64.b64encode(png).decode("ascii")
    return (f'<figure><img alt="{html.escape(caption)}" width="{width}" height="{height}" '
            f'src="data:image/png;base64,{encoded}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


# -- sections ------------------------------------------------------------------------------------------
def _preferred_by_k(selection) -> tuple[dict, dict]:
    """Each criterion's preferred K, and for each K the names of the criteria preferring it."""
    from mixflow.analysis.select import preferred_k

    preferred = selection.attrs.get("preferred") or preferred_k(selection)  # a table read back from CSV has none
    by_k = {}
    for criterion, k in preferred.items():
        by_k.setdefault(int(k), []).append(CRITERION_NAMES.get(criterion, criterion))
    return preferred, by_k


def choice_of_k_text(selection, fitted_k: int | None = None) -> str:
    """In words, which K each criterion prefers, and whether they agree (and which K was fitted)."""
    preferred, by_k = _preferred_by_k(selection)
    if not by_k:
        return ""
    fitted = "" if fitted_k is None else f"; this report is of K = {fitted_k}"
    fitted = _loo_caveat(selection, preferred) + _em_caveats(selection, preferred) + fitted
    if len(by_k) == 1:
        (k, names), = by_k.items()
        return f"every criterion ({', '.join(names)}) prefers K = {k}{fitted}"
    parts = "; ".join(f"{', '.join(names)} prefer{'s' if len(names) == 1 else ''} K = {k}"
                      for k, names in sorted(by_k.items()))
    return f"the criteria disagree: {parts}{fitted}"


def _em_caveats(selection, preferred: dict) -> str:
    """What the EM criteria's preferences rest on: the K they skipped, and a preferred K whose fit did not converge.

    ``"; K = 2, 3 skipped by the EM criteria (degenerate or spurious fits)"``, ``"; K = 4, 5 skipped by BIC, AIC
    and ICL (a component on fewer rows than its parameters)"``, ``"; K = 2 skipped by the held-out
    log-likelihood (a cross-validation fold's fit degenerate or spurious)"``, ``"; the EM fit at K = 3 did not
    converge"``: said where the preferences are, not only in the diagnostics.
    """
    text, flawed = "", []
    if "skipped" in selection:
        reasons = {int(k): why for k, why in selection["skipped"].items() if isinstance(why, str) and why}
        flawed = [k for k, why in reasons.items() if why != SKIPPED_FEW_ROWS]
        few = [k for k, why in reasons.items() if why == SKIPPED_FEW_ROWS]
        if flawed:
            text += f"; K = {', '.join(map(str, flawed))} skipped by the EM criteria (degenerate or spurious fits)"
        if few:  # the held-out log-likelihood keeps them: the rows it scores were not fitted
            text += (f"; K = {', '.join(map(str, few))} skipped by BIC, AIC and ICL (a component on fewer rows than "
                     "its parameters)")
    if "cv_flagged_folds" in selection and "cv_log_likelihood" in preferred:  # skipped by the held-out one alone
        folds = [int(k) for k, flagged in selection["cv_flagged_folds"].items()
                 if pd.notna(flagged) and flagged > 0 and int(k) not in flawed]
        if folds:
            text += (f"; K = {', '.join(map(str, folds))} skipped by the held-out log-likelihood (a cross-validation "
                     "fold's fit degenerate or spurious)")
    if "converged" in selection:
        ks = sorted({int(k) for c, k in preferred.items() if c != "elpd_loo" and int(k) in selection.index})
        unconverged = [k for k in ks if pd.notna(selection.loc[k, "converged"]) and not bool(
            selection.loc[k, "converged"])]
        if unconverged:
            text += (f"; the EM fit at K = {', '.join(map(str, unconverged))} did not converge (its criteria are "
                     "unreliable)")
    return text


def _loo_caveat(selection, preferred: dict) -> str:
    """What PSIS-LOO's preference rests on: the K where its Pareto k was high, or where NUTS's chains did not converge.

    ``"; PSIS-LOO is unreliable (high Pareto k) at K = 1, 3"``; ``"; NUTS did not converge (R-hat above 1.01, or too
    few effective draws) at K = 4 (R-hat 1.389, bulk ESS 6): PSIS-LOO there is unreliable ..."`` (R-hat above
    :data:`RHAT_MAX`, or a bulk ESS the sampler flagged as low): each K's LOO is a term of the comparison, so every
    such K is named, not only the preferred one.
    """
    if "elpd_loo" not in preferred:
        return ""
    text = ""
    if "pareto_k_warning" in selection:
        flagged = [int(k) for k, flag in selection["pareto_k_warning"].items() if pd.notna(flag) and bool(flag)]
        if flagged:
            where = ("every K" if len(flagged) == selection["elpd_loo"].notna().sum() else
                     f"K = {', '.join(map(str, flagged))}")
            text += f"; PSIS-LOO is unreliable (high Pareto k) at {where}"
    unmixed = []
    for k, row in selection.iterrows():
        rhat = row.get("max_rhat", np.nan)
        few = low_ess(row, "bulk")  # as the diagnostics judge it
        if pd.notna(row.get("elpd_loo", np.nan)) and ((pd.notna(rhat) and rhat > RHAT_MAX) or few):
            said = [f"R-hat {format_rhat(rhat)}"] if pd.notna(rhat) else []
            if few and pd.notna(row.get("min_ess_bulk", np.nan)):
                said.append(f"bulk ESS {row['min_ess_bulk']:.0f}")
            unmixed.append(f"{int(k)}" + (f" ({', '.join(said)})" if said else ""))
    if unmixed:
        text += (f"; NUTS did not converge (R-hat above {RHAT_MAX:g}, or too few effective draws) at K = "
                 f"{', '.join(unmixed)}: PSIS-LOO there is unreliable (more draws, or see the diagnostics)")
    return text


def other_fits_html(selection, fitted_k: int, other_fits: dict) -> str:
    """Links to the reports of the other K fitted from the same choice of K, with the criteria preferring each.

    Without other fits, and when the criteria disagree, how to ask for them (``[select] fit``).
    """
    if selection is None:
        return ""
    _, by_k = _preferred_by_k(selection)
    if not other_fits:
        if len(by_k) < 2:
            return ""
        return ("<p class=\"other-fits\">Only K = " f"{fitted_k} was fitted by every method; to fit each K a criterion "
                "prefers as well, set <code>[select] fit = \"all-preferred\"</code> in the workflow.</p>")
    links = []
    for k, href in sorted(other_fits.items()):
        why = f" (preferred by {', '.join(by_k[k])})" if k in by_k else ""
        links.append(f'<a href="{html.escape(str(href), quote=True)}">K = {k}</a>{html.escape(why)}')
    return f'<p class="other-fits">Also fitted by every method: {"; ".join(links)}.</p>'


def _interval_caveat(tree, method: str) -> str:
    """What widens a method's intervals, said beside the count of EM points inside them: degenerate replicates."""
    if method != "bootstrap" or "bootstrap" not in tree["em"].children:
        return ""
    attrs = tree["em/bootstrap"].attrs
    degenerate, elsewhere = int(attrs.get("n_degenerate", 0)), int(attrs.get("n_elsewhere", 0))
    said = [f"{count} {what}" for count, what in ((degenerate, "had a collapsed component"),
                                                  (elsewhere, "ended at another solution")) if count]
    if not said:
        return ""
    they = "it is in the intervals, which it widens" if degenerate + elsewhere == 1 else \
        "they are in the intervals, which they widen"
    return f"; of {int(attrs.get('n_replicates', 0))} replicates, {' and '.join(said)}, and {they}"


def _summary_section(tree, table: pd.DataFrame, counts: str, reference: pd.DataFrame, selection=None,
                     other_fits=None) -> str:
    """Headline numbers: the model, the data, the fit, the choice of K, how far the methods agree, and ``counts``.

    ``counts``: the warnings raised while running and the diagnostics' findings, counted
    (:func:`~mixflow.present.numbers.warnings_and_diagnostics`).
    """
    from mixflow.families.base import model_from_json

    model = model_from_json(tree.attrs["model"])
    observed = tree[OBSERVED_DATA]
    facts = [("model", f"{model.family}, K = {model.n_components}" + (
        f", {model.covariance} covariance" if hasattr(model, "covariance") else "")),
             ("data", f"{tree.attrs.get('data_name', '')}: {observed.sizes['obs']} rows, "
                      + model.columns_text([str(f) for f in observed['feature'].values]))]
    if selection is not None and choice_of_k_text(selection):
        facts.append(("choice of K", choice_of_k_text(selection, model.n_components)))
    if "em" in tree.children:
        attrs = tree["em"].attrs
        # a degenerate fit's values are not a maximum's: said here, not only counted among the diagnostics
        caveat = ("; a degenerate fit (a component collapsed onto a point or emptied): these are not the values of a "
                  "sound maximum, see the diagnostics" if flagged_fit(attrs)[0] else "")
        facts.append(("EM", f"{attrs.get('method', '').upper()}, log-likelihood "
                            f"{fixed_places(attrs['log_likelihood'], 4)}, BIC {fixed_places(attrs['bic'], 2)}{caveat}"))
    probability = f"{table.attrs['ci_prob']:.0%}"
    few = too_few_draws(tree)
    for method in ("bootstrap", "mcmc", "stacked", "advi", "advi_stacked"):
        inside = table.loc[table["method"] == method, "em_inside"].dropna()
        if not len(inside):
            continue
        label = f"EM point in the {METHOD_LABELS[method]} {probability} interval"
        if few is not None and method in ("mcmc", "stacked"):
            facts.append((label, f"not judged: {too_few_draws_text(few)}"))
        else:
            facts.append((label, f"{int(inside.sum())} of {len(inside)} entries (each distinct entry of "
                                 f"{', '.join(dict.fromkeys(table.loc[inside.index, 'parameter'].astype(str)))})"
                                 + _interval_caveat(tree, method)))
    advi = table.loc[table["method"] == "advi"]
    if advi["distance_to_mcmc"].notna().any():
        facts.append(("ADVI vs NUTS", f"not judged: NUTS's {too_few_draws_text(few)}" if few is not None else
                      f"median |difference| {advi['distance_to_mcmc'].abs().median():.2f} NUTS sd; "
                      f"median sd ratio {advi['sd_ratio_to_mcmc'].median():.2f}"))
    agreement = agreement_of(table)
    single = {m for m, used in agreement.attrs.get("clusters", {}).items() if used == 1}
    pairs = [f"{METHOD_LABELS[a]}/{METHOD_LABELS[b]} {agreement.loc[a, b]:.3f}"
             + (" (a labelling of one cluster)" if {a, b} & single else "")
             for i, a in enumerate(agreement.index) for b in agreement.columns[i + 1:]]
    if pairs:
        facts.append(("label agreement (ARI)", ", ".join(pairs)))
    if len(reference):
        facts.append((f"agreement with {reference.attrs['column']} (ARI)", ", ".join(
            f"{METHOD_LABELS[m]} {value:.3f}" for m, value in reference["adjusted_rand_index"].items())))
    facts.append(("warnings and diagnostics", counts))
    return key_values(facts) + other_fits_html(selection, model.n_components, other_fits or {})


def _model_section(tree) -> str:
    from mixflow.families.base import model_from_json

    model = model_from_json(tree.attrs["model"])
    declared = json.loads(tree.attrs["model"])
    prior = declared.pop("prior", {})
    rows = [("family", declared.pop("family", "")), ("components (K)", declared.pop("n_components", ""))]
    rows += [(key, value) for key, value in declared.items()]
    # the MLE records no prior (it uses none); MAP, MCMC and ADVI record the one they used, the same one
    recorded = [tree[name].attrs["prior"] for name in ("em", "mcmc", "advi")
                if name in tree.children and "prior" in tree[name].attrs]
    used = json.loads(recorded[0]) if recorded else {}
    prior_rows = [(k, "data-scaled default" if v is None else v) for k, v in prior.items()]
    method = tree["em"].attrs.get("method", "") if "em" in tree.children else ""
    note = ("The EM estimate is the MAP estimate under this prior." if method == "map" else
            "The EM estimate is the maximum-likelihood estimate (the prior is used by MCMC and ADVI only).")
    cards = [card("Declaration", key_values(rows)), card("Prior as declared", key_values(prior_rows))]
    if used:
        cards.append(card("Prior as used (defaults filled from the data)",
                           key_values([(k, np.round(np.asarray(v), 6).tolist()) for k, v in used.items()])))
    return (f"<p><code>{html.escape(repr(model))}</code></p><p>{html.escape(note)}</p>"
            f'<div class="cards">{"".join(cards)}</div>')


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """The median of ``values`` each repeated ``weights`` times (frequency weights), without expanding them.

    ``np.median`` of the expanded rows: the mean of the two middle values where the weights split exactly in half.
    """
    order = np.argsort(values, kind="stable")
    values, cumulative = values[order], np.cumsum(weights[order])
    held = weights[order] > 0
    values, cumulative = values[held], cumulative[held]
    half = cumulative[-1] / 2
    i = int(np.searchsorted(cumulative, half))
    if np.isclose(cumulative[i], half, rtol=1e-12, atol=0.0) and i + 1 < values.size:
        return float((values[i] + values[i + 1]) / 2)
    return float(values[i])


def _data_section(tree) -> str:
    from mixflow.container.read import observed_data
    from mixflow.families.base import MixtureModel, model_from_json

    data = observed_data(tree)
    frequency = data.frequency
    total = frequency.sum()
    mean = frequency @ data.values / total
    # the sample sd (n - 1), as R's sd() and pandas give it, of the rows each counted by its frequency weight
    sd = np.sqrt(frequency @ (data.values - mean) ** 2 / (total - 1)) if total > 1 else np.full(mean.shape, np.nan)
    median = [weighted_median(column, frequency) for column in data.values.T]
    summary = pd.DataFrame({"mean": mean, "sd": sd, "min": data.values.min(axis=0), "median": median,
                            "max": data.values.max(axis=0)}, index=pd.Index(data.features, name="feature"))
    units = data_units(tree)
    if units:
        summary.insert(0, "unit", [units.get(str(f), "") for f in data.features])
    model = model_from_json(tree.attrs["model"])
    # columns that are not all features (a class's limits, a regression's response and covariates) said as such
    roles = type(model).columns_text is not MixtureModel.columns_text
    rows = [("name", tree.attrs.get("data_name", "")), ("rows", data.n_obs),
            ("columns", model.columns_text([str(f) for f in data.features])) if roles
            else ("features", data.n_features),
            ("frequency weights", "none" if data.weights is None else f"yes (total {total:g})")]
    note = " (weighted)" if data.weights is not None else ""
    return key_values(rows) + f"<h3>Summary{note}</h3>" + _table(summary)


def _cell(stats: pd.Series, method: str, unit: str = "") -> str:
    if pd.isna(stats.get("estimate")):
        return ""
    sd = stats["sd"] if pd.notna(stats["sd"]) else None
    value, sd_text = format_with_sd(stats["estimate"], sd)
    text = value + (f" ({sd_text})" if sd_text else "")
    if pd.notna(stats["lower"]):
        text += f"<br><small>[{format_number(stats['lower'], sd)}, {format_number(stats['upper'], sd)}]</small>"
    if _is_variance(stats) and stats["estimate"] >= 0:
        root = f" {html.escape(unit_root(unit))}" if unit_root(unit) else ""
        # to the precision the variance's sd supports: by the delta method, the root's sd is sd / (2 root)
        deviation = np.sqrt(stats["estimate"])
        text += (f"<br><small>sd {format_number(deviation, sd / (2 * deviation) if sd and deviation > 0 else None)}"
                 f"{root}</small>")
    flags = []
    if method != "em" and stats.get("em_inside") is False:
        flags.append('<span class="flag bad" title="EM point outside this interval">EM outside</span>')
    distance = stats.get("distance_to_mcmc")
    if method == "advi" and pd.notna(distance) and abs(distance) > 1:
        flags.append(f'<span class="flag warn" title="ADVI mean minus NUTS mean, in NUTS sd">{distance:+.1f} sd'
                     "</span>")
    ratio = stats.get("sd_ratio_to_mcmc")
    if method == "advi" and pd.notna(ratio) and not ADVI_SD_RATIO[0] <= ratio <= ADVI_SD_RATIO[1]:
        flags.append(f'<span class="flag warn" title="ADVI sd / NUTS sd">sd ×{ratio:.2f}</span>')
    return text + ("<br>" + " ".join(flags) if flags else "")


def _is_variance(stats: pd.Series) -> bool:
    """A variance: a ``variance`` parameter, or a diagonal element of a ``covariance``."""
    if stats.get("parameter") == "variance":
        return True
    return (stats.get("parameter") == "covariance" and pd.notna(stats.get("feature"))
            and stats.get("feature") == stats.get("feature_"))


def _comparison_section(table: pd.DataFrame, units: ParameterUnits, em_method: str = "mle") -> str:
    keys = ["parameter", *element_columns(table)]
    methods = [m for m in table["method"].cat.categories]
    rows, any_unit = [], False
    for key, block in table.groupby(keys, sort=False, dropna=False, observed=True):
        label = key[0] + "".join(f"[{v}]" for v in key[1:] if pd.notna(v))
        unit = units(key[0], {dim: v for dim, v in zip(keys[1:], key[1:], strict=True) if pd.notna(v)})
        any_unit = any_unit or bool(unit)
        by_method = {row["method"]: row for _, row in block.iterrows()}
        cells = "".join(f"<td>{_cell(by_method[m], m, unit) if m in by_method else ''}</td>" for m in methods)
        rows.append((f"<th>{html.escape(label)}</th>", f'<td class="unit">{html.escape(unit)}</td>', cells))
    rows = [f"<tr>{label}{unit if any_unit else ''}{cells}</tr>" for label, unit, cells in rows]
    header = ('<th class="unit">unit</th>' if any_unit else "") + "".join(
        f"<th>{html.escape(METHOD_LABELS[m])}</th>" for m in methods)
    probability = table.attrs["ci_prob"]
    agreement = agreement_of(table)
    information = ("of the log posterior (a MAP estimate: the prior's curvature included)"
                   if em_method == "map" else "of the log-likelihood")
    explanation = (f"<p>Each cell: estimate (EM point or posterior mean), (sd; for EM the standard error from the "
                   f"observed information {information}), each to the precision its sd supports (two significant "
                   "digits of the sd); for a variance, its square root (a standard deviation, in the data's units) "
                   f"below; and the {probability:.0%} interval ({table.attrs['ci_kind'].upper()} of the draws; Wald "
                   "for EM, on the scale where the parameter is unbounded and mapped back: logit for weights, log for "
                   "rates and variances, so that it is asymmetric and stays in the parameter's range). Flags: the EM "
                   "point outside a method's interval; ADVI more than one NUTS sd from NUTS, or its sd off by more "
                   "than 30-40%.</p>")
    parts = [explanation, f'<div class="scroll"><table class="table compare"><thead><tr><th>parameter</th>'
             f"{header}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"]
    if len(agreement) > 1:  # one method's labels agree with themselves: nothing to say
        named = agreement.rename(index=METHOD_LABELS, columns=METHOD_LABELS).rename_axis(index=None, columns=None)
        parts += ["<h3>Agreement of hard cluster labels (adjusted Rand index)</h3>", _table(named.round(4))]
        # where labels differ only on rows no method places confidently: information (a warning is a finding)
        parts += [f"<p>{html.escape(text)}</p>" for level, text in label_agreement_findings(table) if level == "info"]
    return "".join(parts)


def _reference_section(tree, reference: pd.DataFrame) -> str:
    """Agreement of each method's clusters with the reference labels, and EM's cross-tabulation."""
    if not len(reference):
        return ""
    column = reference.attrs["column"]
    named = reference.rename(index=METHOD_LABELS).rename(columns={"adjusted_rand_index": "adjusted Rand index",
                                                                  "n_clusters": "clusters used",
                                                                  "n_classes": f"{column} classes"})
    parts = [f"<h3>Agreement with {html.escape(column)}</h3><p>The labels of <code>{html.escape(column)}</code> "
             "were not used by any fit; each method's hard clusters (most probable component) are compared "
             "with them.</p>", _table(named.round(4))]
    crossed = cross_tabulation(tree, "em")
    if crossed is not None:
        values = crossed.to_numpy(dtype=float)
        if np.isfinite(values).all() and (values == np.round(values)).all():  # counts of rows: whole numbers
            crossed = crossed.astype(np.int64)
        parts.append(f"<h3>{html.escape(column)} by EM cluster</h3>" + _table(crossed))
    return "".join(parts)


#: The errors that stop one plot (drawn as far as the result allows); the others are still drawn.
PLOT_ERRORS = (ValueError, NotImplementedError, TypeError, np.linalg.LinAlgError)


def _report_plots(tree, selection, ci_prob) -> list[tuple[str, object, str]]:
    """The report's plots that apply to the result, in order, as ``(name, draw, caption)``."""
    from mixflow.present import plots

    methods = available_methods(tree)
    draws = [m for m in methods if m != "em"]
    wanted = [
        ("data", lambda: plots.plot_data(tree), "The data with each method's fitted mixture."),
        ("forest", lambda: plots.plot_forest(tree, ci_prob=ci_prob), "Every parameter across methods."),
    ]
    if draws:
        wanted.append(("posteriors", lambda: plots.plot_posteriors(tree),
                       "Marginal densities of the draws; the dashed line is the EM estimate."))
    if "mcmc" in methods:
        traced, caption = _traced(tree)
        if traced:
            wanted.append(("trace", lambda: plots.plot_trace(tree, var_names=traced), caption))
        if tree["mcmc/posterior"].sizes["chain"] > 1:  # a rank plot compares chains
            wanted.append(("rank", lambda: plots.plot_rank(tree), "MCMC rank plots: flat when the chains mix well."))
    wanted += [("ppc", lambda: plots.plot_ppc(tree),
                "Predictive check: replicated data sets against the observed data, per feature."),
               ("convergence", lambda: plots.plot_convergence(tree),
                "Convergence: EM objective per iteration for every restart; ADVI ELBO per iteration.")]
    if selection is not None:
        wanted.append(("select_k", lambda: plots.plot_select_k(selection), "Choice of the number of components."))
    return wanted


def _traced(tree) -> tuple[list[str], str]:
    """The parameters the report's trace plot draws (a row per element, at most ``TRACE_ROWS``), and its caption.

    Every parameter when they fit; otherwise those of the highest R-hat first, as many as fit, and the caption
    names the others (``mixflow.plot_trace(tree, var_names=...)`` draws them). None when no one fits alone.
    """
    import arviz_stats

    from mixflow.container.read import method_draws
    from mixflow.present.plots.draws import TRACE_ROWS

    draws = method_draws(tree, "mcmc")
    rows = {name: int(np.prod([size for dim, size in da.sizes.items() if dim not in ("chain", "draw")]))
            for name, da in draws.data_vars.items()}
    caption = "MCMC traces and per-chain densities."
    if sum(rows.values()) <= TRACE_ROWS:
        return list(rows), caption
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        rhat = arviz_stats.rhat(draws) if draws.sizes["chain"] > 1 else None
    worst = {name: float(np.nanmax(rhat[name].values, initial=-np.inf)) if rhat is not None else 0.0
             for name in rows}
    chosen, used = [], 0
    for name in sorted(rows, key=lambda name: -worst[name]):
        if used + rows[name] <= TRACE_ROWS:
            chosen.append(name)
            used += rows[name]
    left = [name for name in rows if name not in chosen]
    return chosen, (f"MCMC traces and per-chain densities of {', '.join(chosen)} (the highest R-hat first, "
                    f"{TRACE_ROWS} rows at most); mixflow.plot_trace(tree, var_names={left!r}) draws the rest.")


def render_plots(tree, selection=None, ci_prob: float | None = None) -> dict:
    """Every plot the report of ``tree`` shows, rendered once: ``{name: PNG bytes, or the error that stopped it}``.

    For callers that also write the plots as files (the workflow runner): pass the result to
    :func:`report` as ``plots`` and nothing is drawn twice.
    """
    return {name: _rendered(draw) for name, draw, _ in _report_plots(tree, selection, ci_prob)}


def _rendered(draw) -> bytes | Exception:
    """``draw()``'s figure as PNG bytes, or the error that stopped it.

    Without matplotlib's "More than 20 figures have been opened" warning: each figure drawn here is closed once
    rendered, so the warning would be of figures the caller holds open, and a run's warnings would depend on them.
    """
    import matplotlib

    try:
        with matplotlib.rc_context({"figure.max_open_warning": 0}):
            return render_png(draw())
    except PLOT_ERRORS as error:
        return error


def _plots_section(tree, selection, ci_prob, rendered=None) -> tuple[str, list[str]]:
    figures, problems = [], []
    drawn = _report_plots(tree, selection, ci_prob)
    for name, draw, caption in drawn:
        png = rendered[name] if rendered is not None and name in rendered else _rendered(draw)
        if isinstance(png, Exception):
            problems.append(plot_problem(name, png))
        else:
            figures.append(f'<section class="plot" id="plot-{name}">{_figure_html(png, caption)}</section>')
    if "mcmc" in available_methods(tree) and "trace" not in {name for name, _, _ in drawn}:
        figures.append('<p class="note">No trace plot: each parameter has more elements than its rows (a row per '
                       "element); mixflow.plot_trace(tree, var_names=[...]) draws the ones named.</p>")
    return "".join(figures), problems


#: Per method with modes: its modes group, what its chains are, and its stacked method's name.
_MODES_OF = {"mcmc": (MCMC_MODES, "chains", "stacked"), "advi": (ADVI_MODES, "fits", "advi_stacked")}


#: A mode whose stacking weight is within this of one half is neither the main mode nor a minor one (stacking
#: weights from a few thousand draws move by a few percent, and two mirror-image modes are at half each)
_COMPARABLE = 0.1


def modes_sentence(tree, method: str = "mcmc") -> str:
    """One sentence on what the modes mean for EM's point estimate (which mode holds it, if any).

    ``method`` is whose modes: ``"mcmc"`` (NUTS's chains) or ``"advi"`` (ADVI's fits from several starts).
    """
    modes_path, unit, _ = _MODES_OF[method]
    modes = tree[modes_path]
    weights = modes["weight"].values
    em_mode, dominant = int(modes.attrs.get("em_mode", -1)), int(modes.attrs.get("dominant_mode", -1))
    kind = str(tree["em"].attrs.get("method", "")).upper() if "em" in tree.children else "EM"
    # the estimate the modes were matched against: /em's, or the MAP the samplers started from instead
    subject = ("The MAP estimate the samplers started from (EM's MLE in /em is degenerate)"
               if "reference" in tree[method].attrs else f"EM's {kind} estimate")
    left_out, alike = left_out_modes(modes), alike_modes(modes)
    tells = ("more draws, or chains that move, would tell" if method == "mcmc" else
             "NUTS, whose draws are the posterior's own, would tell")
    if left_out and em_mode in left_out:
        text = (f"{subject} lies in mode {em_mode}, which is left out of the stacking: "
                f"{left_out_reason(modes, em_mode)}, so how much of the posterior it holds is "
                f"unknown; {tells}.")
    elif left_out and em_mode >= 0:
        several = len(left_out) > 1
        why = ("; ".join(f"mode {m}: {left_out_reason(modes, m)}" for m in left_out) if several else
               left_out_reason(modes, left_out[0]))
        text = (f"{subject} lies in mode {em_mode}, which carries {weights[em_mode]:.0%} of the stacking "
                f"weight of the modes stacked; mode{'s' * several} {', '.join(map(str, left_out))} "
                f"{'were' if several else 'was'} left out of the stacking "
                f"({why}), so {'their weights' if several else 'its weight'}, and how much of the posterior the "
                f"estimate describes, are unknown; {tells}.")
    elif em_mode < 0:
        reached = "sampled" if method == "mcmc" else "reached"
        text = (f"{subject} lies in none of the {weights.size} modes the {unit} found: it describes "
                f"no part of the posterior the {unit} {reached}, so report the modes (or their stacked draws) "
                "instead.")
    elif abs(weights[em_mode] - 0.5) <= _COMPARABLE:  # about half: neither the main mode nor a minor one
        text = (f"{subject} lies in mode {em_mode}, which carries {weights[em_mode]:.0%} of the stacking "
                "weight, about as much as the other modes together: the point estimate describes one of comparable "
                "explanations; the stacked draws weigh them all.")
    elif em_mode >= 0 and alike and (em_mode in alike or em_mode == int(np.argmax(weights))):
        text = (f"{subject} lies in mode {em_mode}, which carries {weights[em_mode]:.0%} of the stacking weight, "
                f"but modes {', '.join(map(str, sorted({int(np.argmax(weights)), *alike})))} predict the data about "
                "as well (leave-one-out densities within two standard errors), so the data do not settle their "
                "weights: the point estimate describes one of the explanations that fit alike; the stacked draws weigh "
                "them all.")
    elif weights[em_mode] > 0.5:
        text = (f"{subject} lies in mode {em_mode}, which carries {weights[em_mode]:.0%} of the stacking "
                "weight: the point estimate describes the main mode")
        text += (", and the other modes are negligible." if dominant == em_mode else
                 f"; the other modes ({1 - weights[em_mode]:.0%}) are alternative explanations it does not show.")
    else:
        text = (f"{subject} lies in mode {em_mode}, which carries only {weights[em_mode]:.0%} of the "
                "stacking weight: the point estimate describes a minor mode; the stacked draws weigh them all.")
    return text


def _modes_section(tree) -> tuple[str, list[str]]:
    """The table of modes, a forest plot by mode and the sentence on EM's estimate ('' with one mode).

    One part per method whose chains (ADVI: fits) fell into several modes, headed by the method's name
    when both did.
    """
    parts, problems = [], []
    several = [m for m, (path, _, _) in _MODES_OF.items()
               if has_group(tree, path) and tree[path].sizes.get("mode", 1) >= 2]
    for method in several:
        html_part, found = _method_modes(tree, method, heading=len(several) > 1)
        parts.append(html_part)
        problems += found
    return "".join(parts), problems


def _method_modes(tree, method: str, heading: bool) -> tuple[str, list[str]]:
    from mixflow.present import plots

    modes_path, unit, stacked = _MODES_OF[method]
    modes = tree[modes_path]
    chain_mode = modes["chain_mode"].values
    rows = {unit: [", ".join(map(str, np.flatnonzero(chain_mode == m))) for m in modes["mode"].values]}
    if "stuck" in modes and modes["stuck"].values.any():
        rows[f"stuck {unit}"] = [", ".join(map(str, np.flatnonzero((chain_mode == m) & modes["stuck"].values)))
                                 for m in modes["mode"].values]
    for name in ("weight", "weight_low", "weight_high", "in_stacking", "elpd_loo", "elpd_diff", "elpd_diff_se",
                 "max_pareto_k", "pareto_k_threshold", "n_high_pareto_k", "loo_reliable", "log_likelihood",
                 "log_posterior", "max_rhat", "min_ess_bulk", "min_ess_tail", "ess_reliable"):
        if name in modes:
            rows[name] = modes[name].values
    left_out = left_out_modes(modes)
    for name in ("elpd_loo", "elpd_diff", "elpd_diff_se"):  # a left-out mode's LOO figures are marked, not compared
        if name in rows and left_out:
            rows[name] = [format_number(value, digits=4) + (" *" if mode in left_out else "")
                          for mode, value in enumerate(rows[name])]
    for index in range(modes["weights"].shape[1]):
        rows[f"weights[{index}]"] = modes["weights"].values[:, index]
    table = pd.DataFrame(rows, index=pd.Index(modes["mode"].values, name="mode"))
    grouped = ("Chains are grouped into modes" if method == "mcmc" else
               "ADVI's fits (one from each starting point, its draws a chain) are grouped into modes")
    ess_meaning = ("bulk ESS at least 100 per chain" if method == "mcmc" else
                   "at least 100 draws per fit: a fit's draws are independent")
    note = (f"<p><small>{grouped} when their pair R-hat stays below 1.1, or their draws share at "
            "least half their distribution, on every parameter; "
            "<code>weight</code> is the Bayesian stacking weight of the mode's PSIS-LOO predictive densities (Yao, "
            "Vehtari and Gelman 2022; plain importance-sampling LOO for a mode of fewer than 30 draws), and "
            f"<code>weight_low</code> to <code>weight_high</code> its central {WEIGHT_INTERVAL:.0%} interval under a "
            "Bayesian bootstrap of the rows (how far the data determine it); a mode of stuck chains, or whose Pareto "
            "k exceeds 1 (<code>in_stacking</code> False), is left out, weight 0; <code>elpd_diff</code> is a mode's "
            "PSIS-LOO elpd minus the heaviest mode's (negative where it predicts worse, as ArviZ's compare), with its "
            "standard error"
            + ("; * marks the leave-one-out figures of a mode left out, which rest on draws that are no sample of "
               "the posterior or on unusable importance weights and say nothing of how the mode predicts"
               if left_out and "elpd_loo" in rows else "") + ". The weights are to be "
            "doubted where <code>loo_reliable</code> (every Pareto k at most <code>pareto_k_threshold</code>) or "
            f"<code>ess_reliable</code> ({ess_meaning}) is False; <code>log_likelihood</code> and "
            "<code>log_posterior</code> are at the mode's "
            "posterior mean; R-hat and ESS are within the mode. The method "
            f"<em>{html.escape(METHOD_LABELS[stacked])}</em> in the tables and plots is the draws resampled by these "
            "weights.</small></p>")
    title = f"<h3>{html.escape(METHOD_LABELS[method])}</h3>" if heading else ""
    parts = [title, f"<p>{html.escape(modes_sentence(tree, method))}</p>",
             f'<div class="scroll">{_table(table, digits=4)}</div>', note]
    try:
        parts.append(_figure_html(render_png(plots.plot_modes(tree, method=method)),
                                  "Each parameter's posterior by mode."))
    except (ValueError, TypeError) as error:
        return "".join(parts), [f"The {METHOD_LABELS[method]} modes plot could not be drawn: {error}"]
    return "".join(parts), []


def _selection_html(selection, tree) -> str:
    """The choice-of-K table with its legend, each column said in the terms of the model's family."""
    from mixflow.families.base import model_from_json

    if selection is None:
        return ""
    model = model_from_json(tree.attrs["model"])
    text = choice_of_k_text(selection)
    parameters = model.component_parameters_text()
    few_rows = (f"a component of fewer observations than its own parameters, {parameters}" if parameters else
                "never set for this model: its components have no dispersion of their own, and a mean or rate "
                "alone gains on its rows about what the criteria charge for it")
    spurious = (model.spurious_rule_gist()
                or "never set for this model: its components have no dispersion of their own to shrink")
    folds = ("<code>cv_converged</code> (False when a cross-validation fold's EM fit did), "
             if "cv_converged" in selection else "")
    em = ("EM columns: <code>converged</code> (False when the fit on all rows stopped at max_iter), "
          f"{folds}<code>degenerate</code> (a "
          f"collapsed component), <code>spurious</code> ({html.escape(spurious)}), <code>fewest_rows</code> (the "
          f"observations of the smallest component), <code>few_rows</code> ({html.escape(few_rows)}); "
          "<code>icl</code> is BIC plus twice the entropy of the responsibilities (mclust's ICL takes "
          "that of the hard labels, which is at most as large)." if "bic" in selection else "")
    nuts = (" NUTS columns: <code>max_rhat</code>, <code>min_ess_bulk</code>, <code>min_ess_tail</code>, "
            "<code>divergences</code>, <code>pareto_k_warning</code> (PSIS-LOO unreliable: a Pareto k above "
            "arviz_stats' threshold for the draws), <code>max_pareto_k</code>, <code>n_high_pareto_k</code> (the rows "
            "above it), <code>n_modes</code> "
            "(modes the chains fell into; with several, <code>elpd_loo</code> is that of the modes' stacked "
            "predictive)." if "elpd_loo" in selection else "")
    note = f"<p><small>{em}{nuts}</small></p>" if em or nuts else ""
    return (f"<h3>Choice of K</h3><p>{html.escape(text[:1].upper() + text[1:])}.</p>{note}"
            f'<div class="scroll">{_table(selection, digits=6)}</div>')  # criteria differ in units


# -- the page ------------------------------------------------------------------------------------------
def _page(title: str, sections: dict, methods: list[str], subtitle: str) -> str:
    navigation = "".join(f'<a href="#{key}">{html.escape(heading)}</a>' for key, (heading, _) in sections.items())
    badges = "".join(f'<span class="badge {m}">{html.escape(METHOD_LABELS[m])}</span>' for m in methods)
    body = "".join(f'<section id="{key}"><h2>{html.escape(heading)}</h2>{content}</section>'
                   for key, (heading, content) in sections.items())
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
            f"<header><h1>{html.escape(title)}</h1><p class=\"sub\">{html.escape(subtitle)}</p>"
            f'<p>{badges}</p><nav>{navigation}</nav></header><main>{body}</main>'
            f'<footer>Generated by mixflow. Self-contained: no network access is needed to view this file.</footer>'
            "</body></html>\n")


def _not_a_directory(folder: Path) -> str:
    return f"{str(folder)!r} is a file" if folder.exists() else f"no directory {str(folder)!r}"


def _check_arguments(tree, path, selection, title, other_fits, plots):
    check_tree(tree)
    if plots is not None and not (isinstance(plots, dict) and all(
            isinstance(v, bytes | Exception) for v in plots.values())):
        raise InputTypeError(f"plots: expected None or the dict from render_plots (plot name to PNG bytes or "
                             f"an error), got {type(plots).__name__}")
    if not isinstance(path, str | os.PathLike):
        raise InputTypeError(f"path: expected a file path (str or pathlib.Path), got {type(path).__name__}")
    path = Path(path)
    if path.is_dir():
        raise InputError(f"path: expected a file name ending in .html, got {str(path)!r}, which is a directory")
    if path.suffix.lower() not in (".html", ".htm"):
        raise InputError(f"path: expected a file name ending in .html, got {str(path)!r}")
    if not path.parent.is_dir():
        raise MissingPathError(f"path: expected a file in an existing directory, got {str(path)!r} "
                                f"({_not_a_directory(path.parent)})")
    if selection is not None and (not isinstance(selection, pd.DataFrame) or selection.index.name != "k"):
        raise InputTypeError(f"selection: expected None or the DataFrame from mixflow.select_k, "
                        f"got {type(selection).__name__}")
    if title is not None and not isinstance(title, str):
        raise InputTypeError(f"title: expected None or a str, got {type(title).__name__}")
    if other_fits is not None and (not isinstance(other_fits, dict) or not all(
            isinstance(k, int) and not isinstance(k, bool) and isinstance(v, str | os.PathLike)
            for k, v in other_fits.items())):
        raise InputTypeError(f"other_fits: expected None or a dict of K (int) to a report's path or link (str), got "
                        f"{other_fits!r}")
    if other_fits and selection is None:
        raise InputError("other_fits: expected the choice-of-K table they come from as selection, got "
                         "selection=None")
    return path


def report(tree, path, *, selection=None, title: str | None = None, ci_prob: float | None = None,
           other_fits: dict | None = None, plots: dict | None = None) -> Path:
    """Write a self-contained HTML report of a mixflow result.

    Sections: the model and prior as declared (and as resolved from the data), the data, a summary of
    each fit, the comparison table (:func:`mixflow.compare`) with label agreement (and, when the result
    carries reference labels, each method's agreement with them), the plots, the diagnostics and
    warnings, and provenance (versions, seed, dates).

    Parameters
    ----------
    tree : xarray.DataTree
        A mixflow result; whichever of EM (with bootstrap), MCMC and ADVI it holds are reported.
    path : str or pathlib.Path
        Destination ``.html`` file in an existing directory; replaced atomically.
    selection : pandas.DataFrame, optional
        A :func:`mixflow.select_k` table, reported with its plot.
    title : str, optional
        Page title (default from the data name).
    ci_prob : float, optional
        Interval probability, ``rcParams["stats.ci_prob"]`` by default.
    other_fits : dict of int to str, optional
        The reports of the other K fitted from the same ``selection`` (e.g. the runner-up when the criteria
        disagree), by K: linked from "At a glance" with the criteria that prefer each.
    plots : dict, optional
        The plots already rendered by :func:`render_plots` for the same ``tree``, ``selection`` and ``ci_prob``
        (a caller that also writes them as files); the plots not in it are drawn here.

    Returns
    -------
    pathlib.Path
        The file written.

    """
    path = _check_arguments(tree, path, selection, title, other_fits, plots)
    methods = available_methods(tree)
    title = title or f"Mixture model report: {tree.attrs.get('data_name', 'data')}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MixflowWarning)
        dataset = compare_dataset(tree, ci_prob=ci_prob)
        table = dataset_to_frame(dataset)
        plots_html, plot_problems = _plots_section(tree, selection, ci_prob, plots)
        modes_html, modes_problems = _modes_section(tree)
    plot_problems += modes_problems
    # the warnings its making raised (once each), those a workflow's run raised too, recorded, left out
    recorded = {w.get("message") for w in recorded_warnings(tree)}
    raised = list(dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, MixflowWarning)
                                and str(w.message) not in recorded))
    diagnosed = fit_findings(tree, selection, table) + [("warn", message) for message in plot_problems]
    warned = [("warn", message) for message in raised] + run_warnings(tree)
    counts = warnings_and_diagnostics(len(warned), diagnosed)  # as the run's last line counts them
    findings = diagnosed + warned or [("ok", "No problems found.")]
    items = "".join(f'<li class="{level}">{html.escape(text)}</li>' for level, text in findings)
    written = [("report written", datetime.now(UTC).isoformat(timespec="seconds"))]
    reference = reference_agreement(tree)
    em_method = tree["em"].attrs.get("method", "mle") if "em" in tree.children else "mle"
    sections = {
        "summary": ("At a glance", _summary_section(tree, table, counts, reference, selection, other_fits)),
        "diagnostics": ("Diagnostics and warnings", f'<ul class="findings">{items}</ul>'),
        "model": ("Model and prior", _model_section(tree)),
        "data": ("Data", _data_section(tree)),
        "fits": ("Fits", fit_summaries(tree) + _selection_html(selection, tree)),
        "comparison": ("Comparison of methods", _comparison_section(table, ParameterUnits(tree), em_method)
                       + _reference_section(tree, reference)),
        **({"modes": ("Modes", modes_html)} if modes_html else {}),
        "plots": ("Plots", plots_html),
        "provenance": ("Provenance", key_values(provenance_rows(tree) + written)),
    }
    subtitle = f"{counted(len(methods), 'method')}: " + ", ".join(METHOD_LABELS[m] for m in methods)
    return _write_atomically(path, _page(title, sections, methods, subtitle))


def _write_atomically(path: Path, text: str) -> Path:
    return atomic_write(path, lambda temporary: temporary.write_text(text, encoding="utf-8"),
                        expected_bytes=len(text.encode()))
