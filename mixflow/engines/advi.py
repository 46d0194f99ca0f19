"""The ADVI engine: ``pm.fit`` on the one PyMC model, started at the EM/MAP estimate, stopped when it settles.

The steps are those of :func:`fit_advi`:

1. build the model (``model.pymc_model``, the family's PyMC form, see
   :class:`mixflow.families.base.MixtureModel`), with minibatches scaled to the full data when
   ``minibatch_size`` is given;
2. start the approximation q at the reference estimate: its mean is the free values of the EM/MAP
   solution (``model.pymc_start``) and its standard deviation ``1 / sqrt(N)`` in every
   (standardised, unconstrained) direction, the order of a posterior sd, so that PyMC's default start
   (symmetric components, sd 0.69) and its slow way out are avoided;
3. run ``pm.fit`` with Adam (a full-rank q's off-diagonal factor entries at a step scaled down by their row's
   count, :func:`factor_step_scale`), the ELBO recorded at every iteration, under :class:`SettleCheck`: every
   ``check_every`` iterations the window average of q's parameters is compared with the previous one,
   in units of q's own sd; while a mean or scale of q still went one way over the last windows (a drift),
   the step stays; otherwise the fit stops when nothing moved by more than ``settle_tol`` sd, and the
   learning rate is halved when more moved (the iterates wander by noise about the optimum);
   q's parameters are finally set to their average over the last window (Polyak-Ruppert averaging);
4. a NaN or infinite ELBO or parameter stops the fit with :class:`ADVIDivergenceError`, and so does an ELBO
   fallen far below where it started (:func:`_fallen`: q has left the posterior, though its parameters may
   barely move in units of its own sd);
5. ``draws`` draws from q, aligned to the reference labelling (:mod:`mixflow.families.relabel` with
   ``model.label_signature``), and the
   responsibilities of every observation (mean and sd over the draws);
6. with several starting points (``starts``, e.g. EM's distinct optima), steps 2 to 5 once from each, every
   fit's draws a chain, and the fits grouped into modes and stacked as NUTS chains are
   (:func:`mixflow.engines.modes.mode_groups`).

Every random choice (the gradient noise, the minibatches, the draws) comes from ``random_seed``: the
same seed gives the same numbers, bit for bit.
"""

import json
import logging
import os
import time
import traceback
import warnings

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
from pymc.pytensorf import reseed_rngs
from pymc.util import get_untransformed_name, is_transformed_name
from pymc.variational.callbacks import Callback
from pymc.variational.inference import State
from pymc.variational.updates import adam

from mixflow.checks import (
    check_count,
    check_flag,
    check_memory,
    check_minibatch,
    check_positive,
    check_problem,
    check_seed,
)
from mixflow.data import Data
from mixflow.engines.advi_step import compile_step
from mixflow.engines.kept import MAX_VALUES, KeptCompiled
from mixflow.engines.modes import check_starts, describe_group, mode_caveats, mode_groups, start_points
from mixflow.engines.over_draws import draw_groups
from mixflow.errors import InputError, SamplerInterrupted, noting_interrupts, stop_if_terminated
from mixflow.families.pymc_parts import graph_inputs, parameter_of, structure_digest
from mixflow.families.relabel import align
from mixflow.warnings import PACKAGE_FILES, ADVIDivergenceError, ConvergenceWarning, SamplingWarning

__all__ = ["VARIANTS", "ADVIDivergenceError", "SettleCheck", "check_options", "factor_step_scale", "fit_advi",
           "q_moments"]

VARIANTS = {"meanfield": pm.ADVI, "fullrank": pm.FullRankADVI}
_LEARNING_RATE_FLOOR = 2.0**-20  # relative to the starting learning rate: at most 20 halvings
_MIN_CHECK_EVERY = 10
#: Window-to-window moves the drift test of SettleCheck reads: the last this many. Adam's iterates wander with an
#: autocorrelation of a few windows, and among a hundred parameters one goes one way over six windows by chance in
#: most checks (a model of 134 never settled); over twelve, noise about the optimum goes back and forth, and a drift
#: that lasts less (a scale shrinking at the first step) is over before the first check that could cut the step
_DRIFT_STEPS = 12
#: A parameter drifts when its net move over those steps is at least this share of their summed lengths (one way)
_DRIFT_SHARE = 0.9


def _drifting(steps: list, tol: float) -> bool:
    """Whether a raw parameter of q still drifts over the moves of its window averages ``steps`` (oldest first).

    ``steps`` are :func:`_scaled_step`'s, in units of q's sd. A parameter drifts when its moves went one way,
    their net at least :data:`_DRIFT_SHARE` of their summed lengths, by at least half ``tol`` in all: window
    averages that wander about a fixed point go back and forth, and their net move is a fraction of their path;
    a drift's moves add up.
    """
    moves = np.array(steps)
    net, path = np.abs(moves.sum(axis=0)), np.abs(moves).sum(axis=0)
    return bool(np.any((net >= _DRIFT_SHARE * path) & (net >= 0.5 * tol)))


# -- the variational parameters as numbers ---------------------------------------------------------------
def _softplus(rho: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, rho)


def _softplus_inverse(sigma: float) -> float:
    return float(np.log(np.expm1(sigma)))


def q_moments(variant: str, values: dict) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale factor of q from its raw parameters (PyMC's parameterisation).

    Parameters
    ----------
    variant : {"meanfield", "fullrank"}
    values : dict of str to ndarray
        ``mu`` (D,) and ``rho`` (D,) for "meanfield" (sd = softplus(rho)); ``mu`` (D,) and ``L_tril``
        (D(D+1)/2,) for "fullrank" (lower-triangular factor, row by row, softplus on its diagonal).

    Returns
    -------
    mean : ndarray of shape (D,)
    factor : ndarray of shape (D, D)
        Lower-triangular L with q's covariance L L^T (diagonal for "meanfield").
    """
    mean = values["mu"]
    if variant == "meanfield":
        return mean, np.diag(_softplus(values["rho"]))
    size = mean.size
    factor = np.zeros((size, size))
    factor[np.tril_indices(size)] = values["L_tril"]
    factor[np.diag_indices(size)] = _softplus(np.diag(factor))
    return mean, factor


def get_parameters(approx) -> dict:
    """Copies of q's raw parameters by name (``mu`` and ``rho`` or ``L_tril``)."""
    return {name: param.get_value().copy() for name, param in approx.groups[0].params_dict.items()}


def set_parameters(approx, values: dict) -> None:
    """Set q's raw parameters by name."""
    for name, param in approx.groups[0].params_dict.items():
        param.set_value(np.asarray(values[name], dtype=param.get_value().dtype))


def _set_initial_spread(group, variant: str, sigma: float) -> None:
    """Set the sd of q to ``sigma`` in every direction, with no correlation (full rank)."""
    rho = _softplus_inverse(sigma)
    if variant == "meanfield":
        group.params_dict["rho"].set_value(np.full(group.ddim, rho))
    else:
        factor = np.zeros((group.ddim, group.ddim))
        factor[np.diag_indices(group.ddim)] = rho
        group.params_dict["L_tril"].set_value(factor[np.tril_indices(group.ddim)])


def _scaled_step(variant: str, before: dict, after: dict) -> tuple[np.ndarray, np.ndarray]:
    """The moves of q's mean (D,) and factor (D, D) between two parameter sets, each in units of its row's sd of q."""
    mean_before, factor_before = q_moments(variant, before)
    mean_after, factor_after = q_moments(variant, after)
    sd = np.sqrt((factor_after**2).sum(axis=1))
    return (mean_after - mean_before) / sd, (factor_after - factor_before) / sd[:, None]


# -- the convergence callback ------------------------------------------------------------------------------
class SettleCheck(Callback):
    """Stop ``pm.fit`` when q's parameters settle; halve the learning rate once they only wander; catch divergence.

    Called by PyMC after every iteration with ``(approx, losses, i)``. Every ``check_every`` iterations the
    average of the raw parameters over the window is compared with the previous window's: the largest move of
    q's mean and of its factor, in units of q's sd (:func:`_scaled_step`). Over the last :data:`_DRIFT_STEPS`
    such moves, a parameter that went one way by half ``tol`` or more still drifts (:func:`_drifting`): then
    nothing has settled and the step stays. Otherwise, a move below ``tol`` has converged: the parameters are
    set to the window average (Polyak-Ruppert) and the fit stops; above it, the iterates wander about the optimum
    by gradient noise wider than ``tol`` (constant-step SGD does not converge), and the learning rate is halved.
    The learning rate falls only once nothing drifts: cut while a parameter still drifts (q's scale shrinking
    towards a narrow component's, say), it slows the drift as much as the noise, and a small move per window would
    soon pass for settling, far from the optimum.

    Parameters
    ----------
    variant : {"meanfield", "fullrank"}
    learning_rate : pytensor shared scalar
        The optimiser's learning rate, changed in place.
    tol : float
    check_every : int

    Attributes
    ----------
    converged : bool
    n_iter : int
        Iterations run.
    losses : ndarray
        PyMC's loss (the negative ELBO) at every iteration.
    learning_rates : list of float
        Learning rate used at every iteration.
    changes : list of (int, float)
        (iteration, scaled change) at every check.
    """

    def __init__(self, variant: str, learning_rate, tol: float, check_every: int):
        self.variant, self.learning_rate, self.tol, self.check_every = variant, learning_rate, tol, check_every
        self.floor = learning_rate.get_value() * _LEARNING_RATE_FLOOR
        self.converged, self.n_iter = False, 0
        self.losses, self.learning_rates, self.changes = np.empty(0), [], []
        self._window_sum, self._window_count = None, 0
        self._previous_average, self.average, self._steps = None, None, []
        self.state = "few"  # the last check's finding: too few moves to tell, a drift, or noise wider than tol
        self.first_called = None  # perf_counter() at the first call: the first step ran (numba compiles it then)

    def __call__(self, approx, losses, i) -> None:
        """Record the iteration; check finiteness; every ``check_every`` iterations test for settling."""
        if self.first_called is None:
            self.first_called = time.perf_counter()
        self.n_iter, self.losses = i, losses
        self.learning_rates.append(float(self.learning_rate.get_value()))
        values = get_parameters(approx)
        if not np.isfinite(losses[-1]) or not all(np.isfinite(v).all() for v in values.values()):
            raise ADVIDivergenceError(divergence_message(approx, losses, i, self.learning_rates[0]))
        if self._window_sum is None:
            self._window_sum = {name: np.zeros_like(value) for name, value in values.items()}
        for name, value in values.items():
            self._window_sum[name] += value
        self._window_count += 1
        if i % self.check_every:
            return
        if i > self.check_every and _fallen(losses, self.check_every):
            raise ADVIDivergenceError(divergence_message(approx, losses, i, self.learning_rates[0],
                                                         fallen_window=self.check_every))
        self.average = {name: total / self._window_count for name, total in self._window_sum.items()}
        self._window_sum, self._window_count = None, 0
        previous, self._previous_average = self._previous_average, self.average
        if previous is None:
            return
        mean_step, factor_step = _scaled_step(self.variant, previous, self.average)
        change = float(max(np.max(np.abs(mean_step)), np.max(np.abs(factor_step))))
        self.changes.append((i, change))
        # the drift test reads q's means and scales (the factor's diagonal), not the correlations of a full-rank q:
        # its many elements would turn up one that went one way by chance in most checks
        self._steps = (self._steps + [np.concatenate([mean_step, np.diagonal(factor_step)])])[-_DRIFT_STEPS:]
        self.state = "few" if len(self._steps) < _DRIFT_STEPS else "drift" if _drifting(self._steps, self.tol) \
            else "wide"
        if self.state != "wide":
            return  # a parameter still drifts (or too few moves to tell): the step stays, nothing has settled
        if change < self.tol:
            self.converged = True
            set_parameters(approx, self.average)
            raise StopIteration(f"q settled at iteration {i}: moved {change:.3g} sd < tol = {self.tol}")
        self.learning_rate.set_value(max(self.learning_rate.get_value() / 2.0, self.floor))

    def final_average(self) -> dict | None:
        """Average of the parameters over the last (possibly partial) window."""
        if self._window_count:
            return {name: total / self._window_count for name, total in self._window_sum.items()}
        return self.average


def _fallen(losses: np.ndarray, window: int) -> bool:
    """Whether the ELBO's median over the last ``window`` iterations is below the first window's by more than its range.

    q starts at the MAP with about a posterior's sd, and Adam raises the ELBO from there: an ELBO that ends
    typically that far below where it started has left the posterior (a scale grown far past it, draws where the
    density is nearly singular), however still q's parameters have become in units of its own, widened sd. The
    margin keeps a fit that started at its optimum, whose ELBO only varies by its noise, from being taken for one.
    """
    first = losses[:window]  # losses are the negative ELBO
    return bool(np.median(losses[-window:]) > 2 * np.max(first) - np.min(first))


def divergence_message(approx, losses, i: int, learning_rate: float, fallen_window: int | None = None) -> str:
    """What diverged, where, and what to try.

    ``fallen_window``: the ELBO fell below its start over windows of that many iterations (:func:`_fallen`).
    """
    group = approx.groups[0]
    values = get_parameters(approx)
    with np.errstate(all="ignore"):
        mean, factor = q_moments("meanfield" if "rho" in values else "fullrank", values)
    bad = []
    for name, (_, where, _, _) in group.ordering.items():
        if not (np.isfinite(mean[where]).all() and np.isfinite(factor[where]).all()):
            free = get_untransformed_name(name) if is_transformed_name(name) else name
            bad.append(f"{parameter_of(free)} ({name})")
    loss = losses[-1] if len(losses) else float("nan")
    what = "the ELBO is NaN" if np.isnan(loss) else ("the ELBO is infinite" if np.isinf(loss) else
                                                   f"the ELBO is {-loss:.6g}")
    params = f"; q's parameters of {', '.join(bad)} are not finite" if bad else ""
    if fallen_window is not None:
        first = -np.asarray(losses[:fallen_window])
        what = (f"the ELBO fell below where it started: its median over the last {fallen_window} iterations, "
                f"{-np.median(losses[-fallen_window:]):.6g}, is below the first {fallen_window} ({first.min():.6g} to "
                f"{first.max():.6g}) by more than their range, so q left the posterior")
    return (f"ADVI diverged at iteration {i}: {what}{params}. Try a smaller learning_rate (got {learning_rate:g}; "
            f"e.g. {learning_rate / 10:g}), starting from the MAP estimate (fit method='map' first), or a "
            "stronger prior on the component parameters (e.g. a Gaussian's GaussianPrior(shrinkage=0.1, "
            "dof=n_features + 5), a Poisson's larger Gamma shape).")


# -- arguments -------------------------------------------------------------------------------------------
def _check_arguments(model, data, reference, options: dict) -> dict:
    reference = check_problem(model, data, reference)
    check_options(options)
    options["minibatch_size"] = check_minibatch(options["minibatch_size"], data)
    n_fits = 1 if isinstance(options["starts"], str) else len(options["starts"])
    check_memory(n_fits, options["draws"], sum(np.size(value) for value in reference.values())
                 + data.n_obs * (1 + model.n_components), "the parameters and pointwise log-likelihood")
    if options["posterior_predictive"]:  # a family that cannot replicate these data says so before fitting
        model.simulate(reference, data, np.random.default_rng(0))
    return reference


def check_options(options: dict) -> None:
    """Check the options of :func:`fit_advi` but the data-dependent ``minibatch_size``, in place.

    Used by the engine and, before anything is fitted, by the workflow files.
    """
    if options["variant"] not in VARIANTS:
        raise InputError(f"variant: expected one of {list(VARIANTS)}, got {options['variant']!r}")
    options["n"] = check_count("n", options["n"], 1)
    options["draws"] = check_count("draws", options["draws"], 1)
    options["check_every"] = check_count("check_every", options["check_every"], _MIN_CHECK_EVERY)
    options["learning_rate"] = check_positive("learning_rate", options["learning_rate"])
    options["settle_tol"] = check_positive("settle_tol", options["settle_tol"])
    options["random_seed"] = check_seed(options["random_seed"])
    for name in ("progressbar", "posterior_predictive"):
        check_flag(name, options[name])
    check_starts(options.setdefault("starts", "reference"))


# -- the engine ------------------------------------------------------------------------------------------
def fit_advi(model, data: Data, reference: dict, *, variant: str = "meanfield", n: int = 20_000,
             draws: int = 1000, random_seed: int | None = None, minibatch_size: int | None = None,
             learning_rate: float = 0.02, settle_tol: float = 0.05, check_every: int = 50,
             progressbar: bool = False, posterior_predictive: bool = True, starts="reference", stream=None) -> dict:
    """Fit ``model`` by ADVI from the reference estimate and return the ``/advi`` groups as plain arrays.

    Parameters
    ----------
    model : MixtureModel
        The declaration (a family with a PyMC form); its prior is the one EM's MAP maximises and NUTS
        samples.
    data : mixflow.data.Data
        Validated data (frequency weights count each row).
    reference : dict
        The EM (MAP or MLE) estimate, components in canonical order, e.g. ``weights`` (K,), ``mu`` (K, d),
        ``covariance`` or ``variance``. q starts there and draws are aligned to its labelling.
    variant : {"meanfield", "fullrank"}, default "meanfield"
        Independent normals (PyMC's ``ADVI``), or one multivariate normal (``FullRankADVI``), on the
        unconstrained standardised parameters.
    n : int, default 20000
        Largest number of iterations; the fit usually stops far earlier, when q settles.
    draws : int, default 1000
        Draws from q kept in the posterior.
    random_seed : int, optional
        Seeds the gradient noise, the minibatches and the draws (drawn when None, and recorded).
    minibatch_size : int, optional
        Rows per iteration, drawn at random and scaled by ``n_obs / minibatch_size`` (unweighted data).
    learning_rate : float, default 0.02
        Adam's starting step (standardised unconstrained units); halved once q no longer drifts and still
        wanders wider than ``settle_tol`` (:class:`SettleCheck`). A full-rank q's off-diagonal factor entries
        step by it over their row's count of them (:func:`factor_step_scale`).
    settle_tol : float, default 0.05
        Stop when, between two windows of ``check_every`` iterations, q's averaged mean and scale
        moved by less than ``settle_tol`` of its own sd, and none of them drifted one way over the last
        windows (:class:`SettleCheck`; ``tol`` of :func:`mixflow.fit` is EM's).
    check_every : int, default 50
        Window length of the convergence check (at least 10).
    progressbar : bool, default False
        Show PyMC's progress bar.
    posterior_predictive : bool, default True
        Also draw one replicate of the data per draw (``posterior_predictive``, with its ``observed_data``).
    starts : "reference" or list of dict, default "reference"
        Where q starts: at ``reference``, or one fit from each point of the list (parameters in data units,
        like ``reference``), e.g. the distinct local maxima EM's restarts found (:func:`mixflow.fit` with
        ``starts="em-optima"``). Several fits are the chains of the posterior (chain ``c`` holds ``draws``
        draws of the fit from ``starts[c]``), grouped into modes and weighted by stacking exactly as NUTS
        chains are (:func:`mixflow.engines.modes.mode_groups`): the groups ``modes`` and, with several
        modes, ``stacked/posterior``. The first fit has the seeds of a single fit.
    stream : mixflow.engines.advi_stream.MinibatchStream, optional
        Dask data: the minibatches streamed from the blocks of every row (``minibatch_size`` None; ``data``
        the uniform sample that sets the standardisation and prior and gets the log-likelihood and
        responsibilities); its batch size and source go to the attributes.

    Returns
    -------
    dict
        ``{"attrs": {...}, "coords": {"chain", "draw", "iteration"}, "groups": {name: {"variables":
        {var: (dims, array)}, "attrs": {...}}}}`` with groups ``posterior`` (the parameters of
        ``model.parameter_dims``; chain=one per start, draw=``draws``; aligned), ``sample_stats`` (``elbo``
        and ``learning_rate`` per iteration, and per fit (chain, iteration) with several starts), with
        several starts ``modes`` and maybe ``stacked/posterior`` (see ``starts``), and those of
        :func:`mixflow.engines.over_draws.draw_groups`: ``log_likelihood``, ``responsibilities``, and
        ``posterior_predictive`` with ``observed_data``.

    Raises
    ------
    ADVIDivergenceError
        When the ELBO or q's parameters become NaN or infinite.
    """
    options = {"variant": variant, "n": n, "draws": draws, "random_seed": random_seed,
               "minibatch_size": minibatch_size, "learning_rate": learning_rate, "settle_tol": settle_tol,
               "check_every": check_every, "progressbar": progressbar, "posterior_predictive": posterior_predictive,
               "starts": starts}
    reference = _check_arguments(model, data, reference, options)
    points = start_points(model, data, reference, options["starts"])
    began = time.perf_counter()
    prior = model.resolve_prior(model.prepare(data))
    size = options["minibatch_size"]
    key = None
    if stream is None:
        pymc_model = model.pymc_model(data, prior, minibatch_size=size)
        key, inputs = _fitter_key(pymc_model, data, options)
        fitter = _FITTERS.take(key)
        if fitter is not None:
            fitter.refill(model, data, inputs, options)
        else:
            fitter = _Fitter(model, data, pymc_model, options, inputs, key)
    else:
        pymc_model, size, options["stream"] = stream.build(model, data, prior), stream.batch_size, stream
        fitter = _Fitter(model, data, pymc_model, options)
    # the first fit keeps the seeds of a single fit; spawn's children depend on their index only, so the
    # predictive draws (child 0) are those of a single fit too
    children = np.random.SeedSequence(options["random_seed"]).spawn(len(points) + 1)
    seeds = [np.random.SeedSequence(options["random_seed"])] + children[2:]
    fits = [fitter.fit(point, seed) for point, seed in zip(points, seeds, strict=True)]
    _FITTERS.keep(key, fitter)
    fit_time = time.perf_counter() - began
    signature = model.label_signature(data)
    raw = {name: (("chain", "draw", *dims), np.concatenate([fit["draws"][name] for fit in fits]))
           for name, dims in model.parameter_dims(data.features).items()}
    posterior, permutations = align(raw, reference, signature)
    groups = {
        "posterior": {"variables": posterior},
        "sample_stats": _sample_stats(fits, size),
        **draw_groups(model, data, {name: value for name, (_, value) in posterior.items()},
                      options["posterior_predictive"], np.random.default_rng(children[0])),
    }
    attrs = {
        "method": "advi", "variant": options["variant"], "n_iter": max(fit["check"].n_iter for fit in fits),
        "converged": int(all(fit["check"].converged for fit in fits)), "max_iter": options["n"],
        "settle_tol": options["settle_tol"], "check_every": options["check_every"],
        "learning_rate": options["learning_rate"], "final_learning_rate": fits[0]["final_learning_rate"],
        "optimizer": "adam", "minibatch_size": -1 if size is None else size, "draws": options["draws"],
        "random_seed": int(options["random_seed"]),
        # PyTensor's C backend where numba could not compile the step (see _Fitter.fit), else PyMC's default
        "step_compiled_by": "pytensor-c (numba could not compile the step)" if fitter.compiled_by_c else "pymc-default",
        "start": "reference estimate (EM/MAP)" if len(points) == 1 else f"{len(points)} given points, one fit each",
        "initial_sd": float(1.0 / np.sqrt(_total_weight(data, options))),
        "final_elbo": max(fit["final_elbo"] for fit in fits),
        # its standard error: the window's single-sample estimates' sd over their square root
        "final_elbo_se": max(fits, key=lambda fit: fit["final_elbo"])["final_elbo_se"],
        "wall_time": float(fit_time),
        # in wall_time: setting up and compiling the step, to each fit's first step, and the draws from q
        "compile_time": float(sum(fit["compile_time"] for fit in fits)),
        "n_relabelled_draws": int(np.any(permutations != np.arange(model.n_components), axis=-1).sum()),
        "relabel_cost": signature.description,
        "prior": json.dumps(prior.to_dict()),
        **({} if stream is None else stream.attrs()),
    }
    coords = {"chain": np.arange(len(fits)), "draw": np.arange(options["draws"]),
              "iteration": np.arange(1, max(fit["elbo"].size for fit in fits) + 1)}
    if len(fits) > 1:
        found, chain_mode = mode_groups(model, data, posterior, groups["log_likelihood"]["variables"]["x"][1],
                                        reference, np.random.default_rng(children[1]),
                                        "ADVI draws of every mode resampled by the modes' stacking weights",
                                        independent=True)
        groups.update(found)
        weights = found["modes"]["variables"]["weight"][1]
        coords["mode"] = np.arange(weights.size)
        attrs.update(n_modes=int(weights.size), n_iter_per_fit=json.dumps([int(f["check"].n_iter) for f in fits]),
                     converged_per_fit=json.dumps([int(f["check"].converged) for f in fits]),
                     final_elbo_per_fit=json.dumps([f["final_elbo"] for f in fits]),
                     final_elbo_se_per_fit=json.dumps([f["final_elbo_se"] for f in fits]))
        if weights.size > 1:
            variables = {name: value for name, (_, value) in found["modes"]["variables"].items()}
            caveats = mode_caveats(variables, "fits")
            warnings.warn(f"ADVI: the fits from {len(fits)} starting points fall into "
                          f"{describe_group(variables, 'fits')}; each mode is "
                          "summarised in /advi/modes and the modes are combined by stacking in /advi/stacked"
                          + (f"; {caveats}." if caveats else "."), SamplingWarning, skip_file_prefixes=PACKAGE_FILES)
    return {"attrs": attrs, "coords": coords, "groups": groups}


def factor_step_scale(size: int) -> np.ndarray:
    """What Adam's step of each entry of a full-rank q's ``L_tril`` (row by row, D = ``size``) is multiplied by.

    A diagonal entry 1; an off-diagonal entry of row i (0-based, i off-diagonal entries) 1 / i. Adam moves every
    parameter by about the learning rate whatever its gradient's size, and the single-draw gradient of an entry
    L_ij is mostly noise (the log density's gradient in coordinate i times the draw's j-th standard normal): the
    i entries of row i wander each as far as one mean does, and q's variance in coordinate i (the row's sum of
    squares) grows with i times a mean's wander. With D in the hundreds (three 8-D full covariances: 134) that
    is many times the posterior's variance: draws fall where a covariance is nearly singular, the ELBO runs below
    -1e15, and q blows up. Scaled by 1 / i, a row adds what one parameter adds. A
    constant factor on a parameter's step is Adam on that parameter rescaled: q's family and optimum are PyMC's.
    """
    rows, cols = np.tril_indices(size)
    return np.where(rows == cols, 1.0, 1.0 / np.maximum(rows, 1))


class _Adam:
    """PyMC's Adam at a shared learning rate, remembering its state variables so a new fit can reset them.

    A full-rank q's factor (``L_tril``) steps by :func:`factor_step_scale` times Adam's step.
    """

    def __init__(self, learning_rate):
        self.learning_rate, self.initial = learning_rate, {}

    def __call__(self, loss_or_grads, params):
        updates = adam(loss_or_grads, params, learning_rate=self.learning_rate)
        for param in params:
            if param.name == "L_tril":
                size = int(round((np.sqrt(8 * param.get_value().size + 1) - 1) / 2))
                scale = pt.as_tensor(factor_step_scale(size).astype(param.dtype))
                updates[param] = param + scale * (updates[param] - param)
        # every updated variable but q's parameters is Adam's: its step count and moment estimates
        self.initial = {var: var.get_value().copy() for var in updates if all(var is not p for p in params)}
        return updates

    def reset(self) -> None:
        for var, value in self.initial.items():
            var.set_value(value.copy())


#: The compiled ADVIs of the last few fits, by :func:`_fitter_key` (:mod:`mixflow.engines.kept`): a fit of a model of
#: the same structure reuses one, with the numbers of a fresh one (:class:`_Fitter`)
_FITTERS = KeptCompiled()


def _fitter_key(pymc_model, data: Data, options: dict) -> tuple[str | None, dict | None]:
    """A digest of what an ADVI's compiled step depends on, and the model's graph inputs by name; None for neither.

    The digest is of the structure of the PyMC model's graphs the step is built from (its prior and data log
    densities, and the deterministics; :func:`~mixflow.families.pymc_parts.structure_digest`: the data and the
    data-scaled prior are their inputs, not part of them), the variant and the minibatch size. The inputs
    (:func:`~mixflow.families.pymc_parts.graph_inputs`) are what a kept step of that digest is refilled with. None
    for data too large to keep, or a model whose inputs cannot be carried over by name.
    """
    if data.values.size > MAX_VALUES:
        return None, None
    outputs = [pymc_model.varlogp, pymc_model.datalogp, *pymc_model.deterministics]
    inputs = graph_inputs(outputs)
    if inputs is None:
        return None, None
    digest = structure_digest(pymc_model, outputs)
    digest.update(json.dumps([options["variant"], options["minibatch_size"]]).encode())
    return digest.hexdigest(), inputs


class _Fitter:
    """One PyMC ADVI and its step function, compiled once and reused by every fit (one per starting point).

    A fit from ``point`` with seed ``s`` gives the numbers of a separate ``pm.fit`` whose ADVI was built at
    ``point`` with ``random_seed=s``, with this module's optimiser (:class:`_Adam`): q's parameters are set where
    that ADVI would start them, Adam's state and the learning rate are reset, and the step function's random
    generators are reseeded with the seed that ADVI's own generator would have handed to its compilation (one
    draw for the starting point, the next for the step function, as
    :meth:`pymc.variational.opvi.Group._prepare_start` and
    :meth:`pymc.variational.opvi.ObjectiveFunction.step_function` draw them). The fit then runs in
    :meth:`pymc.variational.inference.Inference.refine`, PyMC's loop over an already compiled step.
    """

    def __init__(self, model, data: Data, pymc_model, options: dict, inputs: dict | None = None,
                 key: str | None = None):
        self.model, self.data, self.pymc_model, self.options = model, data, pymc_model, options
        self.inputs = inputs  # the model's graph inputs by name (:func:`_fitter_key`), for :meth:`refill`
        self.key = key  # the structure's key (:func:`_fitter_key`), under which its rewritten step is on disk
        self.inference, self.step_function, self.rngs = None, None, None
        self.compiled_by_c = False  # the step compiled by PyTensor's C backend, where numba could not
        self.learning_rate = pytensor.shared(np.float64(options["learning_rate"]), name="learning_rate")
        self.optimiser = _Adam(self.learning_rate)

    def refill(self, model, data: Data, inputs: dict, options: dict) -> None:
        """Fit a PyMC model of this one's structure (:func:`_fitter_key`) from now: its graph ``inputs``' values."""
        self.model, self.data, self.options = model, data, options
        for name, variable in self.inputs.items():
            variable.set_value(inputs[name].get_value())

    def _start(self, point: dict, fit_seed: int) -> None:
        """Build (first fit) or reset (later fits) the ADVI at ``point`` with the generators of ``fit_seed``."""
        start = self.model.pymc_start(self.data, point)
        if self.inference is None:
            self.inference = VARIANTS[self.options["variant"]](model=self.pymc_model, start=start,
                                                               random_seed=fit_seed)
            self._compile()
        else:
            group = self.inference.approx.groups[0]
            group.rng = np.random.RandomState(fit_seed)
            group.params_dict["mu"].set_value(group._prepare_start(start))
            reseed_rngs(self.rngs, group.rng.randint(2**30, dtype=np.int64))
            self.optimiser.reset()
            self.learning_rate.set_value(np.float64(self.options["learning_rate"]))
            self.inference.hist = np.asarray(())
        _set_initial_spread(self.inference.approx.groups[0], self.options["variant"],
                            1.0 / np.sqrt(_total_weight(self.data, self.options)))

    def _compile(self, mode=None) -> None:
        """The step function (PyMC's backend, or ``mode``) and the generators it updates.

        The step is the one ``pm.fit`` compiles (score: ADVI returns its loss); with PyMC's backend its rewritten
        graph is kept on disk for the next process (:func:`mixflow.engines.advi_step.compile_step`), unless
        minibatches are drawn: their rows are constants of the graph, which would keep a file per data set.
        """
        stored = mode is None and self.options.get("minibatch_size") is None
        self.step_function, self.rngs = compile_step(self.inference.objective, self.optimiser,
                                                     self.key if stored else None, mode)

    def fit(self, point: dict, seed: np.random.SeedSequence) -> dict:
        """One fit from ``point`` and its draws (not yet aligned), with its settle check and ELBO history."""
        options = self.options
        fit_seed, draw_seed = (int(s) for s in seed.generate_state(2))
        # compiling: until the first step has run, building and compiling the step (PyTensor compiles its kernels, or
        # loads them from its cache, as the step first runs; a failed numba compilation included), and the draws
        began = time.perf_counter()
        while True:
            self._start(point, fit_seed)
            check = SettleCheck(options["variant"], self.learning_rate, options["settle_tol"], options["check_every"])
            try:
                approx = _run(self.inference, self.step_function, check, options)
                break
            except Exception as error:
                if not _numba_failure(error) or self.compiled_by_c:
                    raise
                # numba could not compile the step (PyTensor's numba backend fails on some graphs that its rewrites
                # reduce to scalars, e.g. one component of one feature with a full covariance): PyTensor's C
                # backend, from the same start
                from pytensor.compile.mode import Mode

                self.compiled_by_c = True
                self._compile(Mode(linker="cvm", optimizer="fast_run"))
        if not check.converged:
            average = check.final_average()
            if average is not None:
                set_parameters(approx, average)
            if not check.changes:
                seen = f"too few to compare two windows of check_every={options['check_every']} iterations"
            elif check.state == "few":
                seen = (f"too few windows of check_every={options['check_every']} iterations to tell a drift from "
                        f"noise: it takes {_DRIFT_STEPS + 1}")
            elif check.state == "drift":
                seen = (f"q's parameters still drifted one way over the last {_DRIFT_STEPS} windows, the last by "
                        f"{check.changes[-1][1]:.3g} sd")
            else:
                seen = (f"q still moved by {check.changes[-1][1]:.3g} sd between windows, settle_tol="
                        f"{options['settle_tol']}")
            warnings.warn(f"ADVI did not settle in n={options['n']} iterations ({seen}); increase n, lower "
                          "learning_rate, or loosen settle_tol.", ConvergenceWarning, skip_file_prefixes=PACKAGE_FILES)
        elbo = -np.asarray(check.losses, dtype=float)
        window = elbo[-options["check_every"]:]
        drawing = time.perf_counter()
        draws = _draws(self.model, self.data, approx, options["draws"], draw_seed)
        # the draws from q: PyMC compiles (or loads) their function as they are drawn, most of their time
        compiling = (check.first_called or began) - began + time.perf_counter() - drawing
        return {"check": check, "elbo": elbo, "compile_time": compiling,
                "learning_rates": np.asarray(check.learning_rates[:elbo.size], dtype=float),
                "final_learning_rate": float(self.learning_rate.get_value()),
                "final_elbo": float(window.mean()) if window.size else float("nan"),
                "final_elbo_se": float(window.std(ddof=1) / np.sqrt(window.size)) if window.size > 1 else float("nan"),
                "draws": draws}


def _numba_failure(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) was raised while numba compiled a function.

    Numba's compiler is on the stack (its type inference calls PyTensor's code generation back), not a
    failure of the compiled function as it runs (PyTensor's ``link/numba``, whose errors are the model's).
    """
    import numba

    compiler = os.path.dirname(numba.__file__) + os.sep
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, numba.core.errors.NumbaError):
            return True
        if any(frame.filename.startswith(compiler) for frame in traceback.extract_tb(error.__traceback__)):
            return True
        error = error.__cause__ or error.__context__
    return False


def _total_weight(data: Data, options: dict) -> float:
    """The weight the posterior is given: the data's, or with a stream from Dask blocks all the rows'."""
    stream = options.get("stream")
    return data.total_weight if stream is None else stream.data.total_weight


def _sample_stats(fits: list[dict], size) -> dict:
    """``elbo`` and ``learning_rate`` per iteration; with several fits per fit (chain), NaN past a fit's end."""
    attrs = {"elbo": "single-sample Monte Carlo estimate of the ELBO at every iteration"
                     + ("" if size is None else " (minibatch, scaled to the full data)")}
    if len(fits) == 1:
        return {"variables": {"elbo": (("iteration",), fits[0]["elbo"]),
                              "learning_rate": (("iteration",), fits[0]["learning_rates"])}, "attrs": attrs}
    length = max(fit["elbo"].size for fit in fits)

    def padded(key):
        return np.stack([np.pad(fit[key], (0, length - fit[key].size), constant_values=np.nan) for fit in fits])

    return {"variables": {"elbo": (("chain", "iteration"), padded("elbo")),
                          "learning_rate": (("chain", "iteration"), padded("learning_rates"))}, "attrs": attrs}


def _run(inference, step_function, check: SettleCheck, options: dict):
    """PyMC's iterations of ``step_function`` (Adam at the shared learning rate) under the settle check."""
    logger = logging.getLogger("pymc.variational.inference")
    level = logger.level
    logger.setLevel(logging.WARNING)  # PyMC logs "Interrupted at ..." at INFO when our check stops it: not a crash
    stream = options.get("stream")  # Dask data: the next minibatch after every iteration
    callbacks = [check] if stream is None else [check, stream.begin()]
    inference.state = State(0, step=step_function, callbacks=callbacks, score=True)
    try:
        with noting_interrupts() as interrupted:  # PyMC's loop swallows Ctrl-C and returns the partial fit
            inference.refine(options["n"], progressbar=options["progressbar"])
        if interrupted:
            raise SamplerInterrupted("ADVI interrupted: the optimisation was stopped, its partial fit dropped")
        stop_if_terminated()  # SIGTERM's interrupt, swallowed by the same loop
        return inference.approx
    except ADVIDivergenceError:
        raise
    except FloatingPointError as error:  # PyMC's own NaN check runs before the callbacks
        losses = np.append(inference.hist, np.nan)
        raise ADVIDivergenceError(divergence_message(inference.approx, losses, losses.size,
                                                     options["learning_rate"])) from error
    finally:
        logger.setLevel(level)


def _draws(model, data: Data, approx, draws: int, seed: int) -> dict:
    """Draws of the parameters (data units) from q: ``{name: array of shape (1, draws, ...)}``."""
    trace = approx.sample(draws, random_seed=seed, return_inferencedata=False)  # skips a DataTree round trip
    return {name: np.asarray(trace.get_values(name), dtype=float)[None] for name in model.parameter_dims(data.features)}
