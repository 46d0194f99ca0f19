"""The EM engine: maximum likelihood or MAP for any family, with restarts, history and diagnostics.

The loop is the textbook one: E-step, objective, convergence test, M-step. The objective is the
log-likelihood (MLE) or the log posterior density (MAP); it never decreases.
"""

import dataclasses
import json
import warnings
from dataclasses import dataclass, field

import numpy as np

from mixflow.engines.em_steps import (
    Pass,
    add_statistics,
    chunk_rows,
    data_pass,
    e_step,
    responsibility_entropy,
    use_threads,
    weights_step,
)
from mixflow.engines.starts import (
    CANDIDATES_PER_RESTART,
    PORTFOLIO,
    SHORT_MAX_ITER,
    SHORT_TOL,
    is_degenerate,
    portfolio_schedule,
    rank_runs,
    start_responsibilities,
)
from mixflow.families.base import dirichlet_log_density
from mixflow.warnings import ConvergenceWarning, DegenerateComponentWarning, MixflowInternalWarning

__all__ = ["EMOptions", "fit_em", "initial_parameters", "objective"]

_EPS_COUNT = 10 * np.finfo(float).eps
_AGREE = 1e-6  # relative difference below which two short runs are taken to agree on the best value
_SAME_VALUE = 1e-8  # relative difference below which two short runs are taken to have found the same maximum


@dataclass(frozen=True)
class EMOptions:
    """Options of the EM engine (validated by :func:`mixflow.fit`)."""

    map: bool = False
    n_init: int = 5
    init: object = PORTFOLIO
    tol: float = 1e-8
    max_iter: int = 1000
    trim: float | None = None
    chunk_size: int | None = None


@dataclass
class Run:
    """One EM run from one start."""

    params: dict
    history_log_likelihood: list = field(default_factory=list)
    history_objective: list = field(default_factory=list)
    converged: bool = False
    collapsed: set = field(default_factory=set)
    active: np.ndarray | None = None

    @property
    def n_iter(self) -> int:
        return len(self.history_objective) - 1


def objective(model, params: dict, log_likelihood: float, prior, active: np.ndarray) -> float:
    """Log-likelihood (``prior`` None) or log posterior density: + log Dirichlet + log component prior."""
    if prior is None:
        return log_likelihood
    return (log_likelihood + dirichlet_log_density(params["weights"], prior.concentration[active])
            + model.log_prior(params, prior))


def _m_step(model, step: Pass, prepared, prior, active) -> tuple[dict, list[int]]:
    counts = step.counts + _EPS_COUNT
    components, collapsed = model.m_step(counts, step.statistics, prepared, prior)
    weights = weights_step(counts, None if prior is None else prior.concentration[active])
    return {"weights": weights, **components}, collapsed


def _statistics_from_responsibilities(model, resp: np.ndarray, prepared, rows: int) -> Pass:
    counts, statistics = 0.0, None
    for start in range(0, prepared.n_obs, rows):
        chunk = prepared.rows(start, start + rows)
        weighted = resp[start:start + rows] * chunk.weights[:, None]
        statistics = add_statistics(statistics, model.statistics(weighted, chunk, model.chunk_features(chunk)))
        counts = counts + weighted.sum(axis=0)
    return Pass(np.nan, np.asarray(counts), statistics)


def initial_responsibilities(model, prepared, how: str, rng: np.random.Generator) -> np.ndarray:
    """Starting responsibilities (n_obs, K) of one strategy of :mod:`mixflow.engines.starts`."""
    return start_responsibilities(how, model.init_points(prepared), prepared.weights, model.n_components, rng)


def initial_parameters(model, prepared, how, rng, prior, rows) -> dict:
    """Parameters to start EM from: given by the user, or one M-step from initial responsibilities."""
    if isinstance(how, dict):
        return how
    resp = initial_responsibilities(model, prepared, how, rng)
    step = _statistics_from_responsibilities(model, resp, prepared, rows)
    params, _ = _m_step(model, step, prepared, prior, np.arange(model.n_components))
    return params


def _trim(params: dict, active: np.ndarray, threshold: float, model, features) -> tuple[dict, np.ndarray]:
    keep = np.flatnonzero(params["weights"] >= threshold)
    if keep.size == params["weights"].size or keep.size == 0:
        return params, active
    trimmed = model.permute(params, keep, features)
    trimmed["weights"] = trimmed["weights"] / trimmed["weights"].sum()
    return trimmed, active[keep]


def run_em(model, prepared, start: dict, prior, options: EMOptions, rows: int, features,
           threaded: bool = False) -> Run:
    """EM from one start until the relative change of the objective is below ``tol``.

    ``rows`` per chunk; ``threaded`` passes as :func:`~mixflow.engines.em_steps.data_pass`'s.
    """
    active = np.arange(start["weights"].size)
    run = Run(params=start, active=active)
    step = data_pass(model, start, prepared, rows, threaded)
    run.history_log_likelihood.append(step.log_likelihood)
    run.history_objective.append(objective(model, start, step.log_likelihood, prior, active))
    for _ in range(options.max_iter):
        params, collapsed = _m_step(model, step, prepared, prior, run.active)
        run.collapsed.update(int(run.active[c]) for c in collapsed if c < run.active.size)
        if options.trim is not None:
            params, run.active = _trim(params, run.active, options.trim, model, features)
        step = data_pass(model, params, prepared, rows, threaded)
        value = objective(model, params, step.log_likelihood, prior, run.active)
        previous = run.history_objective[-1]
        run.params = params
        run.history_log_likelihood.append(step.log_likelihood)
        run.history_objective.append(value)
        if abs(value - previous) < options.tol * abs(value):
            run.converged = True
            break
    return run


def fit_em(model, data, options: EMOptions, random_seed: int) -> dict:
    """Fit by EM from several starts and return the ``/em`` groups as plain arrays.

    A named strategy (``options.init`` in :data:`~mixflow.engines.starts.STRATEGIES`) runs ``n_init`` starts
    to convergence; ``"auto"`` runs ``CANDIDATES_PER_RESTART * n_init`` short runs over the family's
    portfolio (twice as many when they disagree) and continues the best (:func:`_short_then_continue`).
    The winner is the best non-degenerate run (:func:`~mixflow.engines.starts.rank_runs`).

    Returns
    -------
    dict
        ``{"attrs": {...}, "estimate": {name: (dims, array)}, "responsibilities": {...},
        "sample_stats": {...}}``, components in canonical order.

    """
    prepared = model.prepare(data)
    prior = model.resolve_prior(prepared)
    prior_used = prior if options.map else None
    width = model.chunk_width(data.n_features)
    rows = chunk_rows(data.n_obs, width, options.chunk_size)
    threaded = use_threads(data.n_obs, width)

    def start(name, seed):
        return initial_parameters(model, prepared, name, np.random.default_rng(seed), prior_used, rows)

    def run(params, run_options):
        return run_em(model, prepared, params, prior_used, run_options, rows, data.features, threaded)

    if isinstance(options.init, dict):
        names = ["user parameters"]
    elif options.init == PORTFOLIO:
        names = portfolio_schedule(model.family, 2 * CANDIDATES_PER_RESTART * options.n_init)
    else:
        names = [options.init] * options.n_init
    seeds = np.random.SeedSequence(random_seed).spawn(len(names))
    starts = [(lambda name=name, seed=seed: options.init if isinstance(options.init, dict) else start(name, seed))
              for name, seed in zip(names, seeds, strict=True)]
    degenerate = _degenerate_test(data.total_weight)
    if options.init == PORTFOLIO:
        runs, continued = _short_then_continue(starts, run, options, degenerate)
        names = names[:len(runs)]
    else:
        runs = [run(params(), options) for params in starts]
        continued = np.ones(len(runs), dtype=bool)
    flags = np.array([degenerate(r) for r in runs])
    finals = np.array([r.history_objective[-1] if c else np.nan for r, c in zip(runs, continued, strict=True)])
    best_index = int(rank_runs(finals, flags | ~continued)[0])
    restarts = {"start": names, "continued": continued, "degenerate": flags}
    return _assemble(model, data, prepared, prior, options, runs, best_index, restarts)


def _degenerate_test(total_weight: float):
    def degenerate(run: Run) -> bool:
        collapsed = [c for c in run.collapsed if c in run.active]  # a trimmed component no longer counts
        return is_degenerate(collapsed, run.params["weights"], total_weight)

    return degenerate


def _short_then_continue(starts: list, run, options: EMOptions, degenerate) -> tuple[list, np.ndarray]:
    """Short runs from the starts, the best continued to convergence (Biernacki et al. 2003).

    ``starts`` are callables giving starting parameters. The first half of them run ``SHORT_MAX_ITER``
    iterations (or until the objective changes by less than ``SHORT_TOL``); the second half runs too unless
    two of those short runs stopped by the tolerance at the best value (:func:`_agree`: an easy likelihood,
    where more starts cost time and find nothing). Then a successive halving: the better half by
    :func:`rank_runs` (repeats of a better run's value dropped) runs twice as long again, and so on until
    ``ceil(n_init / 2)`` remain; those are continued to convergence, and more in rank order while every
    continued one is degenerate. Returns the runs started (the continued ones extended) and which were
    continued.
    """
    n_keep = -(-options.n_init // 2)
    short = dataclasses.replace(options, max_iter=min(SHORT_MAX_ITER, options.max_iter),
                                tol=max(SHORT_TOL, options.tol))
    first = len(starts) // 2
    runs = [run(start(), short) for start in starts[:first]]
    if not _agree(runs, degenerate):
        runs += [run(start(), short) for start in starts[first:]]
    survivors, iterations = np.arange(len(runs)), SHORT_MAX_ITER
    while True:
        ranked = survivors[_rank_distinct([runs[i] for i in survivors], degenerate)]
        if ranked.size <= n_keep or iterations >= options.max_iter:
            break
        survivors, iterations = ranked[:max(n_keep, ranked.size // 2)], 2 * iterations
        longer = dataclasses.replace(short, max_iter=min(iterations, options.max_iter))
        for index in survivors:
            runs[index] = _extend(runs[index], run(runs[index].params, longer))
    continued = np.zeros(len(runs), dtype=bool)
    for index in ranked:
        if continued.sum() >= n_keep and not all(degenerate(runs[i]) for i in np.flatnonzero(continued)):
            break
        remaining = dataclasses.replace(options, max_iter=max(options.max_iter - runs[index].n_iter, 0))
        runs[index] = _extend(runs[index], run(runs[index].params, remaining))
        continued[index] = True
    return runs, continued


def _agree(runs: list[Run], degenerate) -> bool:
    """Whether the best short run's value was also reached by another, both stopped by the short tolerance."""
    sound = [r for r in runs if r.converged and not degenerate(r)]
    if len(sound) < 2:
        return False
    values = np.sort([r.history_objective[-1] for r in sound])[::-1]
    best = max(r.history_objective[-1] for r in runs if not degenerate(r))
    return bool(abs(values[0] - best) <= _AGREE * abs(best) and abs(values[1] - best) <= _AGREE * abs(best))


def _rank_distinct(runs: list[Run], degenerate) -> np.ndarray:
    """Positions of ``runs`` best first (:func:`rank_runs`), without runs that repeat a better one's value."""
    finals = np.array([r.history_objective[-1] for r in runs])
    order = rank_runs(finals, np.array([degenerate(r) for r in runs]))
    kept = []
    for index in order:
        if not any(abs(finals[index] - finals[j]) <= _SAME_VALUE * abs(finals[j]) for j in kept):
            kept.append(index)
    return np.array(kept, dtype=int)


def _extend(first: Run, then: Run) -> Run:
    """One run from a run and its continuation (component indices of ``then`` are into ``first.active``)."""
    return Run(params=then.params,
               history_log_likelihood=first.history_log_likelihood + then.history_log_likelihood[1:],
               history_objective=first.history_objective + then.history_objective[1:],
               converged=then.converged,
               collapsed=first.collapsed | {int(first.active[c]) for c in then.collapsed},
               active=first.active[then.active])


def _warn_about(run: Run, options: EMOptions, model, collapsed: list[int]) -> None:
    history = np.array(run.history_objective)
    drops = np.diff(history) < -1e-9 * np.abs(history[1:]) - 1e-9
    if drops.any() and not run.collapsed and options.trim is None:
        warnings.warn(f"EM decreased its objective at iteration(s) {np.flatnonzero(drops)[:5].tolist()}",
                      MixflowInternalWarning, stacklevel=3)
    if collapsed:
        warnings.warn(
            f"{model.collapse_description(collapsed)}. The likelihood is unbounded there; use method='map' "
            "(the prior removes the singularity), fewer components, or trim=... to drop tiny components.",
            DegenerateComponentWarning, stacklevel=3)
    if not run.converged:
        warnings.warn(
            f"EM did not converge in max_iter={options.max_iter} iterations (relative change of the "
            f"objective above tol={options.tol}); increase max_iter, loosen tol, or try other starts.",
            ConvergenceWarning, stacklevel=3)


def _history_array(runs: list[Run], attribute: str) -> np.ndarray:
    length = max(len(getattr(run, attribute)) for run in runs)
    out = np.full((len(runs), length), np.nan)
    for i, run in enumerate(runs):
        values = getattr(run, attribute)
        out[i, :len(values)] = values
    return out


def _assemble(model, data, prepared, prior, options, runs, best_index, restarts: dict) -> dict:
    features = data.features
    rows = chunk_rows(data.n_obs, model.chunk_width(data.n_features), options.chunk_size)
    best = runs[best_index]
    order = model.canonical_order(best.params)
    params = model.permute(best.params, order, features)
    resp, log_density = e_step(model, params, prepared, data.n_features, rows)
    log_likelihood = float(prepared.weights @ log_density)
    active = best.active[order]
    collapsed = sorted(int(np.flatnonzero(active == c)[0]) for c in best.collapsed if c in active)
    degenerate = bool(restarts["degenerate"][best_index])
    _warn_about(best, options, model, collapsed)
    if degenerate and not collapsed:
        warnings.warn(f"a component's weight fell below half an observation's worth (weights "
                      f"{np.round(params['weights'], 6).tolist()}) in every restart; use fewer components, "
                      "method='map', or trim=... to drop it.", DegenerateComponentWarning, stacklevel=3)
    n_active = active.size
    n_parameters = model.n_parameters(data.n_features, n_active)
    total = data.total_weight
    bic = -2 * log_likelihood + n_parameters * np.log(total)
    attrs = {
        "method": "map" if options.map else "mle",
        "log_likelihood": float(log_likelihood),
        "n_iter": int(best.n_iter),
        "converged": int(best.converged),
        "n_parameters": int(n_parameters),
        "n_observations": float(total),
        "bic": float(bic),
        "aic": float(-2 * log_likelihood + 2 * n_parameters),
        "icl": float(bic + 2 * prepared.weights @ responsibility_entropy(resp)),
        "n_init": 1 if isinstance(options.init, dict) else int(options.n_init),
        "n_starts": len(runs),
        "best_restart": best_index,
        "init": "user parameters" if isinstance(options.init, dict) else options.init,
        "best_start": restarts["start"][best_index],
        "degenerate": int(degenerate),
        "n_degenerate_restarts": int(restarts["degenerate"].sum()),
        "tol": float(options.tol),
        "max_iter": int(options.max_iter),
        "trim": -1.0 if options.trim is None else float(options.trim),
        "collapsed_components": json.dumps(collapsed),
        "trimmed_components": int(model.n_components - n_active),
        "prior": json.dumps(prior.to_dict()),
    }
    if options.map:
        attrs["log_posterior"] = float(objective(model, params, log_likelihood, prior, active))
    dims = model.parameter_dims(features)
    sample_stats = {
        "log_likelihood": (("restart", "iteration"), _history_array(runs, "history_log_likelihood")),
        "final_log_likelihood": (("restart",), np.array([r.history_log_likelihood[-1] for r in runs])),
        "final_objective": (("restart",), np.array([r.history_objective[-1] for r in runs])),
        "n_iter": (("restart",), np.array([r.n_iter for r in runs], dtype=np.int64)),
        "converged": (("restart",), np.array([r.converged for r in runs], dtype=bool)),
        "start": (("restart",), np.array(restarts["start"], dtype=str)),
        "continued": (("restart",), restarts["continued"]),
        "degenerate": (("restart",), restarts["degenerate"]),
    }
    if options.map:
        sample_stats["log_posterior"] = (("restart", "iteration"), _history_array(runs, "history_objective"))
    return {
        "attrs": attrs,
        "estimate": {name: (dims[name], value) for name, value in params.items()},
        "responsibilities": {"responsibilities": (("obs", "component"), resp)},
        "sample_stats": sample_stats,
        "n_active": n_active,
    }
