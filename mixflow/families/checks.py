"""Declaration checks shared by the families: each error names the argument, what was expected and what came."""

import numpy as np

from mixflow.arguments import check_count
from mixflow.errors import InputError, InputTypeError, raise_problems
from mixflow.wording import agreeing, counted

__all__ = ["check_concentration", "check_n_components", "check_parameter_dict", "named_rows", "prior_from_argument"]

_MAX_ROWS_NAMED = 5


def check_n_components(value) -> int:
    """``n_components`` as an int: InputTypeError for a non-integer, InputError below 1 (as ``n_init``'s)."""
    return check_count("n_components", value, 1)


def prior_from_argument(prior, prior_class, n_components: int | None):
    """Turn ``"default"``, a dict or a prior instance into an instance of ``prior_class`` (checked).

    ``n_components``: the number of weights' concentrations allowed besides one; None, not checked.
    """
    name = prior_class.__name__
    if isinstance(prior, str):
        if prior != "default":
            raise InputError(f"prior: expected 'default', a {name} or a dict, got {prior!r}")
        prior = prior_class()
    elif isinstance(prior, dict):
        prior = _prior_from_dict(prior, prior_class)
    elif not isinstance(prior, prior_class):
        raise InputTypeError(f"prior: expected 'default', a {name} or a dict, got {type(prior).__name__}")
    concentration = np.atleast_1d(prior.weights_concentration)
    if n_components is not None and concentration.size not in (1, n_components):
        raise InputError(f"prior.weights_concentration: expected 1 or {n_components} values, "
                         f"got {concentration.size}")
    return prior


def _prior_from_dict(given: dict, prior_class):
    """``prior_class(**given)``, its every mistake said at once (:func:`~mixflow.errors.raise_problems`).

    An unknown key, a value that is not numbers, and each value the class's own check refuses (checked alone,
    with the other hyperparameters at their defaults, so that one mistake hides no other).
    """
    fields = prior_class.__dataclass_fields__
    problems = []
    unknown = [key for key in given if key not in fields]
    if unknown:
        problems.append(InputError(f"prior: unknown {agreeing(len(unknown), 'hyperparameter')} {sorted(unknown)}; "
                                   f"expected some of {list(fields)}"))
    for key, value in given.items():
        if key not in fields:
            continue
        try:
            _check_hyperparameter(key, value)
            prior_class(**{key: value})
        except (TypeError, ValueError) as error:  # the classes' checks name the field: prefix "prior."
            problems.append(_as_prior_error(error))
    raise_problems(problems)
    try:  # the hyperparameters together (each one passed alone)
        return prior_class(**given)
    except (TypeError, ValueError) as error:
        raise _as_prior_error(error) from None


def _as_prior_error(error: Exception) -> Exception:
    """A prior class's error, its message naming the field as ``prior.<field>``, an InputError (of the same kind)."""
    message = str(error)
    named = message if message.startswith("prior") else f"prior.{message}"
    if isinstance(error, InputError):
        return type(error)(named)
    return InputTypeError(named) if isinstance(error, TypeError) else InputError(named)


def _check_hyperparameter(key: str, value) -> None:
    """None, or finite numbers (a number or nested sequences of numbers), named ``prior.<key>`` otherwise."""
    if value is None:
        return
    try:
        array = np.asarray(value)
        numeric = array.dtype.kind in "iuf" and array.size > 0
    except (TypeError, ValueError):  # ragged nested sequences
        numeric = False
    if not numeric:
        raise InputTypeError(f"prior.{key}: expected a number or a sequence of numbers, got {value!r}")
    if not np.isfinite(array).all():
        raise InputError(f"prior.{key}: expected finite numbers, got {value!r}")


def check_concentration(value) -> float | tuple:
    """Dirichlet concentration(s): positive and finite; a float or a tuple of floats."""
    concentration = np.atleast_1d(np.asarray(value, dtype=float))
    if not (np.isfinite(concentration).all() and (concentration > 0).all()):
        raise InputError(f"weights_concentration: expected positive numbers, got {value!r}")
    return float(concentration[0]) if np.ndim(value) == 0 else tuple(concentration.tolist())


#: how far from 1 the sum of user-given mixing weights may be (weights rounded to a few decimals), renormalised
_WEIGHTS_SUM = 1e-5


def check_parameter_dict(params, shapes: dict, name: str) -> dict:
    """Keys, shapes, finiteness and the weights of user-given parameters; float copies."""
    if not isinstance(params, dict):
        raise InputTypeError(f"{name}: expected 'kmeans', 'kmeans++', 'random' or a dict of parameters, "
                        f"got {type(params).__name__}")
    missing, unknown = sorted(set(shapes) - set(params)), sorted(set(params) - set(shapes))
    if missing or unknown:
        raise InputError(f"{name}: expected keys {sorted(shapes)}, got {sorted(params)} "
                         f"(missing {missing}, unknown {unknown})")
    out = {}
    for key, shape in shapes.items():
        value = np.array(params[key], dtype=float, copy=True)
        if value.shape != shape:
            raise InputError(f"{name}[{key!r}]: expected shape {shape}, got {value.shape}")
        if not np.isfinite(value).all():
            raise InputError(f"{name}[{key!r}]: expected finite values, got {value.tolist()}")
        out[key] = value
    if (out["weights"] < 0).any() or not abs(out["weights"].sum() - 1.0) <= _WEIGHTS_SUM:
        raise InputError(f"{name}['weights']: expected non-negative weights summing to 1, "
                         f"got {out['weights'].tolist()}")
    out["weights"] /= out["weights"].sum()  # weights rounded for print sum to 1 within their rounding only
    return out


def named_rows(mask: np.ndarray, labels: np.ndarray, values: np.ndarray) -> str:
    """'3 rows: [4, 7, 9] (values [1.5, -1.0, 2.5])' for the error messages, at most five shown."""
    rows = np.flatnonzero(mask)
    shown = rows[:_MAX_ROWS_NAMED]
    more = f" and {rows.size - _MAX_ROWS_NAMED} more" if rows.size > _MAX_ROWS_NAMED else ""
    return (f"{counted(rows.size, 'row')}: {np.asarray(labels)[shown].tolist()}{more} "
            f"(values {np.asarray(values)[shown].tolist()})")
