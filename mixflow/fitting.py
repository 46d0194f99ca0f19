"""The public entry points: ``fit``, then ``predict``, ``predict_proba``, ``score_samples``, ``sample``."""

import contextlib
import inspect

import numpy as np
import xarray as xr
from scipy.special import logsumexp

from mixflow.checks import check_seed
from mixflow.container.build import build_tree, make_attrs
from mixflow.container.layout import EM_ESTIMATE, EM_RESPONSIBILITIES, EM_SAMPLE_STATS, OBSERVED_DATA
from mixflow.container.read import available_methods, fitted_estimate, fitted_model, method_draws
from mixflow.data import validate_data
from mixflow.engines.accelerate import ACCELERATIONS
from mixflow.engines.em import EMOptions, fit_em
from mixflow.engines.em_steps import check_densities, e_step
from mixflow.engines.over_draws import responsibilities_over_draws
from mixflow.engines.starts import PORTFOLIO, STRATEGIES
from mixflow.families.base import MixtureModel, model_from_json

__all__ = ["fit", "predict", "predict_proba", "sample", "score_samples"]

_METHODS = ("em", "map", "mcmc", "advi")
_INIT = (PORTFOLIO, *STRATEGIES)


def check_em_options(n_init, init, tol, max_iter, trim, chunk_size, accelerate="squarem") -> None:
    """Check EM's options of :func:`fit` (also used by the workflow files before anything is fitted)."""
    if isinstance(n_init, bool) or not isinstance(n_init, int | np.integer) or n_init < 1:
        raise ValueError(f"n_init: expected an integer >= 1, got {n_init!r}")
    if isinstance(init, str) and init not in _INIT:
        raise ValueError(f"init: expected one of {list(_INIT)} or a dict of parameters, got {init!r}")
    if not isinstance(init, str | dict):
        raise TypeError(f"init: expected one of {list(_INIT)} or a dict of parameters, got {type(init).__name__}")
    if not (isinstance(tol, int | float) and np.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol: expected a non-negative number, got {tol!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int | np.integer) or max_iter < 1:
        raise ValueError(f"max_iter: expected an integer >= 1, got {max_iter!r}")
    if trim is not None and not (isinstance(trim, int | float) and 0 < trim < 1):
        raise ValueError(f"trim: expected None or a weight threshold in (0, 1), got {trim!r}")
    if chunk_size is not None and (not isinstance(chunk_size, int | np.integer) or chunk_size < 1):
        raise ValueError(f"chunk_size: expected None or an integer >= 1, got {chunk_size!r}")
    if accelerate is not None and (not isinstance(accelerate, str) or accelerate not in ACCELERATIONS):
        raise ValueError(f"accelerate: expected one of {list(ACCELERATIONS)} or None (plain EM), got {accelerate!r}")


def _method_list(method) -> list[str]:
    methods = [method] if isinstance(method, str) else list(method) if isinstance(method, list | tuple) else None
    if not methods or any(m not in _METHODS for m in methods) or len(set(methods)) != len(methods):
        raise ValueError(f"method: expected one of {list(_METHODS)} or a list of them without repeats, got {method!r}")
    if "em" in methods and "map" in methods:
        raise ValueError("method: expected at most one of 'em' and 'map' (the container holds one EM estimate), "
                         f"got {method!r}")
    return methods


def _method_seed(seed: int, method: str) -> int:
    """Each method's own seed, derived from the root seed, so adding a method never changes another's draws."""
    return int(np.random.SeedSequence([seed, _METHODS.index(method)]).generate_state(1, np.uint64)[0] >> 1)


def _engine(method: str):
    if method == "mcmc":
        from mixflow.engines.mcmc import fit_mcmc

        return fit_mcmc
    from mixflow.engines.advi import fit_advi

    return fit_advi


def _route_options(methods: list[str], options: dict) -> dict:
    """Give each sampling engine the keyword options its signature accepts; refuse options no one takes."""
    routed, taken = {}, set()
    for method in methods:
        if method in ("mcmc", "advi"):
            accepted = set(inspect.signature(_engine(method)).parameters) - {"model", "data", "reference",
                                                                             "random_seed"}
            routed[method] = {key: value for key, value in options.items() if key in accepted}
            taken |= set(routed[method])
    unknown = sorted(set(options) - taken)
    if unknown:
        raise TypeError(f"fit: unexpected option(s) {unknown} for method(s) {methods}")
    return routed


def _check_same_fit(tree, model, validated):
    if model_from_json(tree.attrs["model"]) != model:
        raise ValueError(f"tree: expected a result of the same model, got one of {tree.attrs['model']}")
    observed = tree[OBSERVED_DATA]["x"].values
    if observed.shape != validated.values.shape or not np.array_equal(observed, validated.values):
        raise ValueError("tree: expected a result fitted to the same data, got one with different observations")


def fit(model: MixtureModel, data, method="em", *, random_seed: int | None = None, weights=None,
        n_init: int = 5, init="auto", tol: float = 1e-10, max_iter: int = 1000, trim: float | None = None,
        chunk_size: int | None = None, accelerate: str | None = "squarem", data_name: str = "data",
        tree: xr.DataTree | None = None, **options) -> xr.DataTree:
    """Fit a declared mixture model by one or more methods and return the results container.

    Parameters
    ----------
    model : MixtureModel
        The declaration, e.g. ``GaussianMixture(2, covariance="full")``.
    data : array-like of shape (n_obs,) or (n_obs, n_features), DataFrame, or xarray
        One row per observation; DataFrame columns become the ``feature`` coordinate.
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
        Number of EM starts; the one with the highest objective among the non-degenerate ones is kept (a
        degenerate one, with a collapsed or empty component, only when every start is, and then flagged).
        With ``init="auto"``, the budget: ``4 * n_init`` short runs (``8 * n_init`` when the first ones do not
        agree on the best value), of which the best ``ceil(n_init / 2)`` are continued to convergence; a
        start repeating an earlier one's partition is replaced by a random one, or skipped.
    init : {"auto", "kmeans", "kmeans++", "random", "standardised-kmeans", "random-partition", \
"hierarchical"} or dict, default "auto"
        ``"auto"`` draws the starts from a portfolio of the other strategies chosen per family (see
        :mod:`mixflow.engines.starts`), runs each briefly and continues the best. A strategy's name runs
        ``n_init`` starts of it to convergence: k-means (k-means++ seeds and Lloyd iterations), k-means++
        seeds alone, random responsibilities, k-means on features scaled to unit sd, random hard partitions,
        Ward's agglomeration of the scaled features. A dict gives the starting parameters (``weights``,
        ``mu``, ``covariance``/``variance``). ``/em/sample_stats/start`` records each start's strategy.
    tol : float, default 1e-10
        EM stops when Aitken's estimate of the objective it still has to gain (the log-likelihood, or
        the log posterior for MAP), per observation, is below ``tol``: ``aitken_gap / n_observations < tol``
        with ``aitken_gap = l_inf - l`` estimated from three consecutive EM steps and confirmed by the
        three before (McNicholas et al. 2010). Unlike the size of the last step, the estimate stays honest
        where EM crawls. An estimate, not a bound: near a flat or degenerate maximum it can fall short by
        a few times ``tol``. Both values are recorded in ``/em``'s attributes; 0 runs ``max_iter`` iterations.
    max_iter : int, default 1000
        EM iterations per start: passes over the data, each SQUAREM extrapolation counting as one.
    trim : float, optional
        Drop components whose weight falls below this threshold during EM.
    chunk_size : int, optional
        Rows per chunk of the E and M steps (default: about 4 MB of temporaries).
    accelerate : {"squarem"} or None, default "squarem"
        Accelerate EM with SQUAREM (Varadhan and Roland 2008): after every two EM steps, an extrapolated
        point is tried and kept only if it is valid and its objective is at least that of the plain step,
        so the objective still never decreases; cycles in which a component collapses or is trimmed stay
        plain. None runs plain EM. See :mod:`mixflow.engines.accelerate`.
    data_name : str, default "data"
        Recorded in the result.
    tree : xarray.DataTree, optional
        A result of the same model and data to add the methods to (a new tree is returned; its /em is
        the reference of MCMC and ADVI).
    **options
        Options of the sampling engines, each passed to the methods that take it: for MCMC ``draws``,
        ``tune``, ``chains``, ``sampler``, ``progressbar``, ``cores``, ``target_accept``, ``jitter``,
        ``posterior_predictive`` (see :func:`mixflow.engines.mcmc.fit_mcmc`); for ADVI ``variant``,
        ``n``, ``draws``, ``minibatch_size``, ``learning_rate``, ``settle_tol``, ``check_every``,
        ``progressbar`` (see :func:`mixflow.engines.advi.fit_advi`).

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
        raise TypeError(f"model: expected a mixflow model such as GaussianMixture(2), got {type(model).__name__}")
    if not isinstance(data_name, str):
        raise TypeError(f"data_name: expected a str (recorded in the result), got {data_name!r}")
    methods = _method_list(method)
    check_em_options(n_init, init, tol, max_iter, trim, chunk_size, accelerate)
    routed = _route_options(methods, options)
    if tree is not None and not (isinstance(tree, xr.DataTree) and "model" in tree.attrs
                                 and OBSERVED_DATA in tree.children):
        raise TypeError(f"tree: expected a mixflow result to add methods to, got {type(tree).__name__}")
    seed = check_seed(random_seed if random_seed is not None or tree is None else tree.attrs["random_seed"])
    validated = validate_data(data, weights=weights)
    n_support = int(np.count_nonzero(validated.frequency))
    if n_support < model.n_components:
        raise ValueError(f"data: expected at least n_components = {model.n_components} observations with "
                         f"positive weight, got {n_support}")
    if tree is not None:
        _check_same_fit(tree, model, validated)
    if isinstance(init, dict):
        init = model.check_parameters(init, validated.n_features)
    em_method = next((m for m in methods if m in ("em", "map")), None)
    if em_method is None and (tree is None or "em" not in tree.children):
        em_method = "map"
    result = tree.copy() if tree is not None else None
    if em_method is not None:
        em_tree = _fit_em(model, validated, em_method, seed, data_name,
                          EMOptions(map=em_method == "map", n_init=int(n_init), init=init, tol=float(tol),
                                    max_iter=int(max_iter), trim=trim, chunk_size=chunk_size,
                                    accelerate=accelerate))
        result = em_tree if result is None else _replace_group(result, em_tree, "em")
    reference = {name: value.values for name, value in result[EM_ESTIMATE].data_vars.items()}
    for sampling in (m for m in methods if m in ("mcmc", "advi")):
        groups = _engine(sampling)(model, validated, reference, random_seed=_method_seed(seed, sampling),
                                   **routed[sampling])
        result = _replace_group(result, _sampling_tree(result, groups, sampling), sampling)
    return result


def _fit_em(model, validated, em_method, seed, data_name, options: EMOptions) -> xr.DataTree:
    em = fit_em(model, validated, options, seed)
    coords = {"obs": validated.obs, "feature": validated.features, "feature_": validated.features,
              "component": np.arange(em["n_active"]),
              "restart": np.arange(em["sample_stats"]["n_iter"][1].shape[0]),
              "iteration": np.arange(em["sample_stats"]["log_likelihood"][1].shape[1]),
              **model.extra_coords(validated)}
    observed = {"x": (("obs", "feature"), validated.values)}
    if validated.weights is not None:
        observed["weights"] = (("obs",), validated.weights)
    groups = {
        OBSERVED_DATA: {"variables": observed},
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


_PREDICTION_METHODS = ("em", "bootstrap", "mcmc", "advi")


def _check_prediction_method(tree: xr.DataTree, method) -> str:
    """The method to predict from: one the container holds (ValueError naming ``method`` otherwise)."""
    if not isinstance(method, str) or method not in _PREDICTION_METHODS:
        raise ValueError(f"method: expected one of {list(_PREDICTION_METHODS)}, got {method!r}")
    if not isinstance(tree, xr.DataTree) or "model" not in tree.attrs or "em" not in tree.children:
        raise ValueError("tree: expected a mixflow result with an /em estimate (from mixflow.fit), got "
                         f"{type(tree).__name__} without one")
    if method != "em" and method_draws(tree, method) is None:
        raise ValueError(f"method: expected a method the result holds, one of {available_methods(tree)}, got "
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
        raise ValueError(f"method: expected draws with finite values, got none in {method!r}")
    draws = {name: value[complete] for name, value in flat.items()}
    return model, params, draws, (stacked["chain"].values[complete], stacked["draw"].values[complete])


@contextlib.contextmanager
def _naming_new_data():
    """Errors of the checks shared with training data name ``new_data``, the argument at fault here."""
    try:
        yield
    except ValueError as error:
        message = str(error)
        if not message.startswith("data:"):
            raise
        raise ValueError(f"new_data:{message[len('data:'):]}") from None


def _new_data(tree: xr.DataTree, model, new_data):
    """``new_data`` checked like training data (same features, the family's constraints), and prepared."""
    data = validate_data(new_data, name="new_data", features=tree[OBSERVED_DATA]["feature"].values,
                         warn_constant=False)
    with _naming_new_data():
        prepared = model.prepare(data)
    return data, prepared


def _posterior_spread(model, data, draws: dict) -> dict:
    """Responsibilities (mean, sd) and pointwise log-likelihoods over draws, every row checked."""
    spread = responsibilities_over_draws(model, data, draws, log_likelihood=True)
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
    method : {"em", "bootstrap", "mcmc", "advi"}, default "em"
        ``"em"``: one E-step at the EM (or MAP) estimate. The others: for each draw of the method (the
        bootstrap replicates, NUTS draws, ADVI draws, aligned to the EM labels) the responsibilities, and
        their mean over draws.
    return_sd : bool, default False
        Also return the sd over draws of each responsibility (ddof=1; zeros for ``"em"``).

    Returns
    -------
    xarray.DataArray of shape (n_obs, n_components), or a tuple (mean, sd) of them with ``return_sd``
        Dims ``obs`` and ``component``.

    """
    if not isinstance(return_sd, bool):
        raise TypeError(f"return_sd: expected True or False, got {return_sd!r}")
    method = _check_prediction_method(tree, method)
    model, params, draws, _ = _parameter_sets(tree, method)
    data, prepared = _new_data(tree, model, new_data)
    if draws is None:
        with _naming_new_data():
            resp, _ = e_step(model, params, prepared, data.n_features)
        sd = np.zeros_like(resp)
    else:
        spread = _posterior_spread(model, data, draws)
        resp, sd = spread["mean"], spread["sd"]
    mean = _obs_component(tree, data, resp, "responsibilities")
    return (mean, _obs_component(tree, data, sd, "responsibilities_sd")) if return_sd else mean


def predict(tree: xr.DataTree, new_data, method: str = "em") -> xr.DataArray:
    """Most probable component of each new observation (the argmax of :func:`predict_proba`)."""
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
    data, prepared = _new_data(tree, model, new_data)
    if draws is None:
        with _naming_new_data():
            _, scores = e_step(model, params, prepared, data.n_features)
    else:
        pointwise = _posterior_spread(model, data, draws)["log_likelihood"]
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
    method : {"em", "bootstrap", "mcmc", "advi"}, default "em"
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
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n: expected an integer >= 1, got {n!r}")
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
