"""Exceptions that the command line maps to its exit statuses (see ``mixflow.cli``)."""

__all__ = ["Interrupted"]


class Interrupted(KeyboardInterrupt):
    """Work stopped by an interrupt (Ctrl-C), after the sampler was stopped and temporaries removed.

    ``saved`` lists the files completely written before the interrupt; nothing else was left behind.
    """

    def __init__(self, message: str = "interrupted", saved=()):
        super().__init__(message)
        self.saved = [str(path) for path in saved]
