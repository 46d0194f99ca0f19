"""Stacking of posterior modes: each mode's leave-one-out predictive densities, the weights, the resample.

**The weights.** Each mode's draws give a leave-one-out (LOO) log predictive density of every observation
(:func:`loo_pointwise`), and the modes are weighted by Bayesian stacking of those densities (Yao, Vehtari
and Gelman, "Stacking for non-mixing Bayesian computations: the curse and blessing of multimodal
posteriors", JMLR 2022): the weights on the simplex maximising ``sum_n f_n log sum_k w_k exp(lpd_nk)``
(:func:`stacking_weights`, ``f_n`` the frequency weights). The combined posterior is a resample of the
draws: each of the ``chains * draws`` draws comes from mode ``k`` with probability ``w_k`` and is then
drawn uniformly from that mode's draws (:func:`combined_draws`).

**The densities.** A mode with at least :data:`PSIS_MIN_DRAWS` (30) draws gets PSIS-LOO
(``arviz_stats.loo``), with the largest Pareto shape ``k`` of its observations and arviz_stats' threshold
for its draws, ``min(1 - 1 / log10(S), 0.7)`` (Vehtari et al. 2024), above which the density of that
observation is unreliable. arviz_stats fits a generalised Pareto tail to the largest fifth of the importance
ratios and estimates its shape from 6 of them on, so a mode with fewer draws gets plain importance-sampling
LOO instead:
``log S - log sum_s exp(-log p(x_n | theta_s))``, the same leave-one-out density estimated by the same
ratios without the smoothing of their tail (consistent, with a larger variance; with one draw it is the
in-sample log-likelihood of that draw). Its Pareto shape is not estimated (NaN), so its density is counted
unreliable; :func:`mixflow.engines.modes.mode_caveats` says so, and more draws give PSIS-LOO.
"""

import warnings

import numpy as np
import xarray as xr
from scipy.optimize import minimize
from scipy.special import logsumexp

__all__ = ["PSIS_MIN_DRAWS", "WEIGHT_INTERVAL", "WEIGHT_REPLICATES", "combined_draws", "importance_loo",
           "loo_pointwise", "stacking_weights", "weight_intervals"]

#: The fewest draws of a mode that PSIS-LOO takes. arviz_stats fits the Pareto tail to the largest
#: ``floor(S / 5)`` of ``S`` ratios when ``S * r_eff <= 225`` (its relative efficiency ``r_eff`` is at most
#: ``log10(S)``, so below 30 draws the other branch never applies): with fewer than 5 tail draws it raises,
#: and with 5 its fit of the shape returns NaN (the tail's first quartile is its minimum), leaving the
#: ratios unsmoothed; 6 tail draws, 30 draws, are the fewest whose shape it estimates.
PSIS_MIN_DRAWS = 30
#: Replicates of the Bayesian bootstrap of the stacking weights (:func:`weight_intervals`), and the probability
#: of the central interval it gives.
WEIGHT_REPLICATES = 200
WEIGHT_INTERVAL = 0.9


def stacking_weights(lpd: np.ndarray, frequency: np.ndarray | None = None) -> np.ndarray:
    """Bayesian stacking weights from pointwise log predictive densities.

    Maximises ``sum_n f_n log sum_k w_k exp(lpd[n, k])`` over the simplex (concave in ``w``), by SLSQP
    with the analytic gradient.

    Parameters
    ----------
    lpd : ndarray of shape (n_obs, n_modes)
        E.g. each mode's LOO log predictive density of each observation (:func:`loo_pointwise`).
    frequency : ndarray of shape (n_obs,), optional
        Frequency weight of each observation (default 1).

    Returns
    -------
    ndarray of shape (n_modes,)
        Non-negative weights summing to 1.
    """
    lpd = np.asarray(lpd, dtype=float)
    n_obs, n_modes = lpd.shape
    if n_modes == 1:
        return np.ones(1)
    frequency = np.ones(n_obs) if frequency is None else np.asarray(frequency, dtype=float)
    density = np.exp(lpd - lpd.max(axis=1, keepdims=True))  # the shift only adds a constant
    total = frequency.sum()

    def loss(w):
        mixed = np.maximum(density @ w, 1e-300)
        return -(frequency @ np.log(mixed)) / total, -(frequency / mixed) @ density / total

    result = minimize(loss, np.full(n_modes, 1.0 / n_modes), jac=True, method="SLSQP",
                      bounds=[(0.0, 1.0)] * n_modes,
                      constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)}],
                      options={"ftol": 1e-12, "maxiter": 1000})
    weights = np.where(result.x > 1e-10, result.x, 0.0)  # SLSQP's round-off at the simplex's faces
    return weights / weights.sum()


def weight_intervals(lpd: np.ndarray, frequency: np.ndarray | None, rng: np.random.Generator,
                     replicates: int = WEIGHT_REPLICATES,
                     prob: float = WEIGHT_INTERVAL) -> tuple[np.ndarray, np.ndarray]:
    """Central ``prob`` intervals of the stacking weights under a Bayesian bootstrap of the observations.

    Each replicate weighs observation ``n`` by a draw from Gamma(``f_n``, 1) (with unit frequencies, the
    Dirichlet(1, ..., 1) weights of Rubin's Bayesian bootstrap, 1981; a row of frequency ``f_n`` as ``f_n`` rows)
    and stacks the same densities (:func:`stacking_weights`): how far the data determine the weights. Yao,
    Vehtari and Gelman (2022) note that stacking weights of modes that predict alike are not identified, and
    the interval then spans much of [0, 1].

    Returns
    -------
    low, high : ndarray of shape (n_modes,)
    """
    lpd = np.asarray(lpd, dtype=float)
    if lpd.shape[1] == 1:
        return np.ones(1), np.ones(1)
    frequency = np.ones(lpd.shape[0]) if frequency is None else np.asarray(frequency, dtype=float)
    draws = np.array([stacking_weights(lpd, rng.gamma(frequency)) for _ in range(replicates)])
    low, high = np.quantile(draws, [(1 - prob) / 2, (1 + prob) / 2], axis=0)
    return low, high


def importance_loo(log_likelihood: np.ndarray) -> np.ndarray:
    """Plain importance-sampling LOO log predictive density of every observation (no Pareto smoothing).

    Parameters
    ----------
    log_likelihood : ndarray of shape (n_chains, n_draws, n_obs)

    Returns
    -------
    ndarray of shape (n_obs,)
        ``log S - logsumexp_s(-log_likelihood[s, n])`` over the ``S = n_chains * n_draws`` draws: the log
        of the harmonic mean of the likelihood of each observation.
    """
    flat = np.asarray(log_likelihood, dtype=float).reshape(-1, np.shape(log_likelihood)[-1])
    return np.log(flat.shape[0]) - logsumexp(-flat, axis=0)


def loo_pointwise(log_likelihood: np.ndarray, posterior: dict, *, count_high: bool = False) -> tuple:
    """LOO log predictive density of every observation from one set of chains (the module's docstring).

    Parameters
    ----------
    log_likelihood : ndarray of shape (n_chains, n_draws, n_obs)
    posterior : dict
        ``{name: (dims, array)}`` of the same chains (for the relative efficiency of the draws).

    Returns
    -------
    elpd : ndarray of shape (n_obs,)
        PSIS-LOO (``arviz_stats.loo``) with at least :data:`PSIS_MIN_DRAWS` draws, else
        :func:`importance_loo`.
    max_pareto_k : float
        The largest Pareto shape (NaN without PSIS).
    good_k : float
        arviz_stats' threshold of the Pareto shape for these draws, ``min(1 - 1 / log10(S), 0.7)``
        (NaN without PSIS).
    n_high : int
        With ``count_high``: how many observations have a Pareto shape above ``good_k`` (0 without PSIS).

    An observation whose log-likelihood is the same in every draw (chains that did not move it) has that value
    as its LOO density exactly, and no tail for PSIS to fit: it is left out of PSIS and of the largest shape.
    Draws whose largest ratios are all equal otherwise (chains stuck on a few values) give plain importance
    sampling and NaN shapes: not reliable.
    """
    import arviz_stats as azs

    def extra(n_high: int) -> tuple:
        return (n_high,) if count_high else ()

    if log_likelihood.shape[0] * log_likelihood.shape[1] < PSIS_MIN_DRAWS:
        return importance_loo(log_likelihood), float("nan"), float("nan"), *extra(0)
    with np.errstate(invalid="ignore"):  # exact where the log-likelihood is constant over the draws
        elpd = importance_loo(log_likelihood)
        # NaN or infinite values are not constant: PSIS sees them, as before
        varies = ~(np.ptp(log_likelihood.reshape(-1, log_likelihood.shape[-1]), axis=0) == 0)
    if not varies.any():
        return elpd, float("nan"), float("nan"), *extra(0)
    tree = xr.DataTree.from_dict({
        "posterior": xr.Dataset({name: (dims, value) for name, (dims, value) in posterior.items()}),
        "log_likelihood": xr.Dataset({"x": (("chain", "draw", "obs"), log_likelihood[..., varies])}),
    })
    with warnings.catch_warnings():  # the Pareto shapes are returned and recorded instead
        warnings.simplefilter("ignore")
        try:
            result = azs.loo(tree, pointwise=True, var_name="x")
        except ValueError:  # a tail of equal values (draws stuck on a few values): no shape to fit, none reliable
            return elpd, float("nan"), float("nan"), *extra(0)
    elpd[varies] = np.asarray(result.elpd_i.values, dtype=float)
    shapes = np.asarray(result.pareto_k.values, dtype=float)
    largest = float(np.nanmax(shapes)) if np.isfinite(shapes).any() else float("nan")  # none fitted: not reliable
    good_k = float(result.good_k)
    return elpd, largest, good_k, *extra(int(np.sum(shapes > good_k)))


def combined_draws(draws: dict, chain_mode: np.ndarray, weights: np.ndarray, rng: np.random.Generator) -> dict:
    """Draws resampled by stacking weight: ``chains * draws`` of them on one chain.

    Parameters
    ----------
    draws : dict
        ``{name: (dims, array of shape (n_chains, n_draws, ...))}``.
    chain_mode : ndarray of int of shape (n_chains,)
    weights : ndarray of shape (n_modes,)
    rng : numpy.random.Generator

    Returns
    -------
    dict
        ``{name: (dims, array of shape (1, n_chains * n_draws, ...))}``: the number of draws from mode
        ``k`` is multinomial with probabilities ``weights``, each drawn uniformly (with replacement)
        from the mode's draws, in a random order.
    """
    n_chains, n_draws = chain_mode.size, next(iter(draws.values()))[1].shape[1]
    total = n_chains * n_draws
    counts = rng.multinomial(total, weights)
    picks = []
    for mode, count in enumerate(counts):
        pool = np.flatnonzero(np.repeat(chain_mode == mode, n_draws))
        picks.append(rng.choice(pool, size=count, replace=True))
    order = rng.permutation(np.concatenate(picks))
    out = {}
    for name, (dims, value) in draws.items():
        flat = np.asarray(value).reshape((total,) + np.shape(value)[2:])
        out[name] = (dims, flat[order][None])
    return out
