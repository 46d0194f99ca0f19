"""The ``mixflow`` command: run workflows, list datasets, show and report saved results."""

import argparse
import sys

import pandas as pd

__all__ = ["main"]


def _run(args) -> int:
    from mixflow.workflow import run_workflow

    written = run_workflow(args.workflow, args.out, quiet=args.quiet)
    reports = [p for p in written if p.suffix == ".html"]
    print(f"wrote {len(written)} file(s) to {args.out}" + (f"; report: {reports[0]}" if reports else ""))
    return 0


def _datasets(args) -> int:
    from mixflow.datasets import list_datasets

    with pd.option_context("display.max_colwidth", 90, "display.width", 200):
        print(list_datasets().to_string())
    return 0


def _show(args) -> int:
    from mixflow.model_text import describe
    from mixflow.results import load

    print(describe(load(args.results)))
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
    show = commands.add_parser("show", help="summarise a saved results file")
    show.add_argument("results")
    show.set_defaults(handler=_show)
    args = parser.parse_args(argv)
    from mixflow.workflow_config import WorkflowError

    try:
        return args.handler(args)
    except (WorkflowError, FileNotFoundError, ValueError, TypeError) as error:
        print(f"mixflow {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
