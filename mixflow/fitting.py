"""The public entry points: ``fit``, then ``predict``, ``predict_proba``, ``score_samples``, ``sample``."""

import contextlib
import dataclasses
import inspect
import json
import os
import shutil
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import xarray as xr
from scipy.special import logsumexp

from mixflow.arguments import check_count, check_integer, check_number
from mixflow.checks import check_seed
from mixflow.chunked import ChunkedData, as_chunked, is_chunked, moments_of, sample_rows, validate_chunked
from mixflow.container.build import build_tree, make_attrs, record_warnings
from mixflow.container.layout import EM_ESTIMATE, EM_RESPONSIBILITIES, EM_SAMPLE_STATS, OBSERVED_DATA, UNITS
from mixflow.container.read import available_methods, fitted_estimate, fitted_model, method_draws
from mixflow.container.tree import as_container
from mixflow.data import Data, check_total_weight, check_units, unread_columns, validate_data, without_unusable_unread
from mixflow.engines.accelerate import ACCELERATIONS
from mixflow.engines.em import EMOptions, fit_em, fit_prepared
from mixflow.engines.em_chunked import chunked_predictions, prepare_chunked
from mixflow.engines.em_steps import check_densities, e_step
from mixflow.engines.kmeans import SCALABLE_KMEANS
from mixflow.engines.modes import OPTIMA_GAP, distinct_optima
from mixflow.engines.over_draws import responsibilities_over_draws
from mixflow.engines.starts import PORTFOLIO, STRATEGIES
from mixflow.errors import InputError, InputTypeError
from mixflow.families.base import MixtureModel, model_from_json, with_prior
from mixflow.warnings import PACKAGE_FILES, DegenerateComponentWarning, MixflowWarning, SamplingWarning
from mixflow.wording import agreeing, counted, engine_alias_hint, perhaps

__all__ = ["fit", "predict", "predict_proba", "responsibilities", "sample", "score_samples"]

_METHODS = ("em", "map", "mcmc", "advi")
_INIT = (PORTFOLIO, *STRATEGIES, SCALABLE_KMEANS)


#: The most starts EM takes (``n_init``): each is kept in memory with its history, and more find nothing more
MAX_STARTS = 10_000


def check_em_options(n_init, init, tol, max_iter, trim, chunk_size, accelerate="squarem") -> None:
    """Check EM's options of :func:`fit` (also used by the workflow files before anything is fitted)."""
    check_count("n_init", n_init, 1, maximum=MAX_STARTS)
    if isinstance(init, str) and init not in _INIT:
        raise InputError(f"init: expected one of {list(_INIT)} or a dict of parameters, got {init!r}")
    if not isinstance(init, str | dict):
        raise InputTypeError(f"init: expected one of {list(_INIT)} or a dict of parameters, got {type(init).__name__}")
    check_number("tol", tol, lambda v: np.isfinite(v) and v >= 0, "a non-negative number")
    check_count("max_iter", max_iter, 1)
    if trim is not None:
        check_number("trim", trim, lambda v: 0 < v < 1, "None or a weight threshold in (0, 1)")
    check_count("chunk_size", chunk_size, 1, none="rows per pass chosen from the data's width")
    if accelerate is not None and (not isinstance(accelerate, str) or accelerate not in ACCELERATIONS):
        raise InputError(f"accelerate: expected one of {list(ACCELERATIONS)} or None (plain EM), got {accelerate!r}")


def _method_list(method) -> list[str]:
    methods = [method] if isinstance(method, str) else list(method) if isinstance(method, list | tuple) else None
    if not methods or any(m not in _METHODS for m in methods) or len(set(methods)) != len(methods):
        raise InputError(f"method: expected one of {list(_METHODS)} or a list of them without repeats, got {method!r}")
    if "em" in methods and "map" in methods:
        raise InputError("method: expected at most one of 'em' and 'map' (the container holds one EM estimate), "
                         f"got {method!r}")
    return methods


def _method_seed(seed: int, method: str) -> int:
    """Each method's own seed, derived from the root seed, so adding a method never changes another's draws."""
    return int(np.random.SeedSequence([seed, _METHODS.index(method)]).generate_state(1, np.uint64)[0] >> 1)


#: The message of PyTensor's note that Numba runs an operation in object mode (slower, the same results).
COMPILER_NOTE = r"Numba will use object mode"


def _engine(method: str):
    if method == "mcmc":
        from mixflow.engines.mcmc import fit_mcmc

        return fit_mcmc
    from mixflow.engines.advi import fit_advi

    return fit_advi


def option_names(methods=("mcmc", "advi")) -> set[str]:
    """The names of :func:`fit`'s options beside the model, the data, the method and the container.

    Its keywords and every option of the sampling engines among ``methods`` (``draws``, ``chains``, ``n``, ...;
    by default both engines').
    """
    names = set(inspect.signature(fit).parameters) - {"model", "data", "method", "tree", "options"}
    for method in methods:
        if method in ("mcmc", "advi"):
            names |= set(inspect.signature(_engine(method)).parameters) - _NOT_OPTIONS
    return names


#: Parameters of the sampling engines that :func:`fit` gives them itself
_NOT_OPTIONS = {"model", "data", "reference", "random_seed", "stream"}


def _route_options(methods: list[str], options: dict) -> dict:
    """Give each sampling engine the keyword options its signature accepts; refuse options no one takes."""
    routed, taken = {}, set()
    for method in methods:
        if method in ("mcmc", "advi"):
            accepted = set(inspect.signature(_engine(method)).parameters) - _NOT_OPTIONS
            routed[method] = {key: value for key, value in options.items() if key in accepted}
            taken |= set(routed[method])
    unknown = sorted(set(options) - taken)
    if unknown:
        # a name of no option may be another library's name of an engine's option, or a slip of one of these
        # methods' (fit's own keywords and their engines')
        hint = engine_alias_hint(unknown, methods) or perhaps(unknown, option_names(methods))
        raise InputTypeError(f"fit: unexpected {agreeing(len(unknown), 'option')} {unknown} for "
                             f"{agreeing(len(methods), 'method')} {methods}{hint}")
    return routed


def _check_same_fit(tree, model, validated):
    if model_from_json(tree.attrs["model"]) != model:
        raise InputError(f"tree: expected a result of the same model, got one of {tree.attrs['model']}")
    observed = tree[OBSERVED_DATA]["x"].values
    if observed.shape != validated.values.shape or not np.array_equal(observed, validated.values):
        raise InputError("tree: expected a result fitted to the same data, got one with different observations")
    # the frequency weights are the data too: fits to other weights, side by side, would compare other samples
    kept = tree[OBSERVED_DATA]["weights"].values if "weights" in tree[OBSERVED_DATA] else None
    given = validated.weights
    if all(w is None or (w == 1).all() for w in (kept, given)):
        return  # weights of 1 are none: the same data
    if (kept is None) != (given is None):
        had, has = ("with", "without") if kept is not None else ("without", "with")
        raise InputError(f"weights: expected the frequency weights of the result's data (tree, fitted {had} "
                         f"weights), got data {has} them; pass "
                         f"{'the same weights=' if kept is not None else 'no weights'} to add a method to it")
    if kept is not None and not np.array_equal(kept, given):
        rows = np.flatnonzero(kept != given)
        raise InputError(f"weights: expected the frequency weights of the result's data (tree), got other weights in "
                         f"{counted(rows.size, 'row')} (the first, row {validated.obs[rows[0]]}: "
                         f"{given[rows[0]]:g} against {kept[rows[0]]:g})")


def _check_same_units(tree, units: dict) -> None:
    """Units for a method added to ``tree`` that are not its own would relabel the fits it holds: refused."""
    kept = json.loads(tree.attrs.get(UNITS, "{}") or "{}")
    if units and kept and units != kept:
        raise InputError(f"units: expected the units of the result's data (tree), {kept}, or none, got {units}; the "
                         "fits it holds are in its units")


def fit(model: MixtureModel, data, method="em", *, random_seed: int | None = None, weights=None,
        n_init: int = 5, init="auto", tol: float = 1e-10, max_iter: int = 1000, trim: float | None = None,
        chunk_size: int | None = None, accelerate: str | None = "squarem", data_name: str | None = None,
        units=None, tree: xr.DataTree | None = None, persist="auto", subsample: int = 100_000,
        chunks: int | None = None, **options) -> xr.DataTree:
    """Fit a declared mixture model by one or more methods and return the results container.

    Parameters
    ----------
    model : MixtureModel
        The declaration, e.g. ``GaussianMixture(2, covariance="full")``.
    data : array-like of shape (n_obs,) or (n_obs, n_features), DataFrame, or xarray
        One row per observation; DataFrame columns become the ``feature`` coordinate. Data larger than
        memory: a Dask array, a Dask DataFrame or a Dask-backed xarray object (``xr.open_zarr``), with
        ``weights`` a Dask array or Series, fitted by EM ("em" or "map") one pass over the blocks per
        iteration on the active ``dask.distributed`` client or Dask's threaded scheduler (families
        every family with an EM step; needs ``pip install "mixflow[dask]"``). The
        result then keeps the estimate, history and criteria of all the rows, and the rows and
        responsibilities of a uniform subsample (``subsample``): ``/observed_data`` holds that sample (its
        ``n_obs`` attribute the full count); :func:`responsibilities` gives every row's, lazily. NUTS runs on
        that sample; ADVI on minibatches of ``minibatch_size`` rows (default 1000) streamed from every block
        (:mod:`mixflow.engines.advi_stream`; Gaussian, soft k-means and Poisson mixtures, the others on the
        sample).
    method : {"em", "map", "mcmc", "advi"} or list of them, default "em"
        Maximum likelihood by EM, the MAP estimate under the model's prior, NUTS through PyMC, ADVI
        through PyMC. MCMC and ADVI start from the EM/MAP estimate: when neither "em" nor "map" is asked
        for (and ``tree`` holds no /em), the MAP estimate is computed first and stored too.
    random_seed : int, optional
        Root seed of every random choice; each method draws from its own seed derived from it, so the
        same seed gives the same numbers whatever other methods run. Drawn and recorded when None.
    weights : array-like of shape (n_obs,), optional
        Frequency weights.
    n_init : int, default 5
        Number of EM starts (at most 10000); the one with the highest objective among the sound ones is kept
        (a spurious one, with a component of a few points close together or near a subspace, only when no start
        is sound; a degenerate one, with a collapsed or empty component, only when every start is; either flagged). With
        ``init="auto"``, the budget: ``2 * n_init`` short runs (``4 * n_init``, then ``8 * n_init`` when
        those so far do not agree on the best value; a regression mixture runs all ``8 * n_init`` at once),
        of which the best ``ceil(n_init / 2)`` are continued
        to convergence; a start repeating an earlier one's partition is replaced by a random one, or skipped.
        When those continued runs end at different maxima, or no start reached a sound fit, a second round of
        as many starts follows (not on Dask data of more rows than ``subsample``; ``attrs["start_rounds"]``).
        A local search follows from the best fit of each round (split-and-transfer, boundary, split-and-merge,
        outlier, freed (K >= 3: a component given to the others, then freed onto the rows they explain worst)
        and, for Gaussian families, dense-group moves; for a regression, also splits across a line, see
        :mod:`mixflow.engines.starts`), and, where it finds nothing above that fit, from the lower maxima the
        round's continued runs reached, best first, until one climbs above the best of every round so far (maxima
        searched from before are skipped); a higher fit it finds is a restart
        of its own, with start ``"transfer"``. Data of more than 8192 rows (``mixflow.engines.em.SEARCH_ROWS``;
        Dask input of no more rows than ``subsample``) run all this on a uniform sample of 4096 rows drawn from
        the seed; the sample's best distinct maxima then continue on every row, and a last local search runs
        there (``attrs["search_rows"]``). A MAP fit, and a tied covariance's MLE, also start from the
        values of each discrete feature (2 to 10 distinct values, and for the tied MLE more than
        ``n_components``: groups of even weight, ``"feature-values:j"``, and the values cut at their widest
        gaps, ``"feature-gaps:j"``; at most ``2 * n_init`` of them, added to the budget).
    init : {"auto", "kmeans", "kmeans++", "random", "standardised-kmeans", "random-partition", \
"hierarchical", "hierarchical-pca", "low-kurtosis", "kmeans||"} or dict, default "auto"
        ``"auto"`` draws the starts from a portfolio of the other strategies chosen per family (see
        :mod:`mixflow.engines.starts`), runs each briefly and continues the best. A strategy's name runs
        ``n_init`` starts of it to convergence: k-means (k-means++ seeds and Lloyd iterations), k-means++
        seeds alone, random responsibilities, k-means on features scaled to unit sd, random hard partitions,
        Ward's agglomeration of the scaled features or of their leading ``max(2, K)`` principal components, or
        the sphered features' ``K - 1`` directions of lowest kurtosis, agglomerated by Ward's method (at K=2, the
        one direction's exact two-means cut, also a start of ``"auto"``).
        ``"kmeans||"`` (Dask input only; not for regression mixtures) seeds each start by k-means|| over every
        row instead of the subsample (see
        :meth:`mixflow.engines.em_chunked.ChunkedPrepared.scalable_kmeans_passes`), the starts sharing
        12 passes over the data. A dict gives the starting parameters (``weights``,
        ``mu``, ``covariance``/``variance``). ``/em/sample_stats/start`` records each start's strategy.
    tol : float, default 1e-10
        EM stops when Aitken's estimate of the objective it still has to gain (the log-likelihood, or
        the log posterior for MAP), per observation, is below ``tol``: ``aitken_gap / n_observations < tol``
        with ``aitken_gap = l_inf - l`` estimated from three consecutive EM steps and confirmed by the
        three before (McNicholas et al. 2010). Unlike the size of the last step, the estimate stays honest
        where EM crawls. An estimate, not a bound: near a flat or degenerate maximum it can fall short by
        a few times ``tol``. Both values are recorded in ``/em``'s attributes; 0 runs ``max_iter`` iterations.
    max_iter : int, default 1000
        EM iterations per start: passes over the data, each SQUAREM extrapolation counting as one. Also of the
        EM that MCMC and ADVI start from; ADVI's own iterations are its option ``n``, NUTS's ``tune`` and ``draws``.
    trim : float, optional
        Drop components whose weight falls below this threshold during EM; MCMC and ADVI then fit the
        components EM kept (their attribute ``n_components`` says so).
    chunk_size : int, optional
        Rows per chunk of the E and M steps (default: about 4 MB of temporaries).
    accelerate : {"squarem"} or None, default "squarem"
        Accelerate EM with SQUAREM (Varadhan and Roland 2008): after every two EM steps, an extrapolated
        point is tried and kept only if it is valid and its objective is at least that of the plain step,
        so the objective still never decreases; cycles in which a component collapses or is trimmed stay
        plain. None runs plain EM. See :mod:`mixflow.engines.accelerate`.
    data_name : str, optional
        Recorded in the result. By default a DataFrame's ``attrs["name"]`` (set by :func:`mixflow.load_dataset`),
        else ``"data"``.
    units : mapping of str to str, optional
        The unit of each column that has one, e.g. ``{"waiting": "min"}``, recorded in the result (root
        attribute ``units``) and shown on the axes and tables of its plots and report. By default those of a
        DataFrame's ``attrs["units"]`` (set by :func:`mixflow.load_dataset`) for its fitted columns; with
        ``tree``, the units it records.
    tree : xarray.DataTree, optional
        A result of the same model and data to add the methods to (a new tree is returned; its /em is
        the reference of MCMC and ADVI, unless it is a degenerate MLE: then a MAP fit is).
    persist : {"auto", True, False}, default "auto"
        Dask input only: keep the blocks in memory across EM's passes (True), read them from storage at
        every pass (False), or ``"auto"``: in memory when they take at most a quarter of the memory
        available (the workers' with a client).
    subsample : int, default 100000
        Dask input only: rows of the uniform subsample (drawn blockwise from the seed) on which the starts
        are drawn and the short runs of ``init="auto"`` made, and whose responsibilities the result keeps;
        every row (in order) when the data have no more, and then EM runs on them in memory (but for
        ``init="kmeans||"``): the same estimate as numpy input gives.
    chunks : int, optional
        Dask input only: rows per block, the data re-chunked to them (default: the input's own blocks).
    **options
        Options of the sampling engines, each passed to the methods that take it: for MCMC ``draws``,
        ``tune``, ``chains``, ``sampler``, ``progressbar``, ``cores``, ``target_accept``, ``jitter``,
        ``posterior_predictive``, ``starts`` (see :func:`mixflow.engines.mcmc.fit_mcmc`;
        ``starts="em-optima"`` starts the chains at the distinct local maxima EM's restarts found, best first,
        one per chain and cycled, see :func:`mixflow.engines.modes.distinct_optima`); for ADVI ``variant``,
        ``n``, ``draws``, ``minibatch_size``, ``learning_rate``, ``settle_tol``, ``check_every``,
        ``progressbar``, ``starts`` (see :func:`mixflow.engines.advi.fit_advi`; ``starts="em-optima"`` runs one
        fit from each distinct local maximum, its draws a chain, the fits' modes stacked as NUTS chains').

    Returns
    -------
    xarray.DataTree
        ``/observed_data``, ``/em`` (``estimate``, ``responsibilities``, ``sample_stats``), and ``/mcmc``
        and ``/advi`` when asked for. ``/em/sample_stats`` holds, per restart, the objective at every kept
        point (each EM step and each kept extrapolation, so it never decreases), ``n_iter`` (passes over the
        data), ``aitken_gap`` and ``accepted_extrapolations``; ``/em``'s attributes give the best restart's,
        with ``acceleration`` and ``convergence_criterion``.
    """
    if not isinstance(model, MixtureModel):
        raise InputTypeError(f"model: expected a mixflow model such as GaussianMixture(2), got {type(model).__name__}")
    if data_name is None:  # a shipped data set's own name, as load_dataset gives it
        data_name = _carried(data, "name")
        data_name = data_name if isinstance(data_name, str) and data_name else "data"
    elif not isinstance(data_name, str):
        raise InputTypeError(f"data_name: expected a str (recorded in the result), got {data_name!r}")
    methods = _method_list(method)
    check_em_options(n_init, init, tol, max_iter, trim, chunk_size, accelerate)
    routed = _route_options(methods, options)
    if tree is not None and not (isinstance(tree, xr.DataTree) and "model" in tree.attrs
                                 and OBSERVED_DATA in tree.children):
        raise InputTypeError(f"tree: expected a mixflow result to add methods to, got {type(tree).__name__}")
    seed = check_seed(random_seed if random_seed is not None or tree is None else tree.attrs["random_seed"])
    if is_chunked(data):  # a long fit over chunks raises its warnings as they come, unrecorded
        em_options = EMOptions(map=False, n_init=int(n_init), init=init, tol=float(tol), max_iter=int(max_iter),
                               trim=trim, chunk_size=chunk_size, accelerate=accelerate)
        return _fit_chunked(model, without_unusable_unread(model, data), weights, methods, routed, tree, seed,
                            data_name, persist, subsample, chunks, em_options, units)
    # the warnings the fit raises are recorded in the result (its summary and report say them), then raised as
    # they came, each distinct one once, under the caller's filters (an "error" filter acts at once, as without
    # the recording); here in fit itself, so that their stack levels still name the caller
    caught = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            _record_all_but_errors()
            data = without_unusable_unread(model, data)
            validated = validate_data(data, weights=weights, unread=unread_columns(model, data),
                                      infinite_hint=model.infinite_values_hint(),
                                      constant_note=model.constant_feature_note(with_prior(methods)))
            units = _units(units, data, validated.features)
            init = _check_against_data(model, init, int(np.count_nonzero(validated.frequency)), validated.n_features,
                                       chunked=False, total_weight=float(validated.frequency.sum()))
            if tree is not None:
                _check_same_fit(tree, model, validated)
                _check_same_units(tree, units)
            em_method = next((m for m in methods if m in ("em", "map")), None)
            if em_method is None and (tree is None or "em" not in tree.children):
                em_method = "map"
            result = tree.copy() if tree is not None else None
            em_options = EMOptions(map=em_method == "map", n_init=int(n_init), init=init, tol=float(tol),
                                   max_iter=int(max_iter), trim=trim, chunk_size=chunk_size, accelerate=accelerate)
            begun = {}  # where each method's warnings begin among those caught
            if em_method is not None:
                begun["em"] = len(caught)
                em_tree = _fit_em(model, validated, em_method, seed, data_name, em_options)
                result = em_tree if result is None else _replace_group(result, em_tree, "em")
            fitted = _with_units(_fit_sampling(model, validated, result, methods, routed, seed,
                                               em_options=em_options, begun=(begun, caught)), units)
    except BaseException:
        _raise_caught(caught)  # the warnings that came before the error, which often explain it
        raise
    _raise_caught(caught)
    methods_of = [None] * len(caught)  # the data's checks raise before any method
    for method, first in sorted(begun.items(), key=lambda item: item[1]):
        methods_of[first:] = [method] * (len(caught) - first)
    kept = [i for i, w in enumerate(caught) if issubclass(w.category, MixflowWarning)]
    return record_warnings(fitted, [caught[i] for i in kept], stage="fit", methods=[methods_of[i] for i in kept],
                           replaced=list(begun))


def _record_all_but_errors() -> None:
    """Within ``catch_warnings(record=True)``: every warning recorded, except those the caller's filters raise."""
    errors = [entry for entry in warnings.filters if entry[0] == "error"]
    warnings.simplefilter("always")
    for _, message, category, module, lineno in reversed(errors):
        warnings.filterwarnings("error", message.pattern if message is not None else "", category,
                                module.pattern if module is not None else "", lineno)


def _raise_caught(caught: list) -> None:
    """Raise the recorded warnings again, each distinct one once, from where they came (module and registry).

    mixflow's own are raised again as they were, naming the first line outside mixflow: the caller's, whose
    module the warnings machinery finds on the stack (a file not among the loaded modules' files: a notebook's
    cell, ``python -c``, ``python -m``'s runner). Another package's keep their file and line.
    """
    if not caught:  # the modules by file, below, walk every loaded module: only when there is a warning to raise
        return
    modules = None
    raised = set()
    for caught_warning in caught:
        key = (caught_warning.category, str(caught_warning.message), caught_warning.filename, caught_warning.lineno)
        if key in raised:
            continue
        raised.add(key)
        if issubclass(caught_warning.category, MixflowWarning):
            warnings.warn(caught_warning.message, caught_warning.category, skip_file_prefixes=PACKAGE_FILES)
            continue
        if modules is None:
            modules = {getattr(module, "__file__", None): (name, module) for name, module in list(sys.modules.items())}
        name, module = modules.get(caught_warning.filename, (None, None))
        registry = None if module is None else module.__dict__.setdefault("__warningregistry__", {})
        warnings.warn_explicit(caught_warning.message, caught_warning.category, caught_warning.filename,
                               caught_warning.lineno, module=name, registry=registry, source=caught_warning.source)


def _sampling_reference(model, data, result: xr.DataTree, methods, seed: int,
                        em_options: EMOptions | None) -> tuple[xr.DataTree, dict]:
    """The fit NUTS and ADVI start from, and what their attributes say of it: ``result``, or a MAP fit to ``data``.

    A degenerate MLE (every restart had a component collapsed onto a point: a singularity of the likelihood,
    where the posterior has no mass) is no place to start: they then start from the MAP estimate
    (``em_options``' starts and tolerances, MAP), fitted here, and say so (a warning, and their ``reference``
    attribute).
    """
    if not (result["em"].attrs.get("method") == "mle" and int(result["em"].attrs.get("degenerate", 0)) and any(
            m in ("mcmc", "advi") for m in methods)):
        return result, {}
    options = em_options or EMOptions()
    if not isinstance(data, ChunkedData):  # on rows in memory a Dask fit's k-means|| is the portfolio
        options = replace(options, init=PORTFOLIO if options.init == SCALABLE_KMEANS else options.init)
    source = _fit_em(model, data, "map", seed, result.attrs.get("data_name", "data"), replace(options, map=True))
    warnings.warn(
        "the MLE in /em is degenerate (a component collapsed onto a point, a singularity of the likelihood, "
        "where the posterior has no mass): MCMC and ADVI start from, and are labelled after, the MAP estimate "
        f"instead (log posterior {float(source['em'].attrs['log_posterior']):.4f}, fitted for them; "
        "method='map' puts it in /em)", DegenerateComponentWarning, skip_file_prefixes=PACKAGE_FILES)
    return source, {"reference": "the MAP estimate (the MLE in /em is degenerate)"}


def _fit_sampling(model, data: Data, result: xr.DataTree, methods, routed: dict, seed: int,
                  stated: dict | None = None, em_options: EMOptions | None = None,
                  reference_fit: tuple | None = None, begun: tuple | None = None) -> xr.DataTree:
    """``result`` with the groups of the sampling methods asked for (NUTS, ADVI), fitted to ``data``.

    They start from ``result``'s EM estimate, or with ``starts="em-optima"`` from the distinct maxima its
    restarts found; ``stated`` is added to each method's attributes. A degenerate MLE is no place to start:
    they then start from a MAP fit (:func:`_sampling_reference`), ``reference_fit`` when given (made once for
    several calls). ``begun``, ``(marks, caught)``: each method's first warning's index in ``caught`` (the warnings
    recorded so far) is put in ``marks`` under its name, so that its warnings are told apart.
    """
    samplers = [m for m in methods if m in ("mcmc", "advi")]
    if begun is not None and samplers:  # the reference fit and the checks below serve the first sampler first
        begun[0][samplers[0]] = len(begun[1])
    source, said = reference_fit or _sampling_reference(model, data, result, methods, seed, em_options)
    stated = {**(stated or {}), **said}
    reference = {name: value.values for name, value in source[EM_ESTIMATE].data_vars.items()}
    if reference["weights"].size != model.n_components:  # EM trimmed components: the model of those it kept
        stated["n_components"] = (f"{reference['weights'].size}: the components EM kept (trim dropped "
                                  f"{model.n_components - reference['weights'].size} of the {model.n_components} "
                                  "declared)")
        model = dataclasses.replace(model, n_components=reference["weights"].size)
    if samplers:
        _check_representable(model, reference, data)
    for sampling in samplers:
        if begun is not None:  # the first sampler's mark set above stays
            begun[0].setdefault(sampling, len(begun[1]))
        engine_options = dict(routed[sampling])
        if engine_options.get("starts") == "em-optima":
            # a chain per optimum, cycled, for NUTS; an ADVI fit from every distinct optimum
            limit = engine_options.get("chains", 4) if sampling == "mcmc" else None
            engine_options["starts"] = _em_optima(model, data, source, limit)
            if len(engine_options["starts"]) == 1 and limit != 1:  # one chain takes one start whatever EM found
                warnings.warn(f"starts='em-optima': EM's restarts reached one distinct maximum (of those that "
                              f"converged, not degenerate, within {OPTIMA_GAP:g} of the best), so every "
                              f"{'chain' if sampling == 'mcmc' else 'fit'} starts there and modes elsewhere are "
                              "found only by chance; more restarts (n_init) may reach others",
                              SamplingWarning, skip_file_prefixes=PACKAGE_FILES)
        with warnings.catch_warnings():
            # PyTensor's note that a compiled step falls back to Python: speed, not results (a workflow's log
            # does not get it either, its fits being this function's)
            warnings.filterwarnings("ignore", message=COMPILER_NOTE, category=UserWarning)
            groups = _engine(sampling)(model, data, reference, random_seed=_method_seed(seed, sampling),
                                       **engine_options)
        if routed[sampling].get("starts") == "em-optima":
            groups["attrs"]["starts"] = (f"em-optima ({len(engine_options['starts'])} distinct)" if limit != 1 else
                                         "em-optima (the best of them: one chain)")  # whatever else EM found
        groups["attrs"] = {**groups.get("attrs", {}), **stated}
        result = _replace_group(result, _sampling_tree(result, groups, sampling), sampling)
    return result


#: The parameters that under- or overflow in data units of extreme magnitude (variances, their matrices)
DISPERSIONS = ("covariance", "variance")


def _check_representable(model, reference: dict, data) -> None:
    """NUTS and ADVI start from, and store, parameters in the data's units: EM's must be valid numbers there.

    EM works in standardised units, so it fits data of any magnitude; but the variances of data near 1e-300
    (about 1e-600) underflow to zero in double precision, and those of data near 1e200 overflow. Such a fit
    has no posterior draws to store: an error naming the data, before any sampling.
    """
    finite = all(np.isfinite(np.asarray(value, dtype=float)).all() for value in reference.values())
    dispersion = [np.asarray(value, dtype=float) for name, value in reference.items() if name in DISPERSIONS]
    if finite and not any((value == 0).any() for value in dispersion):
        return  # nothing under- or overflowed: any other problem is the engines' to say
    try:
        model.check_parameters(reference, data.n_features, name="reference")
    except InputError as error:
        raise InputError(f"data: NUTS and ADVI draw the parameters in the data's units, where EM's estimate is not "
                         f"valid ({error}): the data's values (largest magnitude {data.largest:.3g}) put the variances "
                         "beyond the range of double precision (about 1e-308 to 1e308); rescale the data (for "
                         "example to unit standard deviation) and fit again") from None


def _check_against_data(model, init, n_positive: int, n_features: int, *, chunked: bool, total_weight: float):
    """``n_components`` and ``init`` checked against validated data (numpy or Dask); the starting point.

    The data must have at least one distinct row with positive weight per component, and frequency weights
    totalling at least one observation per component: the total weight is the number of observations (the
    sample size of BIC, the observations' worth of a component), so weights scaled to sum to 1 would make
    every component less than an observation. A dict of starting parameters comes back checked
    (:meth:`check_parameters`); ``"kmeans||"`` needs Dask input, and a family that starts from distances
    between rows.
    """
    if n_positive < model.n_components:
        raise InputError(f"data: expected at least n_components = {model.n_components} distinct rows with "
                         f"positive weight, got {n_positive}")
    check_total_weight(total_weight, model.n_components)
    counting = getattr(model, "n_parameters", None)  # a family of one's own may not count its parameters
    n_parameters = counting(n_features) if counting is not None else 0
    if n_parameters >= total_weight:  # fewer observations than free parameters: they cannot be determined
        advice = (" (each component rests on a handful of rows); compare fewer components (select_k)"
                  if model.n_components > 1 else "; use fewer features or a model of fewer parameters")
        has = agreeing(model.n_components, "has", "have")
        warnings.warn(f"n_components: {counted(model.n_components, 'component')} {has} {n_parameters} free "
                      f"parameters, as many as or more than the {total_weight:g} observations: the data cannot "
                      f"determine them{advice}", MixflowWarning, skip_file_prefixes=PACKAGE_FILES)
    if isinstance(init, dict):
        return model.check_parameters(init, n_features)
    if init == SCALABLE_KMEANS and not chunked:
        raise InputError(f"init: expected one of {list(_INIT[:-1])} or a dict of parameters for data in memory, "
                         f"got {init!r}, the start of Dask input (its passes over the blocks); 'kmeans' seeds "
                         "k-means++ from every row of data in memory")
    if init == SCALABLE_KMEANS and model.family == "regression":
        raise InputError(f"init: expected a start other than {init!r} for a regression mixture, whose lines "
                         "need not be clusters of rows (k-means|| seeds by distances between rows); use "
                         "'auto' or 'random-partition'")
    return init


def _with_units(result: xr.DataTree, units: dict) -> xr.DataTree:
    """The result as a :class:`~mixflow.container.tree.Container`, with the data's units recorded."""
    if units:
        result.attrs[UNITS] = json.dumps(units)
    return as_container(result)


def _fit_chunked(model, data, weights, methods, routed, tree, seed, data_name, persist, subsample, chunks,
                 options, units) -> xr.DataTree:
    """:func:`fit` of Dask input.

    EM or MAP blockwise (:mod:`mixflow.engines.em_chunked`); NUTS on the uniform subsample the result keeps
    (its size stated in its attributes); ADVI on minibatches streamed from every block
    (:mod:`mixflow.engines.advi_stream`) where the family allows, else on the subsample.
    """
    if tree is not None:
        raise InputError("tree: expected None with Dask data (a result of Dask data holds a sample of the rows, "
                         f"not the data to add methods to), got a {type(tree).__name__}")
    check_integer("subsample", subsample, lambda v: v >= model.n_components,
                  f"an integer >= n_components = {model.n_components}")
    validated = validate_chunked(data, weights=weights, persist=persist, chunks=chunks,
                                 constant_note=model.constant_feature_note(with_prior(methods)))
    units = _units(units, data, validated.features)  # checked before the passes over the data
    routed, streamed = _advi_stream(model, validated, methods, routed, seed)  # minibatch_size checked here too
    init = _check_against_data(model, options.init, validated.summary["n_positive"], validated.n_features,
                               chunked=True, total_weight=validated.total_weight)
    em_method = "em" if "em" in methods else "map"  # NUTS and ADVI alone start from the MAP estimate
    options = EMOptions(**{**options.__dict__, "map": em_method == "map", "init": init, "subsample": int(subsample)})
    result = _fit_em(model, validated, em_method, seed, data_name, options)
    if not any(m in ("mcmc", "advi") for m in methods):
        return _with_units(result, units)
    observed = result[OBSERVED_DATA]
    sample = Data(values=observed["x"].values, features=observed["feature"].values, obs=observed["obs"].values,
                  weights=observed["weights"].values if "weights" in observed else None)
    stated = {"subsample_rows": sample.n_obs, "n_obs": validated.n_obs,
              "data": f"the posterior given a uniform sample of {sample.n_obs} of the {validated.n_obs} rows "
                      "(Dask input; /observed_data), not given every row"}
    on_sample = [m for m in methods if not (streamed and m == "advi")]
    reference_fit = _sampling_reference(model, validated, result, methods, seed, options)  # on every row, once
    result = _fit_sampling(model, sample, result, on_sample, routed, seed, stated, options, reference_fit)
    if streamed:
        stated = {"subsample_rows": sample.n_obs, "n_obs": validated.n_obs,
                  "data": f"the posterior given all {validated.n_obs} rows (Dask input; minibatches streamed from "
                          f"the blocks); log-likelihood and responsibilities of the uniform sample of {sample.n_obs} "
                          "rows in /observed_data"}
        result = _fit_sampling(model, sample, result, ["advi"], routed, seed, stated, options, reference_fit)
    return _with_units(result, units)


def _advi_stream(model, validated: ChunkedData, methods, routed: dict, seed: int) -> tuple[dict, bool]:
    """``routed`` with ADVI's minibatch stream from the Dask blocks, when ADVI is asked for and the family streams."""
    if "advi" not in methods:
        return routed, False
    from mixflow.engines.advi_stream import MinibatchStream, streams

    if not streams(model):
        return routed, False
    options = dict(routed["advi"])
    batch = options.pop("minibatch_size", None)
    options["stream"] = MinibatchStream(validated, batch, _method_seed(seed, "advi"))
    return {**routed, "advi": options}, True


def _fit_em_chunked(model, data: ChunkedData, options: EMOptions, random_seed: int) -> tuple[dict, dict]:
    """:func:`~mixflow.engines.em.fit_em` for chunked data; also the rows of the sample the result keeps.

    The sample is ``options.subsample`` rows drawn uniformly (all the rows when there are no more), from a
    seed derived from ``random_seed``; its responsibilities are the ones returned. A sample of every row holds
    the data in memory already: the fit runs there, as for numpy input (the passes of its continued runs and local
    search would otherwise each be a round of Dask tasks over the blocks: a thousand for a small data set), but
    with ``init="kmeans||"``, whose seeding passes are over the blocks.
    """
    prepared = prepare_chunked(model, data, options.chunk_size)
    seed = int(np.random.SeedSequence([random_seed, 1]).generate_state(1, np.uint64)[0] >> 1)
    values, weights, rows = sample_rows(data, options.subsample, seed)
    weights = np.ones(rows.size) if weights is None else weights
    sample = model.prepare_rows(values, weights, rows, prepared.constants)
    # (init="kmeans||" seeds from the blocks themselves: it keeps them)
    every_row = rows.size == data.n_obs and options.init != SCALABLE_KMEANS
    em = fit_prepared(model, data, sample if every_row else prepared, options, random_seed, sample)
    return em, {"rows": rows, "values": values, "weights": None if data.weights is None else weights}


def _carried(data, key: str):
    """What a DataFrame (or other data with ``attrs``) carries under ``key`` in its ``attrs``, else None."""
    attrs = getattr(data, "attrs", None)
    return attrs.get(key) if isinstance(attrs, dict) else None


def _units(units, data, features) -> dict:
    """The units given, else those a DataFrame carries in ``attrs["units"]`` for the fitted columns."""
    if units is not None:
        return check_units(units, features)
    carried = _carried(data, "units")
    if not isinstance(carried, dict):
        return {}
    names = [str(f) for f in features]
    return check_units({k: v for k, v in carried.items() if str(k) in names}, features)


def _em_optima(model, validated, result: xr.DataTree, chains: int | None) -> list[dict]:
    """The distinct maxima EM's converged, non-degenerate restarts reached (see ``distinct_optima``)."""
    stats = result[EM_SAMPLE_STATS]
    names = [name for name in result[EM_ESTIMATE].data_vars if f"optimum_{name}" in stats.data_vars]
    if len(names) != len(result[EM_ESTIMATE].data_vars):
        raise InputError("starts: 'em-optima' needs the optima of EM's restarts, which this tree's /em does not "
                         "hold (fitted by an older mixflow); fit EM again")
    usable = stats["converged"].values.astype(bool) & ~stats["degenerate"].values.astype(bool)
    objectives = np.where(usable, stats["final_objective"].values, -np.inf)
    optima = [{name: stats[f"optimum_{name}"].values[i] for name in names} for i in range(objectives.size)]
    found = distinct_optima(model, validated, optima, objectives, None if chains is None else int(chains))
    return found or [fitted_estimate(result)]


def _fit_em(model, validated, em_method, seed, data_name, options: EMOptions) -> xr.DataTree:
    observed_attrs = {}
    if isinstance(validated, ChunkedData):
        em, sample = _fit_em_chunked(model, validated, options, seed)
        obs, values, weights = sample["rows"], sample["values"], sample["weights"]
        observed_attrs = {"n_obs": validated.n_obs, "total_weight": validated.total_weight,
                          "sample": f"a uniform sample of {values.shape[0]} of the {validated.n_obs} rows (Dask "
                                    "input): the rows the starts were drawn from and whose responsibilities are kept"}
    else:
        em = fit_em(model, validated, options, seed)
        obs, values, weights = validated.obs, validated.values, validated.weights
    coords = {"obs": obs, "feature": validated.features, "feature_": validated.features,
              "component": np.arange(em["n_active"]),
              "restart": np.arange(em["sample_stats"]["n_iter"][1].shape[0]),
              "iteration": np.arange(em["sample_stats"]["log_likelihood"][1].shape[1]),
              **model.extra_coords(validated)}
    observed = {"x": (("obs", "feature"), values)}
    if weights is not None:
        observed["weights"] = (("obs",), weights)
    groups = {
        OBSERVED_DATA: {"variables": observed, "attrs": observed_attrs},
        "em": {"attrs": em["attrs"]},
        EM_ESTIMATE: {"variables": em["estimate"]},
        EM_RESPONSIBILITIES: {"variables": em["responsibilities"]},
        EM_SAMPLE_STATS: {"variables": em["sample_stats"]},
    }
    return build_tree(groups, coords=coords, attrs=make_attrs(model, data_name=data_name, random_seed=seed))


def _sampling_tree(result: xr.DataTree, groups: dict, method: str) -> xr.DataTree:
    """A tree holding ``/method/...`` built from an engine's plain groups, with the result's coordinates."""
    coords = {name: result[EM_ESTIMATE][name].values for name in result[EM_ESTIMATE].coords}
    coords.update({name: result[OBSERVED_DATA][name].values for name in result[OBSERVED_DATA].coords})
    coords.update(groups.get("coords", {}))
    nested = {f"{method}/{name}": group for name, group in groups["groups"].items()}
    nested[method] = {"attrs": groups.get("attrs", {})}
    return build_tree(nested, coords=coords, attrs={})


def _replace_group(result: xr.DataTree, other: xr.DataTree, name: str) -> xr.DataTree:
    """``result`` with its child ``name`` (and, when it has none, the observed data) taken from ``other``."""
    nodes = {node.path: node.to_dataset(inherit=False) for node in result.subtree
             if not (node.path == f"/{name}" or node.path.startswith(f"/{name}/"))}
    for node in other.subtree:
        if node.path == f"/{name}" or node.path.startswith(f"/{name}/") or node.path not in nodes:
            nodes[node.path] = node.to_dataset(inherit=False)
    nodes["/"] = nodes["/"].assign_attrs(result.attrs)
    return xr.DataTree.from_dict(nodes)


_PREDICTION_METHODS = ("em", "bootstrap", "mcmc", "stacked", "advi", "advi_stacked")


def _check_prediction_method(tree: xr.DataTree, method) -> str:
    """The method to predict from: one the container holds (ValueError naming ``method`` otherwise)."""
    if not isinstance(method, str) or method not in _PREDICTION_METHODS:
        raise InputError(f"method: expected one of {list(_PREDICTION_METHODS)}, got {method!r}")
    if not isinstance(tree, xr.DataTree) or "model" not in tree.attrs or "em" not in tree.children:
        raise InputError("tree: expected a mixflow result with an /em estimate (from mixflow.fit), got "
                         f"{type(tree).__name__} without one")
    if method != "em" and method_draws(tree, method) is None:
        raise InputError(f"method: expected a method the result holds, one of {available_methods(tree)}, got "
                         f"{method!r}" + (" (run mixflow.bootstrap first)" if method == "bootstrap" else ""))
    return method


def _parameter_sets(tree: xr.DataTree, method: str):
    """The model (with as many components as the estimate) and the parameters: the estimate, or the draws.

    Returns ``(model, params, draws, positions)``: ``params`` the EM estimate by name; ``draws`` None for
    EM, else ``{name: array (n_draws, ...)}`` (chains and draws flattened, failed bootstrap replicates left
    out) and ``positions`` the ``(chain, draw)`` arrays (n_draws,) locating each.
    """
    params = fitted_estimate(tree)
    model = fitted_model(tree, params["weights"].size)
    if method == "em":
        return model, params, None, None
    stacked = method_draws(tree, method).stack(sample=("chain", "draw"))
    flat = {name: da.transpose("sample", ...).values for name, da in stacked.data_vars.items()}
    complete = np.all([np.isfinite(v.reshape(v.shape[0], -1)).all(axis=1) for v in flat.values()], axis=0)
    if not complete.any():
        raise InputError(f"method: expected draws with finite values, got none in {method!r}")
    draws = {name: value[complete] for name, value in flat.items()}
    return model, params, draws, (stacked["chain"].values[complete], stacked["draw"].values[complete])


@contextlib.contextmanager
def _naming_new_data():
    """Errors of the checks shared with training data name ``new_data``, the argument at fault here.

    Those of the fitted parameters name the results (``tree``), whose estimate they are: the caller passed no
    ``params``.
    """
    try:
        yield
    except InputError as error:
        message = str(error)
        if message.startswith("params["):
            raise InputError(f"tree: the fitted estimate's {message[len('params'):]}") from None
        if not message.startswith("data:"):
            raise
        raise InputError(f"new_data:{message[len('data:'):]}") from None


def _chunked_new_data(tree: xr.DataTree, model, new_data, method: str):
    """Dask ``new_data`` as chunked rows with the features read (predictions from the EM estimate only)."""
    if method != "em":
        raise InputError(f"method: expected 'em' with Dask new_data (the draws' predictions need the rows in "
                         f"memory), got {method!r}")
    return as_chunked(new_data, name="new_data", features=_read_features(tree, model))


def _chunked_predictions(tree: xr.DataTree, model, params: dict, chunked: ChunkedData, what: str):
    """:func:`chunked_predictions` in working units from the estimate's moments, else the fitted rows'."""
    return chunked_predictions(model, params, chunked, what, _fit_moments(tree, model, params, chunked.features))


def _fit_moments(tree: xr.DataTree, model, params: dict, features):
    """The moments that fix the working units of new rows: the estimate's, else the fitted rows' (of ``features``).

    The estimate's need no pass over the data. A regression's estimate does not describe its covariates: the rows
    ``/observed_data`` holds (every row of numpy input, a uniform sample of Dask input) fix its units. Never the
    new rows' own, so that a row's score does not depend on the rows scored with it (one far row would take the
    others' precision).
    """
    moments = model.estimate_moments(params)
    if moments is None:
        observed = tree[OBSERVED_DATA]
        names = [str(f) for f in observed["feature"].values]
        columns = [names.index(str(f)) for f in features]
        moments = moments_of(observed["x"].values[:, columns],
                              observed["weights"].values if "weights" in observed else None)
    return moments


def _lazy(tree: xr.DataTree, values, what: str) -> xr.DataArray:
    """Lazy predictions as a DataArray whose ``obs`` are the rows' positions (a Dask frame's index is not read)."""
    obs = {"obs": np.arange(values.shape[0])}
    if what == "responsibilities":
        return xr.DataArray(values, dims=("obs", "component"),
                            coords={**obs, "component": tree[EM_ESTIMATE]["component"].values}, name=what)
    return xr.DataArray(values, dims=("obs",), coords=obs, name={"labels": "component"}.get(what, what))


def responsibilities(tree: xr.DataTree, data, *, to_zarr=None, chunks: int | None = None):
    """Every row's responsibilities under the EM estimate, as a lazy Dask array (n_obs, n_components).

    Parameters
    ----------
    tree : xarray.DataTree
        A result of :func:`fit`.
    data : Dask array, Dask DataFrame, Dask-backed xarray object, or numpy/pandas data
        Rows with the fitted features; numpy or pandas data are wrapped in a Dask array of ``chunks`` rows
        per block (default 100000).
    to_zarr : str or path, optional
        Write the responsibilities to this Zarr store block by block (never whole in memory) and return
        the array read back from it.
    chunks : int, optional
        Rows per block for numpy input.

    Returns
    -------
    dask.array.Array
        Computed block by block when asked for (``.compute()``, ``da.to_zarr``); each block is checked as
        it is computed, errors naming the chunk and rows. ``.argmax(axis=1)`` gives the hard labels.
    """
    from mixflow.chunked import require_dask

    da = require_dask("data", "mixflow.responsibilities")
    method = _check_prediction_method(tree, "em")
    model, params, _, _ = _parameter_sets(tree, method)
    features = _read_features(tree, model)
    if not is_chunked(data):
        validated = validate_data(data, name="data", features=features, warn_constant=False)
        data = da.from_array(validated.values, chunks=(100_000 if chunks is None else chunks, -1))
    chunked = as_chunked(data, name="data", features=features, chunks=chunks if is_chunked(data) else None)
    resp = _chunked_predictions(tree, model, params, chunked, "responsibilities")
    if to_zarr is None:
        return resp
    return da.from_zarr(str(_write_zarr(da, resp, Path(to_zarr))))


def _write_zarr(da, array, target: Path) -> Path:
    """Write ``array`` to the Zarr store ``target``: a new store, or one that replaces an earlier store whole.

    Written beside it under a hidden name, then renamed into place, so that ``target`` is the earlier store or the
    complete new one, never half of each (a block that fails its checks stops the write). A file, or a folder that
    holds anything but a Zarr store, is refused: it is not a store of ours to replace.
    """
    store = target.is_dir() and any((target / name).exists() for name in ("zarr.json", ".zarray", ".zgroup"))
    if target.exists() and not store and not (target.is_dir() and not any(target.iterdir())):
        raise InputError(f"to_zarr: expected a new path or a Zarr store to replace, got {str(target)!r}, which "
                         "holds other files: choose another path")
    temporary = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    aside = target.with_name(f".{target.name}.earlier-{os.getpid()}")
    try:
        da.to_zarr(array, str(temporary), overwrite=True)
        if target.exists():
            os.replace(target, aside)
        try:
            os.replace(temporary, target)
        except OSError:
            if aside.exists():  # the earlier store back in place
                os.replace(aside, target)
            raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
        shutil.rmtree(aside, ignore_errors=True)
    return target


def _read_features(tree: xr.DataTree, model) -> list:
    """The fitted features new rows must hold: a regression's columns beside its formula's are not needed."""
    fitted = tree[OBSERVED_DATA]["feature"].values
    unread = set(map(str, model.unread_columns(fitted)))
    return [f for f in fitted if str(f) not in unread]


def _new_data(tree: xr.DataTree, model, new_data, params: dict):
    """``new_data`` checked like training data (same features, the family's constraints), and prepared.

    In the working units the fit fixes (:func:`_fit_moments`), not the rows' own: each row is scored alone.
    """
    data = validate_data(new_data, name="new_data", features=_read_features(tree, model), warn_constant=False)
    with _naming_new_data():  # prepare_rows checks the rows as the family's prepare does (counts, classes)
        constants = model.chunked_constants(_fit_moments(tree, model, params, data.features), data.features)
        prepared = model.prepare_rows(data.values, data.frequency, np.arange(data.n_obs), constants)
    return data, prepared


def _posterior_spread(model, data, draws: dict, prepared) -> dict:
    """Responsibilities (mean, sd) and pointwise log-likelihoods over draws, every row checked."""
    spread = responsibilities_over_draws(model, data, draws, log_likelihood=True, prepared=prepared)
    with _naming_new_data():
        check_densities(spread["log_likelihood"].min(axis=0), np.ones(data.n_obs))
    return spread


def _obs_component(tree: xr.DataTree, data, values: np.ndarray, name: str) -> xr.DataArray:
    return xr.DataArray(values, dims=("obs", "component"),
                        coords={"obs": data.obs, "component": tree[EM_ESTIMATE]["component"].values}, name=name)


def predict_proba(tree: xr.DataTree, new_data, method: str = "em", *, return_sd: bool = False):
    """Responsibilities of new observations under the EM estimate or averaged over a method's draws.

    Parameters
    ----------
    tree : xarray.DataTree
        A result of :func:`fit`.
    new_data : array-like of shape (n_obs, n_features) or DataFrame
        Same features as the fitted data (DataFrame columns are matched by name), checked like the data
        of :func:`fit` (finite values, the family's constraints such as counts for a Poisson mixture).
        Dask input (``method="em"``) gives a lazy, Dask-backed result, each block checked as it is computed.
    method : {"em", "bootstrap", "mcmc", "stacked", "advi", "advi_stacked"}, default "em"
        ``"em"``: one E-step at the EM (or MAP) estimate. The others: for each draw of the method (the
        bootstrap replicates, NUTS draws, ADVI draws, or the draws resampled over the modes by their stacking
        weights: ``stacked`` for NUTS, ``advi_stacked`` for ADVI fitted from several starts; all aligned to
        the EM labels) the responsibilities, and their mean over draws.
    return_sd : bool, default False
        Also return the sd over draws of each responsibility (ddof=1; zeros for ``"em"``).

    Returns
    -------
    xarray.DataArray of shape (n_obs, n_components), or a tuple (mean, sd) of them with ``return_sd``
        Dims ``obs`` and ``component``.

    """
    if not isinstance(return_sd, bool):
        raise InputTypeError(f"return_sd: expected True or False, got {return_sd!r}")
    method = _check_prediction_method(tree, method)
    if is_chunked(new_data):
        model, params, _, _ = _parameter_sets(tree, method)
        chunked = _chunked_new_data(tree, model, new_data, method)
        mean = _lazy(tree, _chunked_predictions(tree, model, params, chunked, "responsibilities"), "responsibilities")
        return (mean, xr.zeros_like(mean).rename("responsibilities_sd")) if return_sd else mean
    model, params, draws, _ = _parameter_sets(tree, method)
    data, prepared = _new_data(tree, model, new_data, params)
    if draws is None:
        with _naming_new_data():
            resp, _ = e_step(model, params, prepared, data.n_features)
        sd = np.zeros_like(resp)
    else:
        spread = _posterior_spread(model, data, draws, prepared)
        resp, sd = spread["mean"], spread["sd"]
    mean = _obs_component(tree, data, resp, "responsibilities")
    return (mean, _obs_component(tree, data, sd, "responsibilities_sd")) if return_sd else mean


def predict(tree: xr.DataTree, new_data, method: str = "em") -> xr.DataArray:
    """Most probable component of each new observation (the argmax of :func:`predict_proba`).

    Dask ``new_data`` (EM only) gives a lazy DataArray of the labels (positions along ``obs``).
    """
    if is_chunked(new_data):
        method = _check_prediction_method(tree, method)
        model, params, _, _ = _parameter_sets(tree, method)
        labels = _chunked_predictions(tree, model, params, _chunked_new_data(tree, model, new_data, method), "labels")
        return _lazy(tree, labels, "labels")
    proba = predict_proba(tree, new_data, method)
    labels = proba["component"].values[proba.values.argmax(axis=1)]
    return xr.DataArray(labels, dims=("obs",), coords={"obs": proba["obs"].values}, name="component")


def score_samples(tree: xr.DataTree, new_data, method: str = "em") -> xr.DataArray:
    """Log density of each new observation under the fitted mixture.

    Parameters
    ----------
    tree, new_data, method
        As for :func:`predict_proba`.

    Returns
    -------
    xarray.DataArray of shape (n_obs,)
        ``"em"``: log p(x_n | estimate). The others: the log of the density averaged over the S draws,
        ``logsumexp_s log p(x_n | draw s) - log S`` (the log posterior predictive density of each row, as
        in the ``elpd`` of a held-out point). A regression's density is that of the response given the
        covariates.

    """
    method = _check_prediction_method(tree, method)
    model, params, draws, _ = _parameter_sets(tree, method)
    if is_chunked(new_data):
        chunked = _chunked_new_data(tree, model, new_data, method)
        scores = _chunked_predictions(tree, model, params, chunked, "log_density")
        return _lazy(tree, scores, "log_density")
    data, prepared = _new_data(tree, model, new_data, params)
    if draws is None:
        with _naming_new_data():
            _, scores = e_step(model, params, prepared, data.n_features)
    else:
        pointwise = _posterior_spread(model, data, draws, prepared)["log_likelihood"]
        scores = logsumexp(pointwise, axis=0) - np.log(pointwise.shape[0])
    return xr.DataArray(scores, dims=("obs",), coords={"obs": data.obs}, name="log_density")


def sample(tree: xr.DataTree, n: int, method: str = "em", *, random_seed: int | None = None) -> xr.Dataset:
    """Draw ``n`` new rows, with their components, from the fitted mixture or the posterior predictive.

    Parameters
    ----------
    tree : xarray.DataTree
        A result of :func:`fit` of a family that models its rows alone (Gaussian, Poisson, soft k-means).
    n : int
        Number of rows, >= 1.
    method : {"em", "bootstrap", "mcmc", "stacked", "advi", "advi_stacked"}, default "em"
        ``"em"``: every row from the EM (or MAP) estimate. The others: each row from its own draw, picked
        uniformly among the method's draws (the posterior predictive distribution).
    random_seed : int, optional
        Seed of every random choice; same seed, same rows. Drawn at random when None.

    Returns
    -------
    xarray.Dataset
        ``x`` (obs, feature) the new rows, ``component`` (obs) the component of each (labels of the EM
        estimate, to which the draws are aligned); for draws also ``chain`` and ``draw`` (obs), the draw
        each row came from.

    """
    method = _check_prediction_method(tree, method)
    check_count("n", n, 1)
    rng = np.random.default_rng(check_seed(random_seed))
    model, params, draws, positions = _parameter_sets(tree, method)
    n = int(n)
    variables = {}
    if draws is None:
        values, labels = model.sample_points(params, n, rng)
    else:
        picked = rng.integers(draws["weights"].shape[0], size=n)
        values, labels = np.empty((n, tree[OBSERVED_DATA].sizes["feature"])), np.empty(n, dtype=np.int64)
        for s in np.unique(picked):
            rows = np.flatnonzero(picked == s)
            one = {name: value[s] for name, value in draws.items()}
            values[rows], labels[rows] = model.sample_points(one, rows.size, rng)
        variables = {"chain": ("obs", positions[0][picked]), "draw": ("obs", positions[1][picked])}
    components = tree[EM_ESTIMATE]["component"].values
    return xr.Dataset({"x": (("obs", "feature"), values), "component": ("obs", components[labels]), **variables},
                      coords={"obs": np.arange(n), "feature": tree[OBSERVED_DATA]["feature"].values},
                      attrs={"method": method})
