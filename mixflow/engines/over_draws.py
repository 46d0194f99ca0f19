"""What every posterior draw implies for every observation: responsibilities and pointwise log-likelihoods.

Shared by the MCMC and ADVI engines. The per-component log densities come from the family
(``model.log_density``, a block of draws' components side by side where the family allows it, else one
draw at a time, over chunks of rows, so the family's per-row features never exist for all rows at once);
the mixing, normalisation and sums over draws run on a block of draws at once, laid out (draw, component,
observation) so that the reductions over components run along contiguous rows. Memory: the (n_obs, K) sums
and one block of at least one draw, (draws, K, n_obs).
"""

import time

import numpy as np

from mixflow.data import Data
from mixflow.engines.em_steps import chunk_rows
from mixflow.errors import InputError

__all__ = ["draw_groups", "responsibilities_over_draws"]

_BLOCK_FLOATS = 2**20  # entries of a (draws, component, obs) block of log densities: 8 MB


def responsibilities_over_draws(model, data: Data, draws: dict, *, log_likelihood: bool = False,
                                prepared=None) -> dict:
    """Mean and sd over draws of each observation's responsibilities, and optionally log p(x_n | draw).

    Parameters
    ----------
    model : MixtureModel
    data : mixflow.data.Data
    draws : dict
        ``{name: array of shape (n_draws, ...)}``, e.g. ``weights`` (n_draws, K).
    log_likelihood : bool, default False
        Also return the (n_draws, n_obs) pointwise log-likelihoods.
    prepared : Prepared, optional
        ``data`` prepared (new rows, in the fit's working units); ``model.prepare_to_score(data)`` by default.

    Returns
    -------
    dict
        ``mean`` and ``sd`` of shape (n_obs, K) (the sd with the ``n_draws - 1`` denominator, 0 for one
        draw), and ``log_likelihood`` when asked for.
    """
    prepared = model.prepare_to_score(data) if prepared is None else prepared
    count = draws["weights"].shape[0]
    n, k = data.n_obs, model.n_components
    rows = chunk_rows(n, model.chunk_width(data.n_features))
    pointwise = np.empty((count, n)) if log_likelihood else None
    total, total_squares = np.zeros((k, n)), np.zeros((k, n))
    block = max(1, _BLOCK_FLOATS // (n * k))
    shift = None
    for first in range(0, count, block):
        stop = min(first + block, count)
        try:
            log_joint = _log_densities(model, prepared, {name: value[first:stop] for name, value in draws.items()},
                                       rows)
        except InputError as error:  # a draw's own parameters, not the data: a sampler's draw of a collapsing component
            raise InputError(f"draws: a draw among {first}-{stop - 1} (over chains) cannot be evaluated: {error}; a "
                             "sampler that reached a component collapsing onto a few rows draws such parameters: "
                             "fewer components or a stronger prior keep it away") from None
        with np.errstate(divide="ignore"):
            log_joint += np.log(draws["weights"][first:stop])[:, :, None]
        peak = log_joint.max(axis=1, keepdims=True)
        with np.errstate(invalid="ignore"):  # a row no component reaches gets NaN, for the caller to name
            log_joint -= peak
        np.exp(log_joint, out=log_joint)
        density = log_joint.sum(axis=1, keepdims=True)
        log_joint /= density  # now the responsibilities
        if log_likelihood:
            pointwise[first:stop] = (peak + np.log(density))[:, 0, :]
        if shift is None:
            shift = log_joint[0].copy()
        log_joint -= shift  # sums about the first draw, so an sd far below the mean keeps its digits
        total += log_joint.sum(axis=0)
        total_squares += np.einsum("skn,skn->kn", log_joint, log_joint)
    offset = total.T / count
    mean = shift.T + offset
    sd = np.sqrt(np.maximum(total_squares.T / count - offset**2, 0.0) * count / max(count - 1, 1))
    out = {"mean": mean, "sd": sd}
    if log_likelihood:
        out["log_likelihood"] = pointwise
    return out


def _log_densities(model, prepared, block: dict, rows: int) -> np.ndarray:
    """Per-component log densities of every row under each draw of ``block``, shape (draws, K, n_obs).

    For a family whose steps treat each component alone
    (:meth:`~mixflow.families.base.MixtureModel.stacks_components`), the draws' components side by side in
    one evaluation per chunk; else, or when a draw's parameters cannot be used (the family's error then
    names its component), one draw at a time.
    """
    count, k = block["weights"].shape
    n = prepared.n_obs
    if model.stacks_components():
        stacked = {name: value.reshape((count * k,) + value.shape[2:]) for name, value in block.items()}
        try:
            constants = model.e_step_constants(model.to_working(stacked, prepared), prepared)
        except InputError:
            pass  # one draw at a time below, for the error naming the draw's own component
        else:
            out = np.empty((count, k, n))
            for start in range(0, n, rows):
                side_by_side = model.log_density(constants, prepared.rows(start, start + rows))[0]
                out[:, :, start:start + rows] = side_by_side.reshape(-1, count, k).transpose(1, 2, 0)
            return out
    out = np.empty((count, k, n))
    for i in range(count):
        constants = model.e_step_constants(model.to_working({name: value[i] for name, value in block.items()},
                                                            prepared), prepared)
        for start in range(0, n, rows):
            out[i, :, start:start + rows] = model.log_density(constants, prepared.rows(start, start + rows))[0].T
    return out


def _observed_like_predictive(model, data: Data) -> dict:
    """The observed counterpart of the posterior predictive variable, for ArviZ's predictive checks.

    Rows as they are (``obs``), each frequency unit as a row (``unit``) for weighted data, a regression's response
    alone, or the observed class counts (grouped data), under the predictive variable's name and dims.
    """
    name, dims = model.predictive_variable(data)
    if name != "x":
        return {name: (dims, _as_counts(data.frequency, data))}
    if "feature" not in dims:  # one column: a regression's response (its predictive units)
        units, _ = model.predictive_units(data)
        values = units.values[:, 0] if dims[0] == "unit" else data.values[:, _column(data, units)]
    else:
        values = data.values[data.rounded_units()] if dims[0] == "unit" else data.values
    return {name: (dims, values.astype(model.predictive_dtype))}


def _as_counts(values: np.ndarray, data: Data) -> np.ndarray:
    """Class counts (observed or replicated) as whole numbers where the observed ones are whole.

    ArviZ's predictive checks then read them as discrete (a rootogram); fractional frequency weights stay as they are.
    """
    observed = np.asarray(data.frequency, dtype=float)
    whole = bool(np.all(observed == np.round(observed)))
    return np.asarray(values).astype(np.int64) if whole else np.asarray(values, dtype=float)


def _column(data: Data, units) -> int:
    return [str(f) for f in data.features].index(str(units["feature"].values[0]))


def draw_groups(model, data: Data, draws: dict, predictive: bool, rng: np.random.Generator,
                timings: dict | None = None) -> dict:
    """The groups every set of posterior draws implies, as ``{group: {"variables": ..., "attrs": ...}}``.

    ``log_likelihood`` (log p(x_n) per draw, the labels marginalised), ``responsibilities`` (mean and sd
    over draws), and with ``predictive`` a ``posterior_predictive`` replicate of the data per draw
    (``model.simulate_draws``) beside its ``observed_data`` counterpart, so that ArviZ finds both in the
    method's subtree.

    Parameters
    ----------
    draws : dict
        ``{name: array of shape (n_chains, n_draws, ...)}``, aligned to the reference labelling.
    timings : dict, optional
        Receives the seconds spent on ``log_likelihood_responsibilities`` and ``posterior_predictive``.
    """
    began = time.perf_counter()
    n_chains, n_draws = draws["weights"].shape[:2]
    count = n_chains * n_draws
    flat = {name: value.reshape((count,) + value.shape[2:]) for name, value in draws.items()}
    spread = responsibilities_over_draws(model, data, flat, log_likelihood=True)
    groups = {
        "log_likelihood": {"variables": {"x": (("chain", "draw", "obs"),
                                               spread["log_likelihood"].reshape(n_chains, n_draws, data.n_obs))},
                           "attrs": {"x": "pointwise log p(x_n) of one copy of each row (frequency weights not "
                                          "applied), the labels marginalised"}},
        "responsibilities": {"variables": {"responsibilities_mean": (("obs", "component"), spread["mean"]),
                                           "responsibilities_sd": (("obs", "component"), spread["sd"])}},
    }
    if timings is not None:  # every phase named, one not run at zero
        timings.update(log_likelihood_responsibilities=time.perf_counter() - began, posterior_predictive=0.0)
    if predictive:
        groups.update(predictive_groups(model, data, draws, rng, timings))
    return groups


def predictive_groups(model, data: Data, draws: dict, rng: np.random.Generator, timings: dict | None = None) -> dict:
    """``posterior_predictive`` (a replicate of the data per draw, ``model.simulate_draws``) and its ``observed_data``.

    ``draws`` as for :func:`draw_groups`; ``timings`` receives the seconds spent as ``posterior_predictive``.
    """
    began = time.perf_counter()
    n_chains, n_draws = draws["weights"].shape[:2]
    count = n_chains * n_draws
    flat = {name: value.reshape((count,) + value.shape[2:]) for name, value in draws.items()}
    stacked = model.simulate_draws(flat, data, rng)
    name, dims = model.predictive_variable(data)
    stacked = stacked.astype(model.predictive_dtype) if name == "x" else _as_counts(stacked, data)
    groups = {
        "posterior_predictive": {
            "variables": {name: (("chain", "draw", *dims), stacked.reshape(n_chains, n_draws, *stacked.shape[1:]))},
            "attrs": {name: "one replicate of the data per draw (model.simulate_draws)" + (
                "; one row per frequency unit of the weighted data" if "unit" in dims else "")}},
        "observed_data": {"variables": _observed_like_predictive(model, data)},
    }
    if timings is not None:
        timings["posterior_predictive"] = time.perf_counter() - began
    return groups
