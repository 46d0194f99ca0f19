"""The ``mixflow`` command: run workflows, list datasets, show and report saved results."""

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

__all__ = ["main"]


def _run(args) -> int:
    from mixflow.workflow.run import run_workflow

    written = run_workflow(args.workflow, args.out, quiet=args.quiet)
    reports = [p for p in written if p.suffix == ".html"]
    print(f"wrote {len(written)} file(s) to {args.out}" + (f"; report: {reports[0]}" if reports else ""))
    return 0


def _datasets(args) -> int:
    from mixflow.datasets import list_datasets

    with pd.option_context("display.max_colwidth", 90, "display.width", 200):
        print(list_datasets().to_string())
    return 0


def _load_results(path: str):
    """A saved mixflow container, or an error that says what ``path`` is instead."""
    from mixflow.container.io import load
    from mixflow.container.read import check_tree

    if not Path(path).is_file():
        raise FileNotFoundError(f"results: expected an existing mixflow results file (.nc), got {path!r}")
    try:
        tree = load(path)
    except (OSError, ValueError, TypeError) as error:
        raise ValueError(f"results: expected a mixflow results file (NetCDF written by 'mixflow run' or "
                         f"mixflow.save), got {path!r}, which cannot be read as one ({error})") from None
    try:
        check_tree(tree, "results")
    except (TypeError, ValueError) as error:
        raise ValueError(f"{error} (file {path!r})") from None
    return tree


def _read_selection(path: str) -> pd.DataFrame:
    """A choice-of-K table written by ``mixflow run`` (``<model>-choice-of-k.csv``), with its preferred K."""
    from mixflow.analysis.select import HIGHER_IS_BETTER, LOWER_IS_BETTER, preferred_k

    if not Path(path).is_file():
        raise FileNotFoundError(f"--selection: expected an existing choice-of-K CSV file, got {path!r}")
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ValueError(f"--selection: expected a CSV file, got {path!r} ({error})") from None
    criteria = [c for c in LOWER_IS_BETTER + HIGHER_IS_BETTER if c in table]
    if "k" not in table or not criteria or not pd.api.types.is_integer_dtype(table["k"]):
        raise ValueError(f"--selection: expected a choice-of-K table (columns 'k' and some of bic, aic, icl, "
                         f"cv_log_likelihood, elpd_loo, as mixflow run writes), got columns {list(table.columns)}")
    table = table.set_index("k")
    table.attrs["preferred"] = preferred_k(table)
    return table


def _show(args) -> int:
    from mixflow.present.text import comparison_text, describe

    tree = _load_results(args.results)
    print(describe(tree))
    print()
    print(comparison_text(tree))
    return 0


def _report(args) -> int:
    from mixflow.present.report.page import report

    tree = _load_results(args.results)
    selection = None if args.selection is None else _read_selection(args.selection)
    results = Path(args.results)
    out = Path(args.out) if args.out is not None else results.with_name(f"{results.stem}-report.html")
    title = args.title if args.title is not None else tree.attrs.get("workflow_title")
    print(f"wrote {report(tree, out, selection=selection, title=title)}")
    return 0


def main(argv=None) -> int:
    """Entry point of the ``mixflow`` command line."""
    parser = argparse.ArgumentParser(prog="mixflow", description="Finite mixture models: EM, NUTS and ADVI.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a workflow TOML file")
    run.add_argument("workflow")
    run.add_argument("--out", default="out", help="output directory (default: out)")
    run.add_argument("--quiet", action="store_true", help="no progress messages")
    run.set_defaults(handler=_run)
    commands.add_parser("datasets", help="list the shipped datasets").set_defaults(handler=_datasets)
    show = commands.add_parser("show", help="summary and comparison table of a saved results file")
    show.add_argument("results", help="a container written by 'mixflow run' (<model>.nc)")
    show.set_defaults(handler=_show)
    rebuild = commands.add_parser("report", help="write the HTML report of a saved results file again")
    rebuild.add_argument("results", help="a container written by 'mixflow run' (<model>.nc)")
    rebuild.add_argument("--out", help="the .html file (default: next to RESULTS, <stem>-report.html)")
    rebuild.add_argument("--selection", metavar="CSV",
                         help="a choice-of-K table (<model>-choice-of-k.csv from 'mixflow run') to include")
    rebuild.add_argument("--title", help="page title (default: the workflow's title, else from the data name)")
    rebuild.set_defaults(handler=_report)
    args = parser.parse_args(argv)
    from mixflow.workflow.config import WorkflowError

    try:
        return args.handler(args)
    except (WorkflowError, FileNotFoundError, ValueError, TypeError) as error:
        print(f"mixflow {args.command}: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into a reader that stopped early (e.g. `| head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
