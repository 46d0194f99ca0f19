"""Uncertainty of the EM estimate: bootstrap replicates (and the container's data and estimate).

``bootstrap`` refits EM on resampled data, started from the estimate and aligned to its labelling, and
stores the replicates as ``/em/bootstrap/posterior`` (chain=1, draw=B): ``/em/bootstrap`` is an ArviZ DataTree.
Replicate b always uses the b-th child of ``SeedSequence(random_seed)``, so the numbers do not depend on
how many processes run them.

Dask data (a tree fitted to them holds a uniform sample of their rows) are resampled by the scalable
bootstrap of Poisson(1) frequency weights, drawn block by block from each replicate's seed: every row
counts a Poisson(1) number of times (the large-n limit of the multinomial counts), and each replicate is
one EM fit over the blocks.

Standard errors from the observed information are in :mod:`mixflow.analysis.information`; the per-family
samplers of the parametric bootstrap in :mod:`mixflow.families.sampling`.
"""

import dataclasses
import secrets
import warnings

import numpy as np
import pandas as pd
import xarray as xr

from mixflow.arguments import check_count
from mixflow.checks import check_seed
from mixflow.chunked import ChunkedData, is_chunked, row_draws, validate_chunked
from mixflow.container.layout import EM_BOOTSTRAP, EM_ESTIMATE, EM_RESPONSIBILITIES
from mixflow.container.read import check_tree, fitted_estimate, fitted_model, flagged_fit, observed_data
from mixflow.container.tree import as_container
from mixflow.data import Data
from mixflow.engines.em_steps import responsibilities
from mixflow.errors import InputError, UnsupportedError
from mixflow.families.base import MixtureModel, model_from_json
from mixflow.families.relabel import optimal_permutations
from mixflow.parallel import default_jobs, parallel_map
from mixflow.warnings import PACKAGE_FILES, ConvergenceWarning, DegenerateComponentWarning, MixflowWarning

__all__ = ["bootstrap"]

_KINDS = ("nonparametric", "parametric")
#: Difference of two EM objectives on the data, per unit of weight, below which they are one solution (_elsewhere)
_SAME_SOLUTION = 1e-6
#: Iterations at least of the run that tells a replicate's solution (:func:`_elsewhere`)
_CHECK_MAX_ITER = 5000
_FIT_METHOD = {"mle": "em", "map": "map"}


def _align(reference: np.ndarray, resp: np.ndarray, frequency: np.ndarray) -> np.ndarray:
    """Order of a fit's components that best matches the reference labelling.

    The optimal assignment (:func:`mixflow.families.relabel.optimal_permutations`) under a family-generic cost:
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
    accelerate: str | None = None
    chunked: ChunkedData | None = None  # Dask data: all the rows (``x`` then holds the tree's sample of them)
    objective: float = float("nan")  # the estimate's on the data: log-likelihood (MLE) or log posterior (MAP)


def _poisson(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.poisson(1.0, n).astype(float)


def _poisson_weights(chunked: ChunkedData, rng: np.random.Generator):
    """Lazy Poisson(1) frequency weights of every row (times the data's), the same for any scheduler."""
    draws = row_draws(chunked, rng.integers(2**63, size=2).tolist(), _poisson, float)
    return draws if chunked.weights is None else draws * chunked.weights


def _resample(job: _Job, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
    if job.chunked is not None:
        return job.chunked.values, _poisson_weights(job.chunked, rng)
    frequency = np.ones(job.x.shape[0]) if job.weights is None else job.weights
    n_draws = max(int(round(frequency.sum())), 1)
    if job.kind == "nonparametric":
        return job.x, rng.multinomial(n_draws, frequency / frequency.sum()).astype(float)
    model = _job_model(job)
    replicate = model.simulate_data(job.estimate, Data(values=job.x, features=job.features,
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
            data = (pd.DataFrame(x, columns=job.features) if job.chunked is None
                    else xr.DataArray(x, dims=("obs", "feature"), coords={"feature": job.features}))
            # Dask data: the replicate's sample as large as the fit's, for the checks made on it (duplicate
            # components: on a few rows, most of zero Poisson weight, any two components look the same)
            chunked = ({} if job.chunked is None
                       else {"subsample": job.x.shape[0], "persist": job.chunked.persisted})
            tree = fit(model, data, method=job.method, weights=weights, init=job.estimate, n_init=1, tol=job.tol,
                       max_iter=job.max_iter, accelerate=job.accelerate, random_seed=int(rng.integers(2**63)),
                       **chunked)
        except (ValueError, np.linalg.LinAlgError) as error:
            return {"params": None, "error": f"{type(error).__name__}: {error}", "warnings": []}
    estimate = tree[EM_ESTIMATE].to_dataset()
    params = {name: estimate[name].values for name in estimate.data_vars}
    if params["weights"].size != job.n_active:
        return {"params": None, "error": "a component was trimmed", "warnings": []}
    data = Data(values=job.x, features=job.features, obs=np.arange(job.x.shape[0]), weights=job.weights)
    order = _align(job.reference_responsibilities, responsibilities(model, params, data), data.frequency)
    model_dims = model.parameter_dims()
    aligned = {name: np.take(value, order, axis=model_dims[name].index("component"))
               if "component" in model_dims[name] else value for name, value in params.items()}
    return {"params": aligned, "error": None, "converged": bool(tree["em"].attrs["converged"]),
            "warnings": [(w.category, str(w.message)) for w in caught],
            "solution": None if job.chunked is not None else _elsewhere(job, model, params,
                                                                         int(rng.integers(2**63)))}


def _elsewhere(job: _Job, model, params: dict, seed: int) -> str:
    """Where EM on the data, from a replicate's estimate, goes: the estimate's maximum or another fixed point.

    ``"same"``: its objective within :data:`_SAME_SOLUTION` per unit of weight of the estimate's (two objectives
    of the same data differ by the same amount in any units); ``"elsewhere"``: another fixed point, below it (a
    lower maximum, or a boundary point such as a Poisson component on the zeros alone; or above it but degenerate or
    spurious, as the estimate's restarts rank such points below every sound one); ``"higher"``: a sound maximum
    above the estimate's, which its restarts missed; ``"undecided"``: the run did not converge (SQUAREM, and at
    least :data:`_CHECK_MAX_ITER` iterations). A replicate of another fixed point is a draw of the estimator's
    spread between solutions, not about the estimate's, and widens the intervals beyond it.
    """
    from mixflow.fitting import fit

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            back = fit(model, pd.DataFrame(job.x, columns=job.features), method=job.method, weights=job.weights,
                       init=params, n_init=1, tol=job.tol, max_iter=max(job.max_iter, _CHECK_MAX_ITER),
                       accelerate="squarem", random_seed=seed)
        except (ValueError, np.linalg.LinAlgError):
            return "undecided"
    if not back["em"].attrs["converged"]:
        return "undecided"
    reached = _objective(back["em"].attrs)
    total = float(np.sum(job.weights)) if job.weights is not None else float(job.x.shape[0])
    if abs(reached - job.objective) <= _SAME_SOLUTION * total:
        return "same"
    return "higher" if reached > job.objective and not any(flagged_fit(back["em"].attrs)) else "elsewhere"


def _objective(em_attrs) -> float:
    """The objective EM maximised, from ``/em`` attrs: the log posterior of a MAP fit, else the log-likelihood."""
    return float(em_attrs["log_posterior"] if em_attrs.get("method") == "map" else em_attrs["log_likelihood"])


def _replicate_chunk(job: _Job, seeds: list) -> list[dict]:
    return [_replicate(job, seed) for seed in seeds]


# -- the public function -------------------------------------------------------------------------------
def check_options(n_replicates, kind, random_seed, n_jobs) -> None:
    """Check the options of :func:`bootstrap` (also used by the workflow files before anything is fitted)."""
    check_count("n_replicates", n_replicates, 2)
    if kind not in _KINDS:
        raise InputError(f"kind: expected one of {list(_KINDS)}, got {kind!r}")
    if random_seed is not None:
        check_seed(random_seed)
    check_count("n_jobs", n_jobs, 1, none="all available cores")


def _check_same_data(data, fitted: Data) -> None:
    from mixflow.data import validate_data

    given = validate_data(data, name="data", features=fitted.features, warn_constant=False)
    if given.values.shape != fitted.values.shape or not np.array_equal(given.values, fitted.values):
        raise InputError(f"data: expected the data the tree was fitted on (shape {fitted.values.shape}), "
                         f"got different data of shape {given.values.shape}")


def _check_chunked(tree, data, weights, kind: str, fitted: Data) -> ChunkedData | None:
    """Dask ``data`` (and ``weights``) checked against the tree fitted to them; None for data in memory.

    The tree of Dask data records their number of rows and total weight, and holds a sample of the rows
    at known positions: all three must match.
    """
    n_obs = tree["observed_data"].attrs.get("n_obs")
    sampled = n_obs is not None and int(n_obs) != fitted.n_obs
    if not is_chunked(data):
        if sampled:
            raise InputError(f"data: expected the Dask data the tree was fitted on (its /observed_data holds a "
                             f"sample of {fitted.n_obs} of their {n_obs} rows, whose bootstrap would be that of a "
                             f"fit to {fitted.n_obs} rows), got {'None' if data is None else type(data).__name__}")
        if weights is not None:
            raise InputError("weights: expected None with data in memory (the tree holds their weights), got "
                             f"{type(weights).__name__}")
        return None
    if kind != "nonparametric":
        raise InputError(f"kind: expected 'nonparametric' with Dask data (a parametric replicate would simulate "
                         f"every row in memory), got {kind!r}")
    chunked = validate_chunked(data, weights=weights, features=fitted.features, warn_constant=False)
    total = float(tree["observed_data"].attrs.get("total_weight", fitted.total_weight))
    if fitted.weights is not None and chunked.weights is None:
        raise InputError("weights: expected the frequency weights the tree was fitted with, got None")
    same = (chunked.n_obs == (n_obs if n_obs is not None else fitted.n_obs)
            and abs(chunked.total_weight - total) <= 1e-12 * total and fitted.obs.max() < chunked.n_obs)
    if same:  # the sample's rows are looked up only where they exist
        import dask

        sample_weights = None if chunked.weights is None else chunked.weights[fitted.obs]
        rows, row_weights = dask.compute(chunked.values[fitted.obs], sample_weights)
        same = np.array_equal(rows, fitted.values) and (row_weights is None or np.array_equal(row_weights,
                                                                                             fitted.weights))
    if not same:
        raise InputError(f"data: expected the data the tree was fitted on ({n_obs or fitted.n_obs} rows of total "
                         f"weight {total:.6g}, the sample's rows among them), got {chunked.n_obs} rows of total "
                         f"weight {chunked.total_weight:.6g} that differ")
    return chunked


def _run(job: _Job, seeds: list, n_jobs: int) -> list[dict]:
    n_chunks = 1 if n_jobs == 1 else min(len(seeds), 4 * n_jobs)
    chunks = [(job, [seeds[i] for i in part]) for part in np.array_split(np.arange(len(seeds)), n_chunks)]
    return [result for chunk in parallel_map(_replicate_chunk, chunks, n_jobs) for result in chunk]


def _replicate_flags(results: list[dict]) -> dict[str, np.ndarray]:
    """The flags of each replicate.

    ``failed`` (no fit), ``converged``, ``degenerate`` (its fit warned of a degenerate component), ``elsewhere`` (EM
    on the data from its estimate goes to another solution than the estimate's, :func:`_elsewhere`).
    """
    return {"failed": np.array([r["params"] is None for r in results]),
            "converged": np.array([r["params"] is not None and bool(r["converged"]) for r in results]),
            "degenerate": np.array([any(issubclass(c, DegenerateComponentWarning) for c, _ in r["warnings"])
                                    for r in results]),
            "elsewhere": np.array([r.get("solution") in ("elsewhere", "higher") for r in results])}


def _report_warnings(results: list[dict], flags: dict[str, np.ndarray], method: str) -> dict:
    failed = [r["error"] for r in results if r["params"] is None]
    not_converged = int((~flags["failed"] & ~flags["converged"]).sum())
    degenerate = int(flags["degenerate"].sum())
    elsewhere = int(flags["elsewhere"].sum())
    higher = sum(r.get("solution") == "higher" for r in results)
    checked = any(r.get("solution") is not None for r in results)  # not on Dask data
    for category, message in {(c, m) for r in results for c, m in r["warnings"]
                              if not issubclass(c, (ConvergenceWarning, DegenerateComponentWarning))}:
        warnings.warn(f"bootstrap replicate: {message}", category, skip_file_prefixes=PACKAGE_FILES)
    above = f", {higher} of them a higher maximum than the estimate's, which its restarts missed" if higher else ""
    problems = [f"{count} {what}" for count, what in (
        (len(failed), f"failed (stored as NaN; first error: {failed[0] if failed else ''})"),
        (not_converged, "did not converge"), (degenerate, "had a collapsed component"),
        (elsewhere, f"ended at another solution than the estimate's (EM on the data from their estimates goes to "
                    f"another fixed point{above}: their spread is between solutions, not about the estimate)"))
        if count]
    # a MAP fit already has the prior's pull away from collapse
    advice = "consider more data or fewer components" if method == "map" else "consider method='map' or more data"
    if problems:
        warnings.warn(f"bootstrap: of {len(results)} replicates, {', '.join(problems)}; the replicates are kept "
                      "as they are, each flagged in /em/bootstrap/sample_stats (failed, converged, degenerate, "
                      f"elsewhere) to leave out if wished ({advice})", MixflowWarning,
                      skip_file_prefixes=PACKAGE_FILES)
    counts = {"n_failed": len(failed), "n_not_converged": not_converged, "n_degenerate": degenerate}
    return {**counts, "n_elsewhere": elsewhere, "n_elsewhere_higher": higher} if checked else counts


def bootstrap(tree, data=None, *, n_replicates: int = 200, kind: str = "nonparametric",
              random_seed: int | None = None, n_jobs: int | None = None, weights=None) -> xr.DataTree:
    """Refit EM on resampled data and store the replicates in ``/em/bootstrap``.

    Parameters
    ----------
    tree : xarray.DataTree
        A result of :func:`mixflow.fit`. It is not modified.
    data : array-like, optional
        The data the tree was fitted on (checked); by default its ``/observed_data``. A tree fitted to Dask
        data holds a sample of their rows: pass the Dask data (and ``weights``) again; each replicate is then
        an EM fit over the blocks with Poisson(1) frequency weights (see Notes), one after the other (each
        on the active client or Dask's threads; ``n_jobs`` is not used).
    n_replicates : int, default 200
        Number of replicates B.
    kind : {"nonparametric", "parametric"}, default "nonparametric"
        Resample the observations with replacement (multinomial frequency weights, so frequency-weighted
        data are resampled unit by unit), or simulate new data sets of the same size from the fitted
        mixture (the family's ``simulate_data``: Gaussian, soft k-means, Poisson, regression with the covariates
        fixed, grouped data counted into the same classes).
    random_seed : int, optional
        Seed of the replicates (drawn and recorded when None); the same seed gives the same replicates
        whatever ``n_jobs``.
    n_jobs : int, optional
        Worker processes; all available cores by default, 1 runs in this process. With an active
        ``dask.distributed`` client the replicates run on its workers (all their threads by default).
    weights : Dask array or Series, optional
        Dask data only: the frequency weights the tree was fitted with.

    Returns
    -------
    xarray.DataTree
        A copy of ``tree`` with ``/em/bootstrap/posterior``: every parameter with dims ``(chain, draw, ...)``,
        chain=1 and draw=B, components aligned to the estimate; failed replicates are NaN. Its attrs
        record ``kind``, ``n_replicates``, ``random_seed`` and the numbers of failed, unconverged,
        degenerate replicates and of those at another solution (``n_elsewhere``, ``n_elsewhere_higher`` those at a
        higher maximum; data in memory); ``sample_stats`` flags
        each.

    Notes
    -----
    Each replicate runs ``mixflow.fit`` with the tree's method (MLE or MAP), ``tol``, ``max_iter`` and
    acceleration (plain EM for a tree that records none), one start at the estimate and no trimming,
    then matches its components to the estimate's by the assignment that maximises the overlap of their
    responsibilities on the observed data. EM on the data itself, from the replicate's estimate, then tells
    whether the replicate is in the estimate's basin: one that goes to another solution (a component moved
    onto other rows, a boundary point, a higher maximum the estimate's restarts missed) is flagged
    ``elsewhere`` and counted, since its spread is between solutions rather than about
    the estimate (one more EM run per replicate, accelerated; a run that does not converge leaves the replicate
    unflagged; not checked on Dask data).

    Dask data are resampled by Poisson(1) frequency weights (the scalable bootstrap: each row counts a
    Poisson(1) number of times, times its weight, rather than a multinomial share of a fixed total; the
    two agree as n grows), drawn block by block from the replicate's seed and each block's first row, and
    the components are matched on the sample of rows the tree holds.

    """
    check_tree(tree)
    check_options(n_replicates, kind, random_seed, n_jobs)
    estimate = fitted_estimate(tree)
    fitted = observed_data(tree)
    chunked = _check_chunked(tree, data, weights, kind, fitted)
    if data is not None and chunked is None:
        _check_same_data(data, fitted)
    if kind == "parametric":
        model = fitted_model(tree, estimate["weights"].size)
        if type(model).simulate_data is MixtureModel.simulate_data:
            raise UnsupportedError(f"kind: 'parametric' needs a sampler of the model's family, and the "
                                   f"{model.family!r} family has none yet (use kind='nonparametric')")
        model.simulate_data(estimate, fitted, np.random.default_rng(0))  # raises early on unsuitable data
    seed = secrets.randbits(63) if random_seed is None else int(random_seed)
    attrs = tree["em"].attrs
    job = _Job(model_json=tree.attrs["model"], n_active=estimate["weights"].size,
               method=_FIT_METHOD[attrs.get("method", "mle")], x=fitted.values, features=fitted.features,
               weights=fitted.weights,
               estimate=estimate, kind=kind,
               reference_responsibilities=tree[EM_RESPONSIBILITIES]["responsibilities"].transpose(
                   "obs", "component").values, tol=float(attrs.get("tol", 1e-8)),
               max_iter=int(attrs.get("max_iter", 1000)), accelerate=_acceleration(attrs), chunked=chunked,
               objective=_objective(attrs))
    seeds = np.random.SeedSequence(seed).spawn(int(n_replicates))
    workers = 1 if chunked is not None else min(int(n_jobs or default_jobs()), len(seeds))
    results = _run(job, seeds, workers)
    flags = _replicate_flags(results)
    counts = _report_warnings(results, flags, job.method)
    posterior = _bootstrap_group(tree, estimate, results)
    node = xr.DataTree(xr.Dataset(attrs={"kind": kind, "n_replicates": int(n_replicates), "random_seed": seed,
                                         **counts}))
    node["posterior"] = xr.DataTree(posterior)
    node["sample_stats"] = xr.DataTree(_flags_group(flags, posterior))
    out = tree.copy()
    out[EM_BOOTSTRAP] = node
    return as_container(out)


def _acceleration(attrs: dict) -> str | None:
    """The ``accelerate=`` of the fit that made ``/em`` (its ``acceleration`` attribute, "none" if absent)."""
    acceleration = attrs.get("acceleration", "none")
    return None if acceleration == "none" else str(acceleration)


def _flags_group(flags: dict[str, np.ndarray], posterior: xr.Dataset) -> xr.Dataset:
    """The replicates' flags by ``chain`` and ``draw`` as in the posterior.

    The counts in the group's attributes say how many; these say which, so that an analyst can leave them out.
    """
    dims = ("chain", "draw")
    return xr.Dataset({name: (dims, flag[None]) for name, flag in flags.items()},
                      coords={"chain": posterior["chain"].values, "draw": posterior["draw"].values},
                      attrs={"degenerate": "the replicate's fit warned of a degenerate component "
                                           "(DegenerateComponentWarning: collapsed, empty or duplicate components; "
                                           "or SpuriousMaximumWarning, one of its kinds: a spurious estimate, or a "
                                           "higher spurious restart set aside for the sound estimate)",
                             "elsewhere": "EM on the data, started from the replicate's estimate, goes to another "
                                          "solution than the estimate's: a lower maximum, a boundary point or a "
                                          "higher maximum (not checked on Dask data: False)"})


def _bootstrap_group(tree, estimate: dict, results: list[dict]) -> xr.Dataset:
    reference = tree[EM_ESTIMATE].to_dataset()
    variables = {}
    for name, value in estimate.items():
        stacked = np.stack([r["params"][name] if r["params"] is not None else np.full(value.shape, np.nan)
                            for r in results])
        variables[name] = (("chain", "draw", *reference[name].dims), stacked[None])
    coords = {dim: reference[dim].values for dim in reference.dims}
    coords.update(chain=np.array([0]), draw=np.arange(len(results)))
    return xr.Dataset(variables, coords=coords)
