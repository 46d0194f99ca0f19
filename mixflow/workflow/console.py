"""The console of a workflow run: progress lines, warnings as one line each, and the full story in ``run.log``.

Every progress message and every warning raised during a run goes through one :class:`Console`: on
stderr a progress message is one line stamped with the time since the start, a warning is one line
(``warning: <Category>: <message>``, no source line); ``run.log`` beside the outputs receives the same
lines and, for another package's warning, where it was raised (mixflow's own name the run's stage). The
warnings are also recorded, with the stage of the run that raised them (e.g. ``"K=3, NUTS"``), for the
container and its report. PyTensor's notes on how it compiles (speed, not results) go to the log only;
:func:`mixflow.fit` drops its most common one, that Numba runs an operation in object mode, before it comes
here.
"""

import contextlib
import errno
import logging
import os
import sys
import time
import warnings
from pathlib import Path

from mixflow.errors import stop_if_terminated
from mixflow.present.numbers import warnings_and_diagnostics
from mixflow.warnings import MixflowWarning

__all__ = ["Console", "RecordedWarning"]


def _compiler_note(category, filename: str) -> bool:
    """PyTensor's notes on how it compiles (e.g. "Numba will use object mode"): speed, not results."""
    return not issubclass(category, MixflowWarning) and "pytensor" in str(filename).replace("\\", "/").split("/")


class RecordedWarning(dict):
    """One warning of a run: ``stage`` (which model, K and method), ``category`` and ``message``.

    Also ``method`` where the stage is one method's fit: the method that raised it, so that a fit of that method
    again into the container drops it (the workflow leaves it out of the data's checks' warnings, which
    :func:`mixflow.fit` records without one).
    """


class Console:
    """Progress messages and warnings of a run, on stderr (unless quiet) and in a log file.

    Parameters
    ----------
    quiet : bool
        Nothing on stderr but the lines said ``always`` (the run's last, with its counts of warnings and problems);
        the log file still receives everything.
    log : pathlib.Path, optional
        The log file, started afresh.
    """

    def __init__(self, quiet: bool, log: Path | None = None):
        self.quiet, self.start, self.log = quiet, time.perf_counter(), log
        self.broken = False  # stderr's reader has gone
        self.stage, self.method, self.recorded = "", None, []
        self.log_error = None  # the OSError that stopped the log (a full disk): raised once, then the log is off
        self.findings = []  # the diagnostics said, (level, text), level "bad" or "warn" (see finding)
        if log is not None:
            log.write_text("", encoding="utf-8")

    def __call__(self, message: str, detail: str = "", always: bool = False) -> None:
        """Print one progress line (and log it, with ``detail`` below it in the log only); ``always``, even if quiet.

        A SIGTERM that a library swallowed stops the run here, at the stage's end (:func:`stop_if_terminated`).
        """
        self._emit(f"[{time.perf_counter() - self.start:7.1f}s] {message}", detail, always)
        stop_if_terminated()

    def _emit(self, line: str, detail: str = "", always: bool = False) -> None:
        if not self.broken and (always or not self.quiet):
            try:
                print(line, file=sys.stderr, flush=True)
            except BrokenPipeError:  # its reader stopped early (`2>&1 | head -1`): the run goes on, into the log
                self.broken = True
                with contextlib.suppress(OSError, ValueError):  # later writes (a library's) go nowhere, unfailing
                    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stderr.fileno())
        self._log(line + "\n" + detail)

    def _log(self, text: str) -> None:
        if self.log is None or self.log_error is not None:
            return
        try:
            with self.log.open("a", encoding="utf-8") as stream:
                stream.write(text)
        except OSError as error:  # named, and raised once: the run's own report of its failure goes on without it
            remedy = "raise the file-size limit" if error.errno == errno.EFBIG else "free some space"
            self.log_error = OSError(error.errno, f"{error.strerror}; the run's log could not be written ({remedy}, "
                                     "or choose another --out)", str(self.log))
            raise self.log_error from error

    def finding(self, level: str, text: str) -> None:
        """One line of a fit's diagnostics (what its report lists): a problem (``"bad"``) or a warning.

        Said and counted once: the choice of K's findings come with each K fitted from it.
        """
        if (level, text) in self.findings:
            return
        self.findings.append((level, text))
        self(f"  diagnostics: {'problem' if level == 'bad' else 'warning'}: {text}")

    def counts_text(self) -> str:
        """The warnings raised and the findings said, counted as the report counts them (``warnings_and_diagnostics``).

        ``"3 warnings while running; the diagnostics: 1 problem, 4 warnings"``, the diagnostics left out when none.
        """
        return warnings_and_diagnostics(len(self.recorded), self.findings)

    def show_warning(self, message, category, filename, lineno, file=None, line=None) -> None:
        """A ``warnings.showwarning`` replacement: one line on the console, the full warning in the log.

        Another package's warning is logged with its source line; mixflow's own name the caller's line outside
        mixflow (in a run, the command line's script), so the line the console shows, with the run's stage, is
        all there is to log of them.
        """
        text = str(message)
        where = f" [{self.stage}]" if self.stage else ""
        detail = "" if issubclass(category, MixflowWarning) else "".join(
            "    " + part + "\n" for part in
            warnings.formatwarning(message, category, filename, lineno, line).rstrip().splitlines())
        stamped = f"[{time.perf_counter() - self.start:7.1f}s]   warning{where}: {category.__name__}: {text}"
        if _compiler_note(category, filename):
            self._log(stamped + " (compiler note: logged only)\n" + detail)
            return
        self.recorded.append(RecordedWarning(stage=self.stage, category=category.__name__, message=text,
                                             **({"method": self.method} if self.method is not None else {})))
        self._emit(stamped, detail)

    @contextlib.contextmanager
    def capturing(self):
        """Warnings and mixflow's progress records, shown through this console within it.

        Every warning is shown by :meth:`show_warning` (each distinct one once per place); the records of the
        ``mixflow`` logger at INFO (e.g. a second NUTS run starting) are progress lines.
        """
        logger, handler = logging.getLogger("mixflow"), _ProgressHandler(self)
        level = logger.level
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("default")
                warnings.showwarning = self.show_warning
                yield self
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)

    @contextlib.contextmanager
    def during(self, stage: str, method: str | None = None):
        """Warnings raised within it are recorded with this stage (e.g. ``"K=3, NUTS"``), and ``method`` if given."""
        previous, self.stage, self.method = (self.stage, self.method), stage, method
        try:
            yield
        finally:
            self.stage, self.method = previous

    def since(self, mark: int) -> list[RecordedWarning]:
        """The warnings recorded after the ``mark``-th (``len(console.recorded)`` taken earlier)."""
        return [RecordedWarning(w) for w in self.recorded[mark:]]


class _ProgressHandler(logging.Handler):
    """A logging handler that shows each record as one progress line of a :class:`Console`."""

    def __init__(self, console: Console):
        super().__init__(logging.INFO)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        self.console(f"  {record.getMessage()}")
