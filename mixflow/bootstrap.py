"""Uncertainty of the EM estimate: bootstrap replicates and standard errors from the observed information.

``bootstrap`` refits EM on resampled data, started from the estimate and aligned to its labelling, and
stores the replicates as ``/em/bootstrap`` (chain=1, draw=B), where ArviZ treats them like a posterior.
Replicate b always uses the b-th child of ``SeedSequence(random_seed)``, so the numbers do not depend on
how many processes run them.

``standard_errors`` inverts the observed information: the numerical Hessian of the log-likelihood (of
the log posterior density for a MAP fit) in an unconstrained parameterisation (weights as log-ratios,
covariances by their log-Cholesky factor, variances by their logarithm), mapped back by the delta method.
"""

import dataclasses
import functools
import multiprocessing
import os
import secrets
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd
import xarray as xr
from scipy.special import logsumexp

from mixflow.compare import check_tree
from mixflow.data import Data
from mixflow.families.base import model_from_json
from mixflow.families.gaussian import GaussianMixture
from mixflow.families.poisson import PoissonMixture
from mixflow.families.regression import RegressionMixture
from mixflow.grouped import GroupedGaussianMixture
from mixflow.kmeans import SoftKMeans
from mixflow.relabel import optimal_permutations
from mixflow.warnings import ConvergenceWarning, DegenerateComponentWarning, MixflowWarning

__all__ = ["available_cores", "bootstrap", "full_covariances", "observed_data", "parallel_map", "responsibilities",
           "simulate", "simulate_data", "standard_errors"]

_KINDS = ("nonparametric", "parametric")
_FIT_METHOD = {"mle": "em", "map": "map"}
#: Unconstrained parameterisation of each parameter name (shared by every family).
_TRANSFORMS = {"weights": "simplex", "mu": "free", "coefficients": "free", "variance": "log", "rate": "log",
               "covariance": "log_cholesky"}
_START_METHOD = "fork" if sys.platform.startswith("linux") else "spawn"


# -- the container ---------------------------------------------------------------------------------------
def observed_data(tree) -> Data:
    """The data a container was fitted on, as validated :class:`mixflow.data.Data` (copies)."""
    observed = tree["observed_data"]
    weights = observed["weights"].values.copy() if "weights" in observed.data_vars else None
    return Data(values=observed["x"].transpose("obs", "feature").values.astype(float),
                features=observed["feature"].values.astype(str), obs=observed["obs"].values.copy(),
                weights=weights)


def _estimate(tree) -> dict:
    if "em" not in tree.children or "estimate" not in tree["em"].children:
        raise ValueError("tree: expected a result with an /em/estimate (from mixflow.fit), got groups "
                         f"{sorted(tree.children)}")
    estimate = tree["em/estimate"].to_dataset()
    return {name: estimate[name].values.copy() for name in estimate.data_vars}


def _model(tree, n_active: int):
    """The declared model, with as many components as the (possibly trimmed) estimate."""
    model = model_from_json(tree.attrs["model"])
    return model if model.n_components == n_active else dataclasses.replace(model, n_components=n_active)


# -- Gaussian helpers (the family does not provide a sampler yet) ----------------------------------------
def full_covariances(params: dict, n_features: int) -> np.ndarray:
    """Any covariance type's parameters as (K, d, d) covariance matrices."""
    k, d = params["weights"].size, n_features
    if "covariance" in params:
        return np.broadcast_to(params["covariance"], (k, d, d)).copy()
    if "variance" in params:
        variance = np.asarray(params["variance"], dtype=float)
        diagonal = np.broadcast_to(variance[:, None] if variance.ndim == 1 else variance, (k, d))
        return np.einsum("kd,de->kde", diagonal, np.eye(d))
    raise NotImplementedError(f"params: expected Gaussian parameters (covariance or variance), got {sorted(params)}")


def simulate(params: dict, n_obs: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n_obs`` points from a Gaussian mixture; returns (x (n_obs, d), labels (n_obs,))."""
    mu = np.asarray(params["mu"], dtype=float)
    factors = np.linalg.cholesky(full_covariances(params, mu.shape[1]))
    labels = rng.choice(mu.shape[0], size=n_obs, p=params["weights"] / params["weights"].sum())
    noise = rng.standard_normal((n_obs, mu.shape[1]))
    return mu[labels] + np.einsum("nij,nj->ni", factors[labels], noise), labels


def _expanded_rows(data: Data, what: str) -> np.ndarray:
    """Row index of every frequency unit (a row of integer weight w repeated w times)."""
    if data.weights is None:
        return np.arange(data.n_obs)
    if not np.array_equal(data.weights, np.round(data.weights)):
        raise ValueError(f"weights: expected integer frequency weights to {what} unit by unit, got non-integer "
                         f"weights such as {data.weights[data.weights != np.round(data.weights)][0]!r}")
    return np.repeat(np.arange(data.n_obs), data.weights.astype(np.int64))


def _n_units(data: Data) -> int:
    return max(int(round(data.total_weight)), 1)


def _labels(params: dict, n: int, rng: np.random.Generator) -> np.ndarray:
    weights = np.asarray(params["weights"], dtype=float)
    return rng.choice(weights.size, size=n, p=weights / weights.sum())


@functools.singledispatch
def simulate_data(model, params: dict, data: Data, rng: np.random.Generator) -> Data:
    """A replicate data set drawn from the fitted mixture, shaped like ``data`` (same columns).

    Gaussian and soft k-means: as many points as the total weight, unweighted. Poisson: as many counts.
    Regression: the covariates as observed (each unit of a row's integer weight its own row), new
    responses. Grouped data: as many values, counted into the observed classes (the new weights).

    Parameters
    ----------
    model : MixtureModel
    params : dict of str to ndarray
        One set of the model's parameters (an estimate or a draw).
    data : mixflow.data.Data
        The observed data (their columns, weights, classes or covariates).
    rng : numpy.random.Generator

    Returns
    -------
    mixflow.data.Data

    """
    raise NotImplementedError(f"model: no sampler for the {getattr(model, 'family', type(model).__name__)!r} "
                              "family yet")


@simulate_data.register
def _(model: GaussianMixture, params, data, rng):
    x, _ = simulate(params, _n_units(data), rng)
    return Data(values=x, features=data.features, obs=np.arange(x.shape[0]), weights=None)


@simulate_data.register
def _(model: SoftKMeans, params, data, rng):
    spherical = {**params, "variance": np.full(np.asarray(params["weights"]).size, model.variance)}
    return simulate_data.dispatch(GaussianMixture)(model, spherical, data, rng)


@simulate_data.register
def _(model: PoissonMixture, params, data, rng):
    n = _n_units(data)
    counts = rng.poisson(np.asarray(params["rate"], dtype=float)[_labels(params, n, rng)])
    return Data(values=counts[:, None].astype(float), features=data.features, obs=np.arange(n), weights=None)


def regression_design(model: RegressionMixture, data: Data) -> tuple[np.ndarray, int]:
    """The design matrix (intercept column first, then the covariates) and the response column index."""
    features = [str(f) for f in data.features]
    columns = [data.values[:, features.index(c)] for c in model.covariates]
    design = np.column_stack(([np.ones(data.n_obs)] if model.intercept else []) + columns)
    return design, features.index(model.response)


@simulate_data.register
def _(model: RegressionMixture, params, data, rng):
    rows = _expanded_rows(data, "simulate a regression's responses")
    design, response = regression_design(model, data)
    labels = _labels(params, rows.size, rng)
    coefficients, variance = np.asarray(params["coefficients"]), np.asarray(params["variance"], dtype=float)
    values = data.values[rows].copy()
    values[:, response] = np.einsum("np,np->n", design[rows], coefficients[labels]) + np.sqrt(
        variance[labels]) * rng.standard_normal(rows.size)
    return Data(values=values, features=data.features, obs=np.arange(rows.size), weights=None)


def class_of(model: GroupedGaussianMixture, data: Data, values: np.ndarray) -> np.ndarray:
    """Row of the class each value falls in: the last class (by lower limit) starting at or below it."""
    lower, _ = model._bounds(data)
    order = np.argsort(lower, kind="stable")
    position = np.searchsorted(lower[order], values, side="right") - 1
    return order[np.clip(position, 0, lower.size - 1)]


@simulate_data.register
def _(model: GroupedGaussianMixture, params, data, rng):
    n = _n_units(data)
    labels = _labels(params, n, rng)
    sd = np.broadcast_to(np.sqrt(np.asarray(params["variance"], dtype=float)), np.shape(params["mu"]))
    values = np.asarray(params["mu"], dtype=float)[labels] + sd[labels] * rng.standard_normal(n)
    counts = np.bincount(class_of(model, data, values), minlength=data.n_obs).astype(float)
    return Data(values=data.values.copy(), features=data.features, obs=data.obs.copy(), weights=counts)


def responsibilities(model, params: dict, data: Data) -> np.ndarray:
    """Posterior component probabilities of each observation, shape (n_obs, K) (one E-step)."""
    prepared = model.prepare(data)
    log_joint, _ = model.log_density(model.e_step_constants(params, prepared), prepared)
    with np.errstate(divide="ignore"):
        log_joint = log_joint + np.log(params["weights"])
    return np.exp(log_joint - logsumexp(log_joint, axis=1, keepdims=True))


def _align(reference: np.ndarray, resp: np.ndarray, frequency: np.ndarray) -> np.ndarray:
    """Order of a fit's components that best matches the reference labelling.

    The optimal assignment (:func:`mixflow.relabel.optimal_permutations`) under a family-generic cost:
    minus the weighted overlap ``sum_n w_n r_nk(fit) r_nj(reference)`` of the responsibilities on the
    observed data. ``order[j]`` is the fit's component that becomes component j.
    """
    overlap = resp.T @ (reference * frequency[:, None])
    return optimal_permutations(-overlap[None])[0]


# -- one replicate ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Job:
    model_json: str
    n_active: int
    method: str
    x: np.ndarray
    features: np.ndarray
    weights: np.ndarray | None
    estimate: dict
    reference_responsibilities: np.ndarray
    kind: str
    tol: float
    max_iter: int


def _resample(job: _Job, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
    frequency = np.ones(job.x.shape[0]) if job.weights is None else job.weights
    n_draws = max(int(round(frequency.sum())), 1)
    if job.kind == "nonparametric":
        return job.x, rng.multinomial(n_draws, frequency / frequency.sum()).astype(float)
    model = _job_model(job)
    replicate = simulate_data(model, job.estimate, Data(values=job.x, features=job.features,
                                                        obs=np.arange(job.x.shape[0]), weights=job.weights), rng)
    return replicate.values, replicate.weights


def _job_model(job: _Job):
    model = model_from_json(job.model_json)
    return model if model.n_components == job.n_active else dataclasses.replace(model, n_components=job.n_active)


def _replicate(job: _Job, seed: np.random.SeedSequence) -> dict:
    from mixflow.fitting import fit

    rng = np.random.default_rng(seed)
    x, weights = _resample(job, rng)
    model = _job_model(job)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            tree = fit(model, pd.DataFrame(x, columns=job.features), method=job.method, weights=weights,
                       init=job.estimate, n_init=1, tol=job.tol,
                       max_iter=job.max_iter, random_seed=int(rng.integers(2**63)))
        except (ValueError, np.linalg.LinAlgError) as error:
            return {"params": None, "error": f"{type(error).__name__}: {error}", "warnings": []}
    estimate = tree["em/estimate"].to_dataset()
    params = {name: estimate[name].values for name in estimate.data_vars}
    if params["weights"].size != job.n_active:
        return {"params": None, "error": "a component was trimmed", "warnings": []}
    data = Data(values=job.x, features=job.features, obs=np.arange(job.x.shape[0]), weights=job.weights)
    order = _align(job.reference_responsibilities, responsibilities(model, params, data), data.frequency)
    model_dims = model.parameter_dims()
    aligned = {name: np.take(value, order, axis=model_dims[name].index("component"))
               if "component" in model_dims[name] else value for name, value in params.items()}
    return {"params": aligned, "error": None, "converged": bool(tree["em"].attrs["converged"]),
            "warnings": [(w.category, str(w.message)) for w in caught]}


def _replicate_chunk(job: _Job, seeds: list) -> list[dict]:
    return [_replicate(job, seed) for seed in seeds]


# -- the public function -------------------------------------------------------------------------------
def _check_arguments(n_replicates, kind, random_seed, n_jobs):
    if isinstance(n_replicates, bool) or not isinstance(n_replicates, int | np.integer) or n_replicates < 2:
        raise ValueError(f"n_replicates: expected an integer >= 2, got {n_replicates!r}")
    if kind not in _KINDS:
        raise ValueError(f"kind: expected one of {list(_KINDS)}, got {kind!r}")
    if random_seed is not None and (isinstance(random_seed, bool) or not isinstance(random_seed, int | np.integer)
                                    or random_seed < 0):
        raise ValueError(f"random_seed: expected None or a non-negative integer, got {random_seed!r}")
    if n_jobs is not None and (isinstance(n_jobs, bool) or not isinstance(n_jobs, int | np.integer) or n_jobs < 1):
        raise ValueError(f"n_jobs: expected None (all available cores) or an integer >= 1, got {n_jobs!r}")


def _check_same_data(data, fitted: Data) -> None:
    from mixflow.data import validate_data

    given = validate_data(data, name="data", features=fitted.features, warn_constant=False)
    if given.values.shape != fitted.values.shape or not np.array_equal(given.values, fitted.values):
        raise ValueError(f"data: expected the data the tree was fitted on (shape {fitted.values.shape}), "
                         f"got different data of shape {given.values.shape}")


def parallel_map(function, tasks: list[tuple], n_jobs: int) -> list:
    """``[function(*task) for task in tasks]`` on ``n_jobs`` worker processes, results in task order.

    ``n_jobs=1`` runs in this process. On Linux the workers are forked (no re-import, no ``__main__``
    guard needed in scripts); elsewhere they are spawned.
    """
    if n_jobs == 1 or len(tasks) <= 1:
        return [function(*task) for task in tasks]
    context = multiprocessing.get_context(_START_METHOD if _START_METHOD in multiprocessing.get_all_start_methods()
                                          else "spawn")
    with warnings.catch_warnings(), ProcessPoolExecutor(max_workers=n_jobs, mp_context=context) as pool:
        # The workers only run numpy/scipy code; OpenBLAS's own threads are fork-safe (pthread_atfork).
        warnings.filterwarnings("ignore", message=r"This process .* is multi-threaded", category=DeprecationWarning)
        futures = [pool.submit(function, *task) for task in tasks]
        return [future.result() for future in futures]


def available_cores() -> int:
    """CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _run(job: _Job, seeds: list, n_jobs: int) -> list[dict]:
    n_chunks = 1 if n_jobs == 1 else min(len(seeds), 4 * n_jobs)
    chunks = [(job, [seeds[i] for i in part]) for part in np.array_split(np.arange(len(seeds)), n_chunks)]
    return [result for chunk in parallel_map(_replicate_chunk, chunks, n_jobs) for result in chunk]


def _report_warnings(results: list[dict]) -> dict:
    failed = [r["error"] for r in results if r["params"] is None]
    not_converged = sum(1 for r in results if r["params"] is not None and not r["converged"])
    degenerate = sum(1 for r in results if any(c is DegenerateComponentWarning for c, _ in r["warnings"]))
    for category, message in {(c, m) for r in results for c, m in r["warnings"]
                              if c not in (ConvergenceWarning, DegenerateComponentWarning)}:
        warnings.warn(f"bootstrap replicate: {message}", category, stacklevel=3)
    problems = [f"{count} {what}" for count, what in (
        (len(failed), f"failed (stored as NaN; first error: {failed[0] if failed else ''})"),
        (not_converged, "did not converge"), (degenerate, "had a collapsed component")) if count]
    if problems:
        warnings.warn(f"bootstrap: of {len(results)} replicates, {', '.join(problems)}; the replicates are kept "
                      "as they are (consider method='map' or more data)", MixflowWarning, stacklevel=3)
    return {"n_failed": len(failed), "n_not_converged": not_converged, "n_degenerate": degenerate}


def bootstrap(tree, data=None, *, n_replicates: int = 200, kind: str = "nonparametric",
              random_seed: int | None = None, n_jobs: int | None = None) -> xr.DataTree:
    """Refit EM on resampled data and store the replicates in ``/em/bootstrap``.

    Parameters
    ----------
    tree : xarray.DataTree
        A result of :func:`mixflow.fit`. It is not modified.
    data : array-like, optional
        The data the tree was fitted on (checked); by default its ``/observed_data``.
    n_replicates : int, default 200
        Number of replicates B.
    kind : {"nonparametric", "parametric"}, default "nonparametric"
        Resample the observations with replacement (multinomial frequency weights, so frequency-weighted
        data are resampled unit by unit), or simulate new data sets of the same size from the fitted
        mixture (:func:`simulate_data`: Gaussian, soft k-means, Poisson, regression with the covariates
        fixed, grouped data counted into the same classes).
    random_seed : int, optional
        Seed of the replicates (drawn and recorded when None); the same seed gives the same replicates
        whatever ``n_jobs``.
    n_jobs : int, optional
        Worker processes; all available cores by default, 1 runs in this process.

    Returns
    -------
    xarray.DataTree
        A copy of ``tree`` with ``/em/bootstrap``: every parameter with dims ``(chain, draw, ...)``,
        chain=1 and draw=B, components aligned to the estimate; failed replicates are NaN. Its attrs
        record ``kind``, ``n_replicates``, ``random_seed`` and the numbers of failed, unconverged and
        degenerate replicates.

    Notes
    -----
    Each replicate runs ``mixflow.fit`` with the tree's method (MLE or MAP), ``tol`` and ``max_iter``,
    one start at the estimate and no trimming, then matches its components to the estimate's by the
    assignment that maximises the overlap of their responsibilities on the observed data.

    """
    check_tree(tree)
    _check_arguments(n_replicates, kind, random_seed, n_jobs)
    estimate = _estimate(tree)
    fitted = observed_data(tree)
    if data is not None:
        _check_same_data(data, fitted)
    if kind == "parametric":
        model = _model(tree, estimate["weights"].size)
        if simulate_data.dispatch(type(model)) is simulate_data.dispatch(object):
            raise NotImplementedError(f"kind: 'parametric' needs a sampler of the model's family, and the "
                                      f"{model.family!r} family has none yet (use kind='nonparametric')")
        simulate_data(model, estimate, fitted, np.random.default_rng(0))  # raises early on unsuitable data
    seed = secrets.randbits(63) if random_seed is None else int(random_seed)
    attrs = tree["em"].attrs
    job = _Job(model_json=tree.attrs["model"], n_active=estimate["weights"].size,
               method=_FIT_METHOD[attrs.get("method", "mle")], x=fitted.values, features=fitted.features,
               weights=fitted.weights,
               estimate=estimate, kind=kind,
               reference_responsibilities=tree["em/responsibilities"]["responsibilities"].transpose(
                   "obs", "component").values, tol=float(attrs.get("tol", 1e-8)),
               max_iter=int(attrs.get("max_iter", 1000)))
    seeds = np.random.SeedSequence(seed).spawn(int(n_replicates))
    workers = min(int(n_jobs or available_cores()), len(seeds))
    results = _run(job, seeds, workers)
    counts = _report_warnings(results)
    group = _bootstrap_group(tree, estimate, results)
    group.attrs.update(kind=kind, n_replicates=int(n_replicates), random_seed=seed, **counts)
    out = tree.copy()
    out["em/bootstrap"] = xr.DataTree(group)
    return out


def _bootstrap_group(tree, estimate: dict, results: list[dict]) -> xr.Dataset:
    reference = tree["em/estimate"].to_dataset()
    variables = {}
    for name, value in estimate.items():
        stacked = np.stack([r["params"][name] if r["params"] is not None else np.full(value.shape, np.nan)
                            for r in results])
        variables[name] = (("chain", "draw", *reference[name].dims), stacked[None])
    coords = {dim: reference[dim].values for dim in reference.dims}
    coords.update(chain=np.array([0]), draw=np.arange(len(results)))
    return xr.Dataset(variables, coords=coords)


# -- observed information ------------------------------------------------------------------------------
def _pack(params: dict) -> tuple[np.ndarray, list]:
    """Unconstrained vector of the parameters and what is needed to unpack it."""
    pieces, layout = [], []
    for name, value in params.items():
        value = np.asarray(value, dtype=float)
        kind = _TRANSFORMS.get(name)
        if kind == "simplex":
            piece = np.log(value[:-1]) - np.log(value[-1])
        elif kind == "free":
            piece = value.ravel()
        elif kind == "log":
            piece = np.log(value).ravel()
        elif kind == "log_cholesky":
            factors = np.linalg.cholesky(value.reshape(-1, *value.shape[-2:]))
            rows, cols = np.tril_indices(value.shape[-1])
            factors[..., np.arange(value.shape[-1]), np.arange(value.shape[-1])] = np.log(
                np.diagonal(factors, axis1=-2, axis2=-1))
            piece = factors[:, rows, cols].ravel()
        else:
            raise NotImplementedError(f"standard errors: no unconstrained parameterisation of parameter {name!r}")
        pieces.append(piece)
        layout.append((name, value.shape, piece.size))
    return np.concatenate(pieces), layout


def _unpack(theta: np.ndarray, layout: list) -> dict:
    params, start = {}, 0
    for name, shape, size in layout:
        piece = theta[start:start + size]
        start += size
        kind = _TRANSFORMS[name]
        if kind == "simplex":
            logits = np.append(piece, 0.0)
            params[name] = np.exp(logits - logsumexp(logits))
        elif kind == "free":
            params[name] = piece.reshape(shape)
        elif kind == "log":
            params[name] = np.exp(piece).reshape(shape)
        else:
            d = shape[-1]
            rows, cols = np.tril_indices(d)
            factors = np.zeros((size // len(rows), d, d))
            factors[:, rows, cols] = piece.reshape(-1, len(rows))
            diagonal = np.arange(d)
            factors[:, diagonal, diagonal] = np.exp(factors[:, diagonal, diagonal])
            params[name] = (factors @ np.swapaxes(factors, -1, -2)).reshape(shape)
    return params


def _objective_function(model, data: Data, maximum_a_posteriori: bool):
    from mixflow.engines.em import objective

    prepared = model.prepare(data)
    prior = model.resolve_prior(prepared) if maximum_a_posteriori else None
    active = np.arange(model.n_components)

    def value(params: dict) -> float:
        constants = model.e_step_constants(params, prepared)
        log_joint, _ = model.log_density(constants, prepared)
        log_likelihood = float(prepared.weights @ logsumexp(log_joint + np.log(params["weights"]), axis=1))
        return objective(model, params, log_likelihood, prior, active)

    return value


def _hessian(function, theta: np.ndarray) -> np.ndarray:
    """Central-difference Hessian (4 evaluations per entry, steps ~ eps^(1/4) relative)."""
    p = theta.size
    steps = 1e-4 * np.maximum(np.abs(theta), 1.0)
    hessian = np.empty((p, p))
    for i in range(p):
        for j in range(i, p):
            shifted = []
            for si, sj in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
                point = theta.copy()
                point[i] += si * steps[i]
                point[j] += sj * steps[j]
                shifted.append(function(point))
            hessian[i, j] = hessian[j, i] = (shifted[0] - shifted[1] - shifted[2] + shifted[3]) / (
                4 * steps[i] * steps[j])
    return hessian


def _jacobian(function, theta: np.ndarray) -> np.ndarray:
    steps = 1e-6 * np.maximum(np.abs(theta), 1.0)
    columns = []
    for i in range(theta.size):
        up, down = theta.copy(), theta.copy()
        up[i] += steps[i]
        down[i] -= steps[i]
        columns.append((function(up) - function(down)) / (2 * steps[i]))
    return np.stack(columns, axis=1)


def standard_errors(tree, *, max_parameters: int = 200, warn: bool = True) -> xr.Dataset:
    """Standard errors of the EM estimate from the observed information matrix.

    The Hessian of the log-likelihood (MLE) or log posterior density (MAP) is taken numerically in an
    unconstrained parameterisation and inverted; the delta method maps the covariance back to the
    parameters as stored. It is well defined at an interior maximum: every weight positive, no
    collapsed component, and a negative definite Hessian. Elsewhere the errors are NaN (with a warning).
    They assume the model is right: under misspecification (e.g. spherical components for correlated
    features of different scales) they can differ a lot from the nonparametric bootstrap, which does not.

    Parameters
    ----------
    tree : xarray.DataTree
        A result of :func:`mixflow.fit`.
    max_parameters : int, default 200
        Give NaN rather than spend about ``2 p^2`` passes over the data when the number of free
        parameters p exceeds this.
    warn : bool, default True
        Warn (``MixflowWarning``) when the errors are not defined.

    Returns
    -------
    xarray.Dataset
        Same variables, dims and coordinates as ``/em/estimate``. The weights' errors respect the
        sum-to-one constraint; symmetric matrices have equal errors in (i, j) and (j, i).

    """
    check_tree(tree)
    estimate = _estimate(tree)
    reference = tree["em/estimate"].to_dataset()
    nan = xr.Dataset({name: xr.full_like(reference[name], np.nan, dtype=float) for name in reference.data_vars})
    unknown = sorted(set(estimate) - set(_TRANSFORMS))
    if unknown:
        reason = f"no unconstrained parameterisation of parameter(s) {unknown}"
    else:
        theta, layout = _pack(estimate)
        reason = _undefined_reason(tree, estimate, theta.size, max_parameters)
    if reason is None:
        data = observed_data(tree)
        model = _model(tree, estimate["weights"].size)
        value = _objective_function(model, data, tree["em"].attrs.get("method") == "map")
        hessian = _hessian(lambda t: value(_unpack(t, layout)), theta)
        try:
            factor = np.linalg.cholesky(-hessian)
        except np.linalg.LinAlgError:
            reason = "the Hessian of the objective is not negative definite at the estimate"
    if reason is not None:
        if warn:
            warnings.warn(f"standard errors from the observed information are not defined: {reason}; "
                          "use mixflow.bootstrap instead", MixflowWarning, stacklevel=2)
        return nan
    inverse_factor = np.linalg.inv(factor)
    covariance = inverse_factor.T @ inverse_factor

    def natural(t):
        return np.concatenate([v.ravel() for v in _unpack(t, layout).values()])

    jacobian = _jacobian(natural, theta)
    variances = np.einsum("ij,jk,ik->i", jacobian, covariance, jacobian)
    errors, start = {}, 0
    for name in estimate:
        size = estimate[name].size
        errors[name] = (reference[name].dims, np.sqrt(np.maximum(variances[start:start + size], 0.0)).reshape(
            estimate[name].shape))
        start += size
    return xr.Dataset(errors, coords=reference.coords)


def _undefined_reason(tree, estimate: dict, n_free: int, max_parameters: int) -> str | None:
    if n_free > max_parameters:
        return f"{n_free} free parameters exceed max_parameters={max_parameters}"
    collapsed = tree["em"].attrs.get("collapsed_components", "[]")
    if collapsed not in ("[]", ""):
        return f"component(s) {collapsed} collapsed (the likelihood is unbounded there)"
    if (estimate["weights"] <= 1e-8).any():
        return "a mixing weight is on the boundary (zero)"
    return None
