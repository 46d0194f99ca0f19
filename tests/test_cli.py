"""The command line: show (mixflow.summary's text), report (rebuilt from a saved container), bad input."""

import re
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import mixflow
from mixflow.cli import main
from mixflow.container.read import hard_labels
from mixflow.workflow.run import run_workflow

IRIS = """
name = "iris-small"
title = "Iris, three clusters against the species"
seed = 3

[data]
dataset = "iris"
columns = ["Petal.Length", "Petal.Width"]
labels = "Species"

[[models]]
family = "gaussian"
n_components = 3
covariance = "full"

[methods.em]
map = false
n_init = 3

[methods.bootstrap]
n_replicates = 10

[output]
figures = false
report = false
"""

GALAXIES = """
name = "galaxies-small"
seed = 5

[data]
dataset = "galaxies"

[[models]]
n_components = {from = 1, to = 3}

[methods.em]
n_init = 2

[output]
figures = false
report = false
"""


def _run(tmp_path_factory, name: str, text: str):
    folder = tmp_path_factory.mktemp(name)
    path = folder / f"{name}.toml"
    path.write_text(textwrap.dedent(text))
    return folder, run_workflow(path, folder / "out", quiet=True)


@pytest.fixture(scope="module")
def iris_run(tmp_path_factory):
    return _run(tmp_path_factory, "iris", IRIS)


@pytest.fixture(scope="module")
def galaxies_run(tmp_path_factory):
    return _run(tmp_path_factory, "galaxies", GALAXIES)


def _container(written):
    return next(p for p in written if p.suffix == ".nc")


def test_labels_are_kept_and_scored_against_each_method(iris_run):
    _, written = iris_run
    tree = mixflow.load(_container(written))
    species = mixflow.load_dataset("iris")["Species"].to_numpy()
    assert tree["reference_labels"].attrs["column"] == "Species"
    assert tree["reference_labels"]["label"].values.astype(str).tolist() == species.tolist()
    expected = mixflow.adjusted_rand_index(hard_labels(tree, "em"), species)
    # at the maximum (log-likelihood -134.136, reached from 50 random starts of two strategies) the three
    # clusters of the petal measurements cut versicolor/virginica differently from the species: ARI about 0.58
    assert expected > 0.5
    agreement = pd.read_csv(next(p for p in written if p.name.endswith("agreement-with-species.csv")),
                            index_col="method")
    assert list(agreement.index) == ["em"]
    assert agreement.loc["em", "adjusted_rand_index"] == pytest.approx(expected, rel=1e-12)
    assert agreement.loc["em", "n_classes"] == 3 and agreement.loc["em", "n_clusters"] == 3


def test_show_prints_the_summary_text_and_with_table_the_whole_table(iris_run, capsys):
    _, written = iris_run
    container = _container(written)
    tree = mixflow.load(container)
    assert main(["show", str(container)]) == 0
    out = capsys.readouterr().out
    assert out == mixflow.summary(tree, kind="text") + "\n" == mixflow.describe(tree) + "\n"
    assert "EM: MLE, log-likelihood" in out and "EM bootstrap: 10 nonparametric replicates" in out
    assert "mu[0, Petal.Length] (cm)" in out  # the shipped dataset's unit
    ari = mixflow.adjusted_rand_index(hard_labels(tree, "em"), mixflow.load_dataset("iris")["Species"])
    assert f"agreement with 'Species' (adjusted Rand index): EM {ari:.4f}" in out
    assert main(["show", "--table", str(container)]) == 0
    table = capsys.readouterr().out.split(out, 1)[1]
    assert "r_hat" in table and "ess_bulk" in table
    first_mu = mixflow.summary(tree).query("parameter == 'mu' and method == 'bootstrap'").iloc[0]
    assert f"{first_mu['estimate']:.5f}"[:6] in table  # every row, with the bootstrap's


def test_show_says_nuts_draws_too_few_for_an_ess_as_the_report_does(tmp_path, capsys):
    # 2 draws per chain: no R-hat nor ESS. The report counts that as a problem; show said nothing of it (only the
    # ESS the draws cannot give, as low).
    from mixflow.present.compare import compare
    from mixflow.present.report.cards import fit_findings_apart
    from tests.test_compare import make_container

    tree = make_container(("em", "mcmc"), chains=1, draws=2)
    tree["mcmc"].attrs.update({"max_rhat": float("nan"), "min_ess_bulk": float("nan"), "min_ess_tail": float("nan"),
                               "n_divergences": 0, "low_ess_bulk": '["mu"]', "low_ess_tail": '["mu"]'})
    said = ("2 draws per chain, too few to compute R-hat or ESS (they need at least 4): the draws are no sample to "
            "summarise, and their means and intervals say nothing; run more draws")
    assert ("bad", f"MCMC: {said}.") in fit_findings_apart(tree, None, compare(tree))[0]  # the report's words
    path = mixflow.save(tree, tmp_path / "few.nc")
    assert main(["show", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"\n  - MCMC (NUTS): {said}\n" in out
    assert "ESS at" not in out  # no ESS to call low


def test_show_into_a_pipe_that_closes_early_is_not_an_error(iris_run):
    _, written = iris_run
    command = [sys.executable, "-c", "import sys; from mixflow.cli import main; sys.exit(main())",
               "show", str(_container(written))]
    # a reader that stops after one line, like `mixflow show results.nc | head -1`
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        first = process.stdout.readline()
        process.stdout.close()
        error = process.stderr.read()
        code = process.wait()
    assert first.startswith(b"GaussianMixture(")
    assert code == 0 and b"Traceback" not in error, error.decode()


def test_a_stdout_that_breaks_mid_output_ends_the_command_quietly(iris_run, monkeypatch, tmp_path):
    """The broken-pipe branch itself: a stdout whose reader is gone raises BrokenPipeError on write."""
    _, written = iris_run

    class ClosedPipe:
        def __init__(self):
            self.sink = open(tmp_path / "sink", "w")  # a real descriptor for the branch to redirect

        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

        def fileno(self):
            return self.sink.fileno()

    closed = ClosedPipe()
    monkeypatch.setattr(sys, "stdout", closed)
    try:
        assert main(["show", str(_container(written))]) == 0
    finally:
        closed.sink.close()


def test_a_command_started_with_its_standard_output_closed_succeeds(iris_run, monkeypatch):
    # `mixflow run wf.toml >&-`: Python starts with sys.stdout None; the final flush was an internal error (status 1)
    _, written = iris_run
    monkeypatch.setattr(sys, "stdout", None)
    assert main(["show", str(_container(written))]) == 0


def test_report_rebuilds_next_to_the_container_with_the_workflow_title(iris_run, capsys, no_report_plots):
    _, written = iris_run
    container = _container(written)
    expected = container.with_name(f"{container.stem}-report.html")
    assert not expected.exists()
    assert main(["report", str(container)]) == 0
    assert str(expected) in capsys.readouterr().out
    page = expected.read_text()
    assert "<title>Iris, three clusters against the species</title>" in page
    assert "Agreement with Species" in page and "Species by EM cluster" in page
    assert "virginica" in page


def test_report_with_a_choice_of_k_table_and_an_explicit_path(galaxies_run, tmp_path, capsys, no_report_plots):
    folder, written = galaxies_run
    selection = next(p for p in written if p.name.endswith("choice-of-k.csv"))
    out = tmp_path / "again.html"
    assert main(["report", str(_container(written)), "--selection", str(selection), "--out", str(out),
                 "--title", "Galaxies again"]) == 0
    page = out.read_text()
    assert "<title>Galaxies again</title>" in page and "Choice of K" in page
    best = int(pd.read_csv(selection, index_col="k")["bic"].idxmin())
    assert re.search(rf"BIC[^.;]* prefers? K = {best}", page)  # the criteria, read back from the CSV
    assert "Agreement with" not in page  # no reference labels in this run
    assert "(not included" not in capsys.readouterr().out


def _diagnostics_count(page: str) -> str:
    return re.search(r"<th>warnings and diagnostics</th><td>(.*?)</td>", page).group(1)


def test_report_includes_the_choice_of_k_beside_the_results_as_the_run_s_report_does(galaxies_run, tmp_path, capsys,
                                                                                      no_report_plots):
    # the default page is the run's own report: written again without --selection, it must not lose the choice of K
    # (its table, criteria and findings), which the run's report includes
    _, written = galaxies_run
    container, selection = _container(written), next(p for p in written if p.name.endswith("choice-of-k.csv"))
    assert main(["report", str(container), "--selection", str(selection), "--out", str(tmp_path / "chosen.html")]) == 0
    capsys.readouterr()
    assert main(["report", str(container), "--out", str(tmp_path / "default.html")]) == 0
    said = capsys.readouterr().out
    assert f"(included: the choice of K beside it, {selection}; --no-selection leaves it out)" in said
    chosen, default = (tmp_path / "chosen.html").read_text(), (tmp_path / "default.html").read_text()
    assert "Choice of K" in default
    assert _diagnostics_count(default) == _diagnostics_count(chosen)
    # --no-selection leaves it out, and says so
    assert main(["report", str(container), "--no-selection", "--out", str(tmp_path / "alone.html")]) == 0
    assert (f"(not included, as --no-selection asks: the choice of K beside it, {selection}, and its criteria and "
            "findings)") in capsys.readouterr().out
    assert "Choice of K" not in (tmp_path / "alone.html").read_text()
    with pytest.raises(SystemExit):  # one or the other
        main(["report", str(container), "--no-selection", "--selection", str(selection)])


def test_report_links_the_other_k_reports_beside_the_results(galaxies_run, tmp_path, capsys, no_report_plots):
    # a run that fits several K ([select] fit = "all-preferred") links each K's report from the others'
    _, written = galaxies_run
    container, selection = _container(written), next(p for p in written if p.name.endswith("choice-of-k.csv"))
    k = int(mixflow.load(container)["em/estimate"].sizes["component"])
    other = next(j for j in pd.read_csv(selection)["k"] if j != k)
    folder = tmp_path / "run"
    folder.mkdir()
    for path in (container, selection):
        (folder / path.name).write_bytes(path.read_bytes())
    base = container.stem.rsplit("-k", 1)[0]
    (folder / f"{base}-k{other}-report.html").write_text("<html></html>")
    assert main(["report", str(folder / container.name)]) == 0
    page = (folder / f"{container.stem}-report.html").read_text()
    assert f'<a href="{base}-k{other}-report.html">K = {other}</a>' in page
    # a report written elsewhere links them by their path from there
    assert main(["report", str(folder / container.name), "--out", str(tmp_path / "elsewhere.html")]) == 0
    assert f'<a href="run/{base}-k{other}-report.html">K = {other}</a>' in (tmp_path / "elsewhere.html").read_text()
    capsys.readouterr()


def test_report_refuses_a_choice_of_k_table_of_another_model_or_data_set(galaxies_run, iris_run, tmp_path, capsys):
    _, written = galaxies_run
    container, selection = _container(written), next(p for p in written if p.name.endswith("choice-of-k.csv"))
    k = int(mixflow.load(container)["em/estimate"].sizes["component"])
    iris = _container(iris_run[1])
    parameters = mixflow.load(iris)["em"].attrs["n_parameters"]  # K=3 of four features
    assert main(["report", str(iris), "--selection", str(selection), "--out", str(tmp_path / "r.html")]) == 2
    assert "--selection: expected the choice-of-K table of this fit's model, got one whose K=3 has 8 free " \
           f"parameters where this fit has {parameters} (another family, covariance or set of features" in \
        capsys.readouterr().err
    table = pd.read_csv(selection)
    # the same model on 100 observations instead of the 82 galaxies: BIC's penalty says so
    other = table.assign(bic=table["bic"] + table["n_parameters"] * (np.log(100) - np.log(82)))
    other.to_csv(tmp_path / "other.csv", index=False)
    assert main(["report", str(container), "--selection", str(tmp_path / "other.csv")]) == 2
    assert "got one computed from 100 observations where this fit has 82 (another data set" in capsys.readouterr().err
    # as many observations, the same model, but the K=1 fit (one maximum) of other data: a table of other data
    table.assign(log_likelihood=np.where(table["k"] == 1, table["log_likelihood"] - 5.0, table["log_likelihood"])
                 ).to_csv(tmp_path / "same_size.csv", index=False)
    assert main(["report", str(container), "--selection", str(tmp_path / "same_size.csv")]) == 2
    one = float(table.loc[table["k"] == 1, "log_likelihood"].iloc[0])
    assert (f"--selection: expected the choice-of-K table of this fit's data, got one whose K=1 fit has log-likelihood "
            f"{one - 5.0:.6g} where this fit's data give ") in capsys.readouterr().err
    table[table["k"] != k].to_csv(tmp_path / "without.csv", index=False)
    assert main(["report", str(container), "--selection", str(tmp_path / "without.csv")]) == 2
    assert f"--selection: expected a choice-of-K table with a row for this fit's K={k}, got one of K=" in \
        capsys.readouterr().err
    table.iloc[[0]].to_csv(tmp_path / "k_only.csv", index=False, columns=["k", "bic"])  # too little to compare
    assert main(["report", str(container), "--selection", str(tmp_path / "k_only.csv")]) == 2
    assert f"--selection: expected a choice-of-K table with a row for this fit's K={k}, got one of K=1 " in \
        capsys.readouterr().err
    pd.concat([table, table.iloc[[-1]]]).to_csv(tmp_path / "twice.csv", index=False)
    assert main(["report", str(container), "--selection", str(tmp_path / "twice.csv")]) == 2
    assert f"--selection: expected one row per K, got K={int(table['k'].iloc[-1])} more than once" in \
        capsys.readouterr().err
    (tmp_path / "text_k.csv").write_text("k,bic\nabc,1\n")
    assert main(["report", str(container), "--selection", str(tmp_path / "text_k.csv")]) == 2
    assert "--selection: expected whole numbers of components in column 'k', got ['abc']" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists() and not list(tmp_path.glob("*.html"))


@pytest.mark.parametrize("argv", [["run", "w.toml", "--out", ""], ["report", "r.nc", "--out", " "],
                                  ["report", "r.nc", "--title", ""], ["report", "r.nc", "--selection", ""]])
def test_an_empty_path_or_title_is_refused(argv, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    assert f"error: argument {argv[2]}: expected " in capsys.readouterr().err


def test_report_and_show_refuse_what_is_not_a_container(galaxies_run, tmp_path, capsys):
    folder, written = galaxies_run
    container, selection = _container(written), next(p for p in written if p.name.endswith("choice-of-k.csv"))
    for command in ("report", "show"):
        assert main([command, str(tmp_path / "missing.nc")]) == 2
        said = capsys.readouterr().err
        assert "results: expected an existing mixflow results file (.nc, or a Zarr store of one), got" in said
        assert main([command, str(selection)]) == 2
        assert "results: expected a mixflow results file (NetCDF written by 'mixflow run'" in capsys.readouterr().err
    plain = tmp_path / "plain.nc"
    xr.DataTree(xr.Dataset({"x": ("obs", np.arange(3.0))})).to_netcdf(plain, engine="h5netcdf")
    assert main(["report", str(plain)]) == 2
    assert "a NetCDF file without the model attribute and /observed_data" in capsys.readouterr().err
    assert main(["report", str(container), "--selection", str(tmp_path / "none.csv")]) == 2
    assert "--selection: expected an existing choice-of-K CSV file" in capsys.readouterr().err
    assert main(["report", str(container), "--selection", str(next(p for p in written if p.name.endswith(
        "-comparison.csv")))]) == 2
    assert "--selection: expected a choice-of-K table" in capsys.readouterr().err
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"k,bic\n1,2.0\n2,1.0\n3,caf\xe9\n")
    assert main(["report", str(container), "--selection", str(latin)]) == 2
    assert "which is not UTF-8 (invalid continuation byte at byte 23, line 4)" in capsys.readouterr().err
    full = mixflow.load(container)
    for edited, said in ((lambda tree: tree["em/estimate"].to_dataset(inherit=False).drop_vars("mu"),
                          "results: expected the model's parameters ['weights', 'mu', 'covariance'] in /em/estimate, "
                          "got ['covariance', 'weights'] (missing ['mu'])"),
                         (None, "results: expected a mixflow result with a fit (EM, MCMC or ADVI), got one with "
                                "groups ['em', 'observed_data'] and none"),
                         # NaN weights: "data: expected every row to have a positive density" (about the data)
                         (lambda tree: tree["em/estimate"].to_dataset(inherit=False).assign(
                             weights=lambda d: d["weights"] * np.nan),
                          "results: expected finite numbers in /em/estimate, got values that are not in ['weights'] (a "
                          "damaged or altered file)")):
        tree = full.copy()
        if edited is None:  # no estimate: nothing to show (show printed a header and exited 0)
            tree = xr.DataTree.from_dict({node.path: node.to_dataset(inherit=False) for node in full.subtree
                                          if not node.path.startswith("/em/estimate")})
            tree.attrs = full.attrs
        else:  # a parameter gone: show and report failed with "internal error: KeyError: 'mu'"
            tree["em/estimate"] = xr.DataTree(edited(full))
        tree.to_netcdf(tmp_path / "edited.nc", engine="h5netcdf")
        for command in ("show", "report"):
            assert main([command, str(tmp_path / "edited.nc")]) == 2
            assert f"{said} (file '{tmp_path / 'edited.nc'}')" in capsys.readouterr().err
    # the data gone from /observed_data: "internal error: KeyError: 'Could not find node at x'", exit 1
    tree = xr.DataTree.from_dict({node.path: node.to_dataset(inherit=False).drop_vars("x")
                                  if node.path == "/observed_data" else node.to_dataset(inherit=False)
                                  for node in full.subtree})
    tree.attrs = full.attrs
    tree.to_netcdf(tmp_path / "no-data.nc", engine="h5netcdf")
    for command in ("show", "report"):
        assert main([command, str(tmp_path / "no-data.nc")]) == 2
        assert "results: expected /observed_data to hold the data, x (obs, feature), got " in capsys.readouterr().err
    # the observed rows cut short (the report plotted and summarised the rows left, without a word)
    rows = full["observed_data"].sizes["obs"]
    for cut, said in (({"/observed_data"}, f"expected /em/responsibilities to have one entry per row of "
                                            f"/observed_data (50), got {rows}"),
                      ({"/observed_data", "/em/responsibilities"},
                       f"expected /observed_data to hold the {rows} observations the EM fit recorded (/em "
                       "n_observations), got 50")):
        tree = xr.DataTree.from_dict({node.path: node.to_dataset(inherit=False).isel(obs=slice(50))
                                      if node.path in cut else node.to_dataset(inherit=False) for node in full.subtree})
        tree.attrs = full.attrs
        tree.to_netcdf(tmp_path / "cut.nc", engine="h5netcdf")
        for command in ("show", "report"):
            assert main([command, str(tmp_path / "cut.nc")]) == 2
            assert f"results: {said} (a file cut short, or groups of two fits) (file '{tmp_path / 'cut.nc'}')" in \
                capsys.readouterr().err
    # the recorded warnings altered: the report failed with "internal error: JSONDecodeError" (not JSON) or
    # "AttributeError" (entries that are not warnings), and the summary skipped them without a word
    for recorded in ("not json [", '[1, {"x": 2}]', '{"category": "UserWarning"}'):
        tree = full.copy()
        tree.attrs["run_warnings"] = recorded
        tree.to_netcdf(tmp_path / "altered.nc", engine="h5netcdf")
        for command in ("show", "report"):
            assert main([command, str(tmp_path / "altered.nc")]) == 2
            assert (f"results: expected the attribute 'run_warnings' to be a JSON list of the warnings recorded, "
                    f'each {{"category": ..., "message": ...}}, got {recorded!r} (a damaged or altered file)') in \
                capsys.readouterr().err
    typed = tmp_path / "typed.csv"  # a value typed in over a criterion: the column is read as text
    typed.write_text("k,bic\n1,2.0\n2,abc\n3,1.0\n")
    assert main(["report", str(container), "--selection", str(typed)]) == 2
    assert f"--selection: expected numbers in column 'bic', got 'abc' in the row of K=2 ('{typed}')" in \
        capsys.readouterr().err
    # the workflow's CSV checks hold for --selection too: a row of one field more than the header (pandas took
    # the first field as the row labels and shifted the criteria under the wrong names), and a results file
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("k,bic\n1,1,9.0\n2,2,8.0\n3,3,7.0\n")
    assert main(["report", str(container), "--selection", str(ragged)]) == 2
    assert (f"--selection: expected rows of as many fields as the header names (got '{ragged}', whose header names "
            "2 columns and whose line 2 has 3 fields)") in capsys.readouterr().err
    assert main(["report", str(container), "--selection", str(container)]) == 2
    assert (f"--selection: expected a CSV file, got '{container}', which is an HDF5 or NetCDF-4 file (a mixflow "
            "results file is one: mixflow show reads it)") in capsys.readouterr().err
    assert main(["report", str(container), "--out", str(tmp_path / "report.txt")]) == 2
    assert "error: --out: expected a file name ending in .html" in capsys.readouterr().err
    assert main(["report", str(container), "--out", str(tmp_path)]) == 2
    assert f"error: --out: expected a file name ending in .html, got '{tmp_path}', which is a directory" in \
        capsys.readouterr().err
    assert main(["report", str(container), "--out", str(latin / "r.html")]) == 2
    assert f"error: --out: expected a file in an existing directory, got '{latin / 'r.html'}' ('{latin}' is a " \
           "file)" in capsys.readouterr().err


def test_a_warning_outside_a_run_is_one_line_without_source():
    script = textwrap.dedent("""
        import warnings
        import mixflow.cli

        def warns(args):
            warnings.warn("the data name is unknown", UserWarning, stacklevel=1)
            return 0

        mixflow.cli._datasets = warns
        status = mixflow.cli.main(["datasets"])
        assert warnings.formatwarning is not mixflow.cli._one_line_warning  # restored after the command
        raise SystemExit(status)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "mixflow: warning: UserWarning: the data name is unknown\n"


def test_version_and_the_run_commands_help_name_what_they_take(capsys):
    from importlib.metadata import version

    from mixflow.cli import main

    with pytest.raises(SystemExit) as ended:
        main(["--version"])
    assert ended.value.code == 0 and capsys.readouterr().out.strip() == f"mixflow {version('mixflow')}"
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "workflow    the workflow TOML file" in capsys.readouterr().out


def test_an_interrupt_after_the_command_is_done_changes_nothing():
    # in the second or two of Python's shutdown after a completed run, Ctrl-C killed it (status 130) or printed a
    # traceback; the interrupt here comes once main has returned, as it did then
    code = ("import os, signal, sys, time; sys.argv = ['mixflow', 'datasets']; from mixflow.cli import console; "
            "status = console(); os.kill(os.getpid(), signal.SIGINT); os.kill(os.getpid(), signal.SIGTERM); "
            "time.sleep(0.2); sys.exit(status)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert (done.returncode, done.stderr) == (0, "") and "galaxies" in done.stdout
    # main called from Python (a script, a notebook) leaves the signals as they were
    code = ("import signal, sys; sys.argv = ['mixflow', 'datasets']; from mixflow.cli import main; main(); "
            "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("True")
    from importlib.metadata import entry_points

    assert [e.value for e in entry_points(group="console_scripts", name="mixflow")] == ["mixflow.cli:console"]
