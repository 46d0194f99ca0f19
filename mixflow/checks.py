"""Argument checks shared by the public API (:func:`mixflow.fit` and friends) and the engines.

Each error names the argument, what was expected and what came. No PyMC work happens before they pass.
"""

import secrets

import numpy as np

from mixflow.data import Data
from mixflow.families.base import require_pymc_form
from mixflow.families.pymc_parts import check_minibatch_size

__all__ = ["check_count", "check_flag", "check_minibatch", "check_positive", "check_problem", "check_seed"]


def check_count(name: str, value, minimum: int) -> int:
    """An integer (not a bool) at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def check_positive(name: str, value, upper: float = np.inf) -> float:
    """A finite number in (0, upper)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating) \
            or not (np.isfinite(value) and 0 < value < upper):
        bound = f" below {upper}" if np.isfinite(upper) else ""
        raise ValueError(f"{name}: expected a positive number{bound}, got {value!r}")
    return float(value)


def check_flag(name: str, value) -> bool:
    """True or False."""
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected True or False, got {value!r}")
    return value


def check_problem(model, data, reference) -> dict:
    """The model (with a PyMC form), the validated data and the reference estimate; returns checked copies."""
    require_pymc_form(model)
    if not isinstance(data, Data):
        raise TypeError(f"data: expected validated mixflow.data.Data, got {type(data).__name__}")
    if not isinstance(reference, dict):
        raise TypeError(f"reference: expected a dict of parameters (the EM estimate), got {type(reference).__name__}")
    return model.check_parameters(reference, data.n_features, name="reference")


def check_minibatch(size, data: Data) -> int | None:
    """None, or rows per minibatch in [1, n_obs] for unweighted data."""
    check_minibatch_size(size, data.n_obs)
    if size is not None and data.weights is not None:
        raise ValueError("minibatch_size: expected None with frequency weights (minibatches draw rows uniformly, "
                         f"so weighted rows would be scaled wrongly), got {size!r}")
    return None if size is None else int(size)


def check_seed(value) -> int:
    """A non-negative integer seed; one is drawn when None (and recorded by the engine)."""
    if value is None:
        return secrets.randbits(63)
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ValueError(f"random_seed: expected None or a non-negative integer, got {value!r}")
    return int(value)
