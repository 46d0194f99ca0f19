"""The HTML report: every section, self-contained, written atomically."""

import importlib
import re

import matplotlib
import pandas as pd
import pytest
from test_compare import make_container

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
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]  # no temporary file left


def test_report_of_an_em_fit_alone(tmp_path):
    path = report(make_container(("em",)), tmp_path / "em.html")
    text = path.read_text(encoding="utf-8")
    assert all(f'<section id="{section}">' in text for section in SECTIONS)
    assert 'id="plot-trace"' not in text and 'id="plot-forest"' in text


def test_report_replaces_an_existing_file_only_when_complete(tmp_path, monkeypatch, full):
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
    assert (table.attrs["label_agreement"].to_numpy() > 0.9).all()
    text = report(tree, tmp_path / "real.html").read_text(encoding="utf-8")
    assert text.count('src="data:image/png;base64,') == 7
    assert "could not be drawn" not in text
