"""Exceptions that the command line maps to its exit statuses (see ``mixflow.cli``)."""

import contextlib
import signal
import threading

__all__ = ["Interrupted", "SamplerInterrupted", "noting_interrupts"]


class Interrupted(KeyboardInterrupt):
    """Work stopped by an interrupt (Ctrl-C), after the sampler was stopped and temporaries removed.

    ``saved`` lists the files completely written before the interrupt; nothing else was left behind.
    """

    def __init__(self, message: str = "interrupted", saved=()):
        super().__init__(message)
        self.saved = [str(path) for path in saved]


class SamplerInterrupted(KeyboardInterrupt):
    """A sampler or optimiser was interrupted (Ctrl-C) and stopped; its partial result was dropped."""


@contextlib.contextmanager
def noting_interrupts():
    """Record SIGINT in the block, for libraries that swallow ``KeyboardInterrupt`` (PyMC's ADVI loop).

    Yields a list that holds True once an interrupt arrived; the caller raises :class:`SamplerInterrupted`
    instead of using the partial result. Outside the main thread it records nothing.
    """
    noted: list[bool] = []
    if threading.current_thread() is not threading.main_thread():
        yield noted
        return
    previous = signal.getsignal(signal.SIGINT)

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
