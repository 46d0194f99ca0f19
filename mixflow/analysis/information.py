"""Standard errors of the EM estimate from the observed information.

The numerical Hessian of the log-likelihood (of the log posterior density for a MAP fit) in an
unconstrained parameterisation (weights as log-ratios, covariances by their log-Cholesky factor,
variances and rates by their logarithm) of the family's working (standardised) units is inverted and
mapped back to the parameters in data units by the delta method: the errors of ``c * X`` are those of
``X`` moved, as the estimate is.
"""

import hashlib
import json
import warnings
from collections import OrderedDict

import numpy as np
import xarray as xr
from scipy.special import logsumexp

from mixflow.container.layout import EM_ESTIMATE, OBSERVED_DATA
from mixflow.container.read import check_tree, fitted_estimate, fitted_model, observed_data
from mixflow.data import Data, add_to_digest
from mixflow.engines.em_steps import e_step
from mixflow.warnings import PACKAGE_FILES, MixflowWarning
from mixflow.wording import BOOTSTRAP_REMEDY, agreeing, pairs_text

__all__ = ["standard_errors"]

#: Unconstrained parameterisation of each parameter name (shared by every family).
_TRANSFORMS = {"weights": "simplex", "mu": "free", "coefficients": "free", "variance": "log", "rate": "log",
               "covariance": "log_cholesky"}


def _pack(params: dict) -> tuple[np.ndarray, list]:
    """Unconstrained vector of the parameters and what is needed to unpack it."""
    pieces, layout = [], []
    for name, value in params.items():
        value = np.asarray(value, dtype=float)
        kind = _TRANSFORMS.get(name)
        if kind == "simplex":
            with np.errstate(divide="ignore"):  # an empty component's weight 0 (then no errors: _undefined_reason)
                piece = np.log(value[:-1]) - np.log(value[-1])
        elif kind == "free":
            piece = value.ravel()
        elif kind == "log":
            with np.errstate(divide="ignore"):  # a rate on the boundary 0 (then no errors: _undefined_reason)
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


def _objective_function(model, data: Data, prepared, maximum_a_posteriori: bool):
    """The objective of parameters in ``prepared``'s working units (EM's: its log-likelihood and prior)."""
    from mixflow.engines.em_steps import objective

    prior = model.working_prior(prepared) if maximum_a_posteriori else None
    active = np.arange(model.n_components)

    def value(params: dict) -> float:
        log_likelihood = float(prepared.weights @ e_step(model, params, prepared, data.n_features, working=True)[1])
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
        sum-to-one constraint; symmetric matrices have equal errors in (i, j) and (j, i). Where they are not
        defined, every error is NaN, ``attrs["undefined"]`` says why and ``attrs["remedy"]`` what gives them.

    """
    check_tree(tree)
    key = (_fingerprint(tree), max_parameters)
    if key not in _COMPUTED:
        _COMPUTED[key] = _errors(tree, max_parameters)
        while len(_COMPUTED) > _KEPT:
            _COMPUTED.popitem(last=False)
    _COMPUTED.move_to_end(key)
    errors = _COMPUTED[key].copy(deep=True)
    if warn and "undefined" in errors.attrs:
        warnings.warn(f"standard errors from the observed information are not defined: {errors.attrs['undefined']}; "
                      f"{errors.attrs['remedy']}", MixflowWarning, skip_file_prefixes=PACKAGE_FILES)
    return errors


#: The errors of the last few fits asked for, by what they are computed from (:func:`_fingerprint`): a comparison
#: table, the forest plot and the report of one fit each ask for them, and each computation costs about 2 p^2
#: passes over the data
_COMPUTED: OrderedDict = OrderedDict()
_KEPT = 8


def _fingerprint(tree) -> str:
    """A digest of all the errors of ``tree`` depend on.

    That is the model and the other attributes, the EM fit's attributes, its estimate and the observed data (values,
    weights and coordinates).
    """
    digest = hashlib.sha256()
    for attrs in (tree.attrs, tree["em"].attrs):
        digest.update(json.dumps(dict(attrs), sort_keys=True,
                                 default=lambda value: value.tolist() if hasattr(value, "tolist") else str(value)
                                 ).encode())
    for path in (EM_ESTIMATE, OBSERVED_DATA):
        dataset = tree[path].to_dataset()
        for name in sorted(map(str, dataset.variables)):
            add_to_digest(digest, dataset[name].values, f"{path}/{name}{dataset[name].dims}")
    return digest.hexdigest()


def _errors(tree, max_parameters: int) -> xr.Dataset:
    """The errors of :func:`standard_errors`, or NaN with ``attrs`` ``undefined`` and ``remedy``."""
    estimate = fitted_estimate(tree)
    reference = tree[EM_ESTIMATE].to_dataset()
    nan = xr.Dataset({name: xr.full_like(reference[name], np.nan, dtype=float) for name in reference.data_vars})
    unknown = sorted(set(estimate) - set(_TRANSFORMS))
    if unknown:
        reason = f"no unconstrained parameterisation of {agreeing(len(unknown), 'parameter')} {unknown}"
    else:
        theta, layout = _pack(estimate)
        reason = _undefined_reason(tree, estimate, theta.size, max_parameters)
    if reason is None:
        # the Hessian in the family's working units (standardised), where the parameters are of order one and one
        # relative step suits them all, whatever the data's units; the delta method then maps to data units
        data = observed_data(tree)
        model = fitted_model(tree, estimate["weights"].size)
        prepared = model.prepare(data)
        value = _objective_function(model, data, prepared, tree["em"].attrs.get("method") == "map")
        theta, layout = _pack(model.to_working(estimate, prepared))
        hessian = _hessian(lambda t: value(_unpack(t, layout)), theta)
        try:
            factor = np.linalg.cholesky(-hessian)
        except np.linalg.LinAlgError:
            reason = "the Hessian of the objective is not negative definite at the estimate"
    if reason is not None:
        nan.attrs.update(undefined=reason, remedy=_FEWER_REMEDY if reason.endswith(_SAME_COMPONENT)
                         else BOOTSTRAP_REMEDY)
        return nan
    inverse_factor = np.linalg.inv(factor)
    covariance = inverse_factor.T @ inverse_factor

    def natural(t):
        params = model.to_data(_unpack(t, layout), prepared)
        return np.concatenate([np.ravel(params[name]) for name in estimate])

    jacobian = _jacobian(natural, theta)
    # each row over its largest entry, and the error times it: the squares of a covariance's derivatives in data
    # units of 1e150 (about 1e300) would overflow, those of data near 1e-160 underflow
    row_scale = np.abs(jacobian).max(axis=1)
    row_scale = np.where((row_scale > 0) & np.isfinite(row_scale), row_scale, 1.0)
    unit = jacobian / row_scale[:, None]
    all_errors = row_scale * np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", unit, covariance, unit), 0.0))
    # a parameter whose value in data units is subnormal (a covariance of data near 1e-160), or underflowed to zero
    # (near 1e-300: no derivative either), has lost the digits a finite difference needs; an error of 0 would be
    # a false precision
    points = np.concatenate([np.ravel(estimate[name]) for name in estimate])
    lost = (np.abs(points) < np.finfo(float).tiny) & ((points != 0) | ~jacobian.any(axis=1))
    all_errors[lost] = np.nan
    errors, start = {}, 0
    for name in estimate:
        size = estimate[name].size
        errors[name] = (reference[name].dims, all_errors[start:start + size].reshape(estimate[name].shape))
        start += size
    return xr.Dataset(errors, coords=reference.coords)


#: What gives a fit's standard errors where two components coincide, whose split of the weight no data tell, in a
#: bootstrap replicate as in the fit (elsewhere BOOTSTRAP_REMEDY)
_FEWER_REMEDY = "a fit of fewer components has them"
_SAME_COMPONENT = "the likelihood does not tell how they split their weight)"


def _undefined_reason(tree, estimate: dict, n_free: int, max_parameters: int) -> str | None:
    if n_free > max_parameters:
        return f"{n_free} free parameters exceed max_parameters={max_parameters}"
    collapsed = tree["em"].attrs.get("collapsed_components", "[]")
    if collapsed not in ("[]", ""):
        components = agreeing(len(json.loads(collapsed)), "component")
        return f"{components} {collapsed} collapsed (the likelihood is unbounded there)"
    if (estimate["weights"] <= 1e-8).any():
        return "a mixing weight is on the boundary (zero)"
    duplicates = json.loads(tree["em"].attrs.get("duplicate_components", "[]") or "[]")
    if duplicates:  # two components with one density: the likelihood does not tell how they split their weight
        return f"components {pairs_text(duplicates)} are the same component (a fit of fewer distinct components: " \
            + _SAME_COMPONENT
    for name in (name for name, kind in _TRANSFORMS.items() if kind == "log"):  # the positive parameters
        if name in estimate and (np.asarray(estimate[name]) <= 0).any():
            where = " (a component on the zero counts alone)" if name == "rate" else ""
            return f"a {name} is on the boundary (zero){where}"
    # EM approaches a rate's maximum at 0 geometrically and stops within its tolerance of it, on its scale
    # 2 sqrt(rate) (sqrt(tol)): a rate that close to 0, with a margin of 10, is on the boundary too
    near = (10 * np.sqrt(float(tree["em"].attrs.get("tol", 1e-10))) / 2) ** 2
    if "rate" in estimate and (np.asarray(estimate["rate"]) < near).any():
        return (f"a rate is on the boundary (below {near:.2g}, where EM stops short of its maximum 0: a component on "
                "the zero counts alone)")
    return None
