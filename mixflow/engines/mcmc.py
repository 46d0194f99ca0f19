"""The MCMC engine: NUTS on the one PyMC model, started at the EM estimate, aligned to its labelling.

The steps are those of :func:`fit_mcmc`, generic over families through the model's PyMC seam (see
:class:`mixflow.families.base.MixtureModel`): build the model (``model.pymc_model``), start every chain at
the reference estimate (EM/MAP, ``model.pymc_start``) plus a seeded jitter of about one posterior standard
deviation, run NUTS (nutpie's when installed, else PyMC's), align every draw to the reference labelling
(:mod:`mixflow.families.relabel` with ``model.label_signature``), then compute from the aligned draws the pointwise
log-likelihood (labels marginalised), the responsibilities (posterior mean and sd) and posterior
predictive draws (``model.simulate``), and the diagnostics (R-hat, bulk and tail ESS, divergences),
warning when they flag a problem.

The result is plain arrays with dims, in the shape :func:`mixflow.container.io.build_tree` takes.
"""

import importlib.util
import json
import logging
import sys
import time
import warnings
from functools import partial

import numpy as np
import pymc as pm
import xarray as xr
from pymc.backends.ndarray import NDArray
from pymc.initial_point import make_initial_point_fn

from mixflow.arguments import check_number
from mixflow.checks import (
    MemoryNeeded,
    check_count,
    check_flag,
    check_memory,
    check_problem,
    check_seed,
)
from mixflow.data import Data
from mixflow.engines.kept import MAX_VALUES, KeptCompiled
from mixflow.engines.mode_rule import chains_text
from mixflow.engines.modes import (
    ESS_PER_CHAIN_MIN,
    STARTS,
    alike_modes,
    check_starts,
    left_out_modes,
    mode_caveats,
    mode_groups,
    start_points,
)
from mixflow.engines.nutpie_compile import compile_nutpie
from mixflow.engines.over_draws import draw_groups, predictive_groups
from mixflow.engines.sampling_diagnostics import RHAT_MAX, diagnose, record_crossings
from mixflow.errors import InputError, SamplerInterrupted
from mixflow.families.pymc_parts import graph_inputs, structure_digest
from mixflow.families.relabel import align
from mixflow.parallel import available_cores, fork_context_ending_with_this_process, one_blas_thread
from mixflow.warnings import PACKAGE_FILES, SamplingWarning

__all__ = ["ADAPTATIONS", "EXTEND_DRAWS", "EXTEND_FACTOR", "EXTEND_FACTOR_MAX", "EXTEND_RHAT_AIM",
           "EXTEND_TARGET_ACCEPT", "RHAT_MAX", "SAMPLERS", "STARTS", "SamplingInterrupted", "check_options", "fit_mcmc",
           "resolve_sampler"]

SAMPLERS = ("auto", "nutpie", "pymc")
ADAPTATIONS = ("low_rank", "diag")
#: Progress the caller may want between the sampler's own displays (a second, longer run starting). A workflow's
#: console shows its records; a call with ``progressbar=True`` and no logging set up prints them to stderr.
_log = logging.getLogger("mixflow")
# LLVM's optimisation level for nutpie's C callbacks, thin wrappers of PyTensor's compiled kernels, compiled
# once per graph and cached on disk (mixflow.engines.nutpie_compile); 1 is the lowest that numba caches.
_NUTPIE_NUMBA_OPT = 1


#: ``extend``: the second run has, per chain, the first run's draws times what the unsettled mode needs (R-hat - 1
#: and 1 / ESS fall about as the inverse of the draws of chains that cross between places: (R-hat - 1) over
#: EXTEND_RHAT_AIM - 1, or twice the least ESS over the ESS reached), within EXTEND_FACTOR and EXTEND_FACTOR_MAX, and at
#: least EXTEND_DRAWS, at a target acceptance of at least EXTEND_TARGET_ACCEPT. The R-hat aimed at is below the
#: threshold (1.01): an R-hat of four chains is noisy, and a run sized to reach the threshold stays above it about
#: as often as not.
EXTEND_RHAT_AIM = 1.005
EXTEND_DRAWS = 4000
EXTEND_FACTOR = 4
EXTEND_FACTOR_MAX = 16
EXTEND_TARGET_ACCEPT = 0.95


def _unsettled(modes: dict, options: dict) -> tuple[str, float] | None:
    """The first mode that crossing chains left unsettled: why (for ``_extend_reason``), and the draws' factor.

    Unsettled is an R-hat above 1.01 or a bulk or tail ESS below 100 per chain within the mode (the diagnostics'
    thresholds): chains that cross rarely give both, and more draws settle both. A mode with a stuck chain among
    its chains is not sampled again for them: more draws do not free a stuck chain, which keeps the mode's R-hat
    high whatever the others do. The factor is what the first run's draws need to be multiplied by, by the
    inverse scaling (see EXTEND_RHAT_AIM's comment), before its bounds: for an R-hat of EXTEND_RHAT_AIM, for an
    ESS of twice the least (ESS too is noisy); infinite where the figure is not finite.

    ``modes`` is the modes group's variables (``chain_mode``, ``max_rhat``, ``min_ess_bulk``, ``min_ess_tail``,
    ``crosses``, and ``stuck`` where recorded) as ``(dims, array)``.
    """
    chain_mode, rhat, bulk, tail, crosses = (np.asarray(modes[name][1]) for name in
                                             ("chain_mode", "max_rhat", "min_ess_bulk", "min_ess_tail", "crosses"))
    stuck = np.asarray(modes["stuck"][1], bool) if "stuck" in modes else np.zeros(chain_mode.size, bool)
    for mode in range(rhat.size):
        crossing = np.flatnonzero(crosses & (chain_mode == mode))
        least = ESS_PER_CHAIN_MIN * np.sum(chain_mode == mode)
        if not crossing.size or stuck[chain_mode == mode].any():
            continue
        low = np.nanmin([bulk[mode], tail[mode]]) if np.isfinite([bulk[mode], tail[mode]]).any() else np.nan
        if rhat[mode] > RHAT_MAX:
            unsettled, factor = f"R-hat {rhat[mode]:.3f} within the mode", (rhat[mode] - 1) / (EXTEND_RHAT_AIM - 1)
        elif low < least:
            label = "bulk" if bulk[mode] == low else "tail"
            unsettled, factor = f"{label} ESS {low:.0f} within the mode, below {least}", 2 * least / max(low, 1.0)
        else:
            continue
        return (f"{chains_text('chains', crossing)} of mode {mode} crossed between places in the first run's "
                f"{options['draws']} draws per chain ({unsettled})", factor)
    return None


def _extend_reason(modes: dict, options: dict) -> str:
    """Why the run should be extended (``fit_mcmc``'s ``extend``), or ``""`` (:func:`_unsettled`)."""
    found = _unsettled(modes, options) if options["extend"] else None
    return "" if found is None else found[0]


def _least_extended_draws(options: dict) -> int:
    """The fewest draws per chain a second run has: EXTEND_FACTOR times the first run's, at least EXTEND_DRAWS."""
    return max(EXTEND_DRAWS, EXTEND_FACTOR * options["draws"])


def _extended_draws(modes: dict, options: dict) -> int:
    """The second run's draws per chain: the first run's times the unsettled mode's factor, within its bounds."""
    found = _unsettled(modes, options)
    if found is None:
        factor = EXTEND_FACTOR
    elif not np.isfinite(found[1]):
        factor = EXTEND_FACTOR_MAX
    else:  # rounded first: 0.06 / 0.005 is 12, not 13
        factor = min(max(EXTEND_FACTOR, int(np.ceil(round(found[1], 6)))), EXTEND_FACTOR_MAX)
    return max(_least_extended_draws(options), factor * options["draws"])


def resolve_sampler(sampler: str) -> str:
    """``"auto"`` -> ``"nutpie"`` when it is installed, else ``"pymc"``; check a forced choice.

    nutpie samples several times faster (Rust threads, no per-draw hand-off to a parent process, a low-rank
    mass matrix). mixflow's models hold the data and the data-scaled prior as inputs of the graph, so its
    compiled callbacks (:mod:`mixflow.engines.nutpie_compile`) serve every data set of a model's structure
    (family, covariance type, K, number of features): from disk in a new process, from memory for a refit
    in the same process (a choice of K, a bootstrap). Only a structure never compiled on the machine costs
    more with nutpie than with PyMC's sampler (``benchmarks/mcmc_ess.py``; the README gives the figures).
    """
    if sampler not in SAMPLERS:
        raise InputError(f"sampler: expected one of {list(SAMPLERS)}, got {sampler!r}")
    if sampler == "auto":
        return "nutpie" if importlib.util.find_spec("nutpie") is not None else "pymc"
    if sampler == "nutpie" and importlib.util.find_spec("nutpie") is None:
        raise ImportError("sampler: 'nutpie' was requested but nutpie is not installed; "
                          "pip install 'mixflow[nutpie]' or use sampler='pymc'")
    return sampler


def _check_arguments(model, data, reference, options: dict) -> dict:
    reference = check_problem(model, data, reference)
    check_options(options)
    replicate = round(data.total_weight) if data.weights is not None else data.n_obs
    per_draw = (sum(np.size(value) for value in reference.values()) + data.n_obs * (1 + model.n_components)
                + (replicate * data.n_features if options["posterior_predictive"] else 0))
    check_memory(options["chains"], options["draws"], per_draw, "the parameters, pointwise log-likelihood"
                 + (" and posterior predictive replicates" if options["posterior_predictive"] else ""))
    if options["posterior_predictive"]:  # a family that cannot replicate these data says so before sampling
        model.simulate(reference, data, np.random.default_rng(0))
    return reference


def check_options(options: dict) -> None:
    """Check the options of :func:`fit_mcmc` (a dict of all of them), normalising them in place.

    Used by the engine and, before anything is fitted, by the workflow files.
    """
    for name, minimum in (("draws", 1), ("tune", 0), ("chains", 1)):
        options[name] = check_count(name, options[name], minimum)
    if options["cores"] is not None:
        options["cores"] = check_count("cores", options["cores"], 1)
    options["random_seed"] = check_seed(options["random_seed"])
    target = options["target_accept"]
    check_number("target_accept", target, lambda v: 0 < v < 1, "a number in (0, 1)")
    if options["adaptation"] not in ADAPTATIONS:
        raise InputError(f"adaptation: expected one of {list(ADAPTATIONS)}, got {options['adaptation']!r}")
    jitter = options["jitter"]
    check_number("jitter", jitter, lambda v: np.isfinite(v) and v >= 0, "a non-negative number")
    for name in ("progressbar", "posterior_predictive", "extend"):
        check_flag(name, options[name])
    several = check_starts(options.setdefault("starts", "reference"))
    if several and options["sampler"] == "nutpie":
        raise InputError("starts: several starting points need sampler='pymc' (or 'auto'), got sampler='nutpie'; "
                         "nutpie draws each chain's start from a seed that does not say which chain it is")
    options["sampler"] = "pymc" if several and options["sampler"] == "auto" else resolve_sampler(options["sampler"])


def fit_mcmc(model, data: Data, reference: dict, *, draws: int = 1000, tune: int = 500, chains: int = 4,
             random_seed: int | None = None, sampler: str = "auto", progressbar: bool = True,
             cores: int | None = None, target_accept: float = 0.8, adaptation: str = "low_rank",
             jitter: float = 1.0, posterior_predictive: bool = True, starts="reference", extend: bool = True) -> dict:
    """Sample the posterior of ``model`` with NUTS and return the ``/mcmc`` groups as plain arrays.

    Parameters
    ----------
    model : MixtureModel
        The declaration (a family with a PyMC form); its prior is the one EM's MAP maximises.
    data : mixflow.data.Data
        Validated data (frequency weights count each row).
    reference : dict
        The EM (MAP or MLE) estimate, components in canonical order, e.g. ``weights`` (K,), ``mu`` (K, d),
        ``covariance`` or ``variance``. Chains start there and draws are aligned to its labelling.
    draws, tune, chains : int, default 1000, 500, 4
        Kept draws and tuning steps per chain, and the number of chains. Chains start at the posterior
        mode (the EM/MAP estimate), so tuning only has to adapt the step size and mass matrix: 500 steps,
        half PyMC's default and more than nutpie's 400.
    random_seed : int, optional
        Seeds the jitter of the starts, the sampler and the posterior predictive draws.
    sampler : {"auto", "nutpie", "pymc"}, default "auto"
        NUTS implementation: nutpie's ("auto" when installed: the faster one, see :func:`resolve_sampler`;
        several ``starts`` need PyMC's) or PyMC's.
    progressbar : bool, default True
        Show the sampler's progress (and PyMC's log messages).
    cores : int, optional
        Chains run in parallel (default: as many as the CPUs, at most ``chains``).
    target_accept : float, default 0.8
        NUTS target acceptance rate; raise it (0.95, then 0.99 if divergences remain) when there are divergences
        or a high R-hat, as the diagnostic warning advises.
    adaptation : {"low_rank", "diag"}, default "low_rank"
        nutpie's mass-matrix adaptation: diagonal plus a low-rank part that captures the correlations
        between weights, means and variances of overlapping components (about 1.4 times the ESS per
        draw on a 1-D three-component mixture, the same on Old Faithful), or diagonal only. PyMC's
        sampler always adapts a diagonal mass matrix.
    jitter : float, default 1.0
        Chains start at the reference plus normal noise with this many times ``1 / sqrt(min_k N_k)``
        as standard deviation in the standardised unconstrained space (about one posterior sd);
        0 starts every chain exactly at the reference.
    posterior_predictive : bool, default True
        Draw one replicate of the data per posterior draw (``model.simulate``): one row per frequency
        unit, so for weighted data the replicate has ``round(total weight)`` rows, on the dim ``unit``.
    starts : "reference" or list of dict, default "reference"
        Where the chains start (before the jitter): every chain at ``reference``, or chain ``c`` at
        ``starts[c % len(starts)]`` (parameters in data units, like ``reference``), e.g. the distinct
        local maxima EM's restarts found (:func:`mixflow.fit` with ``starts="em-optima"``), so that the
        chains look for the posterior's modes on purpose. Several starts run PyMC's sampler (nutpie
        draws every chain's start from a seed that does not say which chain it is).
    extend : bool, default True
        When some of a mode's chains cross between places themselves and leave it unsettled (R-hat above
        1.01, or a bulk or tail ESS below 100 per chain)
        (:mod:`mixflow.engines.mode_rule`, "Chains that cross"), sample again, once, with the draws per chain
        times what the mode needs ((R-hat - 1) / 0.005, aiming below the threshold since R-hat is noisy, or 200
        per chain over the ESS: both fall about as the inverse of the draws), from :data:`EXTEND_FACTOR` (4)
        to :data:`EXTEND_FACTOR_MAX` (16) times, at least :data:`EXTEND_DRAWS` (4000; four times the first run's
        where more would not fit in memory), at a ``target_accept`` of at least :data:`EXTEND_TARGET_ACCEPT`
        (0.95), and keep only that run (attribute
        ``extended`` says why; see "Chains that cross" below). False keeps the first run whatever its chains do.

    After the draws are aligned, the chains are grouped into modes (:mod:`mixflow.engines.modes` states
    the rule), summarised in the group ``modes`` and, when there are several, combined by their stacking
    weights in ``stacked/posterior``; the diagnostics are then computed within each mode.

    **Chains that cross.** Chains that move between two places (a small component that forms and
    dissolves) sample one posterior, but the share of their draws in each place is estimated from the few
    crossings they make, and no grouping of such chains has a small R-hat: only more crossings settle it.
    A step size too large for the narrow place also makes chains linger in it, each move rejected. Both
    are what ``extend`` answers, with more draws and smaller steps; the first run is dropped, since a
    different step size makes different chains, and its draws are not kept (the sampling is not repeated
    until the diagnostics pass: once, then the warning says what remains).

    Returns
    -------
    dict
        ``{"attrs": {...}, "coords": {"chain": ..., "draw": ...}, "groups": {name: {"variables":
        {var: (dims, array)}, "attrs": {...}}}}`` with groups ``posterior`` (the parameters of
        ``model.parameter_dims``, aligned), ``sample_stats`` (the sampler's), ``log_likelihood``
        (``x`` (chain, draw, obs): log p(x_n) of one copy of row n, labels summed out),
        ``posterior_predictive`` (``x`` (chain, draw, obs, feature), or (chain, draw, unit, feature) for
        weighted data; a regression's response alone, (chain, draw, obs)), ``responsibilities``
        (``responsibilities_mean`` and ``responsibilities_sd`` (obs, component)), ``modes`` (see
        :func:`mixflow.engines.modes.mode_summaries`) and, with several modes, ``stacked/posterior``
        (chain 1, draw ``chains * draws``: the draws resampled by the modes' stacking weights).
    """
    options = {"draws": draws, "tune": tune, "chains": chains, "random_seed": random_seed, "sampler": sampler,
               "progressbar": progressbar, "cores": cores, "target_accept": target_accept,
               "adaptation": adaptation, "jitter": jitter, "posterior_predictive": posterior_predictive,
               "starts": starts, "extend": extend}
    reference = _check_arguments(model, data, reference, options)
    return _run(model, data, reference, options)


def _run(model, data: Data, reference: dict, options: dict) -> dict:
    """:func:`fit_mcmc` on checked arguments, with a second, longer run where ``extend`` calls for one."""
    timings, clock = {}, _Clock()
    points = start_points(model, data, reference, options["starts"])
    prior = model.resolve_prior(model.prepare(data))
    pymc_model = model.pymc_model(data, prior)
    # spawn's children depend on their index only, so the fourth (resampling by mode) leaves the others as they were
    jitter_seed, sampler_seed, predictive_seed, stacking_seed = np.random.SeedSequence(options["random_seed"]).spawn(4)
    start = [_transformed_point(pymc_model, model.pymc_start(data, point)) for point in points]
    jitter_sd = options["jitter"] / np.sqrt(max(1.0, float(reference["weights"].min() * data.total_weight)))
    run = _sample_nutpie if options["sampler"] == "nutpie" else _sample_pymc
    options["traced"] = list(model.parameter_dims(data.features))  # what the PyMC sampler's trace keeps
    timings["build"] = clock.lap()
    began = time.perf_counter()
    idata = run(pymc_model, start, jitter_sd, jitter_seed, int(sampler_seed.generate_state(1)[0] % 2**31), options,
                timings)
    elapsed = time.perf_counter() - began
    clock.lap()
    draws = {name: (idata["posterior"][name].dims, idata["posterior"][name].values)
             for name in model.parameter_dims(data.features)}
    signature = model.label_signature(data)
    aligned, permutations = align(draws, reference, signature)
    draw_values = {name: value for name, (_, value) in aligned.items()}
    timings["align"] = clock.lap()
    groups = {
        "posterior": {"variables": aligned, "attrs": _clean_attrs(idata["posterior"].attrs)},
        "sample_stats": {"variables": _plain_variables(idata["sample_stats"].to_dataset()),
                         "attrs": _clean_attrs(idata["sample_stats"].attrs)},
        # the posterior predictive once this run is known to be kept (below): a second run would replace it
        **draw_groups(model, data, draw_values, False, None, timings),
    }
    clock.lap()
    found, chain_mode = mode_groups(model, data, aligned, groups["log_likelihood"]["variables"]["x"][1], reference,
                                    np.random.default_rng(stacking_seed),
                                    "MCMC draws of every mode resampled by the modes' stacking weights")
    groups.update(found)
    record_crossings(groups["modes"], aligned)
    timings["modes"] = clock.lap()
    modes = groups["modes"]["variables"]
    reason = _extend_reason(modes, options)
    if reason:
        longer = {**options, "extend": False, "target_accept": max(EXTEND_TARGET_ACCEPT, options["target_accept"])}
        least = _least_extended_draws(options)
        try:
            # the draws the mode needs or, where they would not fit in memory, the least a second run has
            for draws in dict.fromkeys([_extended_draws(modes, options), least]):
                settings = f"{draws} draws per chain at target_accept {longer['target_accept']:g}"
                longer.update(draws=draws, second_run=f"{settings}; the first run's chains crossed between places")
                try:
                    checked = _check_arguments(model, data, reference, longer)  # room for the draws first, then said
                    break
                except MemoryNeeded:
                    if draws == least:
                        raise
            _announce(f"NUTS: {reason}; sampling again with {settings}", options)
            result = _run(model, data, checked, longer)
        except MemoryNeeded as error:  # the first run stands, and the warning says why it was not extended
            warnings.warn(f"MCMC: {reason}; not sampled again with more draws: {error}", SamplingWarning,
                          skip_file_prefixes=PACKAGE_FILES)
        else:
            # the first run's seconds among the timings, not in the text: a rerun's text is the same
            result["attrs"]["extended"] = (f"{reason}: sampled again with {settings}; the first run's time is "
                                           "not in wall_time (timings' first_run)")
            result["attrs"]["timings"] = json.dumps({**json.loads(result["attrs"]["timings"]),
                                                     "first_run": float(elapsed)})
            return result
    if options["posterior_predictive"]:
        groups.update(predictive_groups(model, data, draw_values, np.random.default_rng(predictive_seed), timings))
    coords_extra = {"mode": np.arange(modes["weight"][1].size)}
    diagnostics = diagnose(aligned, idata["posterior"].to_dataset(), groups["sample_stats"]["variables"],
                           {**options, "n_components": model.n_components},
                           chain_mode, modes["weight"][1], modes["crosses"][1], modes["max_rhat"][1],
                           mode_caveats(values := {name: value for name, (_, value) in modes.items()}),
                           left_out_modes(values), alike_modes(values), modes["stuck"][1], modes["moves"][1])
    timings["diagnostics"] = clock.lap()
    relabelled = np.any(permutations != np.arange(model.n_components), axis=-1)
    attrs = {
        "method": "nuts", "sampler": options["sampler"], "draws": options["draws"], "tune": options["tune"],
        "chains": options["chains"], "random_seed": int(options["random_seed"]),
        "target_accept": float(options["target_accept"]), "jitter": float(options["jitter"]),
        "adaptation": options["adaptation"] if options["sampler"] == "nutpie" else "diag",
        "starts": "reference" if isinstance(options["starts"], str) else f"{len(points)} given points",
        "n_relabelled_draws": int(relabelled.sum()),
        "relabelled_draws_per_chain": json.dumps(relabelled.sum(axis=1).tolist()),
        "relabel_cost": signature.description,
        "log_likelihood": "pointwise log p(x_n) of one copy of each row (frequency weights not applied)",
        "wall_time": float(elapsed),  # compilation and sampling
        "timings": json.dumps(timings),  # seconds per phase, by the keys set above and in the samplers
        "prior": json.dumps(prior.to_dict()),
        "n_modes": int(modes["weight"][1].size),
        "extended": "",  # why the first run was dropped for a longer one (fit_mcmc's extend), if it was
        **diagnostics,
    }
    coords = {dim: idata["posterior"][dim].values for dim in ("chain", "draw")}
    coords.update(coords_extra)
    coords.update(_extra_coords(idata["sample_stats"].to_dataset()))
    return {"attrs": attrs, "coords": coords, "groups": groups}


def _announce(message: str, options: dict) -> None:
    """Log ``message`` at INFO on the ``mixflow`` logger; with the progress bar on and nothing to show it, print it."""
    _log.info(message)
    if options["progressbar"] and not (_log.isEnabledFor(logging.INFO) and _log.hasHandlers()):
        print(message, file=sys.stderr, flush=True)


# -- where the time goes -----------------------------------------------------------------------------------
class _Clock:
    """Wall-clock laps: ``lap()`` returns the seconds since the previous lap (or since it was made)."""

    def __init__(self):
        self._last = time.perf_counter()

    def lap(self) -> float:
        now = time.perf_counter()
        elapsed, self._last = now - self._last, now
        return elapsed


def _kept_draws_time(sample_stats, name: str) -> float | None:
    """Seconds the slowest chain spent on its kept draws, from the sampler's per-draw timings (if it keeps any)."""
    if name not in sample_stats:
        return None
    per_draw = np.asarray(sample_stats[name].values, dtype=float)
    return float(np.nansum(per_draw, axis=-1).max())


# -- starting points and the two samplers ------------------------------------------------------------------
def _transformed_point(pymc_model: pm.Model, values: dict) -> dict:
    """The free variables' values on the sampler's (unconstrained) scale, keyed by value-variable name."""
    point = make_initial_point_fn(model=pymc_model, overrides=values, jitter_rvs=set(),
                                  return_transformed=True)(0)
    return {name: np.asarray(value, dtype=float) for name, value in point.items()}


def _sample_nutpie(pymc_model, start: list, jitter_sd, jitter_seed, seed, options, timings: dict | None = None):
    import nutpie

    timings = {} if timings is None else timings  # where the caller keeps the phases' times

    names = [pymc_model.rvs_to_values[rv].name for rv in pymc_model.free_RVs]
    base = np.concatenate([start[0][name].ravel() for name in names])  # one start (check_options)
    key = [int(word) for word in jitter_seed.generate_state(4)]

    def initial_point(chain_seed):
        rng = np.random.default_rng([*key, int(chain_seed) % 2**64])
        return base + jitter_sd * rng.standard_normal(base.size)

    began = time.perf_counter()
    compiled = compile_nutpie(pymc_model, initial_point, var_names=options.get("traced"), numba_opt=_NUTPIE_NUMBA_OPT)
    timings["compile"] = time.perf_counter() - began
    began = time.perf_counter()
    with one_blas_thread():  # see _sample_pymc
        running = nutpie.sample(compiled, draws=options["draws"], tune=max(options["tune"], 1),
                                chains=options["chains"], cores=options["cores"], seed=seed, save_warmup=False,
                                progress_bar=options["progressbar"], target_accept=options["target_accept"],
                                adaptation=options["adaptation"], blocking=False)
        # nutpie's blocking call swallows Ctrl-C and returns NaN-padded draws; waiting here, an interrupt
        # stops the chains and reaches the caller as an interrupt.
        try:
            idata = running.wait()
        except KeyboardInterrupt:
            running.cancel()
            raise SamplingInterrupted("MCMC interrupted: the sampler was stopped, no draws were kept") from None
    _check_complete(idata, options)
    timings["tune_and_draw"] = time.perf_counter() - began
    idata["posterior"].attrs.update(sampling_time=timings["tune_and_draw"], tuning_steps=options["tune"])
    return idata


def _sample_pymc(pymc_model, start: list, jitter_sd, jitter_seed, seed, options, timings: dict | None = None):
    timings = {} if timings is None else timings  # where the caller keeps the phases' times
    rng = np.random.default_rng(jitter_seed)
    initvals = [{name: value + jitter_sd * rng.standard_normal(value.shape)
                 for name, value in start[chain % len(start)].items()} for chain in range(options["chains"])]
    cores = options["cores"] if options["cores"] is not None else min(options["chains"], available_cores())
    # One BLAS thread per chain, wherever the chain runs, because the BLAS thread count changes the rounding
    # of products, hence the draws. one_blas_thread covers chains run in this process (cores=1) and forked
    # chains, which inherit the limit: on Linux chains are forked (Python 3.14 would start them from a
    # forkserver, where scipy's BLAS, loaded while PyMC unpickles the chain, escapes PyMC's own limit).
    # Elsewhere blas_cores=cores makes PyMC limit each chain process to blas_cores // cores = 1 thread.
    with one_blas_thread(), warnings.catch_warnings():
        # forking the chains is deliberate (above); Python's note that threads exist in this process is noise
        warnings.filterwarnings("ignore", message=r"This process .* is multi-threaded, use of fork\(\)",
                                category=DeprecationWarning)
        began = time.perf_counter()
        logp_dlogp, keep = _logp_dlogp(pymc_model)
        initvals, step = _nuts_compiled_here(pymc_model, initvals, seed, options, logp_dlogp)  # chains here or forked
        compiled = time.perf_counter()
        idata = pm.sample(draws=options["draws"], tune=options["tune"], chains=options["chains"], cores=cores,
                         random_seed=seed, initvals=initvals, nuts_sampler="pymc", **step,
                         progressbar=options["progressbar"], quiet=not options["progressbar"], blas_cores=cores,
                          mp_ctx=_chain_start(), compute_convergence_checks=False, model=pymc_model)
        keep()
    _check_complete(idata, options)  # PyMC returns the draws made so far when interrupted
    timings.update(compile=compiled - began, tune_and_draw=time.perf_counter() - compiled)
    draws_time = _kept_draws_time(idata["sample_stats"], "perf_counter_diff")
    if draws_time is not None:
        timings["draws"] = draws_time
    return idata


def _chain_start():
    """PyMC's ``mp_ctx``: on Linux a fork whose chains end with this process however it ends (SIGKILL too).

    Forked chains hold this process's ends of their pipes, so once it is killed outright they would wait
    forever for its next message; they watch it as mixflow's own workers do. Elsewhere PyMC's default.
    """
    return fork_context_ending_with_this_process() if sys.platform.startswith("linux") else None


#: The log densities and gradients PyMC's NUTS ran on in the last few fits, with the graph inputs they were compiled
#: with, by :func:`_logp_dlogp_key` (:mod:`mixflow.engines.kept`)
_LOGP_DLOGP = KeptCompiled()


def _logp_dlogp(pymc_model) -> tuple:
    """The model's ``logp_dlogp_function(ravel_inputs=True)``, and a function that keeps it once the fit is done.

    The one of the last fit of a model of the same structure (:func:`_logp_dlogp_key`), refilled with this model's
    graph inputs, where there is one: it computes the same numbers as this model's own.
    """
    key, inputs = _logp_dlogp_key(pymc_model)
    kept = _LOGP_DLOGP.take(key)
    if kept is None:
        function = pymc_model.logp_dlogp_function(ravel_inputs=True)
    else:
        function, inputs_compiled = kept
        for name, variable in inputs_compiled.items():
            variable.set_value(inputs[name].get_value(borrow=True))
        inputs = inputs_compiled
    return function, partial(_LOGP_DLOGP.keep, key, (function, inputs))


def _logp_dlogp_key(pymc_model) -> tuple[str | None, dict | None]:
    """A digest of the structure of the model's log density, and its graph inputs by name; None for neither.

    The digest is :func:`~mixflow.families.pymc_parts.structure_digest`'s, the inputs
    :func:`~mixflow.families.pymc_parts.graph_inputs`'. None for a model whose inputs cannot be carried over by
    name or hold more than :data:`~mixflow.engines.kept.MAX_VALUES` values.
    """
    outputs = [pymc_model.logp()]
    inputs = graph_inputs(outputs)
    if inputs is None or sum(variable.get_value(borrow=True).size for variable in inputs.values()) > MAX_VALUES:
        return None, None
    return structure_digest(pymc_model, outputs).hexdigest(), inputs


def _nuts_compiled_here(pymc_model, initvals: list, seed: int, options: dict, logp_dlogp) -> tuple[list, dict]:
    """``pm.sample``'s own NUTS set-up, with the log-density and gradient compiled here before the chains start.

    PyTensor compiles the graph with numba, caching kernels on disk, and the code that runs can depend on
    what the cache held and what the process had compiled before: the same graph gave draws that differ
    from the 9th digit on. PyMC's forked chain processes each compiled the graph on their first step, so
    two same-seed fits could run different code (with an empty cache the second fit's chains loaded what
    the first fit's had written) and differ. Compiled here, every chain process forked from this one runs
    the same compiled code. The seeds are ``pm.sample``'s (one generator per chain spawned from ``seed``),
    and chains run in this process (``cores=1``) get the same set-up, so they make the same draws.

    The step is the one ``pm.init_nuts(init="adapt_diag")`` makes (the same potential, seeds and start
    points, so the same draws), built without it: ``init_nuts`` compiles an initial-point function per
    chain to return the starts it is given, which are already complete points on the sampler's scale.
    The trace records the parameters only, through one compiled function shared by the chains
    (``pm.sample`` otherwise compiles the model's every variable once per chain).

    ``logp_dlogp`` is the model's ``logp_dlogp_function(ravel_inputs=True)``, or that of a model of the same
    structure refilled with this model's graph inputs (:data:`_LOGP_DLOGP`), which makes the same numbers.

    Returns the chains' starting points and the keyword arguments ``step`` and ``trace`` for ``pm.sample``.
    """
    from pymc.blocking import DictToArrayBijection
    from pymc.step_methods.hmc import quadpotential

    seeds = [int(rng.integers(2**30)) for rng in np.random.default_rng(seed).spawn(options["chains"])]
    names = [var.name for var in pymc_model.value_vars]
    starts = [{name: np.asarray(point[name], dtype=float) for name in names} for point in initvals]
    logp_dlogp.trust_input = True
    arrays = [DictToArrayBijection.map(point).data for point in starts]
    mean = np.mean(arrays, axis=0)
    potential = quadpotential.QuadPotentialDiagAdapt(mean.size, mean, np.ones_like(mean), 10, rng=seeds[0])
    step = pm.NUTS(potential=potential, model=pymc_model, rng=seeds[0], initial_point=starts[0],
                   logp_dlogp_func=logp_dlogp, target_accept=options["target_accept"])
    step._logp_dlogp_func(arrays[0])  # the step's own function (PyMC compiles on the first call, in the chains)
    return starts, {"step": step, "trace": _chain_trace(pymc_model, starts[0], options.get("traced"))}


class _ChainTrace(NDArray):
    """An in-memory trace whose per-chain copies share one compiled function.

    ``pm.sample`` copies the trace it is given once per chain; the copies share the function that computes
    the traced variables, and nothing else (a plain copy would also share the dict its draws go into).
    """

    def __copy__(self):
        twin = object.__new__(type(self))
        twin.__dict__.update(self.__dict__)
        twin.samples, twin._stats = {}, None
        return twin


def _chain_trace(pymc_model, start: dict, names) -> _ChainTrace:
    """The trace of the variables ``names`` (all the model's unobserved variables when None)."""
    variables = None if names is None else pymc_model.replace_rvs_by_values([pymc_model[name] for name in names])
    return _ChainTrace(model=pymc_model, vars=variables, test_point=start)


SamplingInterrupted = SamplerInterrupted  # the sampler was stopped (Ctrl-C) and its partial draws dropped


def _check_complete(idata, options: dict) -> None:
    """Raise :class:`SamplingInterrupted` unless every chain holds all its draws.

    A sampler that swallowed an interrupt (PyMC's) returns the draws made so far.
    """
    posterior = idata["posterior"]
    if (posterior.sizes.get("chain"), posterior.sizes.get("draw")) != (options["chains"], options["draws"]):
        raise SamplingInterrupted("MCMC interrupted: the sampler stopped before all draws were made; none were kept")


# -- what is computed from the aligned draws ---------------------------------------------------------------
# -- the sampler's output as plain, saveable arrays --------------------------------------------------------
def _plain_variables(dataset: xr.Dataset) -> dict:
    """Variables as ``(dims, array)``; object arrays (e.g. nutpie's divergence messages) become strings."""
    out = {}
    for name, variable in dataset.data_vars.items():
        values = variable.values
        if values.dtype == object:
            values = np.array(["" if v is None else str(v) for v in values.ravel()]).reshape(values.shape)
        out[name] = (variable.dims, values)
    return out


def _extra_coords(dataset: xr.Dataset) -> dict:
    return {dim: dataset[dim].values for dim in dataset.dims if dim not in ("chain", "draw") and dim in dataset.coords}


def _clean_attrs(attrs: dict) -> dict:
    """Attributes NetCDF stores with their types: numbers, strings, lists of strings; others as JSON.

    ``sample_dims`` stays a list, as ArviZ reads it.
    """
    out = {}
    for key, value in attrs.items():
        if isinstance(value, str | int | float | np.integer | np.floating):
            out[key] = value
        elif isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value):
            out[key] = list(value)
        else:
            out[key] = json.dumps(value, default=str)
    return out
