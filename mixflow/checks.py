"""Argument checks shared by the public API (:func:`mixflow.fit` and friends) and the engines.

Each error names the argument, what was expected and what came. No PyMC work happens before they pass.
"""

import os
import secrets

from mixflow.arguments import check_count, check_flag, check_integer, check_positive
from mixflow.data import Data
from mixflow.errors import InputError, InputTypeError
from mixflow.families.base import require_pymc_form
from mixflow.families.pymc_parts import check_minibatch_size
from mixflow.wording import counted

__all__ = ["MemoryNeeded", "check_count", "check_flag", "check_memory", "check_minibatch", "check_positive",
           "check_problem", "check_seed"]


def check_problem(model, data, reference) -> dict:
    """The model (with a PyMC form), the validated data and the reference estimate; returns checked copies."""
    require_pymc_form(model)
    if not isinstance(data, Data):
        raise InputTypeError(f"data: expected validated mixflow.data.Data, got {type(data).__name__}")
    if not isinstance(reference, dict):
        raise InputTypeError(f"reference: expected a dict of parameters (the EM estimate), "
                             f"got {type(reference).__name__}")
    return model.check_parameters(reference, data.n_features, name="reference")


def check_minibatch(size, data: Data) -> int | None:
    """None, or rows per minibatch in [1, n_obs] for unweighted data."""
    check_minibatch_size(size, data.n_obs)
    if size is not None and data.weights is not None:
        raise InputError("minibatch_size: expected None with frequency weights (minibatches draw rows uniformly, "
                         f"so weighted rows would be scaled wrongly), got {size!r}")
    return None if size is None else int(size)


_WORKING_COPIES = 3  # the sampler's trace, the aligned copy, and the arrays built from them


def available_memory() -> int:
    """Bytes of memory available to a new allocation (MemAvailable on Linux, else the physical memory)."""
    try:
        with open("/proc/meminfo") as meminfo:
            return next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


class MemoryNeeded(InputError):
    """Draws whose arrays would not fit in memory (:func:`check_memory`)."""


def check_memory(chains: int, draws: int, values_per_draw: int, what: str) -> None:
    """Refuse, before any work, draws whose arrays would not fit in memory, with an estimate of the need.

    ``values_per_draw`` counts the float64 values kept per draw (parameters, pointwise log-likelihood,
    predictive replicates); about three working copies of them exist at once.
    """
    needed = chains * draws * values_per_draw * 8 * _WORKING_COPIES
    available = available_memory()
    if needed > available:
        at_most = max(1, available // (chains * values_per_draw * 8 * _WORKING_COPIES))
        raise MemoryNeeded(f"draws: {counted(chains, 'chain')} x {draws} draws of {what} ({values_per_draw} values "
                           f"each) would need about {needed / 1e9:.3g} GB of memory, more than the "
                           f"{available / 1e9:.3g} GB available; ask for at most about {at_most} draws per chain")


def check_seed(value) -> int:
    """A non-negative integer seed below 2**63 (stored as int64); one is drawn when None (and recorded)."""
    if value is None:
        return secrets.randbits(63)
    return check_integer("random_seed", value, lambda v: 0 <= v < 2**63,
                         "None or a non-negative integer below 2**63 (stored as int64)")
