"""mixflow.summary: the table against compare and ArviZ's own summary, the text's content and size."""

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from arviz_base import rc_context
from arviz_stats import summary as arviz_summary

import mixflow
from tests.test_compare import make_container


@pytest.fixture(scope="module")
def tree():
    return make_container(("em", "mcmc", "advi"), d=2, n=60, with_bootstrap=True, draws=40)


def _label(row, elements) -> str:
    return f"{row['parameter']}[" + ", ".join(str(row[c]) for c in elements if not pd.isna(row[c])) + "]"


def test_table_is_compare_with_the_nuts_diagnostics_of_arviz(tree):
    table = mixflow.summary(tree)
    compared = mixflow.compare(tree)
    assert list(table.columns) == [*compared.columns[:compared.columns.get_loc("method") + 1], "estimate", "sd",
                                   "lower", "upper", "r_hat", "ess_bulk", "ess_tail"]
    for column in ("estimate", "sd", "lower", "upper"):
        np.testing.assert_array_equal(table[column].to_numpy(), compared[column].to_numpy())
    assert table["method"].tolist() == compared["method"].tolist()
    # NUTS: R-hat and ESS as ArviZ's summary gives them, element by element (rtol 1e-12); the tail ESS at Vehtari et
    # al. (2021)'s 5% and 95% quantiles, which ArviZ's summary takes from its stats.ci_prob setting (0.89 by default,
    # the 11% and 89% quantiles), so that mixflow's figure and its warnings do not move with a display setting
    with rc_context({"stats.ci_prob": 0.95}):
        reference = arviz_summary(tree["mcmc"], round_to="none")
    nuts = table[table["method"] == "mcmc"]
    labels = [_label(row, table.attrs["element_columns"]) for _, row in nuts.iterrows()]
    for column in ("r_hat", "ess_bulk", "ess_tail"):
        np.testing.assert_allclose(nuts[column].to_numpy(), reference.loc[labels, column].to_numpy(), rtol=1e-12)
    with rc_context({"stats.ci_prob": 0.5}):
        assert mixflow.summary(tree)["ess_tail"].equals(table["ess_tail"])
    assert not np.allclose(nuts["ess_tail"], arviz_summary(tree["mcmc"], round_to="none").loc[labels, "ess_tail"])
    assert table.loc[table["method"] != "mcmc", ["r_hat", "ess_bulk", "ess_tail"]].isna().all().all()


def test_table_of_an_em_fit_alone_and_a_bad_kind(faithful):
    em = mixflow.fit(mixflow.GaussianMixture(2), faithful, random_seed=1)
    table = mixflow.summary(em)
    assert set(table["method"]) == {"em"} and table[["r_hat", "ess_bulk", "ess_tail"]].isna().all().all()
    text = mixflow.summary(em, kind="text")
    assert "EM: MLE, log-likelihood -1130.2" in text and "converged in" in text and "warnings: none" in text
    with pytest.raises(ValueError, match=r"kind: expected one of \['table', 'text'\], got 'html'"):
        mixflow.summary(em, kind="html")
    with pytest.raises(TypeError, match=r"tree: expected a mixflow result"):
        mixflow.summary({"em": em}, kind="text")


def test_text_names_methods_and_every_warning(tree):
    flagged = tree.copy()
    flagged["em"].attrs.update(converged=0, n_iter=1000, collapsed_components=json.dumps([1]))
    flagged["em/bootstrap"].attrs.update(n_failed=2)
    flagged["mcmc"].attrs.update(sampler="pymc", chains=2, draws=40, max_rhat=1.02, min_ess_bulk=60.0,
                                 min_ess_tail=55.0, n_divergences=3, high_rhat=json.dumps(["mu[0, x0]"]),
                                 low_ess_bulk=json.dumps([]),
                                 low_ess_tail=json.dumps(["weights[0]", "weights[1]", "mu[0, x0]", "mu[0, x1]",
                                                          "mu[1, x0]", "mu[1, x1]"]))
    flagged["advi"].attrs.update(variant="meanfield", converged=0, n_iter=5000, final_elbo=-200.0, draws=40)
    text = mixflow.summary(flagged, kind="text")
    for expected in ("fitted to 'simulated': 60 rows, 2 features ['x0', 'x1']",
                     "EM: MLE, log-likelihood", "NOT converged in 1000 iterations",
                     "EM bootstrap: 12 nonparametric replicates, 2 failed",
                     "MCMC (NUTS): pymc, 2 chains x 40 draws; max R-hat 1.020, min ESS bulk 60 / tail 55, "
                     "3 divergences",
                     "ADVI: meanfield, did not settle in 5000 iterations",
                     "  - EM: degenerate (collapsed) components [1]", "  - EM bootstrap: 2 replicates failed",
                     "  - MCMC (NUTS): R-hat above 1.01 at mu[0, x0]\n",
                     "  - MCMC (NUTS): low tail ESS at weights[0], weights[1], mu[0, x0], mu[0, x1] and 2 more",
                     "  - MCMC (NUTS): 3 divergent transitions", "  - ADVI: the approximation did not settle",
                     "mu[1, x1]"):
        assert expected in text, expected
    assert "low bulk ESS" not in text


def test_text_stays_within_a_screenful():
    wide = make_container(("em", "mcmc", "advi"), d=4, n=80, draws=20)
    text = mixflow.summary(wide, kind="text")
    lines = text.splitlines()
    assert len(lines) <= 40 and max(len(line) for line in lines) <= 160
    assert "... 6 more elements: mixflow.summary(tree) has them all" in text  # 2 + 8 + 20 elements, 24 shown


def test_text_has_units_values_to_their_sd_and_the_runs_warnings(tree):
    galaxies = mixflow.fit(mixflow.GaussianMixture(3), mixflow.load_dataset("galaxies"), method="map", n_init=2,
                           random_seed=1)
    text = mixflow.describe(galaxies)
    assert "e+0" not in text  # velocities of about 20,000 km/s in plain notation, not 2.14e+04
    assert "mu[0, velocity] (km/s)" in text and "covariance[0, velocity, velocity] ((km/s)²)" in text
    mu = galaxies["em/estimate"]["mu"].values[:, 0]
    assert f"{mu[1]:,.0f}"[:3] in text
    recorded = [{"stage": f"K={k}, NUTS", "category": "SamplingWarning", "message": f"R-hat high at K={k}"}
                for k in range(1, 8)]
    flagged = tree.copy()
    flagged.attrs["run_warnings"] = json.dumps(recorded)
    text = mixflow.summary(flagged, kind="text")
    assert "  - [K=1, NUTS] SamplingWarning: R-hat high at K=1" in text
    assert "[K=5, NUTS]" in text and "[K=6, NUTS]" not in text
    assert "... 2 more raised during the run (the report and run.log list them all)" in text
    assert "raised during the run (some say" not in text  # no findings of the results' own: no second heading
    assert "given whole" not in text  # nothing was cut
    recorded[0]["message"] = "R-hat high " + "and more words " * 12
    flagged.attrs["run_warnings"] = json.dumps(recorded)
    text = mixflow.summary(flagged, kind="text")  # a message cut to its line says where it is whole
    assert "SamplingWarning: R-hat high and more words" in text and text.count(" ...\n") == 1
    assert "  (a message cut at ' ...' is given whole in the report, and in a workflow's run.log)" in text
    recorded[0]["message"] = "R-hat high at K=1"
    flagged.attrs["run_warnings"] = json.dumps(recorded)
    flagged["em"].attrs["converged"] = 0  # a finding the results say, beside the warnings the run raised
    text = mixflow.summary(flagged, kind="text")
    assert text.index("EM: not converged in") < text.index("  raised during the run (some say the findings above "
                                                              "in their own words):") < text.index("[K=1, NUTS]")


def test_container_repr_is_the_description_and_subtrees_stay_xarrays(tree, tmp_path):
    from mixflow.container.tree import Container

    assert isinstance(tree, Container)
    text = repr(tree)
    lines = text.splitlines()
    assert lines[0] == "<mixflow results: xarray.DataTree>"
    assert mixflow.describe(tree) in text
    assert "groups:\n  /observed_data\n  /em: estimate, responsibilities, sample_stats, bootstrap\n  /mcmc: " in text
    assert len(lines) <= 50 and max(len(line) for line in lines) <= 160  # a screenful
    page = tree._repr_html_()
    assert page.startswith("<pre>GaussianMixture(n_components=2") and "<details><summary>xarray view" in page
    # a subtree, and xarray's own view of the container, are xarray's
    assert repr(tree["em"]).startswith("<xarray.DataTree 'em'>")
    assert xr.DataTree.__repr__(tree).startswith("<xarray.DataTree>")
    # the type survives copies and save/load; what loads displays the same
    assert type(tree.copy()) is Container
    mixflow.save(tree, tmp_path / "r.nc")
    loaded = mixflow.load(tmp_path / "r.nc")
    assert type(loaded) is Container and repr(loaded).startswith(f"<mixflow results: xarray.DataTree>\n"
                                                                 f"{mixflow.describe(tree)}\n")


def test_container_repr_falls_back_to_xarrays_when_describing_fails(tree, monkeypatch):
    from mixflow.container import tree as container_tree

    def broken(_):
        raise RuntimeError("describing failed")

    monkeypatch.setattr(container_tree, "_DESCRIBER", [broken])
    assert repr(tree) == xr.DataTree.__repr__(tree)
    assert tree._repr_html_().startswith("<div><svg") and "xarray view" not in tree._repr_html_()


def test_standard_errors_that_are_not_defined_are_said_with_their_reason():
    """A fit of more free parameters than the observed information is computed for: the summary, the report's
    findings and compare's attrs say that the EM errors are missing and why, rather than showing none."""
    from mixflow.present.report.cards import diagnostics

    x = np.random.default_rng(0).normal(size=(200, 12))
    tree = mixflow.fit(mixflow.GaussianMixture(3), x, random_seed=0, n_init=1, init="kmeans")
    table = mixflow.compare(tree)
    reason = "272 free parameters exceed max_parameters=200"
    assert table.attrs["em_standard_errors_undefined"] == reason and table["sd"].isna().all()
    text = mixflow.summary(tree, kind="text")
    assert f"EM: no standard errors: {reason}" in text and "warnings: none" not in text
    assert any(reason in finding for _, finding in diagnostics(tree, table))
    defined = mixflow.compare(mixflow.fit(mixflow.GaussianMixture(2), x[:, :2], random_seed=0))
    assert defined.attrs["em_standard_errors_undefined"] == ""


def test_degenerate_restarts_set_aside_are_said():
    """A binary feature lets runs collapse onto it (a higher, unbounded likelihood): the best sound fit is
    returned, and the summary and the report's fit card say how many of the runs were set aside."""
    from sklearn.datasets import load_diabetes

    from mixflow.present.report.cards import _em_rows

    data = load_diabetes(as_frame=True).data[["age", "sex", "bmi"]]  # few parameters: the summary's errors are quick
    tree = mixflow.fit(mixflow.GaussianMixture(3), data, random_seed=0)
    attrs = tree["em"].attrs
    assert attrs["n_degenerate_restarts"] > 0 and not attrs["degenerate"]
    said = f"of {attrs['n_starts']} runs, {attrs['n_degenerate_restarts']} degenerate (a component collapsed or"
    assert said in mixflow.summary(tree, kind="text")
    assert dict(_em_rows(attrs))["runs set aside"].startswith(said)


def test_text_lists_what_the_report_finds_across_methods():
    # `mixflow show` listed each method's own diagnostics and left out the report's findings across them: the EM
    # point outside the NUTS intervals, the agreement of hard labels
    from mixflow.present.report.cards import cross_method_findings

    moved = make_container(("em", "mcmc"), draws=40).copy(deep=True)
    posterior = moved["mcmc/posterior"].to_dataset()
    moved["mcmc/posterior"] = xr.DataTree(posterior.assign(mu=posterior["mu"] + 20 * float(posterior["mu"].std())))
    found = cross_method_findings(moved)
    assert any(text.startswith("The EM point lies outside the") for text in found)
    text = mixflow.summary(moved, kind="text")
    for finding in found:
        assert finding[:100] in text


def test_a_long_finding_is_cut_at_a_word_s_end():
    from mixflow.present.summary import _shortened

    text = "the runs reached three maxima, " * 10
    cut = _shortened(text)
    assert len(cut) <= 150 and cut.endswith(" ...") and text.startswith(cut.removesuffix(" ..."))
    assert text[len(cut.removesuffix(" ..."))] == " "  # a whole word before the cut
    assert _shortened("short") == "short"


def test_advi_from_several_starts_gives_each_fit_s_iterations_and_final_elbo():
    from mixflow.present.numbers import advi_progress

    attrs = {"n_iter": 700, "converged": 0, "final_elbo": -749.14, "n_iter_per_fit": json.dumps([420, 700, 510]),
             "converged_per_fit": json.dumps([1, 0, 1]), "final_elbo_per_fit": json.dumps([-749.14, -752.3, -750.0])}
    assert advi_progress(attrs) == ("not all settled after 420, 700 (not settled) and 510 iterations (fits 0, 1, 2)",
                                    "final ELBO -749.14, -752.3, -750 (fits 0, 1, 2)")
    assert advi_progress({"n_iter": 420, "converged": 1, "final_elbo": -749.14}) == (
        "settled after 420 iterations", "final ELBO -749.14")
    # the mean of a window of single-sample estimates, to the decimals its standard error holds (it was printed to 7
    # significant digits, -292.4467, with an error of 0.20)
    assert advi_progress({"n_iter": 420, "converged": 1, "final_elbo": -292.4467123, "final_elbo_se": 0.2012}) == (
        "settled after 420 iterations", "final ELBO -292.45 (se 0.20)")
    attrs["final_elbo_se_per_fit"] = json.dumps([0.2012, 0.013, 1.7])
    assert advi_progress(attrs)[1] == ("final ELBO -749.14 (se 0.20), -752.300 (se 0.013), -750.0 (se 1.7) "
                                       "(fits 0, 1, 2)")


def test_a_best_maximum_reached_once_is_said_in_the_singular():
    import xarray as xr

    from mixflow.present.summary import _em_line

    attrs = {"method": "mle", "log_likelihood": -10.0, "bic": 30.0, "converged": 1, "n_iter": 12, "n_maxima": 4,
             "n_runs_at_best": 1, "start_rounds": 2}
    line = _em_line(xr.DataTree.from_dict({"em": xr.Dataset(attrs=attrs)}))[0]
    assert "best of 4 maxima the runs reached, by only one run, over 2 rounds of starts" in line
    attrs["n_runs_at_best"] = 3
    assert "by 3 runs," in _em_line(xr.DataTree.from_dict({"em": xr.Dataset(attrs=attrs)}))[0]
