"""Modes of a posterior that chains do not mix across: found, summarised and combined by stacking.

A finite mixture's posterior is multimodal beyond label switching (components that merge or split, a
small component some chains find and others do not). After the draws are aligned to one labelling
(:mod:`mixflow.families.relabel`), chains that sit in different places are grouped into *modes*:

**The rule.** Chains ``i`` and ``j`` are *linked* when the rank-normalised split R-hat of the pair
(``arviz_stats.rhat`` on the two chains alone, Vehtari et al. 2021) is below ``MODE_RHAT`` (1.1) for
every scalar parameter of the posterior (every weight, mean, variance or covariance entry), or when the
two chains visit the same places: the overlap coefficient of their draws' distributions (the mass they
share, ``sum_b min(p_ib, p_jb)`` over common bins) is at least ``MODE_OVERLAP`` (1/2) for every scalar
parameter. A mode is a connected group of linked chains (single linkage). 1.1 is the classical threshold
beyond which two chains are not taken to sample one distribution (Gelman et al., BDA3); for two chains
whose means differ by ``d`` within-chain sds it is reached at ``d`` of about 0.65, while chains of one
well-mixed mode give pair R-hats well below 1.1 once each has a hundred or so effective draws (the
stricter 1.01 is kept for convergence *within* each mode). R-hat alone would also split chains that move
slowly between the same two places and spend different shares of their draws in each (a small component
that forms and dissolves): such chains sample one posterior whose parts they cross rarely, which the
R-hat within the mode then reports, and stacking them as modes would weigh each chain's share of time
rather than places. Two unimodal chains overlap by at least half when their means differ by less than
about 1.35 sds (the overlap of two normals is ``2 Phi(-d / 2)``), so chains stuck in places further apart
than that stay apart.

**Chains that cross.** The rule groups chains, so it cannot split a chain that itself moves between places
it would keep apart, and no grouping of such chains has a small R-hat within its modes: the R-hat then
measures how unevenly the chains share their time between the places, which only more crossings (more
draws) settle. Splitting such chains into modes, or linking them by R-hat alone (complete linkage), would
make each chain a mode and weigh its share of time as if it were a place. So the chains stay one mode, and
each chain's own consecutive windows of at least ``CROSSING_WINDOW`` (200) draws (at most
``CROSSING_WINDOWS`` (10) of them, longer ones for longer chains) are compared by the same rule
(:func:`chain_crossings`): a chain two of whose windows would not be linked, were they chains, *crosses*
between places (recorded as ``crosses`` (chain) and said in the diagnostics' warning with the R-hat within
its mode). On the galaxies (velocity / 1000) at K=5, MAP then NUTS with 4 x 1000 draws, 14 of the 16
chains of seeds 1-4 do: a component sits on the two galaxies near 16 (weight about 0.03) or moves up to
18-19.5 (weight 0.15-0.25), and each chain passes from one to the other and back several times, so that
the share of draws with a component at 16 has a bulk ESS of only 22 to 101 over the 4000 draws (its
R-hat 1.02 to 1.16), and every pair of chains of seed 1 has an R-hat above 1.1. A window of 200 draws of
a well-mixing chain holds a hundred or so effective draws, so windows of one place stay linked (as they do
for autocorrelated draws of one normal place down to about 20 effective draws per window); a chain that
drifts through one place more slowly than that is also said to cross, which describes it as well: its
draws 200 apart sit in places the rule keeps apart, and only more draws bring its R-hat down.

**The weights.** The modes are weighted by Bayesian stacking of each mode's leave-one-out predictive
densities, PSIS-LOO or, for a mode with fewer than 30 draws, plain importance-sampling LOO, and combined
by a resample (:mod:`mixflow.engines.stacking`). A weight is only as good as its mode's estimates:
:func:`mode_caveats` names the modes whose LOO densities are unreliable (a Pareto shape above arviz_stats'
threshold, or no PSIS) or whose draws are too few to trust (bulk ESS below :data:`ESS_PER_CHAIN_MIN` per
chain), recorded as ``loo_reliable`` and ``ess_reliable`` (mode) in the modes group.
"""


import numpy as np
import xarray as xr
from scipy.sparse.csgraph import connected_components

from mixflow.data import Data
from mixflow.engines.em_steps import e_step, objective
from mixflow.engines.stacking import PSIS_MIN_DRAWS, combined_draws, loo_pointwise, stacking_weights
from mixflow.errors import InputError
from mixflow.families.relabel import assignment_costs, optimal_permutations

__all__ = ["CROSSING_WINDOW", "CROSSING_WINDOWS", "DOMINANT_WEIGHT", "EM_IN_MODE", "ESS_PER_CHAIN_MIN", "MODE_OVERLAP",
           "MODE_RHAT", "OPTIMA_DISTANCE", "OPTIMA_GAP", "PSIS_MIN_DRAWS", "STARTS", "chain_crossings", "chain_modes",
           "check_starts", "combined_draws", "crossing_window", "describe_modes", "distinct_optima", "loo_pointwise",
           "mode_caveats", "mode_groups", "mode_summaries", "pair_overlaps", "pair_rhats", "stacking_weights",
           "start_points"]

MODE_RHAT = 1.1
#: Chains whose draws share at least this much of their distribution on every parameter are linked.
MODE_OVERLAP = 0.5
#: Draws per window when a chain's own windows are compared by the rule (:func:`chain_crossings`): about
#: a hundred effective draws per window in a well-mixing chain, so that windows of one place stay linked.
CROSSING_WINDOW = 200
#: At most this many windows per chain (longer windows for longer chains), which bounds the pairs compared.
CROSSING_WINDOWS = 10
#: Bins of the overlap coefficient: quantiles of the pair's pooled draws, 5% of them in each.
_OVERLAP_BINS = 20
#: Two EM optima are distinct when some entry of their label signatures differs by more than this many
#: (approximate) posterior sds (:func:`distinct_optima`).
OPTIMA_DISTANCE = 1.0
#: EM optima whose objective is more than this below the best are not started from: their density is
#: under exp(-10) (5e-5) of the best's, so a chain started there leaves or would carry no weight.
OPTIMA_GAP = 10.0
#: EM's estimate lies in a mode when it is within this many of the mode's posterior sds of the mode's
#: mean on every parameter (a maximum of the posterior sits inside its mode's bulk, not at its mean).
EM_IN_MODE = 2.0
#: A mode whose stacking weight exceeds this dominates: the others are reported as negligible.
DOMINANT_WEIGHT = 0.99
#: Bulk and tail ESS below this per chain are too few to trust (Vehtari et al. 2021).
ESS_PER_CHAIN_MIN = 100
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


def _columns(draws: dict) -> np.ndarray:
    """Every scalar parameter as a column: ``(chain, draw, n_scalars)``."""
    arrays = [np.asarray(value, dtype=float) for value in draws.values()]
    n_chains, n_draws = arrays[0].shape[:2]
    return np.concatenate([a.reshape(n_chains, n_draws, -1) for a in arrays], axis=-1)


def pair_rhats(draws: dict) -> np.ndarray:
    """The largest R-hat over the scalar parameters of every pair of chains.

    Parameters
    ----------
    draws : dict
        ``{name: array of shape (n_chains, n_draws, ...)}``, aligned to one labelling.

    Returns
    -------
    ndarray of shape (n_chains, n_chains)
        The largest rank-normalised split R-hat of each pair (``arviz_stats.rhat``), 1 on the diagonal;
        a parameter constant in both chains (no R-hat) counts 1 when the constants agree and infinity
        when they do not.
    """
    columns = _columns(draws)
    n_chains = columns.shape[0]
    out = np.ones((n_chains, n_chains))
    for i in range(n_chains):
        for j in range(i + 1, n_chains):
            out[i, j] = out[j, i] = _pair_rhat(columns[[i, j]])
    return out


def _pair_rhat(pair: np.ndarray) -> float:
    """The largest R-hat over the scalars of two chains' draws ``(2, n_draws, n_scalars)`` (see :func:`pair_rhats`)."""
    import arviz_stats as azs

    with np.errstate(divide="ignore", invalid="ignore"):
        rhat = np.asarray(azs.rhat(xr.DataArray(pair, dims=("chain", "draw", "scalar"))).values)
    constant = ~np.isfinite(rhat)
    if constant.any():
        agree = np.all(pair[:, :, constant] == pair[:1, :1, constant], axis=(0, 1))
        rhat = np.where(constant, 1.0, rhat)
        if not agree.all():
            rhat = np.append(rhat, np.inf)
    return float(rhat.max())


def pair_overlaps(draws: dict) -> np.ndarray:
    """The smallest overlap coefficient over the scalar parameters of every pair of chains.

    The overlap coefficient of two chains' draws of one parameter is ``sum_b min(p_ib, p_jb)``, with
    ``p_ib`` the share of chain ``i``'s draws in bin ``b`` of :data:`_OVERLAP_BINS` bins at the quantiles of
    the pair's pooled draws: 1 for chains with one distribution (less its sampling noise), 0 for chains
    that share no place.

    Parameters
    ----------
    draws : dict
        ``{name: array of shape (n_chains, n_draws, ...)}``, aligned to one labelling.

    Returns
    -------
    ndarray of shape (n_chains, n_chains)
        1 on the diagonal; a parameter constant in both chains counts 1 when the constants agree, else 0.
    """
    columns = _columns(draws)
    n_chains = columns.shape[0]
    out = np.ones((n_chains, n_chains))
    for i in range(n_chains):
        for j in range(i + 1, n_chains):
            out[i, j] = out[j, i] = min(_overlap(columns[i, :, s], columns[j, :, s]) for s in range(columns.shape[2]))
    return out


def _overlap(first: np.ndarray, second: np.ndarray) -> float:
    edges = np.unique(np.quantile(np.concatenate([first, second]), np.linspace(0.0, 1.0, _OVERLAP_BINS + 1)))
    if edges.size < 2:  # both chains constant at one value
        return 1.0
    shares = [np.histogram(values, edges)[0] / values.size for values in (first, second)]
    return float(np.minimum(*shares).sum())


def chain_modes(draws: dict, *, threshold: float = MODE_RHAT, overlap: float = MODE_OVERLAP) -> np.ndarray:
    """The mode of every chain by the rule of this module's docstring.

    Parameters
    ----------
    draws : dict
        ``{name: array of shape (n_chains, n_draws, ...)}``, aligned to one labelling.
    threshold : float, default MODE_RHAT
        Chains whose pair R-hat is below this on every parameter are linked.
    overlap : float, default MODE_OVERLAP
        Chains whose overlap coefficient is at least this on every parameter are linked.

    Returns
    -------
    ndarray of int of shape (n_chains,)
        Modes numbered 0, 1, ... in the order of their first chain (chain 0 is in mode 0).
    """
    linked = (pair_rhats(draws) < threshold) | (pair_overlaps(draws) >= overlap)
    _, labels = connected_components(linked, directed=False)
    first = {}
    for label in labels:
        first.setdefault(int(label), len(first))
    return np.array([first[int(label)] for label in labels], dtype=np.int64)


def crossing_window(n_draws: int, window: int = CROSSING_WINDOW) -> int:
    """The draws per window :func:`chain_crossings` compares in chains of ``n_draws`` (0: too short to judge)."""
    n_windows = min(n_draws // window, CROSSING_WINDOWS)
    return n_draws // n_windows if n_windows >= 2 else 0


def chain_crossings(draws: dict, *, window: int = CROSSING_WINDOW, threshold: float = MODE_RHAT,
                    overlap: float = MODE_OVERLAP) -> np.ndarray:
    """Which chains themselves move between places the rule of this module's docstring would keep apart.

    Each chain is cut into ``min(n_draws // window, CROSSING_WINDOWS)`` consecutive windows of equal length
    (at least ``window`` draws; the remainder at the end dropped); the chain *crosses* when two of its
    windows would not be linked were they chains: their pair R-hat is at least ``threshold`` and their
    overlap coefficient below ``overlap`` on some parameter.

    Parameters
    ----------
    draws : dict
        ``{name: array of shape (n_chains, n_draws, ...)}``, aligned to one labelling.
    window : int, default CROSSING_WINDOW
        The fewest draws per window; a chain with fewer than two windows is not judged (False).
    threshold, overlap : float
        The linking rule's R-hat threshold and overlap (:func:`chain_modes`).

    Returns
    -------
    ndarray of bool of shape (n_chains,)
    """
    columns = _columns(draws)
    n_chains, n_draws = columns.shape[:2]
    out = np.zeros(n_chains, dtype=bool)
    length = crossing_window(n_draws, window)
    if not length:
        return out
    n_windows = n_draws // length
    for chain in range(n_chains):
        windows = columns[chain, :n_windows * length].reshape(n_windows, length, -1)
        for i in range(n_windows):
            for j in range(i + 1, n_windows):
                apart = min(_overlap(windows[i, :, s], windows[j, :, s]) for s in range(windows.shape[2])) < overlap
                if apart and _pair_rhat(windows[[i, j]]) >= threshold:  # the R-hat only where the overlap is small
                    out[chain] = True
                    break
            if out[chain]:
                break
    return out


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


def _diagnostics(posterior: xr.Dataset) -> tuple[float, float, float]:
    """Largest R-hat (NaN for one chain), smallest bulk and tail ESS over the scalar parameters."""
    import arviz_stats as azs

    def extreme(dataset, reduce):
        values = [reduce(dataset[n].values) for n in dataset.data_vars if np.isfinite(dataset[n].values).any()]
        return float(reduce(values)) if values else float("nan")

    with np.errstate(divide="ignore", invalid="ignore"):
        rhat = extreme(azs.rhat(posterior), np.nanmax) if posterior.sizes["chain"] > 1 else float("nan")
        bulk = extreme(azs.ess(posterior, method="bulk"), np.nanmin)
        tail = extreme(azs.ess(posterior, method="tail"), np.nanmin)
    return rhat, bulk, tail


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
                   chain_mode: np.ndarray) -> dict:
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

    Returns
    -------
    dict
        ``{"variables": {...}, "attrs": {...}}``: ``chain_mode`` (chain), ``weight`` (mode, the stacking
        weight), ``n_chains``, ``n_draws`` (all its chains' draws), ``elpd_loo``, ``max_pareto_k``,
        ``pareto_k_threshold`` (arviz_stats' for the mode's draws), ``loo_reliable`` (PSIS-LOO with every
        Pareto shape at most the threshold), ``ess_reliable`` (smallest bulk ESS at least
        :data:`ESS_PER_CHAIN_MIN` per chain), ``log_likelihood`` and ``log_posterior`` (at the mode's
        posterior mean), ``max_rhat``, ``min_ess_bulk``, ``min_ess_tail`` (within the mode) (mode), the
        posterior mean of every parameter with a leading ``mode`` dim (e.g. ``weights`` (mode, component))
        and ``lpd_loo`` (obs, mode); attrs ``n_modes``, ``em_mode`` (-1: none) and ``dominant_mode`` (-1:
        none has weight above :data:`DOMINANT_WEIGHT`). With one mode its weight is 1, ``loo_reliable`` is
        True and ``lpd_loo``, ``elpd_loo``, ``max_pareto_k`` and ``pareto_k_threshold`` are NaN: LOO serves
        only the stacking (the model's own LOO is :func:`mixflow.analysis.select.loo_table`'s, from the
        pointwise log-likelihood).
    """
    n_modes = int(chain_mode.max()) + 1
    lpd = np.full((data.n_obs, n_modes), np.nan)
    rows, means, sds = [], [], []
    for mode in range(n_modes):
        chains = np.flatnonzero(chain_mode == mode)
        posterior = _within(draws, chains)
        means.append({name: posterior[name].mean(("chain", "draw")).values for name in posterior.data_vars})
        sds.append({name: posterior[name].std(("chain", "draw")).values for name in posterior.data_vars})
        row = {"n_chains": chains.size, "n_draws": chains.size * posterior.sizes["draw"],
               "max_pareto_k": np.nan, "pareto_k_threshold": np.nan}
        if n_modes > 1:  # one mode's weight is 1 whatever its densities: no LOO to stack by
            lpd[:, mode], row["max_pareto_k"], row["pareto_k_threshold"] = loo_pointwise(
                log_likelihood[chains], {name: (dims, np.asarray(v)[chains]) for name, (dims, v) in draws.items()})
        row.update(_at_mean(model, data, means[-1]))
        row["max_rhat"], row["min_ess_bulk"], row["min_ess_tail"] = _diagnostics(posterior)
        # NaN comparisons are False: a mode without PSIS (too few draws) has no reliable LOO
        row["loo_reliable"] = n_modes == 1 or bool(row["max_pareto_k"] <= row["pareto_k_threshold"])
        row["ess_reliable"] = bool(row["min_ess_bulk"] >= ESS_PER_CHAIN_MIN * chains.size)
        rows.append(row)
    stats = {key: np.array([row[key] for row in rows]) for key in rows[0]}
    stats["elpd_loo"] = data.frequency @ lpd
    weights = stacking_weights(lpd, data.frequency) if n_modes > 1 else np.ones(1)
    dominant = int(np.argmax(weights)) if weights.max() > DOMINANT_WEIGHT and n_modes > 1 else -1
    variables = {"chain_mode": (("chain",), chain_mode.astype(np.int64)), "weight": (("mode",), weights),
                 "lpd_loo": (("obs", "mode"), lpd), **{key: (("mode",), value) for key, value in stats.items()}}
    for name, (dims, _) in draws.items():
        variables[name] = (("mode", *dims[2:]), np.stack([mean[name] for mean in means]))
    attrs = {"n_modes": n_modes, "em_mode": _em_mode(reference, means, sds), "dominant_mode": dominant,
             **_MODE_ATTRS}
    return {"variables": variables, "attrs": attrs}


_MODE_ATTRS = {
    "rule": f"chains whose pair R-hat is below {MODE_RHAT}, or whose draws' overlap coefficient is at least "
            f"{MODE_OVERLAP}, on every parameter are linked; a mode is a connected group of linked chains",
    "weight": "Bayesian stacking of each mode's leave-one-out predictive densities (Yao, Vehtari and Gelman "
              f"2022): PSIS-LOO, or plain importance-sampling LOO for a mode with fewer than {PSIS_MIN_DRAWS} "
              "draws",
    "loo_reliable": "PSIS-LOO with every Pareto shape at most pareto_k_threshold (arviz_stats' min(1 - 1 / "
                    "log10(S), 0.7) for S draws); False: the mode's weight rests on unreliable densities",
    "ess_reliable": f"smallest bulk ESS within the mode at least {ESS_PER_CHAIN_MIN} per chain; False: too few "
                    "effective draws to trust the mode's summaries and its weight",
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


def mode_caveats(modes, unit: str = "chains") -> str:
    """What makes the stacking weights uncertain, mode by mode ("" when nothing does, or with one mode).

    Parameters
    ----------
    modes : mapping
        The modes group's variables by name (arrays or DataArrays): ``chain_mode``, ``n_chains``,
        ``n_draws``, ``max_pareto_k``, ``pareto_k_threshold``, ``loo_reliable``, ``min_ess_bulk`` and
        ``ess_reliable`` (:func:`mode_summaries`).
    unit : str
        What the chains are (``"fits"`` for ADVI).

    Returns
    -------
    str
        E.g. ``"the stacking weights are uncertain: mode 1 (chain 1) has 20 draws, fewer than the 30
        PSIS-LOO needs (draws >= 30 per chain), so its weight rests on plain importance-sampling LOO; more
        draws settle them"``.
    """
    value = {name: np.asarray(modes[name]) for name in ("chain_mode", "n_chains", "n_draws", "max_pareto_k",
                                                         "pareto_k_threshold", "loo_reliable", "min_ess_bulk",
                                                         "ess_reliable")}
    if value["n_draws"].size < 2:
        return ""
    said = []
    for mode in range(value["n_draws"].size):
        why = []
        n_draws, per_chain = int(value["n_draws"][mode]), -(-PSIS_MIN_DRAWS // int(value["n_chains"][mode]))
        if n_draws < PSIS_MIN_DRAWS:
            why.append(f"has {n_draws} draw{'s' * (n_draws != 1)}, fewer than the {PSIS_MIN_DRAWS} PSIS-LOO needs "
                       f"(draws >= {per_chain} per {unit[:-1]}), so its weight rests on plain importance-sampling LOO")
        elif not value["loo_reliable"][mode]:
            why.append(f"has a PSIS-LOO Pareto k up to {value['max_pareto_k'][mode]:.2f}, above "
                       f"{value['pareto_k_threshold'][mode]:.2f} for its {n_draws} draws")
        if not value["ess_reliable"][mode]:
            ess = value["min_ess_bulk"][mode]
            why.append((f"a bulk ESS of {ess:.1f}" if np.isfinite(ess) else "no bulk ESS (too few draws)")
                       + f", below {ESS_PER_CHAIN_MIN} per {unit[:-1]}")
        if why:
            chains = np.flatnonzero(value["chain_mode"] == mode)
            said.append(f"mode {mode} ({unit if chains.size > 1 else unit[:-1]} {', '.join(map(str, chains))}) "
                        + " and ".join(why))
    if not said:
        return ""
    return "the stacking weights are uncertain: " + "; ".join(said) + "; more draws settle them"


def mode_groups(model, data: Data, aligned: dict, log_likelihood: np.ndarray, reference: dict,
                rng: np.random.Generator, description: str) -> tuple[dict, np.ndarray]:
    """The chains' modes (:func:`chain_modes`), their summaries and, with several, the stacked draws.

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
    groups = {"modes": mode_summaries(model, data, aligned, log_likelihood, reference, chain_mode)}
    weights = groups["modes"]["variables"]["weight"][1]
    if weights.size > 1:
        groups["stacked/posterior"] = {
            "variables": combined_draws(aligned, chain_mode, weights, rng),
            "coords": {"chain": np.arange(1), "draw": np.arange(n_chains * n_draws)},
            "attrs": {"description": description}}
    return groups, chain_mode


def describe_modes(chain_mode: np.ndarray, weights: np.ndarray, unit: str = "chains") -> str:
    """``"2 modes (chains 0, 2 | 1, 3; stacking weights 0.71, 0.29)"``, with a dominant mode named.

    ``unit`` names what the numbers are (e.g. ``"fits"`` for ADVI fits from several starts).
    """
    n_modes = int(chain_mode.max()) + 1
    groups = " | ".join(", ".join(str(c) for c in np.flatnonzero(chain_mode == m)) for m in range(n_modes))
    text = f"{n_modes} modes ({unit} {groups}; stacking weights {', '.join(f'{w:.2f}' for w in weights)})"
    if weights.max() > DOMINANT_WEIGHT:
        text += (f"; mode {int(np.argmax(weights))} carries {weights.max():.3f} of the weight, the others are "
                 "negligible")
    return text
