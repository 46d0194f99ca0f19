"""Property: any mutation of a valid workflow file either runs, or fails with status 2 and one
``file:line: ...`` message per error, never a traceback or another status.

Cheap on purpose: EM only, one start, a small shipped dataset, no figures or report. On CI (``CI`` set)
the examples are derandomised by the hypothesis profile of ``conftest.py``.
"""

import contextlib
import io
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mixflow.cli import main

VALID = """name = "property"
seed = 3

[data]
dataset = "galaxies"

[[models]]
family = "gaussian"
n_components = 2
covariance = "spherical"

[methods.em]
n_init = 1
tol = 1e-6

[output]
figures = false
report = false
"""
KEYS = ["name", "title", "seed", "dataset", "path", "columns", "weights", "labels", "family", "n_components",
        "covariance", "prior", "n_init", "tol", "init", "max_iter", "map", "trim", "container", "table", "figures",
        "report", "n_replicates", "kind", "variance", "formula", "draws"]
HEADERS = ["[data]", "[[models]]", "[methods]", "[methods.em]", "[methods.bootstrap]", "[output]", "[methods.x]"]
TOML_VALUES = st.one_of(
    st.integers(-3, 300).map(str), st.floats(-1e3, 1e3, allow_nan=False).map(repr), st.sampled_from(
        ['"galaxies"', '"faithful"', '"x"', '""', "true", "false", "[]", '["velocity"]', '["x", 1]', "[1, 2]",
         "{from = 1, to = 3}", "{from = 2.5, to = 3}", "{}", '"kmeans"', '"diag"', '"full"', '"nonparametric"',
         "nan", "inf", '"default"', "{mean = 1}", '"no"', "1e400"]))


@st.composite
def mutations(draw):
    lines = VALID.splitlines()
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["value", "insert", "delete", "header", "duplicate", "garble"]))
        i = draw(st.integers(0, len(lines) - 1))
        if kind == "value" and "=" in lines[i]:
            lines[i] = lines[i].split("=", 1)[0] + "= " + draw(TOML_VALUES)
        elif kind == "insert":
            lines.insert(i, f"{draw(st.sampled_from(KEYS))} = {draw(TOML_VALUES)}")
        elif kind == "delete":
            del lines[i]
        elif kind == "header":
            lines.insert(i, draw(st.sampled_from(HEADERS)))
        elif kind == "duplicate":
            lines.insert(i, lines[i])
        elif kind == "garble" and lines[i]:
            j = draw(st.integers(0, len(lines[i]) - 1))
            lines[i] = lines[i][:j] + draw(st.sampled_from(['"', "[", "=", "\\", "é", "{", " "])) + lines[i][j + 1:]
        if not lines:
            lines = [""]
    return "\n".join(lines) + "\n"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(text=mutations())
def test_a_mutated_workflow_runs_or_fails_with_status_2_and_its_position(tmp_path_factory, text):
    folder = tmp_path_factory.mktemp("mutation")
    path = folder / "flow.toml"
    path.write_text(text, encoding="utf-8")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = main(["run", str(path), "--out", str(folder / "out"), "--quiet"])
    message = err.getvalue()
    assert "Traceback" not in message
    if status == 0:
        return
    assert status == 2, message
    lines = message.strip().splitlines()
    assert lines, "status 2 without a message"
    position = re.compile(rf"^mixflow run: error: {re.escape(str(path))}:\d+: \S")
    assert all(position.match(line) for line in lines), message
