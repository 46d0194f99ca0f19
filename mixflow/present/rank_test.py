"""Whether NUTS chains' ranks are uniform: the test ArviZ's rank plots draw, made fit for autocorrelated draws.

ArviZ's multi-chain uniformity test (``mchain_uniformity_test`` of ``arviz_stats``, the one its rank plots
highlight) takes the draws as independent, and MCMC draws are not: on autocorrelated draws of one distribution
it rejects far more often than its level (a quarter of the time at 0.01 when a third of the draws are
effective). So each scalar parameter's chains are first thinned, as ArviZ thins for its rank envelopes
(``arviz_stats.thin``: by the draws over the smaller of bulk and tail ESS), to half their effective sample size,
the ESS of each chain alone (their mean): the ESS of the chains together falls to a few draws when they
disagree, and thinning to it would leave the test nothing to see, while the ESS of short chains is itself
uncertain, which thinning to all of it leaves the test too liberal. A fit is flagged when the smallest p-value
is below ``alpha / m`` for its ``m`` distinct scalar parameters (Bonferroni; a covariance's mirrored entries are
one), so that chains that mix are flagged at about the level ``alpha`` whatever the number of parameters.
``alpha`` is ``1 - rcParams["stats.envelope_prob"]``.
"""

import hashlib
import threading
import warnings
from collections import OrderedDict

import numpy as np

from mixflow.engines.mode_rule import TAIL_PROB

__all__ = ["mcmc_rank_finding", "rank_finding_by_mode", "rank_uniformity_finding"]

_KEPT = 8  # findings kept by their draws' content: a workflow lists a fit's findings, then its report does again
_found: OrderedDict = OrderedDict()
_found_lock = threading.Lock()  # reports may be written from threads


def rank_uniformity_finding(draws) -> str | None:
    """The finding of non-uniform ranks of NUTS draws (a Dataset with chain and draw), or None.

    None with fewer than 2 chains, or when every parameter passes.
    """
    from arviz_base import rcParams
    from arviz_stats.base import array_stats

    if draws is None or draws.sizes["chain"] < 2:
        return None
    alpha = 1 - rcParams["stats.envelope_prob"]
    key = _content_key(draws, alpha)
    with _found_lock:
        if key in _found:
            _found.move_to_end(key)
            return _found[key]
    finding = _finding(array_stats, draws, alpha)  # outside the lock: two threads may both compute it, alike
    with _found_lock:
        _found[key] = finding
        while len(_found) > _KEPT:
            _found.popitem(last=False)
    return finding


def mcmc_rank_finding(tree) -> str | None:
    """:func:`rank_finding_by_mode` of a tree's NUTS draws and their modes (``/mcmc/modes``, when recorded)."""
    from mixflow.container.layout import MCMC, MCMC_MODES
    from mixflow.container.read import has_group, method_draws

    modes = tree[MCMC_MODES] if has_group(tree, MCMC_MODES) else {}
    chain_mode = modes["chain_mode"].values if "chain_mode" in modes else None
    return rank_finding_by_mode(method_draws(tree, MCMC), chain_mode)


def rank_finding_by_mode(draws, chain_mode=None) -> str | None:
    """:func:`rank_uniformity_finding` within each mode when the chains fall into several.

    Chains in different modes are expected to rank apart, which the modes already say: the test is then made on
    the chains of each mode that has more than one (a mode of one chain has no other to mix with).
    """
    if draws is None or chain_mode is None or int(np.max(chain_mode)) < 1:
        return rank_uniformity_finding(draws)
    chain_mode = np.asarray(chain_mode)
    found = []
    for mode in range(int(chain_mode.max()) + 1):
        chains = np.flatnonzero(chain_mode == mode)
        finding = rank_uniformity_finding(draws.isel(chain=chains)) if chains.size > 1 else None
        if finding is not None:
            found.append(f"within mode {mode} (chains {', '.join(map(str, chains))}), " + finding)
    return "; ".join(found) or None


def _content_key(draws, alpha: float) -> bytes:
    """A digest of the draws (names, dimensions, values) and the level: equal for the same draws."""
    digest = hashlib.blake2b(repr(alpha).encode(), digest_size=20)
    for name, values in sorted(draws.data_vars.items()):
        digest.update(f"{name}{values.dims}{values.shape}".encode())
        digest.update(np.ascontiguousarray(values.values).tobytes())
    return digest.digest()


def _finding(array_stats, draws, alpha: float) -> str | None:
    """:func:`rank_uniformity_finding` computed."""
    p_values = {}
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for name, values in draws.data_vars.items():
            columns = values.transpose("chain", "draw", ...).values
            columns = columns.reshape(*columns.shape[:2], -1)
            distinct = {np.ascontiguousarray(columns[:, :, j]).tobytes(): j for j in range(columns.shape[2])}
            p_values[name] = [_thinned_p_value(array_stats, columns[:, :, j]) for j in sorted(distinct.values())]
    # a constant parameter (a single component's weight) has no p-value: left out, and out of the count
    finite = {name: np.asarray(values)[np.isfinite(values)] for name, values in p_values.items()}
    m = sum(values.size for values in finite.values())
    low = sorted(name for name, values in finite.items() if values.size and values.min() < alpha / max(m, 1))
    if not low:
        return None
    smallest = min(finite[name].min() for name in low)
    return (f"the chains' ranks are not uniform for {', '.join(low)} (smallest p = {smallest:.2g} < {alpha:.2g} / "
            f"{m} parameters, the draws thinned to half their effective sample size): the chains have not mixed")


def _thinned_p_value(array_stats, chains: np.ndarray) -> float:
    """The uniformity test's p-value of one parameter's ``(chain, draw)`` draws, thinned to half their ESS."""
    if not np.isfinite(chains).all() or np.ptp(chains) == 0:
        return np.nan  # nothing to rank: R-hat and ESS say what there is to say
    ess = np.mean([min(float(array_stats.ess(chain[None], method="bulk")),
                       float(array_stats.ess(chain[None], method="tail", prob=TAIL_PROB))) for chain in chains]) / 2
    factor = max(1, int(np.ceil(chains.shape[1] / ess))) if np.isfinite(ess) and ess > 0 else 1
    thinned = chains[:, ::factor]
    ranks = array_stats.compute_ranks(thinned.reshape(-1), relative=True).reshape(thinned.shape)
    return float(array_stats.mchain_uniformity_test(ranks)[0])
