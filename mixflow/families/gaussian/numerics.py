"""Gaussian mixture numerics: E-step densities, sufficient statistics and M-steps per covariance type.

Everything works on data shifted by a fixed centre ``c`` (the weighted data mean), which keeps the
one-pass second moments accurate. For a chunk ``z = x - c`` of shape (m, d):

- the per-component log densities come from one matrix product for all components: the quadratic form
  ``z' P_k z`` is ``outer(z) @ A`` where ``outer(z)`` holds the d(d+1)/2 products ``z_i z_j`` (i <= j);
- the M-step second moments are ``R' @ outer(z)``, one product of weighted responsibilities and the
  same chunk features, so each chunk's features are formed once per iteration and used by both steps.

Parameters: ``mu`` (K, d) in data coordinates, and ``covariance`` (K, d, d) for "full", (d, d) for
"tied", ``variance`` (K, d) for "diag", (K,) for "spherical". Several tied mixtures of K components each
may be stacked (EM runs in step): ``mu`` (G K, d) and ``covariance`` (G, d, d), one per mixture, shared by its
K components; the E-step takes them as they are, the M-step and the floor with ``groups=G``.
"""

from functools import cache

import numpy as np

__all__ = [
    "COVARIANCE_TYPES",
    "centred_log_density",
    "centred_m_step",
    "e_step_constants",
    "one_pass_error",
    "hathaway_ratios",
    "log_density",
    "m_step",
    "statistics",
]

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
LOG_2PI = np.log(2 * np.pi)
_EPS = float(np.finfo(float).eps)
PRECISION_FLOOR = 1000 * np.finfo(float).eps  # relative precision of a one-pass second moment, with margin
ABSOLUTE_FLOOR = np.finfo(float).eps  # in standardised units (of the data's variance): a point at the centre
FLOOR_DESCRIPTION = ("{its} variances were lifted to a floor of {floor:.1e} x {its} second moment about the data "
                     "mean, the precision of {its} sufficient statistics")


@cache
def packed_indices(d: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the upper triangle (i <= j) of a d x d matrix (read-only, computed once)."""
    rows, cols = np.triu_indices(d)
    rows.flags.writeable = cols.flags.writeable = False
    return rows, cols


@cache
def _pair_weights(d: int) -> np.ndarray:
    """The weight of each packed product z_i z_j in a quadratic form: 2 off the diagonal (it appears twice), else 1."""
    weights = 2.0 - np.eye(d)[packed_indices(d)]
    weights.flags.writeable = False
    return weights


def pack_symmetric(matrices: np.ndarray) -> np.ndarray:
    """(..., d, d) symmetric matrices to (..., d(d+1)/2) upper-triangle vectors."""
    rows, cols = packed_indices(matrices.shape[-1])
    return matrices[..., rows, cols]


def unpack_symmetric(packed: np.ndarray, d: int) -> np.ndarray:
    """(..., d(d+1)/2) upper-triangle vectors back to (..., d, d) symmetric matrices."""
    rows, cols = packed_indices(d)
    out = np.zeros(packed.shape[:-1] + (d, d))
    out[..., rows, cols] = packed
    out[..., cols, rows] = packed
    return out


def outer_features(z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Products z_i z_j for i <= j, shape (m, d(d+1)/2), in :func:`packed_indices` order.

    Stored feature-major: the result is the transpose of a (d(d+1)/2, m) array whose row for (i, j) is
    one contiguous product ``z[:, i] * z[:, j]``, written for all j >= i at once. Matrix products read
    either layout at the same speed, and filling contiguous rows of length m is faster than filling the
    columns of a row-major array or fancy indexing. ``out``, if given, is a
    (d(d+1)/2, >= m) array to write into (a buffer reused across chunks).
    """
    m, d = z.shape
    if out is None:
        out = np.empty((d * (d + 1) // 2, m))
    columns = np.ascontiguousarray(z.T)
    start = 0
    for i in range(d):
        np.multiply(columns[i], columns[i:], out=out[start:start + d - i, :m])
        start += d - i
    return out[:, :m].T


def _precision_and_logdet(covariances: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision matrices, log determinants and lower Cholesky factors of (K, d, d) SPD covariances.

    Batched: P = L^-T L^-1 from the inverse of each Cholesky factor. A loop of ``cho_solve`` calls took
    ten times as long after the pass's large products (BLAS threads waking for each small solve).
    """
    if covariances.shape[-1] == 1 and _positive_finite(covariances):
        # one feature: the factor is the square root and its inverse the reciprocal, as LAPACK computes them for a
        # 1 x 1 matrix (the same bits), without the overhead of the batched linear algebra
        factors = np.sqrt(covariances)
        inverse_factors = 1.0 / factors
        return inverse_factors * inverse_factors, 2.0 * np.log(factors[..., 0, 0]), factors
    factors = np.linalg.cholesky(covariances)
    inverse_factors = np.linalg.inv(factors)
    precisions = np.swapaxes(inverse_factors, -1, -2) @ inverse_factors
    logdets = 2.0 * np.log(np.diagonal(factors, axis1=-2, axis2=-1)).sum(axis=-1)
    return precisions, logdets, factors


def e_step_constants(covariance_type: str, params: dict, center: np.ndarray) -> dict:
    """Per-iteration quantities of the E-step, computed once from the parameters.

    Returns a dict with ``quad`` (the matrix mapping chunk features to quadratic forms), ``linear``
    (d, K), and ``offset`` (K,) such that the log density is
    ``-0.5 * (features @ quad - 2 z @ linear + offset)``. For "tied", ``quad`` has one column per mixture
    (G stacked mixtures: ``covariance`` of shape (G, d, d)), shared by the mixture's components. For "full" and
    "tied" also ``cholesky``, the covariance's lower Cholesky factor (its shape).
    """
    mu = params["mu"] - center
    n_components, d = mu.shape
    if covariance_type in ("full", "tied"):
        cov = params["covariance"]
        covs = cov if covariance_type == "full" or cov.ndim == 3 else cov[None]
        precisions, logdets, factors = _precision_and_logdet(covs)
        quad = (pack_symmetric(precisions) * _pair_weights(d)).T  # (T, K), or (T, G) when tied
        if covariance_type == "tied":  # each component gets its own mixture's precision
            shared = n_components // covs.shape[0]
            # one mixture: broadcast, not copied (the einsums below sum in an order set by their operands' strides)
            precisions = (np.broadcast_to(precisions, (n_components, d, d)) if covs.shape[0] == 1
                          else np.repeat(precisions, shared, axis=0))
            logdets = np.repeat(logdets, shared)
        linear = np.einsum("kij,kj->ik", precisions, mu)
        offset = np.einsum("ik,ki->k", linear, mu)
        # the covariance's factor, shaped as it: what SQUAREM's unconstrained form of these parameters needs
        return {"quad": quad, "linear": linear, "offset": offset + logdets + d * LOG_2PI,
                "cholesky": factors.reshape(cov.shape)}
    elif covariance_type == "diag":
        inverse = 1.0 / params["variance"]
        quad = inverse.T
        linear = (mu * inverse).T
        offset = (mu * mu * inverse).sum(axis=1)
        logdets = np.log(params["variance"]).sum(axis=1)
    else:
        inverse = 1.0 / params["variance"]
        quad = inverse[None, :]
        linear = (mu * inverse[:, None]).T
        offset = (mu * mu).sum(axis=1) * inverse
        logdets = d * np.log(params["variance"])
    return {"quad": quad, "linear": linear, "offset": offset + logdets + d * LOG_2PI}


def chunk_features(covariance_type: str, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Second-order features of a chunk shared by the E- and M-steps (``out``: a buffer for "full"/"tied")."""
    if covariance_type in ("full", "tied"):
        return outer_features(z, out)
    if covariance_type == "diag":
        return z * z
    return np.einsum("ij,ij->i", z, z)[:, None]


def log_density(covariance_type: str, constants: dict, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Log N(x | mu_k, Sigma_k) for a chunk, shape (m, K), and the chunk's second-order features.

    For "full" and "tied" the features are written into a buffer kept in ``constants`` and reused by the
    next chunk of the pass, so they are valid until the next call: a fresh (m, d(d+1)/2) array per chunk
    costs more in page faults than the products that fill it.
    """
    features = chunk_features(covariance_type, z, _buffer(constants, covariance_type, z.shape))
    out = z @ constants["linear"]
    out *= -2.0
    if covariance_type == "tied":  # one quadratic form per mixture (G stacked), to each of its components
        quadratic, m = features @ constants["quad"], out.shape[0]
        out = out.reshape(m, quadratic.shape[1], -1)
        out += quadratic[:, :, None]
        out = out.reshape(m, -1)
    else:
        out += features @ constants["quad"]  # (m, K)
    out += constants["offset"]
    out *= -0.5
    return out, features


def _buffer(constants: dict, covariance_type: str, shape: tuple[int, int]) -> np.ndarray | None:
    if covariance_type not in ("full", "tied"):
        return None
    m, d = shape
    buffer = constants.get("features")
    if buffer is None or buffer.shape[1] < m:
        buffer = constants["features"] = np.empty((d * (d + 1) // 2, m))
    return buffer


def statistics(covariance_type: str, weighted_resp: np.ndarray, z: np.ndarray, features: np.ndarray) -> dict:
    """Summable sufficient statistics of a chunk: first and second moments per component.

    The products are written ``(data.T @ resp).T``: OpenBLAS is up to 100x slower on the equivalent
    ``resp.T @ data`` when the shared (row) dimension is long.
    """
    first = (z.T @ weighted_resp).T
    if covariance_type == "tied":
        second = features.T @ weighted_resp.sum(axis=1)  # the pooled second moment
    else:
        second = (features.T @ weighted_resp).T
    return {"first": first, "second": second}


def m_step(covariance_type: str, counts: np.ndarray, stats: dict, center: np.ndarray, prior,
           groups: int | None = None) -> dict:
    """Component parameters from sufficient statistics: MLE when ``prior`` is None, else MAP.

    Parameters
    ----------
    counts : ndarray of shape (K,)
        Weighted responsibility totals N_k.
    stats : dict
        ``first`` (K, d) and ``second`` as returned by :func:`statistics` summed over chunks.
    center : ndarray of shape (d,)
        The shift applied to the data.
    prior : ResolvedGaussianPrior or None
    groups : int, optional
        The components are this many mixtures stacked, each of K / groups components and its statistics
        concatenated in order: "tied" pools each mixture's scatter into its own covariance, shape
        (groups, d, d). The other types treat each component alone and ignore it.

    """
    d = center.shape[0]
    means = stats["first"] / counts[:, None]  # shifted coordinates
    if covariance_type == "full":
        scatter = unpack_symmetric(stats["second"], d) - counts[:, None, None] * np.einsum("ki,kj->kij", means, means)
    elif covariance_type == "tied":
        own_counts, own_means = _by_mixture(counts, groups), _by_mixture(means, groups)
        scatter = (unpack_symmetric(stats["second"].reshape(own_counts.shape[0], -1), d)
                   - _pooled_outer(own_counts, own_means, own_means))
    elif covariance_type == "diag":
        scatter = stats["second"] - counts[:, None] * means**2
    else:
        scatter = stats["second"][:, 0] - counts * (means**2).sum(axis=1)
    if prior is None:
        params = _mle(covariance_type, counts, means, scatter, center)
    else:
        params = _map(covariance_type, counts, means, scatter, center, prior)
    return _one_tied(covariance_type, params, groups)


def _by_mixture(values: np.ndarray, groups: int | None) -> np.ndarray:
    """Per-component values (G K, ...) as (G, K, ...): each mixture's of a stack of ``groups`` (None: one)."""
    return values.reshape((groups or 1, -1) + values.shape[1:])


def _pooled_outer(weights: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Per mixture g, ``sum_k weights[g, k] outer(left[g, k], right[g, k])``: shape (G, d, d).

    Each mixture's by the product one mixture alone is formed with, so a mixture's M-step is the same stacked
    or not (a product of another shape may sum in another order).
    """
    return np.stack([np.einsum("k,ki,kj->ij", *own) for own in zip(weights, left, right, strict=True)])


def _one_tied(covariance_type: str, params: dict, groups: int | None) -> dict:
    """A tied covariance per mixture, (G, d, d), as one mixture's (d, d) when not stacked (``groups`` None)."""
    if covariance_type != "tied" or groups is not None:
        return params
    return {**params, "covariance": params["covariance"][0]}


def variance_floor(covariance_type: str, params: dict, floor: np.ndarray, centred: bool = False) -> np.ndarray:
    """The smallest variance each component can resolve, per feature: (K, d), (d,) when "tied", (K,) "spherical".

    Of G tied mixtures stacked (a covariance of shape (G, d, d), not ``centred``), (G, d): each mixture's own.

    The one-pass second moments are sums about the data centre, so a component's variance is known to
    about eps x its second moment about that centre (its variance plus its squared mean offset).
    :data:`PRECISION_FLOOR` times that moment, and never below ``floor`` (d,), is the component's own
    floor: far-apart tight clusters keep their variances, a component on one repeated point does not.
    ``centred``: the moments were summed about each component's own mean (:func:`centred_m_step`), known to
    eps of the variance itself, with the covariance's own rounding (:data:`PRECISION_FLOOR` of its
    variances) in its eigenvalues; what bounds them beyond that is the data, known to eps of their magnitude:
    the square of :data:`PRECISION_FLOOR` times the component's distance from the centre (at least one
    working unit), which a component on one repeated point is still below.
    """
    mu = params["mu"]
    if centred:
        resolution = (PRECISION_FLOOR * np.fmax(np.abs(mu), 1.0)) ** 2
        resolution = {"full": resolution, "tied": resolution.max(axis=0), "diag": resolution,
                      "spherical": resolution.max(axis=1)}[covariance_type]
        return np.fmax(PRECISION_FLOOR * own_variances(covariance_type, params).reshape(resolution.shape), resolution)
    if covariance_type == "full":
        own = np.diagonal(params["covariance"], axis1=-2, axis2=-1) + mu * mu
    elif covariance_type == "tied":  # (G, d) when G mixtures are stacked (a covariance of shape (G, d, d))
        cov = params["covariance"]
        spread = _by_mixture(mu * mu, cov.shape[0] if cov.ndim == 3 else None).max(axis=1)
        own = np.diagonal(cov, axis1=-2, axis2=-1) + (spread if cov.ndim == 3 else spread[0])
    elif covariance_type == "diag":
        own = params["variance"] + mu * mu
    else:
        own = params["variance"] + (mu * mu).mean(axis=1)
        return np.fmax(PRECISION_FLOOR * own, floor.mean())
    return np.fmax(PRECISION_FLOOR * own, floor)


def floor_variances(covariance_type: str, params: dict, floor: np.ndarray,
                    centred: bool = False) -> tuple[dict, list[int]]:
    """Lift collapsed (near-singular) covariances to their floor; return the indices of those lifted.

    The floor is :func:`variance_floor`'s, each component's own. A full/tied covariance whose smallest
    eigenvalue relative to the floor is below one gets the floor added to its diagonal. A tied covariance
    lifted is reported as its mixture's first component (0, or G mixtures stacked: that mixture's first of the
    stack).
    """
    own = variance_floor(covariance_type, params, floor, centred)
    if covariance_type in ("diag", "spherical"):
        variance = params["variance"]
        low = ~(variance >= own)
        collapsed = np.flatnonzero(low if covariance_type == "spherical" else low.any(axis=1))
        if collapsed.size:
            lifted = np.where(low, own, variance)
            params = {**params, "variance": lifted}
        return params, collapsed.tolist()
    cov = params["covariance"]
    single = covariance_type == "tied" and cov.ndim == 2  # one tied covariance; else one per component or mixture
    covs, floors = (cov[None], own[None]) if single else (cov, own)
    scale = np.sqrt(floors)
    collapsed = _below_one(covs / (scale[:, :, None] * scale[:, None, :]))
    if collapsed.size:
        covs = covs.copy()
        for c in collapsed:
            covs[c] = np.where(np.isfinite(covs[c]), covs[c], 0.0) + np.diag(floors[c])
        params = {**params, "covariance": covs[0] if single else covs}
    if covariance_type == "tied":  # a mixture's tied covariance: its first component stands for it
        collapsed = collapsed * (params["mu"].shape[0] // covs.shape[0])
    return params, collapsed.tolist()


def _positive_finite(values: np.ndarray) -> bool:
    """Whether every value is positive and finite (NaN is not)."""
    return bool((values > 0).all() and np.isfinite(values).all())


def _below_one(scaled: np.ndarray) -> np.ndarray:
    """Indices of the (K, d, d) symmetric matrices whose smallest eigenvalue is not above one.

    A Cholesky factorisation of ``scaled - I`` succeeds exactly when every smallest eigenvalue is above one,
    at a tenth of the eigenvalues' cost; only when it fails (or meets a NaN) are the eigenvalues computed. A
    1 x 1 matrix is its eigenvalue.
    """
    if scaled.shape[-1] == 1:
        return np.flatnonzero(~(scaled[:, 0, 0] > 1.0))
    try:
        factors = np.linalg.cholesky(scaled - np.eye(scaled.shape[-1]))
        if np.isfinite(factors).all():
            return np.array([], dtype=int)
    except np.linalg.LinAlgError:
        pass
    return np.flatnonzero(~(np.linalg.eigvalsh(scaled)[:, 0] > 1.0))


def _mle(covariance_type, counts, means, scatter, center) -> dict:
    """The MLE from the scatter; "tied": ``scatter`` (G, d, d), one per mixture of G stacked, and so the result."""
    mu = means + center
    if covariance_type == "full":
        return {"mu": mu, "covariance": scatter / counts[:, None, None]}
    if covariance_type == "tied":
        return {"mu": mu, "covariance": scatter / _by_mixture(counts, scatter.shape[0]).sum(axis=1)[:, None, None]}
    if covariance_type == "diag":
        return {"mu": mu, "variance": scatter / counts[:, None]}
    return {"mu": mu, "variance": scatter / (counts * means.shape[1])}


def _map(covariance_type, counts, means, scatter, center, prior) -> dict:
    """:func:`_mle`'s MAP counterpart under the conjugate prior (the same shapes)."""
    kappa, dof = prior.shrinkage, prior.dof
    prior_mean = prior.mean - center
    n_components, d = means.shape
    mu = (counts[:, None] * means + kappa * prior_mean) / (counts + kappa)[:, None]
    gap = means - prior_mean
    pull = kappa * counts / (kappa + counts)
    if covariance_type == "full":
        total = prior.scale + scatter + pull[:, None, None] * np.einsum("ki,kj->kij", gap, gap)
        return {"mu": mu + center, "covariance": total / (dof + counts + d + 2)[:, None, None]}
    if covariance_type == "tied":
        groups = scatter.shape[0]
        own_counts, own_gap = _by_mixture(counts, groups), _by_mixture(gap, groups)
        total = prior.scale + scatter + _pooled_outer(_by_mixture(pull, groups), own_gap, own_gap)
        denominator = dof + d + 1 + own_counts.shape[1] + own_counts.sum(axis=1)
        return {"mu": mu + center, "covariance": total / denominator[:, None, None]}
    if covariance_type == "diag":
        total = prior.scale + scatter + pull[:, None] * gap**2
        return {"mu": mu + center, "variance": total / (dof + counts + 3)[:, None]}
    total = prior.scale + scatter + pull * (gap**2).sum(axis=1)
    return {"mu": mu + center, "variance": total / (dof + 2 + d + counts * d)}


def one_pass_error(covariance_type: str, params: dict, center: np.ndarray) -> float:
    """Relative rounding of the one-pass moments and quadratic forms about ``center`` at ``params``.

    Both expand ``(z - mu)' P (z - mu)`` and a component's scatter into terms of the size of its squared
    offset from the centre in its own sds, ``(mu - c)^2 / var``, which cancel to the size of one variance:
    the result keeps about eps x that ratio (its largest over components and features) of relative precision.
    """
    offset = (params["mu"] - center) ** 2
    variance = own_variances(covariance_type, params)
    if covariance_type == "tied" and variance.ndim == 2:  # G mixtures stacked: each mixture's to its components
        variance = np.repeat(variance, offset.shape[0] // variance.shape[0], axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.fmax.reduce((offset / variance).ravel(), initial=0.0)  # fmax passes over NaN (0 / 0)
    return float(_EPS * ratio)


def own_variances(covariance_type: str, params: dict) -> np.ndarray:
    """Each component's variance per feature: (K, d), (d,) for "tied" ((G, d) stacked), (K, 1) for "spherical"."""
    if covariance_type in ("full", "tied"):
        return np.diagonal(params["covariance"], axis1=-2, axis2=-1)
    if covariance_type == "diag":
        return params["variance"]
    return np.asarray(params["variance"])[:, None]


def centred_log_density(covariance_type: str, params: dict, z: np.ndarray) -> np.ndarray:
    """Log N(z | mu_k, Sigma_k), shape (n, K), from each component's own centred rows ``z - mu_k``.

    The direct form, one triangular solve per component: no term larger than the result, so no
    cancellation wherever the components lie (:func:`log_density` expands the quadratic form about one
    centre, which is faster and shares its features with the M-step).
    """
    mu = params["mu"]
    n_components, d = mu.shape
    out = np.empty((z.shape[0], n_components))
    if covariance_type in ("full", "tied"):
        cov = params["covariance"]
        factors = np.linalg.cholesky(np.broadcast_to(cov, (n_components, d, d)))
        for k in range(n_components):
            solved = np.linalg.solve(factors[k], (z - mu[k]).T)
            out[:, k] = np.einsum("ij,ij->j", solved, solved) + 2.0 * np.log(np.diagonal(factors[k])).sum()
    else:
        variance = np.broadcast_to(own_variances(covariance_type, params), mu.shape)
        for k in range(n_components):
            centred = z - mu[k]
            out[:, k] = np.einsum("ij,ij->i", centred, centred / variance[k]) + np.log(variance[k]).sum()
    out += d * LOG_2PI
    out *= -0.5
    return out


def centred_m_step(covariance_type: str, weighted_resp: np.ndarray, z: np.ndarray, prior) -> dict:
    """:func:`m_step` from each component's scatter about its own new mean (two passes, no cancellation)."""
    counts = weighted_resp.sum(axis=0) + 10 * np.finfo(float).eps  # an empty component keeps finite parameters
    means = (z.T @ weighted_resp).T / counts[:, None]
    n_components, d = means.shape
    if covariance_type in ("full", "tied"):
        scatter = np.empty((n_components, d, d))
        for k in range(n_components):
            centred = z - means[k]
            scatter[k] = (centred * weighted_resp[:, k:k + 1]).T @ centred
        if covariance_type == "tied":
            scatter = scatter.sum(axis=0, keepdims=True)
    else:
        scatter = np.stack([weighted_resp[:, k] @ (z - means[k]) ** 2 for k in range(n_components)])
        if covariance_type == "spherical":
            scatter = scatter.sum(axis=1)
    center = np.zeros(d)
    if prior is None:
        return _one_tied(covariance_type, _mle(covariance_type, counts, means, scatter, center), None)
    return _one_tied(covariance_type, _map(covariance_type, counts, means, scatter, center, prior), None)


def hathaway_ratios(covariance_type: str, dispersion: np.ndarray, components=None) -> np.ndarray:
    """Per component h, the smallest eigenvalue of ``inv(Sigma_j) Sigma_h`` over the other components j.

    Hathaway's (1985) ratio, which his constrained MLE bounds below: how much narrower, in the direction where
    it is narrowest, component h is than any other component. It is invariant under any affine change of the
    data (standardisation included), so correlated features do not make it small, as they make the ratio of
    a covariance's own smallest and largest eigenvalues. One component, or a tied covariance: infinity.

    Parameters
    ----------
    covariance_type : {"full", "tied", "diag", "spherical"}
    dispersion : ndarray
        ``covariance`` (K, d, d) for "full", ``variance`` (K, d) for "diag", (K,) for "spherical".
    components : sequence of int, optional
        The components h whose ratios are wanted (all by default); the others' are left infinite.

    Returns
    -------
    ndarray of shape (K,)

    """
    dispersion = np.asarray(dispersion, dtype=float)
    if covariance_type == "tied":
        return np.full(1, np.inf)
    k = dispersion.shape[0]
    ratios = np.full(k, np.inf)
    wanted = np.arange(k) if components is None else np.asarray(components, dtype=int)
    if covariance_type in ("diag", "spherical"):
        variances = dispersion.reshape(k, -1)
        for h in wanted:
            others = np.delete(variances, h, axis=0)
            if others.size:
                ratios[h] = np.min(variances[h] / others)
        return ratios
    if dispersion.shape[-1] == 1 and _positive_finite(dispersion):
        # one feature: the factor is the square root, each solve a division and the eigenvalue the matrix, as LAPACK
        # computes them for 1 x 1 matrices (the same bits), without the overhead of the batched linear algebra
        variances = dispersion[:, 0, 0]
        factors = np.sqrt(variances)
        whitened = variances[wanted][:, None] / factors / factors  # (h, j)
        pairs = (whitened + whitened) / 2
        pairs[np.arange(wanted.size), wanted] = np.inf  # j = h is no other component
        np.minimum.at(ratios, wanted, pairs.min(axis=1, initial=np.inf))
        return ratios
    # whitened by component j's Cholesky factor L: eig(inv(Sigma_j) Sigma_h) = eig(L^-1 Sigma_h L^-T)
    try:
        factors = np.linalg.cholesky(dispersion)
    except np.linalg.LinAlgError:
        factors = None
    if factors is None or not np.isfinite(factors).all():  # a covariance not positive definite: skip it as j
        return _hathaway_one_by_one(dispersion, wanted)
    # every pair (j, h) of two components, h wanted, at once
    j, h = np.nonzero(~np.eye(k, dtype=bool)[:, wanted])
    h = wanted[h]
    whitened = np.linalg.solve(factors[j], np.swapaxes(np.linalg.solve(factors[j], dispersion[h]), -1, -2))
    smallest = np.linalg.eigvalsh((whitened + np.swapaxes(whitened, -1, -2)) / 2)[:, 0]
    np.minimum.at(ratios, h, smallest)
    return ratios


def separations(covariance_type: str, mu: np.ndarray, dispersion: np.ndarray, components) -> np.ndarray:
    """Per wanted component h, the smallest squared Mahalanobis distance of its mean under another component j.

    ``min_j (mu_h - mu_j)' inv(Sigma_j) (mu_h - mu_j)``, invariant under any affine change of the data as the
    Hathaway ratio is; infinite with no other component, and for the components not wanted. A component j
    whose covariance is not positive definite is left out as the reference.

    Parameters
    ----------
    covariance_type : {"full", "diag", "spherical"}
    mu : ndarray of shape (K, d)
    dispersion : ndarray
        ``covariance`` (K, d, d) for "full", ``variance`` (K, d) for "diag", (K,) for "spherical".
    components : sequence of int
        The components h whose separations are wanted.

    """
    mu = np.asarray(mu, dtype=float)
    dispersion = np.asarray(dispersion, dtype=float)
    k = mu.shape[0]
    out = np.full(k, np.inf)
    wanted = np.asarray(components, dtype=int)
    for j in range(k):  # each reference component's factor once
        if covariance_type == "full":
            try:
                factor = np.linalg.cholesky(dispersion[j])
            except np.linalg.LinAlgError:
                continue
        for h in wanted[wanted != j]:
            gap = mu[h] - mu[j]
            if covariance_type == "full":
                whitened = np.linalg.solve(factor, gap)
            else:
                with np.errstate(divide="ignore", invalid="ignore"):  # a zero variance: inf, or NaN (dropped)
                    whitened = gap / np.sqrt(dispersion[j])  # variances (d,) for "diag", one for "spherical"
            out[h] = min(out[h], float(whitened @ whitened))
    return out


def _hathaway_one_by_one(dispersion: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """:func:`hathaway_ratios` of full covariances, some not positive definite (left out as the reference j)."""
    k = dispersion.shape[0]
    ratios = np.full(k, np.inf)
    for j in range(k):
        try:
            factor = np.linalg.cholesky(dispersion[j])
        except np.linalg.LinAlgError:
            continue
        for h in wanted:
            if h != j:
                whitened = np.linalg.solve(factor, np.linalg.solve(factor, dispersion[h]).T)
                ratios[h] = min(ratios[h], np.linalg.eigvalsh((whitened + whitened.T) / 2)[0])
    return ratios
