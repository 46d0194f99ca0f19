"""The report in a real browser: headless Chromium lays it out without horizontal overflow and loads every figure.

A script added to a copy of the report measures the page once it has loaded (the widths of the document and
of the elements that stick out, and which images decoded) and writes the measurements into the DOM, which
``chromium --headless --dump-dom`` prints. Skipped where Chromium is not installed (``.ci/run`` installs the
Debian ``chromium`` package when it can).
"""

import json
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from test_compare import make_container

from mixflow.present.report.page import report

matplotlib.use("Agg")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium is not installed (no chromium on PATH, e.g. /usr/bin/chromium): "
                             "apt-get install chromium to run the browser test of the report")

_MEASURE = """<script>
window.addEventListener("load", function () {
  var root = document.documentElement, width = root.clientWidth;
  var images = Array.prototype.slice.call(document.images);
  var sticking = Array.prototype.slice.call(document.querySelectorAll("body *")).filter(function (e) {
    return !e.closest(".scroll") && e.getBoundingClientRect().right > width + 0.5;
  }).map(function (e) { return e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") + (e.className ?
    "." + String(e.className).split(" ").join(".") : ""); });
  var out = {viewport: width, document: root.scrollWidth, body: document.body.scrollWidth, images: images.length,
             loaded: images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length,
             wider_than_their_box: images.filter(function (i) { return i.getBoundingClientRect().width >
               i.parentElement.getBoundingClientRect().width + 0.5; }).length,
             sticking_out: sticking.slice(0, 12)};
  var pre = document.createElement("pre");
  pre.id = "mixflow-measurements";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def measure(page: Path, width: int) -> dict:
    """Load ``page`` (a copy with the measuring script) in headless Chromium at ``width`` CSS pixels."""
    probe = page.with_name(f"{page.stem}-probe.html")
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", _MEASURE + "</body>"), encoding="utf-8")
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
               f"--user-data-dir={page.parent / 'chromium-profile'}", f"--window-size={width},900",
               "--virtual-time-budget=20000", "--dump-dom", probe.resolve().as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    found = re.search(r'<pre id="mixflow-measurements">(.*?)</pre>', done.stdout, re.DOTALL)
    assert found, f"Chromium did not run the page's script (status {done.returncode}): {done.stderr[-2000:]}"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def _choice_of_k() -> pd.DataFrame:
    """A choice-of-K table with every column a run with NUTS writes (the widest table of a report)."""
    ks = pd.Index([1, 2, 3, 4, 5, 6], name="k")
    rng = np.random.default_rng(0)
    columns = {"log_likelihood": -800 + 10 * np.arange(6), "n_parameters": 3 * np.arange(1, 7) - 1,
               "bic": 1600 - 5 * np.arange(6), "aic": 1590 - 8 * np.arange(6), "icl": 1610 - 3 * np.arange(6),
               "cv_log_likelihood": -170 + rng.normal(size=6), "cv_log_likelihood_se": 10 + rng.random(6),
               "converged": [True] * 6, "degenerate": [False] * 6, "skipped": [""] * 6,
               "elpd_loo": -780 + rng.normal(size=6), "se": 9 + rng.random(6), "p_loo": 3 + rng.random(6),
               "elpd_diff": rng.random(6), "dse": rng.random(6), "weight": rng.dirichlet(np.ones(6)),
               "pareto_k_warning": [False, False, True, True, False, True], "max_rhat": 1 + rng.random(6) / 10,
               "min_ess_bulk": 100 + 900 * rng.random(6), "min_ess_tail": 100 + 900 * rng.random(6),
               "divergences": [0, 0, 2, 3, 0, 1]}
    table = pd.DataFrame(columns, index=ks)
    table.attrs["preferred"] = {"bic": 6, "aic": 6, "icl": 6, "cv_log_likelihood": 3, "elpd_loo": 5}
    return table


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    tree = make_container(("em", "mcmc", "advi"), d=1, draws=20)
    tree.attrs["units"] = json.dumps({"x0": "km/s"})
    tree.attrs["run_warnings"] = json.dumps([{"stage": "choice of K", "category": "SamplingWarning", "message":
                                              "select_k, K=5, NUTS: R-hat above 1.01 for " + ", ".join(
                                                  f"weights[{i}]" for i in range(40))}])
    folder = tmp_path_factory.mktemp("browser")
    return report(tree, folder / "report.html", selection=_choice_of_k(), title="A report in a browser",
                  other_fits={5: "gaussian-full-k5-report.html"})


@pytest.mark.parametrize("width", [1280, 800])
def test_the_report_fits_the_window_and_every_figure_loads(page, width):
    measured = measure(page, width)
    assert measured["viewport"] == width
    assert measured["document"] <= width and measured["body"] <= width, measured
    assert measured["sticking_out"] == [], measured
    assert measured["images"] == page.read_text(encoding="utf-8").count("<img ") >= 8
    assert measured["loaded"] == measured["images"] and measured["wider_than_their_box"] == 0, measured
