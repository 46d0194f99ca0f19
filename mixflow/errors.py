"""Exceptions that the command line maps to its exit statuses (see ``mixflow.cli``).

:class:`InputError` (and :class:`InputTypeError`) mark a mistake in what the user gave (an argument, the
data, a workflow file, a results file): the command line reports them as bad input (status 2), and any
other exception as an internal error (status 1). An interrupt (:class:`Interrupted`,
:class:`SamplerInterrupted`) gives status 130; SIGTERM and SIGHUP, stopped the same way
(:func:`terminating_as_interrupt`), 143 and 129 (128 plus the signal's number).
"""

import contextlib
import errno
import signal
import sys
import threading

__all__ = ["InputError", "InputProblems", "InputTypeError", "Interrupted", "MissingPathError", "SamplerInterrupted",
           "TERMINATING_SIGNALS", "Terminated", "UnsupportedError", "interrupts_noted", "is_termination",
           "noting_interrupts", "raise_problems", "stop_if_terminated", "describe_os_error", "terminating_as_interrupt",
           "termination"]


class InputError(ValueError):
    """Bad input: an argument, the data, a workflow or a results file that mixflow cannot use.

    The message names the argument, what was expected and what came. A ``ValueError``, so code that
    catches ``ValueError`` keeps working; a ``ValueError`` that is not an ``InputError`` is a bug.
    """


class InputProblems(InputError):
    """Several mistakes in one input, found together so that one edit can fix them all: one line each.

    ``problems`` holds each one's own :class:`InputError`, whose message names its argument as it would alone.
    """

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))


def raise_problems(problems) -> None:
    """Raise the one problem of ``problems`` as it is, several as one :class:`InputProblems`; none, nothing."""
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise InputProblems(problems)


class InputTypeError(InputError, TypeError):
    """Bad input of the wrong type (e.g. a string where a number belongs).

    Also a ``TypeError``, as Python's own checks of types are, and an :class:`InputError`, so one
    ``except InputError`` catches every mistake in the input.
    """


class UnsupportedError(InputError, NotImplementedError):
    """A request the model's family cannot serve (new rows drawn for a regression, which needs covariates).

    An :class:`InputError`, bad input the user can change, and a ``NotImplementedError``, as Python says of an
    operation a type does not offer.
    """


class MissingPathError(InputError, FileNotFoundError):
    """A path given to read from, or to write into, that does not exist (a results file, a report's directory).

    An :class:`InputError`, a mistake in the input, and a ``FileNotFoundError``, as Python's own ``open`` says.
    """


class Interrupted(KeyboardInterrupt):
    """Work stopped by an interrupt (Ctrl-C), after the sampler was stopped and temporaries removed.

    ``saved`` lists the files completely written before the interrupt; nothing else was left behind.
    """

    def __init__(self, message: str = "interrupted", saved=()):
        super().__init__(message)
        self.saved = [str(path) for path in saved]


class SamplerInterrupted(KeyboardInterrupt):
    """A sampler or optimiser was interrupted (Ctrl-C) and stopped; its partial result was dropped."""


#: The signals that end a run as an interrupt does: SIGTERM (kill, timeout) and, where there is one, SIGHUP (the
#: terminal closed, an ssh session lost)
TERMINATING_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised as an interrupt is (:func:`terminating_as_interrupt`): samplers stopped, files kept.

    ``signum`` is the signal's number; the message names it (``terminated (SIGHUP)``).
    """

    def __init__(self, message: str | None = None, signum: int = signal.SIGTERM):
        self.signum = signum
        super().__init__(message or f"terminated ({signal.Signals(signum).name})")


def termination(error: BaseException) -> Terminated | None:
    """The :class:`Terminated` of an interrupt, itself or the cause of one re-raised; None for a Ctrl-C's."""
    while error is not None:
        if isinstance(error, Terminated):
            return error
        error = error.__cause__ or error.__context__
    return None


def is_termination(error: BaseException) -> bool:
    """Whether an interrupt is SIGTERM's or SIGHUP's (:class:`Terminated`), itself or the cause of one re-raised."""
    return termination(error) is not None


@contextlib.contextmanager
def terminating_as_interrupt():
    """SIGTERM or SIGHUP in the block raises :class:`Terminated`, a ``KeyboardInterrupt``: it stops what Ctrl-C stops.

    By default either signal ends the process at once: no temporary removed, no worker stopped, no message. Yields
    a list that holds the signal's number once one arrived, which tells the interrupt it raised from a Ctrl-C
    however a library re-raised it. Only in the main thread, and only for a signal that has its default action.
    """
    with _raising_and_noted(TERMINATING_SIGNALS, signal.SIG_DFL, lambda signum: Terminated(signum=signum),
                            _TERMINATING) as received:
        yield received


@contextlib.contextmanager
def _raising_and_noted(numbers: tuple, default, raised, running: list):
    """A signal of ``numbers`` in the block raises ``raised(signum)`` and is noted: yields a list of those that came.

    Only in the main thread, and only for the signals whose handler is ``default`` (their handler is that again
    after the block); ``running`` holds the list meanwhile, for :func:`stop_if_terminated` (a block inside another,
    whose handlers it leaves, adds none: the outer block's list stays the one read).
    """
    received: list[int] = []
    handled = [number for number in numbers if signal.getsignal(number) is default] \
        if threading.current_thread() is threading.main_thread() else []

    def handler(signum, frame):
        received.append(signum)
        raise raised(signum)

    for number in handled:
        signal.signal(number, handler)
    if handled:
        running.append(received)
    try:
        yield received
    finally:
        if handled:
            running.remove(received)
        for number in handled:
            signal.signal(number, default)


#: The ``received`` lists of the :func:`terminating_as_interrupt` blocks running
_TERMINATING: list[list[int]] = []
#: The ``received`` lists of the :func:`interrupts_noted` blocks running
_INTERRUPTING: list[list[int]] = []


def stop_if_terminated() -> None:
    """Raise the interrupt again where SIGTERM or SIGHUP (:class:`Terminated`) or SIGINT came but work goes on.

    SIGTERM or SIGHUP in a :func:`terminating_as_interrupt` block, SIGINT in an :func:`interrupts_noted` one: a library
    caught
    the interrupt the handler raised (code compiling or sampling may catch ``KeyboardInterrupt`` and carry on), or
    it was raised in a finaliser or a weak reference's callback, where Python prints it and goes on. Called between
    stages (each progress line of a workflow), in the main thread and outside exception handling only: while the
    interrupt is being handled, nothing is raised again.
    """
    if threading.current_thread() is not threading.main_thread() or sys.exc_info()[0] is not None:
        return
    if _TERMINATING and _TERMINATING[-1]:
        raise Terminated(signum=_TERMINATING[-1][0])
    if _INTERRUPTING and _INTERRUPTING[-1]:
        raise KeyboardInterrupt("interrupted")


@contextlib.contextmanager
def interrupts_noted():
    """SIGINT in the block raises ``KeyboardInterrupt`` as Python's own handler does, and is noted.

    So that an interrupt a library swallowed, or one raised in a finaliser or a weak reference's callback (which
    Python prints as "Exception ignored in ..." and ignores), stops the work at its next stage
    (:func:`stop_if_terminated`); and such an ignored interrupt, or SIGTERM's, is not printed with its traceback.
    Only in the main thread; SIGINT only where it has Python's default handler (not where it is ignored).
    """
    if threading.current_thread() is not threading.main_thread():
        yield []
        return

    def unraisable(event):
        if not isinstance(event.exc_value, KeyboardInterrupt):  # an interrupt's is noted, raised at the next stage
            hook(event)

    hook, sys.unraisablehook = sys.unraisablehook, unraisable
    try:
        with _raising_and_noted((signal.SIGINT,), signal.default_int_handler, lambda signum: KeyboardInterrupt(),
                                _INTERRUPTING) as received:
            yield received
    finally:
        sys.unraisablehook = hook


@contextlib.contextmanager
def noting_interrupts():
    """Record SIGINT in the block, for libraries that swallow ``KeyboardInterrupt`` (PyMC's ADVI loop).

    Yields a list that holds True once an interrupt arrived; the caller raises :class:`SamplerInterrupted`
    instead of using the partial result. Outside the main thread it records nothing, and where SIGINT is
    ignored (a process started with it ignored, as ``nohup`` and a shell's background jobs do) it stays so.
    """
    noted: list[bool] = []
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous == signal.SIG_IGN:
        yield noted
        return

    def note(signum, frame):
        noted.append(True)
        if callable(previous):
            previous(signum, frame)
        else:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, note)
    try:
        yield noted
    finally:
        signal.signal(signal.SIGINT, previous)


#: What to do about an OS error on a path the user gave (or a file written under it)
_ADVICE = {
    errno.EACCES: "choose a location you may write to", errno.EPERM: "choose a location you may write to",
    errno.EROFS: "choose a location on a writable file system",
    errno.ENOSPC: "free some space or choose another location", errno.EDQUOT: "free some space (disk quota)",
    errno.EFBIG: "a file-size limit was reached (ulimit -f, or the file system's largest file); raise it or choose "
                 "another location",
    errno.EEXIST: "a file of that name exists; remove it or choose another name",
    errno.ENOTDIR: "a part of the path is a file, not a directory; choose another path",
    errno.EISDIR: "that is a directory; give a file name", errno.ENOENT: "check the path",
}


def describe_os_error(error: OSError) -> str:
    """``'<file>': <reason>; <what to do>`` for an OS error on a path, else its reason and what to do, or its message.

    Python's own form (``[Errno 27] File too large: 'x' -> None``) shows a second file name even when none was set.
    """
    if error.strerror is None:
        return str(error)
    advice = _ADVICE.get(error.errno)
    more = f"; {advice}" if advice and ";" not in error.strerror else ""  # ours already say what to do
    if error.filename is None:
        return f"{error.strerror}{more}"
    return f"{str(error.filename)!r}: {error.strerror}{more}"
