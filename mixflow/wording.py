"""Singular or plural in the messages: one word, or a count and its noun, agreeing with a number.

``counted(3, "file")`` gives ``"3 files"``, ``counted(1, "file")`` ``"1 file"``; ``agreeing(n, "component")``
the noun alone (``"component"`` or ``"components"``) and ``agreeing(n, "is", "are")`` the verb that goes with it,
so that ``"component [0] is empty"`` and ``"components [0, 2] are empty"`` both read right. A plural that is not
the singular plus "s" is given as the third argument: ``counted(2, "parenthesis", "parentheses")``. This module
imports nothing of mixflow's, so every layer can word its messages with it.
"""

__all__ = ["agreeing", "counted"]


def agreeing(number: int, singular: str, plural: str | None = None) -> str:
    """``singular`` for one, ``plural`` (by default ``singular`` + ``"s"``) for any other number, zero included."""
    if number == 1:
        return singular
    return singular + "s" if plural is None else plural


def counted(number: int, singular: str, plural: str | None = None) -> str:
    """``"1 divergent transition"``, ``"3 divergent transitions"``: the number and the noun agreeing with it."""
    return f"{number} {agreeing(number, singular, plural)}"
