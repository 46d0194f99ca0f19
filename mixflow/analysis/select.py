"""Choosing the number of components K: information criteria, cross-validation and PSIS-LOO.

For each K the declared model is refitted with ``n_components=K``:

- by EM (MLE or MAP): log-likelihood, BIC, AIC and ICL (lower is better; BIC = -2 log L + p log n, the
  opposite sign of mclust's), and the held-out log-likelihood by V-fold cross-validation (higher is
  better; the sum over observations of log p(x_n) under the fit that did not see x_n, with the
  standard error sqrt(n) sd of the pointwise terms, as for an ELPD);
- by MCMC: the PSIS-LOO expected log pointwise predictive density with its standard error, and the
  ``arviz_stats.compare`` differences and stacking weights.
"""

import dataclasses
import json
import secrets
import warnings
from functools import partial
from time import perf_counter

import numpy as np
import pandas as pd
import xarray as xr
from scipy.special import logsumexp

from mixflow.arguments import check_count
from mixflow.checks import check_seed
from mixflow.chunked import as_chunked, is_chunked, row_draws
from mixflow.container.layout import EM_ESTIMATE, MCMC_MODES
from mixflow.container.read import flagged_fit, frequency_weights, has_group
from mixflow.data import Data, check_folds, check_total_weight, unread_columns, validate_data, without_unusable_unread
from mixflow.engines.em import SET_ASIDE_IF
from mixflow.engines.em_steps import e_step
from mixflow.engines.sampling_diagnostics import format_ess, format_rhat
from mixflow.engines.stacking import stacking_weights
from mixflow.errors import InputError, InputTypeError
from mixflow.families.base import MixtureModel, few_rows_components, with_prior
from mixflow.parallel import active_client, default_jobs, parallel_results
from mixflow.warnings import PACKAGE_FILES, ConvergenceWarning, DeclarationWarning, MixflowWarning, SamplingWarning
from mixflow.wording import agreeing, counted, fixed_places, listed

__all__ = [
    "FIT_CHOICES",
    "cross_validated_chunked",
    "cross_validated_log_likelihood",
    "ks_to_fit",
    "held_out_weights",
    "loo_table",
    "pointwise_log_density",
    "select_k",
    "weighted_sum_and_se",
]

_METHODS = ("em", "map", "mcmc")


def pointwise_log_density(model, params: dict, data: Data) -> np.ndarray:
    """Pointwise log density log p(x_n) of a mixture, shape (n_obs,) (frequency weights not applied)."""
    return e_step(model, params, model.prepare_to_score(data), data.n_features)[1]


def _estimate(tree) -> dict:
    estimate = tree[EM_ESTIMATE].to_dataset()
    return {name: estimate[name].values for name in estimate.data_vars}


def _subset(data: Data, rows: np.ndarray) -> Data:
    return Data(values=data.values[rows], features=data.features, obs=data.obs[rows],
                weights=None if data.weights is None else data.weights[rows])


def _frame(data: Data) -> pd.DataFrame:
    return pd.DataFrame(data.values, columns=data.features)


_MAX_EXPANDED_UNITS = 10_000_000
# numpy's multivariate hypergeometric draws (method "marginals") take fewer units than this in all
_MAX_HYPERGEOMETRIC_UNITS = 1_000_000_000


def held_out_weights(data: Data, n_folds: int, rng: np.random.Generator) -> np.ndarray:
    """How much of each row's weight each fold holds out, shape (n_folds, n_obs).

    The unit of the split is one frequency unit, not one row: a row of integer weight w is w identical
    observations, and they are dealt to the folds like any others, so a row (a class, a count value)
    usually has units in several folds and every fold's training data are the remaining weights. The
    units are permuted at random and split into ``n_folds`` near-equal parts (``numpy.array_split``).
    Without weights (``data.weights`` None) the units are the rows, and the folds are the permutation of
    the rows split in the same way (the folds of earlier versions). Beyond ten million units, the same
    distribution is drawn without expanding them (successive multivariate hypergeometric draws of the
    fold sizes); from a billion units (beyond numpy's hypergeometric draws), each unit goes to a fold at
    random with equal chances (a multinomial draw per row), so that the folds' sizes vary by about their
    square root, a few parts in 1e5 of them. Non-integer weights cannot be split into units: each row is
    then held out whole, with its weight (a fold predicts new rows, not new units; with rows that aggregate
    many units this understates what a larger K gains).

    Parameters
    ----------
    data : mixflow.data.Data
    n_folds : int
    rng : numpy.random.Generator

    Returns
    -------
    ndarray of shape (n_folds, n_obs)
        Held-out weight of each row in each fold; the columns sum to the rows' weights (1 without weights).

    """
    check_count("n_folds", n_folds, 2)
    check_folds(n_folds, data.n_obs, data.weights)
    frequency = data.weights
    if frequency is None or not np.array_equal(frequency, np.round(frequency)):
        return _row_folds(data.n_obs, frequency, n_folds, rng)
    counts = frequency.astype(np.int64)
    total = int(counts.sum())
    held_out = np.zeros((n_folds, counts.size))
    if total <= _MAX_EXPANDED_UNITS:
        units = np.repeat(np.arange(counts.size), counts)[rng.permutation(total)]
        for fold, part in enumerate(np.array_split(units, n_folds)):
            held_out[fold] = np.bincount(part, minlength=counts.size)
        return held_out
    if total >= _MAX_HYPERGEOMETRIC_UNITS:  # beyond numpy's hypergeometric: each unit to a fold at random alike
        return rng.multinomial(counts, np.full(n_folds, 1.0 / n_folds)).T.astype(float)
    sizes = total // n_folds + (np.arange(n_folds) < total % n_folds)
    remaining = counts.copy()
    for fold, size in enumerate(sizes):
        drawn = rng.multivariate_hypergeometric(remaining, int(size), method="marginals")
        held_out[fold], remaining = drawn, remaining - drawn
    return held_out


def _row_folds(n_obs: int, frequency, n_folds: int, rng: np.random.Generator) -> np.ndarray:
    """Whole rows to folds (unweighted data, or non-integer weights): a permutation split in n_folds parts."""
    held_out = np.zeros((n_folds, n_obs))
    for fold, part in enumerate(np.array_split(rng.permutation(n_obs), n_folds)):
        held_out[fold, part] = 1.0 if frequency is None else frequency[part]
    return held_out


def cross_validated_log_likelihood(model, data: Data, *, method: str = "em", n_folds: int = 5,
                                   random_seed: int = 0, **fit_kwargs) -> tuple[float, float, np.ndarray]:
    """Held-out log-likelihood by V-fold cross-validation of the EM fit.

    Parameters
    ----------
    model : MixtureModel
    data : mixflow.data.Data
        Validated data. The frequency units are split into ``n_folds`` random folds (see
        :func:`held_out_weights`: a row of integer weight w is w observations, each in its own fold);
        each fold's fit sees the remaining weights.
    method : {"em", "map"}, default "em"
    n_folds : int, default 5
    random_seed : int, default 0
        Seed of the split and of the fits.
    **fit_kwargs
        Passed to :func:`mixflow.fit` (``n_init``, ``tol``, ...).

    Returns
    -------
    total : float
        Sum over units of log p(x | fit without the unit's fold).
    standard_error : float
        sqrt(W) times the sd (ddof=1) of those unit terms, W the total weight (as for an ELPD).
    pointwise : ndarray of shape (n_obs,)
        Per row, the mean of its units' held-out log densities (``total = weights @ pointwise``); for
        unweighted data, log p(x_n | fit without x_n's fold); NaN for a row of zero weight.

    """
    total, standard_error, pointwise, _ = _cross_validate(model, data, method=method, n_folds=n_folds,
                                                          random_seed=random_seed, **fit_kwargs)
    return total, standard_error, pointwise


def _cross_validate(model, data: Data, *, method: str, n_folds: int, random_seed: int,
                    **fit_kwargs) -> tuple[float, float, np.ndarray, int]:
    """:func:`cross_validated_log_likelihood`, and how many folds' fits are degenerate or spurious."""
    from mixflow.fitting import fit

    seeds = np.random.SeedSequence(random_seed).spawn(n_folds + 1)
    held_out = held_out_weights(data, n_folds, np.random.default_rng(seeds[0]))
    flagged = 0
    log_density = np.zeros_like(held_out)
    for fold in range(n_folds):
        training = data.frequency - held_out[fold]
        rows = np.flatnonzero(training > 0)
        train = _subset(data, rows)
        weights = None if data.weights is None else training[rows]
        tree = fit(model, _frame(train), method=method, weights=weights,
                   random_seed=int(seeds[fold + 1].generate_state(1)[0]), **fit_kwargs)
        flagged += any(flagged_fit(tree["em"].attrs))
        scored = np.flatnonzero(held_out[fold] > 0)
        log_density[fold, scored] = pointwise_log_density(model, _estimate(tree), _subset(data, scored))
    units = held_out.sum(axis=0)
    pointwise = np.divide((held_out * log_density).sum(axis=0), units, out=np.full(data.n_obs, np.nan),
                          where=units > 0)
    total, standard_error = weighted_sum_and_se(log_density.ravel(), held_out.ravel())
    return total, standard_error, pointwise, flagged


def _fold(n_folds: int, rng: np.random.Generator, n: int) -> np.ndarray:
    """The folds of ``n`` rows, drawn uniformly."""
    return rng.integers(n_folds, size=n)


def _check_row_folds(n_folds: int, n_rows: int) -> None:
    """Dask data's folds hold out whole rows: no more folds than rows."""
    if n_folds > n_rows:
        raise InputError(f"n_folds: expected at most the number of rows ({n_rows}; Dask data's folds hold out whole "
                         f"rows), got {n_folds}")


def cross_validated_chunked(model, data, weights=None, *, method: str = "em", n_folds: int = 5,
                            random_seed: int = 0, **fit_kwargs) -> tuple[float, float]:
    """:func:`cross_validated_log_likelihood` of Dask data: the total and its standard error.

    Folds drawn row by row, blockwise: see :func:`_cross_validate_chunked`.
    """
    total, standard_error, _ = _cross_validate_chunked(model, data, weights, method=method, n_folds=n_folds,
                                                       random_seed=random_seed, **fit_kwargs)
    return total, standard_error


def _cross_validate_chunked(model, data, weights=None, *, method: str = "em", n_folds: int = 5,
                            random_seed: int = 0, **fit_kwargs) -> tuple[float, float, int]:
    """:func:`cross_validated_log_likelihood` of Dask data: folds drawn row by row, blockwise.

    Each row goes, whole and with its weight, to a fold drawn uniformly from a seed of ``random_seed``
    and its block's first row (the same folds on any scheduler, for the same chunking; their sizes vary
    by chance, as Bernoulli draws do). Each fold's fit is :func:`mixflow.fit` of all the rows with the
    fold's weights set to zero (one EM over the blocks), scored lazily on the fold's rows; the held-out
    sums and sums of squares come in one pass. Returns the total and its standard error, as
    :func:`weighted_sum_and_se` with ddof=1 (the pointwise terms stay on the blocks), and how many folds'
    fits are degenerate or spurious.
    """
    import dask
    import dask.array as da

    from mixflow.fitting import fit, score_samples

    rows = as_chunked(data, weights=weights)
    _check_row_folds(n_folds, rows.n_obs)
    seeds = np.random.SeedSequence(random_seed).spawn(n_folds + 1)
    folds = row_draws(rows, seeds[0].generate_state(2).tolist(), partial(_fold, n_folds), np.int64)
    frequency = rows.weights if rows.weights is not None else da.ones(rows.n_obs, chunks=rows.values.chunks[0])
    units = squares = total = 0.0
    flagged = 0
    for fold in range(n_folds):
        held_out = da.where(folds == fold, frequency, 0.0)
        tree = fit(model, data, method=method, weights=frequency - held_out,
                   random_seed=int(seeds[fold + 1].generate_state(1)[0]), **fit_kwargs)
        flagged += any(flagged_fit(tree["em"].attrs))
        log_density = da.where(held_out > 0, score_samples(tree, data).data, 0.0)
        parts = dask.compute(held_out.sum(), (held_out * log_density).sum(), (held_out * log_density**2).sum())
        units, total, squares = units + parts[0], total + parts[1], squares + parts[2]
    variance = max(squares - total * total / units, 0.0) / max(units - 1.0, 1e-300)
    return float(total), float(np.sqrt(units * variance)), flagged


def weighted_sum_and_se(values: np.ndarray, frequency: np.ndarray, ddof: int = 1) -> tuple[float, float]:
    """Sum over units of pointwise values and its standard error sqrt(W var), as ArviZ computes an ELPD's.

    ``frequency`` counts the units behind each value (W their total); ``ddof`` 1 for an ELPD, 0 for an
    ELPD difference (ArviZ's conventions).
    """
    total = frequency.sum()
    mean = frequency @ values / total
    variance = frequency @ (values - mean) ** 2 / max(total - ddof, 1e-300)
    return float(frequency @ values), float(np.sqrt(total * variance))


def _stacked_elpd_i(tree) -> np.ndarray | None:
    """Pointwise LOO of the modes' stacked predictive: ``log sum_m w_m exp(lpd_loo[n, m])``; None for one mode."""
    if not has_group(tree, MCMC_MODES) or tree[MCMC_MODES].sizes.get("mode", 1) < 2:
        return None
    modes = tree[MCMC_MODES]
    with np.errstate(divide="ignore"):
        log_weights = np.log(modes["weight"].values)
    return logsumexp(modes["lpd_loo"].transpose("obs", "mode").values + log_weights, axis=1)


def _loo_rows_weighted(results: dict, log_likelihoods: dict, frequency: np.ndarray,
                       stacked: dict | None = None) -> pd.DataFrame:
    """ELPD of frequency-weighted rows: every copy of a row has the row's pointwise LOO value.

    ``stacked`` maps a K to its modes' stacked pointwise LOO (:func:`_stacked_elpd_i`), used instead of
    the LOO over all its chains.
    """
    stacked = stacked or {}
    pointwise = {k: (stacked[k] if stacked.get(k) is not None else r.elpd_i.values.ravel())
                 for k, r in results.items()}
    rows = {}
    for k, elpd_i in pointwise.items():
        draws = log_likelihoods[k]
        lpd_i = logsumexp(draws, axis=0) - np.log(draws.shape[0])
        elpd, se = weighted_sum_and_se(elpd_i, frequency)
        rows[k] = {"elpd_loo": elpd, "elpd_loo_se": se, "p_loo": float(frequency @ (lpd_i - elpd_i)),
                   **_pareto_k_columns(results[k]), "stacked_over_modes": stacked.get(k) is not None}
    best = max(rows, key=lambda k: rows[k]["elpd_loo"])
    # the K's stacking weights from the same pointwise values (arviz_stats.compare's "stacking" weights, with
    # each row counted as often as its weight)
    weights = stacking_weights(np.column_stack([pointwise[k] for k in rows]), frequency) if len(rows) > 1 else \
        [np.nan]  # one K: nothing to weigh
    for k, weight in zip(rows, weights, strict=True):
        rows[k]["elpd_diff"], rows[k]["elpd_diff_se"] = weighted_sum_and_se(pointwise[k] - pointwise[best], frequency,
                                                                             ddof=0)
        rows[k]["loo_weight"] = float(weight)
    return pd.DataFrame.from_dict(rows, orient="index")


def loo_table(trees: dict) -> pd.DataFrame:
    """PSIS-LOO of MCMC fits for several K (``arviz_stats.loo`` and ``arviz_stats.compare``).

    Parameters
    ----------
    trees : dict of int to xarray.DataTree
        Results with ``/mcmc/posterior`` and ``/mcmc/log_likelihood`` (variable ``x``, one value per
        row), keyed by K. When the data carry frequency weights (``/observed_data/weights``), each row's
        pointwise value counts as many times as its weight (every copy of a row has the same leave-one-out
        predictive density), and the differences are computed from the weighted pointwise values.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``k``: ``elpd_loo``, ``elpd_loo_se``, ``p_loo``, ``elpd_diff`` and ``elpd_diff_se``
        (against the best K), ``loo_weight`` (stacking of the K, from the same pointwise values: each K's
        own, or its modes' stacked predictive's), ``pareto_k_warning`` (a Pareto k above arviz_stats' threshold
        for the draws, ``min(1 - 1 / log10(S), 0.7)``: PSIS-LOO unreliable), ``max_pareto_k``, ``n_high_pareto_k``
        (the rows above that threshold) and ``stacked_over_modes``: whether
        the K's chains fell into several modes (``/mcmc/modes``), in which case its pointwise values are
        those of the modes' stacked predictive, ``log sum_m w_m exp(elpd_loo_m[n])`` with the modes'
        stacking weights ``w_m`` (Yao, Vehtari and Gelman 2022), rather than a LOO over chains that sample
        different distributions.

    """
    import arviz_stats

    results, log_likelihoods, failed = {}, {}, {}
    for k, tree in trees.items():
        mcmc = tree["mcmc"]
        missing = [g for g in ("posterior", "log_likelihood") if g not in mcmc.children]
        if missing:
            raise InputError(f"trees[{k}]: expected /mcmc/posterior and /mcmc/log_likelihood, missing {missing}")
        log_likelihood = mcmc["log_likelihood"].to_dataset()
        subtree = xr.DataTree.from_dict({"posterior": mcmc["posterior"].to_dataset(),
                                         "log_likelihood": log_likelihood})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            try:
                results[k] = arviz_stats.loo(subtree, var_name="x", pointwise=True)
            except ValueError as error:  # PSIS fits no tail of one repeated value: draws of a chain stuck in place
                failed[k] = str(error)
                continue
        log_likelihoods[k] = log_likelihood["x"].stack(sample=("chain", "draw")).transpose("sample", ...).values
    for k, error in failed.items():
        warnings.warn(f"PSIS-LOO of the NUTS draws of K={k} could not be computed ({error}: draws that repeat one "
                      "value, as those of a chain stuck in place do); its LOO columns are left empty and the other "
                      "K are compared without it; see its MCMC diagnostics", SamplingWarning,
                      skip_file_prefixes=PACKAGE_FILES)
    table = _loo_rows({k: tree for k, tree in trees.items() if k not in failed}, results, log_likelihoods)
    if failed:  # a K without LOO: a row of empty values, and the comparison's columns whatever is left
        table = table.reindex(index=sorted(trees), columns=list(dict.fromkeys([*table.columns, *_LOO_COLUMNS])))
    table.index.name = "k"
    return table


_LOO_COLUMNS = ["elpd_loo", "elpd_loo_se", "p_loo", "pareto_k_warning", "max_pareto_k", "n_high_pareto_k",
                "stacked_over_modes", "elpd_diff", "elpd_diff_se", "loo_weight"]


def _pareto_k_columns(result) -> dict:
    """A K's PSIS-LOO reliability: arviz_stats' warning, its largest Pareto shape, the rows above its ``good_k``.

    ``good_k`` is arviz_stats' threshold for the draws, ``min(1 - 1 / log10(S), 0.7)``: below 0.7 for fewer than
    about 2200 draws, where a smaller shape already makes the estimate unreliable.
    """
    shapes = np.asarray(result.pareto_k, dtype=float).ravel()
    finite = np.isfinite(shapes)
    return {"pareto_k_warning": bool(result.warning),
            "max_pareto_k": float(shapes[finite].max()) if finite.any() else np.nan,
            "n_high_pareto_k": int(np.sum(shapes[finite] > float(result.good_k)))}


def _loo_rows(trees: dict, results: dict, log_likelihoods: dict) -> pd.DataFrame:
    """:func:`loo_table`'s rows of the K whose PSIS-LOO was computed (``results``)."""
    import arviz_stats

    if not results:
        return pd.DataFrame(columns=_LOO_COLUMNS, dtype=float)
    frequency = frequency_weights(next(iter(trees.values())))
    stacked = {k: _stacked_elpd_i(tree) for k, tree in trees.items()}
    if frequency is not None or any(value is not None for value in stacked.values()):
        n_obs = next(iter(log_likelihoods.values())).shape[1]
        table = _loo_rows_weighted(results, log_likelihoods, np.ones(n_obs) if frequency is None else frequency,
                                   stacked)
    else:
        rows = {k: {"elpd_loo": r.elpd, "elpd_loo_se": r.se, "p_loo": r.p, **_pareto_k_columns(r),
                    "stacked_over_modes": False} for k, r in results.items()}
        table = pd.DataFrame.from_dict(rows, orient="index")
        if len(results) > 1:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                comparison = arviz_stats.compare({str(k): r for k, r in results.items()}, round_to="none")
            comparison.index = comparison.index.astype(int)
            table["elpd_diff"] = comparison["elpd_diff"]
            table["elpd_diff_se"] = comparison["dse"]
            table["loo_weight"] = comparison["weight"]
    return table


def _check_arguments(model, ks, methods, n_folds, random_seed, n_jobs):
    if not isinstance(model, MixtureModel):
        raise InputTypeError(f"model: expected a mixflow model such as GaussianMixture(2), got {type(model).__name__}")
    if isinstance(ks, str | bytes) or not hasattr(ks, "__iter__") or np.ndim(ks) == 0:  # 3, "3", np.array(3)
        raise InputTypeError(f"ks: expected a sequence of integers >= 1, got {ks!r}")
    given = list(ks)
    whole = [not isinstance(k, bool) and (isinstance(k, int | np.integer) or isinstance(k, float | np.floating)
                                         and float(k).is_integer()) for k in given]
    if not all(whole):  # 2.5, "3", True: each was dropped without a word
        numbers = all(isinstance(k, int | float | np.integer | np.floating) and not isinstance(k, bool) for k in given)
        raise (InputError if numbers else InputTypeError)(
            f"ks: expected a sequence of integers >= 1, got {given!r}, in which "
            f"{', '.join(repr(k) for k, ok in zip(given, whole, strict=True) if not ok)} is not one")
    ks = [int(k) for k in given]
    if not ks or min(ks) < 1 or len(set(ks)) != len(ks):
        raise InputError(f"ks: expected distinct integers >= 1, got {given!r}")
    methods = (methods,) if isinstance(methods, str) else tuple(methods)
    unknown = [m for m in methods if m not in _METHODS]
    if unknown or not methods or ("em" in methods and "map" in methods):
        raise InputError(f"methods: expected some of {list(_METHODS)} (at most one of 'em' and 'map'), "
                         f"got {list(methods)}")
    check_count("n_folds", n_folds, 2, none="no cross-validation")
    if random_seed is not None:
        check_seed(random_seed)
    check_count("n_jobs", n_jobs, 1, none="all available cores")
    return sorted(ks), methods


def _with_k(model, k: int):
    try:
        return dataclasses.replace(model, n_components=k)
    except InputError as error:
        raise InputError(f"model: cannot be refitted with n_components={k}: {error}") from error


#: Seconds of EM fits better run in this process than on worker processes: starting the workers (their fork server
#: too, in a process that has started none) and their first fits costs about that much more than the fits themselves
IN_PROCESS_SECONDS = 3.0


def _em_rows(tasks: list[tuple], workers: int, ascending: bool):
    """:func:`_em_row` of each task, in order: in this process while the fits are quick, the rest on ``workers``.

    With the K in increasing order (``ascending``: each fit costs more than the last), the first K is fitted here,
    and each next one too while the time spent here and twice the last fit's stay within
    :data:`IN_PROCESS_SECONDS`, or when it is the last K (one task on a worker runs alongside none); the remaining K
    run on ``workers`` processes (:func:`parallel_results`). On small data the whole scan then takes less time than
    starting the processes would; on large data only the smallest K is fitted before the others start. K in another
    order, or an active ``dask.distributed`` client: all on the workers.
    """
    spent = last = 0.0
    here = workers == 1 or (ascending and active_client() is None)
    for i, task in enumerate(tasks):
        quick = i == 0 or i == len(tasks) - 1 or spent + 2 * last <= IN_PROCESS_SECONDS
        if not here or (workers > 1 and not quick):
            yield from parallel_results(_em_row, tasks[i:], min(workers, len(tasks) - i))
            return
        started = perf_counter()
        result = _em_row(*task)
        last = perf_counter() - started
        spent += last
        yield result


def _em_row(model, data, method: str, n_folds, seed: np.random.SeedSequence, fit_kwargs: dict, weights=None,
            kept: bool = True):
    """One K's EM fit and criteria: ``data`` validated :class:`Data`, or Dask data with their ``weights``.

    ``kept``: whether the fit is returned to the caller (its warnings' advice then points into it: :func:`_messages`).
    """
    from mixflow.fitting import fit

    fit_seed, cv_seed = (int(s.generate_state(1)[0]) for s in seed.spawn(2))
    rows, weights = (_frame(data), data.weights) if isinstance(data, Data) else (data, weights)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tree = fit(model, rows, method=method, weights=weights, random_seed=fit_seed, **fit_kwargs)
        attrs = tree["em"].attrs
        row = {key: attrs[key] for key in ("log_likelihood", "n_parameters", "bic", "aic", "icl")}
    with warnings.catch_warnings(record=True) as caught_folds:
        warnings.simplefilter("always")
        if n_folds is not None and isinstance(data, Data):
            total, se, pointwise, flagged = _cross_validate(model, data, method=method, n_folds=n_folds,
                                                            random_seed=cv_seed, **fit_kwargs)
            row[_POINTWISE] = pointwise  # taken out of the row for the paired differences (_held_out_differences)
        elif n_folds is not None:
            total, se, flagged = _cross_validate_chunked(model, data, weights, method=method, n_folds=n_folds,
                                                         random_seed=cv_seed, **fit_kwargs)
        if n_folds is not None:
            row.update(cv_log_likelihood=total, cv_log_likelihood_se=se, cv_flagged_folds=flagged)
    row["converged"] = bool(attrs["converged"]) and not any(w.category is ConvergenceWarning for w in caught)
    if n_folds is not None:  # a fold's fit that did not converge bears on the held-out criterion alone
        row["cv_converged"] = not any(w.category is ConvergenceWarning for w in caught_folds)
    row["degenerate"], row["spurious"] = flagged_fit(attrs)
    row["fewest_rows"], row["few_rows"] = _fewest_rows(model, tree, method)
    return row, tree, _messages(caught, caught_folds, kept)


def _fewest_rows(model, tree, method: str) -> tuple[float, bool]:
    """The observations' worth of weight of a fit's smallest component, and whether one is too few for its parameters.

    :func:`~mixflow.families.base.few_rows_components`, of maximum likelihood fits only: a MAP fit's prior stands in
    for the rows a component lacks, and keeps one on a few rows on purpose.
    """
    estimate = _estimate(tree)
    counts = np.asarray(estimate["weights"], dtype=float) * float(tree["em"].attrs["n_observations"])
    few = few_rows_components(counts, model.component_parameters(estimate)) if method == "em" else []
    return float(counts.min()), bool(few)


#: How a warning of the choice of K names the method that raised it.
METHOD_NAMES = {"em": "EM (MLE)", "map": "EM (MAP)", "mcmc": "NUTS"}


def _messages(caught, caught_folds=(), kept: bool = True) -> list[tuple[type, str]]:
    """One (category, message) pair per category of recorded warnings, in the order first raised.

    Without ``kept`` (the fit on all rows not returned), the advice to take a set-aside restart of it is said as
    what keeps it (:func:`_unreturned`); a fold's fit is never kept (:func:`_unkept`).

    The fits of one K (the fit on all rows, ``caught``, and its cross-validation folds, ``caught_folds``)
    often warn alike; the first message of a category is kept, with the count of the others. A message
    first raised by a fold's fit says so: the fit on all rows did not raise it. A fold's
    :class:`~mixflow.warnings.DeclarationWarning` (an end limit opening no class of its fewer rows) is not said.
    The fit on all rows' warnings about the rows given (:func:`_about_data`) are kept whole, each once, and a
    fold's fit's warning of the same kind and first clause (the same problem of its part of the rows: "weights: none
    given, so each of the 13 classes ...") is not said again.
    """
    first, counts, about_data = {}, {}, {}
    for w in caught:
        if _about_data(str(w.message)):  # the same for every K and method: kept whole, said once
            about_data.setdefault((w.category, str(w.message)), None)
            continue
        first.setdefault(w.category, str(w.message) if kept else _unreturned(w.message))
        counts[w.category] = counts.get(w.category, 0) + 1
    for w in caught_folds:
        if issubclass(w.category, DeclarationWarning):  # of the rows given: the fit on all rows says it if it holds
            continue
        if any(w.category is category and _first_clause(str(w.message)) == _first_clause(message)
               for category, message in about_data):  # the rows' warning, said once, not again of a fold's part
            continue
        first.setdefault(w.category, f"a cross-validation fold's fit (not the fit on all rows): {_unkept(w.message)}")
        counts[w.category] = counts.get(w.category, 0) + 1
    return list(about_data) + [
        (category, message + (f" (and {counted(counts[category] - 1, 'more such warning')} from this K's fits, "
                              "e.g. its cross-validation folds)" if counts[category] > 1 else ""))
        for category, message in first.items()]


def _unkept(message) -> str:
    """A fold fit's warning without the advice to take a restart of it from /em/sample_stats: no fold fit is kept."""
    set_aside = getattr(message, "set_aside", None)  # (finding, restart): em.set_aside_warning
    return str(message) if set_aside is None else set_aside[0] + "(A fold's fit is not kept.)"


def _unreturned(message) -> str:
    """The fit on all rows' warning, its advice to take a restart from /em/sample_stats said as what keeps that fit.

    Without ``return_fits`` (and in a workflow, which refits the K it analyses from its own seed) the fit whose
    restart is named is not kept: the advice says how to keep it.
    """
    set_aside = getattr(message, "set_aside", None)  # (finding, restart): em.set_aside_warning
    if set_aside is None:
        return str(message)
    return set_aside[0] + SET_ASIDE_IF + (
        f"select_k(..., return_fits=True) keeps this K's fit, whose /em/sample_stats has that restart (optimum_* at "
        f"restart {set_aside[1]}) to pass as init=... to mixflow.fit; a workflow keeps only the fits of the K it "
        "analyses, refitted from its seed.")


#: How a warning about the rows given begins (the argument's name): the same for every K's fit and method
_ABOUT_DATA = ("data:", "weights:")
#: ... but for a warning about a fit's estimate in the data's units, which differs with K
_ABOUT_AN_ESTIMATE = ("data: the estimate's",)


def _about_data(message: str) -> bool:
    """Whether a warning's message is about the rows given (:data:`_ABOUT_DATA`), not about one K's fit."""
    return message.startswith(_ABOUT_DATA) and not message.startswith(_ABOUT_AN_ESTIMATE)


def _first_clause(message: str) -> str:
    """A message up to its first comma: what a fold's warning about its part of the rows shares with the whole's."""
    return message.split(",", 1)[0]


def _warn_for(k: int, method: str, messages, said: set) -> None:
    """Raise again the warnings of one fit of the choice of K, each naming the K and the method.

    A warning about the rows given (:func:`_about_data`) is the same for every K and method: it is raised as the
    fit raised it, once per choice of K (``said`` holds those raised so far), or not at all when one said holds it
    or it holds one said (a constant feature's, which adds what the prior does under MAP and NUTS).
    """
    for category, message in messages:
        if _about_data(message):
            if not any(kind is category and (text.startswith(message) or message.startswith(text))
                       for kind, text in said):
                said.add((category, message))
                warnings.warn(message, category, skip_file_prefixes=PACKAGE_FILES)
            continue
        warnings.warn(f"select_k, K={k}, {METHOD_NAMES[method]}: {message}", category,
                      skip_file_prefixes=PACKAGE_FILES)


def _crossing_chains(tree) -> str:
    """``"chains 0, 2 cross between places, "`` for the chains that themselves move between places, else ''."""
    modes = tree["mcmc"].children.get("modes")
    crossing = np.flatnonzero(modes["crosses"].values) if modes is not None and "crosses" in modes else []
    if len(crossing) == 0:
        return ""
    listed = ", ".join(map(str, crossing))
    return (f"chains {listed} cross" if len(crossing) > 1 else f"chain {listed} crosses") + " between places, "


def _mcmc_row(tree) -> dict:
    """The convergence diagnostics of one NUTS fit (its worst R-hat and ESS, its divergences)."""
    attrs = tree["mcmc"].attrs
    return {"max_rhat": float(attrs.get("max_rhat", np.nan)), "min_ess_bulk": float(attrs.get("min_ess_bulk", np.nan)),
            "min_ess_tail": float(attrs.get("min_ess_tail", np.nan)),
            # the sampler's own judgement, the one it warned of: below ESS_PER_CHAIN_MIN per chain (of the mode)
            "low_ess_bulk": bool(json.loads(attrs.get("low_ess_bulk", "[]"))),
            "low_ess_tail": bool(json.loads(attrs.get("low_ess_tail", "[]"))),
            "divergences": int(attrs.get("n_divergences", 0)), "n_modes": int(attrs.get("n_modes", 1)),
            # a second, longer run replaced the first (fit_mcmc's extend): its draws, not the options', were scored
            "mcmc_draws": int(attrs.get("draws", 0)), "extended": bool(attrs.get("extended", ""))}


def select_k(model, data, ks=range(1, 7), methods=("em", "mcmc"), *, weights=None, n_folds: int | None = 5,
             random_seed: int | None = None, fit_kwargs: dict | None = None, mcmc_kwargs: dict | None = None,
             n_jobs: int | None = None, return_fits: bool = False, progress=None):
    """Fit the model for each number of components and tabulate the criteria for choosing K.

    Parameters
    ----------
    model : MixtureModel
        The declaration; its ``n_components`` is replaced by each K (family, covariance and prior kept).
    data : array-like or DataFrame
        As for :func:`mixflow.fit`; Dask data too (EM or MAP: each K's fit, and each fold's, makes its
        passes over the blocks on the active client or Dask's threads, one after the other; the folds are
        drawn row by row, see :func:`cross_validated_chunked`).
    ks : iterable of int, default range(1, 7)
    methods : sequence of {"em", "map", "mcmc"}, default ("em", "mcmc")
        ``"em"``/``"map"``: EM by maximum likelihood or MAP (criteria and cross-validation);
        ``"mcmc"``: NUTS with PSIS-LOO (``mixflow.fit(..., method="mcmc")``).
    weights : array-like of shape (n_obs,), optional
        Frequency weights.
    n_folds : int or None, default 5
        Folds of the cross-validation (None skips it).
    random_seed : int, optional
        Seed of every fit and split (drawn when None; recorded in ``attrs``). Each K draws from a stream of its
        own, of the seed and K, so that a K's fits and folds are the same whichever other K are compared.
    fit_kwargs : dict, optional
        Passed to every EM fit, and to the MAP fit that starts each MCMC run (e.g. ``{"n_init": 10}``).
    mcmc_kwargs : dict, optional
        Options of every MCMC fit (e.g. ``{"draws": 1000, "chains": 4}``; ``progressbar`` is False
        unless given).
    n_jobs : int, optional
        Processes for the EM fits (one task per K; all available cores by default, 1 in this process).
        With ``ks`` in increasing order, the first K are fitted in this process while their fits take a
        few seconds (starting the processes would cost more), the rest on the processes. With an active
        ``dask.distributed`` client the tasks run on its workers (all their threads by default). MCMC fits run
        one after the other (each uses its own chains).
    return_fits : bool, default False
        Also return the fitted containers ``{(method, K): tree}``.
    progress : callable, optional
        Called with a one-line message as each fit starts or ends (``"K=3, NUTS: 4 chains ..."``).

    Returns
    -------
    pandas.DataFrame or (pandas.DataFrame, dict)
        Indexed by ``k``. EM columns: ``log_likelihood``, ``n_parameters``, ``bic``, ``aic``, ``icl``,
        ``cv_log_likelihood``, ``cv_log_likelihood_se``, ``cv_diff`` and ``cv_diff_se`` (the difference from the
        preferred K's held-out log-likelihood and its paired error, :func:`_held_out_differences`; data in
        memory), ``cv_flagged_folds`` (folds whose fit is degenerate or
        spurious: the held-out criterion skips such a K, its held-out rows scored by a collapsed component),
        ``converged`` (False when the fit on all rows stopped at ``max_iter`` or warned so), ``cv_converged``
        (False when a cross-validation fold's fit did), ``degenerate``, ``spurious`` (a spurious component: no
        restart found a sound maximum,
        see :func:`mixflow.families.base.spurious_rule`), ``fewest_rows`` (the observations' worth of weight of
        the fit's smallest component), ``few_rows`` (a maximum likelihood fit of K >= 2 with a component of
        fewer observations than its own parameters,
        :meth:`~mixflow.families.base.MixtureModel.component_parameters`: see
        :func:`mixflow.families.base.few_rows_components`); MCMC columns: those of :func:`loo_table`, and
        ``max_rhat``,
        ``min_ess_bulk``, ``min_ess_tail`` (within the modes where its chains fell into several),
        ``low_ess_bulk``, ``low_ess_tail`` (a parameter's ESS below 100 per chain of its mode, the sampler's
        warning), ``divergences``, ``n_modes`` (how many modes its chains fell into, see
        :mod:`mixflow.engines.modes`), ``mcmc_draws`` (per chain, of the run kept) and ``extended`` (its chains
        crossed between places, so a second, longer run was kept: :func:`mixflow.engines.mcmc.fit_mcmc`'s
        ``extend``) of each NUTS fit; ``skipped``: why the EM
        criteria skip a K (empty when they do not). Every warning of a fit is raised again naming its K and
        method (``"select_k, K=3, NUTS: ..."``), but a warning about the rows given (``"data: ..."``,
        ``"weights: ..."``), said once as :func:`mixflow.fit` says it. ``attrs["preferred"]`` maps each
        criterion to the K it prefers (smallest BIC/AIC/ICL, largest held-out log-likelihood and ELPD), never
        a K whose EM fit is degenerate, spurious or has a component of fewer rows than its parameters for the
        EM criteria (:func:`preferred_k`); ``attrs["skipped"]`` maps each skipped K to the reason, also warned.

    Examples
    --------
    >>> table = mixflow.select_k(mixflow.GaussianMixture(1), mixflow.load_dataset("galaxies"),
    ...                          methods=("em",), random_seed=1)
    >>> table.attrs["preferred"]["bic"]

    """
    ks, methods = _check_arguments(model, ks, methods, n_folds, random_seed, n_jobs)
    data = without_unusable_unread(model, data)
    chunked = is_chunked(data)
    if chunked:  # each K's fit runs its passes on the client's workers (or threads), one K after the other
        if "mcmc" in methods:
            raise InputError(f"methods: expected 'em' or 'map' with Dask data (NUTS needs the rows in memory), got "
                             f"{list(methods)}")
        if n_folds is not None:  # checked before any fit (as_chunked computes nothing but unknown block lengths)
            _check_row_folds(n_folds, as_chunked(data, weights=weights).n_obs)
    with warnings.catch_warnings(record=True) as checked:  # the data's warnings, said here and not again per K
        warnings.simplefilter("always")
        validated = None if chunked else validate_data(data, weights=weights, unread=unread_columns(model, data),
                                                       infinite_hint=model.infinite_values_hint(),
                                                       constant_note=model.constant_feature_note(with_prior(methods)))
    said = {(w.category, str(w.message)) for w in checked}
    for w in checked:
        warnings.warn(w.message, w.category, skip_file_prefixes=PACKAGE_FILES)
    if validated is not None:  # before any fit: the largest K needs a row and one observation's worth per component
        rows = int(np.count_nonzero(validated.frequency))
        if rows < max(ks):
            raise InputError(f"ks: expected numbers of components of at most the data's {rows} rows with positive "
                             f"weight, got {max(ks)}")
        check_total_weight(float(validated.frequency.sum()), max(ks))
        if n_folds is not None:  # and the folds their observations (as held_out_weights checks them)
            check_folds(n_folds, validated.n_obs, validated.weights)
    seed = secrets.randbits(63) if random_seed is None else int(random_seed)
    seeds = {k: np.random.SeedSequence(seed, spawn_key=(k,)).spawn(2) for k in ks}  # K's own, whatever ks holds
    fit_kwargs, mcmc_kwargs = dict(fit_kwargs or {}), {"progressbar": False, **(mcmc_kwargs or {})}
    rows, fits = {k: {} for k in ks}, {}
    progress = progress or (lambda message: None)
    em_method = next((m for m in methods if m in ("em", "map")), None)
    if em_method is not None:
        tasks = [(_with_k(model, k), validated if not chunked else data, em_method, n_folds, seeds[k][0], fit_kwargs,
                  weights if chunked else None, bool(return_fits)) for k in ks]
        workers = 1 if chunked else min(int(n_jobs or default_jobs()), len(tasks))
        progress(f"{METHOD_NAMES[em_method]}: fitting K in {ks}" + (f" with {n_folds}-fold cross-validation"
                                                                     if n_folds else ""))
        pointwise = {}
        for k, (row, tree, messages) in zip(ks, _em_rows(tasks, workers, ascending=ks == sorted(ks)), strict=True):
            rows[k], fits[(em_method, k)] = row, tree
            if _POINTWISE in row:
                pointwise[k] = row.pop(_POINTWISE)
            _warn_for(k, em_method, messages, said)
            progress(f"K={k}, {METHOD_NAMES[em_method]}: log-likelihood {fixed_places(row['log_likelihood'], 4)}, "
                     f"BIC {fixed_places(row['bic'], 2)}" + ("" if row["converged"] else ", did NOT converge")
                     + (", a component collapsed" if row["degenerate"] else "")
                     + (", a spurious component" if row["spurious"] and not row["degenerate"] else "")
                     + (", a component on fewer rows than its parameters" if row["few_rows"]
                        and not (row["degenerate"] or row["spurious"]) else ""))
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "k"
    if "mcmc" in methods:
        from mixflow.fitting import fit

        diagnostics = {}
        for k in ks:
            mcmc_seed = int(seeds[k][1].generate_state(1)[0])
            progress(f"K={k}, NUTS: sampling")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    fits[("mcmc", k)] = fit(_with_k(model, k), _frame(validated), method="mcmc",
                                            weights=validated.weights, random_seed=mcmc_seed, **fit_kwargs,
                                            **mcmc_kwargs)
                except (InputError, np.linalg.LinAlgError) as error:  # this K's posterior, not the data given
                    failed = f"the fit failed ({error}); its NUTS columns are left empty"
            _warn_for(k, "mcmc", _messages(caught), said)
            if ("mcmc", k) not in fits:  # the other K are sampled and compared without it
                _warn_for(k, "mcmc", [(SamplingWarning, failed)], said)
                progress(f"K={k}, NUTS: failed, its NUTS columns left empty")
                continue
            diagnostics[k] = _mcmc_row(fits[("mcmc", k)])
            modes = (f"sampled again with {diagnostics[k]['mcmc_draws']} draws per chain (the first run's chains "
                     "crossed between places), " if diagnostics[k]["extended"] else "")
            modes += f"{diagnostics[k]['n_modes']} modes, " if diagnostics[k]["n_modes"] > 1 else ""
            modes += _crossing_chains(fits[("mcmc", k)])
            divergences = int(diagnostics[k]["divergences"])
            progress(f"K={k}, NUTS: {modes}{counted(divergences, 'divergence')}, worst R-hat "
                     f"{format_rhat(diagnostics[k]['max_rhat'])}, smallest bulk / tail ESS "
                     f"{format_ess(diagnostics[k]['min_ess_bulk'])} / {format_ess(diagnostics[k]['min_ess_tail'])}")
        mcmc_table = pd.DataFrame.from_dict(diagnostics, orient="index")
        sampled = {k: fits[("mcmc", k)] for k in ks if ("mcmc", k) in fits}
        if sampled:
            table = table.join(loo_table(sampled).join(mcmc_table), how="outer")
    _summarise(table, methods, seed)
    if em_method is not None and pointwise:
        _held_out_differences(table, pointwise, validated.frequency)
    return (table, fits) if return_fits else table


_POINTWISE = "cv_pointwise"  # a row's key for its held-out log densities by row, while the rows are gathered


def _held_out_differences(table: pd.DataFrame, pointwise: dict, frequency: np.ndarray) -> None:
    """Add ``cv_diff`` and ``cv_diff_se``: each K's held-out log-likelihood less the preferred K's, and its error.

    The error of a difference is not that of either total: the rows that are hard for one K are hard for the
    others, and most of each total's spread is shared. It is the paired one, row by row (``sqrt(W var)`` of the
    rows' differences, ArviZ's ``loo_compare`` convention for ``dse``), which says whether a held-out preference of
    a few units is more than the folds' chance. No columns where the held-out criterion prefers none.
    """
    best = table.attrs["preferred"].get("cv_log_likelihood")
    if best is None or best not in pointwise:
        return
    diff, diff_se = {}, {}
    held = frequency > 0  # rows of no weight have no held-out density (NaN); an infinite one goes through
    for k, values in pointwise.items():
        diff[k], diff_se[k] = weighted_sum_and_se((values - pointwise[best])[held], frequency[held], ddof=0)
    position = table.columns.get_loc("cv_log_likelihood_se") + 1
    table.insert(position, "cv_diff", pd.Series(diff))
    table.insert(position + 1, "cv_diff_se", pd.Series(diff_se))


LOWER_IS_BETTER = ("bic", "aic", "icl")
HIGHER_IS_BETTER = ("cv_log_likelihood", "elpd_loo")
EM_CRITERIA = ("bic", "aic", "icl", "cv_log_likelihood")
_SHORT_OF_FEWER = 1e-8  # relative: a log-likelihood this much below a smaller K's is below it
SKIPPED_DEGENERATE = "degenerate EM fit (a component collapsed or emptied in every restart)"
SKIPPED_SPURIOUS = ("spurious EM fit (a component of a few observations close together or near a lower-dimensional "
                    "subspace in every restart)")
SKIPPED_FEW_ROWS = ("too few rows for its parameters (a component of the EM fit holds fewer observations than its own "
                    "mean and dispersion have free parameters, and gains more likelihood on them than the criteria "
                    "charge)")
#: Beside the MAP advice, what a K skipped for too few rows can be fitted with instead
_FEW_ROWS_ADVICE = ("Fewer components, or fewer parameters per component (a Gaussian's covariance='diag', "
                    "'spherical' or 'tied'; a regression's fewer covariates), fit such small groups.")


def skipped_k(table: pd.DataFrame) -> dict:
    """The K (index) the EM criteria of a choice-of-K table skip, with the reason.

    Those whose fit is degenerate (``degenerate`` column), spurious (``spurious`` column) or has a component of
    fewer observations than its parameters (``few_rows`` column); of several, degenerate is named first, then
    spurious.
    """
    skipped = {}
    for column, reason in (("few_rows", SKIPPED_FEW_ROWS), ("spurious", SKIPPED_SPURIOUS),
                           ("degenerate", SKIPPED_DEGENERATE)):
        if column in table:
            flags = table[column].astype("boolean").fillna(False)
            skipped.update({int(k): reason for k in table.index[flags.to_numpy(dtype=bool)]})
    return {k: skipped[k] for k in sorted(skipped)}


def _skips(reason: str, criterion: str) -> bool:
    """Whether an EM criterion skips a K for ``reason`` (:func:`skipped_k`).

    All of them, but the held-out log-likelihood for too few rows: the in-sample gain it is skipped for does not
    reach the rows held out.
    """
    return not (reason == SKIPPED_FEW_ROWS and criterion == "cv_log_likelihood")


def preferred_k(table: pd.DataFrame) -> dict:
    """The K (index) each criterion of a choice-of-K table prefers, for the criteria it has values of.

    The EM criteria (BIC, AIC, ICL, held-out log-likelihood) never prefer a K whose EM fit is degenerate or
    spurious (``degenerate`` and ``spurious`` columns, see :func:`skipped_k`): a collapsed component's likelihood is
    unbounded, and a spurious one's is inflated by a few points close together or near a subspace, so the criterion
    would reward the artefact. BIC, AIC and ICL also never prefer one with a component of fewer observations than
    its parameters (``few_rows``): it gains on its own rows more than they charge
    (:func:`~mixflow.families.base.few_rows_components`); the held-out log-likelihood scores rows the fit did not
    see, which that gain does not reach, and keeps it. When every K is skipped, they prefer none. The held-out
    log-likelihood also skips a K with a degenerate or spurious fold fit (``cv_flagged_folds``), for the same
    reason: the fold's held-out rows near its collapsed component score without bound.
    """
    skipped = skipped_k(table)
    if "cv_flagged_folds" in table:
        flagged_folds = table.index[table["cv_flagged_folds"].fillna(0).to_numpy() > 0]
    else:
        flagged_folds = []
    preferred = {}
    for column in LOWER_IS_BETTER + HIGHER_IS_BETTER:
        if column not in table:
            continue
        values = table[column].drop(index=[k for k, why in skipped.items() if _skips(why, column)]) \
            if column in EM_CRITERIA else table[column]
        if column == "cv_log_likelihood":
            values = values.drop(index=[k for k in flagged_folds if k in values.index])
        if values.notna().any():
            best = values.idxmin() if column in LOWER_IS_BETTER else values.idxmax()
            preferred[column] = int(best)
    return preferred


#: Which K of a choice-of-K table to fit: BIC's alone, or every K that some criterion prefers.
FIT_CHOICES = ("bic", "all-preferred")


def ks_to_fit(table: pd.DataFrame, fit: str = "bic") -> list[int]:
    """The K to fit after a choice of K: BIC's first, then (``"all-preferred"``) each K another criterion prefers.

    Parameters
    ----------
    table : pandas.DataFrame
        A :func:`select_k` table (its ``attrs["preferred"]``, else :func:`preferred_k`).
    fit : {"bic", "all-preferred"}, default "bic"
        ``"bic"``: the K that BIC prefers. ``"all-preferred"``: also every other K preferred by at least one
        criterion (AIC, ICL, held-out log-likelihood, PSIS-LOO), in increasing order, so that when the
        criteria disagree the runner-up's fit can be compared with BIC's.

    Returns
    -------
    list of int
        BIC's K first (or, when BIC prefers none, the smallest preferred K), then the others.

    """
    if fit not in FIT_CHOICES:
        raise InputError(f"fit: expected one of {list(FIT_CHOICES)}, got {fit!r}")
    preferred = table.attrs.get("preferred") or preferred_k(table)
    if not preferred:
        raise InputError("table: expected a choice-of-K table with at least one criterion that prefers a K, got "
                         f"columns {list(table.columns)} without values")
    first = int(preferred.get("bic", min(preferred.values())))
    if fit == "bic":
        return [first]
    return [first] + sorted({int(k) for k in preferred.values()} - {first})

# the same advice for the Python call and for a workflow file, which declares the MAP fit in its own way
_MAP_ADVICE = "A MAP fit regularises it: methods=('map',), or map = true under [methods.em] in a workflow."


def _warn_short_of_fewer(table: pd.DataFrame, methods, skipped: dict) -> None:
    """Warn of a maximum likelihood fit whose log-likelihood is below a fit of fewer components'.

    K components can do at least as well as fewer (one of them in two parts, or with no weight), so an MLE
    fit below a smaller K's has stopped at a lower maximum than one that exists: its BIC, AIC and ICL are too
    high by the difference at least. Skipped (degenerate or spurious) fits are not compared; MAP fits are not
    (the prior of more components may rightly cost more than they gain).
    """
    if "em" not in methods or "log_likelihood" not in table:
        return
    values = table["log_likelihood"].drop(index=list(skipped)).dropna().sort_index()
    best_so_far, short = -np.inf, {}
    for k, value in values.items():
        if value < best_so_far - _SHORT_OF_FEWER * abs(best_so_far):
            short[int(k)] = f"K={int(k)} at {value:.4f} against {best_so_far:.4f}"
        best_so_far = max(best_so_far, value)
    if short:
        table.attrs["short_of_fewer"] = list(short)
        warnings.warn(f"select_k: the EM fit of {'; '.join(short.values())}, the best of fewer components: K "
                      "components can do at least as well as fewer (one in two parts), so those fits stopped at a "
                      "lower maximum and their criteria favour them too little; fit those K with more starts "
                      "(fit_kwargs={'n_init': 20}).", MixflowWarning, skip_file_prefixes=PACKAGE_FILES)


#: How each criterion of the choice of K is named in the warnings and the report
CRITERION_NAMES = {"bic": "BIC", "aic": "AIC", "icl": "ICL", "cv_log_likelihood": "held-out log-likelihood",
                   "elpd_loo": "PSIS-LOO"}


def _warn_at_largest(table: pd.DataFrame) -> None:
    """A criterion that prefers the largest K tried has not shown a best K: a larger one may be better still."""
    largest = int(table.index.max())
    at_edge = [CRITERION_NAMES[name] for name, k in table.attrs["preferred"].items() if k == largest]
    if len(table.index) > 1 and at_edge:
        warnings.warn(f"select_k: {listed(at_edge)} {agreeing(len(at_edge), 'prefers', 'prefer')} K={largest}, "
                      "the largest K tried: a larger K may be preferred still; try larger K too (ks=..., or a larger "
                      "'to' of n_components in a workflow)", MixflowWarning, skip_file_prefixes=PACKAGE_FILES)


def _summarise(table: pd.DataFrame, methods, seed: int) -> None:
    skipped = skipped_k(table)
    advice = _MAP_ADVICE if "map" not in methods else ""  # a MAP fit is not told to become one
    if "degenerate" in table or "spurious" in table or "few_rows" in table:
        table["skipped"] = [skipped.get(int(k), "") for k in table.index]
    table.attrs.update(preferred=preferred_k(table), skipped=skipped, methods=list(methods), random_seed=seed)
    for reason in (SKIPPED_DEGENERATE, SKIPPED_SPURIOUS, SKIPPED_FEW_ROWS):
        ks = sorted(k for k, why in skipped.items() if why == reason)
        if ks:
            criteria = ", ".join(c for c in EM_CRITERIA if c in table and _skips(reason, c))
            sizes = ""
            if reason == SKIPPED_FEW_ROWS and "fewest_rows" in table:
                sizes = " (its smallest component: " + ", ".join(
                    f"{table.loc[k, 'fewest_rows']:.1f} observations at K={k}" for k in ks) + ")"
            more = f"{_FEW_ROWS_ADVICE} {advice}" if reason == SKIPPED_FEW_ROWS else advice
            warnings.warn(f"select_k: K in {ks} skipped by the EM criteria ({criteria}): {reason}{sizes}; "
                          f"see the 'skipped' column. {more}".rstrip(), MixflowWarning,
                          skip_file_prefixes=PACKAGE_FILES)
    if "cv_flagged_folds" in table:
        folds = [int(k) for k in table.index if table.loc[k, "cv_flagged_folds"] > 0
                 and not (int(k) in skipped and _skips(skipped[int(k)], "cv_log_likelihood"))]
        if folds:
            warnings.warn(f"select_k: K in {folds} skipped by the held-out log-likelihood: a cross-validation fold's "
                          "EM fit is degenerate or spurious (a collapsed component scores its held-out rows without "
                          "bound); see the 'cv_flagged_folds' column (BIC, AIC and ICL, from the fit on all rows, "
                          f"still judge it). {advice}".rstrip(),
                          MixflowWarning, skip_file_prefixes=PACKAGE_FILES)
    _warn_short_of_fewer(table, methods, skipped)
    _warn_at_largest(table)
    flagged = [int(k) for k in table.index if "converged" in table and not table.loc[k, "converged"]
               and int(k) not in skipped]
    if flagged:
        warnings.warn(f"select_k: the EM fit for K in {flagged} did not converge (see the 'converged' column); "
                      "its criteria are unreliable. Raise max_iter (in fit_kwargs, or under [methods.em] in a "
                      f"workflow). {advice}".rstrip(),
                      MixflowWarning, skip_file_prefixes=PACKAGE_FILES)
    folds = [int(k) for k in table.index if "cv_converged" in table and not bool(table.loc[k, "cv_converged"])
             and int(k) not in flagged and int(k) not in skipped]
    if folds:  # the fold's own warning, raised again above, says why and what would settle it
        warnings.warn(f"select_k: a cross-validation fold's EM fit for K in {folds} did not converge (see the "
                      "'cv_converged' column and that fold's warning): the held-out log-likelihood there is less "
                      "certain; BIC, AIC and ICL come from the fit on all rows, which converged",
                      MixflowWarning, skip_file_prefixes=PACKAGE_FILES)
