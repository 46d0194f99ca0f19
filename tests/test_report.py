"""The HTML report: every section, self-contained, written atomically."""

import importlib
import re

import matplotlib
import pandas as pd
import pytest
from test_compare import make_container

from mixflow.analysis.select import SKIPPED_FEW_ROWS
from mixflow.present.compare import agreement_of
from mixflow.present.report.page import SECTIONS, report

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def full():
    return make_container(("em", "mcmc", "advi"), with_bootstrap=True, draws=30)


def test_report_contains_every_section_and_is_self_contained(tmp_path, full):
    selection = pd.DataFrame({"bic": [10.0, 8.0], "aic": [9.0, 7.0], "icl": [10.0, 8.5]},
                             index=pd.Index([1, 2], name="k"))
    selection.attrs["preferred"] = {"bic": 2}
    path = report(full, tmp_path / "report.html", selection=selection, title="Two clusters")
    text = path.read_text(encoding="utf-8")
    for section in SECTIONS:
        assert f'<section id="{section}">' in text, section
    for plot in ("data", "forest", "posteriors", "trace", "rank", "ppc", "convergence", "select_k"):
        assert f'id="plot-{plot}"' in text, plot
    assert text.count('src="data:image/png;base64,') == 8
    assert not re.search(r'(src|href)="(https?:)?//', text)  # nothing fetched from the network
    assert "<title>Two clusters</title>" in text
    for expected in ("MCMC (NUTS)", "ADVI", "EM bootstrap", "adjusted Rand index", "random_seed", "numpy_version",
                     "Prior as declared", "Prior as used"):
        assert expected in text, expected
    # the entries counted are the table's (every weight, not the K - 1 free ones): said as entries, not parameters
    assert re.search(r"<td>\d+ of \d+ entries \(each distinct entry of weights, mu, covariance\)</td>", text)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]  # no temporary file left


def test_report_of_an_em_fit_alone(tmp_path):
    path = report(make_container(("em",)), tmp_path / "em.html")
    text = path.read_text(encoding="utf-8")
    assert all(f'<section id="{section}">' in text for section in SECTIONS)
    assert 'id="plot-trace"' not in text and 'id="plot-forest"' in text


def test_figures_the_caller_holds_open_raise_no_warning_while_the_report_draws():
    """matplotlib warns when a 21st figure opens; the report closes each figure it draws, so that warning would be
    of the caller's figures, and a workflow run counted it among its own warnings as other tests left figures open."""
    import warnings

    import matplotlib.pyplot as plt

    from mixflow.present.report.page import render_plots

    plt.close("all")  # figures other tests left open in this process
    held = [plt.figure() for _ in range(20)]  # the warning comes as the 21st opens
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rendered = render_plots(make_container(("em",)))
        assert rendered and all(isinstance(png, bytes) for png in rendered.values())
        assert not [w for w in caught if "figures have been opened" in str(w.message)]
        assert plt.get_fignums() == [figure.number for figure in held]  # its own closed, the caller's kept
    finally:
        for figure in held:
            plt.close(figure)


def test_report_replaces_an_existing_file_only_when_complete(tmp_path, monkeypatch, full, no_report_plots):
    path = tmp_path / "report.html"
    path.write_text("old")

    def broken(*args, **kwargs):
        raise OSError("disk full")

    # the module object itself: once exported, ``mixflow.present.report.page`` names the function
    monkeypatch.setattr(importlib.import_module("mixflow.present.report.page").os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        report(make_container(("em",)), path)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_bad_arguments(tmp_path, full):
    with pytest.raises(ValueError, match=r"path: expected a file name ending in .html, got '.*report.txt'"):
        report(full, tmp_path / "report.txt")
    with pytest.raises(FileNotFoundError, match="path: expected a file in an existing directory"):
        report(full, tmp_path / "missing" / "report.html")
    with pytest.raises(TypeError, match="path: expected a file path"):
        report(full, None)
    with pytest.raises(TypeError, match="selection: expected None or the DataFrame from mixflow.select_k"):
        report(full, tmp_path / "r.html", selection={"bic": 1})
    with pytest.raises(TypeError, match="title: expected None or a str, got int"):
        report(full, tmp_path / "r.html", title=3)
    with pytest.raises(TypeError, match="tree: expected a mixflow result"):
        report("tree.nc", tmp_path / "r.html")


@pytest.mark.slow
def test_report_of_a_real_fit_by_em_mcmc_and_advi(tmp_path):
    import numpy as np

    import mixflow
    from mixflow.analysis.bootstrap import bootstrap
    from mixflow.present.compare import compare

    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal(-2, 0.6, 40), rng.normal(2, 0.8, 60)])
    tree = mixflow.fit(mixflow.GaussianMixture(2), x, method=["map", "mcmc", "advi"], random_seed=3, draws=200,
                       tune=200, chains=2, sampler="pymc", progressbar=False, data_name="simulated")
    tree = bootstrap(tree, n_replicates=20, random_seed=4)
    table = compare(tree)
    assert set(table["method"]) == {"em", "bootstrap", "mcmc", "advi"}
    assert table.loc[table.method == "mcmc", "em_inside"].all()
    assert (agreement_of(table).to_numpy() > 0.9).all()
    text = report(tree, tmp_path / "real.html").read_text(encoding="utf-8")
    assert text.count('src="data:image/png;base64,') == 7
    assert "could not be drawn" not in text
    # each method's wall time in parts, compiling the model first (minutes where PyTensor's cache lacked the structure)
    assert re.search(r"wall time</t[hd]>\s*<td>[^<]* s: [^<]* s compiling \(or loading\) the model, [^<]* s tuning "
                     r"and sampling(, [^<]* s the rest)?</td>", text)
    assert re.search(r"wall time</t[hd]>\s*<td>[^<]* s: [^<]* s compiling \(or loading\) the model, [^<]* s "
                     r"optimising</td>", text)


def test_a_wall_time_says_what_part_of_it_compiled_the_model():
    from mixflow.present.report.cards import _wall_time

    assert _wall_time(105.4, 103.9, "the rest", ((0.39, "tuning and sampling"),)) == (
        "1 min 45 s: 1 min 44 s compiling (or loading) the model, 0.4 s tuning and sampling, 1.1 s the rest")
    assert _wall_time(4.4, 0.9, "optimising") == "4.4 s: 0.9 s compiling (or loading) the model, 3.5 s optimising"
    assert _wall_time(4.4, None, "optimising") == "4.4 s"  # a container from before compile times were recorded


def _diagnostics_items(text: str) -> list[str]:
    section = text[text.index('<section id="diagnostics">'):text.index('<section id="model">')]
    return re.findall(r"<li class=\"\w+\">(.*?)</li>", section)


def test_choice_of_k_problems_disagreement_and_run_warnings_are_reported(tmp_path, full, no_report_plots):
    import json

    from mixflow.container.layout import RUN_WARNINGS

    selection = pd.DataFrame({"bic": [10.0, 8.0, 9.0], "aic": [9.0, 7.0, 6.0], "icl": [10.0, 8.5, 9.5],
                              "converged": [True, True, False], "degenerate": [False, False, True],
                              "max_rhat": [1.0, 1.002, 1.05], "min_ess_bulk": [900.0, 800.0, 150.0],
                              "min_ess_tail": [900.0, 300.0, 120.0], "low_ess_bulk": [False, False, True],
                              "low_ess_tail": [False, True, True], "divergences": [0, 0, 3],
                              "pareto_k_warning": [False, False, True]}, index=pd.Index([1, 2, 3], name="k"))
    selection.attrs["preferred"] = {"bic": 2, "aic": 3, "icl": 2}
    tree = full.copy(deep=True)
    tree.attrs[RUN_WARNINGS] = json.dumps([{"stage": "K=2, NUTS", "category": "SamplingWarning",
                                            "message": "MCMC diagnostics: 2 divergent transitions after tuning."}])
    text = report(tree, tmp_path / "r.html", selection=selection).read_text(encoding="utf-8")
    items = _diagnostics_items(text)
    assert "Choice of K, K=3, EM: did not converge and has a collapsed component; its criteria are unreliable." \
        in items
    assert ("Choice of K, K=3, NUTS: max R-hat 1.050 &gt; 1.01; low bulk ESS (min 150 over its chains, under 100 per "
            "chain); low tail ESS (min 120 over its chains, under 100 per chain); 3 divergent transitions; high "
            "Pareto k (PSIS-LOO unreliable).") in items
    assert "Choice of K, K=2, NUTS: low tail ESS (min 300 over its chains, under 100 per chain)." in items
    assert "[K=2, NUTS] SamplingWarning: MCMC diagnostics: 2 divergent transitions after tuning." in items
    assert "No problems found" not in text
    summary = text[text.index('<section id="summary">'):text.index('<section id="diagnostics">')]
    assert ("the criteria disagree: BIC, ICL prefer K = 2; AIC prefers K = 3; the EM fit at K = 3 did not converge "
            "(its criteria are unreliable); this report is of K = 2") in summary
    fits = text[text.index('<section id="fits">'):text.index('<section id="comparison">')]
    assert '<div class="scroll"><table' in fits and "max_rhat" in fits and "converged" in fits


def test_no_problems_found_only_when_nothing_was_flagged(tmp_path):
    from mixflow.present.report.page import choice_of_k_text

    tree = make_container(("em",))
    text = report(tree, tmp_path / "r.html").read_text(encoding="utf-8")
    assert _diagnostics_items(text) == ["No problems found."]
    selection = pd.DataFrame({"bic": [10.0, 8.0], "converged": [True, False]}, index=pd.Index([1, 2], name="k"))
    text = report(tree, tmp_path / "r.html", selection=selection).read_text(encoding="utf-8")
    assert "No problems found" not in text
    assert choice_of_k_text(selection) == ("every criterion (BIC) prefers K = 2; the EM fit at K = 2 did not converge "
                                           "(its criteria are unreliable)")  # attrs lost: read from the table
    # the K the EM criteria skipped are said where their preference is
    skipping = pd.DataFrame({"bic": [10.0, 9.0, 8.0], "converged": [True, True, True],
                             "degenerate": [False, True, False], "spurious": [False, False, True],
                             "skipped": ["", "degenerate EM fit", "spurious EM fit"]},
                            index=pd.Index([1, 2, 3], name="k"))
    assert choice_of_k_text(skipping) == ("every criterion (BIC) prefers K = 1; K = 2, 3 skipped by the EM criteria "
                                          "(degenerate or spurious fits)")
    # and the K the held-out log-likelihood alone skipped (a degenerate fold's fit): its preference rests on the rest
    held_out = skipping.assign(cv_log_likelihood=[-275.4, -111.8, -90.0], cv_flagged_folds=[0, 1, 4])
    assert choice_of_k_text(held_out) == ("every criterion (BIC, held-out log-likelihood) prefers K = 1; K = 2, 3 "
                                          "skipped by the EM criteria (degenerate or spurious fits)")
    held_out["skipped"], held_out["degenerate"] = ["", "", "spurious EM fit"], False
    assert choice_of_k_text(held_out) == ("the criteria disagree: held-out log-likelihood prefers K = 1; BIC prefers "
                                          "K = 2; K = 3 skipped by the EM criteria (degenerate or spurious fits); "
                                          "K = 2 skipped by the held-out log-likelihood (a cross-validation fold's "
                                          "fit degenerate or spurious)")
    # a K skipped for a component of fewer rows than its parameters is said apart from the flawed fits
    few = skipping.assign(spurious=False, few_rows=[False, False, True],
                          skipped=["", "degenerate EM fit", SKIPPED_FEW_ROWS])
    few.loc[4] = [7.0, True, False, False, SKIPPED_FEW_ROWS, True]
    assert choice_of_k_text(few) == ("every criterion (BIC) prefers K = 1; K = 2 skipped by the EM criteria "
                                     "(degenerate or spurious fits); K = 3, 4 skipped by BIC, AIC and ICL (a component "
                                     "on fewer rows than its parameters)")
    # the held-out log-likelihood keeps such a K: a fold's flawed fit there is still said of it
    folds = few.assign(cv_log_likelihood=[-9.0, -8.0, -7.0, -6.5], cv_flagged_folds=[0, 0, 1, 0])
    assert choice_of_k_text(folds).endswith("K = 3 skipped by the held-out log-likelihood (a cross-validation fold's "
                                            "fit degenerate or spurious)")
    assert "held-out log-likelihood prefers K = 4" in choice_of_k_text(folds)
    # PSIS-LOO's preference is said with the K where its Pareto k was high
    loo = pd.DataFrame({"bic": [10.0, 8.0, 9.0], "elpd_loo": [-9.0, -8.0, -7.0],
                        "pareto_k_warning": [True, False, True]}, index=pd.Index([1, 2, 3], name="k"))
    assert choice_of_k_text(loo) == ("the criteria disagree: BIC prefers K = 2; PSIS-LOO prefers K = 3; PSIS-LOO is "
                                     "unreliable (high Pareto k) at K = 1, 3")
    loo["pareto_k_warning"] = True
    assert choice_of_k_text(loo, 2).endswith("PSIS-LOO is unreliable (high Pareto k) at every K; this report is of "
                                             "K = 2")
    loo["pareto_k_warning"] = False
    assert "unreliable" not in choice_of_k_text(loo)
    # and with the K where NUTS did not converge: R-hat above 1.01, or a bulk ESS the sampler flagged
    loo["max_rhat"], loo["min_ess_bulk"], loo["low_ess_bulk"] = [1.005, 1.389, 1.0], [380.0, 5.9, 40.0], [False, True,
                                                                                                           True]
    assert choice_of_k_text(loo) == ("the criteria disagree: BIC prefers K = 2; PSIS-LOO prefers K = 3; NUTS did not "
                                     "converge (R-hat above 1.01, or too few effective draws) at K = 2 (R-hat 1.389, "
                                     "bulk ESS 6), 3 (R-hat 1.000, bulk ESS 40): PSIS-LOO there is unreliable (more "
                                     "draws, or see the diagnostics)")
    # a table written without the flags: the diagnostics' default bound (400 for 4 chains), as they judge it
    assert choice_of_k_text(loo.drop(columns="low_ess_bulk")).endswith(
        "at K = 1 (R-hat 1.005, bulk ESS 380), 2 (R-hat 1.389, bulk ESS 6), 3 (R-hat 1.000, bulk ESS 40): PSIS-LOO "
        "there is unreliable (more draws, or see the diagnostics)")
    loo["low_ess_bulk"] = False
    assert "did not converge" not in choice_of_k_text(loo.assign(max_rhat=[1.005, 1.009, 1.0]))
    assert "did not converge" not in choice_of_k_text(loo.drop(columns="elpd_loo"))  # no PSIS-LOO: not its caveat


def test_the_advi_sd_warning_names_mean_field_only_for_a_mean_field_fit():
    from mixflow.present.report.cards import _comparison_findings

    table = pd.DataFrame({"method": ["advi"], "parameter": ["mu"], "em_inside": [True], "distance_to_mcmc": [0.1],
                          "sd_ratio_to_mcmc": [0.5]})
    table.attrs.update(ci_prob=0.94, label_agreement={})
    [(_, fullrank)] = _comparison_findings(table, "fullrank")
    [(_, meanfield)] = _comparison_findings(table, "meanfield")
    assert "mean-field" not in fullrank and "ADVI (fullrank) underestimates" in fullrank
    assert meanfield.endswith("typical of mean-field VI.")
    # against NUTS chains that did not converge, the sd ratio is as much NUTS's as ADVI's: said, and not put
    # down to mean-field VI
    [(_, unsettled)] = _comparison_findings(table, "meanfield", nuts_settled=False)
    assert "mean-field" not in unsettled and unsettled.endswith("part of the difference may be NUTS's")
    # too wide is a finding too, as the comparison table flags it (ratios 1.31 and 1.51 in a regression mixture)
    table = pd.DataFrame({"method": ["advi"] * 3, "parameter": ["mu"] * 3, "em_inside": [True] * 3,
                          "distance_to_mcmc": [0.1] * 3, "sd_ratio_to_mcmc": [1.31, 1.51, 1.4]})
    table.attrs.update(ci_prob=0.94, label_agreement={})
    assert _comparison_findings(table, "meanfield") == [
        ("warn", "ADVI (meanfield) overestimates the posterior sd (ratio > 1.4) for 1 parameter, up to 1.51.")]


def test_mcmc_findings_use_the_samplers_own_diagnostics(tmp_path, full):
    from mixflow.present.compare import compare
    from mixflow.present.report.cards import diagnostics

    tree = full.copy(deep=True)
    tree["mcmc"].attrs.update(max_rhat=1.2, min_ess_bulk=50.0, min_ess_tail=40.0, n_divergences=4, low_ess_bulk="[]",
                              low_ess_tail="[]")
    texts = [text for _, text in diagnostics(tree, compare(tree))]
    assert "MCMC: max R-hat 1.200 > 1.01: chains disagree (non-convergence or label switching)." in texts
    assert not [text for text in texts if "ESS" in text]  # the sampler flagged nothing
    tree["mcmc"].attrs.update(low_ess_tail='["mu"]')
    texts = [text for _, text in diagnostics(tree, compare(tree))]
    chains = tree["mcmc/posterior"].sizes["chain"]
    assert f"MCMC: min tail ESS 40 below {100 * chains} (100 per chain)." in texts
    assert "MCMC: 4 divergent transitions." in texts


def test_choice_of_k_ess_findings_are_the_samplers_own_flags():
    """The report judges a NUTS fit's ESS as its sampler warned (100 per chain): 300 from 2 chains is no finding,
    as it is none in the fit's warning; a table without the flags is judged at 100 per chain of the default 4."""
    from mixflow.present.report.cards import selection_findings

    flagged = pd.DataFrame({"min_ess_bulk": [300.0], "min_ess_tail": [300.0], "low_ess_bulk": [False],
                            "low_ess_tail": [False]}, index=pd.Index([2], name="k"))
    assert selection_findings(flagged) == []
    assert [text for _, text in selection_findings(flagged.drop(columns=["low_ess_bulk", "low_ess_tail"]))] == [
        "Choice of K, K=2, NUTS: low bulk ESS (min 300 over its chains, under 100 per chain); low tail ESS (min 300 "
        "over its chains, under 100 per chain)."]


def test_fit_cards_say_in_words_what_each_method_did(full):
    from mixflow.present.report.cards import duration, fit_summaries

    tree = full.copy(deep=True)
    tree["em"].attrs.update(converged=1, n_iter=83)
    tree["advi"].attrs.update(variant="fullrank", converged=1, n_iter=5400, wall_time=40.98934363400002)
    tree["mcmc"].attrs.update(wall_time=183.2)
    text = fit_summaries(tree)
    assert "converged after 83 iterations" in text and "settled after 5400 iterations" in text
    assert "full-rank Gaussian" in text and "<td>41 s</td>" in text and "3 min 03 s" in text
    assert "40.98934" not in text and "n_iter" not in text and "fit_time" not in text
    tree["em"].attrs.update(converged=0, max_iter=20000, n_iter=20000)
    assert "did not converge: stopped at max_iter = 20000 iterations" in fit_summaries(tree)
    # the runs made, not n_init ("best of 5" where 41 runs were made); the ELBO's window; criteria to one precision
    tree["em"].attrs.update(n_init=5, n_starts=41, init="auto", best_restart=7, best_start="random-centres",
                            bic=1324.5200001, aic=1311.5, icl=1346.4)
    tree["advi"].attrs.update(final_elbo=-664.7531, check_every=50)
    text = fit_summaries(tree)
    assert "best of 41 runs (init &#x27;auto&#x27;, n_init = 5): restart 7, from a random-centres start" in text \
        or "best of 41 runs (init 'auto', n_init = 5): restart 7, from a random-centres start" in text
    assert "1324.52 / 1311.50 / 1346.40" in text
    assert "final ELBO (mean of the last 50 iterations)" in text
    assert [duration(t) for t in (0.42, 12.4, 59.6, 61.0)] == ["0.4 s", "12 s", "60 s", "1 min 01 s"]


def test_figures_are_embedded_at_twice_their_displayed_resolution(tmp_path):
    import base64

    text = report(make_container(("em",)), tmp_path / "r.html").read_text(encoding="utf-8")
    images = re.findall(r'<img alt="[^"]*" width="(\d+)" height="(\d+)" src="data:image/png;base64,([^"]+)"', text)
    assert images
    for width, height, encoded in images:
        png = base64.b64decode(encoded)
        assert int.from_bytes(png[16:20], "big") // 2 == int(width)
        assert int.from_bytes(png[20:24], "big") // 2 == int(height)


def test_comparison_cells_round_to_the_sd_and_show_a_standard_deviation_beside_a_variance():
    from mixflow.present.report.page import _cell

    row = pd.Series({"parameter": "covariance", "component": 0, "feature": "velocity", "feature_": "velocity",
                     "estimate": 366_900.0, "sd": 12_000.0, "lower": 341_234.0, "upper": 390_876.0})
    cell = _cell(row, "mcmc")
    assert cell.startswith("367,000 (12,000)<br><small>[341,000, 391,000]</small>")
    assert "<small>sd 605.7</small>" in cell  # the root's sd, by the delta method: 12,000 / (2 x 605.7) = 9.9
    # a variance of 0.241 (sd 0.062): its root 0.4909 to the precision of its own sd, 0.063
    small = row.copy()
    small.update({"estimate": 0.241, "sd": 0.062, "lower": 0.159, "upper": 0.364})
    assert _cell(small, "em").endswith("<small>sd 0.491</small>")
    mean = pd.Series({"parameter": "mu", "component": 0, "feature": "velocity", "estimate": 21437.2, "sd": 251.3,
                      "lower": float("nan"), "upper": float("nan")})
    assert _cell(mean, "em") == "21,440 (250)"


def test_bootstrap_replicates_that_did_not_converge_are_a_finding(full):
    from mixflow.present.compare import compare
    from mixflow.present.report.cards import diagnostics

    tree = full.copy(deep=True)
    tree["em/bootstrap"].attrs.update(n_failed=0, n_degenerate=0, n_not_converged=3, n_replicates=20)
    texts = [text for _, text in diagnostics(tree, compare(tree))]
    assert "Bootstrap: 0 failed, 3 not converged and 0 degenerate of 20 replicates." in texts


def test_rank_plot_failures_are_findings(full):
    import numpy as np

    from mixflow.present.compare import compare
    from mixflow.present.report.cards import _rank_findings, diagnostics

    assert _rank_findings(full) == []  # well-mixed chains
    tree = full.copy(deep=True)
    posterior = tree["mcmc/posterior"].to_dataset()
    shifted = posterior["mu"] + _chain_offset(posterior, 5 * float(posterior["mu"].std()))
    tree["mcmc/posterior"] = posterior.assign(mu=shifted)
    texts = [text for _, text in diagnostics(tree, compare(tree))]
    assert any(t.startswith("MCMC rank plots: the chains' ranks are not uniform for mu (smallest p = ") for t in texts)
    assert np.isfinite(shifted.values).all()


def test_the_rank_test_is_computed_once_per_draws(full, monkeypatch):
    # a workflow lists a fit's findings and its report lists them again: the thinned rank test (the costly
    # finding) runs once for the same draws, again for other draws or another level
    from arviz_base import rc_context

    from mixflow.container.read import method_draws
    from mixflow.present import rank_test

    computed = []
    finding = rank_test._finding
    monkeypatch.setattr(rank_test, "_finding", lambda *args: computed.append(1) or finding(*args))
    monkeypatch.setattr(rank_test, "_found", type(rank_test._found)())
    draws = method_draws(full, "mcmc")
    assert rank_test.rank_uniformity_finding(draws) is None and len(computed) == 1
    assert rank_test.rank_uniformity_finding(method_draws(full, "mcmc")) is None and len(computed) == 1
    shifted = draws.assign(mu=draws["mu"] + _chain_offset(draws, 5 * float(draws["mu"].std())))
    assert rank_test.rank_uniformity_finding(shifted).startswith("the chains' ranks are not uniform for mu")
    assert len(computed) == 2
    with rc_context({"stats.envelope_prob": 0.9}):
        rank_test.rank_uniformity_finding(draws)
    assert len(computed) == 3


def test_a_constant_parameter_has_no_rank_p_value_and_raises_no_warning():
    # a single component's weight is 1 in every draw: no p-value, and numpy's "All-NaN" warning must not escape
    import warnings

    import numpy as np
    import xarray as xr

    from mixflow.present import rank_test

    rng = np.random.default_rng(0)
    draws = xr.Dataset({"weights": (("chain", "draw", "component"), np.ones((4, 400, 1))),
                        "mu": (("chain", "draw"), rng.normal(size=(4, 400)))})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert rank_test.rank_uniformity_finding(draws) is None
        shifted = draws.assign(mu=draws["mu"] + xr.DataArray([0.0, 0.0, 0.0, 3.0], dims="chain"))
        assert rank_test.rank_uniformity_finding(shifted).startswith("the chains' ranks are not uniform for mu "
                                                                     "(smallest p = ")


def test_autocorrelated_chains_that_mix_are_not_a_rank_finding():
    # chains of one distribution whose draws are autocorrelated (AR(1), 0.8): ArviZ's uniformity test on the
    # raw draws flagged the fit; thinned to half each chain's ESS, and at 0.01 over the parameters, it does not.
    # The same chains a third of an sd apart still are a finding.
    import numpy as np

    from mixflow.present.report.cards import _rank_findings
    from mixflow.present.summary import summary_text

    full = make_container(("em", "mcmc"), draws=1000)
    rng = np.random.default_rng(3)
    posterior = full["mcmc/posterior"].to_dataset()
    chains, draws = posterior.sizes["chain"], posterior.sizes["draw"]

    def autocorrelated(values):
        noise = rng.normal(size=values.shape) * np.sqrt(1 - 0.8 ** 2)
        for t in range(1, draws):
            noise[:, t] += 0.8 * noise[:, t - 1]
        return values.mean(("chain", "draw")) + values.std(("chain", "draw")) * values.copy(data=noise)

    tree = full.copy(deep=True)
    mixing = posterior.map(lambda v: autocorrelated(v.transpose("chain", "draw", ...)).transpose(*v.dims))
    covariance = mixing["covariance"]  # symmetric, as draws of a covariance are
    mixing["covariance"] = (covariance + covariance.rename(feature="feature_", feature_="feature")) / 2
    assert mixing.sizes["chain"] == chains
    tree["mcmc/posterior"] = mixing
    assert _rank_findings(tree) == []
    assert not any("rank plots" in line for line in summary_text(tree).splitlines())
    shifted = mixing["mu"] + _chain_offset(mixing, float(mixing["mu"].std()) / 3)
    tree["mcmc/posterior"] = mixing.assign(mu=shifted)
    [(level, text)] = _rank_findings(tree)
    assert level == "bad" and text.startswith("MCMC rank plots: the chains' ranks are not uniform for mu (")
    # the parameters counted once each: a covariance's mirrored entries are one
    k, d = mixing.sizes["component"], mixing.sizes["feature"]
    assert f"/ {k + k * d + k * d * (d + 1) // 2} parameters, the draws thinned to half their effective " in text
    # the summary says what the report says
    assert any(line.endswith(text.removeprefix("MCMC rank plots: ").rstrip(".")) for line in
               summary_text(tree).splitlines())


def test_a_trace_plot_of_many_parameters_draws_those_of_the_highest_r_hat(tmp_path, monkeypatch):
    # more than 20 rows: the report said "The trace plot could not be drawn" among the fit's warnings, and
    # showed no traces
    import mixflow.present.report.page

    every_plot = mixflow.present.report.page._report_plots
    # the trace plot alone is drawn: the page's other plots of these 26 parameters are not what is tested
    monkeypatch.setattr(mixflow.present.report.page, "_report_plots",
                        lambda *args: [plot for plot in every_plot(*args) if plot[0] == "trace"])
    tree = make_container(("em", "mcmc"), d=3)  # 2 weights, 6 means, 18 covariance entries
    text = report(tree, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "could not be drawn" not in text and 'id="plot-trace"' in text
    caption = re.search(r"MCMC traces and per-chain densities of ([^<]*)", text).group(1)
    drawn = caption.split(" (the highest R-hat first")[0].split(", ")
    assert sorted(drawn) in (["covariance", "weights"], ["mu", "weights"])
    assert "draws the rest" in caption
    import mixflow.present.plots.draws

    monkeypatch.setattr(mixflow.present.plots.draws, "TRACE_ROWS", 1)  # no parameter fits: said, not a finding
    text = report(tree, tmp_path / "s.html").read_text(encoding="utf-8")
    assert 'id="plot-trace"' not in text and "No trace plot: each parameter has more elements" in text
    assert "could not be drawn" not in text


def _chain_offset(posterior, size):
    """An offset of ``size`` times the chain's index, chain by chain."""
    return posterior["chain"] * size


def test_the_label_agreement_table_has_no_stray_header_row(tmp_path, full, no_report_plots):
    text = report(full, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "method_" not in text


def test_one_method_s_report_has_no_table_of_its_labels_agreeing_with_themselves(tmp_path, no_report_plots):
    # EM and its bootstrap: the report showed "Agreement of hard cluster labels" with one row, EM against EM, 1.0
    text = report(make_container(("em",), with_bootstrap=True), tmp_path / "r.html").read_text(encoding="utf-8")
    assert "Agreement of hard cluster labels" not in text and "label agreement (ARI)" not in text


def test_a_degenerate_fit_is_said_beside_its_log_likelihood_at_a_glance(tmp_path, no_report_plots):
    # K=40 by maximum likelihood on 50 rows read "MLE, log-likelihood 3708.4258, BIC -5073.55" at a glance, the
    # problems only counted further down
    tree = make_container(("em",))
    sound = report(tree, tmp_path / "sound.html").read_text(encoding="utf-8")
    tree["em"].attrs["degenerate"] = 1
    text = report(tree, tmp_path / "degenerate.html").read_text(encoding="utf-8")
    said = "a degenerate fit (a component collapsed onto a point or emptied): these are not the values of a sound"
    assert said in text and said not in sound


def test_a_choice_of_k_fit_that_differs_from_the_reported_fit_of_its_k_is_a_finding(full):
    """Each K's fit in a choice of K has its own seed: where its log-likelihood is not this fit's (several maxima,
    or runs stopped at max_iter), the report says so; a table of another EM method, or without its record of
    the method (read from a file), is not compared."""
    from mixflow.present.report.cards import selection_findings

    k, value = int(full["em/estimate"].sizes["component"]), float(full["em"].attrs["log_likelihood"])
    method = {"mle": "em", "map": "map"}[full["em"].attrs["method"]]
    selection = pd.DataFrame({"log_likelihood": [value - 50.0, value]}, index=pd.Index([k - 1, k], name="k"))
    selection.attrs["methods"] = [method]
    assert selection_findings(selection, full) == []
    selection.loc[k, "log_likelihood"] = value - 13.0
    [(level, text)] = selection_findings(selection, full)
    assert level == "warn" and text.startswith(f"Choice of K, K={k}: its fit there reached log-likelihood "
                                               f"{value - 13.0:.6g}, this fit {value:.6g}")
    selection.attrs["methods"] = ["map" if method == "em" else "em"]
    assert selection_findings(selection, full) == []
    selection.attrs.clear()
    assert selection_findings(selection, full) == []


def test_an_r_hat_above_the_threshold_is_never_printed_as_the_threshold():
    """1.0104 is flagged; written 1.010 it would read '1.010 > 1.01': it keeps the decimals that show it above."""
    from mixflow.engines.sampling_diagnostics import format_rhat
    from mixflow.present.report.cards import selection_findings

    assert [format_rhat(v) for v in (1.0104, 1.01, 1.0, 1.05, 1.0100004, 1.01000004)] == [
        "1.0104", "1.010", "1.000", "1.050", "1.010001", "1.010001"]
    selection = pd.DataFrame({"max_rhat": [1.0104]}, index=pd.Index([2], name="k"))
    # a problem, as the fit's own R-hat above 1.01 is (a warning where only its ESS or Pareto k is low)
    assert selection_findings(selection) == [("bad", "Choice of K, K=2, NUTS: max R-hat 1.0104 > 1.01.")]
    selection = pd.DataFrame({"low_ess_bulk": [True], "min_ess_bulk": [150.0]}, index=pd.Index([2], name="k"))
    assert [level for level, _ in selection_findings(selection)] == ["warn"]


def test_label_agreement_is_worded_by_its_size():
    # an adjusted Rand index of 0.11 (the agreement of random labels is 0) was said to "agree only moderately"
    import pandas as pd

    from mixflow.present.report.cards import _comparison_findings

    table = pd.DataFrame({"method": ["advi"], "parameter": ["mu"], "em_inside": [True], "distance_to_mcmc": [0.1],
                          "sd_ratio_to_mcmc": [1.0]})
    said = {}
    for value in (0.11, 0.5, 0.8, 0.95):
        table.attrs.update(ci_prob=0.94, label_agreement={"em": {"em": 1.0, "mcmc": value},
                                                          "mcmc": {"em": value, "mcmc": 1.0}})
        said[value] = [text for _, text in _comparison_findings(table) if "Hard labels" in text]
    assert said[0.11] == ["Hard labels of EM and MCMC (NUTS) agree hardly at all (0 is the agreement of random "
                          "labels): the methods describe different clusterings (adjusted Rand index 0.11)."]
    assert "agree poorly (adjusted Rand index 0.50)" in said[0.5][0]
    assert "agree only moderately (adjusted Rand index 0.80)" in said[0.8][0] and said[0.95] == []


def _with_responsibilities(tree, em, advi):
    """``tree`` (EM and ADVI) with the given responsibilities (obs, component) of each method."""
    tree = tree.copy()
    tree["em/responsibilities"] = tree["em/responsibilities"].to_dataset().assign(
        responsibilities=(("obs", "component"), em))
    tree["advi/responsibilities"] = tree["advi/responsibilities"].to_dataset().assign(
        responsibilities_mean=(("obs", "component"), advi))
    return tree


@pytest.fixture(scope="module")
def two_methods():
    return make_container(("em", "advi"))


def test_hard_labels_that_differ_only_on_boundary_rows_are_information_not_a_warning(tmp_path, two_methods,
                                                                                   no_report_plots):
    # a Poisson K=2 fit of the discoveries data: EM and ADVI, whose estimates differ by 0.07-0.42 NUTS sd, put the
    # six years of 6 discoveries on either side (responsibilities 0.49/0.51 and 0.52/0.48): "Hard labels of EM and
    # ADVI agree poorly (adjusted Rand index 0.64)" was warned in the summary and the report
    import numpy as np

    import mixflow
    from mixflow.present.report.cards import cross_method_findings

    em = two_methods["em/responsibilities"]["responsibilities"].values.copy()
    boundary = np.arange(0, 60, 6)  # ten rows, neither method confident of them, labelled apart
    em[boundary] = [0.52, 0.48]
    advi = em.copy()
    advi[boundary] = [0.46, 0.54]
    tree = _with_responsibilities(two_methods, em, advi)
    value = agreement_of(mixflow.compare(tree)).loc["em", "advi"]
    assert value < 0.65  # the index itself drops as far as the discoveries' did
    note = (f"Hard labels of EM and ADVI differ on 10 of 60 rows (adjusted Rand index {value:.2f}), all near the "
            "boundary between components (the most probable component's responsibility at most 0.52 under EM, 0.54 "
            "under ADVI; neither method reaches 0.75 on them): the clustering's own ambiguity, not a disagreement of "
            "the methods.")
    assert not [text for text in cross_method_findings(tree) if "Hard labels" in text]
    text = mixflow.summary(tree, kind="text")
    assert f"note: {note}" in text.splitlines() and "agree poorly" not in text
    page = report(tree, tmp_path / "r.html").read_text(encoding="utf-8")
    assert f"<p>{note.replace(chr(39), '&#x27;')}</p>" in page and "agree poorly" not in page
    assert "Hard labels" not in "".join(_diagnostics_items(page))


def test_hard_labels_that_differ_on_rows_one_method_places_confidently_are_warned_with_the_rows(two_methods):
    # the rule that spares boundary rows must still warn where the methods describe different clusterings: here
    # ADVI puts eight rows EM places with responsibility above 0.99 in the other component, and ADVI's components
    # are numbered the other way round (a relabelling is no difference)
    import numpy as np

    import mixflow
    from mixflow.present.report.cards import cross_method_findings

    em = two_methods["em/responsibilities"]["responsibilities"].values.copy()
    sure = np.flatnonzero(em.max(axis=1) > 0.99)[:8]
    advi = em.copy()
    advi[sure] = advi[sure][:, ::-1]
    tree = _with_responsibilities(two_methods, em, advi[:, ::-1])
    table = mixflow.compare(tree)
    value = agreement_of(table).loc["em", "advi"]
    [said] = [text for text in cross_method_findings(tree) if "Hard labels" in text]
    names = ", ".join(map(str, sure[np.argsort(-em[sure].max(axis=1), kind="stable")][:5]))
    assert said.startswith(f"Hard labels of EM and ADVI agree poorly (adjusted Rand index {value:.2f}): they differ "
                           f"on 8 of 60 rows, 8 of them placed confidently by one method (most probable component's "
                           f"responsibility at least 0.75: EM 8, up to {em[sure].max():.2f}; ADVI 8, up to "
                           f"{advi[sure].max():.2f}), rows {names} ...: there the methods describe different "
                           "clusterings")
    assert "note: Hard labels" not in mixflow.summary(tree, kind="text")
    assert mixflow.compare(_with_responsibilities(two_methods, em, em[:, ::-1])).attrs["label_differences"][
        "em"]["advi"]["rows"] == 0  # the same partition, relabelled


def test_a_one_cluster_labelling_is_said_as_such_not_as_different_clusterings():
    # ADVI put every row in one component, EM 295 of 300 rows in the same one: the index 0 was said to mean that
    # "the methods describe different clusterings"
    import pandas as pd

    from mixflow.present.report.cards import _comparison_findings

    table = pd.DataFrame({"method": ["advi"], "parameter": ["mu"], "em_inside": [True], "distance_to_mcmc": [0.1],
                          "sd_ratio_to_mcmc": [1.0]})
    agreement = {"em": {"em": 1.0, "mcmc": 0.0, "advi": 0.0}, "mcmc": {"em": 0.0, "mcmc": 1.0, "advi": 1.0},
                 "advi": {"em": 0.0, "mcmc": 1.0, "advi": 1.0}}
    table.attrs.update(ci_prob=0.94, label_agreement=agreement,
                       label_agreement_clusters={"em": 2, "mcmc": 1, "advi": 1})
    said = [text for _, text in _comparison_findings(table) if "labels" in text]
    assert said == ["The hard labels of MCMC (NUTS) and ADVI put every row in one component (against EM's 2): the "
                    "adjusted Rand index against such a labelling is 0 whatever the other is, so it does not measure "
                    "how far they agree; compare the responsibilities instead."]


def test_the_data_summary_counts_each_row_by_its_weight_and_gives_the_sample_sd(tmp_path, no_report_plots):
    # the median ignored the frequency weights under a heading that said "(weighted)", and the sd divided by n
    # where R's sd() and pandas divide by n - 1
    import numpy as np

    import mixflow
    from mixflow.present.report.page import weighted_median

    rng = np.random.default_rng(2)
    for _ in range(50):
        values, weights = rng.normal(size=7).round(1), rng.integers(0, 4, 7).astype(float)
        weights[0] = max(weights[0], 1.0)
        assert weighted_median(values, weights) == pytest.approx(np.median(np.repeat(values, weights.astype(int))))
    x = np.array([1.0, 2.0, 10.0, 11.0])
    counts = np.array([5.0, 1.0, 1.0, 1.0])
    tree = mixflow.fit(mixflow.GaussianMixture(1), x, weights=counts, random_seed=0)
    text = report(tree, tmp_path / "r.html").read_text(encoding="utf-8")
    expanded = np.repeat(x, counts.astype(int))
    summary = text[text.index("<h3>Summary (weighted)</h3>"):]
    summary = summary[:summary.index("</table>")]
    cells = [cell.split(">")[-1] for cell in summary.split("</td>")[:-1]]
    assert float(cells[0]) == pytest.approx(expanded.mean(), rel=1e-3)  # mean, sd, min, median, max
    assert float(cells[1]) == pytest.approx(expanded.std(ddof=1), rel=1e-3)
    assert float(cells[3]) == pytest.approx(np.median(expanded))  # 1.0, where the rows' median is 6.0


def test_a_report_of_one_chain_has_no_rank_plot_and_counts_one_chain(tmp_path):
    from mixflow.present.report.cards import _mcmc_rows

    tree = make_container(("em", "mcmc"), chains=1, draws=30)
    text = report(tree, tmp_path / "one.html").read_text(encoding="utf-8")
    assert 'id="plot-trace"' in text and 'id="plot-rank"' not in text  # a rank plot compares chains
    assert "could not be drawn" not in text and "InputError" not in text
    assert dict(_mcmc_rows(tree))["draws"] == "1 chain x 30 draws"


def test_nuts_draws_too_few_for_an_ess_are_a_problem_and_their_intervals_are_not_judged(tmp_path, no_report_plots):
    # 2 draws per chain: no R-hat nor ESS can be computed, and the draws are no sample to summarise. The report's
    # diagnostics (and the run's console, which counts the same findings) must count that as a problem, and the EM
    # point must not be judged inside or outside intervals of two draws.
    from mixflow.present.compare import compare
    from mixflow.present.report.cards import fit_findings_apart

    tree = make_container(("em", "mcmc", "advi"), chains=1, draws=2)
    tree["mcmc"].attrs.update({"max_rhat": float("nan"), "min_ess_bulk": float("nan"),
                               "min_ess_tail": float("nan"), "n_divergences": 0, "low_ess_bulk": '["mu"]',
                               "low_ess_tail": '["mu"]'})
    own, _ = fit_findings_apart(tree, None, compare(tree))
    expected = ("MCMC: 2 draws per chain, too few to compute R-hat or ESS (they need at least 4): the draws are no "
                "sample to summarise, and their means and intervals say nothing; run more draws.")
    assert ("bad", expected) in own
    assert not [text for _, text in own if "ESS n/a" in text or "(mcmc)" in text]
    # nor ADVI measured against them (the summary says "ADVI vs NUTS: not judged")
    assert not [text for _, text in own if "NUTS sd" in text or "the posterior sd (ratio" in text]
    text = report(tree, tmp_path / "few.html").read_text(encoding="utf-8")
    assert expected in _diagnostics_items(text)
    summary = text[text.index('<section id="summary">'):text.index('<section id="diagnostics">')]
    assert re.search(r"<th>warnings and diagnostics</th><td>[^<]*the diagnostics: [1-9]\d* problems?", summary)
    assert re.search(r"<th>EM point in the MCMC \(NUTS\) \d+% interval</th><td>not judged: 2 draws per chain", summary)
    assert "<th>ADVI vs NUTS</th><td>not judged" in summary


def test_the_r_hat_of_one_chain_s_halves_is_shown_and_judged():
    from mixflow.present.compare import compare
    from mixflow.present.report.cards import _mcmc_rows, diagnostics

    tree = make_container(("em", "mcmc"), chains=1, draws=30)
    tree["mcmc"].attrs.update({"max_rhat": 1.163, "min_ess_bulk": 25.0, "min_ess_tail": 20.0, "n_divergences": 0})
    assert dict(_mcmc_rows(tree))["worst R-hat (the chain's halves)"] == "1.163"
    said = [text for level, text in diagnostics(tree, compare(tree)) if level == "bad"]
    assert ("MCMC: max R-hat 1.163 > 1.01 between the halves of the one chain: they disagree, and one chain cannot "
            "show whether others would agree; run several chains, and more draws.") in said
    tree["mcmc"].attrs["max_rhat"] = 1.004
    assert not any("R-hat" in text for _, text in diagnostics(tree, compare(tree)))
    from mixflow.present.summary import _mcmc_line

    tree["mcmc"].attrs.update(chains=1, draws=30, sampler="pymc")
    assert "1 chain x 30 draws; max R-hat (the chain's halves) 1.004" in _mcmc_line(tree)[0]
    # the summary table's r_hat of one chain: its halves', each parameter's, as arviz_stats gives for them
    import arviz_stats
    import numpy as np
    import xarray as xr

    from mixflow.present.summary import summary_table

    table = summary_table(tree)
    mu = table[(table["method"] == "mcmc") & (table["parameter"] == "mu")]
    draws = tree["mcmc/posterior"]["mu"].isel(chain=0)
    halves = xr.concat([draws.isel(draw=slice(0, 15)), draws.isel(draw=slice(15, 30)).assign_coords(
        draw=np.arange(15))], dim="chain")
    expected = arviz_stats.rhat(halves.transpose("chain", "draw", ...)).values.ravel()
    np.testing.assert_allclose(np.sort(mu["r_hat"].to_numpy()), np.sort(expected), rtol=1e-12)


def test_an_em_point_outside_the_intervals_is_named_as_the_warnings_name_entries():
    from mixflow.present.report.cards import _comparison_findings

    table = pd.DataFrame({"parameter": ["covariance", "weights"], "component": [1, 0], "feature": ["x", None],
                          "feature_": ["x", None], "method": ["mcmc", "mcmc"], "em_inside": [False, False],
                          "distance_to_mcmc": [None, None], "sd_ratio_to_mcmc": [None, None]})
    table.attrs.update(ci_prob=0.89, element_columns=["component", "feature", "feature_"],
                       label_agreement=pd.DataFrame())
    said = [text for _, text in _comparison_findings(table)]
    assert ("The EM point lies outside the 89% interval for 2 parameters: covariance[1, x, x] (mcmc), "
            "weights[0] (mcmc).") in said
    # mean-field ADVI's narrow intervals are said to be the likelier cause, not EM
    advi = table.assign(method="advi", distance_to_mcmc=float("nan"), sd_ratio_to_mcmc=float("nan"))
    advi.attrs.update(table.attrs)
    said = [text for _, text in _comparison_findings(advi, "meanfield")]
    assert said[0].endswith("weights[0] (advi). Mean-field ADVI's intervals are typically too narrow (it "
                            "underestimates the posterior sds): compare the bootstrap's or NUTS's before reading "
                            "these as EM's.")
    assert not any("Mean-field" in text for _, text in _comparison_findings(advi, "fullrank"))


def test_a_map_fit_is_not_told_to_use_method_map():
    import xarray as xr

    from mixflow.present.report.cards import _em_findings

    for method, advice in (("mle", "prefer method='map'."), ("map", "use a stronger prior.")):
        tree = xr.DataTree(xr.Dataset(attrs={"method": method, "converged": 1, "collapsed_components": "[1]"}))
        tree = xr.DataTree.from_dict({"/": xr.Dataset(), "em": tree.to_dataset()})
        [(_, text)] = _em_findings(tree)
        assert text == f"EM: component [1] collapsed onto few points (singular covariance); {advice}"


def test_a_component_the_draws_often_empty_is_a_finding():
    import numpy as np

    from mixflow.present.report.cards import _empty_findings, cross_method_findings

    tree = make_container(("em", "mcmc"), chains=2, draws=50)  # 60 rows: an empty component holds under 1/60
    assert _empty_findings(tree, ["em", "mcmc"]) == []
    posterior = tree["mcmc/posterior"].to_dataset()
    weights = posterior["weights"].values.copy()
    weights[:, :30, 0] = 0.005  # 60% of the draws
    weights[:, :30, 1] = 0.995
    tree["mcmc/posterior"] = posterior.assign(weights=(posterior["weights"].dims, weights))
    said = _empty_findings(tree, ["em", "mcmc"])
    assert said == [("warn", "MCMC (NUTS): the data may not support 2 components: in 60% of the draws one holds "
                             "less than one observation's worth of weight (the smallest weight's median "
                             f"{np.median(weights.min(axis=-1)):.2g}), and an empty component's other parameters are "
                             "the prior's; compare fewer components (select_k).")]
    assert said[0][1] in cross_method_findings(tree)


def test_r_hat_and_ess_that_could_not_be_computed_read_as_such_within_modes_too():
    from mixflow.present.report.cards import _mcmc_rows
    from mixflow.present.summary import _mcmc_line

    nan = float("nan")  # two draws per chain: no R-hat and no ESS
    tree = make_container(("em", "mcmc"), chains=2, draws=30)
    tree["mcmc"].attrs.update({"max_rhat": nan, "max_rhat_all_chains": nan, "min_ess_bulk": nan, "min_ess_tail": nan,
                               "n_divergences": 0, "n_modes": 2, "chains": 2, "draws": 2, "sampler": "pymc"})
    rows = dict(_mcmc_rows(tree))
    assert rows["worst R-hat within a mode"] == "n/a (too few draws)"
    assert rows["worst R-hat over all chains (the modes apart)"] == "n/a (too few draws)"
    assert rows["smallest ESS (bulk / tail)"] == "n/a (too few draws) / n/a (too few draws)"
    line = _mcmc_line(tree)[0]
    assert ("max R-hat within modes n/a (too few draws) (over all chains n/a (too few draws)), min ESS bulk n/a (too "
            "few draws) / tail n/a (too few draws)") in line and "nan" not in line


def test_an_advi_fit_that_did_not_settle_is_a_finding_of_the_report_as_of_the_summary(full):
    # the summary said "the approximation did not settle", the report's findings did not
    from mixflow.present.report.cards import fit_findings

    tree = full.copy()
    assert not [text for _, text in fit_findings(tree) if text.startswith("ADVI: the approximation")]
    tree["advi"].attrs.update(converged=0, n_iter=100)
    # a problem, graded as EM's that did not converge is
    assert ("bad", "ADVI: the approximation did not settle in 100 iterations: its draws may not be the optimum's "
                   "(raise n or lower learning_rate).") in fit_findings(tree)
    tree["advi"].attrs.update(n_iter_per_fit="[420, 700]", converged_per_fit="[1, 0]", final_elbo_per_fit="[-1, -2]")
    said = ("bad", "ADVI: not every fit settled (not all settled after 420 and 700 (not settled) iterations (fits "
                   "0, 1)): its draws may not be the optimum's (raise n or lower learning_rate).")
    assert said in fit_findings(tree)


def test_the_report_gives_the_log_likelihood_and_elbo_as_the_summary_does(full):
    # the summary said -1642.2976 and final ELBO -1697.193, the report -1642.3 and -1697.19
    from mixflow.present.report.cards import _advi_rows, _em_rows
    from mixflow.present.summary import summary_text

    tree = full.copy()
    tree["em"].attrs.update(log_likelihood=-1642.29764, bic=3389.54871)
    tree["advi"].attrs.update(final_elbo=-1697.19312)
    text = summary_text(tree)
    rows = dict(_em_rows(tree["em"].attrs)) | dict(_advi_rows(tree))
    assert "log-likelihood -1642.2976, BIC 3389.55" in text and rows["log-likelihood"] == "-1642.2976"
    assert rows["BIC / AIC / ICL"].startswith("3389.55 / ")
    assert "final ELBO -1697.193" in text and rows["final ELBO"] == "-1697.193"


def test_the_bootstrap_intervals_at_a_glance_say_how_many_replicates_collapsed():
    # "EM point in the bootstrap 89% interval: 126 of 126" read as reassurance, with 88 of 100 replicates degenerate
    import xarray as xr

    from mixflow.present.report.page import _interval_caveat

    def tree(n_degenerate):
        return xr.DataTree.from_dict({"em/bootstrap": xr.Dataset(attrs={"n_replicates": 100,
                                                                        "n_degenerate": n_degenerate})})

    assert _interval_caveat(tree(88), "bootstrap") == ("; of 100 replicates, 88 had a collapsed component, and they "
                                                       "are in the intervals, which they widen")
    assert _interval_caveat(tree(1), "bootstrap") == ("; of 100 replicates, 1 had a collapsed component, and it is "
                                                      "in the intervals, which it widens")
    elsewhere = tree(3)
    elsewhere["em/bootstrap"].attrs["n_elsewhere"] = 5
    assert _interval_caveat(elsewhere, "bootstrap") == ("; of 100 replicates, 3 had a collapsed component and 5 "
                                                        "ended at another solution, and they are in the intervals, "
                                                        "which they widen")
    assert _interval_caveat(tree(0), "bootstrap") == "" and _interval_caveat(tree(88), "mcmc") == ""


def test_the_choice_of_k_section_explains_the_columns_it_has():
    # the NUTS columns were explained where NUTS was not run; ICL's entropy (soft, not mclust's hard) was not said
    from mixflow.present.report.page import _selection_html

    table = pd.DataFrame({"bic": [10.0, 8.0], "aic": [9.0, 7.0], "icl": [11.0, 9.0]}, index=pd.Index([1, 2], name="k"))
    table.attrs.update(preferred={"bic": 2, "aic": 2, "icl": 2}, skipped={})
    tree = make_container(("em",))
    text = _selection_html(table, tree)
    assert "EM columns" in text and "NUTS columns" not in text
    assert "<code>icl</code> is BIC plus twice the entropy of the responsibilities (mclust's ICL takes that of the " \
           "hard labels, which is at most as large)" in text
    both = _selection_html(table.assign(elpd_loo=[-5.0, -4.0]), tree)
    assert "NUTS columns" in both


def test_a_k_on_too_few_rows_is_a_warning_of_its_in_sample_criteria():
    # "its criteria are unreliable" (graded bad) beside "held-out log-likelihood prefers K = 3": the held-out criterion
    # keeps such a K, and only BIC, AIC and ICL are unreliable there
    from mixflow.present.report.cards import selection_findings

    table = pd.DataFrame({"bic": [10.0, 9.0, 8.0], "cv_log_likelihood": [-9.0, -8.0, -7.0],
                          "few_rows": [False, False, True], "converged": [True, True, True]},
                         index=pd.Index([1, 2, 3], name="k"))
    assert selection_findings(table) == [("warn", "Choice of K, K=3, EM: has a component of fewer observations than "
                                                  "its parameters; its BIC, AIC and ICL are unreliable (the held-out "
                                                  "log-likelihood keeps it).")]
    table.loc[3, "converged"] = False
    assert selection_findings(table) == [("bad", "Choice of K, K=3, EM: did not converge; its criteria are "
                                                 "unreliable.")]


def test_a_choice_of_k_with_an_unreliable_psis_loo_says_how_many_rows_how_high_and_what_to_do():
    # "high Pareto k (PSIS-LOO unreliable)" said neither how many rows, nor how high, nor what mends it
    from mixflow.present.report.cards import selection_findings

    selection = pd.DataFrame({"pareto_k_warning": [True, True, True], "max_pareto_k": [1.22, 0.65, float("nan")],
                              "n_high_pareto_k": [1, 4, float("nan")]}, index=pd.Index([2, 3, 4], name="k"))
    said = [text for _, text in selection_findings(selection)]
    assert said == [
        "Choice of K, K=2, NUTS: PSIS-LOO unreliable: Pareto k above the threshold for its draws at 1 row, up to 1.22 "
        "(more draws do not mend it: compare K by the held-out log-likelihood (K-fold cross-validation) instead).",
        "Choice of K, K=3, NUTS: PSIS-LOO unreliable: Pareto k above the threshold for its draws at 4 rows, up to "
        "0.65 (more draws settle it).",
        "Choice of K, K=4, NUTS: high Pareto k (PSIS-LOO unreliable)."]


def test_the_choice_of_k_legend_speaks_of_the_models_family(tmp_path):
    # a regression's table was told in a Gaussian's terms ("d (d + 3) / 2 for a full covariance", "near a subspace")
    import numpy as np

    import mixflow

    rng = np.random.default_rng(3)
    x = rng.uniform(0, 10, 60)
    frame = pd.DataFrame({"x": x, "y": np.where(np.arange(60) % 2, 1 + 2 * x, 8 - x) + rng.normal(0, 0.3, 60)})
    selection = pd.DataFrame({"bic": [10.0, 8.0], "few_rows": [False, False], "spurious": [False, False]},
                             index=pd.Index([1, 2], name="k"))
    legends = {}
    for name, model, data in (
            ("regression", mixflow.RegressionMixture(n_components=2, formula="y ~ x"), frame),
            ("poisson", mixflow.PoissonMixture(n_components=2),
             pd.DataFrame({"n": rng.poisson(np.repeat([2, 12], 30))})),
            ("full", mixflow.GaussianMixture(n_components=2, covariance="full"), frame),
            ("tied", mixflow.GaussianMixture(n_components=2, covariance="tied"), frame)):
        tree = mixflow.fit(model, data, method="em", random_seed=0)
        text = report(tree, tmp_path / f"{name}.html", selection=selection).read_text(encoding="utf-8")
        legends[name] = re.search(r"EM columns: (.*?)</small>", text).group(1)
    assert "covariance" not in legends["regression"] and "subspace" not in legends["regression"]
    assert "<code>spurious</code> (a line fitted to a few points it passes almost exactly)" in legends["regression"]
    assert ("<code>few_rows</code> (a component of fewer observations than its own parameters, p + 1, its p "
            "coefficients and its variance)") in legends["regression"]
    assert "<code>few_rows</code> (never set for this model: its components have no dispersion" in legends["poisson"]
    assert "<code>spurious</code> (never set for this model" in legends["poisson"]
    assert ("<code>few_rows</code> (a component of fewer observations than its own parameters, d (d + 3) / 2, its "
            "mean and full covariance in d dimensions)") in legends["full"]
    assert "<code>few_rows</code> (never set for this model" in legends["tied"]


def test_a_degenerate_fit_is_not_said_to_be_multimodal_nor_told_what_it_cannot_do():
    # K=8 on 20 rows: every restart collapsed, and the report added "the likelihood is multimodal ... other seeds
    # or more starts (n_init) may find a higher one" of a likelihood with no upper bound; K=1 was told "fewer
    # components"
    import warnings

    import numpy as np

    import mixflow
    from mixflow.present.report.cards import _em_findings, _restart_findings

    rng = np.random.default_rng(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixflow.MixflowWarning)
        many = mixflow.fit(mixflow.GaussianMixture(8), rng.normal(size=(20, 2)), method="em", random_seed=0)
        one = mixflow.fit(mixflow.GaussianMixture(1), rng.normal(size=(4, 5)), method="em", random_seed=0)
    assert many["em"].attrs["degenerate"] and _restart_findings(many)  # its restarts did reach several values
    findings = [text for _, text in _em_findings(many)]
    assert not any("multimodal" in text for text in findings)
    assert findings[-1].endswith("Prefer method='map' or fewer components.")
    assert [text for _, text in _em_findings(one)][-1] == (
        "EM: every restart ended degenerate (a component collapsed or emptied); the estimate is one of them. "
        "Prefer method='map'.")
