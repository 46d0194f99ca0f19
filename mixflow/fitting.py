"""The public entry points: ``fit`` a declared model, ``predict`` and ``predict_proba`` from a result."""

import secrets

import numpy as np
import xarray as xr

from mixflow.data import validate_data
from mixflow.engines.em import EMOptions, fit_em
from mixflow.engines.em_steps import chunk_rows, data_pass
from mixflow.families.base import MixtureModel, model_from_json
from mixflow.results import build_tree, make_attrs

__all__ = ["fit", "predict", "predict_proba"]

_METHODS = ("em", "map")
_INIT = ("kmeans", "kmeans++", "random")


def _check_options(method, n_init, init, tol, max_iter, trim, chunk_size):
    if method not in _METHODS:
        raise ValueError(f"method: expected one of {list(_METHODS)}, got {method!r}")
    if isinstance(n_init, bool) or not isinstance(n_init, int | np.integer) or n_init < 1:
        raise ValueError(f"n_init: expected an integer >= 1, got {n_init!r}")
    if isinstance(init, str) and init not in _INIT:
        raise ValueError(f"init: expected one of {list(_INIT)} or a dict of parameters, got {init!r}")
    if not isinstance(init, str | dict):
        raise TypeError(f"init: expected one of {list(_INIT)} or a dict of parameters, got {type(init).__name__}")
    if not (isinstance(tol, int | float) and np.isfinite(tol) and tol > 0):
        raise ValueError(f"tol: expected a positive number, got {tol!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int | np.integer) or max_iter < 1:
        raise ValueError(f"max_iter: expected an integer >= 1, got {max_iter!r}")
    if trim is not None and not (isinstance(trim, int | float) and 0 < trim < 1):
        raise ValueError(f"trim: expected None or a weight threshold in (0, 1), got {trim!r}")
    if chunk_size is not None and (not isinstance(chunk_size, int | np.integer) or chunk_size < 1):
        raise ValueError(f"chunk_size: expected None or an integer >= 1, got {chunk_size!r}")


def _seed(random_seed) -> int:
    if random_seed is None:
        return secrets.randbits(63)
    if isinstance(random_seed, bool) or not isinstance(random_seed, int | np.integer) or random_seed < 0:
        raise ValueError(f"random_seed: expected None or a non-negative integer, got {random_seed!r}")
    return int(random_seed)


def fit(model: MixtureModel, data, method: str = "em", *, random_seed: int | None = None, weights=None,
        n_init: int = 5, init="kmeans", tol: float = 1e-8, max_iter: int = 1000, trim: float | None = None,
        chunk_size: int | None = None, data_name: str = "data") -> xr.DataTree:
    """Fit a declared mixture model and return the results container.

    Parameters
    ----------
    model : MixtureModel
        The declaration, e.g. ``GaussianMixture(2, covariance="full")``.
    data : array-like of shape (n_obs,) or (n_obs, n_features), DataFrame, or xarray
        One row per observation; DataFrame columns become the ``feature`` coordinate.
    method : {"em", "map"}, default "em"
        Maximum likelihood by EM, or the MAP estimate under the model's prior.
    random_seed : int, optional
        Seed of every random choice; recorded in the result (drawn and recorded when None).
    weights : array-like of shape (n_obs,), optional
        Frequency weights.
    n_init : int, default 5
        Number of EM starts; the one with the highest objective is kept.
    init : {"kmeans", "kmeans++", "random"} or dict, default "kmeans"
        Starting responsibilities from k-means (k-means++ seeds and Lloyd iterations), from k-means++
        seeds alone, at random, or starting parameters (``weights``, ``mu``, ``covariance``/``variance``).
    tol : float, default 1e-8
        Stop when the relative change of the objective is at most ``tol``.
    max_iter : int, default 1000
        Iterations per start.
    trim : float, optional
        Drop components whose weight falls below this threshold during EM.
    chunk_size : int, optional
        Rows per chunk of the E and M steps (default: about 16 MB of temporaries).
    data_name : str, default "data"
        Recorded in the result.

    Returns
    -------
    xarray.DataTree
        ``/observed_data`` and ``/em`` with ``estimate``, ``responsibilities`` and ``sample_stats``.

    """
    if not isinstance(model, MixtureModel):
        raise TypeError(f"model: expected a mixflow model such as GaussianMixture(2), got {type(model).__name__}")
    _check_options(method, n_init, init, tol, max_iter, trim, chunk_size)
    seed = _seed(random_seed)
    validated = validate_data(data, weights=weights)
    n_support = int(np.count_nonzero(validated.frequency))
    if n_support < model.n_components:
        raise ValueError(f"data: expected at least n_components = {model.n_components} observations with "
                         f"positive weight, got {n_support}")
    if isinstance(init, dict):
        init = model.check_parameters(init, validated.n_features)
    options = EMOptions(map=method == "map", n_init=int(n_init), init=init, tol=float(tol),
                        max_iter=int(max_iter), trim=trim, chunk_size=chunk_size)
    em = fit_em(model, validated, options, seed)
    coords = {"obs": validated.obs, "feature": validated.features, "feature_": validated.features,
              "component": np.arange(em["n_active"]),
              "restart": np.arange(options.n_init if not isinstance(init, dict) else 1),
              "iteration": np.arange(em["sample_stats"]["log_likelihood"][1].shape[1]),
              **model.extra_coords(validated)}
    observed = {"x": (("obs", "feature"), validated.values)}
    if validated.weights is not None:
        observed["weights"] = (("obs",), validated.weights)
    groups = {
        "observed_data": {"variables": observed},
        "em": {"attrs": em["attrs"]},
        "em/estimate": {"variables": em["estimate"]},
        "em/responsibilities": {"variables": em["responsibilities"]},
        "em/sample_stats": {"variables": em["sample_stats"]},
    }
    return build_tree(groups, coords=coords, attrs=make_attrs(model, data_name=data_name, random_seed=seed))


def _model_and_params(tree: xr.DataTree):
    if not isinstance(tree, xr.DataTree) or "model" not in tree.attrs or "em" not in tree.children:
        raise ValueError("tree: expected a mixflow result with an /em estimate (from mixflow.fit), got "
                         f"{type(tree).__name__} without one")
    model = model_from_json(tree.attrs["model"])
    estimate = tree["em/estimate"].to_dataset()
    return model, {name: estimate[name].values for name in estimate.data_vars}


def predict_proba(tree: xr.DataTree, new_data) -> xr.DataArray:
    """Responsibilities of new observations under the EM estimate: one E-step.

    Parameters
    ----------
    tree : xarray.DataTree
        A result of :func:`fit`.
    new_data : array-like of shape (n_obs, n_features) or DataFrame
        Same features as the fitted data (DataFrame columns are matched by name).

    Returns
    -------
    xarray.DataArray of shape (n_obs, n_components)
        Dims ``obs`` and ``component``.

    """
    model, params = _model_and_params(tree)
    features = tree["observed_data"]["feature"].values
    data = validate_data(new_data, name="new_data", features=features, warn_constant=False)
    prepared = model.prepare(data)
    rows = chunk_rows(data.n_obs, model.chunk_width(data.n_features))
    _, resp, _ = data_pass(model, params, prepared, rows, keep_responsibilities=True)
    return xr.DataArray(resp, dims=("obs", "component"),
                        coords={"obs": data.obs, "component": tree["em/estimate"]["component"].values},
                        name="responsibilities")


def predict(tree: xr.DataTree, new_data) -> xr.DataArray:
    """Most probable component of each new observation (the argmax of :func:`predict_proba`)."""
    proba = predict_proba(tree, new_data)
    labels = proba["component"].values[proba.values.argmax(axis=1)]
    return xr.DataArray(labels, dims=("obs",), coords={"obs": proba["obs"].values}, name="component")
