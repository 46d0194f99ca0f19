"""The checks of plain arguments (counts, positive numbers, flags) that every layer raises with.

Each names the argument, what was expected and what came; a value of the wrong type (a bool or a string
where an integer belongs) raises :class:`~mixflow.errors.InputTypeError`, a value of the right type out of
range :class:`~mixflow.errors.InputError`.
"""

import numpy as np

from mixflow.errors import InputError, InputTypeError

__all__ = ["check_count", "check_flag", "check_positive", "is_integer", "is_number"]


def is_integer(value) -> bool:
    """Whether ``value`` is a Python or NumPy integer; a bool is not one, though Python counts it as one."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def is_number(value) -> bool:
    """Whether ``value`` is a Python or NumPy real number; a bool is not one, though Python counts it as one."""
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool | np.bool_)


def check_count(name: str, value, minimum: int, *, none: str | None = None) -> int | None:
    """An integer (not a bool) at least ``minimum``; None too when ``none`` says what None means.

    Parameters
    ----------
    name : str
        The argument's name, for the message.
    value : object
    minimum : int
    none : str, optional
        What None stands for (e.g. ``"no cross-validation"``); None is refused when not given.

    Returns
    -------
    int or None

    """
    if value is None and none is not None:
        return None
    if not is_integer(value) or value < minimum:
        allowed = f"None ({none}) or an integer >= {minimum}" if none is not None else f"an integer >= {minimum}"
        raise (InputError if is_integer(value) else InputTypeError)(f"{name}: expected {allowed}, got {value!r}")
    return int(value)


def check_positive(name: str, value, upper: float = np.inf) -> float:
    """A finite number in (0, upper)."""
    wrong_type = isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating)
    if wrong_type or not (np.isfinite(value) and 0 < value < upper):
        bound = f" below {upper}" if np.isfinite(upper) else ""
        raise (InputTypeError if wrong_type else InputError)(f"{name}: expected a positive number{bound}, "
                                                             f"got {value!r}")
    return float(value)


def check_flag(name: str, value) -> bool:
    """True or False."""
    if not isinstance(value, bool):
        raise InputTypeError(f"{name}: expected True or False, got {value!r}")
    return value
