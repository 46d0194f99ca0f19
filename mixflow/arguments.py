"""The checks of plain arguments (counts, positive numbers, flags) that every layer raises with.

Each names the argument, what was expected and what came; a value of the wrong type (a bool or a string
where an integer belongs) raises :class:`~mixflow.errors.InputTypeError`, a value of the right type out of
range :class:`~mixflow.errors.InputError`.
"""

import numpy as np

from mixflow.errors import InputError, InputTypeError

__all__ = ["check_count", "check_flag", "check_integer", "check_number", "check_positive", "is_integer", "is_number"]


def is_integer(value) -> bool:
    """Whether ``value`` is a Python or NumPy integer; a bool is not one, though Python counts it as one."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def is_number(value) -> bool:
    """Whether ``value`` is a Python or NumPy real number; a bool is not one, though Python counts it as one."""
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool | np.bool_)


def _check(name: str, value, of_type, valid, expected: str):
    """``value`` if ``of_type(value)`` and ``valid(value)``; else InputTypeError (wrong type) or InputError."""
    right_type = of_type(value)
    if not (right_type and valid(value)):
        raise (InputError if right_type else InputTypeError)(f"{name}: expected {expected}, got {value!r}")
    return value


def check_integer(name: str, value, valid, expected: str) -> int:
    """An integer (not a bool) for which ``valid(value)`` holds; ``expected`` says what was expected.

    A value of another type raises InputTypeError, an integer out of range InputError, both naming
    ``name``, ``expected`` and the value.
    """
    return int(_check(name, value, is_integer, valid, expected))


def check_number(name: str, value, valid, expected: str) -> float:
    """A real number (not a bool) for which ``valid(value)`` holds; errors as :func:`check_integer`'s."""
    return float(_check(name, value, is_number, valid, expected))


def check_count(name: str, value, minimum: int, *, none: str | None = None, maximum: int | None = None) -> int | None:
    """An integer (not a bool) at least ``minimum``; None too when ``none`` says what None means.

    Parameters
    ----------
    name : str
        The argument's name, for the message.
    value : object
    minimum : int
    none : str, optional
        What None stands for (e.g. ``"no cross-validation"``); None is refused when not given.
    maximum : int, optional
        The largest allowed.

    Returns
    -------
    int or None

    """
    if value is None and none is not None:
        return None
    count = f"an integer >= {minimum}" if maximum is None else f"an integer from {minimum} to {maximum}"
    allowed = f"None ({none}) or {count}" if none is not None else count
    return check_integer(name, value, lambda v: v >= minimum and (maximum is None or v <= maximum), allowed)


def check_positive(name: str, value, upper: float = np.inf) -> float:
    """A finite number in (0, upper)."""
    bound = f" below {upper}" if np.isfinite(upper) else ""
    return check_number(name, value, lambda v: np.isfinite(v) and 0 < v < upper, f"a positive number{bound}")


def check_flag(name: str, value) -> bool:
    """True or False."""
    if not isinstance(value, bool):
        raise InputTypeError(f"{name}: expected True or False, got {value!r}")
    return value
