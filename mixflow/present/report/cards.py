"""What a report says about each fit: summaries, diagnostics (findings) and provenance.

Each function reads the container and returns HTML or ``(level, text)`` findings, level one of "bad",
"warn", "ok"; :func:`mixflow.present.report.page.report` lays them out.
"""

import html
import json

import numpy as np
import pandas as pd

from mixflow.container.build import recorded_warnings
from mixflow.container.layout import (
    DRAW_GROUPS,
    EM_BOOTSTRAP,
    EM_ESTIMATE,
    EM_SAMPLE_STATS,
    MCMC,
    OBSERVED_DATA,
    group,
)
from mixflow.container.read import available_methods, frequency_weights, has_group, method_draws
from mixflow.engines.mode_rule import LOO_MORE_DRAWS_K, TAIL_PROB
from mixflow.engines.modes import CROSSING_WINDOW, ESS_PER_CHAIN_MIN
from mixflow.engines.sampling_diagnostics import (
    MIN_DRAWS_FOR_ESS,
    RHAT_MAX,
    disagreeing_mode,
    format_above,
    format_ess,
    format_rhat,
)
from mixflow.present.compare import (
    CONFIDENT_RESPONSIBILITY,
    METHOD_LABELS,
    agreement_of,
    compare_dataset,
    dataset_to_frame,
    element_columns,
)
from mixflow.present.numbers import (
    advi_progress,
    compile_seconds,
    recorded_warning_line,
    searched_a_sample,
    set_aside_runs,
)
from mixflow.present.rank_test import mcmc_rank_finding
from mixflow.wording import agreeing, counted, fixed_places, pairs_text

__all__ = ["ADVI_SD_RATIO", "card", "diagnostics", "duration", "fit_findings", "fit_findings_apart", "fit_summaries",
           "key_values", "label_agreement_findings", "provenance_rows", "run_warnings", "selection_findings"]


def key_values(rows: list[tuple[str, object]]) -> str:
    """An HTML two-column table of (key, value) rows."""
    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f'<table class="table kv">{body}</table>'


def _mcmc_convergence(tree) -> dict:
    import arviz_stats

    from mixflow.container.read import method_draws

    draws = method_draws(tree, "mcmc")
    out = {"chains": draws.sizes["chain"], "draws per chain": draws.sizes["draw"]}
    attrs = tree["mcmc"].attrs
    if all(key in attrs for key in ("max_rhat", "min_ess_bulk", "min_ess_tail", "n_divergences")):
        # the sampler's own diagnostics, the ones it warned of (R-hat shown with several chains)
        many = int(attrs.get("n_modes", 1)) > 1
        if draws.sizes["chain"] > 1:  # with several modes max_rhat is within them (before *_all_chains: over all)
            out["max R-hat over all chains" if many else "max R-hat"] = float(
                attrs.get("max_rhat_all_chains", attrs["max_rhat"]) if many else attrs["max_rhat"])
        elif np.isfinite(float(attrs["max_rhat"])):  # one chain: its halves compared (none for a chain too short)
            out["max R-hat of the chain's halves"] = float(attrs["max_rhat"])
        out.update({"min bulk ESS": float(attrs["min_ess_bulk"]), "min tail ESS": float(attrs["min_ess_tail"]),
                    "divergences": int(attrs["n_divergences"])})
        for label in ("bulk", "tail"):  # the sampler's judgement (ESS_PER_CHAIN_MIN per chain of a mode)
            out[f"low {label} ESS"] = (bool(json.loads(attrs[f"low_ess_{label}"])) if f"low_ess_{label}" in attrs
                                       else out[f"min {label} ESS"] < ESS_PER_CHAIN_MIN * out["chains"])
        if has_group(tree, group(MCMC, "modes")) and "crosses" in tree[group(MCMC, "modes")]:
            crossing = np.flatnonzero(tree[group(MCMC, "modes")]["crosses"].values)
            if crossing.size:  # chains that themselves move between places (mixflow.engines.modes)
                out["chains that cross"] = ", ".join(map(str, crossing))
                out["crossing window (draws)"] = int(tree[group(MCMC, "modes")].attrs.get("crossing_window",
                                                                                          CROSSING_WINDOW))
        if int(attrs.get("n_modes", 1)) > 1:  # R-hat across modes measures the modes' distance, not convergence
            out["modes"] = int(attrs["n_modes"])
            # with several modes the sampler's own figures are within them (its *_all_chains: over all chains)
            out["max R-hat within modes"] = float(attrs["max_rhat"])
            out["min bulk ESS within modes"] = float(attrs["min_ess_bulk"])
            modes = tree[group(MCMC, "modes")] if has_group(tree, group(MCMC, "modes")) else None
            if modes is not None and {"chain_mode", "max_rhat"} <= set(modes.data_vars):
                chain_mode, rhat = modes["chain_mode"].values, modes["max_rhat"].values
                over = [mode for mode in range(rhat.size) if rhat[mode] > RHAT_MAX]
                out["modes that disagree"] = [  # which chains: a mode's own, or one chain's halves (each R-hat
                    # quoted when several modes disagree; one mode's is the worst the finding quotes already)
                    disagreeing_mode(mode, out["modes"], np.flatnonzero(chain_mode == mode),
                                     rhat if len(over) > 1 else None, None, 0) for mode in over]
        return out
    if draws.sizes["chain"] > 1:
        out["max R-hat"] = float(arviz_stats.rhat(draws).to_array().max())
    out["min bulk ESS"] = float(arviz_stats.ess(draws, method="bulk").to_array().min())
    out["min tail ESS"] = float(arviz_stats.ess(draws, method="tail", prob=TAIL_PROB).to_array().min())
    for label in ("bulk", "tail"):
        out[f"low {label} ESS"] = out[f"min {label} ESS"] < ESS_PER_CHAIN_MIN * out["chains"]
    if "sample_stats" in tree["mcmc"].children and "diverging" in tree[group(MCMC, "sample_stats")].data_vars:
        out["divergences"] = int(tree[group(MCMC, "sample_stats")]["diverging"].sum())
    return out


def card(heading: str, content: str) -> str:
    """An HTML card: a heading over some content."""
    return f'<div class="card"><h3>{html.escape(heading)}</h3>{content}</div>'


def _wall_time(seconds, compiling, rest: str, timed: tuple[tuple[float, str], ...] = ()) -> str:
    """A method's wall time in parts: compiling the model, the parts ``timed`` ((seconds, what)), the rest (``rest``).

    Compiling is PyTensor's kernels, compiled or loaded from its cache. On a machine whose cache lacks the model's
    structure, compiling takes minutes where sampling takes seconds; the wall time alone would pass that off as the
    method's own time.
    """
    if compiling is None:  # a container written before the compile time was recorded
        return duration(seconds)
    left = seconds - compiling - sum(part for part, _ in timed)
    said = [f"{duration(compiling)} compiling (or loading) the model",
            *(f"{duration(part)} {what}" for part, what in timed)]
    return f"{duration(seconds)}: " + ", ".join(said + ([f"{duration(left)} {rest}"] if left >= 0.05 else []))


def duration(seconds) -> str:
    """A wall time in words, rounded: "0.4 s", "41 s", "3 min 05 s"."""
    seconds = float(seconds)
    if not np.isfinite(seconds):
        return ""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def _components(attrs, key: str) -> list:
    try:
        return json.loads(attrs.get(key, "[]") or "[]")
    except (TypeError, ValueError):
        return []


def _em_rows(attrs) -> list[tuple[str, object]]:
    """EM in words: what was estimated, whether and when it converged, from how many starts."""
    kind = "MAP estimate (under the prior)" if attrs.get("method") == "map" else "maximum-likelihood estimate"
    n_iter = attrs.get("n_iter", "?")
    converged = (f"converged after {n_iter} iterations" if attrs.get("converged", 1)
                 else f"did not converge: stopped at max_iter = {attrs.get('max_iter', n_iter)} iterations")
    rows = [("estimate", kind), ("convergence", converged)]
    if "n_init" in attrs:
        runs = int(attrs.get("n_starts", attrs["n_init"]))  # the runs made: with init "auto", short ones among them
        start = f", from a {attrs['best_start']} start" if "best_start" in attrs else ""
        rows.append(("starts", f"best of {counted(runs, 'run')} (init {attrs.get('init', 'k-means++')!r}, n_init = "
                               f"{attrs['n_init']}): restart {attrs.get('best_restart', 0)}{start}"))
    set_aside = set_aside_runs(attrs)
    if set_aside and not int(attrs.get("degenerate", 0)):
        rows.append(("runs set aside", set_aside))
    rows.append(("log-likelihood", fixed_places(attrs["log_likelihood"], 4)))  # as the summary gives them
    if "log_posterior" in attrs:
        rows.append(("log posterior", fixed_places(attrs["log_posterior"], 4)))
    rows.append(("free parameters", attrs.get("n_parameters", "")))
    rows.append(("BIC / AIC / ICL", " / ".join(fixed_places(attrs[key], 2) for key in ("bic", "aic", "icl")
                                               if key in attrs)))
    for key, words in (("collapsed_components", "collapsed components"), ("empty_components", "empty components")):
        if _components(attrs, key):
            rows.append((words, ", ".join(str(c) for c in _components(attrs, key))))
    if _components(attrs, "duplicate_components"):
        rows.append(("duplicate components", pairs_text(_components(attrs, "duplicate_components"))))
    if attrs.get("trimmed_components", 0):
        rows.append(("trimmed components", attrs["trimmed_components"]))
    return rows


def _bootstrap_rows(attrs) -> list[tuple[str, object]]:
    rows = [("replicates", f"{attrs.get('n_replicates', '?')} ({attrs.get('kind', 'nonparametric')})")]
    problems = [f"{attrs[key]} {words}" for key, words in (("n_failed", "failed"), ("n_not_converged",
                "did not converge"), ("n_degenerate", "degenerate"), ("n_elsewhere", "at another solution"))
                if attrs.get(key, 0)]
    rows.append(("problems", ", ".join(problems) if problems else "none"))
    return rows


def _mcmc_rows(tree) -> list[tuple[str, object]]:
    attrs, summary = tree["mcmc"].attrs, _mcmc_convergence(tree)
    rows = [("sampler", f"NUTS ({attrs.get('sampler', 'pymc')})"),
            ("draws", f"{counted(summary['chains'], 'chain')} x {summary['draws per chain']} draws"
                      + (f" after {attrs['tune']} tuning steps" if "tune" in attrs else ""))]
    if attrs.get("extended"):  # the draws are a second, longer run's
        rows.append(("extended", attrs["extended"]))
    if "wall_time" in attrs:
        timings = json.loads(attrs.get("timings", "{}"))
        if "compile" in timings and "tune_and_draw" in timings:
            rows.append(("wall time", _wall_time(attrs["wall_time"], timings["compile"], "the rest",
                                                 ((timings["tune_and_draw"], "tuning and sampling"),))))
        else:  # a container written before the phases were timed
            rows.append(("wall time", duration(attrs["wall_time"]) + " (compilation and sampling)"))
    if "max R-hat within modes" in summary:  # the figure the warnings judge by, then the modes' distance
        rows.append(("worst R-hat within a mode", format_rhat(summary['max R-hat within modes'])))
        if "max R-hat over all chains" in summary:
            rows.append(("worst R-hat over all chains (the modes apart)",
                         format_rhat(summary['max R-hat over all chains'])))
    elif "max R-hat" in summary:
        rows.append(("worst R-hat", format_rhat(summary['max R-hat'])))
    elif "max R-hat of the chain's halves" in summary:
        rows.append(("worst R-hat (the chain's halves)", format_rhat(summary["max R-hat of the chain's halves"])))
    rows += [("smallest ESS (bulk / tail)", f"{format_ess(summary['min bulk ESS'])} / "
                                            f"{format_ess(summary['min tail ESS'])}"),
             ("divergences", summary.get("divergences", 0))]
    if attrs.get("n_relabelled_draws", 0):
        rows.append(("relabelled draws", attrs["n_relabelled_draws"]))
    return rows


def _advi_rows(tree) -> list[tuple[str, object]]:
    from mixflow.present.plots.fit import elbo_history

    attrs = tree["advi"].attrs
    variant = {"meanfield": "mean-field", "fullrank": "full-rank"}.get(attrs.get("variant"), attrs.get("variant", ""))
    settled, final = advi_progress(attrs)
    rows = [("approximation", f"{variant} Gaussian"), ("convergence", settled)]
    if "final_elbo" in attrs:  # the mean of the last window of single-sample estimates, as the settle check sees
        window = f" (mean of the last {attrs['check_every']} iterations)" if "check_every" in attrs else ""
        rows.append((f"final ELBO{window}", final.removeprefix("final ELBO ")))
    else:
        elbo = elbo_history(tree)
        if elbo is not None:
            rows.append(("final ELBO", f"{np.nanmean(elbo.values.ravel()[-max(elbo.size // 10, 1):]):.6g}"))
    rows.append(("draws", tree[DRAW_GROUPS["advi"]].sizes.get("draw", "")))
    if "wall_time" in attrs:
        rows.append(("wall time", _wall_time(attrs["wall_time"], compile_seconds(attrs), "optimising")))
    if attrs.get("minibatch_size", -1) not in (-1, None):
        rows.append(("minibatch", f"{attrs['minibatch_size']} rows"))
    return rows


def fit_summaries(tree) -> str:
    """HTML cards saying in words what each method did, how long it took and whether it converged."""
    methods, parts = available_methods(tree), []
    if "em" in methods:
        parts.append(card("EM", key_values(_em_rows(tree["em"].attrs))))
    if "bootstrap" in methods:
        parts.append(card("EM bootstrap", key_values(_bootstrap_rows(tree[EM_BOOTSTRAP].attrs))))
    if "mcmc" in methods:
        parts.append(card("MCMC (NUTS)", key_values(_mcmc_rows(tree))))
    if "advi" in methods:
        parts.append(card("ADVI", key_values(_advi_rows(tree))))
    return f'<div class="cards">{"".join(parts)}</div>'


def diagnostics(tree, table: pd.DataFrame) -> list[tuple[str, str]]:
    """Findings as (level, text), level one of "bad", "warn", "ok"."""
    methods, findings = available_methods(tree), []
    if "em" in methods:
        findings += _em_findings(tree)
        undefined = table.attrs.get("em_standard_errors_undefined")
        if undefined:
            remedy = table.attrs["em_standard_errors_remedy"]
            findings.append(("warn", f"EM: no standard errors ({undefined}): the EM column has no errors or intervals; "
                                     f"{remedy}."))
    if "bootstrap" in methods:
        attrs = tree[EM_BOOTSTRAP].attrs
        if attrs.get("n_failed", 0) or attrs.get("n_degenerate", 0) or attrs.get("n_not_converged", 0):
            findings.append(("warn", f"Bootstrap: {attrs.get('n_failed', 0)} failed, "
                                     f"{attrs.get('n_not_converged', 0)} not converged and "
                                     f"{attrs.get('n_degenerate', 0)} degenerate of "
                                     f"{counted(int(attrs.get('n_replicates', 0)), 'replicate')}."))
        if attrs.get("n_elsewhere", 0):
            higher = int(attrs.get("n_elsewhere_higher", 0))
            findings.append(("warn", f"Bootstrap: {attrs['n_elsewhere']} of "
                                     f"{counted(int(attrs.get('n_replicates', 0)), 'replicate')} ended at another "
                                     "solution than the estimate's (EM on the data from their estimates goes to "
                                     "another fixed point"
                                     + (f"; {higher} to a higher maximum, which the estimate's restarts missed"
                                        if higher else "")
                                     + "): they are in the bootstrap's spread, which they widen beyond the "
                                       "estimate's own; flagged 'elsewhere' in /em/bootstrap/sample_stats."))
    nuts = _nuts_findings(tree, methods)
    findings += nuts + _advi_findings(tree, methods) + _empty_findings(tree, methods)
    findings += _across_methods(tree, table, methods, nuts)
    return findings or [("ok", "No problems found.")]


def _advi_findings(tree, methods) -> list[tuple[str, str]]:
    """ADVI's approximation that did not settle (a fit of several, when it ran from several starts)."""
    if "advi" not in methods or bool(tree["advi"].attrs.get("converged", True)):
        return []
    attrs = tree["advi"].attrs
    progress, _ = advi_progress(attrs)
    what = ("the approximation " + progress if "n_iter_per_fit" not in attrs else
            f"not every fit settled ({progress})")  # several fits: each one's iterations
    # a problem, as EM stopped by max_iter and NUTS's chains that disagree are: the draws are not those of the method
    return [("bad", f"ADVI: {what}: its draws may not be the optimum's (raise n or lower learning_rate).")]


#: The share of a method's draws in which some component holds less than one observation's worth of weight, from
#: which the draws are said to empty a component: a legitimately small component of a few rows holds one rarely
EMPTY_SHARE = 0.2
#: ADVI's sd over NUTS's outside these bounds is flagged in the comparison table and said among the findings
ADVI_SD_RATIO = (0.7, 1.4)


def _empty_findings(tree, methods) -> list[tuple[str, str]]:
    """Draws that often empty a component: more components than the data support (Rousseau and Mengersen 2011).

    An overfitted mixture's posterior empties its spare components (their weights near 0, their other parameters
    the prior's), so their summaries describe the prior, not the data. Judged on the smallest weight of each draw,
    whatever its label (a spare component that switches labels empties one or another).
    """
    found, frequency = [], frequency_weights(tree)
    n = float(frequency.sum()) if frequency is not None else float(tree[OBSERVED_DATA].sizes["obs"])
    for method in ("mcmc", "advi"):
        draws = method_draws(tree, method) if method in methods else None
        if draws is None or "weights" not in draws:
            continue
        weights = draws["weights"].transpose(..., "component")
        smallest = weights.values.reshape(-1, weights.sizes["component"]).min(axis=1)
        share = float(np.mean(smallest * n < 1.0))
        if share >= EMPTY_SHARE:
            found.append(("warn", f"{METHOD_LABELS[method]}: the data may not support {weights.sizes['component']} "
                                  f"components: in {share:.0%} of the draws one holds less than one observation's "
                                  f"worth of weight (the smallest weight's median {np.median(smallest):.2g}), and an "
                                  "empty component's other parameters are the prior's; compare fewer components "
                                  "(select_k)."))
    return found


def _nuts_findings(tree, methods) -> list[tuple[str, str]]:
    return _mcmc_findings(_mcmc_convergence(tree)) + _rank_findings(tree) if "mcmc" in methods else []


def _across_methods(tree, table: pd.DataFrame, methods, nuts: list) -> list[tuple[str, str]]:
    """The EM point outside the intervals, ADVI against NUTS (judged with NUTS's own ``nuts`` findings), labels."""
    variant = tree["advi"].attrs.get("variant", "meanfield") if "advi" in methods else None
    if too_few_draws(tree) is not None:
        # no intervals to judge the EM point by, nor a mean and sd to measure ADVI against (said among NUTS's
        # findings, and "not judged" in the summary)
        table = table[~table["method"].isin(["mcmc", "stacked"])].assign(distance_to_mcmc=np.nan,
                                                                          sd_ratio_to_mcmc=np.nan)
    return _comparison_findings(table, variant, nuts_settled=not nuts)


def cross_method_findings(tree, table: pd.DataFrame | None = None) -> list[str]:
    """What the report finds beyond each method's own diagnostics, as text.

    EM's restarts at different optima, components the draws often empty, the EM point outside the other methods'
    intervals, ADVI against NUTS, and the agreement of hard labels.
    """
    table = dataset_to_frame(compare_dataset(tree)) if table is None else table
    methods = available_methods(tree)
    found = _restart_findings(tree) if "em" in methods else []
    found += _empty_findings(tree, methods) + _across_methods(tree, table, methods, _nuts_findings(tree, methods))
    return [text for _, text in found]


def fit_findings(tree, selection: pd.DataFrame | None = None, table: pd.DataFrame | None = None) -> list:
    """The problems ("bad") and warnings ("warn") the report's diagnostics find in a fit and its choice of K.

    As (level, text), from the fit (:func:`diagnostics`, on ``table``, the comparison table of ``tree``,
    computed if not given) and the choice-of-K table (:func:`selection_findings`): what the report lists
    beside the warnings raised while the fit ran and its plots' problems.
    """
    own, of_choice = fit_findings_apart(tree, selection, table)
    return own + of_choice


def fit_findings_apart(tree, selection: pd.DataFrame | None = None,
                       table: pd.DataFrame | None = None) -> tuple[list, list]:
    """:func:`fit_findings` in two lists: the fit's own, and its choice of K's (the same for every K fitted from it)."""
    table = dataset_to_frame(compare_dataset(tree)) if table is None else table
    return [f for f in diagnostics(tree, table) if f[0] != "ok"], selection_findings(selection, tree)


def _converged_finals(tree) -> np.ndarray:
    """Final objectives of the restarts that settled, of the estimate's kind: the runs ``n_maxima`` counts.

    Those continued to convergence and, when the short runs were on the same rows (not a Dask fit's sample or
    the search sample of many rows, whose objective is another sum), those stopped by the screening's rule; not
    those stopped at max_iter; degenerate and spurious as the estimate's restart is.
    """
    stats = tree[EM_SAMPLE_STATS].to_dataset()
    attrs = tree["em"].attrs
    keep = np.ones(stats.sizes["restart"], dtype=bool)
    best = int(attrs.get("best_restart", -1))
    wanted = {"converged": True, "degenerate": False}
    if "sample" in tree[OBSERVED_DATA].attrs or searched_a_sample(attrs):
        wanted["continued"] = True
    if 0 <= best < keep.size:  # the estimate's kind
        wanted.update({name: bool(stats[name].values[best]) for name in ("degenerate", "spurious") if name in stats})
    for name, value in wanted.items():
        if name in stats:
            keep &= stats[name].values == value
    return stats["final_objective"].values[keep]


def run_warnings(tree) -> list[tuple[str, str]]:
    """The warnings raised while a workflow produced the container, as findings naming the stage.

    A stage names the model, the K and the method (``"K=3, NUTS"``); warnings of the choice of K name
    their K and method in the message (``"select_k, K=4, NUTS: ..."``).
    """
    # a damaged record is refused where the container is read (check_tree)
    return [("warn", recorded_warning_line(w)) for w in recorded_warnings(tree)]


def selection_findings(selection: pd.DataFrame | None, tree=None) -> list[tuple[str, str]]:
    """Problems of the fits behind a choice-of-K table, one finding per K and method.

    With the result ``tree`` (an EM fit of one of the table's K), also whether the table's fit of that K reached
    the same log-likelihood: each K of the choice has its own seed, and where EM's maximum depends on the start
    (several maxima, or a run stopped at ``max_iter``) the two differ, which the report must say.
    """
    if selection is None:
        return []
    findings = []
    method = {"mle": "em", "map": "map"}.get(tree["em"].attrs.get("method")) if tree is not None and \
        "em" in tree.children else None
    # the table's own record of its EM method (select_k's attrs): a table read from a file has none
    if method in selection.attrs.get("methods", ()) and "log_likelihood" in selection:
        k = int(tree["em/estimate"].sizes["component"])
        fitted = float(tree["em"].attrs["log_likelihood"])
        listed = float(selection["log_likelihood"].get(k, np.nan))
        if np.isfinite(listed) and abs(listed - fitted) > 1e-6 * max(1.0, abs(fitted)):
            findings.append(("warn", f"Choice of K, K={k}: its fit there reached log-likelihood {listed:.6g}, this "
                                     f"fit {fitted:.6g}; each K's fit has its own seed, and EM's maximum depends on "
                                     "the start here (several maxima, or a run stopped at max_iter): more starts "
                                     "(n_init) or iterations (max_iter) make them agree."))
    for k, row in selection.iterrows():
        em = []
        if "converged" in row and pd.notna(row["converged"]) and not bool(row["converged"]):
            em.append("did not converge")
        if "degenerate" in row and pd.notna(row["degenerate"]) and bool(row["degenerate"]):
            em.append("has a collapsed component")
        elif "spurious" in row and pd.notna(row["spurious"]) and bool(row["spurious"]):
            em.append("has a spurious component (a few points close together or near a subspace)")
        few = not em and "few_rows" in row and pd.notna(row["few_rows"]) and bool(row["few_rows"])
        if few:  # the held-out log-likelihood keeps such a K: only the in-sample criteria are unreliable
            findings.append(("warn", f"Choice of K, K={k}, EM: has a component of fewer observations than its "
                                     "parameters; its BIC, AIC and ICL are unreliable (the held-out log-likelihood "
                                     "keeps it)."))
        elif em:
            findings.append(("bad", f"Choice of K, K={k}, EM: {' and '.join(em)}; its criteria are unreliable."))
        nuts, bad = [], False  # graded as the fit's own: R-hat and divergences problems, ESS and Pareto k warnings
        if pd.notna(row.get("max_rhat", np.nan)) and row["max_rhat"] > 1.01:
            nuts.append(f"max R-hat {format_rhat(row['max_rhat'])} > {RHAT_MAX}")
            bad = True
        for column, label in (("min_ess_bulk", "bulk"), ("min_ess_tail", "tail")):
            if low_ess(row, label):  # the ESS is the chains' total; the bound is per chain
                nuts.append(f"low {label} ESS (min {format_ess(row[column])} over its chains, under "
                            f"{ESS_PER_CHAIN_MIN} per chain)")
        if pd.notna(row.get("divergences", np.nan)) and row["divergences"] > 0:
            nuts.append(counted(int(row["divergences"]), "divergent transition"))
            bad = True
        if pd.notna(row.get("pareto_k_warning", np.nan)) and bool(row["pareto_k_warning"]):
            nuts.append(_pareto_k_text(row))
        if nuts:
            findings.append(("bad" if bad else "warn", f"Choice of K, K={k}, NUTS: {'; '.join(nuts)}."))
    return findings


def _pareto_k_text(row) -> str:
    """A choice-of-K row's unreliable PSIS-LOO: how many rows, the largest Pareto k, and what to do.

    Above 0.7 more draws do not help (the importance ratios' distribution has too thick a tail: Vehtari et al.,
    *Pareto smoothed importance sampling*, JMLR 2024); below it, above arviz_stats' smaller threshold for few draws
    (``min(1 - 1 / log10(S), 0.7)``), more draws do.
    """
    largest, high = row.get("max_pareto_k", np.nan), row.get("n_high_pareto_k", np.nan)
    if pd.isna(largest):  # a table written without them
        return "high Pareto k (PSIS-LOO unreliable)"
    rows = f" at {counted(int(high), 'row')}" if pd.notna(high) and high > 0 else ""
    remedy = ("more draws do not mend it: compare K by the held-out log-likelihood (K-fold cross-validation) "
              "instead" if largest > LOO_MORE_DRAWS_K else "more draws settle it")
    return (f"PSIS-LOO unreliable: Pareto k above the threshold for its draws{rows}, up to "
            f"{format_above(largest, LOO_MORE_DRAWS_K)} ({remedy})")


def low_ess(row, label: str) -> bool:
    """Whether a choice-of-K row's NUTS fit has a low ESS: the sampler's own flag (its warning)."""
    flag = row.get(f"low_ess_{label}", np.nan)
    if pd.notna(flag):
        return bool(flag)
    value = row.get(f"min_ess_{label}", np.nan)  # a table written without the flags: the default 4 chains
    return bool(pd.notna(value) and value < 4 * ESS_PER_CHAIN_MIN)


def _em_findings(tree) -> list[tuple[str, str]]:
    attrs, findings = tree["em"].attrs, []
    # a MAP fit is not told to become one: its prior already bounds the components
    is_map = attrs.get("method") == "map"
    prefer = "use a stronger prior" if is_map else "prefer method='map'"
    if not attrs.get("converged", 1):
        findings.append(("bad", f"EM did not converge in {attrs.get('max_iter')} iterations."))
    if attrs.get("collapsed_components", "[]") not in ("[]", ""):
        collapsed = len(_components(attrs, "collapsed_components"))
        findings.append(("bad", f"EM: {agreeing(collapsed, 'component')} {attrs['collapsed_components']} collapsed "
                                f"onto few points (singular covariance); {prefer}."))
    if attrs.get("empty_components", "[]") not in ("[]", ""):
        empty = len(_components(attrs, "empty_components"))
        findings.append(("bad", f"EM: {agreeing(empty, 'component')} {attrs['empty_components']} "
                                f"{agreeing(empty, 'is', 'are')} empty (weight zero): start from other parameters, or "
                                "use fewer components."))
    spurious = _components(attrs, "spurious_components")
    if spurious:
        findings.append(("bad", f"EM: {agreeing(len(spurious), 'component')} {spurious} "
                                f"{agreeing(len(spurious), 'is', 'are')} spurious (fitted to a few points close "
                                "together or near a lower-dimensional subspace), and no start found a sound maximum: "
                                f"the estimate and its standard errors describe that artefact. {prefer.capitalize()}, "
                                "fewer components, or more starts."))
    pairs = _components(attrs, "duplicate_components")
    if pairs:
        findings.append(("warn", f"EM: components {pairs_text(pairs)} have the same "
                                 "parameters: the fit is one of fewer distinct components, with their likelihood; "
                                 "compare fewer components, or try more starts."))
    if attrs.get("degenerate", 0):
        fewer = " or fewer components" if tree[EM_ESTIMATE].sizes.get("component", 1) > 1 else ""
        findings.append(("bad", "EM: every restart ended degenerate (a component collapsed or emptied); the "
                                f"estimate is one of them. {prefer.capitalize()}{fewer}."))
        return findings  # its restarts' values are of an unbounded likelihood: no multimodality to speak of
    return findings + _restart_findings(tree)


def _restart_findings(tree) -> list[tuple[str, str]]:
    """EM's restarts at optima apart by more than a thousandth of the objective: a multimodal likelihood."""
    attrs = tree["em"].attrs
    finals = _converged_finals(tree) if "sample_stats" in tree["em"].children else []
    if not (len(finals) > 1 and np.ptp(finals) > 1e-3 * max(1.0, abs(np.nanmax(finals)))
            and int(attrs.get("n_maxima", 2)) > 1):
        return []
    at_best = int(attrs.get("n_runs_at_best", 0))
    reached = "" if "n_maxima" not in attrs else (
        f" (the runs reached {attrs['n_maxima']} maxima, the best by {at_best} runs)" if at_best > 1 else
        f" (the runs reached {attrs['n_maxima']} maxima, the best by only one run: other seeds or more starts "
        "(n_init) may find a higher one)")
    objective, surface = (("log posterior density", "posterior density") if attrs.get("method") == "map" else
                          ("log-likelihood", "likelihood"))  # what the restarts maximised
    return [("warn", f"EM restarts reached different optima ({objective} from {np.nanmin(finals):.6g} to "
                     f"{np.nanmax(finals):.6g}): the {surface} is multimodal; the best is kept{reached}.")]


def too_few_draws(tree) -> int | None:
    """NUTS's draws per chain when they are too few for an ESS or R-hat (:data:`MIN_DRAWS_FOR_ESS`), else None.

    Such draws are no sample to summarise: their means and intervals say nothing of the posterior.
    """
    if "mcmc" not in available_methods(tree):
        return None
    per_chain = int(method_draws(tree, "mcmc").sizes["draw"])
    return per_chain if per_chain < MIN_DRAWS_FOR_ESS else None


def too_few_draws_text(per_chain: int) -> str:
    """Why a sample of ``per_chain`` draws per chain is not judged (the sampler's warning says the same)."""
    return (f"{counted(per_chain, 'draw')} per chain, too few to compute R-hat or ESS (they need at least "
            f"{MIN_DRAWS_FOR_ESS}): the draws are no sample to summarise, and their means and intervals say nothing")


def _mcmc_findings(summary: dict) -> list[tuple[str, str]]:
    # no R-hat nor ESS to judge: a problem, not a missing warning
    if summary.get("draws per chain", MIN_DRAWS_FOR_ESS) < MIN_DRAWS_FOR_ESS:
        return [("bad", f"MCMC: {too_few_draws_text(summary['draws per chain'])}; run more draws.")] + (
            [("bad", f"MCMC: {counted(int(summary['divergences']), 'divergent transition')}.")]
            if summary.get("divergences", 0) else [])
    findings = []
    several = "," in str(summary.get("chains that cross", ""))
    crossing = (f" Chain{'s' if several else ''} {summary['chains that cross']} move{'' if several else 's'} between "
                f"places that {'their' if several else 'its'} own windows of "
                f"{summary.get('crossing window (draws)', CROSSING_WINDOW)} draws do not share: the chains visit the "
                "same places but cross between them "
                "slowly, so R-hat measures how unevenly they share their time; more draws settle it."
                if "chains that cross" in summary else "")
    if "modes" in summary:
        findings.append(("warn", f"MCMC: the chains fall into {summary['modes']} modes (see Modes): the "
                                 "per-mode summaries and the draws stacked over modes answer, not the mean over "
                                 "all chains."))
        if summary["max R-hat within modes"] > 1.01:
            worst = format_rhat(summary["max R-hat within modes"])
            which = "; ".join(summary.get("modes that disagree") or ["chains of one mode disagree"])
            findings.append(("bad", f"MCMC: max R-hat within a mode {worst} > 1.01: {which}." + crossing))
    elif summary.get(halves := "max R-hat of the chain's halves", 1.0) > 1.01:
        findings.append(("bad", f"MCMC: max R-hat {format_rhat(summary[halves])} > 1.01 "
                                "between the halves of the one chain: they disagree, and one chain cannot show whether "
                                "others would agree; run several chains, and more draws."))
    elif summary.get("max R-hat", 1.0) > 1.01:
        findings.append(("bad", f"MCMC: max R-hat {format_rhat(summary['max R-hat'])} > 1.01: chains disagree "
                                + ("(they fall into 1 mode)." + crossing if crossing else
                                   "(non-convergence or label switching).")))
    for label in ("bulk", "tail"):
        if summary.get(f"low {label} ESS"):
            bound = ("100 per chain of its mode" if "modes" in summary else
                     f"{ESS_PER_CHAIN_MIN * summary['chains']} ({ESS_PER_CHAIN_MIN} per chain)")
            findings.append(("warn", f"MCMC: min {label} ESS {format_ess(summary[f'min {label} ESS'])} below {bound}."))
    if summary.get("divergences", 0):
        findings.append(("bad", f"MCMC: {counted(int(summary['divergences']), 'divergent transition')}."))
    return findings


def _rank_findings(tree) -> list[tuple[str, str]]:
    """The rank plots' uniformity test as a finding (:mod:`mixflow.present.rank_test`)."""
    found = mcmc_rank_finding(tree)
    return [] if found is None else [("bad", f"MCMC rank plots: {found}.")]


def _comparison_findings(table: pd.DataFrame, variant: str | None = None,
                         nuts_settled: bool = True) -> list[tuple[str, str]]:
    """EM outside the intervals, ADVI against NUTS, and the agreement of hard labels.

    ADVI is measured against NUTS; where NUTS has findings of its own (``nuts_settled`` False: chains that
    disagree, few effective draws, divergences), the differences are as much NUTS's as ADVI's, and are said so.
    """
    findings = []
    caveat = "" if nuts_settled else (" NUTS, the reference, has problems of its own (above): part of the difference "
                                      "may be NUTS's")
    outside = table[(table["method"].isin(["mcmc", "advi"])) & (table["em_inside"] == False)]  # noqa: E712
    if len(outside):
        columns = element_columns(table)
        names = sorted({_element(row, columns) + f" ({row['method']})" for _, row in outside.iterrows()})
        more = " ..." if len(names) > 8 else ""
        narrow = (" Mean-field ADVI's intervals are typically too narrow (it underestimates the posterior sds): "
                  "compare the bootstrap's or NUTS's before reading these as EM's." if variant == "meanfield"
                  and (outside["method"] == "advi").any() else "")
        findings.append(("warn", f"The EM point lies outside the {table.attrs['ci_prob']:.0%} interval for "
                                 f"{counted(len(names), 'parameter')}: {', '.join(names[:8])}{more}.{narrow}"))
    advi = table[table["method"] == "advi"]
    far = advi[advi["distance_to_mcmc"].abs() > 1]
    if len(far):
        findings.append(("warn", f"ADVI is more than one NUTS sd from NUTS for {counted(len(far), 'parameter')}, up to "
                                 f"{advi['distance_to_mcmc'].abs().max():.2g} sd.{caveat}"))
    low, high = ADVI_SD_RATIO
    narrow = advi[advi["sd_ratio_to_mcmc"] < low]
    if len(narrow):
        typical = "; typical of mean-field VI" if variant == "meanfield" and nuts_settled else ""
        findings.append(("warn", f"ADVI ({variant or 'variational'}) underestimates the posterior sd (ratio < {low}) "
                                 f"for {counted(len(narrow), 'parameter')}, down to "
                                 f"{advi['sd_ratio_to_mcmc'].min():.2f}{typical}.{caveat}"))
    wide = advi[advi["sd_ratio_to_mcmc"] > high]
    if len(wide):
        findings.append(("warn", f"ADVI ({variant or 'variational'}) overestimates the posterior sd (ratio > {high}) "
                                 f"for {counted(len(wide), 'parameter')}, up to "
                                 f"{advi['sd_ratio_to_mcmc'].max():.2f}.{caveat}"))
    agreement = agreement_of(table)
    clusters = agreement.attrs.get("clusters", {})
    single = [m for m in agreement.index if clusters.get(m) == 1]
    if single and len(single) < len(agreement.index):  # the index says nothing of a pair with a one-cluster labelling
        others = ", ".join(f"{METHOD_LABELS[m]}'s {clusters[m]}" for m in agreement.index if m not in single)
        findings.append(("warn", f"The hard labels of {' and '.join(METHOD_LABELS[m] for m in single)} put every row "
                                 f"in one component (against {others}): the adjusted Rand index against such a "
                                 "labelling is 0 whatever the other is, so it does not measure how far they agree; "
                                 "compare the responsibilities instead."))
    findings += [(level, text) for level, text in label_agreement_findings(table) if level == "warn"]
    return findings


def label_agreement_findings(table: pd.DataFrame) -> list[tuple[str, str]]:
    """What the hard labels of each pair of methods that agree less than excellently say, as (level, text).

    Pairs whose adjusted Rand index is below 0.9 (Steinley 2004: above 0.9 excellent, 0.8 good, 0.65 moderate,
    below poor; 0 is chance), neither of them a one-cluster labelling: "warn" where they differ on rows one of
    the methods places confidently (:data:`mixflow.present.compare.CONFIDENT_RESPONSIBILITY`), naming how many and
    some of them; "info" where every row they differ on is one neither places confidently: rows on the boundary
    between components, the clustering's own ambiguity rather than a disagreement of the methods. A table without
    the rows' record (``attrs["label_differences"]``) is judged on the index alone, a "warn".
    """
    agreement = agreement_of(table)
    clusters, differences = agreement.attrs.get("clusters", {}), agreement.attrs.get("differences", {})
    single = {m for m in agreement.index if clusters.get(m) == 1}
    found = []
    for i, a in enumerate(agreement.index):
        for b in agreement.columns[i + 1:]:
            value = agreement.loc[a, b]
            if value >= 0.9 or a in single or b in single:
                continue
            record = differences.get(a, {}).get(b) or differences.get(b, {}).get(a)  # keyed by method either way
            found.append(_labels_differ(a, b, value, record))
    return found


def _labels_differ(a: str, b: str, value: float, record) -> tuple[str, str]:
    """One pair's finding: a warning where rows one method places confidently differ, else information."""
    pair = f"{METHOD_LABELS[a]} and {METHOD_LABELS[b]}"
    degree = ("only moderately" if value >= 0.65 else "poorly" if value >= 0.2 else
              "hardly at all (0 is the agreement of random labels)")
    if record is None:
        different = "" if value >= 0.2 else ": the methods describe different clusterings"
        return "warn", f"Hard labels of {pair} agree {degree}{different} (adjusted Rand index {value:.2f})."
    unit = "observations (by frequency weight)" if record.get("weighted") else "rows"
    count = f"{_count(record['rows'])} of {_count(record['total'])} {unit}"
    bound = f"{CONFIDENT_RESPONSIBILITY:.2f}"
    top = record["top"]
    if not record["confident"]:
        return "info", (f"Hard labels of {pair} differ on {count} (adjusted Rand index {value:.2f}), all near the "
                        "boundary between components (the most probable component's responsibility at most "
                        f"{top[a]:.2f} under {METHOD_LABELS[a]}, {top[b]:.2f} under {METHOD_LABELS[b]}; neither "
                        f"method reaches {bound} on them): the clustering's own ambiguity, not a disagreement of the "
                        "methods.")
    by = record["confident_by"]
    who = "; ".join(f"{METHOD_LABELS[m]} {_count(by[m])}, up to {top[m]:.2f}" for m in (a, b) if by[m])
    rest = record["rows"] - record["confident"]
    others = f"; the other {_count(rest)} neither places confidently" if rest > 0 else ""
    examples = ", ".join(record["examples"]) + (" ..." if record["confident"] > len(record["examples"]) else "")
    return "warn", (f"Hard labels of {pair} agree {degree} (adjusted Rand index {value:.2f}): they differ on "
                    f"{count}, {_count(record['confident'])} of them placed confidently by one method (most "
                    f"probable component's responsibility at least {bound}: {who}), rows {examples}{others}: there "
                    "the methods describe different clusterings; compare their estimates and responsibilities.")


def _count(value: float) -> str:
    """A count of rows, whole where it is (frequency weights may be fractions)."""
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.4g}"


def _element(row, columns) -> str:
    """``covariance[1, x, x]``, as the warnings name entries."""
    index = [str(row[c]) for c in columns if c in row and pd.notna(row[c])]
    return row["parameter"] + (f"[{', '.join(index)}]" if index else "")


def provenance_rows(tree) -> list[tuple[str, object]]:
    """Seed, dates, data name and library versions recorded in the container."""
    attrs = tree.attrs
    first = [(key, attrs[key]) for key in ("data_name", "random_seed", "created_at", "mixflow_version")
             if key in attrs]
    versions = sorted((key, value) for key, value in attrs.items()
                      if key.endswith("_version") and key != "mixflow_version")
    extra = [("bootstrap random_seed", tree[EM_BOOTSTRAP].attrs["random_seed"])] if "bootstrap" in \
        available_methods(tree) else []
    return first + extra + versions + [("model (JSON)", attrs.get("model", ""))]
