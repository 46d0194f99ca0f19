"""The ``mixflow`` command: run workflows, list datasets, show and report saved results.

Every failure ends with lines ``mixflow <command>: error: ...`` on stderr that name the file at fault and
what to do, and one of these exit statuses:

- 0: success (also when the output is piped into a reader that stops early, e.g. ``| head``);
- 1: an internal error (a bug of mixflow or of a library); ``--debug`` prints its traceback;
- 2: bad input: the workflow, the data, a results file, or an OS error on a path the user gave (an output
  directory that cannot be created or written, a full disk, a missing file);
- 130: interrupted (Ctrl-C): the sampler is stopped, no half-written file is left, and the message lists
  the files completely written before the interrupt;
- 143: terminated (SIGTERM, as ``kill`` and ``timeout`` send): stopped as an interrupt is;
- 129: hung up (SIGHUP: the terminal closed, an ssh session lost): stopped as SIGTERM is.
"""

import argparse
import contextlib
import glob
import math
import os
import re
import signal
import sys
import traceback
import warnings
from pathlib import Path

from mixflow.errors import (
    TERMINATING_SIGNALS,
    InputError,
    MissingPathError,
    Terminated,
    describe_os_error,
    interrupts_noted,
    terminating_as_interrupt,
    termination,
)
from mixflow.warnings import ADVIDivergenceError
from mixflow.wording import agreeing, counted

__all__ = ["EXIT_BAD_INPUT", "EXIT_HUNG_UP", "EXIT_INTERNAL", "EXIT_INTERRUPTED", "EXIT_TERMINATED", "main"]

EXIT_INTERNAL, EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_HUNG_UP = 1, 2, 130, 143, 129


def _run(args) -> int:
    from mixflow.workflow.run import run_workflow

    written = run_workflow(args.workflow, args.out, quiet=args.quiet)
    reports = [p for p in written if p.suffix == ".html"]
    _say(f"wrote {counted(len(written), 'file')} to {args.out}" + (f"; report: {reports[0]}" if reports else ""))
    return 0


def _datasets(args) -> int:
    import pandas as pd

    from mixflow.datasets import list_datasets

    with pd.option_context("display.max_colwidth", 90, "display.width", 200):
        _say(list_datasets().to_string())
    return 0


def _load_results(path: str):
    """A saved mixflow container, or an error that says what ``path`` is instead."""
    from mixflow.container.io import load
    from mixflow.container.read import available_methods, check_tree

    if not Path(path).exists():
        raise MissingPathError(f"results: expected an existing mixflow results file (.nc, or a Zarr store of one), "
                               f"got {path!r}")
    try:
        tree = load(path)
    except InputError as error:  # its message names the file
        raise InputError(f"results: {str(error).removeprefix('path: ')}") from None
    try:
        check_tree(tree, "results")
    except InputError as error:
        raise InputError(f"{error} (file {path!r})") from None
    if not available_methods(tree):
        raise InputError(f"results: expected a mixflow result with a fit (EM, MCMC or ADVI), got one with groups "
                         f"{sorted(tree.children)} and none (file {path!r})")
    return tree


def _read_selection(path: str):
    """A choice-of-K table written by ``mixflow run`` (``<model>-k<first>-<last>-choice-of-k.csv``), its preferred K."""
    import numpy as np
    import pandas as pd

    from mixflow.analysis.select import HIGHER_IS_BETTER, LOWER_IS_BETTER, preferred_k
    from mixflow.workflow.csv_table import CsvProblem, read_table

    if not Path(path).is_file():
        raise MissingPathError(f"--selection: expected an existing choice-of-K CSV file, got {path!r}")
    try:
        table = read_table(Path(path))
    except CsvProblem as problem:
        raise InputError(f"--selection: {problem}") from None
    criteria = [c for c in LOWER_IS_BETTER + HIGHER_IS_BETTER if c in table]
    if "k" not in table or not criteria:
        raise InputError(f"--selection: expected a choice-of-K table (columns 'k' and some of bic, aic, icl, "
                         f"cv_log_likelihood, elpd_loo, as mixflow run writes), got columns {list(table.columns)}")
    if pd.api.types.is_float_dtype(table["k"]) and np.isfinite(table["k"]).all() and (table["k"] % 1 == 0).all():
        table["k"] = table["k"].astype(int)  # a spreadsheet's 2.0
    if not pd.api.types.is_integer_dtype(table["k"]):
        raise InputError(f"--selection: expected whole numbers of components in column 'k', got "
                         f"{table['k'].astype(str).tolist()[:5]} ({path!r})")
    for criterion in criteria:  # a value a spreadsheet typed in ("abc"): the column is read as text
        values = pd.to_numeric(table[criterion], errors="coerce")
        wrong = table[criterion][values.isna() & table[criterion].notna()]
        if len(wrong):
            raise InputError(f"--selection: expected numbers in column {criterion!r}, got {wrong.iloc[0]!r} in the "
                             f"row of K={table['k'][wrong.index[0]]} ({path!r})")
        table[criterion] = values
    repeated = sorted(set(table["k"][table["k"].duplicated()].tolist()))
    if repeated:
        raise InputError(f"--selection: expected one row per K, got K={', '.join(map(str, repeated))} more than once "
                         f"({path!r})")
    table = table.set_index("k")
    table.attrs["preferred"] = preferred_k(table)
    return table


def _check_selection(table, tree, path: str) -> None:
    """An InputError unless a choice-of-K table can be that of the results' EM fit: its model and its data.

    At the fit's K, the table's number of free parameters must be the fit's (the same family, covariance and
    features), and the number of observations its BIC was computed with, ``exp((bic + 2 log L) / p)``, the
    fit's: a table of another model or data set would otherwise be reported beside this fit as its own.
    """
    if "em" not in tree.children or tree["em"].attrs.get("trimmed_components", 0):  # trimmed: fewer components
        return  # than the K it was fitted at
    attrs = tree["em"].attrs
    k = int(tree["em/estimate"].sizes["component"])
    if k not in table.index:
        raise InputError(f"--selection: expected a choice-of-K table with a row for this fit's K={k}, got one of "
                         f"K={', '.join(map(str, table.index))} ({path!r})")
    if not {"log_likelihood", "n_parameters", "bic"} <= set(table.columns):
        return  # nothing to compare the fit with
    row = table.loc[k]
    if not all(math.isfinite(float(row[column])) for column in ("log_likelihood", "n_parameters", "bic")):
        return  # that K's fit left no criteria (it failed or was skipped): nothing to compare
    if int(row["n_parameters"]) != int(attrs["n_parameters"]):
        raise InputError(f"--selection: expected the choice-of-K table of this fit's model, got one whose K={k} has "
                         f"{int(row['n_parameters'])} free parameters where this fit has {int(attrs['n_parameters'])} "
                         f"(another family, covariance or set of features; {path!r})")
    try:
        n = math.exp((row["bic"] + 2 * row["log_likelihood"]) / row["n_parameters"])
    except OverflowError:
        n = math.inf
    if not abs(n - attrs["n_observations"]) <= 1e-6 * attrs["n_observations"]:
        raise InputError(f"--selection: expected the choice-of-K table of this fit's data, got one computed from "
                         f"{n:.6g} observations where this fit has {attrs['n_observations']:.6g} (another data set; "
                         f"{path!r})")
    one = _one_component_log_likelihoods(tree) if 1 in table.index else None
    listed = float(table.loc[1, "log_likelihood"]) if one is not None else math.nan
    if math.isfinite(listed) and not any(abs(listed - value) <= 1e-6 * max(1.0, abs(value)) for value in one):
        raise InputError(f"--selection: expected the choice-of-K table of this fit's data, got one whose K=1 fit has "
                         f"log-likelihood {listed:.6g} where this fit's data give {one[0]:.6g} (MLE) or {one[1]:.6g} "
                         f"(MAP): another data set of as many observations ({path!r})")


def _one_component_log_likelihoods(tree) -> tuple[float, float] | None:
    """The log-likelihoods of the MLE and MAP fits of one component to the fit's data: a check of a table's K=1 row.

    One component has one maximum, whatever the start; None for a result holding a sample of the rows (Dask).
    """
    from mixflow.container.layout import OBSERVED_DATA
    from mixflow.container.read import fitted_model, observed_data
    from mixflow.engines.em import EMOptions, fit_em

    if "sample" in tree[OBSERVED_DATA].attrs:
        return None
    model, data = fitted_model(tree, 1), observed_data(tree)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tuple(float(fit_em(model, data, EMOptions(map=map_fit, n_init=1), 0)["attrs"]["log_likelihood"])
                     for map_fit in (False, True))


def _show(args) -> int:
    import pandas as pd

    from mixflow.present.summary import summary

    tree = _load_results(args.results)
    _say(summary(tree, kind="text"))
    if args.table:
        with pd.option_context("display.width", 200, "display.max_rows", None, "display.max_columns", None):
            _say()
            _say(summary(tree).to_string(index=False))
    return 0


def _report(args) -> int:
    from mixflow.present.report.page import report

    tree = _load_results(args.results)
    results = Path(args.results)
    out = Path(args.out) if args.out is not None else results.with_name(f"{results.stem}-report.html")
    notes, other_fits = [], None
    if args.selection is not None:
        selection = _read_selection(args.selection)
        _check_selection(selection, tree, args.selection)
    else:  # the run's own report includes its choice of K: a report written again includes it too, unless told not to
        selection, notes = _selection_beside(results, tree, args.no_selection)
    if selection is not None:
        other_fits = _other_reports_beside(results, selection, out)
    title = args.title if args.title is not None else tree.attrs.get("workflow_title")
    try:  # report's argument `path` is --out here
        written = report(tree, out, selection=selection, title=title, other_fits=other_fits)
    except InputError as error:
        if not str(error).startswith("path: "):
            raise
        raise type(error)(f"--out: {str(error).removeprefix('path: ')}") from None
    except OSError as error:  # the tree is in memory: an OS error here is about --out
        raise InputError(f"--out: {describe_os_error(error).removeprefix('path: ')}") from None
    _say(f"wrote {written}")
    for note in notes:
        _say(note)
    return 0


def _selection_beside(results: Path, tree, left_out: bool):
    """The choice-of-K table 'mixflow run' wrote beside ``results`` (checked to be its fit's), and what to say of it.

    Returns the table (None when there is none, it is not this fit's, or ``left_out``: ``--no-selection``) and the
    lines that say why a table beside the results is not in the report: never left out unsaid.
    """
    tables = _choice_of_k_beside(results)
    if not tables:
        return None, []
    if left_out:
        return None, [f"(not included, as --no-selection asks: the choice of K beside it, {', '.join(map(str, tables))}"
                      ", and its criteria and findings)"]
    if len(tables) > 1:
        return None, [f"(not included: {len(tables)} choice-of-K tables beside it, {', '.join(map(str, tables))}; "
                      "--selection names the one to include)"]
    try:
        selection = _read_selection(str(tables[0]))
        _check_selection(selection, tree, str(tables[0]))
    except (InputError, OSError) as error:  # not a reason to refuse the report: said, and the report written without it
        why = describe_os_error(error) if isinstance(error, OSError) else str(error).removeprefix("--selection: ")
        return None, [f"(not included: the choice of K beside it, {tables[0]}, which could not be used: {why})"]
    return selection, [f"(included: the choice of K beside it, {tables[0]}; --no-selection leaves it out)"]


def _other_reports_beside(results: Path, selection, out: Path) -> dict | None:
    """The reports of the table's other K beside ``results``, linked from ``out`` as the run's report links them.

    A run with ``[select] fit = "all-preferred"`` writes ``<model>-k<K>-report.html`` for each K it fits.
    """
    match = re.fullmatch(r"(.+)-k(\d+)", results.stem)
    if match is None:
        return None
    others = {int(k): results.with_name(f"{match.group(1)}-k{k}-report.html") for k in selection.index
              if int(k) != int(match.group(2))}
    return {k: Path(os.path.relpath(path, out.absolute().parent)).as_posix() for k, path in others.items()
            if path.is_file()} or None


def _choice_of_k_beside(results: Path) -> list[Path]:
    """The choice-of-K tables 'mixflow run' wrote beside a results file of its model (one after a run).

    A run writes ``<model>-k<K>.nc`` and ``<model>-k<first>-<last>-choice-of-k.csv``.
    """
    match = re.fullmatch(r"(.+)-k\d+", results.stem)
    if match is None:
        return []
    own = re.compile(re.escape(match.group(1)) + r"-k\d+-\d+-choice-of-k\.csv")  # not another model's of a longer name
    return sorted(path for path in results.parent.glob(f"{glob.escape(match.group(1))}-k*-choice-of-k.csv")
                  if own.fullmatch(path.name))


#: How an OS error writing the standard output (a full disk under a redirection) names it.
STANDARD_OUTPUT = "<standard output>"


def _say(text: str = "") -> None:
    """Print a line on the standard output (see :func:`_on_standard_output`)."""
    with _on_standard_output():
        print(text)


@contextlib.contextmanager
def _on_standard_output():
    """An OS error writing the standard output names it; the rest of the output is dropped.

    Python's error names no file, and the text left in the buffer would fail again, unsaid, at exit: the
    standard output is pointed at the null device first (as after a broken pipe).
    """
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as error:
        if error.filename is not None:
            raise
        with contextlib.suppress(OSError, ValueError):  # a stream without a descriptor (captured) keeps its own
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise OSError(error.errno, error.strerror, STANDARD_OUTPUT) from None


def _non_empty(what: str):
    """An argparse ``type`` refusing an empty value (``--out ""`` would write into the current directory)."""
    def checked(value: str) -> str:
        if not value.strip():
            raise argparse.ArgumentTypeError(f"expected {what}, got an empty value {value!r}")
        return value
    return checked


def _installed_version() -> str:
    """The installed distribution's version (without importing the numerical stack)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mixflow")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "(not installed)"


def console() -> int:
    """The ``mixflow`` command: :func:`main`, then the process's exit.

    Once the command has done and said all it does, an interrupt, SIGTERM or SIGHUP can no longer change what it did:
    they
    are ignored while Python shuts down (a second or two of modules' finalisers), where they would kill a run that
    completed (status 130) or print a traceback. Only here, in the process's own command: :func:`main` called
    from Python leaves the signals as they were.
    """
    status = main()
    for number in (signal.SIGINT, *TERMINATING_SIGNALS):
        signal.signal(number, signal.SIG_IGN)
    return status


def main(argv=None) -> int:
    """Entry point of the ``mixflow`` command line: run the command, say its errors, return the exit status."""
    parser = argparse.ArgumentParser(prog="mixflow", description="Finite mixture models: EM, NUTS and ADVI.",
                                     epilog="Exit status: 0 success, 1 internal error (see --debug), 2 bad input "
                                            "or an OS error on a given path, 130 interrupted, 143 terminated "
                                            "(SIGTERM), 129 hung up (SIGHUP).")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="print the traceback of an error (to report an internal error)")
    parser.add_argument("--debug", action="store_true", default=False, help=argparse.SUPPRESS)
    parser.add_argument("--version", action="version", version=f"mixflow {_installed_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a workflow TOML file", parents=[common])
    run.add_argument("workflow", help="the workflow TOML file: data, models, methods and outputs (see the README)")
    run.add_argument("--out", default="out", type=_non_empty("an output directory"),
                     help="output directory (default: out)")
    run.add_argument("--quiet", action="store_true",
                     help="no progress messages nor warnings (run.log keeps them): only their counts (on stderr) "
                          "and the last line, what was written (on stdout)")
    run.set_defaults(handler=_run)
    commands.add_parser("datasets", help="list the shipped datasets", parents=[common]).set_defaults(handler=_datasets)
    show = commands.add_parser("show", help="the summary of a saved results file (mixflow.summary's text)",
                               parents=[common])
    show.add_argument("results", help="a container written by 'mixflow run' (<model>.nc)")
    show.add_argument("--table", action="store_true",
                      help="also print the whole table: every parameter element by method, with intervals, "
                           "R-hat and ESS")
    show.set_defaults(handler=_show)
    rebuild = commands.add_parser("report", help="write the HTML report of a saved results file again",
                                  parents=[common])
    rebuild.add_argument("results", help="a container written by 'mixflow run' (<model>.nc)")
    rebuild.add_argument("--out", type=_non_empty("a .html file name"),
                         help="the .html file (default: next to RESULTS, <stem>-report.html)")
    chosen = rebuild.add_mutually_exclusive_group()
    chosen.add_argument("--selection", metavar="CSV", type=_non_empty("a CSV file name"),
                        help="a choice-of-K table (<model>-k<first>-<last>-choice-of-k.csv from 'mixflow run') to "
                             "include (default: the one 'mixflow run' wrote beside RESULTS, as in the run's own "
                             "report)")
    chosen.add_argument("--no-selection", action="store_true",
                        help="leave out the choice-of-K table beside RESULTS (its criteria and findings)")
    rebuild.add_argument("--title", type=_non_empty("a title"),
                         help="page title (default: the workflow's title, else from the data name)")
    rebuild.set_defaults(handler=_report)
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    formatwarning = warnings.formatwarning
    if not debug:  # a warning is one line, without mixflow's source line (--debug keeps Python's form)
        warnings.formatwarning = _one_line_warning
    terminated = []
    try:
        with terminating_as_interrupt() as terminated, interrupts_noted():
            status = args.handler(args)
        with _on_standard_output():  # what is still buffered: its error is this command's
            if sys.stdout is not None:  # None when started with the standard output closed (>&-): nothing said
                sys.stdout.flush()
        return status
    except BrokenPipeError:  # output piped into a reader that stopped early (e.g. `| head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except KeyboardInterrupt as interrupt:
        if terminated:  # SIGTERM's status, 143, or SIGHUP's, 129: 128 plus the signal's number, as a shell's
            how = termination(interrupt) or Terminated(signum=terminated[0])
            return _fail(args.command, [_interrupted(interrupt, str(how))], 128 + terminated[0], debug)
        return _fail(args.command, [_interrupted(interrupt)], EXIT_INTERRUPTED, debug)
    except OSError as error:
        return _fail(args.command, _kept([describe_os_error(error)], error), EXIT_BAD_INPUT, debug)
    except InputError as error:  # a WorkflowError (an InputError) holds one line per error found
        return _fail(args.command, _kept(str(error).splitlines() or [type(error).__name__], error), EXIT_BAD_INPUT,
                     debug)
    except ADVIDivergenceError as error:  # the optimisation diverged: its message says which setting to change
        return _fail(args.command, _kept([f"ADVI diverged: {error}"], error), EXIT_BAD_INPUT, debug)
    except Exception as error:  # the one place where a bug becomes a status and a hint
        logs = [path for path in getattr(error, "saved", []) if re.fullmatch(r"run(-failed)?\.log", Path(path).name)]
        hint = ("" if debug else f"; its traceback is in {logs[0]}: report it" if logs else
                "; rerun with --debug for the traceback, and report it")
        return _fail(args.command, _kept([f"internal error: {type(error).__name__}: {error}{hint}"], error),
                     EXIT_INTERNAL, debug)
    finally:
        warnings.formatwarning = formatwarning


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """``mixflow: warning: <Category>: <message>``, one line (the source line is for --debug)."""
    return f"mixflow: warning: {category.__name__}: {message}\n"


def _fail(command: str, lines: list[str], status: int, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    for line in lines:
        print(f"mixflow {command}: error: {line}", file=sys.stderr)
    return status


def _kept(lines: list[str], error: Exception) -> list[str]:
    """``lines`` saying ``error``, the last one followed by the files a run completed before it failed, if any.

    ``error.saved`` is set by :func:`~mixflow.workflow.run.run_workflow`: they stay, and are worth knowing of.
    """
    saved = getattr(error, "saved", [])
    return [*lines[:-1], f"{lines[-1]}; {_kept_files(saved, 'the error')}"] if saved else lines


def _kept_files(saved: list[str], before: str) -> str:
    """``the N files completely written before <before> are kept (<files>)``, or ``the 1 file ... is kept``."""
    return (f"the {counted(len(saved), 'file')} completely written before {before} {agreeing(len(saved), 'is', 'are')} "
            f"kept ({', '.join(saved)})")


def _interrupted(interrupt: KeyboardInterrupt, how: str = "interrupted") -> str:
    saved = getattr(interrupt, "saved", [])
    kept = _kept_files(saved, "it") if saved else "no output was written"
    return f"{how}; {kept}; no half-written file was left"


if __name__ == "__main__":
    sys.exit(console())
