"""Modes of a posterior that chains do not mix across: found, summarised and combined by stacking.

A finite mixture's posterior is multimodal beyond label switching (components that merge or split, a
small component some chains find and others do not). After the draws are aligned to one labelling
(:mod:`mixflow.families.relabel`), chains that sit in different places are grouped into *modes* by the
rule of :mod:`mixflow.engines.mode_rule`; each mode is summarised (:func:`mode_summaries`) and the modes
are combined (:func:`mode_groups`).

**The weights.** The modes are weighted by Bayesian stacking of each mode's leave-one-out predictive
densities, PSIS-LOO or, for a mode with fewer than 30 draws, plain importance-sampling LOO, and combined
by a resample (:mod:`mixflow.engines.stacking`). A weight is only as good as its mode's estimates:
:func:`mode_caveats` names the modes whose LOO densities are unreliable (a Pareto shape above arviz_stats'
threshold, or no PSIS) or whose draws are too few to trust (bulk ESS below :data:`ESS_PER_CHAIN_MIN` per
chain), recorded as ``loo_reliable`` and ``ess_reliable`` (mode) in the modes group.
"""

import numpy as np
import xarray as xr

from mixflow.data import Data
from mixflow.engines.em_steps import e_step, objective
from mixflow.engines.mode_rule import (
    CROSSING_WINDOW,
    CROSSING_WINDOWS,
    DOMINANT_WEIGHT,
    ESS_PER_CHAIN_MIN,
    LOO_MORE_DRAWS_K,
    LOO_UNUSABLE_K,
    MODE_OVERLAP,
    MODE_RHAT,
    STUCK_MOVES,
    chain_crossings,
    chain_modes,
    chain_moves,
    chains_text,
    convergence,
    crossing_window,
    describe_modes,
    extremes,
    pair_overlaps,
    pair_rhats,
    scalar_columns,
    stuck_text,
)
from mixflow.engines.sampling_diagnostics import format_above
from mixflow.engines.stacking import (
    PSIS_MIN_DRAWS,
    WEIGHT_INTERVAL,
    combined_draws,
    loo_pointwise,
    stacking_weights,
    weight_intervals,
)
from mixflow.errors import InputError
from mixflow.families.relabel import assignment_costs, optimal_permutations
from mixflow.families.scaling import scaled_std

__all__ = ["ALIKE_GAP", "ALIKE_SE", "CROSSING_WINDOW", "CROSSING_WINDOWS", "DOMINANT_WEIGHT", "EM_IN_MODE",
           "ESS_PER_CHAIN_MIN", "LOO_UNUSABLE_K", "MODE_OVERLAP", "MODE_RHAT", "OPTIMA_DISTANCE", "OPTIMA_GAP",
           "PSIS_MIN_DRAWS", "STARTS", "STUCK_MOVES", "alike_modes", "chain_crossings", "chain_modes", "chain_moves",
           "chains_text", "check_starts", "combined_draws", "crossing_window", "describe_group", "describe_modes",
           "distinct_optima", "left_out_modes", "left_out_reason", "loo_pointwise", "mode_caveats", "mode_groups",
           "mode_summaries", "pair_overlaps", "pair_rhats", "stacking_weights", "start_points"]

#: Two EM optima are distinct when some entry of their label signatures differs by more than this many
#: (approximate) posterior sds (:func:`distinct_optima`).
OPTIMA_DISTANCE = 1.0
#: EM optima whose objective is more than this below the best are not started from: their density is
#: under exp(-10) (5e-5) of the best's, so a chain started there leaves or would carry no weight.
OPTIMA_GAP = 10.0
#: A stacked mode whose leave-one-out density is within this many standard errors of the heaviest mode's
#: predicts the data as well: the data do not determine their weights (:func:`alike_modes`).
ALIKE_SE = 2.0
#: ... and whose weight is below the heaviest's by more than this is said to have a weight the data do not
#: determine (:func:`alike_modes`): the weights then claim a difference the densities do not show.
ALIKE_GAP = 0.2
#: EM's estimate lies in a mode when it is within this many of the mode's posterior sds of the mode's
#: mean on every parameter (a maximum of the posterior sits inside its mode's bulk, not at its mean).
EM_IN_MODE = 2.0
#: ``starts`` of the sampling engines by name: the reference (EM's estimate), or the distinct maxima EM's
#: restarts found (resolved into a list of points by :func:`mixflow.fit`, which holds the restarts).
STARTS = ("reference", "em-optima")


def check_starts(starts) -> bool:
    """Check a sampling engine's ``starts`` (a name of :data:`STARTS` or a non-empty list of parameter dicts).

    Returns
    -------
    bool
        True when ``starts`` is a list of more than one point.
    """
    if isinstance(starts, str):
        if starts not in STARTS:
            raise InputError(f"starts: expected one of {list(STARTS)} or a list of parameter dicts, got {starts!r}")
        return False
    if isinstance(starts, list | tuple) and starts and all(isinstance(point, dict) for point in starts):
        return len(starts) > 1
    raise InputError(f"starts: expected one of {list(STARTS)} or a non-empty list of parameter dicts, got {starts!r}")


def start_points(model, data: Data, reference: dict, starts) -> list[dict]:
    """The starting points ``starts`` names (checked by :func:`check_starts`), each checked against the model.

    ``"reference"`` is ``[reference]``; ``"em-optima"`` must have been resolved by :func:`mixflow.fit`.
    """
    if starts == "em-optima":
        raise InputError("starts: 'em-optima' is resolved by mixflow.fit from EM's restarts; the engines take "
                         "'reference' or the list of points")
    if isinstance(starts, str):
        return [reference]
    return [model.check_parameters(point, data.n_features, name=f"starts[{i}]") for i, point in enumerate(starts)]


def distinct_optima(model, data: Data, optima: list[dict], objectives, limit: int | None) -> list[dict]:
    """The distinct local maxima among EM's restarts, best first, at most ``limit`` of them.

    Only optima whose objective is within :data:`OPTIMA_GAP` of the best are considered. An optimum is new when, its
    components matched to those of every better optimum kept (the family's label signature,
    :mod:`mixflow.families.relabel`), some signature entry (a mean in data sds, a log sd, a square-root
    weight) differs by more than ``OPTIMA_DISTANCE / sqrt(min_k N_k)``, with ``N_k`` the better optimum's
    expected count of component ``k``: about one posterior sd of that entry.

    Parameters
    ----------
    optima : list of dict
        Each restart's final parameters in data units (NaN ones, e.g. trimmed restarts, are skipped).
    objectives : array-like of shape (len(optima),)
        Each restart's final objective (log posterior or log-likelihood).
    limit : int or None
        At most this many are returned (e.g. the number of chains); None: every distinct one.

    Returns
    -------
    list of dict
        The kept optima, highest objective first (the first is the best restart's).
    """
    signature = model.label_signature(data)
    objectives = np.asarray(objectives, dtype=float)
    usable = [i for i in np.argsort(-objectives, kind="stable") if np.isfinite(objectives[i])
              and all(np.all(np.isfinite(value)) for value in optima[i].values())]
    kept, signatures, scales = [], [], []
    for index in usable:
        point = optima[index]
        if objectives[index] < objectives[usable[0]] - OPTIMA_GAP:
            break
        own = signature(point)
        new = True
        for other, scale in zip(signatures, scales, strict=True):
            permutation = optimal_permutations(assignment_costs(own[None], other))[0]
            if np.abs(own[permutation] - other).max() <= scale:
                new = False
                break
        if new:
            kept.append(point)
            signatures.append(own)
            scales.append(OPTIMA_DISTANCE / np.sqrt(max(1.0, float(np.min(point["weights"]) * data.total_weight))))
        if len(kept) == limit:
            break
    return kept


def _within(draws: dict, chains: np.ndarray) -> xr.Dataset:
    return xr.Dataset({name: (dims, np.asarray(value)[chains]) for name, (dims, value) in draws.items()})


#: A stuck mode's draws lie inside another mode's when their median is within that mode's central interval of this
#: probability on every scalar parameter
INSIDE_INTERVAL = 0.98


def _stuck_inside(values: dict, chain_mode: np.ndarray, stuck: np.ndarray) -> np.ndarray:
    """For each mode of stuck chains, the mode of moving chains whose draws hold it (-1 for none, or not stuck).

    A chain that stopped inside another mode's bulk is no mode of its own: it is said so (:func:`mode_caveats`).
    ``values`` are the draws by name, ``(n_chains, n_draws, ...)``.
    """
    columns = scalar_columns(values)
    n_modes = int(chain_mode.max()) + 1
    inside = np.full(n_modes, -1)
    half = (1 - INSIDE_INTERVAL) / 2
    for mode in range(n_modes):
        chains = np.flatnonzero(chain_mode == mode)
        if not stuck[chains].all():
            continue
        point = np.median(columns[chains].reshape(-1, columns.shape[-1]), axis=0)
        for other in range(n_modes):
            moving = np.flatnonzero((chain_mode == other) & ~stuck)
            if other == mode or not moving.size:
                continue
            low, high = np.quantile(columns[moving].reshape(-1, columns.shape[-1]), [half, 1 - half], axis=0)
            if np.all((point >= low) & (point <= high)):
                inside[mode] = other
                break
    return inside


def _em_mode(reference: dict, means: list[dict], sds: list[dict]) -> int:
    """The mode EM's estimate lies in (see :data:`EM_IN_MODE`), or -1 for none."""
    best, best_distance = -1, np.inf
    for mode, (mean, sd) in enumerate(zip(means, sds, strict=True)):
        with np.errstate(divide="ignore", invalid="ignore"):
            z = [np.where(sd[n] > 0, np.abs(np.asarray(reference[n]) - mean[n]) / sd[n],
                          np.where(np.isclose(reference[n], mean[n]), 0.0, np.inf)).max() for n in mean]
        distance = float(max(z))
        if distance < best_distance:
            best, best_distance = mode, distance
    return best if best_distance < EM_IN_MODE else -1


def mode_summaries(model, data: Data, draws: dict, log_likelihood: np.ndarray, reference: dict,
                   chain_mode: np.ndarray, rng: np.random.Generator | None = None, independent: bool = False) -> dict:
    """Per-mode summaries, LOO densities and stacking weights, as the ``/mcmc/modes`` group.

    Parameters
    ----------
    model : MixtureModel
    data : mixflow.data.Data
    draws : dict
        ``{name: (dims, array of shape (n_chains, n_draws, ...))}``, aligned.
    log_likelihood : ndarray of shape (n_chains, n_draws, n_obs)
        Pointwise log p(x_n | draw) of one copy of each row.
    reference : dict
        EM's estimate, in the same labelling.
    chain_mode : ndarray of int of shape (n_chains,)
    rng : numpy.random.Generator, optional
        Draws the Bayesian bootstrap of the weights (by default one seeded with 0: the same intervals every time).

    Returns
    -------
    dict
        ``{"variables": {...}, "attrs": {...}}``: ``chain_mode``, ``moves`` (the share of the chain's
        transitions in which its draw changed) and ``stuck`` (below :data:`STUCK_MOVES`) (chain), ``weight``
        (mode, the stacking weight), ``weight_low`` and ``weight_high`` (its central :data:`WEIGHT_INTERVAL`
        interval under a Bayesian bootstrap of the rows, :func:`~mixflow.engines.stacking.weight_intervals`; 0 and
        0 for a mode left out), ``n_chains``, ``n_draws`` (all its chains' draws), ``elpd_loo``, ``max_pareto_k``,
        ``pareto_k_threshold`` (arviz_stats' for the mode's draws), ``n_high_pareto_k`` (the rows whose Pareto k
        exceeds it), ``in_stacking`` (:func:`_stacking`: weight
        0 for a mode of stuck chains, or whose Pareto k exceeds :data:`LOO_UNUSABLE_K`), ``loo_reliable`` (PSIS-LOO
        with every Pareto shape at most the threshold, chains not all stuck), ``ess_reliable`` (smallest bulk ESS at
        least :data:`ESS_PER_CHAIN_MIN` per chain, no chain stuck; of ``independent`` draws, their number),
        ``elpd_diff`` and ``elpd_diff_se``
        (:func:`_elpd_differences` to the heaviest mode), ``log_likelihood`` and ``log_posterior`` (at the mode's
        posterior mean), ``max_rhat``, ``min_ess_bulk``, ``min_ess_tail`` (within the mode) (mode), the
        posterior mean of every parameter with a leading ``mode`` dim (e.g. ``weights`` (mode, component))
        and ``lpd_loo`` (obs, mode); attrs ``n_modes``, ``em_mode`` (-1: none) and ``dominant_mode`` (-1:
        one mode only, with nothing to dominate, none has weight above :data:`DOMINANT_WEIGHT`, or a mode was left
        out of the stacking). With one mode its
        weight is 1 (nothing to stack), and its LOO is the model's (as ArviZ's ``loo`` of the draws gives it).
    """
    n_modes = int(chain_mode.max()) + 1
    lpd = np.full((data.n_obs, n_modes), np.nan)
    values = {name: value for name, (_, value) in draws.items()}
    moves = chain_moves(values)
    stuck = moves < STUCK_MOVES
    rows, means, sds = [], [], []
    for mode in range(n_modes):
        chains = np.flatnonzero(chain_mode == mode)
        posterior = _within(draws, chains)
        means.append({name: posterior[name].mean(("chain", "draw")).values for name in posterior.data_vars})
        sds.append({name: scaled_std(posterior[name], ("chain", "draw")).values for name in posterior.data_vars})
        row = {"n_chains": chains.size, "n_draws": chains.size * posterior.sizes["draw"],
               "max_pareto_k": np.nan, "pareto_k_threshold": np.nan, "n_high_pareto_k": 0,
               "stuck_mode": bool(stuck[chains].all())}
        # one mode's weight is 1 whatever its densities, but its LOO is still the model's, and is recorded
        lpd[:, mode], row["max_pareto_k"], row["pareto_k_threshold"], row["n_high_pareto_k"] = loo_pointwise(
            log_likelihood[chains], {name: (dims, np.asarray(v)[chains]) for name, (dims, v) in draws.items()},
            count_high=True)
        row.update(_at_mean(model, data, means[-1]))
        row["max_rhat"], row["min_ess_bulk"], row["min_ess_tail"] = extremes(convergence(posterior))
        # NaN comparisons are False: a mode without PSIS (too few draws) has no reliable LOO
        row["loo_reliable"] = bool(row["max_pareto_k"] <= row["pareto_k_threshold"]) and not row["stuck_mode"]
        # a stuck chain's ESS is its number of draws (arviz_stats' value for a constant): not a sample's; the ESS
        # of independent draws is their number, which ArviZ's estimate scatters about
        size = row["n_draws"] if independent else row["min_ess_bulk"]
        row["ess_reliable"] = bool(size >= ESS_PER_CHAIN_MIN * chains.size) and not stuck[chains].any()
        rows.append(row)
    stats = {key: np.array([row[key] for row in rows]) for key in rows[0]}
    stats["elpd_loo"] = data.frequency @ lpd
    weights, stats["in_stacking"] = _stacking(lpd, data.frequency, stats["max_pareto_k"], stats["n_draws"],
                                              stats.pop("stuck_mode"), stats["ess_reliable"])
    stats["elpd_diff"], stats["elpd_diff_se"] = _elpd_differences(lpd, data.frequency, int(np.argmax(weights)))
    stats["weight_low"], stats["weight_high"] = np.zeros(n_modes), np.zeros(n_modes)
    kept = stats["in_stacking"]
    stats["weight_low"][kept], stats["weight_high"][kept] = weight_intervals(
        lpd[:, kept], data.frequency, np.random.default_rng(0) if rng is None else rng)
    # a mode left out is not negligible (nothing is known of its weight), nor one that predicts as well
    dominant = int(np.argmax(weights)) if weights.max() > DOMINANT_WEIGHT and n_modes > 1 and \
        stats["in_stacking"].all() and not alike_modes({**stats, "weight": weights}) else -1
    stats["stuck_inside"] = _stuck_inside(values, chain_mode, stuck)
    variables = {"chain_mode": (("chain",), chain_mode.astype(np.int64)), "moves": (("chain",), moves),
                 "stuck": (("chain",), stuck), "weight": (("mode",), weights),
                 "lpd_loo": (("obs", "mode"), lpd), **{key: (("mode",), value) for key, value in stats.items()}}
    for name, (dims, _) in draws.items():
        variables[name] = (("mode", *dims[2:]), np.stack([mean[name] for mean in means]))
    attrs = {"n_modes": n_modes, "em_mode": _em_mode(reference, means, sds), "dominant_mode": dominant,
             **_MODE_ATTRS}
    return {"variables": variables, "attrs": attrs}


def _elpd_differences(lpd: np.ndarray, frequency: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """Each mode's LOO difference to mode ``top``, ``sum_n f_n d_n``, and its standard error.

    ``d_n`` is the mode's pointwise log density minus ``top``'s: negative where the mode predicts worse, as ArviZ's
    ``compare`` and :func:`mixflow.select_k` give ``elpd_diff``.

    The standard error is ``sqrt(sum_n f_n (d_n - mean)^2)``: ``sqrt(n var(d))`` with unit frequencies, as ArviZ's
    ``compare``.
    """
    d = lpd - lpd[:, [top]]
    mean = frequency @ d / frequency.sum()
    return frequency @ d, np.sqrt(frequency @ (d - mean) ** 2)


def left_out_modes(modes) -> list[int]:
    """The modes left out of the stacking (``in_stacking`` False) of a modes group; none where not recorded."""
    if "in_stacking" not in modes:
        return []
    return [int(mode) for mode in np.flatnonzero(~np.asarray(modes["in_stacking"], dtype=bool))]


def _stacking(lpd: np.ndarray, frequency: np.ndarray, max_pareto_k: np.ndarray, n_draws: np.ndarray | None = None,
              stuck: np.ndarray | None = None, ess_reliable: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The modes' stacking weights, and which modes were stacked.

    A mode whose chains are all stuck (``stuck``) is left out (weight 0) while some mode moves: its draws are not
    a sample, and its leave-one-out densities are its in-sample ones. Of the others, a mode whose leave-one-out
    densities are unusable is left out while some mode's are usable and its draws a sample (``ess_reliable``:
    enough effective draws, no stuck chain): its Pareto k exceeds :data:`LOO_UNUSABLE_K`, or it has the draws for
    PSIS (``n_draws`` at least :data:`PSIS_MIN_DRAWS`) but no Pareto shape (PSIS found no tail to fit: draws
    stuck on a few values). A mode is not left out in favour of modes whose own draws are no sample (a chain
    that has not converged, 15 effective draws of 500): every moving mode is stacked then. A mode without PSIS for
    too few draws is kept. With one mode its weight is 1.
    """
    n_modes = lpd.shape[1]
    moving = np.ones(n_modes, bool) if stuck is None or np.all(stuck) else ~np.asarray(stuck, bool)
    no_shape = (np.isnan(max_pareto_k) & (np.asarray(n_draws) >= PSIS_MIN_DRAWS) if n_draws is not None else
                np.zeros(n_modes, bool))
    kept = moving & ~(max_pareto_k > LOO_UNUSABLE_K) & ~no_shape  # NaN for too few draws is kept
    sound = np.ones(n_modes, bool) if ess_reliable is None else np.asarray(ess_reliable, bool)
    if not (kept & sound).any():
        kept = moving.copy()
    weights = np.zeros(n_modes)
    weights[kept] = stacking_weights(lpd[:, kept], frequency) if kept.sum() > 1 else 1.0
    return weights, kept


_MODE_ATTRS = {
    "rule": f"chains whose pair R-hat is below {MODE_RHAT}, or whose draws' overlap coefficient is at least "
            f"{MODE_OVERLAP}, on every parameter are linked; a mode is a connected group of linked chains",
    "weight": "Bayesian stacking of each mode's leave-one-out predictive densities (Yao, Vehtari and Gelman "
              f"2022): PSIS-LOO, or plain importance-sampling LOO for a mode with fewer than {PSIS_MIN_DRAWS} "
              "draws",
    "in_stacking": "whether the mode was stacked: a mode of stuck chains is left out, weight 0, while another mode "
                   f"moves; so is one whose PSIS-LOO Pareto k exceeds {LOO_UNUSABLE_K:g} (no finite mean of its "
                   "importance ratios), or that has no Pareto shape for all its draws, while another mode's is usable "
                   "and its draws a sample (ess_reliable); else every moving mode is stacked",
    "stuck": f"the chain's draw changed in fewer than {STUCK_MOVES:g} of its transitions (moves): its draws are not a "
             "sample of the posterior",
    "n_high_pareto_k": "the rows whose PSIS-LOO Pareto shape exceeds pareto_k_threshold",
    "loo_reliable": "PSIS-LOO with every Pareto shape at most pareto_k_threshold (arviz_stats' min(1 - 1 / "
                    "log10(S), 0.7) for S draws); False: the mode's weight rests on unreliable densities",
    "ess_reliable": f"smallest bulk ESS within the mode (of ADVI's independent draws, their number) at least "
                    f"{ESS_PER_CHAIN_MIN} per chain; False: too few "
                    "effective draws to trust the mode's summaries and its weight",
    "elpd_diff": "the mode's PSIS-LOO elpd minus the heaviest mode's (negative where it predicts worse, as ArviZ's "
                 "compare), with its standard error elpd_diff_se; within "
                 f"{ALIKE_SE:g} standard errors either way, with weights more than {ALIKE_GAP:g} apart, the data "
                 "hardly tell the two apart, and no mode is said to dominate",
    "weight_low": f"the lower end of the weight's central {WEIGHT_INTERVAL:g} interval under a Bayesian bootstrap "
                  "of the rows (each row weighted by a Gamma draw of shape its frequency; the same densities stacked "
                  "again): how far the data determine the weight; weight_high its upper end",
    "stuck_inside": f"for a mode of stuck chains, the mode of moving chains within whose central "
                    f"{INSIDE_INTERVAL:g} interval its draws' median lies on every parameter (the chain stopped "
                    "inside that mode: no mode of its own); -1 for none, or a mode that moves",
    "log_posterior": "log posterior density (EM's MAP objective) at the mode's posterior mean",
    "log_likelihood": "log-likelihood (frequency weights applied) at the mode's posterior mean",
}


def _at_mean(model, data: Data, mean: dict) -> dict:
    """The log-likelihood and log posterior density (EM's objective) at a mode's posterior mean."""
    prepared = model.prepare(data)
    total = float(data.frequency @ e_step(model, mean, prepared, data.n_features)[1])
    log_posterior = objective(model, model.to_working(mean, prepared), total, model.working_prior(prepared),
                              np.arange(model.n_components))
    return {"log_likelihood": total, "log_posterior": log_posterior}


def _left_out_why(value: dict, mode: int, unit: str) -> str:
    """Why ``mode`` was left out of the stacking (:func:`_stacking`), for :func:`mode_caveats`."""
    chains = np.flatnonzero(value["chain_mode"] == mode)
    if "stuck" in value and value["stuck"][chains].all():
        subject = f"its {unit[:-1]}" if chains.size == 1 else f"its {unit}"
        transitions = int(value["n_draws"][mode] // chains.size) - 1
        inside = int(value["stuck_inside"][mode]) if "stuck_inside" in value else -1
        where = (f" (it stopped inside mode {inside}'s draws: no mode of its own, but a {unit[:-1]} that stopped "
                 "there)" if inside >= 0 else "")
        return (f"{stuck_text(subject, chains, value['moves'], transitions)}, so its draws are not a sample of the "
                f"posterior{where}")
    if np.isnan(value["max_pareto_k"][mode]):
        return ("PSIS-LOO found no Pareto shape for its draws (its largest importance ratios are equal: draws "
                "stuck on a few values), so its leave-one-out densities are close to its in-sample ones")
    typically = ("an approximation narrower than the posterior, or a row so influential that leaving it out moves "
                 "the fit far" if unit == "fits" else
                 "a row so influential that leaving it out moves the mode's posterior far, as when a component rests "
                 "on a few rows, or draws that barely move")
    return (f"its PSIS-LOO Pareto k of {format_above(value['max_pareto_k'][mode], LOO_UNUSABLE_K)} is above "
            f"{LOO_UNUSABLE_K:g}, where its leave-one-out densities have no finite mean ({typically}, typically)")


def left_out_reason(modes, mode: int) -> str:
    """A short reason ``mode`` was left out of the stacking: stuck chains, or its leave-one-out densities."""
    if "stuck" in modes and "chain_mode" in modes and \
            np.asarray(modes["stuck"])[chains := np.flatnonzero(np.asarray(modes["chain_mode"]) == mode)].all():
        return "its chain is stuck" if chains.size == 1 else "its chains are stuck"
    return "its leave-one-out densities are unusable, with no PSIS-LOO Pareto shape or one above 1"


def alike_modes(modes) -> list[int]:
    """The stacked modes whose weights the data do not determine, though they differ from the heaviest mode's.

    A mode whose LOO density is within :data:`ALIKE_SE` standard errors of the heaviest mode's predicts the data
    as well: stacking then picks among densities that do not differ beyond their noise, and a Bayesian
    bootstrap of the rows moves their weights widely (the data determine them loosely). Said where the weights
    differ by more
    than :data:`ALIKE_GAP` (one mode called the main one, or dominant); near-even weights of modes that
    predict alike (mirror images, say) claim nothing the data do not support. Empty where not recorded.
    """
    if "elpd_diff" not in modes:
        return []
    diff, se = np.asarray(modes["elpd_diff"], float), np.asarray(modes["elpd_diff_se"], float)
    weights = np.asarray(modes["weight"], float)
    kept = np.asarray(modes["in_stacking"], bool) if "in_stacking" in modes else np.ones(diff.size, bool)
    top = int(np.argmax(weights))
    return [int(m) for m in range(diff.size) if m != top and kept[m] and abs(diff[m]) <= ALIKE_SE * se[m]
            and weights[top] - weights[m] > ALIKE_GAP]


def _intervals_text(modes, which: list[int]) -> str:
    """``"; the weights' 90% Bayesian-bootstrap intervals: mode 0 0.41-1.00, mode 1 0-0.59"`` ('' if not recorded)."""
    if "weight_low" not in modes:
        return ""
    low, high = np.asarray(modes["weight_low"], float), np.asarray(modes["weight_high"], float)
    return (f"; the weights' {WEIGHT_INTERVAL:.0%} Bayesian-bootstrap intervals: "
            + ", ".join(f"mode {m} {low[m]:.2f}-{high[m]:.2f}" for m in which))


def describe_group(modes, unit: str = "chains") -> str:
    """:func:`describe_modes` of a modes group (its variables by name, arrays or DataArrays)."""
    return describe_modes(np.asarray(modes["chain_mode"]), np.asarray(modes["weight"]), unit, left_out_modes(modes),
                          alike_modes(modes))


def mode_caveats(modes, unit: str = "chains") -> str:
    """What makes the stacking weights uncertain, mode by mode ("" when nothing does, or with one mode).

    Parameters
    ----------
    modes : mapping
        The modes group's variables by name (arrays or DataArrays): ``chain_mode``, ``n_chains``,
        ``n_draws``, ``max_pareto_k``, ``pareto_k_threshold``, ``loo_reliable``, ``min_ess_bulk``,
        ``ess_reliable`` and, when recorded, ``in_stacking``, ``stuck``, ``moves``, ``weight``, ``elpd_diff``
        and ``elpd_diff_se`` (:func:`mode_summaries`).
    unit : str
        What the chains are (``"fits"`` for ADVI).

    Returns
    -------
    str
        E.g. ``"the stacking weights are uncertain: mode 1 (chain 1) has 20 draws, fewer than the 30
        PSIS-LOO needs (draws >= 30 per chain), so its weight rests on plain importance-sampling LOO; more
        draws settle them"``.
    """
    names = ("chain_mode", "n_chains", "n_draws", "max_pareto_k", "pareto_k_threshold", "n_high_pareto_k",
             "loo_reliable", "min_ess_bulk", "ess_reliable", "stuck", "moves", "stuck_inside")
    value = {name: np.asarray(modes[name]) for name in names if name in modes}
    left_out = left_out_modes(modes)
    if value["n_draws"].size < 2:
        return ""
    said, more_draws = [], False
    stuck = value.get("stuck", np.zeros(value["chain_mode"].size, bool))
    for mode in range(value["n_draws"].size):
        why = []
        chains = np.flatnonzero(value["chain_mode"] == mode)
        n_draws, per_chain = int(value["n_draws"][mode]), -(-PSIS_MIN_DRAWS // int(value["n_chains"][mode]))
        if mode in left_out:
            why.append(f"is left out of the stacking (weight 0): {_left_out_why(value, mode, unit)}")
        elif stuck[chains].any():
            which = chains[stuck[chains]]
            why.append(f"holds {chains_text(unit, which)}, stuck (its draw changed in fewer than {STUCK_MOVES:g} of "
                       "the transitions), whose draws are not a sample of the posterior")
        elif n_draws < PSIS_MIN_DRAWS:
            why.append(f"has {n_draws} draw{'s' * (n_draws != 1)}, fewer than the {PSIS_MIN_DRAWS} PSIS-LOO needs "
                       f"(draws >= {per_chain} per {unit[:-1]}), so its weight rests on plain importance-sampling LOO")
            more_draws = True
        elif np.isnan(value["max_pareto_k"][mode]):
            why.append("has no PSIS-LOO Pareto shape (its largest importance ratios are equal: draws stuck on a few "
                       "values), so its weight rests on plain importance-sampling LOO")
        elif not value["loo_reliable"][mode]:
            threshold, shape = value["pareto_k_threshold"][mode], value["max_pareto_k"][mode]
            # results saved without the count say the largest shape alone
            high = int(value["n_high_pareto_k"][mode]) if "n_high_pareto_k" in value else 0
            rows = f", at {high} row{'s' * (high != 1)}" if high else ""
            mendable = shape <= LOO_MORE_DRAWS_K
            if shape > LOO_UNUSABLE_K and "in_stacking" in modes:
                beyond = (f", and above {LOO_UNUSABLE_K:g}, where its leave-one-out densities have no finite mean "
                          "(stacked all the same: no mode has usable ones and draws that are a sample)")
            elif not mendable and unit == "chains":
                beyond = (f" (above {LOO_MORE_DRAWS_K:g} more draws do not mend it: the importance ratios' tail is "
                          "too thick)")
            else:
                beyond = ""
            why.append(f"has a PSIS-LOO Pareto k up to {format_above(shape, threshold)}, above "
                       f"{threshold:.2f} for its {n_draws} draws{rows}{beyond}")
            # more draws of an approximation do not mend it, nor do they a Pareto k above LOO_MORE_DRAWS_K
            more_draws = more_draws or (unit == "chains" and mendable)
        if not value["ess_reliable"][mode] and not stuck[chains].any():
            ess, least = value["min_ess_bulk"][mode], ESS_PER_CHAIN_MIN * chains.size
            below = f"below {least}" + (f" ({ESS_PER_CHAIN_MIN} per {unit[:-1]})" if chains.size > 1 else "")
            if unit == "fits":  # independent draws: as many as they are (see mode_summaries)
                why.append(f"has {n_draws} independent draws, {below}")
            else:
                why.append((f"has a bulk ESS of {ess:.1f}" if np.isfinite(ess) else "no bulk ESS (too few draws)")
                           + f", {below}")
            more_draws = True
        if why:
            said.append(f"mode {mode} ({chains_text(unit, chains)}) " + " and ".join(why))
    alike = alike_modes(modes)
    if alike:
        top = int(np.argmax(np.asarray(modes["weight"])))
        diff, se = np.asarray(modes["elpd_diff"], float), np.asarray(modes["elpd_diff_se"], float)
        pairs = ", ".join(f"mode {m}'s by {abs(diff[m]):.2f} (se {se[m]:.2f}, "
                          f"{'mode ' + str(top) if diff[m] <= 0 else 'mode ' + str(m)} higher)" for m in alike)
        said.append(f"mode {top}'s leave-one-out predictive density differs from {pairs}, within {ALIKE_SE:g} "
                    "standard errors: the data hardly tell these modes apart, so their weights are loosely determined "
                    "(a mix of them predicts about as well" + _intervals_text(modes, [top, *alike]) + ")")
    if not said:
        return ""
    ending = ("; more draws settle them" if more_draws else "") + (
        f"; a stuck {unit[:-1]} needs another start or a smaller step (higher target_accept)" if stuck.any() else "")
    return "the stacking weights are uncertain: " + "; ".join(said) + ending


#: What the stacked draws' own R-hat, ESS and MCSE (ArviZ's, on their group) are worth, in its attrs.
STACKED_ERROR = ("not measured by this group: its draws are a resample, with replacement and in random order, of "
                 "the modes' draws, so ArviZ's ESS and MCSE of it count repeated draws as independent (an ESS can "
                 "exceed the distinct draws) and its R-hat compares shuffled halves; read the Monte Carlo error "
                 "within each mode (max_rhat, min_ess_bulk and min_ess_tail of the modes group) and the weights' "
                 "own uncertainty in weight_low and weight_high")


def mode_groups(model, data: Data, aligned: dict, log_likelihood: np.ndarray, reference: dict,
                rng: np.random.Generator, description: str, independent: bool = False) -> tuple[dict, np.ndarray]:
    """The chains' modes (:func:`chain_modes`), their summaries and, with several, the stacked draws.

    ``independent``: each chain's draws are independent (ADVI's, from its approximation), so a mode's draws are
    a sample of it as many as they are (:func:`mode_summaries`).

    Shared by the engines whose chains (NUTS chains, or ADVI fits from several starts) may sit in
    different modes.

    Parameters
    ----------
    aligned : dict
        ``{name: (dims, array of shape (n_chains, n_draws, ...))}``, aligned to the reference labelling.
    log_likelihood : ndarray of shape (n_chains, n_draws, n_obs)
    reference : dict
        EM's estimate, in the same labelling.
    rng : numpy.random.Generator
        Draws the resample by stacking weight.
    description : str
        What the stacked draws are, recorded in their group's attrs.

    Returns
    -------
    groups : dict
        ``{"modes": ...}`` (:func:`mode_summaries`) and, with several modes, ``{"stacked/posterior": ...}``
        (:func:`combined_draws`, chain 1, draw ``n_chains * n_draws``).
    chain_mode : ndarray of int of shape (n_chains,)
    """
    values = {name: value for name, (_, value) in aligned.items()}
    n_chains, n_draws = next(iter(values.values())).shape[:2]
    chain_mode = chain_modes(values) if n_chains > 1 else np.zeros(1, np.int64)
    groups = {"modes": mode_summaries(model, data, aligned, log_likelihood, reference, chain_mode,
                                      rng.spawn(1)[0], independent)}  # a stream of its own: the resample is unchanged
    weights = groups["modes"]["variables"]["weight"][1]
    if weights.size > 1:
        groups["stacked/posterior"] = {
            "variables": combined_draws(aligned, chain_mode, weights, rng),
            "coords": {"chain": np.arange(1), "draw": np.arange(n_chains * n_draws)},
            "attrs": {"description": description, "monte_carlo_error": STACKED_ERROR}}
    return groups, chain_mode
