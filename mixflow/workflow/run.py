"""Run a validated workflow: fit each model by each method, write container, table, figures, report."""

import contextlib
import errno
import functools
import json
import os
import re
import secrets
import shutil
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

from mixflow.atomic import atomic_write, interrupts_deferred, recording, written_through
from mixflow.container.build import recorded_warnings
from mixflow.container.io import save
from mixflow.container.layout import RUN_WARNINGS
from mixflow.engines.sampling_diagnostics import format_ess, format_rhat
from mixflow.errors import InputError, Interrupted, describe_os_error, stop_if_terminated, termination
from mixflow.fitting import fit
from mixflow.present.labels import reference_agreement, with_reference_labels
from mixflow.present.numbers import advi_progress, compile_seconds, plot_problem
from mixflow.warnings import ADVIDivergenceError
from mixflow.wording import counted, fixed_places
from mixflow.workflow.config import Workflow, read_workflow
from mixflow.workflow.console import Console

#: The log's name while the run goes on (``run.log`` once it completes, see :func:`run_workflow`).
PARTIAL_LOG = "run.log.partial"

__all__ = ["atomic_write", "run_workflow"]


def _em_options(methods: dict) -> dict:
    options = dict(methods.get("em", {}))
    if options.get("accelerate") == "none":  # TOML has no None
        options["accelerate"] = None
    return {"method": "map" if options.pop("map", True) else "em", **options}


def _choose_k(workflow: Workflow, spec, data, weights, progress):
    """Fit each K of a range (EM criteria, and LOO when MCMC is asked for); the K to analyse and the table.

    The K are those of ``[select] fit``: BIC's, and with ``"all-preferred"`` every other K a criterion prefers.
    """
    from mixflow.analysis.select import ks_to_fit, select_k

    methods = (_em_options(workflow.methods)["method"],) + (("mcmc",) if "mcmc" in workflow.methods else ())
    progress(f"{spec.label}: choice of K over {list(spec.ks)} by {', '.join(methods)}")
    em = {key: value for key, value in _em_options(workflow.methods).items() if key != "method"}
    with progress.during(f"{spec.label}, choice of K"):
        # Dask data too: each fold's fit is blockwise (its held-out rows drawn block by block), n_folds more
        # fits over all the blocks per K; [select] n_folds = false skips them
        table = select_k(spec.model(spec.ks[0]), data, ks=spec.ks, methods=methods, weights=weights,
                         random_seed=workflow.seed, fit_kwargs=em, n_folds=workflow.select.get("n_folds", 5),
                         mcmc_kwargs={"progressbar": False, **workflow.methods.get("mcmc", {})},
                         progress=lambda message: progress(f"  {message}"))
    # select_k could return its EM fit of the chosen K (return_fits=True), but that fit has its own seed
    # (derived from the workflow's seed and K), so it is not the fit of the workflow's seed: on galaxies (MAP, K=3)
    # its covariance differs in the fourth significant digit, and the container would record a seed that refits
    # another estimate. The refit costs one EM run; the container stays reproducible from its seed.
    return ks_to_fit(table, workflow.select["fit"]), table


_METHOD_NAMES = {"mcmc": "NUTS", "advi": "ADVI"}


def _fit_all(workflow: Workflow, model, data, weights, progress):
    """EM (MLE or MAP), then MCMC and ADVI added to the same container, then the bootstrap."""
    k, options = model.n_components, _em_options(workflow.methods)
    em_name = f"EM ({options['method'].upper().replace('EM', 'MLE')})"
    with progress.during(f"K={k}, {em_name}", method="em"):
        if workflow.large:
            options = {**options, "chunks": workflow.chunks}
        tree = fit(model, data, weights=weights, random_seed=workflow.seed, data_name=workflow.data_name,
                   units={c: u for c, u in workflow.units.items() if c in workflow.columns}, **options)
    progress(f"  {em_name}: {em_result(tree['em'].attrs)}")
    for method in ("mcmc", "advi"):
        if method in workflow.methods:
            name = _METHOD_NAMES[method]
            options = {"progressbar": False, **workflow.methods[method]}  # one display: ours
            what = (counted(int(options.get("chains", 4)), "chain") + f" x {options.get('draws', 1000)} draws"
                    if method == "mcmc" else options.get("variant", "meanfield"))
            progress(f"  {name}: running ({what})")
            with progress.during(f"K={k}, {name}", method=method):
                tree = fit(model, data, method=method, weights=weights, tree=tree, **options)
            progress(f"  {name}: {(mcmc_result if method == 'mcmc' else advi_result)(tree[method].attrs)}")
    if "bootstrap" in workflow.methods:
        from mixflow.analysis.bootstrap import bootstrap

        progress(f"  bootstrap: {workflow.methods['bootstrap'].get('n_replicates', 200)} replicates")
        with progress.during(f"K={k}, EM bootstrap"):
            rows = {"data": data, "weights": weights} if workflow.large else {}  # Dask: Poisson(1) weights
            tree = bootstrap(tree, random_seed=workflow.seed, **rows, **workflow.methods["bootstrap"])
    return tree


def em_result(attrs) -> str:
    """EM's result in one line: log-likelihood, iterations, convergence."""
    state = "converged" if attrs.get("converged", 1) else "did NOT converge"
    return (f"log-likelihood {fixed_places(attrs['log_likelihood'], 4)}, BIC {fixed_places(attrs['bic'], 2)}, "
            f"{state} after {attrs.get('n_iter', '?')} iterations")


def mcmc_result(attrs) -> str:
    """NUTS's result in one line: time, divergences, worst R-hat (one chain's: of its halves), smallest ESS."""
    rhat = attrs.get("max_rhat", float("nan"))
    chains = attrs.get("chains")
    return ((counted(int(chains), "chain") if chains is not None else "? chains")
            + f" x {attrs.get('draws', '?')} draws in "
            + _seconds(attrs) + ", "
            + counted(int(attrs.get("n_divergences", 0)), "divergence") + ", worst R-hat "
            + ("(the chain's halves) " if chains == 1 else "")
            + format_rhat(rhat)
            + f", smallest bulk ESS {format_ess(attrs.get('min_ess_bulk', float('nan')))}"
            + ("; a second, longer run: the first one's chains crossed between places" if attrs.get("extended")
               else ""))


def advi_result(attrs) -> str:
    """ADVI's result in one line: iterations, settled or not, final ELBO."""
    progress, elbo = advi_progress(attrs)
    return f"{attrs.get('variant', '')} in {_seconds(attrs)}, {progress}, {elbo}"


def _seconds(attrs) -> str:
    """A method's ``wall_time``, and the seconds of it spent compiling where they were most of it (and not a few).

    Compiling is in the wall time: where PyTensor's cache on the machine lacks the model's structure it takes
    minutes against seconds of sampling or optimising, which the time alone would pass off as a slow method.
    Setting up and loading what the cache holds take a few seconds, not worth a word.
    """
    wall, compiling = attrs.get("wall_time", 0), compile_seconds(attrs) or 0.0
    shown = compiling > wall / 2 and compiling >= _COMPILE_SAID
    return f"{wall:.1f} s" + (f" ({compiling:.1f} s of it compiling the model)" if shown else "")


#: The seconds of compiling that a method's one-line result mentions (where they are most of its time): setting up
#: and loading what PyTensor's cache holds take a few seconds (up to about 5 for ADVI on this project's machines).
_COMPILE_SAID = 10.0


#: The file name of each plot under ``figures/``, where it is not the plot's own name.
_FIGURE_FILES = {"select_k": "choice-of-k"}


def _figures(rendered: dict, out: Path, stem: str, progress) -> None:
    """The report's plots (rendered once by ``render_plots``) as PNG files under ``out/figures``.

    A plot that could not be drawn is skipped (said among the diagnostics, as in the HTML report). Each file
    is recorded as it is completed (:func:`~mixflow.atomic.recording`), so that a failure part way (a full disk)
    lists those kept.
    """
    folder = out / "figures"
    folder.mkdir(exist_ok=True)
    for name, png in rendered.items():  # in the report's order
        if isinstance(png, Exception):
            continue
        path = folder / f"{stem}-{_FIGURE_FILES.get(name, name)}.png"
        atomic_write(path, lambda p, png=png: Path(p).write_bytes(png))


def _with_labels(tree, workflow: Workflow, progress):
    """The result with the workflow's label column attached, and each method's agreement with it (reported)."""
    from mixflow.present.compare import METHOD_LABELS

    tree = with_reference_labels(tree, workflow.data[workflow.labels].to_numpy(), name=workflow.labels)
    agreement = reference_agreement(tree)
    progress(f"  agreement with {workflow.labels!r} (adjusted Rand index): "
             + ", ".join(f"{METHOD_LABELS[m]} {value:.3f}" for m, value in agreement["adjusted_rand_index"].items()))
    return tree, agreement


def _slug(name: str) -> str:
    """A column's name as part of a file name: lower-case letters, digits and '-', at most 60 characters.

    With a model's name of at most 150 characters, the agreement table's file name stays within the 255 a file
    system allows.
    """
    return re.sub(r"[^A-Za-z0-9]+", "-", name).lower()[:60].strip("-") or "labels"


def run_workflow(path, out_dir, *, quiet: bool = False) -> list[Path]:
    """Run a workflow file and write its outputs into ``out_dir``.

    Parameters
    ----------
    path : str or os.PathLike
        The workflow TOML file; it is validated completely before anything is fitted.
    out_dir : str or os.PathLike
        Created if needed. Receives, per model, ``<model>.nc`` (the container), ``<model>-comparison.csv``
        (the comparison table), ``figures/<model>-*.png``, ``<model>-report.html``, the choice-of-K table
        for a range of K, ``workflow.json`` (the resolved configuration with its hash, the files written, and
        ``completed``: a first run into a directory writes it from its start, claiming the directory for its
        workflow, and keeps it, listing what it kept, if it does not complete), and ``run.log`` (the
        progress messages and every warning with where it was raised, written as ``run.log.partial`` while
        the run goes on; a run that fails or is interrupted where an earlier completed run's ``run.log`` is
        keeps that one and writes ``run-failed.log`` or ``run-interrupted.log``. Into a directory that holds
        files already, the run writes in a hidden folder of its own and moves its files in once it completes; one
        that does not complete leaves the files there as they were, and keeps its own in ``run-failed/`` or
        ``run-interrupted/`` (removed by the next run that completes). The container records the
        warnings of its model in the root attribute ``run_warnings``, JSON, each with the stage, category and
        message, and the report lists them). When
        ``[data] labels`` names a column, the container keeps it in ``/reference_labels`` and
        ``<model>-agreement-with-<column>.csv`` holds each method's adjusted Rand index against it.
    quiet : bool
        Silence the progress messages and warnings on stderr (``run.log`` still receives them) but the last line,
        which counts the warnings and the diagnostics' problems. The samplers' own progress bars are off unless a
        method's options set ``progressbar``.

    Returns
    -------
    list of pathlib.Path
        The files written.
    """
    workflow = read_workflow(path)
    out = Path(out_dir)
    _check_no_folder_at_outputs(out, workflow)
    _check_not_another_workflows(out, workflow.name)
    created = _prepare_output(out)
    with _one_run_at_a_time(out, created):
        return _run_into(workflow, out, created, quiet)


@contextlib.contextmanager
def _one_run_at_a_time(out: Path, created: list[Path]):
    """Hold an exclusive lock on the directory ``out`` while a run writes into it: a second run is refused.

    Two runs into one directory would interleave their files and each move the other's aside. The lock
    (``flock`` of the directory) is the kernel's: it goes with the process, however that ends. Where there is
    no such lock (Windows, some network file systems), runs are not guarded.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    descriptor = os.open(out, os.O_RDONLY)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _remove_empty(created)
            raise OSError(errno.EBUSY, "another mixflow run is writing into this directory; wait for it to end, or "
                          "choose another --out", str(out)) from None
        except OSError:  # no locks on this file system
            pass
        yield
    finally:
        os.close(descriptor)


def _run_into(workflow: Workflow, out: Path, created: list[Path], quiet: bool) -> list[Path]:
    """:func:`run_workflow` once ``out`` is ready and this run alone writes into it."""
    log = out / "run.log"
    working = out / PARTIAL_LOG  # run.log once the run completes: a failed rerun keeps the earlier run's
    # into a directory that holds files already (an earlier run's), the run writes beside them in a folder of its
    # own and moves its files in once it has completed: a rerun that fails or is interrupted leaves the earlier
    # run's files as they were, not some of them replaced by its own (a container beside the report of another)
    staging = None if created or not any(out.iterdir()) else _staging_folder(out, workflow.name)
    progress = Console(quiet, log=working)
    written = []
    earlier = _earlier_outputs(out, workflow.name)
    records = _records(out) if earlier else {}  # the earlier run's own record, kept with its files set aside
    # a first run into a new or empty directory writes there directly: its workflow.json claims it from the start,
    # so that a run of another workflow is refused there (_check_not_another_workflows) even if this one never
    # completes; a run that ends having kept nothing takes it back
    claim = out / "workflow.json" if staging is None else None

    def claim_what_is_kept(landed: bool = False):
        """Rewrite the claim to list the files kept.

        As each lands (``landed``), so that a run killed outright (SIGKILL, a power cut) has them listed, and once
        more after a failure.
        """
        if landed and written and Path(written[-1]) == claim:  # the run's completed record, written last
            return
        outputs = [_relative(path, out) for path in written if Path(path) != claim]
        with contextlib.suppress(OSError):  # else the claim lists the files before: the run goes on
            _write_record(claim, workflow, [*outputs, "workflow.json"], completed=False)

    failed = True
    try:
        if claim is not None:
            _write_record(claim, workflow, ["workflow.json"], completed=False)
        # each file listed as it is renamed into place (not the compiled-graph cache that NUTS keeps elsewhere)
        landing = functools.partial(claim_what_is_kept, True) if claim is not None else None
        with progress.capturing(), recording(written, within=out if staging is None else staging, then=landing):
            _run_models(workflow, out if staging is None else staging, progress, written)
            stop_if_terminated()  # a SIGTERM swallowed after the last progress line: before any file moves in
        failed = False
    except (KeyboardInterrupt, Exception) as error:  # an interrupt from any method or stage alike, bad data met
        # mid-run, a full disk, a fault of mixflow's own: the files written so far stay, and are said, with the log
        interrupted = isinstance(error, KeyboardInterrupt)
        how = "interrupted" if interrupted else "failed"
        if isinstance(error, OSError) and staging is not None:  # named where it was to go: the staging folder goes
            error.filename = _outside(error.filename, staging, out)
            if error.filename2 is not None:  # set to None, Python's message would end "-> None"
                error.filename2 = _outside(error.filename2, staging, out)
        with contextlib.suppress(OSError):  # the log that fails here (the disk it filled) is not kept, said below
            if interrupted:
                progress(str(termination(error) or "interrupted"))
            elif isinstance(error, OSError):  # the file named, and what to do
                progress(f"failed: {describe_os_error(error)}")
            elif isinstance(error, InputError | ADVIDivergenceError):  # said in full, no fault of mixflow's
                progress(f"failed: {error}")
            else:  # the traceback in the log, for a report of the fault
                progress(f"failed: internal error: {type(error).__name__}: {error}", traceback.format_exc())
        if staging is not None:  # this run's files, apart from the earlier run's
            written[:] = _keep_attempt(staging, out / f"run-{how}", written)
        # the log is kept with the files written before, or in a directory kept; not one that could not be written
        # in full (removed below): only files completely written are said to be kept
        if (written or not created) and progress.log_error is None:
            written.append(_keep_log(working, log, earlier, how))
        if claim is not None and written:  # the claim lists what the run kept, for a rerun to replace or set aside
            claim_what_is_kept()  # (with the log, kept above)
        # the claim is kept with them (a record of a run that did not complete), and said with them
        kept = [*written, claim] if claim is not None and written and claim.exists() else list(written)
        if interrupted:
            raise Interrupted(saved=kept) from error
        error.saved = [str(path) for path in kept]
        raise
    finally:
        if failed and working not in written:  # kept above under its name, or nothing to keep
            working.unlink(missing_ok=True)
        if failed and staging is not None and staging.exists() and not any(staging in p.parents for p in written):
            shutil.rmtree(staging, ignore_errors=True)
        if failed and claim is not None and not written:  # nothing kept: nothing claimed
            claim.unlink(missing_ok=True)
        if created and not written:
            _remove_empty(created)  # a run that wrote nothing leaves no empty directory behind
    # the run has completed: its files go into place, with interrupts held (renames, quick), so that the directory
    # holds this run's files or the earlier run's, never some of each; an interrupt that came meanwhile is said
    # after it, with every file kept
    try:
        with interrupts_deferred():
            if staging is not None:
                try:
                    written[:] = _move_in(staging, out, written)
                except OSError as error:  # put back: the earlier run's files as they were, this run's kept apart
                    with contextlib.suppress(OSError):  # a log that fails here is not kept
                        progress(f"failed: {describe_os_error(error)}")
                    written[:] = _keep_attempt(staging, out / "run-failed", written)
                    if progress.log_error is None:
                        written.append(_keep_log(working, log, earlier, "failed"))
                    error.saved = [str(path) for path in written]
                    raise
                shutil.rmtree(staging, ignore_errors=True)
            _set_aside_stale(out, earlier, [*written, log], progress, records)
            _remove_attempts(out, earlier, progress, _stems(workflow))
            progress(f"wrote {counted(len(written) + 1, 'file')} to {out} ({progress.counts_text()}; see {log.name})",
                     always=True)  # also when quiet: what it saw, counted as each report counts it
            os.replace(working, log)
    except KeyboardInterrupt as interrupt:
        if working.exists():
            os.replace(working, log)
        raise Interrupted(saved=[*written, log]) from interrupt
    except OSError as error:  # a file that could not be moved into place: those moved and the rest are said
        error.saved = [str(path) for path in written]
        raise
    return [*written, log]


def _outside(name, staging: Path, out: Path):
    """An OS error's file name under the staging folder, as the same place in the output directory; else as it is."""
    if not isinstance(name, str):  # a descriptor, bytes, or none
        return name
    path = Path(name).absolute()
    within = Path(staging).absolute()
    return str(out / path.relative_to(within)) if within in path.parents else name


#: Where a rerun that did not complete keeps the files it wrote (beside the earlier run's, which it left as they were)
_ATTEMPTS = ("run-failed", "run-interrupted")
#: The file that marks a folder as a rerun's own (its workflow's name inside): only such folders are ever removed
_MARK = ".mixflow-run"


def _staging_folder(out: Path, name: str) -> Path:
    """A new hidden folder in ``out`` for a rerun's files, with the umask's permissions (as ``mkdir`` gives)."""
    for _ in range(100):
        folder = out / f".mixflow-run-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        try:
            (folder / _MARK).write_text(name, encoding="utf-8")
        except OSError as error:  # a full disk, a file-size limit: no working folder left, the directory named
            shutil.rmtree(folder, ignore_errors=True)
            raise OSError(error.errno, f"cannot write in the output directory: {error.strerror}", str(out)) from None
        return folder
    raise FileExistsError(errno.EEXIST, "cannot make a working folder", str(out))


def _move_in(staging: Path, out: Path, written: list[Path]) -> list[Path]:
    """Move a completed run's files from ``staging`` into ``out`` (replacing an earlier run's), all or none.

    The earlier run's files that this run replaces are first renamed aside, beside themselves; then this run's
    are moved in, a rename each (into a folder on another file system, ``figures`` a link to one, a copy beside
    the target renamed onto it); then the earlier ones are removed. When a rename fails (a file that may not be
    replaced, say), everything is put back as it was, this run's files in ``staging``, and an OSError naming the
    file in ``out`` is raised.
    """
    targets = [out / Path(path).relative_to(staging) for path in written]
    for target in targets:  # a folder where a file goes is not an earlier run's (they write files): never replaced
        if target.is_dir() and not target.is_symlink():
            raise IsADirectoryError(errno.EISDIR, "is a directory where this run writes a file; nothing was replaced: "
                                    "move it away, or choose another --out", str(target))
    token = secrets.token_hex(4)
    aside, moved = [], []
    try:
        for target in targets:
            if target.exists() or target.is_symlink():
                backup = target.with_name(f".{target.name}.earlier-{token}")
                _renamed(target, backup, target)
                aside.append((target, backup))
        for path, target in zip(written, targets, strict=True):
            target.parent.mkdir(exist_ok=True)
            try:
                _renamed(path, target, target)
            except OSError as error:
                if error.errno != errno.EXDEV:
                    raise
                atomic_write(target, lambda temporary, source=path: shutil.copyfile(source, temporary))
            moved.append((path, target))
    except OSError:
        for path, target in reversed(moved):  # this run's files back where they were written
            try:
                os.replace(target, path)
            except OSError:  # a copy into another file system: the source is still in staging
                target.unlink(missing_ok=True)
        for target, backup in reversed(aside):
            os.replace(backup, target)
        raise
    for _, backup in aside:  # this run's files are in place: what is left of the earlier run's goes, if it can
        with contextlib.suppress(OSError):
            backup.unlink(missing_ok=True)
    return targets


def _renamed(source: Path, target: Path, named: Path) -> None:
    """``os.replace(source, target)``; its OSError names ``named``, the file in the output directory, and what to do."""
    try:
        os.replace(source, target)
    except OSError as error:
        raise OSError(error.errno, f"{error.strerror}; this run's file could not take its place: make it replaceable, "
                                   "or choose another --out", str(named)) from error


def _keep_attempt(staging: Path, kept: Path, written: list[Path]) -> list[Path]:
    """Keep the files a rerun wrote before it failed in ``kept`` (``out/run-failed`` or ``out/run-interrupted``).

    A folder of that name from an earlier attempt (marked as mixflow's) is replaced; nothing written, the
    working folder is removed. Returns the files' paths there.
    """
    if not written:
        shutil.rmtree(staging, ignore_errors=True)
        return []
    with interrupts_deferred():
        if _is_attempt(kept):
            shutil.rmtree(kept)
        elif kept.exists() or kept.is_symlink():  # not mixflow's: the attempt is kept under its working name
            kept = staging
        if kept != staging:
            os.replace(staging, kept)
    return [kept / Path(path).relative_to(staging) for path in written]


def _is_attempt(folder: Path) -> bool:
    """Whether ``folder`` is a folder a rerun of mixflow kept (it holds the mark :func:`_staging_folder` wrote)."""
    return folder.is_dir() and not folder.is_symlink() and (folder / _MARK).is_file()


def _alive(pid: str) -> bool:
    """Whether the process ``pid`` (a working folder's) may still be running: unknown counts as running."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (ValueError, OSError):  # not a number, or another user's process
        return True
    return True


def _remove_attempts(out: Path, earlier: list[str], progress, stems: set[str]) -> None:
    """Remove what earlier attempts that did not complete left in ``out``, once a run into it has completed.

    Their folders are removed when marked as mixflow's (and a working folder of a run killed outright, when its
    process is gone); their logs (``run-failed.log``, ``run-interrupted.log``, written only beside an earlier
    completed run of the same workflow) when ``earlier`` says there was one; and the temporary file of a write
    that a run killed outright did not finish (:func:`~mixflow.atomic.written_through`: beside a file this workflow
    writes, ``stems``). The run holds the directory's lock: no other run writes there.
    """
    gone = []
    for folder in sorted(out.glob(".mixflow-run-*")):  # a run killed outright (SIGKILL, power) left its own
        if _is_attempt(folder) and not _alive(folder.name.split("-")[2]):
            shutil.rmtree(folder, ignore_errors=True)
            gone.append(f"{folder.name}/")
    for folder in (out, out / "figures"):
        for entry in sorted(folder.glob(".*.tmp")) if folder.is_dir() else ():
            target = written_through(entry.name)
            if target is not None and _is_output(target, stems, folder == out) and entry.is_file() \
                    and not entry.is_symlink():
                with contextlib.suppress(OSError):
                    entry.unlink()
                    gone.append(_relative(entry, out))
    for name in _ATTEMPTS:
        folder, log = out / name, out / f"{name}.log"
        if _is_attempt(folder):
            shutil.rmtree(folder)
            gone.append(f"{name}/")
        if earlier and log.is_file() and not log.is_symlink():
            log.unlink()
            gone.append(log.name)
    if gone:
        progress(f"removed what earlier attempts that did not complete left in {out}: {', '.join(gone)}")


def _keep_log(working: Path, log: Path, earlier: list[str], how: str) -> Path:
    """Keep the log of a run that did not complete: ``run.log``, unless an earlier completed run's is there.

    The earlier run's ``run.log`` belongs with its ``workflow.json`` (which lists it), so this run's log is
    then ``run-failed.log`` or ``run-interrupted.log`` (``how``) beside it. Returns the path kept.
    """
    kept = log.with_name(f"run-{how}.log") if "run.log" in earlier and log.is_file() else log
    try:
        os.replace(working, kept)
    except OSError:  # the log could not be kept (the disk it filled): the error being raised says more
        return working
    return kept


def _earlier_outputs(out: Path, name: str) -> list[str]:
    """The files an earlier completed run of the workflow ``name`` wrote into ``out``, if any.

    Read from its ``workflow.json``'s ``outputs``, trusted only in mixflow's record (``config``, ``sha256`` and a
    list of names) of a workflow of the same name: another workflow's results, or another tool's file of that
    name, are never taken for files of this one to replace.
    """
    record = _run_record(out)
    if record is None or not isinstance(record.get("outputs"), list) or record["config"].get("name") != name:
        return []
    return [entry for entry in record["outputs"] if isinstance(entry, str)]


def _run_record(out: Path) -> dict | None:
    """The ``workflow.json`` in ``out`` if it is mixflow's record of a run (``config`` and ``sha256``), else None."""
    try:
        record = json.loads((out / "workflow.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):  # none, or unreadable: nothing is known
        return None
    return record if isinstance(record, dict) and isinstance(record.get("config"), dict) and "sha256" in record \
        else None


def _check_not_another_workflows(out: Path, name: str) -> None:
    """Refuse, before anything is fitted, a directory that holds the results of a workflow of another name.

    Or what a run of one kept when it did not complete: a first run into a directory claims it from its start (its
    ``workflow.json``, ``completed`` false until it completes). Its ``workflow.json`` and ``run.log`` (that run's
    record: configuration, data hashes, files) would be replaced, while its files, which this run never takes for
    its own to replace, stayed beside the new record unlisted.
    """
    record = _run_record(out)  # none, or not mixflow's: nothing of a run is lost
    other = None if record is None else record["config"].get("name")
    if isinstance(other, str) and other != name:
        what = (f"the results of another workflow, {other!r}" if record.get("completed", True) else
                f"the files a run of another workflow, {other!r}, kept when it did not complete")
        raise FileExistsError(errno.EEXIST, f"holds {what} (this one is {name!r}), whose record this run would "
                              "replace; nothing was fitted: choose another --out, or move them away",
                              str(out / "workflow.json"))


def _records(out: Path) -> dict[str, bytes]:
    """The earlier run's ``workflow.json`` and ``run.log`` as they are, before this run's replace them."""
    found = {}
    for name in ("workflow.json", "run.log"):
        with contextlib.suppress(OSError):
            found[name] = (out / name).read_bytes()
    return found


def _set_aside_stale(out: Path, earlier: list[str], written: list[Path], progress, records: dict) -> None:
    """Move the files an earlier run wrote into ``out`` that this completed run did not write again aside.

    A rerun into the same directory (another K, a method or an output dropped) would otherwise leave the
    earlier run's results beside this one's, as if they were its. They may hold what took hours (NUTS draws), so
    they are not removed: they go, under their own names, into a new folder ``superseded-<date>-<time>`` in
    ``out`` with that run's ``workflow.json`` and ``run.log`` (``records``), said on the console. Only files that
    run recorded are touched, and only once this run has completed.
    """
    now, root = {path.resolve() for path in written}, out.resolve()
    stale = [name for name in earlier if (out / name).resolve().parent.is_relative_to(root)
             and (out / name).resolve().is_file() and (out / name).resolve() not in now]
    if not stale:
        return
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = out / f"superseded-{stamp}"
    for count in range(2, 100):
        if not (folder.exists() or folder.is_symlink()):
            break
        folder = out / f"superseded-{stamp}-{count}"
    moved = []
    for name in stale:
        target = folder / name
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(out / name, target)
        except OSError as error:  # left where it is, and said: the run itself has completed
            progress(f"could not move {out / name} aside ({error.strerror}): it is left in place")
            continue
        moved.append(name)
    if moved:
        for name, content in records.items():
            with contextlib.suppress(OSError):
                atomic_write(folder / name, lambda temporary, content=content: temporary.write_bytes(content))
        progress(f"moved {counted(len(moved), 'file')} an earlier run wrote to {out} that this run did not write "
                 f"again into {folder} (with that run's workflow.json and run.log): {', '.join(moved)}")


#: What a run's files end with (its containers, tables, reports and figures)
_OUTPUT_SUFFIXES = (".nc", ".csv", ".html", ".png")


def _stems(workflow: Workflow) -> set[str]:
    """The stems of every file the workflow's models can write (:meth:`ModelSpec.stems`)."""
    return set().union(*(spec.stems() for spec in workflow.models))


def _is_output(name: str, stems: set[str], top: bool) -> bool:
    """Whether a file called ``name`` may be one the run writes: in ``out`` (``top``) or ``out/figures``."""
    return (top and name in ("workflow.json", "run.log")) or (name.endswith(_OUTPUT_SUFFIXES) and any(
        name.startswith(stem) and name[len(stem):len(stem) + 1] in (".", "-") for stem in stems))


def _check_no_folder_at_outputs(out: Path, workflow: Workflow) -> None:
    """Refuse, before anything is fitted, a folder in ``out`` where the run may write a file, and a file where a folder.

    Its files would be refused once the run completes (:func:`_move_in`): known now, not hours of fitting later.
    The names are those the models can write (their stems, :meth:`ModelSpec.stems`), ``workflow.json`` and
    ``run.log``.
    """
    folders = [out / "figures"] if workflow.output["figures"] else []  # the folders the run makes in ``out``
    for folder in folders:  # a file (or a link to none) there: the run's mkdir would fail once every fit is done
        if (folder.exists() or folder.is_symlink()) and not folder.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "is not a directory where this run makes the folder of its "
                                     "figures; nothing was fitted: move it away, or choose another --out", str(folder))
    stems = _stems(workflow)
    for folder in (out, out / "figures"):
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            if _is_output(entry.name, stems, folder == out) and entry.is_dir() and not entry.is_symlink():
                raise IsADirectoryError(errno.EISDIR, "is a directory where this run writes a file; nothing was "
                                        "fitted: move it away, or choose another --out", str(entry))


def _prepare_output(out: Path) -> list[Path]:
    """Create ``out`` if needed and check a file can be created in it, before anything is fitted.

    Returns the directories created, ``out`` first, then the parents it needed. Raises the ``OSError`` (naming
    ``out``) of a path that is a file, lies under a file, cannot be created, or is not writable (permissions,
    read-only file system).
    """
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "exists and is not a directory; choose another --out", str(out))
    if out.is_symlink() and not out.exists():
        raise FileNotFoundError(errno.ENOENT, f"is a symbolic link to {os.readlink(out)!r}, which does not exist; "
                                "create that directory or choose another --out", str(out))
    created = [folder for folder in (out, *out.absolute().parents) if not folder.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as error:
        _remove_empty(created)
        raise OSError(error.errno, f"cannot write the output directory: {error.strerror}", str(out)) from None
    return created


def _remove_empty(folders: list[Path]) -> None:
    """Remove the directories a run created (deepest first) that it left empty: a run that wrote nothing leaves none."""
    for folder in folders:
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def _run_models(workflow: Workflow, out: Path, progress, written: list) -> None:
    """Fit and write every model of the workflow, then ``workflow.json``, which lists the files written.

    ``written`` is the list the files are recorded in as each is completed (:func:`~mixflow.atomic.recording`).
    """
    data = workflow.data[list(workflow.columns)]
    if workflow.large:
        weights = None if workflow.weights is None else workflow.data[workflow.weights]
    else:
        weights = None if workflow.weights is None else workflow.data[workflow.weights].to_numpy()
    with _cluster(workflow.cluster, progress):
        _fit_and_write(workflow, out, progress, data, weights)
    # the files of this run (workflow.json itself and run.log included), so that a rerun into the same directory
    # can remove those it does not write again (see _remove_stale)
    _write_record(out / "workflow.json", workflow,
                  [_relative(path, out) for path in written] + ["workflow.json", "run.log"], completed=True)


def _relative(path, out: Path) -> str:
    """A file of the run as ``workflow.json``'s ``outputs`` name it: its path under ``out``, with '/'."""
    return Path(os.path.relpath(Path(path).absolute(), out.absolute())).as_posix()


def _write_record(path: Path, workflow: Workflow, outputs: list[str], *, completed: bool) -> None:
    """Write ``workflow.json``: the resolved configuration, its hash, the data's, and the files the run wrote.

    ``outputs`` (``workflow.json`` itself among them) lets a rerun into the same directory replace them, or set aside
    those it does not write again (:func:`_set_aside_stale`); ``completed`` is false for the record of a run that
    did not complete, which claims the directory for its workflow all the same.
    """
    record = {"config": workflow.config, "sha256": workflow.config_hash, "data_sha256": workflow.data_hash_text,
              "resolved": {"columns": [str(c) for c in workflow.columns],
                           "em": _em_options(workflow.methods)["method"]},
              "outputs": outputs, "completed": completed}
    atomic_write(path, lambda p: p.write_text(json.dumps(record, indent=2, default=_jsonable)))


@contextlib.contextmanager
def _cluster(cluster: dict | None, progress):
    """The Dask client of ``[cluster]`` for the block.

    A running scheduler's, or a LocalCluster started and stopped here; nothing without ``[cluster]``
    (Dask data then run on the threaded scheduler).
    """
    if cluster is None:
        yield None
        return
    import distributed

    local = None
    if "local" in cluster:
        local = distributed.LocalCluster(**{"n_workers": 2, "threads_per_worker": 1, **cluster["local"]})
        client = distributed.Client(local)
    else:
        client = distributed.Client(cluster["address"])
    workers = len(client.scheduler_info().get("workers", {}))
    progress(f"Dask: {'a LocalCluster of' if local else 'the scheduler at ' + cluster['address'] + ' with'} "
             f"{counted(workers, 'worker')}; dashboard {client.dashboard_link}")
    try:
        yield client
    finally:
        client.close()
        if local is not None:
            local.close()
            progress("Dask: LocalCluster stopped")


def _fit_and_write(workflow: Workflow, out: Path, progress, data, weights) -> None:
    """Fit and write every model (the body of :func:`_run_models`)."""
    for i, spec in enumerate(workflow.models):
        ks, selection, mark = [spec.ks[0]], None, len(progress.recorded)
        try:  # a choice of K that fails on these data (not a bug) is reported at the model's position
            if len(spec.ks) > 1:
                ks, selection = _choose_k(workflow, spec, data, weights, progress)
                atomic_write(out / f"{spec.label}-choice-of-k.csv", lambda p, t=selection: t.to_csv(p))
                progress(f"{spec.label}: BIC prefers K={ks[0]}" + (
                    f"; [select] fit = 'all-preferred': K={', '.join(map(str, ks[1:]))} fitted too" if ks[1:] else ""))
        except (InputError, np.linalg.LinAlgError) as error:
            raise workflow.model_error(i, f"the choice of K failed: {error}") from error
        stems = {k: f"{spec.base}-k{k}" for k in ks}
        choice_warnings = progress.since(mark)  # recorded in the container of every K fitted after it
        for k in ks:
            others = {other: f"{stem}-report.html" for other, stem in stems.items()
                      if other != k and workflow.output["report"]}
            _write_model(workflow, i, spec, k, (data, weights), (out, stems[k]), selection, others, progress,
                         choice_warnings)


def _methods_as_fit_records(recorded: list, tree) -> list:
    """The warnings of a model's fits, each with its method as :func:`mixflow.fit` recorded it in ``tree``.

    A method's stage tags every warning raised in it with that method, the data's checks (which each fit raises
    first) too; ``fit`` records those without a method, as the data's, which a fit of any method again into the
    container raises again: tagged, they would be said twice after it.
    """
    of_data = {(w.get("category"), w.get("message")) for w in recorded_warnings(tree) if w.get("method") is None}
    return [type(w)({key: value for key, value in w.items() if key != "method"})
            if (w.get("category"), w.get("message")) in of_data else w for w in recorded]


def _write_model(workflow: Workflow, i: int, spec, k: int, data, target, selection, others: dict, progress,
                 choice_warnings: list) -> None:
    """Fit K components by every method and write the container, tables, figures and report of that fit.

    ``others`` maps the other fitted K of the same model to their reports (``[select] fit = "all-preferred"``),
    which this one's report links to; ``choice_warnings`` are those of the choice of K, recorded with the fit's.
    """
    from mixflow.present.compare import compare, with_unit_column
    from mixflow.present.report.cards import fit_findings_apart
    from mixflow.present.report.page import render_plots, report

    (data, weights), (out, stem) = data, target
    mark = len(progress.recorded)
    progress(f"{spec.label}: fitting K={k} by {', '.join(workflow.methods)}")
    try:  # a fit that fails on these data (not a bug) is reported at the model's position
        tree = _fit_all(workflow, spec.model(k), data, weights, progress)
    except (InputError, np.linalg.LinAlgError) as error:
        raise workflow.model_error(i, f"the fit of K={k} failed: {error}") from error
    tree.attrs.update({"workflow": workflow.name, "workflow_title": workflow.title,
                       "workflow_config_sha256": workflow.config_hash,
                       "workflow_data_sha256": workflow.data_hash_text})
    agreement = None
    if workflow.labels is not None:
        tree, agreement = _with_labels(tree, workflow, progress)
    comparison = compare(tree)
    rendered = None
    if workflow.output["figures"] or workflow.output["report"]:  # drawn once, for the files and the report
        if workflow.output["figures"]:
            progress(f"{spec.label}: figures of K={k}")
        import matplotlib

        matplotlib.use("Agg")  # files only: no window, whatever backend the session has
        with progress.during(f"K={k}, figures"):  # a plotting library's warning says where it came from
            rendered = render_plots(tree, selection)
    # every warning of the fit, its comparison and its plots, in the container, whose report counts them as the
    # console does (warnings_and_diagnostics)
    tree.attrs[RUN_WARNINGS] = json.dumps(choice_warnings + _methods_as_fit_records(progress.since(mark), tree))
    # what the report's diagnostics list, said whether or not a report is written
    # each said of its fit (a model's K) or its model's choice of K, so that two models' alike findings are both said
    own, of_choice = fit_findings_apart(tree, selection, comparison)
    own += [("warn", plot_problem(name, png)) for name, png in (rendered or {}).items() if isinstance(png, Exception)]
    for level, text in own:
        progress.finding(level, f"{stem}: {text}")
    for level, text in of_choice:
        progress.finding(level, f"{spec.label}: {text}")
    if workflow.output["container"]:
        save(tree, out / f"{stem}.nc")
    if workflow.output["table"]:
        table = with_unit_column(comparison, tree)
        atomic_write(out / f"{stem}-comparison.csv", lambda p, t=table: t.to_csv(p, index=False))
        if agreement is not None:
            atomic_write(out / f"{stem}-agreement-with-{_slug(workflow.labels)}.csv",
                         lambda p, t=agreement: t.to_csv(p))
    if workflow.output["figures"]:
        _figures(rendered, out, stem, progress)
    if workflow.output["report"]:
        progress(f"{spec.label}: report of K={k}")
        with progress.during(f"K={k}, report"):
            report(tree, out / f"{stem}-report.html", selection=selection, title=workflow.title, other_fits=others,
                   plots=rendered)


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot serialise {type(value).__name__}")
