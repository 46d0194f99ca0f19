"""The sampler's convergence diagnostics, said with the posterior's modes.

R-hat and ESS over all chains and within each mode, divergences, chains that cross between places, and one
SamplingWarning that names what is wrong and what to try.
"""

import json
import warnings

import numpy as np
import xarray as xr

from mixflow.engines.mode_rule import (
    CROSSING_WINDOW,
    ESS_PER_CHAIN_MIN,
    chain_crossings,
    chains_text,
    convergence,
    crossing_window,
    describe_modes,
    extremes,
    stuck_text,
)
from mixflow.warnings import PACKAGE_FILES, SamplingWarning
from mixflow.wording import counted

__all__ = ["RHAT_MAX", "diagnose", "format_above", "format_ess", "format_rhat", "record_crossings"]

#: R-hat above this flags a parameter whose chains disagree (Vehtari et al. 2021).
RHAT_MAX = 1.01
#: At most this many flagged entries are named in the warning.
_MAX_NAMED = 6


#: Draws per chain below which arviz_stats gives no ESS (NaN), and so no R-hat either (one chain's R-hat, of its
#: halves, needs twice as many).
MIN_DRAWS_FOR_ESS = 4
#: How an R-hat or ESS that could not be computed (NaN) is written.
NO_ESTIMATE = "n/a (too few draws)"


def format_rhat(value: float) -> str:
    """An R-hat to 3 decimals, or as many more (up to 6) as show it above :data:`RHAT_MAX` when it is.

    1.0104 is flagged, and "1.010 > 1.01" would read as false: it is written 1.0104 (1.01000004 as 1.010001).
    NaN (chains, or one chain's halves, too short for an R-hat) is ``"n/a (too few draws)"``.
    """
    return NO_ESTIMATE if value != value else format_above(value, RHAT_MAX, 3)


def format_ess(value: float) -> str:
    """An ESS as a whole number, or ``"n/a (too few draws)"`` where none could be computed (NaN)."""
    return NO_ESTIMATE if value != value else f"{value:.0f}"


def format_above(value: float, threshold: float, decimals: int = 2) -> str:
    """``value`` to ``decimals`` decimals, or as many more (up to ``decimals + 3``) as show it above ``threshold``.

    A Pareto k of 1.002 above 1 is written 1.002, not "1.00 is above 1".
    """
    value = float(value)
    for places in range(decimals, decimals + 4):
        text = f"{value:.{places}f}"
        if not value > threshold or float(text) > threshold:
            return text
    scale = 10.0 ** (decimals + 3)
    return f"{np.ceil(value * scale) / scale:.{decimals + 3}f}"  # above by less than half the last place: rounded up


def record_crossings(modes: dict, aligned: dict) -> None:
    """Add ``crosses`` (chain) to the ``modes`` group: the chains that move between places themselves."""
    values = {name: value for name, (_, value) in aligned.items()}
    window = crossing_window(next(iter(values.values())).shape[1])
    modes["variables"]["crosses"] = (("chain",), chain_crossings(values))
    modes["attrs"]["crossing_window"] = window
    modes["attrs"]["crosses"] = (f"the chain's own windows of {window} draws include two the rule would not link: it "
                                 "moves between places the rule keeps apart" if window else
                                 f"not judged: fewer than two windows of {CROSSING_WINDOW} draws per chain")


def diagnose(aligned: dict, raw_posterior: xr.Dataset, sample_stats: dict, options: dict,
              chain_mode: np.ndarray | None = None, weights: np.ndarray | None = None,
              crosses: np.ndarray | None = None, mode_rhat: np.ndarray | None = None, caveats: str = "",
              left_out=(), alike=(), stuck: np.ndarray | None = None, moves: np.ndarray | None = None) -> dict:
    """R-hat, bulk and tail ESS over all chains, and within each mode when the chains fall into several.

    With several modes the flags (and the warning) are those within the modes: a mode whose chains agree
    is not flagged for disagreeing with another mode, which the warning names instead. Given the modes
    (``chain_mode``), the warning of a mode whose chains disagree names its chains and quotes its R-hat
    (``mode_rhat``, the ``max_rhat`` of ``/mcmc/modes``), and says which of them cross between places
    themselves (``crosses``, :func:`mixflow.engines.modes.chain_crossings`), or that chains too short to
    judge were not judged; ``caveats`` (:func:`mixflow.engines.modes.mode_caveats`) says what makes the
    stacking weights uncertain, ``left_out`` and ``alike`` the modes left out of the stacking and those that predict
    as well as the heaviest (no mode then dominates); ``stuck`` and ``moves`` (chain) which chains are stuck and
    the share of their transitions that moved (:func:`mixflow.engines.modes.mode_summaries`), said in the warning
    when the modes' caveats do not (one mode).

    Returns
    -------
    dict
        ``max_rhat``, ``min_ess_bulk`` and ``min_ess_tail``, the figures the warning judges by: within the
        modes with several (a mode of one chain: the R-hat of its halves), over all chains with one; the same over all
        chains as ``max_rhat_all_chains``, ``min_ess_bulk_all_chains`` and ``min_ess_tail_all_chains``;
        ``n_divergences`` and the flagged entries ``high_rhat``, ``low_ess_bulk``, ``low_ess_tail`` (JSON).
    """
    coords = {dim: raw_posterior[dim].values for dim in raw_posterior.dims if dim in raw_posterior.coords}
    posterior = xr.Dataset({name: (dims, value) for name, (dims, value) in aligned.items()},
                           coords={dim: coords[dim] for dims, _ in aligned.values() for dim in dims if dim in coords})
    overall = convergence(posterior)
    diverging = sample_stats.get("diverging")
    n_divergent = int(np.asarray(diverging[1]).sum()) if diverging is not None else 0
    n_modes = 1 if chain_mode is None else int(chain_mode.max()) + 1
    window = crossing_window(posterior.sizes["draw"])
    flags = {"high_rhat": [], "low_ess_bulk": [], "low_ess_tail": []}
    few = posterior.sizes["draw"] < MIN_DRAWS_FOR_ESS  # no ESS at all: every entry's is NaN, and as low as can be
    disagreeing, per_mode = [], []
    for mode in range(n_modes):  # one mode: the statistics over all chains; several: each mode's, tagged
        chains = np.arange(posterior.sizes["chain"]) if n_modes == 1 else np.flatnonzero(chain_mode == mode)
        within = overall if n_modes == 1 else convergence(posterior.isel(chain=chains))
        per_mode.append(extremes(within))
        least = ESS_PER_CHAIN_MIN * chains.size
        tag = "" if n_modes == 1 else f" in mode {mode}"
        flagged = _flagged(within[0], lambda v: v > RHAT_MAX)
        flags["high_rhat"] += [name + tag for name in flagged]
        if flagged and chain_mode is not None:
            disagreeing.append(disagreeing_mode(mode, n_modes, chains, mode_rhat, crosses, window))
        flags["low_ess_bulk"] += [name + tag for name in _flagged(within[1], lambda v, least=least: v < least, few)]
        flags["low_ess_tail"] += [name + tag for name in _flagged(within[2], lambda v, least=least: v < least, few)]
    notes = [caveats] if caveats else []
    singles = [m for m in range(n_modes) if n_modes > 1 and np.count_nonzero(chain_mode == m) == 1]
    if singles:
        notes.append(f"mode{'s' * (len(singles) > 1)} {', '.join(map(str, singles))} "
                     f"{'hold one chain each' if len(singles) > 1 else 'holds one chain'}: the R-hat within "
                     f"{'them' if len(singles) > 1 else 'it'} compares a chain's halves, which cannot show whether "
                     "other chains started there would agree")
    if few:
        notes.append(f"with {counted(posterior.sizes['draw'], 'draw')} per chain, R-hat and ESS cannot be computed "
                     f"(they need at least {MIN_DRAWS_FOR_ESS}): the draws are no sample to summarise")
    if stuck is not None and np.any(stuck) and n_modes == 1:
        notes.append(_stuck(np.flatnonzero(stuck), np.asarray(moves), posterior.sizes["draw"] - 1))
    if chain_mode is not None and not window and (n_modes > 1 or flags["high_rhat"]):
        notes.append(_NOT_JUDGED)
    described = describe_modes(chain_mode, weights, left_out=left_out, alike=alike) if n_modes > 1 else None
    _warn(flags["high_rhat"], flags["low_ess_bulk"], flags["low_ess_tail"], n_divergent, ESS_PER_CHAIN_MIN *
          options["chains"], options, described, disagreeing, notes)
    with warnings.catch_warnings():  # a mode of one chain too short to split has no R-hat
        warnings.simplefilter("ignore", RuntimeWarning)
        judged = [float(np.nanmax([e[0] for e in per_mode])), *map(float, np.nanmin([e[1:] for e in per_mode], axis=0))]
    names = ("max_rhat", "min_ess_bulk", "min_ess_tail")
    return {**dict(zip(names, judged, strict=True)),
            **{f"{name}_all_chains": value for name, value in zip(names, extremes(overall), strict=True)},
            "n_divergences": n_divergent, **{key: json.dumps(value) for key, value in flags.items()}}


#: Said with several modes or chains that disagree when the chains are too short for :func:`chain_crossings`.
_NOT_JUDGED = (f"whether chains cross between places was not judged (it needs at least {2 * CROSSING_WINDOW} "
               f"draws per chain, two windows of {CROSSING_WINDOW})")


def _stuck(chains: np.ndarray, moves: np.ndarray, transitions: int) -> str:
    """What the warning says of stuck chains (:data:`mixflow.engines.mode_rule.STUCK_MOVES`)."""
    which = stuck_text(chains_text("chains", chains), chains, moves, transitions)
    return (f"{which}, so {'its' if chains.size == 1 else 'their'} draws are not a sample "
            "of the posterior and the R-hat and ESS above count them as if they were; start "
            f"{'it' if chains.size == 1 else 'them'} elsewhere, or take smaller steps (a higher target_accept)")


def disagreeing_mode(mode: int, n_modes: int, chains: np.ndarray, mode_rhat, crosses, window: int) -> str:
    """What the warning says of a mode whose chains disagree: its chains, its R-hat, the chains that cross."""
    listed = ", ".join(map(str, chains))
    text = (f"the halves of chain {listed} disagree" if n_modes == 1 and chains.size == 1 else
            f"the chains fall into 1 mode (chains {listed}) and disagree within it" if n_modes == 1 else
            f"chains {listed} of mode {mode} disagree" if chains.size > 1 else
            f"the halves of chain {listed}, alone in mode {mode}, disagree")
    if mode_rhat is not None:
        text += f": R-hat {format_rhat(mode_rhat[mode])}"
    crossing = chains[np.asarray(crosses, dtype=bool)[chains]] if crosses is not None else np.empty(0, int)
    if crossing.size:
        which = ("every chain crosses between places that its" if crossing.size == chains.size > 1 else
                 f"chain {crossing[0]} crosses between places that its" if crossing.size == 1 else
                 f"chains {', '.join(map(str, crossing))} cross between places that their")
        text += (f", and {which} own windows of {window} draws do not share: the "
                 "chains visit the same places but move between them slowly, and the R-hat measures how unevenly they "
                 "share their time among them, which more draws settle and no grouping of chains removes")
    return text


def _flagged(dataset: xr.Dataset, test, nan: bool = False) -> list[str]:
    """Names like ``mu[1, waiting]`` of the entries where ``test`` holds, or that are NaN if ``nan``."""
    names = []
    for name, array in dataset.data_vars.items():
        values = array.values
        with np.errstate(invalid="ignore"):
            hits = np.argwhere((np.asarray(test(values)) & np.isfinite(values)) | (nan & np.isnan(values)))
        if {"feature", "feature_"} <= set(array.dims):  # a symmetric matrix: each entry once, [a, b] with a <= b
            rows, columns = array.dims.index("feature"), array.dims.index("feature_")
            hits = hits[hits[:, rows] <= hits[:, columns]]
        for index in hits:
            labels = [str(array[dim].values[i]) if dim in array.coords else str(i)
                      for dim, i in zip(array.dims, index, strict=True)]
            names.append(f"{name}[{', '.join(labels)}]" if labels else name)
    return names


def _listed(names: list[str]) -> str:
    more = f" and {len(names) - _MAX_NAMED} more" if len(names) > _MAX_NAMED else ""
    return ", ".join(names[:_MAX_NAMED]) + more


def _warn(high_rhat, low_bulk, low_tail, n_divergent, minimum, options, modes: str | None = None,
          disagreeing: list[str] | None = None, notes: list[str] | None = None) -> None:
    problems = [f"the chains fall into {modes}; each mode is summarised in /mcmc/modes and the modes are "
                "combined by stacking in /mcmc/stacked"] if modes else []
    if high_rhat:
        why = "; ".join(disagreeing) if disagreeing else "chains of one mode disagree" if modes else "chains disagree"
        problems.append(f"R-hat above {RHAT_MAX} for {_listed(high_rhat)} ({why})")
    if low_bulk or low_tail:
        which = sorted(set(low_bulk) | set(low_tail), key=(low_bulk + low_tail).index)
        problems.append(f"bulk or tail ESS below {'100 per chain' if modes else f'{minimum} (100 per chain)'} "
                        f"for {_listed(which)}")
    if n_divergent:
        problems.append(f"{counted(n_divergent, 'divergent transition')} after tuning")
    problems += notes or []
    if not problems:
        return
    advice = []
    if high_rhat or low_bulk or low_tail or n_divergent or notes:
        draws = 2 * options["draws"] if options["draws"] >= MIN_DRAWS_FOR_ESS else 1000  # PyMC's default, at least
        advice.append(f"more draws and tuning (draws={draws}, tune={max(2 * options['tune'], 1000)})")
    # Chains that disagree within a mode often cross rarely between a mixture's configurations (a component
    # that forms on a few points and dissolves): the crossing passes where that component's variance is
    # small, and the shorter steps of a higher target acceptance pass there more often.
    if n_divergent or high_rhat:
        target = options["target_accept"]
        higher = 0.95 if target < 0.95 else 0.99 if target < 0.99 else None  # the next of the usual settings
        if higher is not None and (n_divergent or target < 0.95):
            advice.append(f"a higher target_accept ({higher}; it was {target})")
    if (high_rhat or modes) and options.get("n_components", 2) > 1:  # no fewer than one component
        advice.append("fewer components, or a stronger prior, if components overlap or one has few observations "
                      "(the posterior may be multimodal)" if not modes else
                      "fewer components, or a stronger prior, if the modes differ by a component that splits, "
                      "merges or holds few observations")
    run = f" of the second run ({options['second_run']})" if options.get("second_run") else ""
    warnings.warn(f"MCMC diagnostics{run}: " + "; ".join(problems) + ". Try " + ", ".join(advice) + ".",
                  SamplingWarning, skip_file_prefixes=PACKAGE_FILES)
