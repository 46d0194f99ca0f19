"""The rule that groups chains into modes, and the judgement of chains that cross between places.

After the draws are aligned to one labelling (:mod:`mixflow.families.relabel`), chains that sit in different
places are grouped into *modes* (summarised and stacked by :mod:`mixflow.engines.modes`).

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
"""

import numpy as np
import xarray as xr
from scipy.sparse.csgraph import connected_components

__all__ = ["CROSSING_WINDOW", "CROSSING_WINDOWS", "DOMINANT_WEIGHT", "ESS_PER_CHAIN_MIN", "LOO_MORE_DRAWS_K",
           "MODE_OVERLAP", "MODE_RHAT", "STUCK_MOVES", "TAIL_PROB",
           "chain_crossings", "chain_modes", "chain_moves", "chains_text", "crossing_window",
           "describe_modes", "pair_overlaps", "pair_rhats", "convergence", "extremes", "rhat_within", "scalar_columns",
           "stuck_text"]

#: Chains whose pair R-hat is below this on every parameter are linked.
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
#: A mode whose stacking weight exceeds this dominates: the others are reported as negligible.
DOMINANT_WEIGHT = 0.99
#: A mode whose PSIS-LOO Pareto k exceeds this is left out of the stacking while another mode's is within it:
#: above 1 the importance ratios have no finite mean (Vehtari et al. 2024), and the mode's leave-one-out
#: densities, typically those of a chain stuck or barely moving, would win the stacking on their error
LOO_UNUSABLE_K = 1.0
#: Above this Pareto k more draws do not make PSIS-LOO reliable (the importance ratios' tail is too thick,
#: Vehtari et al. 2024); below it, above arviz_stats' smaller threshold for few draws, they do
LOO_MORE_DRAWS_K = 0.7
#: Bulk and tail ESS below this per chain are too few to trust (Vehtari et al. 2021).
ESS_PER_CHAIN_MIN = 100
#: A chain whose draw changes in fewer than this share of its transitions is *stuck*. NUTS draws each next
#: point from its whole trajectory, so a healthy chain moves in nearly every transition; one that stays put
#: in most has a collapsed step size or trajectories that all diverge, and its draws are not a sample. Its
#: summaries mislead: a constant chain has no within-chain variance, and arviz_stats reports its ESS as its
#: number of draws.
STUCK_MOVES = 0.5


def scalar_columns(draws: dict) -> np.ndarray:
    """Every scalar parameter as a column: ``(chain, draw, n_scalars)``."""
    arrays = [np.asarray(value, dtype=float) for value in draws.values()]
    n_chains, n_draws = arrays[0].shape[:2]
    return np.concatenate([a.reshape(n_chains, n_draws, -1) for a in arrays], axis=-1)


def chain_moves(draws: dict) -> np.ndarray:
    """The share of each chain's transitions in which its draw changed (some scalar parameter differs).

    Parameters
    ----------
    draws : dict
        ``{name: array of shape (n_chains, n_draws, ...)}``.

    Returns
    -------
    ndarray of shape (n_chains,)
        1 for a chain of one draw (no transition to judge).
    """
    columns = scalar_columns(draws)
    if columns.shape[1] < 2:
        return np.ones(columns.shape[0])
    return np.any(np.diff(columns, axis=1) != 0, axis=2).mean(axis=1)


def chains_text(unit: str, chains: np.ndarray) -> str:
    """``"chains 0, 2"``, ``"chain 1"`` (``unit`` plural, e.g. ``"fits"``)."""
    return f"{unit if chains.size > 1 else unit[:-1]} {', '.join(map(str, chains))}"


def stuck_text(subject: str, chains: np.ndarray, moves: np.ndarray, transitions: int) -> str:
    """``"<subject> is stuck: its draw changed in 0 of 499 transitions"`` of stuck ``chains`` (:data:`STUCK_MOVES`).

    Several chains: ``"<subject> are stuck: their draws changed in at most ..."``; ``moves`` is :func:`chain_moves`
    of every chain, ``transitions`` each chain's (its draws less one).
    """
    most = int(np.round(np.asarray(moves)[chains].max() * transitions))
    if chains.size == 1:
        return f"{subject} is stuck: its draw changed in {most} of {transitions} transitions"
    return f"{subject} are stuck: their draws changed in at most {most} of {transitions} transitions"


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
    columns = scalar_columns(draws)
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
    columns = scalar_columns(draws)
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
    columns = scalar_columns(draws)
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


def describe_modes(chain_mode: np.ndarray, weights: np.ndarray, unit: str = "chains", left_out=(), alike=()) -> str:
    """``"2 modes (chains 0, 2 | 1, 3; stacking weights 0.71, 0.29)"``, with a dominant mode named.

    ``unit`` names what the numbers are (e.g. ``"fits"`` for ADVI fits from several starts); ``left_out`` the
    modes left out of the stacking (weight 0, unknown) and ``alike`` the modes that predict the data as well as
    the heaviest (:func:`mixflow.engines.modes.alike_modes`): with either, no mode is said to dominate.
    """
    n_modes = int(chain_mode.max()) + 1
    groups = " | ".join(", ".join(str(c) for c in np.flatnonzero(chain_mode == m)) for m in range(n_modes))
    text = f"{n_modes} modes ({unit} {groups}; stacking weights {', '.join(f'{w:.2f}' for w in weights)})"
    if len(left_out):
        text += (f"; mode{'s' * (len(left_out) > 1)} {', '.join(map(str, left_out))} left out of the "
                 "stacking")
    elif weights.max() > DOMINANT_WEIGHT and not len(alike):
        text += (f"; mode {int(np.argmax(weights))} carries {weights.max():.3f} of the weight, the others are "
                 "negligible")
    return text


def rhat_within(posterior: xr.Dataset) -> xr.Dataset:
    """Rank-normalised split R-hat of every parameter (``arviz_stats.rhat``); of one chain, its two halves'.

    Split R-hat compares the halves of every chain; arviz_stats gives NaN for a single chain, so a single
    chain (a mode that one chain found) is passed as its two halves, each of which it splits again: the
    chain's own stationarity, where R-hat between chains does not exist.
    """
    import arviz_stats as azs

    if posterior.sizes["chain"] == 1 and posterior.sizes["draw"] >= 8:
        half = posterior.sizes["draw"] // 2
        first, second = posterior.isel(draw=slice(0, half)), posterior.isel(draw=slice(half, 2 * half))
        posterior = xr.concat([first.assign_coords(chain=[0]),
                               second.assign_coords(chain=[1], draw=first["draw"].values)], dim="chain")
    with np.errstate(divide="ignore", invalid="ignore"):
        return azs.rhat(posterior)


#: The quantiles of the tail ESS: Vehtari et al. (2021)'s 5% and 95%, not ArviZ's default (its ``stats.ci_prob``
#: setting, 0.89 unless changed): the tail ESS and its warnings do not move with a display setting
TAIL_PROB = (0.05, 0.95)


def convergence(posterior: xr.Dataset) -> tuple[xr.Dataset, xr.Dataset, xr.Dataset]:
    """R-hat (:func:`rhat_within`: of one chain, its halves'), bulk and tail ESS of every parameter."""
    import arviz_stats as azs

    with np.errstate(divide="ignore", invalid="ignore"):  # a constant (e.g. the weight of K=1) has no R-hat/ESS
        return (rhat_within(posterior), azs.ess(posterior, method="bulk"),
                azs.ess(posterior, method="tail", prob=TAIL_PROB))


def extremes(statistics) -> tuple[float, float, float]:
    """The largest R-hat, the smallest bulk and tail ESS of :func:`convergence`'s result (NaN where none is)."""
    rhat, ess_bulk, ess_tail = statistics
    return _extreme(rhat, np.nanmax), _extreme(ess_bulk, np.nanmin), _extreme(ess_tail, np.nanmin)


def _extreme(dataset: xr.Dataset, reduce) -> float:
    values = [reduce(dataset[name].values) for name in dataset.data_vars if np.isfinite(dataset[name].values).any()]
    return float(reduce(values)) if values else float("nan")
