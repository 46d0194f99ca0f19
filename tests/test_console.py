"""The console of a workflow run: one line per warning naming its stage, the full story in run.log."""

import warnings

from mixflow.warnings import SamplingWarning
from mixflow.workflow.console import Console


def test_a_warning_is_one_line_naming_its_stage_and_another_package_s_logged_with_its_source(tmp_path, capsys):
    console = Console(quiet=False, log=tmp_path / "run.log")
    with console.capturing(), console.during("K=3, NUTS"):
        warnings.warn("MCMC diagnostics: 2 divergent transitions after tuning.", SamplingWarning, stacklevel=1)
        warnings.warn("a library's own", RuntimeWarning, stacklevel=1)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and err[0].endswith(
        "warning [K=3, NUTS]: SamplingWarning: MCMC diagnostics: 2 divergent transitions after tuning.")
    # mixflow's warning names the caller's line (a run's script): the log has the console's line, the stage its where;
    # another package's is logged with where it was raised, and the source line
    log = (tmp_path / "run.log").read_text().splitlines()
    assert log[0].endswith(err[0].split("]", 1)[1]) and log[1].endswith("RuntimeWarning: a library's own")
    assert "test_console.py:" in log[2] and "warnings.warn(\"a library's own\"" in log[3] and len(log) == 4
    assert console.recorded[0] == {"stage": "K=3, NUTS", "category": "SamplingWarning",
                                   "message": "MCMC diagnostics: 2 divergent transitions after tuning."}
    assert len(console.recorded) == 2 and console.since(2) == []


def test_pytensor_compiler_notes_go_to_the_log_only(tmp_path, capsys):
    console = Console(quiet=False, log=tmp_path / "run.log")
    with console.capturing():
        warnings.warn_explicit("Numba will use object mode to run Blockwise", UserWarning,
                               "/venv/lib/python3.12/site-packages/pytensor/link/numba/dispatch/basic.py", 234)
    assert capsys.readouterr().err == "" and console.recorded == []
    assert "Numba will use object mode" in (tmp_path / "run.log").read_text()


def test_quiet_prints_nothing_but_logs_everything(tmp_path, capsys):
    console = Console(quiet=True, log=tmp_path / "run.log")
    console("fitting K=2")
    with console.capturing():
        warnings.warn("something", UserWarning, stacklevel=1)
    assert capsys.readouterr().err == ""
    console("wrote 4 files (1 warning while running)", always=True)  # the run's last line: what it saw, counted
    assert capsys.readouterr().err.endswith("] wrote 4 files (1 warning while running)\n")
    assert "fitting K=2" in (tmp_path / "run.log").read_text()
    assert "UserWarning: something" in (tmp_path / "run.log").read_text()


def test_mixflows_progress_records_are_progress_lines_and_the_logger_is_left_as_it_was(tmp_path, capsys):
    import logging

    from mixflow.engines.mcmc import _announce

    logger = logging.getLogger("mixflow")
    console = Console(quiet=False, log=tmp_path / "run.log")
    with console.capturing():
        _announce("NUTS: the chains crossed; sampling again with 4000 draws per chain", {"progressbar": False})
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].endswith("s]   NUTS: the chains crossed; sampling again with 4000 draws per chain")
    assert "sampling again" in (tmp_path / "run.log").read_text()
    assert (logger.level, logger.handlers) == (logging.NOTSET, [])
    # outside a workflow: printed with the progress bar on (nothing else would show it), silent with it off
    _announce("NUTS: sampling again", {"progressbar": True})
    _announce("NUTS: not shown", {"progressbar": False})
    assert capsys.readouterr().err == "NUTS: sampling again\n"


def test_a_log_that_cannot_be_written_is_named_once(tmp_path, capsys):
    # a full disk was "[Errno 28] No space left on device", naming no file, and raised again by the failure's report
    import errno
    from pathlib import Path

    import pytest

    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    console = Console(quiet=True, log=tmp_path / "run.log")
    console.log = Path("/dev/full")
    with pytest.raises(OSError, match=r"No space left on device; the run's log could not be written \(free some "
                                      r"space, or choose another --out\): '/dev/full'$") as raised:
        console("K=2, EM (MAP)")
    assert raised.value.errno == errno.ENOSPC
    console("failed: ...")  # the run's report of its failure: not a second error
