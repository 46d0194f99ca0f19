"""The EM engine: maximum likelihood or MAP for any family, with restarts, history and diagnostics.

The loop is the textbook one: E-step, objective, convergence test, M-step, with SQUAREM's extrapolation
between cycles of two steps where it is kept (:mod:`mixflow.engines.accelerate`). The objective is the
log-likelihood (MLE) or the log posterior density (MAP); it never decreases from one kept point to the next.
"""

import dataclasses
import itertools
import json
import warnings
from dataclasses import dataclass, replace
from functools import partial

import numpy as np

from mixflow.engines.accelerate import STANDARD_ERROR_SHARE, parameter_tolerance
from mixflow.engines.em_run import (
    CONVERGENCE_CRITERION,
    PARAMETER_CRITERION,
    Run,
    centred_point,
    maximisation_step,
    parameters_from,
    run_em,
    run_together,
)
from mixflow.engines.em_steps import (
    check_densities,
    chunk_rows,
    e_step,
    objective,
    responsibility_entropy,
    use_threads,
)
from mixflow.engines.kmeans import SCALABLE_KMEANS
from mixflow.engines.starts import (
    CANDIDATES_PER_RESTART,
    CLASS_SEEDS,
    NEIGHBOURHOOD_SEEDS,
    PORTFOLIO,
    SHORT_MAX_ITER,
    SHORT_TOL,
    boundary_moves,
    dense_moves,
    draws_nothing,
    freed_moves,
    is_degenerate,
    labels_key,
    local_log_density,
    neighbourhood_moves,
    outlier_moves,
    partition_key,
    portfolio_schedule,
    rank_runs,
    reduced_responsibilities,
    replacement_strategy,
    split_merge_moves,
    standardise,
    start_responsibilities,
    stops_on_agreement,
    transfer_moves,
    value_starts,
)
from mixflow.errors import InputError
from mixflow.warnings import (
    PACKAGE_FILES,
    ConvergenceWarning,
    DegenerateComponentWarning,
    MixflowInternalWarning,
    MixflowWarning,
    PrecisionWarning,
    SpuriousMaximumWarning,
)
from mixflow.wording import agreeing, counted, pairs_text

__all__ = ["CONVERGENCE_CRITERION", "EMOptions", "PARAMETER_CRITERION", "duplicate_components", "empty_components",
           "fit_em", "fit_prepared", "initial_parameters"]

#: At most this many centred EM steps polish an answer the fast path rounded (:func:`_refine_exactly`).
_CENTRED_STEPS = 10
_ROUNDING = 1e-13  # relative rounding of a log-likelihood summed over rows
_SET_ASIDE_GAP = 1.0  # a spurious maximum set aside is said when it is this much above the fit returned
_EMPTY_COUNT = 1e-6  # weight x total weight below which a component has (practically) no observation
_AGREE = 1e-6  # relative difference below which two short runs are taken to agree on the best value
_SAME_VALUE = 1e-8  # relative difference below which two short runs are taken to have found the same maximum
SOUND, SPURIOUS, DEGENERATE = 0, 1, 2  # tiers of a run, best first (see _tier_test)
_START_BATCH_FLOATS = 2**21  # the starts' responsibilities held at once to make their parameters together
_KEEP_FRACTION = 4  # each round of the successive screening keeps the best 1 / this of the short runs
TRANSFER_ROUNDS = 6  # rounds of the local search after the continuation of init="auto" (see _transfer_search)
TRANSFER_CONTINUED = 3  # local moves continued to convergence per round, the best after their short runs
SPLIT_MERGE_CONTINUED = 1  # split-and-merge moves continued to convergence per round, beside the local ones
OUTLIER_CONTINUED = 1  # outlier moves continued to convergence per round, beside the others
DENSE_CONTINUED = 1  # dense-group moves continued to convergence per round, beside the others
MOVE_FIRST_ITER = 5  # iterations every move of the local search runs before the most promising go on
MOVES_KEPT = 3  # moves of each kind that go on to the short runs' cap, per move of the kind continued after them
START_ROUNDS = 2  # rounds of starts of init="auto" at most (see _start_rounds)
#: Data of more rows run init="auto"'s starts, short runs and local searches on a uniform sample of SEARCH_SAMPLE
#: rows (:func:`_search_sample`), which bounds their time and the moves' memory; the best maxima found there go on on
#: every row, and a last local search runs there (see :func:`fit_prepared`)
SEARCH_ROWS = 8192
SEARCH_SAMPLE = 4096
#: iterations after which the last local search on every row drops a move not yet above the fit it left (EM never
#: descends, so a move above that fit ends above it, and one still below after this many has seldom far to climb),
#: and after which a search sample's maximum continued on every row stops if below the highest reached there
FINAL_FOLLOW_ITER = 100
TRANSFER = "transfer"  # the start of a run the local search kept
#: Two components whose log densities differ by the same amount on every row, to this, are one component in
#: two parts (:func:`duplicate_components`): their responsibilities' ratio never moves by more than 0.1%
_DUPLICATE_WITHIN = 1e-3


@dataclass(frozen=True)
class EMOptions:
    """Options of the EM engine (validated by :func:`mixflow.fit`, which documents them)."""

    map: bool = False
    n_init: int = 5
    init: object = PORTFOLIO
    tol: float = 1e-10
    max_iter: int = 1000
    trim: float | None = None
    chunk_size: int | None = None
    accelerate: str | None = "squarem"
    subsample: int = 100_000


def initial_responsibilities(model, prepared, how: str, rng: np.random.Generator) -> np.ndarray:
    """Starting responsibilities (n_obs, K) of one strategy of :mod:`mixflow.engines.starts`."""
    return start_responsibilities(how, model.init_points(prepared), prepared.weights, model.n_components, rng)


def initial_parameters(model, prepared, how, rng, prior, rows) -> dict:
    """Parameters to start EM from: given by the user, or one M-step from initial responsibilities."""
    if isinstance(how, dict):
        return how
    return _parameters_from(model, prepared, initial_responsibilities(model, prepared, how, rng), prior, rows)


def _parameters_from(model, prepared, resp: np.ndarray, prior, rows) -> dict:
    """One M-step from responsibilities (n_obs, K)."""
    return parameters_from(model, prepared, [resp], prior, rows)[0]


def fit_em(model, data, options: EMOptions, random_seed: int) -> dict:
    """Fit by EM from several starts and return the ``/em`` groups as plain arrays.

    A named strategy (``options.init`` in :data:`~mixflow.engines.starts.STRATEGIES`) runs ``n_init`` starts
    to convergence; ``"auto"`` runs up to ``2 * CANDIDATES_PER_RESTART * n_init`` short runs over the
    family's portfolio (fewer when the first ones agree) and continues the best (:func:`_short_then_continue`),
    in up to :data:`START_ROUNDS` rounds, each followed by a local search (:func:`_start_rounds`).
    The winner is the best sound run, else the best spurious one, else the best degenerate one
    (:func:`~mixflow.engines.starts.rank_runs`).

    Returns
    -------
    dict
        ``{"attrs": {...}, "estimate": {name: (dims, array)}, "responsibilities": {...},
        "sample_stats": {...}}``, components in canonical order.

    """
    return fit_prepared(model, data, model.prepare(data), options, random_seed)


def fit_prepared(model, data, prepared, options: EMOptions, random_seed: int, sample=None) -> dict:
    """:func:`fit_em` on prepared data, with the starts and short runs on ``sample`` (prepared rows) if given.

    ``prepared`` may be chunked (:class:`mixflow.engines.em_chunked.ChunkedPrepared`): then the starts, the
    short runs of ``init="auto"`` and the stored responsibilities use ``sample``, a prepared uniform
    subsample of its rows in the same working units, and the runs continued to convergence the whole data.
    A sample of every row gives what numpy input gives.

    Data of more than :data:`SEARCH_ROWS` rows (in memory, or chunked data whose sample is every row) run
    ``init="auto"`` (its rounds of starts, short runs, continuations and local searches) on a uniform sample of
    :data:`SEARCH_SAMPLE` of them (:func:`_search_sample`), as if it were the data; the best distinct maxima
    reached there continue on every row (:func:`_continue_on_all`), and a last local search runs from them on
    every row, its moves made and first screened on the sample (so that their memory is the sample's) and
    dropped after :data:`FINAL_FOLLOW_ITER` iterations below the fit they left. The runs not continued on every
    row keep the sample's values (``restarts["search_rows"]``).
    """
    sample = prepared if sample is None else sample
    same_data = sample.n_obs == prepared.n_obs
    prior_used = model.working_prior(prepared) if options.map else None  # the MLE never builds the prior
    problems = model.mle_problems(sample, data.features) if not options.map and same_data else []
    for problem in problems:
        warnings.warn(problem, DegenerateComponentWarning, skip_file_prefixes=PACKAGE_FILES)
    if isinstance(options.init, dict):
        options = replace(options, init=model.to_working(options.init, prepared))
    width = model.chunk_width(data.n_features)
    rows = chunk_rows(sample.n_obs, width, options.chunk_size)
    threaded = use_threads(sample.n_obs, width)
    # the rows the portfolio's starts, short runs and local search run on: a sample of them when there are many
    searched = (_search_sample(sample, SEARCH_SAMPLE, random_seed)
                if options.init == PORTFOLIO and same_data and sample.n_obs > SEARCH_ROWS else sample)
    search_rows = chunk_rows(searched.n_obs, width, options.chunk_size)
    search_threaded = use_threads(searched.n_obs, width)

    seen, made = set(), {}  # the partitions started from; the starts that draw no random number, by name
    # whether the seeding points have a spread: on one distinct point, the deterministic starts draw at random
    spread = options.init == PORTFOLIO and bool(np.ptp(model.init_points(searched), axis=0).max(initial=0.0) > 0)

    def start(name, seed):
        return initial_parameters(model, sample, name, np.random.default_rng(seed), prior_used, rows)

    def fresh_start(name, seed):
        """The strategy and starting responsibilities of a start, or None (its parameters: ``parameters_of``).

        A start that puts the points together as an earlier one did is replaced by one of the family's random
        strategy (:func:`~mixflow.engines.starts.replacement_strategy`), or skipped (None) if that repeats too.
        """
        for strategy in (name, replacement_strategy(model.family)):
            resp = made.get(strategy)
            if resp is None:
                resp = initial_responsibilities(model, searched, strategy, np.random.default_rng(seed))
                if spread and draws_nothing(strategy, searched.n_obs, searched.unit_weights, model.n_components):
                    made[strategy] = resp
            key = partition_key(resp)
            if key is None or key not in seen:
                seen.add(key)
                return strategy, resp
            seed = seed.spawn(1)[0]
        return None

    def short_runs(jobs: list) -> list:
        """The runs on ``searched`` (``[(params, options), ...]``, in step: ``run_together``)."""
        return run_together(model, searched, jobs, prior_used, search_rows, data.features, search_threaded)

    def run(params, run_options, on=None):
        return run_em(model, prepared if on is None else on, params, prior_used, run_options, rows, data.features,
                      threaded)

    def together(jobs: list) -> list:
        """Runs on the whole data, ``[(params, options), ...]``, in step; chunked data share each pass among them."""
        shared = getattr(prepared, "run_together", None)
        if shared is None:
            return run_together(model, prepared, jobs, prior_used, rows, data.features, threaded)
        return shared([partial(run, params, run_options) for params, run_options in jobs])

    if isinstance(options.init, dict):
        names = ["user parameters"]
    elif options.init == PORTFOLIO:
        fewest = model.fewest_values_for_starts(options.map)
        by_values = [] if fewest is None else value_starts(model.init_points(searched), fewest)
        names = portfolio_schedule(model.family, 2 * CANDIDATES_PER_RESTART * options.n_init, by_values,
                                   model.n_components)
    else:
        names = [options.init] * options.n_init
    root = np.random.SeedSequence(random_seed)
    seeds = root.spawn(len(names))
    tier = _tier_test(model, data.total_weight, check_spurious=not options.map)
    on_all = searched is sample  # else the search sample's runs are judged by its own weight
    search_tier = tier if on_all else _tier_test(model, searched.total_weight, check_spurious=not options.map)
    rounds = 1
    if options.init == PORTFOLIO:
        search_together = together if on_all else short_runs
        points = model.density_points(searched) if same_data else None
        local = None if points is None else local_log_density(points, searched.weights)
        search = partial(_transfer_search, tier=search_tier,
                         moved_starts=partial(_moved_starts, model, searched, prior_used, search_rows, local=local),
                         partition=partial(_partition, model, searched, search_rows), runs_of=search_together,
                         options=options, searched={},
                         duplicates=lambda params: duplicate_components(
                             _log_joint(model, params, searched, search_rows), searched.weights))
        schedule = names
        runs, continued, names, rounds = _start_rounds(
            lambda round_seeds: [partial(fresh_start, name, seed)
                                 for name, seed in zip(schedule, round_seeds, strict=True)],
            seeds, lambda: root.spawn(len(schedule)),
            lambda starts: _short_then_continue(starts, short_runs, options, search_tier, search_together, same_data,
                                                stops_on_agreement(model.family),
                                                partial(parameters_from, model, searched, prior=prior_used,
                                                        rows=search_rows)),
            search if same_data else None, search_tier, START_ROUNDS if same_data and not problems else 1)  # no MLE
        if not on_all:  # the sample's best maxima go on on every row, and a last local search runs there
            continued = _continue_on_all(runs, continued, search_tier, together, options, tier)
            runs, continued, names = search(runs, continued, names, tier=tier, runs_of=together, searched={},
                                            screen_runs_of=short_runs, follow_cap=FINAL_FOLLOW_ITER)
    elif options.init == SCALABLE_KMEANS:  # chunked data only (checked by mixflow.fit): seeds from every row
        active = np.arange(model.n_components)
        runs = together([(maximisation_step(model, step, prepared, prior_used, active)[0], options)
                         for step in prepared.scalable_kmeans_passes(model, seeds, sample)])
        continued = np.ones(len(runs), dtype=bool)
    else:
        starts = [(lambda name=name, seed=seed: options.init if isinstance(options.init, dict) else start(name, seed))
                  for name, seed in zip(names, seeds, strict=True)]
        runs = together([(params(), options) for params in starts])
        continued = np.ones(len(runs), dtype=bool)
    if not options.map and same_data:  # a fixed point on a boundary the likelihood rises from is no maximum
        for run in (runs if on_all else [run for run, going in zip(runs, continued, strict=True) if going]):
            run.on_boundary = run.converged and model.not_a_maximum(run.params, sample)
            run.converged = run.converged and not run.on_boundary
    tiers = np.array([(tier if going or on_all else search_tier)(r) for r, going in zip(runs, continued, strict=True)])
    flags, spurious = tiers == DEGENERATE, tiers == SPURIOUS
    finals = np.array([r.history_objective[-1] if c else np.nan for r, c in zip(runs, continued, strict=True)])
    _check_some_finite(finals)
    best_index = _earliest_at_best(finals, tiers, continued, int(rank_runs(finals, flags | ~continued, spurious)[0]),
                                   options.tol * data.total_weight)
    restarts = {"start": names, "continued": continued, "degenerate": flags, "spurious": spurious,
                "rounds": rounds, "search_rows": searched.n_obs}
    return _assemble(model, data, prepared, prior_used, options, runs, best_index, restarts, sample,
                     no_maximum=bool(problems))


def _start_rounds(starts_of, seeds: list, more_seeds, screen, search, tier,
                  most: int = START_ROUNDS) -> tuple[list, np.ndarray, list, int]:
    """Rounds of starts of ``init="auto"``, each with its local search: the runs, which were continued, starts, rounds.

    A round is the portfolio's starts (``starts_of(seeds)``) screened and the best continued to convergence
    (``screen``, :func:`_short_then_continue`), then the local search (``search``, :func:`_transfer_search`;
    None for none) from the round's sound continued runs. Another round of as many starts, from new seeds
    (``more_seeds()``: spawned from the same ``SeedSequence``, so that the first round is the same whatever
    follows), runs, up to ``most`` rounds (:data:`START_ROUNDS`; one on chunked data, where each continued run
    is passes over the whole data), when

    - the continued sound runs of a round end at different maxima: the likelihood has shown itself rugged, the
      screening's best few lead to more than one maximum, and a higher one may lie where no start went;
    - no start of the rounds so far reached a sound fit (every one collapsed or spurious: features of few values
      under a "diag" covariance): a sound one may still exist where none went, and a degenerate fit wins only
      when nothing else does;
    - one continued run alone is sound and most of the round's runs collapsed (a feature of many equal values,
      where most starts put a component on them): one sound run shows no agreement, and the sound maxima were
      hardly sampled.

    Continued runs that agree stop the rounds, so an easy likelihood costs one.

    A later round's search is told the best sound maximum of the rounds before (``bar``): it goes on through the
    round's lower maxima until a climb passes that, not only the round's own best, since a maximum no earlier
    run reached may be one move below a higher one. The maxima searched from before are skipped (the search's
    ``searched``), so the first round and its search are what they would be alone, and a second round can only
    add maxima, never lose one.
    """
    runs, continued, names = [], np.zeros(0, dtype=bool), []
    sound = False  # whether a start (not a search) of the rounds so far reached a sound fit
    for round_index in range(most):
        more, more_continued, more_names = screen(starts_of(seeds if round_index == 0 else more_seeds()))
        values = [run.history_objective[-1] for run, going in zip(more, more_continued, strict=True)
                  if going and tier(run) == SOUND]
        # one sound run where most starts collapsed: no agreement shown, and the sound maxima barely sampled
        lone = len(values) == 1 and np.mean([tier(run) == DEGENERATE for run in more]) > 0.5
        if search is not None:
            bar = max((run.history_objective[-1] for run, going in zip(runs, continued, strict=True)
                       if going and tier(run) == SOUND), default=-np.inf)
            more, more_continued, more_names = search(list(more), more_continued, list(more_names), bar=bar)
        sound = sound or bool(values)
        runs, names = runs + list(more), names + list(more_names)
        continued = np.concatenate([continued, more_continued])
        if not sound:  # no sound run yet (every one collapsed or spurious): another round first
            continue
        if lone:
            continue
        if not values or not _higher(max(values), min(values)):
            break
    return runs, continued, names, round_index + 1


def _search_sample(prepared, size: int, random_seed: int):
    """A uniform sample of ``size`` of the prepared rows, without replacement, in their order, from the seed.

    Its seed is derived from ``random_seed`` apart from the starts' (:class:`numpy.random.SeedSequence`), so that
    the same seed draws the same sample and the same starts.
    """
    rng = np.random.default_rng(np.random.SeedSequence([random_seed, 2]))
    return prepared.take(np.sort(rng.choice(prepared.n_obs, size=min(size, prepared.n_obs), replace=False)))


def _continue_on_all(runs: list[Run], continued: np.ndarray, tier, together, options: EMOptions,
                     tier_on_all) -> np.ndarray:
    """The search sample's best distinct maxima continued on every row, in step; which runs those are.

    Of the runs continued to convergence on the sample, the best ``ceil(n_init / 2)`` by :func:`_rank_distinct`
    (sound first, one per value) go on from where they ended (:func:`_restart`: their runs in ``runs`` become the
    continuations); the others are no longer counted as continued, their values being the sample's. They go on in
    step for :data:`FINAL_FOLLOW_ITER` iterations, then, up to the whole ``max_iter``, those not yet converged but
    a run below the highest sound value reached by more than ``_SAME_VALUE`` (relative): a lower maximum of the
    sample can be, on every row, a slow climb that never reaches the best (a cluster split in two, a thousand
    passes of every row), and such a run stops there, not converged. ``tier`` ranks the sample's runs (judged by
    the sample's weight); ``tier_on_all`` judges the continuations on every row.
    """
    ended = np.flatnonzero(continued)
    chosen = ended[_rank_distinct([runs[i] for i in ended], tier)][:-(-options.n_init // 2)]
    first = replace(options, max_iter=min(FINAL_FOLLOW_ITER, options.max_iter))
    results = together([(runs[i].params, first) for i in chosen])
    bar = max((result.history_objective[-1] for result in results if tier_on_all(result) == SOUND), default=-np.inf)
    going = [j for j, result in enumerate(results) if not result.converged and result.n_iter < options.max_iter
             and not _higher(bar, result.history_objective[-1])]
    more = together([(results[j].params, replace(options, max_iter=options.max_iter - results[j].n_iter))
                     for j in going]) if going else []
    for j, result in zip(going, more, strict=True):
        results[j] = _extend(results[j], result)
    for index, result in zip(chosen, results, strict=True):
        runs[index] = _restart(runs[index], result)
    carried = np.zeros(len(runs), dtype=bool)
    carried[chosen] = True
    return carried


def _higher(value: float, than: float) -> bool:
    """Whether ``value`` is above ``than`` by more than ``_SAME_VALUE`` (relative): another maximum."""
    return bool(value > than + (_SAME_VALUE * abs(than) if np.isfinite(than) else 0.0))


def _maxima_found(runs: list[Run], restarts: dict, best_index: int, within: float,
                  short_within: float | None = None) -> tuple[int, int]:
    """How many converged runs of the best one's tier ended at its maximum, and how many distinct maxima they found.

    The runs continued to convergence, and (``short_within`` given: the short runs were on the same data) the
    short runs of the screening that stopped by their own looser rule, within ``short_within`` of a maximum: on
    an easy likelihood the screening stops early and continues one run, and the short runs are then all that
    saw the other maxima. Sorted final objectives closer than the larger of two neighbours' thresholds
    (``within``, the stopping threshold, for a continued run) are one maximum. A best maximum that one run
    found among several maxima says that other seeds or more starts may find a higher one.
    """
    converged = np.array([run.converged for run in runs])  # a run stopped at max_iter has reached no maximum
    continued = np.asarray(restarts["continued"], dtype=bool)
    counted = continued if short_within is None else np.ones(len(runs), dtype=bool)
    same = counted & converged & (restarts["degenerate"] == restarts["degenerate"][best_index]) & \
        (restarts["spurious"] == restarts["spurious"][best_index])  # the best one's tier
    finals = np.array([run.history_objective[-1] for run in runs])
    reach = np.where(continued, within, within if short_within is None else short_within)
    order = np.argsort(finals[same], kind="stable")
    finals, reach = finals[same][order], reach[same][order]
    kept = np.isfinite(finals)
    finals, reach = finals[kept], reach[kept]
    if finals.size == 0:
        return 0, 0
    # neighbours closer than either's threshold are one maximum; the best run's is the one holding the value nearest it
    maximum = np.concatenate([[0], np.cumsum(np.diff(finals) > np.maximum(reach[1:], reach[:-1]))])
    best = maximum[np.argmin(np.abs(finals - runs[best_index].history_objective[-1]))]
    return int(np.sum(maximum == best)), int(maximum[-1] + 1)


def _earliest_at_best(finals: np.ndarray, tiers: np.ndarray, continued: np.ndarray, best: int, within: float) -> int:
    """The earliest continued run of the best one's tier whose final objective is within ``within`` of its.

    Runs that end closer than the stopping threshold (``tol`` per observation) are at the same maximum as far
    as EM can tell; taking the earliest keeps rounding differences between their values (another order of the
    sums, on chunked data) from changing the answer.
    """
    same = continued & (tiers == tiers[best]) & (np.abs(finals - finals[best]) <= within)
    return int(np.flatnonzero(same)[0]) if same.any() else best


def _tier_test(model, total_weight: float, check_spurious: bool = True):
    """The tier of a run, ``tier(run)``, best first: SOUND, SPURIOUS, DEGENERATE.

    Degenerate: :func:`~mixflow.engines.starts.is_degenerate`; spurious: a component that
    ``model.spurious_components`` names, checked for the MLE only (``check_spurious``): a spurious maximum
    comes from the likelihood's singularities, which the prior of a MAP fit removes.
    """
    seen = {}  # id(params) -> (params, tier): the rankings ask again of runs that have not moved

    def tier(run: Run) -> int:
        collapsed = [c for c in run.collapsed if c in run.active]  # a trimmed component no longer counts
        if is_degenerate(collapsed, run.params["weights"], total_weight):
            return DEGENERATE
        if not check_spurious:
            return SOUND
        known = seen.get(id(run.params))
        if known is None or known[0] is not run.params:
            known = seen[id(run.params)] = (run.params, SPURIOUS if model.spurious_components(run.params, total_weight)
                                            else SOUND)
        return known[1]

    return tier


def _short_then_continue(starts: list, runs_of, options: EMOptions, tier, together=None,
                         same_data: bool = True, early: bool = True,
                         parameters_of=None) -> tuple[list, np.ndarray, list, bool]:
    """Short runs from the starts, the best continued to convergence (Biernacki et al. 2003).

    ``starts`` are callables giving a start's strategy and parameters (or what ``parameters_of``, given, turns into
    them, for the starts of a stage at once), or None for a start skipped as a repeat of an earlier one (its run
    would repeat that one's). A quarter of them run ``SHORT_MAX_ITER``
    iterations (or until the objective changes by less than ``SHORT_TOL``); then up to half, then all of
    them (:func:`_screening_stages`; all at once when not ``early``, as the family's
    :func:`~mixflow.engines.starts.stops_on_agreement` says), each stage only when the short runs so far do not
    agree: two sound
    ones stopped by the tolerance at the best sound value (:func:`_agree`: an easy likelihood, where more
    starts cost time and find nothing). Then a successive screening: the best quarter by
    :func:`rank_runs` of Aitken's estimates of their limits (:func:`_rank_distinct`; repeats of a better run's
    value dropped) runs twice as long again, and so on until
    ``ceil(n_init / 2)`` remain; those are continued to convergence, and more in rank order while every
    continued one is degenerate or spurious (``tier(run)``, see :func:`_tier_test`): the other survivors,
    then the non-degenerate runs the screening dropped (:func:`_fallbacks`). Returns the runs started
    (the continued ones extended), which were continued and their strategies. ``runs_of(jobs)`` runs the short
    runs, ``[(params, options), ...]``, and ``together(jobs)`` the continuations on the whole data (by default
    ``runs_of``).
    Short runs on a subsample (``same_data`` False) are not extended: the continued run, on the whole data,
    starts from where the short one ended, with its own history and the whole ``max_iter``.
    """
    together = together or runs_of
    n_keep = -(-options.n_init // 2)
    short = dataclasses.replace(options, max_iter=min(SHORT_MAX_ITER, options.max_iter),
                                tol=max(SHORT_TOL, options.tol))
    runs, names, done, agreed = [], [], 0, False
    for stage in _screening_stages(len(starts)) if early else [len(starts)]:
        more, more_names = _run_fresh(starts[done:stage], runs_of, short, parameters_of)
        runs, names, done = runs + more, names + more_names, stage
        agreed = _agree(runs, tier)
        if agreed:
            break
    survivors, iterations = np.arange(len(runs)), SHORT_MAX_ITER
    while True:
        ranked = survivors[_rank_distinct([runs[i] for i in survivors], tier, projected=True)]
        if ranked.size <= n_keep or iterations >= options.max_iter:
            break
        survivors, iterations = ranked[:max(n_keep, ranked.size // _KEEP_FRACTION)], 2 * iterations
        longer = dataclasses.replace(short, max_iter=min(iterations, options.max_iter))
        for index, result in zip(survivors, runs_of([(runs[i].params, longer) for i in survivors]), strict=True):
            runs[index] = _extend(runs[index], result)
    continued = np.zeros(len(runs), dtype=bool)

    def jobs(indices) -> list:
        if same_data:
            return [(runs[i].params, dataclasses.replace(options, max_iter=max(options.max_iter - runs[i].n_iter, 0)))
                    for i in indices]
        return [(runs[i].params, options) for i in indices]

    def join(indices, results) -> None:
        for index, result in zip(indices, results, strict=True):
            runs[index] = _extend(runs[index], result) if same_data else _restart(runs[index], result)
            continued[index] = True

    first = ranked[:n_keep]  # continued together; more, one at a time, while no continued one is sound
    join(first, together(jobs(first)))
    for index in _fallbacks(runs, ranked, n_keep, tier):
        if any(tier(runs[i]) == SOUND for i in np.flatnonzero(continued)):
            break
        join([index], together(jobs([index])))
    return runs, continued, names


def _moved_starts(model, prepared, prior, rows: int, params: dict, local: np.ndarray | None = None) -> list[list]:
    """Starting parameters one move away from ``params``, by kind: local, split-and-merge, outlier and dense moves.

    The local moves are the split-and-transfer moves (:func:`~mixflow.engines.starts.transfer_moves`) and the
    boundary moves (:func:`~mixflow.engines.starts.boundary_moves`); then Ueda et al.'s split-and-merge
    (:func:`~mixflow.engines.starts.split_merge_moves`), a component freed onto the rows the fit explains
    worst (:func:`~mixflow.engines.starts.outlier_moves`, from as few rows as its parameters need,
    ``model.component_rows``, and for a MAP fit also from the one row explained worst and from each of the few worst
    rows with its nearest rows, :func:`~mixflow.engines.starts.neighbourhood_moves`, from each of the
    :data:`~mixflow.engines.starts.CLASS_SEEDS` classes whose counts the fit falls shortest of where the rows are
    classes, ``model.rows_are_classes``, under the MLE too; for more than two components
    also one given to the others and freed onto the rows they then explain worst,
    :func:`~mixflow.engines.starts.freed_moves`), and, given the data's
    own log density at each row (``local``, :func:`~mixflow.engines.starts.local_log_density`), one freed onto
    the rows where the data gather far more sharply than the fit says (:func:`~mixflow.engines.starts.dense_moves`,
    the same sizes).

    None of any for a fit with fewer components than declared (trimmed): a move would bring the dropped
    one back.
    """
    if params["weights"].size != model.n_components:
        return [[], [], [], []]
    log_joint = _log_joint(model, params, prepared, rows)
    resp = np.exp(log_joint - log_joint.max(axis=1, keepdims=True))
    resp /= resp.sum(axis=1, keepdims=True)
    points = standardise(model.init_points(prepared), prepared.weights)
    local_moves = transfer_moves(resp, points, prepared.weights, model.split_axes()) + boundary_moves(log_joint)
    merged = split_merge_moves(resp, points, prepared.weights)
    least = model.component_rows(params)
    outliers = outlier_moves(log_joint, prepared.weights, least)
    if model.n_components > 2:  # a component given to the others (:func:`_reduced_log_joint`), then freed
        outliers += freed_moves([_reduced_log_joint(model, prepared, prior, rows, resp, log_joint, k)
                                 for k in range(model.n_components)], prepared.weights, least)
    if prior is not None:  # the prior bounds a component's dispersion: one outlying row, or a few alike, can be one
        outliers = outlier_moves(log_joint, prepared.weights, 1, fractions=()) + outliers
    classes = model.rows_are_classes()
    seeds = CLASS_SEEDS if classes else NEIGHBOURHOOD_SEEDS if prior is not None else 0
    if seeds:
        outliers += neighbourhood_moves(log_joint, prepared.weights, points, least, seeds, classes)
    dense = [] if local is None else dense_moves(log_joint, prepared.weights, least, local)
    kinds = (local_moves, merged, outliers, dense)
    found = iter(parameters_from(model, prepared, [moved for moves in kinds for moved in moves], prior, rows))
    return [[next(found) for _ in moves] for moves in kinds]


def _reduced_log_joint(model, prepared, prior, rows: int, resp: np.ndarray, log_joint: np.ndarray,
                       k: int) -> np.ndarray:
    """The log joint of the fit with component k's rows given to the others and one M-step taken; column k -inf.

    The responsibilities are :func:`~mixflow.engines.starts.reduced_responsibilities`: the others widen to take k's
    rows, and the rows they then explain worst are the ones :func:`~mixflow.engines.starts.freed_moves` frees k onto.
    """
    with np.errstate(all="ignore"):  # k's own parameters, from no rows, are never read
        reduced = _log_joint(model, _parameters_from(model, prepared, reduced_responsibilities(resp, log_joint, k),
                                                     prior, rows), prepared, rows)
    reduced[:, k] = -np.inf
    return reduced


def _log_joint(model, params: dict, prepared, rows: int) -> np.ndarray:
    """``log w_k + log p_k(x_n)``, shape (n_obs, K), chunk by chunk, of working parameters."""
    constants = model.e_step_constants(params, prepared)
    with np.errstate(divide="ignore"):
        log_weights = np.log(params["weights"])
    return np.concatenate([model.log_density(constants, prepared.rows(start, start + rows))[0] + log_weights
                           for start in range(0, prepared.n_obs, rows)])


def _partition(model, prepared, rows: int, params: dict) -> bytes | None:
    """The fit's hard partition of the rows, whatever the components' order (:func:`partition_key`).

    None where some component holds no row: such a partition does not tell fits apart (a fit with two
    components in one, and a fit whose spare component moved to a few rows' excess, say extra zero counts,
    that it shares with a heavier one, give every row to the same components).
    """
    log_joint = _log_joint(model, params, prepared, rows)
    labels = np.argmax(log_joint, axis=1)
    if np.unique(labels).size < log_joint.shape[1]:
        return None
    return labels_key(labels, log_joint.shape[1])


def _transfer_search(runs: list[Run], continued: np.ndarray, names: list, tier, moved_starts, partition, runs_of,
                     options: EMOptions, duplicates=None, searched: dict | None = None,
                     bar: float = -np.inf, screen_runs_of=None, follow_cap=None) -> tuple[list, np.ndarray, list]:
    """A local search from the best sound continued run: moves screened by short runs, the best continued.

    ``moved_starts(params)`` gives the starts one move away, by kind: local, split-and-merge, outlier and dense
    moves (:func:`_moved_starts`), whether or not the short runs agreed: two starts that reach the same maximum do not
    make it the highest, and a move of a few points or of half a component can lead higher. A fit with two
    components in one (``duplicates(params)``, :func:`duplicate_components`) gets every local move, all continued:
    it is a fit of fewer components, whose spare one none of the best few moves may free (a Poisson component on the
    zeros alone, reached from a boundary move after hundreds of passes, ranks low after a short run).

    The moves run in step (``runs_of(jobs)``) as the short runs of the screening do, a few iterations each and then
    the most promising to the short runs' cap (:func:`_screen_moves`); the short runs of each kind are
    ranked (:func:`_rank_distinct`, degenerate ones left out), and the best :data:`TRANSFER_CONTINUED` local,
    :data:`SPLIT_MERGE_CONTINUED` split-and-merge, :data:`OUTLIER_CONTINUED` outlier and :data:`DENSE_CONTINUED`
    dense ones (each kind its own
    places, so that the many local moves do not crowd out the others) not already back on the current fit's
    partition of the rows and not higher (``partition(params)``: they are returning to a known maximum) are
    continued to convergence in step (:func:`_follow`). The highest of those that end sound and higher than the
    current fit by more than ``_SAME_VALUE`` (relative) is added as a restart of its own (start :data:`TRANSFER`),
    and the search goes on from it, for at most :data:`TRANSFER_ROUNDS` rounds; a round in which none ends higher
    stops it (:func:`_climb`). When nothing was found above the best, the search runs from each lower distinct
    maximum of the sound continued runs in turn, best first, until one climbs above the best: a higher
    maximum can be one move from a lower one and from no other (statsmodels' copper and stack loss data).
    ``bar`` (a later round of starts': the best sound maximum of the rounds before) raises the value a climb must
    pass to stop that. When no continued run is sound, the search runs from the spurious ones, best first, until a
    climb reaches a sound maximum, which is a better fit than any spurious one whatever its value (a line through a
    few rows is often one move from a sound fit that no start reached).

    ``searched`` (a dict, kept across the searches of one fit) holds the maxima searched from, by partition of
    the rows, with their values: a search that reaches one of them stops there, since the moves from a
    maximum are the same whenever it is reached, and where they led is already among the runs.

    ``screen_runs_of``, given, runs the moves' first iterations (on a sample of the rows: see
    :func:`_screen_moves`), and ``follow_cap`` drops a continued move still below the fit it left after that
    many iterations (:func:`_follow`).
    """
    finals = np.array([r.history_objective[-1] if c and tier(r) == SOUND else np.nan
                       for r, c in zip(runs, continued, strict=True)])
    from_spurious = bool(np.isnan(finals).all())
    if from_spurious:  # no sound maximum reached: one may be a move away from a spurious one (a line through few rows)
        finals = np.array([r.history_objective[-1] if c and tier(r) == SPURIOUS else np.nan
                           for r, c in zip(runs, continued, strict=True)])
    # a run stopped short (max_iter, or :func:`_continue_on_all`'s cap) below a maximum reached is no maximum to
    # search from: its moves would be made from a point still climbing
    reached = max((value for value, run in zip(finals, runs, strict=True) if run.converged and np.isfinite(value)),
                  default=-np.inf)
    finals = np.array([np.nan if not run.converged and _higher(reached, value) else value
                       for value, run in zip(finals, runs, strict=True)])
    if np.isnan(finals).all():
        return runs, continued, names
    runs, continued, names = list(runs), list(continued), list(names)
    short = replace(options, max_iter=min(SHORT_MAX_ITER, options.max_iter), tol=max(SHORT_TOL, options.tol))
    searched = {} if searched is None else searched
    starts = sorted((run for run, value in zip(runs, finals, strict=True) if np.isfinite(value)),
                    key=lambda run: -run.history_objective[-1])  # best first
    distinct = [run for j, run in enumerate(starts)
                if not any(abs(run.history_objective[-1] - other.history_objective[-1])
                           <= _SAME_VALUE * abs(other.history_objective[-1]) for other in starts[:j])]
    for start in distinct:  # the others only while no search has climbed above the best
        climbed = _climb(start, tier, moved_starts, partition, runs_of, options, short, duplicates, searched,
                         screen_runs_of, follow_cap)
        runs += climbed
        continued += [True] * len(climbed)
        names += [TRANSFER] * len(climbed)
        if climbed and (from_spurious or _higher(climbed[-1].history_objective[-1],
                                                 max(bar, distinct[0].history_objective[-1]))):
            break
    return runs, np.array(continued, dtype=bool), names


def _climb(current: Run, tier, moved_starts, partition, runs_of, options: EMOptions, short: EMOptions, duplicates,
           searched: dict, screen_runs_of=None, follow_cap=None) -> list[Run]:
    """The rounds of :func:`_transfer_search` from one maximum: the runs each ending higher than the last, in order."""
    climbed = []
    for _ in range(TRANSFER_ROUNDS):
        value, key = current.history_objective[-1], partition(current.params)
        if key in searched and abs(searched[key] - value) <= _SAME_VALUE * abs(value):
            break
        if key is not None:
            searched[key] = value
        # from a spurious maximum, any sound one is a better fit (a better tier), whatever its value
        above = value + _SAME_VALUE * abs(value) if tier(current) == SOUND else -np.inf
        seen = {key}
        known = partial(_known, partition, above, seen)
        duplicated = duplicates is not None and bool(duplicates(current.params))
        kinds = moved_starts(current.params)
        ends = np.cumsum([0] + [len(kind) for kind in kinds])
        counts = (len(kinds[0]) if duplicated else TRANSFER_CONTINUED, SPLIT_MERGE_CONTINUED, OUTLIER_CONTINUED,
                  DENSE_CONTINUED)
        shorts = _screen_moves(kinds, ends, counts, runs_of, short, tier, screen_runs_of)
        tried = [run for i, count in enumerate(counts)
                 for run in _candidates([run for run in shorts[ends[i]:ends[i + 1]] if run is not None], tier, known,
                                        count)]
        # from a maximum whose partition tells nothing (:func:`_known`), a move still not above it is dropped after
        # FINAL_FOLLOW_ITER iterations: without the partition's test, every move would run to convergence
        cap = FINAL_FOLLOW_ITER if follow_cap is None and key is None else follow_cap
        higher = [result for result in _follow(tried, runs_of, options, known, None if cap is None else (cap, above))
                  if result is not None and tier(result) == SOUND and result.history_objective[-1] > above]
        if not higher:
            break
        current = max(higher, key=lambda result: result.history_objective[-1])
        climbed.append(current)
    return climbed


def _screen_moves(kinds: list[list], ends: np.ndarray, counts: tuple, runs_of, short: EMOptions, tier,
                  first_runs_of=None) -> list[Run]:
    """The moves' short runs, in two stages: every move for a few iterations, then the most promising to the end.

    Every move first runs :data:`MOVE_FIRST_ITER` iterations; of each kind (``kinds[i]``, whose runs are
    ``ends[i]:ends[i + 1]`` of all), the :data:`MOVES_KEPT` times its
    ``counts`` best by Aitken's projection of their limits (:func:`_rank_distinct`), degenerate ones left out, go on
    to the short runs' cap, and the others stop there: most moves fall back to the maximum they left within a few
    iterations, and only the ones still climbing towards another need the rest.

    With ``first_runs_of`` (runs on a sample of the rows), the first iterations run there, and the most promising
    moves of each kind, settled or not, run from their starts on the rows of ``runs_of`` to the short runs' cap;
    the other moves' places hold None, their values being the sample's.
    """
    first = replace(short, max_iter=min(MOVE_FIRST_ITER, short.max_iter))
    moved = [params for kind in kinds for params in kind]
    runs = (first_runs_of or runs_of)([(params, first) for params in moved])
    going = []
    for i, count in enumerate(counts):
        of_kind = runs[ends[i]:ends[i + 1]]
        ranked = _rank_distinct(of_kind, tier, projected=True) if of_kind else []
        going += [ends[i] + j for j in ranked if tier(of_kind[j]) != DEGENERATE and (first_runs_of is not None or (
                  not of_kind[j].converged and of_kind[j].n_iter < short.max_iter))][:MOVES_KEPT * count]
    if first_runs_of is not None:  # screened on a sample: the most promising run on every row from their moves
        kept = dict(zip(going, runs_of([(moved[i], short) for i in going]) if going else [], strict=True))
        return [kept.get(i) for i in range(len(runs))]
    if going:
        more = runs_of([(runs[i].params, replace(short, max_iter=short.max_iter - runs[i].n_iter)) for i in going])
        for i, run in zip(going, more, strict=True):
            runs[i] = _extend(runs[i], run)
    return runs


def _candidates(shorts: list[Run], tier, known, count: int) -> list[Run]:
    """The best ``count`` short runs to continue (:func:`_rank_distinct`), neither degenerate nor ``known``."""
    ranked = [shorts[i] for i in _rank_distinct(shorts, tier)] if shorts else []
    # in rank order until there are enough: whether a run is known costs a pass over the data
    return list(itertools.islice((short for short in ranked if tier(short) != DEGENERATE and not known(short)),
                                 count))


def _known(partition, above: float, seen: set, run: Run) -> bool:
    """Whether a run is not above ``above`` and on a partition of the rows in ``seen`` (a known maximum's).

    Never where its partition is None (a component holding no row: :func:`_partition`): that does not tell whether
    a run returns to the maximum searched from, or climbs away from it (a spare component moving onto extra zero
    counts) while it still shares its partition. :func:`_climb` then caps the moves' iterations instead; Aitken's
    estimate of a run's limit would not do: such a run falls before it climbs, and its early estimates are below
    the maximum it left.
    """
    if run.history_objective[-1] > above:
        return False
    key = partition(run.params)
    return key is not None and key in seen


def _follow(shorts: list[Run], runs_of, options: EMOptions, known, cap=None) -> list[Run | None]:
    """Short runs continued in step, in stages of doubling length, to convergence; None for one once ``known``.

    ``known`` tells a run that is back on a partition of the rows a finished run already ended on, and not
    higher: it is returning to a known maximum, and going on would only cost passes. ``cap``, given as
    ``(iterations, above)``, also drops a run not above ``above`` after that many iterations.
    """
    results, iterations = list(shorts), [max(short.n_iter, 1) for short in shorts]
    going = [i for i, result in enumerate(results) if result.n_iter < options.max_iter]
    while going:  # the short runs stopped by the short runs' looser tolerance
        for i in going:
            iterations[i] = min(2 * iterations[i], options.max_iter - results[i].n_iter)
        more = runs_of([(results[i].params, replace(options, max_iter=iterations[i])) for i in going])
        for i, result in zip(going, more, strict=True):
            results[i] = _extend(results[i], result)
        for i in going:
            if not results[i].converged and (known(results[i]) or (
                    cap is not None and results[i].n_iter >= cap[0] and results[i].history_objective[-1] <= cap[1])):
                results[i] = None
        going = [i for i in going if results[i] is not None and not results[i].converged
                 and results[i].n_iter < options.max_iter]
    return results


def _fallbacks(runs: list[Run], screened: np.ndarray, n_keep: int, tier) -> list[int]:
    """Runs to continue, in order, while every continued one is degenerate or spurious.

    First the screening's survivors after the ``n_keep`` continued together, then the runs it dropped that
    were sound when dropped, best first: a run that leads after a few iterations can collapse when continued
    (a regression line through a few points), and the sound runs it outranked early must still get their
    chance. Runs already degenerate or spurious when dropped are not tried: they rarely recover.
    """
    dropped = np.setdiff1d(np.arange(len(runs)), screened)
    dropped = dropped[_rank_distinct([runs[i] for i in dropped], tier)] if dropped.size else dropped
    return [int(i) for i in screened[n_keep:]] + [int(i) for i in dropped if tier(runs[i]) == SOUND]


def _screening_stages(n_starts: int) -> list[int]:
    """How many starts have run when agreement is checked: a quarter, half, then all of them (at least 4 first).

    An easy likelihood, where the first few distinct starts already agree on the best value, stops after a
    quarter; a hard one runs them all.
    """
    stages = sorted({min(n_starts, max(4, n_starts // 4)), min(n_starts, max(4, n_starts // 2)), n_starts})
    return [stage for stage in stages if stage > 0]


def _run_fresh(starts: list, runs_of, options: EMOptions, parameters_of=None) -> tuple[list, list]:
    """Runs from the starts that are not skipped (None), in step, and the strategies they ran.

    ``parameters_of``, if given, turns the starts' responsibilities into their parameters, several at once: as
    many as :data:`_START_BATCH_FLOATS` of responsibilities hold, so that on large data the responsibilities of
    one start at a time are kept, as without it.
    """
    names, params, batch = [], [], []
    for start in starts:
        pair = start()
        if pair is None:
            continue
        names.append(pair[0])
        if parameters_of is None:
            params.append(pair[1])
            continue
        batch.append(pair[1])
        if len(batch) * batch[0].size >= _START_BATCH_FLOATS:
            params += parameters_of(batch)
            batch = []
    if batch:
        params += parameters_of(batch)
    return runs_of([(start, options) for start in params]), names


def _agree(runs: list[Run], tier) -> bool:
    """Whether the best sound short run's value was also reached by another, both settled.

    A short run has settled when it stopped by the short tolerance, or when Aitken's estimate of what it
    has still to gain is within the agreement tolerance: the short runs rank starts, and two runs whose
    limits are within ``_AGREE`` of the same value have found it whether or not their parameters have
    also settled to the stopping rule's ``sqrt(tol)``.
    """
    tiers = [tier(r) for r in runs]
    best = max((r.history_objective[-1] for r, t in zip(runs, tiers, strict=True) if t == SOUND), default=np.nan)
    settled = [r for r, t in zip(runs, tiers, strict=True)
               if t == SOUND and (r.converged or r.aitken_gap <= _AGREE * abs(best))]
    if len(settled) < 2:
        return False
    values = np.sort([r.history_objective[-1] for r in settled])[::-1]
    return bool(abs(values[0] - best) <= _AGREE * abs(best) and abs(values[1] - best) <= _AGREE * abs(best))


#: Up to this many distinct values, :func:`_rank_distinct` compares a run with them one by one, beyond as an array.
_COMPARED_ONE_BY_ONE = 128


def _rank_distinct(runs: list[Run], tier, projected: bool = False) -> np.ndarray:
    """Positions of ``runs`` best first (:func:`rank_runs`), one per value.

    Runs whose values agree to ``_SAME_VALUE`` (the same maximum) are represented by the earliest of them,
    so that rounding differences between the values (another order of the sums, on chunked data) do not
    change which run goes on. With ``projected``, a run's value is Aitken's estimate of its limit (its value
    plus ``aitken_gap`` where that is finite): the screening's short runs stop after a fixed number of
    iterations, and a run still climbing slowly towards a higher maximum must not lose its place to one that
    has already stopped at a lower one.
    """
    finals = np.array([r.history_objective[-1] for r in runs])
    if projected:
        gaps = np.array([r.aitken_gap for r in runs], dtype=float)
        finals = finals + np.where(np.isfinite(gaps), gaps, 0.0)
    tiers = np.array([tier(r) for r in runs], dtype=int)
    order = rank_runs(finals, tiers == DEGENERATE, tiers == SPURIOUS)
    # the representatives so far, compared in Python while they are few (the common case, where numpy's calls
    # cost more than the comparisons), then as arrays of their values and tiers
    kept, values, tiers, arrays = [], finals.tolist(), tiers.tolist(), None
    for index in order.tolist():
        value, level = values[index], tiers[index]
        if arrays is None:
            same = [position for position, j in enumerate(kept)
                    if tiers[j] == level and abs(value - values[j]) <= _SAME_VALUE * abs(values[j])]
            if len(kept) >= _COMPARED_ONE_BY_ONE:
                arrays = np.empty(len(values)), np.empty(len(values), int)
                arrays[0][:len(kept)], arrays[1][:len(kept)] = [values[j] for j in kept], [tiers[j] for j in kept]
        else:
            kept_finals, kept_tiers = arrays[0][:len(kept)], arrays[1][:len(kept)]
            with np.errstate(invalid="ignore"):  # infinite values: never the same as another
                same = np.flatnonzero((kept_tiers == level)
                                      & (np.abs(value - kept_finals) <= _SAME_VALUE * np.abs(kept_finals)))
        if not len(same):
            if arrays is not None:
                arrays[0][len(kept)], arrays[1][len(kept)] = value, level
            kept.append(index)
        elif index < kept[same[0]]:
            kept[same[0]] = index
            if arrays is not None:
                arrays[0][same[0]] = value
    return np.array(kept, dtype=int)


def _extend(first: Run, then: Run) -> Run:
    """One run from a run and its continuation (component indices of ``then`` are into ``first.active``)."""
    return Run(params=then.params,
               history_log_likelihood=first.history_log_likelihood + then.history_log_likelihood[1:],
               history_objective=first.history_objective + then.history_objective[1:],
               converged=then.converged,
               collapsed=first.collapsed | {int(first.active[c]) for c in then.collapsed},
               active=first.active[then.active],
               n_iter=first.n_iter + then.n_iter,
               aitken_gap=then.aitken_gap,
               accepted_extrapolations=first.accepted_extrapolations + then.accepted_extrapolations,
               criterion=then.criterion,
               parameter_gap=then.parameter_gap)


def _restart(short: Run, then: Run) -> Run:
    """The run continued on the whole data from a short run's end on a subsample.

    That is ``then``, its components indexed by the declared ones.
    """
    return replace(then, collapsed={int(short.active[c]) for c in then.collapsed}, active=short.active[then.active])


def _check_some_finite(finals: np.ndarray) -> None:
    """Raise a ValueError that names the data problem when no restart ended on a finite objective."""
    if np.isfinite(finals).any():
        return
    got = " or ".join(sorted({str(value) for value in finals.tolist()}))  # nan, -inf
    raise InputError(f"data: expected EM to reach a finite objective from some start, got {got} from all "
                     f"{finals.size}: the data leave the likelihood undefined in float64 (values that overflow when "
                     "squared, or rows no component can reach), or the model's declared values do (a MAP fit's prior "
                     "hyperparameters, a fixed variance, far from the data's scale); check the data's range and "
                     "units and the model's declaration, or give init=... parameters")


def duplicate_components(log_joint: np.ndarray, weights: np.ndarray) -> list[tuple[int, int]]:
    """Pairs ``(i, j)``, ``i < j``, of components whose densities are proportional on the data: one in two parts.

    ``log p_i(x_n) - log p_j(x_n)`` is the same for every row of positive weight to :data:`_DUPLICATE_WITHIN`
    (rows where both densities are 0 tell nothing). EM keeps such a pair together: the responsibilities split
    the points between them in a fixed proportion, so the fit is one of fewer components and its likelihood
    theirs. The test is on the fit's densities, not its parameters, so it has no scale: two tight groups a few
    of their own sds apart, far from the rest, differ on their rows however close their means are.

    Parameters
    ----------
    log_joint : ndarray of shape (n, K)
        ``log w_k + log p_k(x_n)`` (or the log responsibilities: they differ by a term per row).
    weights : ndarray of shape (n,)
        Frequency weights.

    """
    rows = log_joint[weights > 0]
    pairs = []
    for i in range(rows.shape[1]):
        for j in range(i + 1, rows.shape[1]):
            both_zero = np.isneginf(rows[:, i]) & np.isneginf(rows[:, j])
            with np.errstate(invalid="ignore"):
                gap = rows[~both_zero, i] - rows[~both_zero, j]
            if gap.size and np.isfinite(gap).all() and np.ptp(gap) < _DUPLICATE_WITHIN:
                pairs.append((i, j))
    return pairs


def _warn_duplicates(pairs: list[tuple[int, int]], n_components: int) -> None:
    if pairs:
        distinct = n_components - len({j for _, j in pairs})
        warnings.warn(
            f"components {pairs_text(pairs)} are the same component (their densities proportional on the data: the "
            f"log ratio the same on every row, to {_DUPLICATE_WITHIN:g}): this is a fit of "
            f"{counted(distinct, 'distinct component')}, some in several parts, and its likelihood theirs; fewer "
            f"components describe these data as well, or a maximum with {n_components} distinct ones was not found "
            "(compare K with select_k; try more starts, n_init=...)",
            DegenerateComponentWarning, skip_file_prefixes=PACKAGE_FILES)


def empty_components(weights: np.ndarray, total_weight: float) -> list[int]:
    """Components whose weight carries less than :data:`_EMPTY_COUNT` of an observation: EM cannot move them.

    A component of zero weight gets zero responsibilities, hence zero weight again, whatever the family.
    """
    return np.flatnonzero(~(weights * total_weight >= _EMPTY_COUNT)).tolist()


def _warn_empty(empty: list[int], weights: np.ndarray) -> None:
    if empty:
        warnings.warn(
            f"{agreeing(len(empty), 'component')} {empty} {agreeing(len(empty), 'is', 'are')} empty "
            f"({agreeing(len(empty), 'weight')} {[float(f'{w:.2g}') for w in weights[empty]]}, less than "
            f"{_EMPTY_COUNT:g} of an observation): EM cannot move a component no observation is assigned to; start "
            "from other parameters (init=...), use fewer components, or trim=... to drop "
            f"{agreeing(len(empty), 'it', 'them')}",
            DegenerateComponentWarning, skip_file_prefixes=PACKAGE_FILES)


def _warn_about(run: Run, options: EMOptions, model, collapsed: list[int], n_observations: float,
                on_ridge: bool = False, no_maximum: bool = False) -> None:
    """The warnings of the best run's own course; ``on_ridge``: a component's estimate is undetermined (said after).

    ``no_maximum``: the data have no maximum-likelihood estimate at any K (said before the fit).
    """
    history = np.array(run.history_objective)
    drops = np.diff(history) < -1e-9 * np.abs(history[1:]) - 1e-9
    if drops.any() and not run.collapsed and options.trim is None:
        at = np.flatnonzero(drops)[:5].tolist()
        warnings.warn(f"EM decreased its objective at {agreeing(len(at), 'iteration')} {at}",
                      MixflowInternalWarning, skip_file_prefixes=PACKAGE_FILES)
    # trimming every component would leave none (the weights read only with a trim: a stop's test runs have none)
    if options.trim is not None and (largest := float(np.max(run.params["weights"]))) < options.trim:
        warnings.warn(f"trim={options.trim:g} is above every component's weight (the largest is {largest:.3g}): "
                      "trimming would leave no component, so none was trimmed; a threshold of at most "
                      f"1/n_components = {1 / run.params['weights'].size:.3g} never trims them all",
                      MixflowWarning, skip_file_prefixes=PACKAGE_FILES)
    if collapsed:  # a MAP fit is not told to become one, nor a fit of one component to have fewer
        fewer = ["fewer components", "or trim=... to drop tiny components"]  # no help where the data have no maximum
        fixes = fewer if model.n_components > 1 and not no_maximum else []
        if not options.map:
            fixes = ["The likelihood is unbounded there; use method='map' (the prior removes the singularity)", *fixes]
        elif fixes:
            fixes[0] = f"Use {fixes[0]}"
        warnings.warn(f"{model.collapse_description(collapsed)}." + (f" {', '.join(fixes)}." if fixes else ""),
                      DegenerateComponentWarning, skip_file_prefixes=PACKAGE_FILES)
    if run.on_boundary:
        warnings.warn(
            "EM stopped at a fixed point on the boundary of the parameters (such as a Poisson rate of 0, which EM "
            "never leaves) from which the likelihood rises: not a maximum, and more iterations cannot leave it; start "
            "elsewhere (another init, or the default starts)", ConvergenceWarning, skip_file_prefixes=PACKAGE_FILES)
    elif not run.converged:
        distance = _estimate_text(run.parameter_gap, "the parameters' changes")
        tolerance = parameter_tolerance(options.tol, n_observations)
        bound = (f"sqrt(tol)={tolerance:.3g}" if tolerance == np.sqrt(options.tol) else
                 f"{STANDARD_ERROR_SHARE:g}/sqrt(n)={tolerance:.3g} (a tenth of a standard error's order, below "
                 f"sqrt(tol) at this n)")
        if run.criterion == PARAMETER_CRITERION:
            unmet = (f"the objective no longer resolves the gains, and Aitken's estimate of the parameters' distance "
                     f"to their limit, {distance}, is not below {bound}")
        else:
            gain = _estimate_text(run.aitken_gap / n_observations, "the gains", " per observation")
            unmet = (f"Aitken's estimates of the objective still to gain, {gain}, and of the parameters' distance to "
                     f"their limit, {distance}, are not both below tol={options.tol} and {bound}")
        advice = ("more iterations do not settle it, since a component's estimate lies on a ridge of the likelihood "
                  "(said in the next warning)" if on_ridge else "increase max_iter, loosen tol, or try other starts")
        warnings.warn(f"EM did not converge in max_iter={options.max_iter} iterations ({unmet}); {advice}.",
                      ConvergenceWarning, skip_file_prefixes=PACKAGE_FILES)


def _estimate_text(value: float, changes: str, unit: str = "") -> str:
    """An Aitken estimate for a message; none can be formed (inf, NaN) where the changes did not shrink."""
    if np.isfinite(value):
        return f"{value:.3g}{unit}"
    return f"none ({changes} did not shrink over the last steps)"


def _warn_spurious(spurious: list, options: EMOptions, model) -> None:
    """Warn of a spurious winner: every restart run to the end had a spurious (or degenerate) component."""
    if not spurious:
        return
    described = "; ".join(f"component {h}: {count:.3g} observations' worth of weight, Hathaway ratio {ratio:.2g}"
                          for h, count, ratio in spurious)
    warnings.warn(
        f"a spurious maximum ({described}), and no restart found a sound one: {model.spurious_rule_text()}; use "
        "method='map' (the prior keeps a component's dispersion from shrinking onto a few points), fewer "
        f"components, or more starts than n_init={options.n_init}.", SpuriousMaximumWarning,
        skip_file_prefixes=PACKAGE_FILES)


#: Where the set-aside fit of :func:`_warn_set_aside` is kept, and how to take it
#: What a set-aside spurious restart's warning advises, in every family's terms: the condition, then where its fit is
SET_ASIDE_IF = "If that component is a real small group rather than an artefact of the few points it is fitted to, "
SET_ASIDE_ADVICE = SET_ASIDE_IF + ("its fit is in /em/sample_stats (optimum_* at restart {top}): pass it as init=... "
                                   "to take it.")


def _warn_set_aside(model, runs: list[Run], restarts: dict, best: Run, total_weight: float, prepared,
                    features, same_rows: bool = True) -> None:
    """Warn when a restart that reached a maximum found a higher one that was set aside as spurious.

    Spurious maxima never win over a sound one, but a small real group (a few round, well separated points)
    can meet the rule too: the analyst is told the value, the component and where its parameters are. Only
    a gap above :data:`_SET_ASIDE_GAP` is said: below a likelihood ratio of e, which fit is reported matters
    less than the sampling noise of either. The restarts continued to convergence count, and (``same_rows``: the
    short runs were on the fit's rows, whose objective is the same sum) the short runs of the screening that
    stopped by their own rule: whether the screening continued one of them is no reason to say it or not.
    """
    value = best.history_objective[-1]
    reached = [bool(going) or (same_rows and run.converged) for run, going in
               zip(runs, restarts["continued"], strict=True)]
    higher = [i for i, run in enumerate(runs) if reached[i] and restarts["spurious"][i]
              and not restarts["degenerate"][i] and run.history_objective[-1] > value + _SET_ASIDE_GAP]
    if not higher:
        return
    top = max(higher, key=lambda i: runs[i].history_objective[-1])
    params = runs[top].params  # in the canonical order of the stored optima (:func:`_restart_optima`)
    params = model.permute(params, model.canonical_order(model.to_data(params, prepared)), features)
    described = "; ".join(f"component {h}: {count:.3g} observations' worth of weight, Hathaway ratio {ratio:.2g}"
                          for h, count, ratio in model.spurious_components(params, total_weight))
    warnings.warn(set_aside_warning(
        f"restart {top} reached a higher maximum ({runs[top].history_objective[-1]:.6g} against this fit's "
        f"{value:.6g}) with a spurious component ({described}), and was set aside for the best sound fit the "
        "restarts found. ", top), skip_file_prefixes=PACKAGE_FILES)


def set_aside_warning(finding: str, restart: int) -> SpuriousMaximumWarning:
    """The warning of a set-aside restart: ``finding``, then :data:`SET_ASIDE_ADVICE` of ``restart``.

    Its ``set_aside`` attribute, ``(finding, restart)``, lets the choice of K say the advice as what keeps the fit
    where it does not return it, and leave it out of a cross-validation fold's fit's warning.
    """
    warning = SpuriousMaximumWarning(finding + SET_ASIDE_ADVICE.format(top=restart))
    warning.set_aside = (finding, restart)
    return warning


def _warn_few_sound(restarts: dict, options: EMOptions) -> None:
    """A sound fit from fewer sound runs than ``n_init`` asked for, most runs collapsed: its search was thin.

    Where most starts collapse (features of many tied values under a "diag" covariance, say), the sound maxima
    are sampled by the few runs that did not: the fit returned is sound, but fewer than ``n_init`` runs looked
    for it, and a higher sound maximum may lie where none went.
    """
    degenerate = np.asarray(restarts["degenerate"], dtype=bool)
    sound = int((~degenerate & ~np.asarray(restarts["spurious"], dtype=bool)).sum())
    if sound < options.n_init and degenerate.mean() > 0.5:
        # a MAP fit is not told to become one: its prior bounds the variances, and its runs ended with a component
        # emptied rather than collapsed
        advice = "" if options.map else ", and method='map' keeps components from collapsing"
        warnings.warn(
            f"{counted(int(degenerate.sum()), 'run')} of {degenerate.size} ended degenerate (a component collapsed "
            f"onto tied or repeated values, or emptied) and {sound} ended sound, fewer than n_init={options.n_init}: "
            f"this fit is the best of {counted(sound, 'sound run')}, and a higher sound maximum may lie where none "
            f"went; more starts (n_init=...) search further{advice}", MixflowWarning, skip_file_prefixes=PACKAGE_FILES)


def _in_data_units(model, params: dict, prepared, data) -> dict:
    """The estimate mapped from working to data units; an error if it overflows float64 there."""
    estimate = model.to_data(params, prepared)
    overflowed = sorted(name for name, value in estimate.items() if np.isinf(value).any())
    if overflowed:
        largest = data.largest
        raise InputError(f"data: values up to {largest:.3g} overflowed float64: the estimate's {overflowed} in data "
                         "units exceed the largest double (1.8e308), though the fit in standardised units "
                         f"succeeded; divide the data by a constant (e.g. {10.0 ** np.floor(np.log10(largest)):.0e}) "
                         "and fit again")
    # a value below this has fewer than about 26 of a double's 52 bits (a subnormal), or is 0: its digits are lost
    lost = np.spacing(0.0) / 1e-8
    # a location near 0 in data units of ordinary scale is the centre cancelled (a mean of 0), not an underflow:
    # an underflow is tiny without the centre too
    center = prepared.constants.get("center")
    scaled = estimate if center is None else model.to_data(params, dataclasses.replace(
        prepared, constants={**prepared.constants, "center": np.zeros_like(center)}))
    underflowed = sorted(name for name, value in estimate.items()
                         if name in params and np.shape(params[name]) == np.shape(value)
                         and ((np.abs(value) < lost) & (np.abs(scaled[name]) < lost))[_significant(params[name])].any())
    if underflowed:
        warnings.warn(f"data: the estimate's {underflowed} underflow float64 in the data's units (values below "
                      f"{lost:.2g}, reported as 0 or with few digits), though the fit in standardised units succeeded "
                      "(its log-likelihood and responsibilities hold, and the parameters not listed); predictions, "
                      f"NUTS and ADVI need them: {_rescaling(data)} and fit again", PrecisionWarning,
                      skip_file_prefixes=PACKAGE_FILES)
    return estimate


def _rescaling(data) -> str:
    """How to rescale data whose parameters underflow: the columns of tiny spread, each by its own power of ten."""
    values = getattr(data, "values", None)
    tiny = []
    if isinstance(values, np.ndarray) and values.size:  # Dask data: not read again for a message
        with np.errstate(over="ignore", invalid="ignore"):
            spread = np.abs(values - values.mean(axis=0)).max(axis=0)
        tiny = [j for j in range(spread.size) if 0 < spread[j] < 1e-150]
    if not tiny:
        return "multiply the columns of tiny spread by a power of ten"
    said = ", ".join(f"{data.features[j]} by {10.0 ** min(-np.floor(np.log10(spread[j])), 300.0):.0e}" for j in tiny)
    return f"multiply the {agreeing(len(tiny), 'column')} of tiny spread ({said})"


def _significant(working) -> np.ndarray:
    """Entries of a working parameter that matter beside its largest (not an off-diagonal rounding of zero)."""
    magnitude = np.abs(np.asarray(working, dtype=float))
    return magnitude > 1e-10 * magnitude.max(initial=0.0)


def _restart_optima(model, runs: list[Run], prepared, estimate: dict, dims: dict, features) -> dict:
    """Where each restart ended, in data units and canonical order: ``optimum_<name>`` (restart, ...).

    The candidates for the modes of the posterior (MCMC's ``starts="em-optima"``); NaN for a restart that
    ended with another number of components than the estimate (trimmed).
    """
    out = {name: np.full((len(runs),) + np.shape(value), np.nan) for name, value in estimate.items()}
    for i, run in enumerate(runs):
        if run.active.size != np.size(estimate["weights"]):
            continue
        with np.errstate(over="ignore"):
            params = model.to_data(run.params, prepared)
        params = model.permute(params, model.canonical_order(params), features)
        for name, value in params.items():
            out[name][i] = value
    return {f"optimum_{name}": (("restart", *dims[name]), value) for name, value in out.items()}


def _refine_exactly(model, params: dict, prepared, prior, active: np.ndarray, features, within: float):
    """The answer polished by the family's centred EM steps where its fast path rounds (or None).

    Far-apart clusters lie many of their own sds from the data centre, where the one-pass moments and
    expanded quadratic forms keep only part of float64's precision
    (:meth:`~mixflow.families.base.MixtureModel.exact_steps`): EM stops at the fast path's fixed point, off the
    maximum by that rounding. Centred EM steps from there climb to the maximum within their own rounding (EM
    steps never lower the objective beyond the rounding of its sum, and a step that does ends the polish), until
    a step gains at most ``within``. Returns the parameters, their responsibilities and log densities, and the
    steps taken.
    """
    steps = model.exact_steps(params, prepared)
    if steps is None:
        return None
    point, resp, log_density = centred_point(model, prepared, prior, None, features, steps, params, active)
    taken = 0
    for _ in range(_CENTRED_STEPS):
        if point.collapsed:
            break
        following, following_resp, following_density = centred_point(model, prepared, prior, None, features, steps,
                                                                       point.following, active)
        if not following.value >= point.value - _ROUNDING * abs(point.value):
            break
        gain = following.value - point.value
        point, resp, log_density = following, following_resp, following_density
        taken += 1
        if gain <= within:
            break
    check_densities(log_density, prepared.weights)
    return point.params, resp, log_density, taken


def _history_array(runs: list[Run], attribute: str) -> np.ndarray:
    length = max(len(getattr(run, attribute)) for run in runs)
    out = np.full((len(runs), length), np.nan)
    for i, run in enumerate(runs):
        values = getattr(run, attribute)
        out[i, :len(values)] = values
    return out


def _assemble(model, data, prepared, prior, options, runs, best_index, restarts: dict, sample,
              no_maximum: bool = False) -> dict:
    """The fit's result from its runs; ``no_maximum``: the data were found to have no maximum-likelihood estimate."""
    features = data.features
    rows = chunk_rows(data.n_obs, model.chunk_width(data.n_features), options.chunk_size)
    best = runs[best_index]
    order = model.canonical_order(model.to_data(best.params, prepared))  # the order of the data-unit estimate
    params = model.permute(best.params, order, features)
    active = best.active[order]
    centred_steps = 0
    if sample is prepared:
        refined = _refine_exactly(model, params, prepared, prior, active, features, options.tol * data.total_weight)
        if refined is None:
            resp, log_density = e_step(model, params, prepared, data.n_features, rows, working=True)
        else:
            params, resp, log_density, centred_steps = refined
        log_likelihood = float(prepared.weights @ log_density)
        entropy = prepared.weights @ responsibility_entropy(resp)
    else:  # chunked data: one pass for the criteria; the responsibilities kept are the sample's
        log_likelihood, entropy = prepared.final_pass(model, params)
        resp, _ = e_step(model, params, sample, data.n_features, chunk_rows(sample.n_obs, model.chunk_width(
            data.n_features), options.chunk_size), working=True)
    estimate = _in_data_units(model, params, prepared, data)
    total = data.total_weight
    empty = empty_components(params["weights"], total)
    _warn_empty(empty, params["weights"])
    # an empty component's dispersion is floored too; it is reported as empty, the cause, not as collapsed
    positions = [int(np.flatnonzero(active == c)[0]) for c in best.collapsed if c in active]
    collapsed = sorted(c for c in positions if c not in empty)
    undetermined = model.mle_fit_problems(params, prepared) if not options.map and sample is prepared else []
    _warn_about(best, options, model, collapsed, total, on_ridge=bool(undetermined), no_maximum=no_maximum)
    if options.map and sample is prepared:
        for problem in model.prior_problems(params, resp, prepared, prior):
            warnings.warn(problem, MixflowWarning, skip_file_prefixes=PACKAGE_FILES)
    for problem in undetermined:
        warnings.warn(problem, DegenerateComponentWarning, skip_file_prefixes=PACKAGE_FILES)
    with np.errstate(divide="ignore"):  # resp's rows: the sample's, on chunked data
        duplicates = [(i, j) for i, j in duplicate_components(np.log(resp), (prepared if sample is prepared
                                                                              else sample).weights)
                      if i not in empty and j not in empty]  # an empty component has no density to compare
    _warn_duplicates(duplicates, active.size)
    degenerate = bool(restarts["degenerate"][best_index])
    if degenerate and collapsed:  # ranked last, so every restart is: said beside the collapse of the winner's own
        # not a start the user gave, nor data that have no maximum (said before the fit), nor the one start of K = 1
        more = "" if not isinstance(options.init, str) or no_maximum or model.n_components == 1 else (
            f"; a sound maximum, where one exists (a feature of few values, or many tied rows), can be one that few "
            f"starts reach: more restarts (n_init={4 * options.n_init}) may find it")
        warnings.warn(f"no restart reached a sound fit: all {counted(len(restarts['degenerate']), 'restart')} ended "
                      f"with a collapsed or emptied component, so the fit returned is degenerate (attrs['degenerate'])"
                      f"{more}", DegenerateComponentWarning, skip_file_prefixes=PACKAGE_FILES)
    same_rows = restarts["search_rows"] == prepared.n_obs  # whether the short runs ran on the fit's rows
    spurious = [] if degenerate or options.map else model.spurious_components(params, total)
    _warn_spurious(spurious, options, model)
    if not degenerate and not spurious:
        _warn_set_aside(model, runs, restarts, best, total, prepared, features, same_rows)
        _warn_few_sound(restarts, options)
    if degenerate and not collapsed and not empty:
        map_advice = "" if options.map else "method='map', "  # a MAP fit is not told to become one
        warnings.warn(f"a component's weight fell below half an observation's worth (weights "
                      f"{np.round(params['weights'], 6).tolist()}) in every restart; use fewer components, "
                      f"{map_advice}or trim=... to drop it.", DegenerateComponentWarning,
                      skip_file_prefixes=PACKAGE_FILES)
    n_active = active.size
    short_within = max(SHORT_TOL, options.tol) * total if same_rows else None
    n_at_best, n_maxima = _maxima_found(runs, restarts, best_index, options.tol * total, short_within)
    n_parameters = model.n_parameters(data.n_features, n_active)
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
        "icl": float(bic + 2 * entropy),
        "n_init": 1 if isinstance(options.init, dict) else int(options.n_init),
        "n_starts": len(runs),
        "best_restart": best_index,
        "init": "user parameters" if isinstance(options.init, dict) else options.init,
        "best_start": restarts["start"][best_index],
        "n_runs_at_best": n_at_best,
        "n_maxima": n_maxima,
        "start_rounds": int(restarts["rounds"]),
        "search_rows": int(restarts["search_rows"]),
        "n_rows": int(prepared.n_obs),
        "degenerate": int(degenerate),
        "n_degenerate_restarts": int(restarts["degenerate"].sum()),
        "spurious_components": json.dumps([h for h, _, _ in spurious]),
        "n_spurious_restarts": int(restarts["spurious"].sum()),
        "tol": float(options.tol),
        "max_iter": int(options.max_iter),
        "convergence_criterion": best.criterion,
        "aitken_gap": float(best.aitken_gap),
        "parameter_gap": float(best.parameter_gap),
        "acceleration": options.accelerate or "none",
        "accepted_extrapolations": int(best.accepted_extrapolations),
        "centred_steps": int(centred_steps),
        "trim": -1.0 if options.trim is None else float(options.trim),
        "collapsed_components": json.dumps(collapsed),
        "empty_components": json.dumps(empty),
        "duplicate_components": json.dumps([list(pair) for pair in duplicates]),
        "trimmed_components": int(model.n_components - n_active),
    }
    if options.map:
        attrs["prior"] = json.dumps(model.resolve_prior(prepared).to_dict())
        attrs["log_posterior"] = float(objective(model, params, log_likelihood, prior, active))
    dims = model.parameter_dims(features)
    sample_stats = {
        "log_likelihood": (("restart", "iteration"), _history_array(runs, "history_log_likelihood")),
        "final_log_likelihood": (("restart",), np.array([r.history_log_likelihood[-1] for r in runs])),
        "final_objective": (("restart",), np.array([r.history_objective[-1] for r in runs])),
        "n_iter": (("restart",), np.array([r.n_iter for r in runs], dtype=np.int64)),
        "converged": (("restart",), np.array([r.converged for r in runs], dtype=bool)),
        "aitken_gap": (("restart",), np.array([r.aitken_gap for r in runs], dtype=float)),
        "parameter_gap": (("restart",), np.array([r.parameter_gap for r in runs], dtype=float)),
        "convergence_criterion": (("restart",), np.array([r.criterion for r in runs], dtype=str)),
        "accepted_extrapolations": (("restart",), np.array([r.accepted_extrapolations for r in runs], dtype=np.int64)),
        "start": (("restart",), np.array(restarts["start"], dtype=str)),
        # the rows each restart's values are a sum over: every row once continued, else the search sample's
        "n_rows": (("restart",), np.where(restarts["continued"], prepared.n_obs, restarts["search_rows"])),
        "continued": (("restart",), restarts["continued"]),
        "degenerate": (("restart",), restarts["degenerate"]),
        "spurious": (("restart",), restarts["spurious"]),
    }
    if options.map:
        sample_stats["log_posterior"] = (("restart", "iteration"), _history_array(runs, "history_objective"))
    sample_stats.update(_restart_optima(model, runs, prepared, estimate, dims, features))
    return {
        "attrs": attrs,
        "estimate": {name: (dims[name], value) for name, value in estimate.items()},
        "responsibilities": {"responsibilities": (("obs", "component"), resp)},
        "sample_stats": sample_stats,
        "n_active": n_active,
    }
