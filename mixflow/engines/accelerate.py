"""Convergence and acceleration of EM: Aitken's estimate of the limit, and SQUAREM's extrapolation.

**Stopping.** EM converges linearly: near the maximum the increments of the objective shrink by a nearly
constant factor ``a`` (the largest fraction of missing information). Aitken's acceleration estimates the
limit from three consecutive EM values ``l0 <= l1 <= l2`` as ``l_inf = l1 + (l2 - l1) / (1 - a)`` with
``a = (l2 - l1) / (l1 - l0)`` (McNicholas, Murphy, McDaid and Frost 2010); :func:`aitken_gap` returns
``l_inf - l1``, which is at least the last increment. Where EM crawls (``a`` near 1) the gap is many times
the last increment, so a stop on the gap is not fooled by small steps far from the maximum.

**When the objective cannot tell.** Near the maximum the objective's gain is quadratic in the parameters'
distance to it, and a sum over the data resolves gains only down to its rounding: where EM crawls, the
gains fall below the rounding while the parameters still move. :func:`aitken_gap` then returns 0, and the
engine decides on the parameters instead: :func:`parameter_gap` applies Aitken's extrapolation to the
largest change of the unconstrained parameters, ``|d_t| r / (1 - r)`` with ``r = |d_t| / |d_(t-1)|``
(the sum of the geometric series of the steps still to come), and the run stops when that estimate is
below ``sqrt(tol)`` (:func:`parameter_tolerance`): the distance at which an objective of unit curvature
per observation has ``tol`` per observation still to gain; or below a tenth of ``1 / sqrt(n)`` (the order of a
standard error) where that is smaller, on more than 1e8 observations at the default ``tol``. The unconstrained
parameters are in the family's standardised working units or are logs, so one absolute tolerance is relative to
their scale.

**Accelerating.** SQUAREM (Varadhan and Roland 2008, scheme S3) extrapolates from two EM steps
``x1 = F(x0)``, ``x2 = F(x1)``: with ``r = x1 - x0``, ``v = x2 - x1 - r`` and ``alpha = -||r|| / ||v||``,
the new point is ``x0 - 2 alpha r + alpha^2 v`` (``alpha = -1`` gives back ``x2``). The step length is
bounded by ``step_max``, which grows while the longest step keeps succeeding and shrinks when it fails, as
in the SQUAREM package (``step.max0 = 1``, ``mstep = 4``). The engine keeps the extrapolated point only if
it is valid and its objective is at least that of ``x2``, so EM's monotone guarantee holds.

Parameters are extrapolated in an unconstrained form, name by name, the names being shared by every
family: the weights as centred log-ratios, ``rate`` and ``variance`` as logs, ``covariance`` as its
Cholesky factor with the log of its diagonal; everything else (``mu``, ``coefficients``) as it is.
"""

import math
from contextlib import nullcontext
from dataclasses import dataclass
from functools import cache

import numpy as np

__all__ = ["ACCELERATIONS", "STANDARD_ERROR_SHARE", "SquaremState", "aitken_gap", "aitken_gap_of", "centred_log_ratios",
           "extrapolate", "extrapolate_flat", "extrapolate_rows", "flatten", "from_unconstrained", "largest_change",
           "largest_changes", "log_weights", "observed_rate", "observed_rate_of", "parameter_gap", "parameter_gap_of",
           "parameter_tolerance", "rate_settled", "silenced", "to_tracked", "to_unconstrained", "unflatten",
           "valid_parameters"]

ACCELERATIONS = ("squarem",)
_POSITIVE = ("rate", "variance")
_STEP_FACTOR = 4.0
_ROUNDING = 1e-14  # relative rounding of the objective, a sum over the data, with a margin
_PARAMETER_ROUNDING = 1e-12  # rounding of the parameters, M-step ratios of sums over the data, with a margin


@dataclass
class SquaremState:
    """SQUAREM's adaptive bound on the step length ``|alpha|``, and counts of the extrapolations tried.

    Attributes
    ----------
    step_max : float
        The longest step allowed, at least 1 (a step of 1 is two plain EM steps).
    accepted : int
        Extrapolated points kept.
    rejected : int
        Extrapolated points tried and dropped for the plain EM step (invalid, or lower objective).

    """

    step_max: float = 1.0
    accepted: int = 0
    rejected: int = 0

    def update(self, alpha: float, kept: bool) -> None:
        """Count the extrapolation (``alpha < -1``; ``-1`` is the plain step) and adapt the bound.

        The bound grows after a kept step at the bound and shrinks after a dropped one, never below 1.
        """
        at_bound = -alpha >= self.step_max
        if alpha < -1.0:
            self.accepted += kept
            self.rejected += not kept
        if at_bound:
            self.step_max = self.step_max * _STEP_FACTOR if kept else max(1.0, self.step_max / _STEP_FACTOR)


def aitken_gap(values, rate_floor: float = 0.0) -> float:
    """Aitken's estimate ``l_inf - l1`` of the objective still to gain, from three consecutive EM values.

    Parameters
    ----------
    values : sequence of float
        At least the last three objective values ``l0, l1, l2`` of plain EM steps (each the EM map of the
        one before); only the last three are used.
    rate_floor : float, default 0
        The slowest rate the run has shown (:func:`observed_rate`): the estimate uses the larger of it and
        the triple's own rate, which right after a SQUAREM jump reflects the directions the jump disturbed
        (0.6, say) rather than EM's slowest (0.999), and would fall short of the gap a hundredfold.

    Returns
    -------
    float
        0 when the last step gained nothing beyond the rounding of the objective (``1e-14 |l2|``: a fixed
        point, or the floor where the sums over the data stop resolving gains); ``inf`` when there are
        fewer than three values or the gains do not shrink (no linear rate to extrapolate with);
        otherwise ``(l2 - l1) / (1 - a)`` with ``a = (l2 - l1) / (l1 - l0)``.

    """
    if len(values) < 3:
        return float("inf")
    first, second, third = values[-3:]
    first, second, third = float(first), float(second), float(third)
    return aitken_gap_of(second - first, third - second, third, rate_floor)


def aitken_gap_of(before: float, last: float, value: float, rate_floor: float = 0.0) -> float:
    """:func:`aitken_gap` from the triple's two gains, ``l1 - l0`` and ``l2 - l1``, and its last value ``l2``."""
    if last <= _ROUNDING * abs(value):
        return 0.0
    if not last < before:  # also a NaN objective: no gap to estimate
        return float("inf")
    rate = max(last / before, rate_floor)
    return last / (1.0 - rate)


def observed_rate(values) -> float:
    """EM's rate ``(l2 - l1) / (l1 - l0)`` on the last three plain EM values, where it can be read.

    NaN when the gains are within a hundred times the objective's rounding (noise) or do not shrink.
    """
    if len(values) < 3:
        return float("nan")
    first, second, third = values[-3:]
    first, second, third = float(first), float(second), float(third)
    return observed_rate_of(second - first, third - second, third)


def observed_rate_of(before: float, last: float, value: float) -> float:
    """:func:`observed_rate` from the triple's two gains, ``l1 - l0`` and ``l2 - l1``, and its last value ``l2``."""
    if not (100 * _ROUNDING * abs(value) < last < before):
        return float("nan")
    return last / before


#: How much EM's rate may still grow between two consecutive estimates, relative to ``1 - rate``, for
#: Aitken's extrapolation to be trusted. While the rate grows (right after a SQUAREM jump, or before the
#: slowest direction dominates) the estimate ``gain / (1 - rate)`` falls short of the gap: the rate may still
#: be climbing from 0.9 towards EM's 0.999, a gap 100 times the estimate. A rate that holds or falls (the
#: limit of rounding noise) is trusted.
RATE_GROWTH = 0.01


def rate_settled(changes) -> bool:
    """Whether EM's linear rate has stopped growing: the last two ratios of consecutive changes.

    Parameters
    ----------
    changes : sequence of float
        At least the last three changes of plain EM steps (objective gains, or parameter changes); only the
        last three are used.

    Returns
    -------
    bool
        True when ``r1 = c1 / c0`` and ``r2 = c2 / c1`` are in ``[0, 1)`` and ``r2 - r1 <= RATE_GROWTH *
        (1 - r2)``; False with fewer than three changes, or a zero ``c0`` or ``c1`` (no ratio).

    """
    if len(changes) < 3:
        return False
    first, second, third = changes[-3:]
    first, second, third = float(first), float(second), float(third)
    if first == 0.0 or second == 0.0:  # a ratio to no change (infinite or NaN) is no rate
        return False
    before, latest = second / first, third / second
    if not (0 <= before < 1 and 0 <= latest < 1):
        return False
    return latest - before <= RATE_GROWTH * (1.0 - latest)


#: The bound on :func:`parameter_gap` is at most this share of ``1 / sqrt(n)``, the order of a standard error.
STANDARD_ERROR_SHARE = 0.1


def parameter_tolerance(tol: float, n_observations: float) -> float:
    """The bound on :func:`parameter_gap`: ``sqrt(tol)``, or ``STANDARD_ERROR_SHARE / sqrt(n_observations)``.

    ``sqrt(tol)`` goes with ``tol`` per observation on the objective; the other where it is smaller. A parameter's
    standard error shrinks as ``1 / sqrt(n)`` in the working units (standardised, or logs) and ``sqrt(tol)`` does
    not: past ``n = STANDARD_ERROR_SHARE**2 / tol`` (1e8 at the default ``tol``) a run stopped by it alone could
    end a sizeable share of a standard error from its limit.
    """
    return float(min(np.sqrt(tol), STANDARD_ERROR_SHARE / np.sqrt(n_observations)))


def to_tracked(params: dict, unconstrained: dict | None = None) -> np.ndarray:
    """Parameters in the form whose changes :func:`parameter_gap` measures, one flat array.

    That is :func:`to_unconstrained`'s (``unconstrained``, if already computed) with the weights as their logs,
    so that an empty component (log weight ``-inf``, unchanged) does not hide the other components' changes
    as its centred log-ratio would, and Poisson rates as ``2 sqrt(rate)``, a count's variance-stabilised scale
    (a change of 1 is about one sd of a count): a component on the zeros alone has its maximum at rate 0,
    which EM approaches geometrically, so its square root converges while its log falls without end.
    """
    out = dict(to_unconstrained(params) if unconstrained is None else unconstrained)
    out["weights"] = log_weights(np.asarray(params["weights"], dtype=float))
    if "rate" in params:
        out["rate"] = 2.0 * np.sqrt(np.asarray(params["rate"], dtype=float))
    return np.concatenate([np.ravel(value) for value in out.values()])


def parameter_gap(points) -> float:
    """Aitken's estimate of the parameters' distance to their limit, from three consecutive EM points.

    Parameters
    ----------
    points : sequence of ndarray
        At least the last three plain EM points ``x0, x1, x2`` in :func:`to_tracked` form (flat arrays, each
        point the EM map of the one before); only the last three are used.

    Returns
    -------
    float
        ``d2 r / (1 - r)`` with ``d2 = max |x2 - x1|``, ``d1 = max |x1 - x0|`` and ``r = d2 / d1``, each change
        relative to ``max(1, |x|)``; 0 when the last change is within the parameters' rounding (``1e-12``: a
        fixed point); ``inf`` when there are fewer than three points, a change is not finite, or the changes
        do not shrink (no linear rate to extrapolate with).

    """
    if len(points) < 3:
        return float("inf")
    first, second, third = points[-3:]
    return parameter_gap_of(largest_change(first, second), largest_change(second, third))


def parameter_gap_of(before: float, last: float) -> float:
    """:func:`parameter_gap` from the largest changes of its two steps (:func:`largest_change`)."""
    if last <= _PARAMETER_ROUNDING:
        return 0.0
    if not last < before:  # also a NaN change
        return float("inf")
    rate = last / before
    return last * rate / (1.0 - rate)


def largest_change(start: np.ndarray, end: np.ndarray) -> float:
    """The largest change between two parameter sets in :func:`to_tracked` form, relative to ``max(1, |value|)``.

    An equal infinity (an empty component's log weight) is no change; NaN when a change is not finite or the
    sets differ in size (a component trimmed in between).
    """
    if np.shape(start) != np.shape(end):
        return float("nan")
    return float(largest_changes(start, end))


def largest_changes(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """:func:`largest_change` of each row of (G, P) arrays of parameter sets of one size, shape (G,) (or of one set)."""
    with np.errstate(invalid="ignore"):
        change = np.abs(end - start)
        change /= np.maximum(1.0, np.abs(start))
        largest = change.max(axis=-1, initial=0.0)  # NaN if a change is NaN, inf if one is inf
        unresolved = ~np.isfinite(largest)
        if unresolved.any():  # an equal infinity is no change; any other infinity or NaN is not finite
            largest = np.where(unresolved, np.where(start == end, 0.0, change).max(axis=-1, initial=0.0), largest)
    return np.where(np.isfinite(largest), largest, np.nan)


def to_unconstrained(params: dict, cholesky: np.ndarray | None = None) -> dict:
    """Parameters to unconstrained arrays (see the module docstring); invertible by :func:`from_unconstrained`.

    ``cholesky``: the covariance's lower Cholesky factor where already computed (the E-step's), used instead of a
    new factorisation.
    """
    out = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        for name, value in params.items():
            value = np.asarray(value, dtype=float)
            if name == "weights":
                out[name] = centred_log_ratios(value)
            elif name in _POSITIVE:
                out[name] = np.log(value)
            elif name == "covariance":
                out[name] = _log_cholesky(value, cholesky)
            else:
                out[name] = value
    return out


def silenced(needed: bool, **errstate):
    """``np.errstate(**errstate)`` where a warning can arise (``needed``), else no context.

    Entering ``np.errstate`` costs more than a few operations on small arrays, which EM does every pass.
    """
    return np.errstate(**errstate) if needed else nullcontext()


def centred_log_ratios(weights: np.ndarray) -> np.ndarray:
    """Mixing weights in :func:`to_unconstrained`'s form, their logs less their mean; (G, K): each row's own."""
    with silenced(not ((weights > 0) & (weights < np.inf)).all(), divide="ignore", invalid="ignore"):
        logs = np.log(weights)
        return logs - logs.sum(axis=-1, keepdims=True) / logs.shape[-1]  # the mean, as np.mean forms it


def log_weights(weights: np.ndarray) -> np.ndarray:
    """``np.log`` of mixing weights, -inf for an empty component without a warning."""
    with silenced(not (weights > 0).all(), divide="ignore"):
        return np.log(weights)


def from_unconstrained(values: dict) -> dict:
    """Inverse of :func:`to_unconstrained`; of several sets at once, each a row along a leading axis of every array."""
    out = {}
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        for name, value in values.items():
            if name == "weights":  # each set's own, along the last axis
                shifted = np.exp(value - value.max(axis=-1, keepdims=True))
                out[name] = shifted / shifted.sum(axis=-1, keepdims=True)
            elif name in _POSITIVE:
                out[name] = np.exp(value)
            elif name == "covariance":
                factor = _from_log_cholesky(value)
                out[name] = factor @ np.swapaxes(factor, -1, -2)
            else:
                out[name] = value
    return out


@cache
def _lower_triangle(d: int) -> np.ndarray:
    """The mask of a d x d matrix's lower triangle, its diagonal included (read-only, made once)."""
    mask = np.tri(d, dtype=bool)
    mask.flags.writeable = False
    return mask


def _log_cholesky(covariance: np.ndarray, factor: np.ndarray | None = None) -> np.ndarray:
    """(..., d, d) SPD matrices to their lower Cholesky factors with the diagonal replaced by its log.

    ``factor``: the factors, where already computed (copied, not changed).
    """
    if factor is not None:
        factor = factor.copy()
    elif covariance.shape[-1] == 1 and (covariance > 0).all() and np.isfinite(covariance).all():
        return np.log(np.sqrt(covariance))  # a 1 x 1 factor is the square root, as LAPACK computes it
    else:
        try:
            factor = np.linalg.cholesky(covariance)
        except np.linalg.LinAlgError:
            return np.full(covariance.shape, np.nan)
    diagonal = np.einsum("...ii->...i", factor)
    diagonal[...] = np.log(diagonal)
    return factor


def _from_log_cholesky(values: np.ndarray) -> np.ndarray:
    factor = np.where(_lower_triangle(values.shape[-1]), values, 0.0)
    diagonal = np.einsum("...ii->...i", factor)
    diagonal[...] = np.exp(diagonal)
    return factor


def extrapolate(start: dict, first: dict, second: dict, state: SquaremState) -> tuple[dict | None, float]:
    """SQUAREM's S3 point from a start and its two EM steps, all in :func:`to_unconstrained` form.

    Parameters
    ----------
    start, first, second : dict
        ``x0``, ``x1 = F(x0)`` and ``x2 = F(x1)`` as unconstrained arrays with the same keys and shapes.
    state : SquaremState
        Holds the bound on the step length.

    Returns
    -------
    point : dict or None
        The extrapolated parameters (constrained form), or None when there is nothing to extrapolate:
        the step length is 1, which gives ``x2`` itself, or the steps are not finite or have no second
        difference (then ``alpha`` is NaN).
    alpha : float
        The step length used, in ``[-step_max, -1]``.

    """
    layout = [(name, np.shape(value)) for name, value in start.items()]
    return extrapolate_flat(*(flatten(p) for p in (start, first, second)), state.step_max, layout)


def flatten(values: dict) -> np.ndarray:
    """A dict of arrays as one flat array, in the dict's order (the inverse of :func:`unflatten`)."""
    return np.concatenate([np.ravel(value) for value in values.values()])


def unflatten(vector: np.ndarray, layout: list) -> dict:
    """A flat array back into the arrays of ``layout``, ``[(name, shape), ...]`` (views into ``vector``).

    Of several flat arrays, the rows of ``vector`` (G, P): arrays of shape ``(G,) + shape``.
    """
    values, offset, rows = {}, 0, np.shape(vector)[:-1]
    for name, shape in layout:
        size = math.prod(shape)
        values[name] = vector[..., offset:offset + size].reshape(rows + tuple(shape))
        offset += size
    return values


def extrapolate_flat(x0: np.ndarray, x1: np.ndarray, x2: np.ndarray, step_max: float,
                     layout: list) -> tuple[dict | None, float]:
    """:func:`extrapolate` of the three points as flat arrays (:func:`flatten`) of the arrays of ``layout``.

    ``step_max`` is the state's bound on the step length (:attr:`SquaremState.step_max`).
    """
    # an infinite entry the steps leave as it is (a Poisson rate at its maximum 0, whose log is -inf) stays;
    # any other that is not finite (an empty component's weight makes every log-ratio of its set NaN) stops it
    finite = np.isfinite(x0).all() and np.isfinite(x1).all() and np.isfinite(x2).all()
    held = None
    if not finite:
        held = np.isinf(x0) & (x0 == x1) & (x1 == x2)
        kept = x0
        x0, x1, x2 = (np.where(held, 0.0, x) for x in (x0, x1, x2))
        if not (np.isfinite(x0).all() and np.isfinite(x1).all() and np.isfinite(x2).all()):
            return None, float("nan")
    r = x1 - x0
    v = x2 - x1 - r
    r_norm, v_norm = np.sqrt(r @ r), np.sqrt(v @ v)
    if not (np.isfinite(r_norm) and np.isfinite(v_norm) and v_norm > 0):
        return None, float("nan")
    alpha = -min(max(r_norm / v_norm, 1.0), step_max)
    if alpha == -1.0:
        return None, alpha  # x2 itself
    vector = x0 - 2.0 * alpha * r + alpha * alpha * v
    if held is not None:
        vector = np.where(held, kept, vector)
    return from_unconstrained(unflatten(vector, layout)), alpha


def extrapolate_rows(x0: np.ndarray, x1: np.ndarray, x2: np.ndarray, step_max: list[float],
                     layout: list) -> list[tuple[dict | None, float, bool]]:
    """:func:`extrapolate_flat` and :func:`valid_parameters` of several triples at once, the rows of (G, P) arrays.

    Each row's result is what those functions give it alone, by the same operations elementwise, each row's own
    norms and sums: its candidate (None for none), its step length and whether the candidate is valid. A row with
    an entry that is not finite goes through them alone, as do the rows of a batch whose covariances are not all
    positive definite. ``step_max``: each row's bound on the step length.
    """
    results = [None] * len(step_max)
    # a sum is finite where its terms are (short of overflow, which only sends a row the long way); infinite terms
    # of both signs (an emptied component's log weight and a rate's) sum to NaN, which sends the row the long way too
    with np.errstate(invalid="ignore", over="ignore"):
        finite = np.isfinite((x0 + x1 + x2).sum(axis=1))
    rows = np.arange(len(step_max))
    if not finite.all():
        for i in np.flatnonzero(~finite):
            candidate, alpha = extrapolate_flat(x0[i], x1[i], x2[i], step_max[i], layout)
            results[i] = candidate, alpha, candidate is not None and valid_parameters(candidate)
        rows = np.flatnonzero(finite)
        x0, x1, x2 = x0[rows], x1[rows], x2[rows]
    r = x1 - x0
    v = x2 - x1 - r
    # each row's norm by its own dot product, as extrapolate_flat forms it
    r_norms = np.sqrt([own @ own for own in r]).tolist()
    v_norms = np.sqrt([own @ own for own in v]).tolist()
    going, alphas = [], []
    for j, (i, r_norm, v_norm) in enumerate(zip(rows.tolist(), r_norms, v_norms, strict=True)):
        if not (math.isfinite(r_norm) and math.isfinite(v_norm) and v_norm > 0):
            results[i] = None, float("nan"), False
            continue
        alpha = -min(max(r_norm / v_norm, 1.0), step_max[i])
        if alpha == -1.0:
            results[i] = None, alpha, False
            continue
        going.append(j)
        alphas.append(alpha)
    if not going:
        return results
    alpha = np.array(alphas)
    if len(going) < len(r):
        x0, r, v = x0[going], r[going], v[going]
    vectors = x0 - (2.0 * alpha)[:, None] * r + (alpha * alpha)[:, None] * v
    candidates = from_unconstrained(unflatten(vectors, layout))
    valid = _valid_rows(candidates).tolist()
    for k, j in enumerate(going):
        results[rows[j]] = {name: value[k] for name, value in candidates.items()}, alphas[k], valid[k]
    return results


def _valid_rows(params: dict) -> np.ndarray:
    """:func:`valid_parameters` of each row of arrays with a leading axis of rows."""
    rows = params["weights"].shape[0]
    valid = np.ones(rows, dtype=bool)
    for value in params.values():
        valid &= np.isfinite(value).reshape(rows, -1).all(axis=1)
    valid &= (params["weights"] > 0).reshape(rows, -1).all(axis=1)
    if "variance" in params:
        valid &= (np.asarray(params["variance"]) > 0).reshape(rows, -1).all(axis=1)
    if "rate" in params:
        valid &= (np.asarray(params["rate"]) >= 0).reshape(rows, -1).all(axis=1)
    if "covariance" in params and valid.any():
        try:
            np.linalg.cholesky(params["covariance"][valid])
        except np.linalg.LinAlgError:  # which rows: one by one
            for k in np.flatnonzero(valid):
                try:
                    np.linalg.cholesky(params["covariance"][k])
                except np.linalg.LinAlgError:
                    valid[k] = False
    return valid


def valid_parameters(params: dict) -> bool:
    """Whether extrapolated parameters can be used.

    They must be finite, with positive weights and variances, rates of at least 0 (a rate held at 0, see
    :func:`extrapolate`), and positive definite covariances (the engine then also requires their objective
    to be at least the plain step's).
    """
    return bool(_valid_rows({name: np.asarray(value)[None] for name, value in params.items()})[0])
