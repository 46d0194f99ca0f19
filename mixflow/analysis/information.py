"""Standard errors of the EM estimate from the observed information.

The numerical Hessian of the log-likelihood (of the log posterior density for a MAP fit) in an
unconstrained parameterisation (weights as log-ratios, covariances by their log-Cholesky factor,
variances and rates by their logarithm) of the family's working (standardised) units is inverted and
mapped back to the parameters in data units by the delta method: the errors of ``c * X`` are those of
``X`` moved, as the estimate is.
"""

import functools
import hashlib
import json
import warnings
from collections import OrderedDict

import numpy as np
import xarray as xr
from scipy.special import logsumexp

from mixflow.container.layout import EM_ESTIMATE, OBSERVED_DATA
from mixflow.container.read import check_tree, fitted_estimate, fitted_model, observed_data
from mixflow.data import add_to_digest
from mixflow.engines.em_steps import component_log_densities, objective
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


@functools.cache
def _lower_triangle(d: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.tril_indices(d)``, once per d: the Hessian unpacks thousands of points."""
    return np.tril_indices(d)


def _unpack(theta: np.ndarray, layout: list) -> dict:
    params, start = {}, 0
    for name, shape, size in layout:
        piece = theta[start:start + size]
        start += size
        kind = _TRANSFORMS[name]
        if kind == "simplex":  # a softmax (scipy's logsumexp costs more than the rest of the unpacking)
            logits = np.exp(np.append(piece, 0.0) - piece.max(initial=0.0))
            params[name] = logits / logits.sum()
        elif kind == "free":
            params[name] = piece.reshape(shape)
        elif kind == "log":
            params[name] = np.exp(piece).reshape(shape)
        else:
            d = shape[-1]
            rows, cols = _lower_triangle(d)
            factors = np.zeros((size // len(rows), d, d))
            factors[:, rows, cols] = piece.reshape(-1, len(rows))
            diagonal = np.arange(d)
            factors[:, diagonal, diagonal] = np.exp(factors[:, diagonal, diagonal])
            params[name] = (factors @ np.swapaxes(factors, -1, -2)).reshape(shape)
    return params


#: Floats of the log densities the Hessian keeps at once (a block of rows by the points it is evaluated at)
_BLOCK_FLOATS = 2 ** 24
#: The four corners of a central second difference: the two steps' signs
_CORNERS = ((1, 1), (1, -1), (-1, 1), (-1, -1))


def _owners(model, layout: list, features) -> list:
    """Whose densities each entry of the unconstrained vector moves.

    None for a weight's log-ratio (none), k for component k's own parameter, -1 for a parameter the components
    share (all of them).
    """
    dims = model.parameter_dims(features)
    owners = []
    for name, shape, size in layout:
        if _TRANSFORMS[name] == "simplex":
            owners += [None] * size
        elif dims[name][:1] == ("component",):  # packed component by component (_pack)
            owners += [k for k in range(shape[0]) for _ in range(size // shape[0])]
        else:
            owners += [-1] * size
    return owners


def _observed_hessian(model, prepared, theta: np.ndarray, layout: list, features, prior) -> np.ndarray:
    """Central-difference Hessian of EM's objective in the unconstrained ``theta`` (working units).

    Four evaluations per entry, steps about eps^(1/4) relative, as a plain difference quotient, but each
    evaluation is the objective's change from the estimate, sum_n w_n log(sum_k r_nk exp(d_nk)), with r the
    estimate's responsibilities and d_nk the change of log(w_k p_k(x_n)): exact, and free of the rounding of two
    whole log-likelihoods subtracted. A component's own parameter moves one column of log densities, so the entries
    of two components' parameters (most of them) reuse the columns of each parameter's own steps, and only the
    entries within one component, or of a shared parameter, evaluate the densities at their own points: about K
    times fewer passes over the data than evaluating the objective at every corner. The prior (a MAP fit) is
    evaluated at every corner.
    """
    p = theta.size
    steps = 1e-4 * np.maximum(np.abs(theta), 1.0)
    owners = _owners(model, layout, features)
    base = _unpack(theta, layout)
    active = np.arange(base["weights"].size)
    base_prior = 0.0 if prior is None else objective(model, base, 0.0, prior, active)

    def point(moves) -> dict:
        moved = theta.copy()
        for i, sign in moves:
            moved[i] += sign * steps[i]
        return _unpack(moved, layout)

    def prior_change(params: dict) -> float:
        return 0.0 if prior is None else objective(model, params, 0.0, prior, active) - base_prior

    own = [i for i in range(p) if owners[i] is not None and owners[i] >= 0]
    block = max(1, min(prepared.n_obs, _BLOCK_FLOATS // (4 * len(own) + 4 * active.size)))
    hessian = np.zeros((p, p))
    for start in range(0, prepared.n_obs, block):
        change = _block_change(model, prepared.rows(start, start + block), base, point, owners, own,
                               prior_change if start == 0 else lambda params: 0.0)
        for i in range(p):
            for j in range(i, p):
                corners = [change(((i, si + sj),) if i == j else ((i, si), (j, sj))) for si, sj in _CORNERS]
                hessian[i, j] += (corners[0] - corners[1] - corners[2] + corners[3]) / (4 * steps[i] * steps[j])
    return np.triu(hessian) + np.triu(hessian, 1).T


def _block_change(model, chunk, base: dict, point, owners: list, own: list, prior_change):
    """The objective's change on ``chunk``'s rows at the point of ``moves``, ``((i, steps), ...)``, from ``base``.

    The log densities of each own parameter's column at -2, -1, 1 and 2 steps are evaluated once; a point that
    moves a shared parameter, or two of one component's, evaluates the densities there.
    """
    def densities_at(params: dict) -> np.ndarray:
        return component_log_densities(model, params, chunk)(chunk)

    log_weights = np.log(base["weights"])
    densities = densities_at(base)
    joint = densities + log_weights
    resp = np.exp(joint - logsumexp(joint, axis=1, keepdims=True))
    single = {(i, sign): densities_at(point(((i, sign),)))[:, owners[i]] - densities[:, owners[i]]
              for i in own for sign in (-2, -1, 1, 2)}

    def change(moves) -> float:
        params = point(moves)
        movers = [(i, sign) for i, sign in moves if sign and owners[i] is not None]
        if len({owners[i] for i, _ in movers} - {-1}) < len(movers):  # a shared parameter, or two of one component
            columns = dict(enumerate((densities_at(params) - densities).T))
        else:
            columns = {owners[i]: single[i, sign] for i, sign in movers}
        with np.errstate(divide="ignore"):
            shift = np.log(params["weights"]) - log_weights
        total = resp @ np.expm1(shift) if shift.any() else np.zeros(resp.shape[0])
        for k, column in columns.items():
            total += _scaled_expm1(resp[:, k], shift[k] + column) - resp[:, k] * np.expm1(shift[k])
        return float(chunk.weights @ np.log1p(total)) + prior_change(params)

    return change


def _scaled_expm1(resp: np.ndarray, change: np.ndarray) -> np.ndarray:
    """``resp * expm1(change)``, without 0 * inf where a row far out in a component's tail has no responsibility."""
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        out = resp * np.expm1(change)
        far = change > 700
        if far.any():
            out[far] = np.exp(np.log(resp[far]) + change[far]) - resp[far]
    return out


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
        Give NaN rather than spend the Hessian's passes over the data (about ``2 p^2 / K`` where each component
        has its own parameters, ``2 p^2`` with a tied covariance) when the number of free parameters p exceeds
        this.
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
#: table, the forest plot and the report of one fit each ask for them, and each computation costs about 2 p^2 / K
#: passes over the data, or 2 p^2 (:func:`_observed_hessian`)
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
        prior = model.working_prior(prepared) if tree["em"].attrs.get("method") == "map" else None
        theta, layout = _pack(model.to_working(estimate, prepared))
        hessian = _observed_hessian(model, prepared, theta, layout, data.features, prior)
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
