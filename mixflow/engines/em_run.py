"""One EM run, and several in step: the loop, its stopping rule and SQUAREM's extrapolation.

The loop is the textbook one: E-step, objective, convergence test, M-step, with SQUAREM's extrapolation
between cycles of two steps where it is kept (:mod:`mixflow.engines.accelerate`). The objective is the
log-likelihood (MLE) or the log posterior density (MAP); it never decreases from one kept point to the next.

The loop is written as a generator of the parameter sets it needs evaluated and of SQUAREM's extrapolations
(:func:`_iterations`), so that one run (:func:`run_em`) and several in step (:func:`run_together`) share it: runs
in step have their passes computed together, one pass over the data for all of them where the family allows it
(:func:`_evaluate_together`), which on small data saves the per-pass overhead of every run but one, and their
extrapolations and the stop's parameter changes at once (:func:`_extrapolate_together`, :func:`_set_changes`).
"""

from dataclasses import dataclass, field
from functools import cached_property, partial

import numpy as np

from mixflow.engines.accelerate import (
    STANDARD_ERROR_SHARE,
    SquaremState,
    aitken_gap_of,
    centred_log_ratios,
    extrapolate_flat,
    extrapolate_rows,
    flatten,
    largest_change,
    largest_changes,
    observed_rate_of,
    parameter_gap_of,
    parameter_tolerance,
    rate_settled,
    to_tracked,
    to_unconstrained,
    valid_parameters,
)
from mixflow.engines.accelerate import (
    log_weights as log_of_weights,
)
from mixflow.engines.em_steps import (
    Pass,
    data_pass,
    log_normalise,
    objective,
    responsibility_statistics,
    stacked_responsibility_statistics,
    weights_step,
)
from mixflow.families.base import Prepared

__all__ = ["CONVERGENCE_CRITERION", "FIXED_POINT_CRITERION", "PARAMETER_CRITERION", "Point", "Run", "centred_point",
           "maximisation_step", "parameters_from", "run_em", "run_together", "stacked_maximisation_step"]

# the stopping rules of run_em; the one that decided (or was still unmet) is recorded with every fit
PARAMETER_CRITERION = f"parameter_gap < min(sqrt(tol), {STANDARD_ERROR_SHARE:g} / sqrt(n_observations)) unless inf"
CONVERGENCE_CRITERION = f"aitken_gap / n_observations < tol, and {PARAMETER_CRITERION}"
#: an EM step that returns its input exactly (a single component's closed-form maximum, a step that no longer
#: moves any parameter by a rounding unit): every further step would return it again
FIXED_POINT_CRITERION = "fixed point: an EM step left every parameter exactly unchanged"

_EPS_COUNT = 10 * np.finfo(float).eps
#: EM's passes are the family's centred ones where the fast path's relative rounding exceeds this: there its
#: floor (the precision of one-pass moments) would take tight far-apart clusters for collapsed ones.
_CENTRED_ABOVE = 1e-8
#: Once the latest estimates are within the tolerances, up to this many plain EM steps follow, without
#: SQUAREM's jumps, for the stop to be confirmed. A jump restarts the transient of EM's faster directions,
#: whose decay makes the changes' rate grow (:func:`~mixflow.engines.accelerate.rate_settled` refuses it) and
#: whose turn to the slowest direction can make the largest change grow for a few steps (no rate at all): a
#: run that went back to jumping after each refusal could confirm its stop only by chance, while its jumps,
#: sized by the faster directions, take a small part of what is left along the slowest.
_CONFIRM_STEPS = 10
#: At most this many components in one stacked pass: its temporaries are rows x this many (see data_pass's chunks)
_MAX_STACKED = 256


@dataclass
class Point:
    """A parameter set with its pass over the data, its objective, and the EM step it leads to.

    Attributes
    ----------
    params : dict
        The parameters, ``weights`` included.
    active : ndarray of int
        The declared components these are (fewer after trimming).
    log_likelihood, value : float
        Log-likelihood and objective at ``params``.
    following : dict
        The EM map of ``params``: the M-step from this point's pass, trimmed if asked.
    following_active : ndarray of int
        The components of ``following``.
    collapsed : list of int
        Declared components the M-step to ``following`` floored.
    change : float or None
        The largest change (:func:`~mixflow.engines.accelerate.largest_change`) from the tracked form its request
        gave (its run's point before: the last plain one, or a kept extrapolation), set by :func:`run_together`;
        None when none was given.

    """

    params: dict
    active: np.ndarray
    log_likelihood: float
    value: float
    following: dict
    following_active: np.ndarray
    collapsed: list
    change: float | None = None

    @cached_property
    def unconstrained(self) -> dict:
        """``params`` in :func:`~mixflow.engines.accelerate.to_unconstrained` form (SQUAREM's and the stop's)."""
        return to_unconstrained(self.params)

    @cached_property
    def flat(self) -> np.ndarray:
        """:attr:`unconstrained` as one flat array (:func:`~mixflow.engines.accelerate.flatten`), SQUAREM's."""
        return flatten(self.unconstrained)

    @cached_property
    def layout(self) -> tuple:
        """The names and shapes of :attr:`flat`'s parts, in its order (SQUAREM's)."""
        return tuple((name, np.shape(value)) for name, value in self.unconstrained.items())

    @cached_property
    def tracked(self) -> np.ndarray:
        """``params`` in :func:`~mixflow.engines.accelerate.to_tracked` form, the stop's."""
        return to_tracked(self.params, self.unconstrained)

    @property
    def irregular(self) -> bool:
        """Whether the M-step from this point floored or trimmed a component."""
        return bool(self.collapsed) or self.following_active.size != self.active.size


@dataclass
class Run:
    """One EM run from one start: the kept points' history, passes over the data, and how it ended.

    The history holds the log-likelihood and objective of every kept point: each plain EM step and each
    kept extrapolation, so it never decreases. ``n_iter`` counts passes over the data, dropped
    extrapolations included, so it can exceed the history's length minus one.
    """

    params: dict
    history_log_likelihood: list = field(default_factory=list)
    history_objective: list = field(default_factory=list)
    converged: bool = False
    collapsed: set = field(default_factory=set)
    active: np.ndarray | None = None
    n_iter: int = 0
    aitken_gap: float = float("inf")
    accepted_extrapolations: int = 0
    criterion: str = CONVERGENCE_CRITERION
    parameter_gap: float = float("nan")
    #: stopped at a fixed point on the parameters' boundary from which the likelihood rises (not a maximum)
    on_boundary: bool = False

    def record(self, point: Point) -> None:
        """Make ``point`` the run's current parameters and append its values to the history."""
        self.params, self.active = point.params, point.active
        self.history_log_likelihood.append(point.log_likelihood)
        self.history_objective.append(point.value)


def maximisation_step(model, step: Pass, prepared, prior, active) -> tuple[dict, list[int]]:
    """The M-step from a pass: the ``active`` components' parameters and mixing weights, and those floored."""
    counts = step.counts + _EPS_COUNT  # a component no row is assigned to keeps finite parameters
    components, collapsed = model.m_step(counts, step.statistics, prepared, prior)
    # the weights from the counts themselves: an empty component stays empty (and is reported), rather
    # than growing back from the guard above
    return {"weights": _weights(step.counts, prior, active), **components}, collapsed


def stacked_maximisation_step(model, step: Pass, prepared, prior, actives: list) -> tuple[list[dict], list[int]]:
    """:func:`maximisation_step` of the mixtures a stacked pass evaluated (``actives``: each one's components).

    Each mixture's parameters and mixing weights, and the components floored, as indices into the stack.
    """
    groups = len(actives)
    components, collapsed = model.stacked_m_step(step.counts + _EPS_COUNT, step.statistics, prepared, prior, groups)
    weights = _weights(step.counts.reshape(groups, -1), prior, actives)
    return ([{"weights": weights[g], **own} for g, own in enumerate(model.unstack_mixtures(components, groups))],
            collapsed)


def parameters_from(model, prepared, resps: list[np.ndarray], prior, rows: int) -> list[dict]:
    """One M-step from each set of responsibilities (n_obs, K) of ``resps``: each set's parameters, in order.

    Stacked where the family stacks mixtures (:func:`_stackable`), in batches of at most :data:`_MAX_STACKED`
    components: one pass over the chunks for the batch's statistics and one M-step, each set's what its own gives.
    """
    active = np.arange(model.n_components)
    if len(resps) < 2 or not _stackable(model, prepared):
        return [maximisation_step(model, responsibility_statistics(model, resp, prepared, rows), prepared, prior,
                                  active)[0] for resp in resps]
    found = []
    for batch in _batches(np.arange(len(resps)), model.n_components):
        step = stacked_responsibility_statistics(model, [resps[i] for i in batch], prepared, rows)
        found += stacked_maximisation_step(model, step, prepared, prior, [active] * batch.size)[0]
    return found


def _weights(counts: np.ndarray, prior, active: np.ndarray | list) -> np.ndarray:
    """The M-step's mixing weights of the ``active`` components (MAP under the prior's Dirichlet if given).

    Of several sets at once: ``counts`` of shape (G, K) and ``active`` a list of G sets' (stacked only under a prior).
    """
    return weights_step(counts, None if prior is None else prior.concentration[np.asarray(active)])


def _evaluate(model, prepared, prior, trim, rows, features, threaded, params: dict, active: np.ndarray) -> Point:
    """One pass over the data at ``params`` (objective), and the M-step (and trim) it leads to.

    Where the fast path's one-pass moments would round by more than :data:`_CENTRED_ABOVE` at ``params``
    (components thousands of their own sds from the data centre), the pass is the family's centred one.
    """
    steps = model.exact_steps(params, prepared, _CENTRED_ABOVE)
    if steps is not None:
        return centred_point(model, prepared, prior, trim, features, steps, params, active)[0]
    step = data_pass(model, params, prepared, rows, threaded)
    following, collapsed = maximisation_step(model, step, prepared, prior, active)
    return _point(model, prior, trim, features, params, active, step.log_likelihood, following, collapsed)


def _evaluate_together(model, prepared, prior, trim, rows, features, threaded, requests: list) -> list[Point]:
    """:func:`_evaluate` of several ``(params, active)``: the :class:`Point` of each, in order.

    Parameter sets of the same number of components are stacked into one of that many times as many (at most
    :data:`_MAX_STACKED` components, which bounds the pass's temporaries; the family's
    :meth:`~mixflow.families.base.MixtureModel.stack_mixtures`), and one pass over the data
    evaluates them all (:func:`~mixflow.engines.em_steps.data_pass` with ``groups``):
    the E-step, the statistics and the M-step of a component (MLE or MAP) depend on no other set's
    components: the mixing weights are normalised within each set, and what a set's components share (a tied
    covariance) is that set's own (:meth:`~mixflow.families.base.MixtureModel.stacked_m_step`). Done where the
    family stacks (:func:`_stackable`); elsewhere, and where a set needs the centred pass, one at a time.
    """
    evaluate = partial(_evaluate, model, prepared, prior, trim, rows, features, threaded)
    if len(requests) < 2 or not _stackable(model, prepared):
        return [evaluate(*request) for request in requests]
    points = [None] * len(requests)
    sizes = np.array([active.size for _, active in requests])
    for size in np.unique(sizes):
        for same in _batches(np.flatnonzero(sizes == size), int(size)):
            _evaluate_batch(model, prepared, prior, trim, rows, features, threaded, requests, same, points)
    return points


def _batches(indices: np.ndarray, size: int) -> list[np.ndarray]:
    """``indices`` cut into batches of at most :data:`_MAX_STACKED` components in all (of ``size`` each)."""
    per_batch = max(1, _MAX_STACKED // size)
    return [indices[start:start + per_batch] for start in range(0, indices.size, per_batch)]


def _evaluate_batch(model, prepared, prior, trim, rows, features, threaded, requests, same, points) -> None:
    """The points of ``requests[same]`` (parameter sets of one size) into ``points``, stacked where they can be.

    The sets that need the centred pass (checked one by one only when the stack as a whole does) are evaluated
    alone; the others stacked.
    """
    if same.size == 1:
        points[same[0]] = _evaluate(model, prepared, prior, trim, rows, features, threaded, *requests[same[0]])
        return
    batch = [requests[i] for i in same]
    stacked = model.stack_mixtures([params for params, _ in batch])
    if model.exact_steps(stacked, prepared, _CENTRED_ABOVE) is not None:
        steps = [model.exact_steps(params, prepared, _CENTRED_ABOVE) for params, _ in batch]
        centred = np.array([own is not None for own in steps])
        for i, own, (params, active) in zip(same, steps, batch, strict=True):
            if own is not None:  # _evaluate's centred pass, with the steps just found
                points[i] = centred_point(model, prepared, prior, trim, features, own, params, active)[0]
        if not centred.all():
            _evaluate_batch(model, prepared, prior, trim, rows, features, threaded, requests, same[~centred], points)
        return
    found = _stacked_points(model, prepared, prior, trim, rows, features, threaded, batch, stacked, batch[0][1].size)
    for i, point in zip(same, found, strict=True):
        points[i] = point


def _stackable(model, prepared) -> bool:
    """Whether parameter sets can be evaluated stacked.

    On data in memory, of a family whose mixtures stack
    (:meth:`~mixflow.families.base.MixtureModel.stacks_mixtures`).
    """
    return isinstance(prepared, Prepared) and model.stacks_mixtures()


def _stacked_points(model, prepared, prior, trim, rows, features, threaded, batch: list, stacked: dict,
                    size: int) -> list[Point]:
    """The :class:`Point` of each of ``batch``'s parameter sets of ``size`` components, from one pass."""
    groups = len(batch)
    constants = model.e_step_constants(stacked, prepared)
    step = data_pass(model, stacked, prepared, rows, threaded, groups=groups, constants=constants)
    followings, collapsed = stacked_maximisation_step(model, step, prepared, prior, [active for _, active in batch])
    # the points' unconstrained forms (SQUAREM's, the stop's) at once: each parameter's per matrix or element (each
    # set's own; a covariance's from the E-step's factor), the weights' per set (a row each)
    unconstrained = to_unconstrained({name: value for name, value in stacked.items() if name != "weights"},
                                     constants.get("cholesky"))
    log_ratios = centred_log_ratios(stacked["weights"].reshape(groups, size))
    # the flat (SQUAREM's) and tracked (the stop's) forms of each set, as rows: the weights first, then the other
    # parameters in the stack's order, which the layout names; the parts other than the weights are the same in both
    # but for a rate, which the stop tracks as 2 sqrt(rate)
    parts = _rows(model, unconstrained, groups)
    flat = np.concatenate([log_ratios, parts], axis=1)
    log_weights = log_of_weights(stacked["weights"]).reshape(groups, size)
    if "rate" in unconstrained:
        parts = _rows(model, {**unconstrained, "rate": 2.0 * np.sqrt(np.asarray(stacked["rate"], dtype=float))},
                      groups)
    tracked = np.concatenate([log_weights, parts], axis=1)
    layout = (("weights", (size,)),) + _own_shapes(model, unconstrained, groups)
    points = []
    for index, ((params, active), following) in enumerate(zip(batch, followings, strict=True)):
        start = index * size
        floored = [c - start for c in collapsed if start <= c < start + size]
        point = _point(model, prior, trim, features, params, active, float(step.log_likelihood[index]),
                       following, floored)
        point.__dict__.update(layout=layout, flat=flat[index], tracked=tracked[index])
        points.append(point)
    return points


def _own_shapes(model, stacked: dict, groups: int) -> tuple:
    """The names and shapes of one set's parameters of a stack of ``groups``, as ``unstack_mixtures`` gives them."""
    dims, shapes = model.parameter_dims(), []
    for name, value in stacked.items():
        shape = np.shape(value)
        if "component" in dims[name]:
            axis = dims[name].index("component")
            shapes.append((name, shape[:axis] + (shape[axis] // groups,) + shape[axis + 1:]))
        else:
            shapes.append((name, shape[1:]))
    return tuple(shapes)


def _rows(model, stacked: dict, groups: int) -> np.ndarray:
    """Arrays shaped like a stack's parameters as one row per set, (groups, P), each :func:`flatten`'s of its own."""
    dims = model.parameter_dims()
    parts = []
    for name, value in stacked.items():
        if "component" in dims[name]:  # (..., groups x size, ...) -> (groups, ...) as unstack_mixtures
            axis = dims[name].index("component")
            value = value.reshape(value.shape[:axis] + (groups, -1) + value.shape[axis + 1:])
            if axis:
                value = np.moveaxis(value, axis, 0)
        parts.append(value.reshape(groups, -1))
    return np.concatenate(parts, axis=1)


def _point(model, prior, trim, features, params: dict, active: np.ndarray, log_likelihood: float, following: dict,
           collapsed: list[int]) -> Point:
    """The :class:`Point` of a pass at ``params``: its objective, and the M-step's ``following`` trimmed if asked."""
    following_active = active
    if trim is not None:
        following, following_active = _trim(following, active, trim, model, features)
    return Point(params, active, log_likelihood, objective(model, params, log_likelihood, prior, active), following,
                 following_active, [int(active[c]) for c in collapsed if c < active.size])


def _trim(params: dict, active: np.ndarray, threshold: float, model, features) -> tuple[dict, np.ndarray]:
    keep = np.flatnonzero(params["weights"] >= threshold)
    if keep.size == params["weights"].size or keep.size == 0:
        return params, active
    trimmed = model.permute(params, keep, features)
    trimmed["weights"] = trimmed["weights"] / trimmed["weights"].sum()
    return trimmed, active[keep]


def run_em(model, prepared, start: dict, prior, options, rows: int, features,
           threaded: bool = False) -> Run:
    """EM from one start until Aitken's estimate of the objective still to gain is below ``tol`` per observation.

    Aitken's estimate uses the slowest rate plain EM has shown in the run
    (:func:`~mixflow.engines.accelerate.observed_rate`), and is trusted once the rate no longer grows
    (:func:`~mixflow.engines.accelerate.rate_settled`); the parameters must also be within ``sqrt(tol)`` (or
    ``0.1 / sqrt(n)``, :func:`~mixflow.engines.accelerate.parameter_tolerance`) of their limit
    (:func:`~mixflow.engines.accelerate.parameter_gap`), unless their changes do not shrink (a flat ridge).
    Where the objective no longer resolves the gains (``aitken_gap`` is 0 by its rounding), the parameters alone
    decide; until then EM goes on, extrapolated as before. Each estimate must hold for two
    consecutive triples of plain EM points (the last and the one before). ``run.criterion`` names the rule
    that stopped the run (or was still unmet).

    Every iteration is one pass over the data (E-step and objective) and one M-step. With
    ``options.accelerate == "squarem"``, every second iteration is followed by SQUAREM's extrapolation
    (one more pass), kept only when valid, regular and at least as good as the plain step (see
    :mod:`mixflow.engines.accelerate`); ``max_iter`` bounds the passes, extrapolations included.
    ``options`` is a :class:`mixflow.engines.em.EMOptions` (``tol``, ``max_iter``, ``trim``, ``accelerate``);
    ``rows`` per chunk; ``threaded`` passes as :func:`~mixflow.engines.em_steps.data_pass`'s.
    """
    return run_together(model, prepared, [(start, options)], prior, rows, features, threaded)[0]


def run_together(model, prepared, jobs: list, prior, rows: int, features, threaded: bool = False) -> list[Run]:
    """:func:`run_em` from several starts in step, ``jobs = [(start, options), ...]``: the runs, in order.

    Each iteration evaluates every run still going together (:func:`_evaluate_together`), and the SQUAREM
    extrapolations the runs then ask for (:func:`_extrapolate_together`); a run stops on its own rule and its own
    ``max_iter``, so each run is the one :func:`run_em` gives, to the rounding of the sums (a pass over stacked
    components adds the same terms through products of another shape). The options' ``trim`` must be the same
    for all.
    """
    steps = [_iterations(start, options, prepared.total_weight) for start, options in jobs]
    requests = {index: next(step) for index, step in enumerate(steps)}
    runs = [None] * len(steps)
    trim = jobs[0][1].trim if jobs else None
    while requests:
        going = list(requests)
        points = _evaluate_together(model, prepared, prior, trim, rows, features, threaded,
                                    [requests[index][:2] for index in going])
        _set_changes(points, [requests[index][2] for index in going])
        answers = dict(zip(going, points, strict=True))
        while answers:  # the points, then the extrapolations they led to, all runs' at once
            extrapolations = {}
            for index, answer in answers.items():
                try:
                    request = steps[index].send(answer)
                except StopIteration as finished:
                    runs[index] = finished.value
                    del requests[index]
                    continue
                if isinstance(request, _Extrapolation):
                    extrapolations[index] = request
                else:
                    requests[index] = request
            answers = dict(zip(extrapolations, _extrapolate_together(list(extrapolations.values())), strict=True))
    return runs


@dataclass
class _Extrapolation:
    """A run's request for SQUAREM's point from its cycle: the cycle's flat forms, the step bound, their layout."""

    flats: tuple
    step_max: float
    layout: tuple


def _extrapolate_together(requests: list[_Extrapolation]) -> list[tuple[dict | None, float, bool]]:
    """Each request's candidate (None for none), step length and validity; of one layout at once.

    One request alone is :func:`~mixflow.engines.accelerate.extrapolate_flat`'s and
    :func:`~mixflow.engines.accelerate.valid_parameters`'; several of one layout
    :func:`~mixflow.engines.accelerate.extrapolate_rows`', which gives each what those give it.
    """
    results = [None] * len(requests)
    by_layout = {}
    for index, request in enumerate(requests):
        by_layout.setdefault(request.layout, []).append(index)
    for layout, indices in by_layout.items():
        if len(indices) == 1:
            request = requests[indices[0]]
            candidate, alpha = extrapolate_flat(*request.flats, request.step_max, list(layout))
            results[indices[0]] = candidate, alpha, candidate is not None and valid_parameters(candidate)
            continue
        flats = [np.stack([requests[i].flats[k] for i in indices]) for k in range(3)]
        found = extrapolate_rows(*flats, [requests[i].step_max for i in indices], list(layout))
        for i, result in zip(indices, found, strict=True):
            results[i] = result
    return results


def _set_changes(points: list[Point], previous: list) -> None:
    """Set each point's :attr:`Point.change` from ``previous`` (a tracked form, or None for none), in one go.

    The points whose tracked forms are of the size of their previous ones, of one size, are taken together
    (:func:`~mixflow.engines.accelerate.largest_changes`); the others, a component trimmed in between, get NaN
    (:func:`~mixflow.engines.accelerate.largest_change`).
    """
    by_size = {}
    for point, before in zip(points, previous, strict=True):
        if before is not None:
            by_size.setdefault((before.size, point.tracked.size), []).append((point, before))
    for (size, own), pairs in by_size.items():
        if size != own:
            for point, before in pairs:
                point.change = largest_change(before, point.tracked)
            continue
        changes = largest_changes(np.stack([before for _, before in pairs]), np.stack([p.tracked for p, _ in pairs]))
        for (point, _), value in zip(pairs, changes.tolist(), strict=True):
            point.change = value


def _iterations(start: dict, options, total_weight: float):
    """The loop of :func:`run_em` as a generator.

    It yields the ``(params, active, previous)`` to evaluate (``previous``: the tracked form of the run's point before,
    the last plain one or a kept extrapolation, whose change to this one the stop reads, or None) and is sent their
    :class:`Point`; or, at the end of a SQUAREM cycle, an :class:`_Extrapolation`, and is sent its answer
    (:func:`_squarem_point`). It returns the :class:`Run`.
    """
    point = yield start, np.arange(start["weights"].size), None
    run = Run(params=start, active=point.active)
    run.record(point)
    squarem = SquaremState() if options.accelerate == "squarem" else None
    threshold, parameter_threshold = options.tol * total_weight, parameter_tolerance(options.tol, total_weight)
    # the last plain EM value and the gains to it (the last three: the rules below read no more), the last
    # parameters (to_tracked) and the largest changes between them (the last _CONFIRM_STEPS + 1: the parameter test
    # reads the last three, the drift the first and last), all since the last jump; points of this cycle
    value, gains, tracked, moves, cycle = float(point.value), [], point.tracked, [], [point]
    slowest = 0.0  # the slowest rate plain EM has shown in this run (see aitken_gap)
    held = 0  # plain steps still to take before the next jump (see _CONFIRM_STEPS)
    while run.n_iter < options.max_iter:
        run.collapsed.update(point.collapsed)
        point = yield point.following, point.following_active, tracked
        run.n_iter += 1
        run.record(point)
        value, value_before = float(point.value), value
        gains.append(value - value_before)
        del gains[:-3]
        tracked, previous = point.tracked, tracked
        moves.append(largest_change(previous, tracked) if point.change is None else point.change)
        del moves[:-(_CONFIRM_STEPS + 1)]
        # a drift: the largest change has not shrunk over the held steps (a steady one with rounding noise in
        # its steps as well); a transient's growth is over within them, and then its changes shrink
        drifting = len(moves) > _CONFIRM_STEPS and not moves[-1] < moves[0]
        cycle.append(point)
        latest = before = float("inf")  # Aitken's estimates from the last triple of values and the one before
        if len(gains) >= 2:
            rate = observed_rate_of(gains[-2], gains[-1], value)
            if rate > slowest:  # a NaN rate (not readable) leaves it
                slowest = rate
            latest = aitken_gap_of(gains[-2], gains[-1], value, slowest)
            if len(gains) == 3:
                before = aitken_gap_of(gains[0], gains[1], value_before, slowest)
        run.aitken_gap = max(latest, before)  # confirmed by the triple before
        parameters_stop, parameters_confirm = _parameter_test(run, moves, parameter_threshold)
        # changes that do not shrink are either a transient (a jump's faster directions dying out, the slowest
        # taking over) or a drift along a flat ridge (a redundant component, or a direction the data hardly
        # determine), which has no rate: plain steps tell them apart, and only a drift over _CONFIRM_STEPS of them
        # leaves the objective to decide
        unshrinking = run.parameter_gap == np.inf
        parameters_stop = parameters_stop or (unshrinking and drifting)
        parameters_confirm = parameters_confirm or unshrinking
        if latest > 0 and before > 0:  # Aitken's estimate is trusted once EM's rate no longer grows
            run.criterion, confirm = CONVERGENCE_CRITERION, latest < threshold and parameters_confirm
            stop = run.aitken_gap < threshold and rate_settled(gains) and parameters_stop
        else:  # the gains are below the objective's rounding: the parameters decide, or a drift on a ridge as flat
            run.criterion, stop, confirm = PARAMETER_CRITERION, parameters_stop, parameters_confirm
        # (tol=0 runs every iteration; a NaN change, a component trimmed in between or not finite, is no fixed point)
        if moves[-1] == 0.0 and options.tol > 0:
            run.criterion, run.parameter_gap, stop = FIXED_POINT_CRITERION, 0.0, True
        if stop:
            run.converged = True
            break
        held = _CONFIRM_STEPS if confirm else held - 1
        if held > 0:  # take the plain steps that can confirm the stop
            cycle = [point]
        elif squarem is not None and len(cycle) == 3:
            jumped = yield from _squarem_point(run, cycle, squarem, options.max_iter)
            if jumped is not None:
                tracked = jumped.tracked
                point, value, gains, moves = jumped, float(jumped.value), [], []
            cycle = [point]
    if squarem is not None:
        run.accepted_extrapolations = squarem.accepted
    return run


def _parameter_test(run: Run, moves: list, tolerance: float) -> tuple[bool, bool]:
    """The parameter criterion on the last plain EM steps: whether to stop, to confirm.

    ``moves`` are the largest changes (:func:`~mixflow.engines.accelerate.largest_change`) between
    consecutive plain EM points in :func:`~mixflow.engines.accelerate.to_tracked` form, oldest first: each
    computed once, as its point is made. Sets ``run.parameter_gap`` to the larger estimate of the last two
    triples of points (:func:`~mixflow.engines.accelerate.parameter_gap`).
    """
    inf = float("inf")
    latest = parameter_gap_of(*moves[-2:]) if len(moves) >= 2 else inf
    before = parameter_gap_of(*moves[-3:-1]) if len(moves) >= 3 else inf
    run.parameter_gap = max(latest, before)
    # at a fixed point (no change beyond the rounding) there is no rate to settle
    stop = run.parameter_gap < tolerance and (run.parameter_gap == 0 or rate_settled(moves[-3:]))
    return stop, latest < tolerance


def _squarem_point(run: Run, cycle: list, state: SquaremState, max_iter: int):
    """The extrapolated point of a SQUAREM cycle if it is kept, else None (the plain step stands).

    A generator as :func:`_iterations`: it yields an :class:`_Extrapolation`, answered with the candidate, its step
    length and whether it is valid (:func:`_extrapolate_together`), then the candidate to evaluate, if any.

    A cycle whose M-steps floored (collapsed) or trimmed a component is not extrapolated, nor is a point
    kept whose own M-step does: the map is not smooth there, and the floor breaks the monotone guarantee.
    """
    start, first, second = cycle
    if start.irregular or first.irregular:
        return None
    candidate, alpha, valid = yield _Extrapolation((start.flat, first.flat, second.flat), state.step_max, start.layout)
    if candidate is None:
        state.update(alpha, kept=True)  # the plain step, which stands (a NaN alpha changes nothing)
        return None
    if not valid or run.n_iter >= max_iter:
        state.update(alpha, kept=False)
        return None
    trial = yield candidate, second.active, None
    run.n_iter += 1
    kept = bool(trial.value >= second.value) and not trial.irregular
    state.update(alpha, kept)
    if not kept:
        return None
    run.record(trial)
    return trial


def centred_point(model, prepared, prior, trim, features, steps, params: dict, active: np.ndarray):
    """:func:`_evaluate` by the family's centred steps (``steps``); also the responsibilities and log p(x_n)."""
    log_density_of, m_step = steps
    weights = prepared.weights
    with np.errstate(divide="ignore"):
        resp = log_density_of(params) + np.log(params["weights"])
    log_density = log_normalise(resp)  # resp held log p(x_n, z_n = k); now the responsibilities
    log_likelihood = float(weights @ np.where(weights > 0, log_density, 0.0))
    weighted = resp * weights[:, None]
    counts = weighted.sum(axis=0)
    components, collapsed = m_step(weighted, prior)
    following = {"weights": _weights(counts, prior, active), **components}
    return _point(model, prior, trim, features, params, active, log_likelihood, following, collapsed), resp, log_density
