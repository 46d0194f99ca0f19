"""Label switching: align every posterior draw to a reference labelling of the components.

A mixture's likelihood and (exchangeable) prior do not change when components are permuted, so chains
can visit any of the K! labellings, and summaries per component are meaningless until draws share one
labelling. Each draw is aligned to the reference (the EM estimate, components in canonical order) by the
permutation minimising a cost between the draw's components and the reference components (the optimal
assignment, :func:`scipy.optimize.linear_sum_assignment`).

The cost is the squared Euclidean distance between per-component *signatures*: vectors of unitless
numbers describing a component. For Gaussian components (:func:`gaussian_signature`): the mean divided
by the data's standard deviation per feature, the log standard deviation per feature (when the
dispersion is per component) and the square root of the weight (a variance-stabilising scale for a
proportion). Well separated components differ mostly by their means; concentric ones by their spread;
the weight term breaks the remaining ties. Every family provides its own signature through
``model.label_signature(data)`` (a :class:`Signature`), in the same spirit.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["Signature", "align", "apply_permutations", "assignment_costs", "gaussian_signature",
           "optimal_permutations"]


@dataclass(frozen=True)
class Signature:
    """A family's per-component signature, callable as ``signature(params) -> (..., K, F)``.

    Attributes
    ----------
    function : callable
        ``function(params) -> ndarray of shape (..., K, F)`` of unitless numbers per component.
    description : str
        What the assignment cost is, recorded with the aligned draws.
    """

    function: Callable
    description: str

    def __call__(self, params: dict) -> np.ndarray:
        """The signatures of ``params`` (leading axes, e.g. draws, broadcast)."""
        return self.function(params)


def gaussian_signature(params: dict, data_scale: np.ndarray) -> np.ndarray:
    """Unitless per-component signature of Gaussian mixture parameters.

    Parameters
    ----------
    params : dict
        ``weights`` (..., K), ``mu`` (..., K, d) and ``covariance`` (..., K, d, d) or (..., d, d), or
        ``variance`` (..., K, d) or (..., K); leading axes (e.g. chain, draw) are broadcast.
    data_scale : ndarray of shape (d,)
        Standard deviation of each feature of the data.

    Returns
    -------
    ndarray of shape (..., K, F)
        ``mu / data_scale``, the log standard deviation per feature when the dispersion has a
        component axis, and ``sqrt(weights)``.
    """
    mu = np.asarray(params["mu"], dtype=float)
    parts = [mu / data_scale]
    if "covariance" in params:
        cov = np.asarray(params["covariance"], dtype=float)
        if cov.ndim == mu.ndim + 1:  # one covariance per component ("full"); "tied" carries no label
            parts.append(0.5 * np.log(np.diagonal(cov, axis1=-2, axis2=-1) / data_scale**2))
    else:
        variance = np.asarray(params["variance"], dtype=float)
        if variance.ndim == mu.ndim - 1:  # "spherical": one variance per component
            variance = variance[..., None] * np.ones(mu.shape[-1])
        parts.append(0.5 * np.log(variance / data_scale**2))
    parts.append(np.sqrt(np.asarray(params["weights"], dtype=float))[..., None])
    return np.concatenate(parts, axis=-1)


def assignment_costs(signatures: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Squared distances between each draw's components and the reference components.

    Parameters
    ----------
    signatures : ndarray of shape (n_draws, K, F)
    reference : ndarray of shape (K, F)

    Returns
    -------
    ndarray of shape (n_draws, K, K)
        ``costs[s, i, j]``: draw component i against reference component j.
    """
    difference = signatures[:, :, None, :] - reference[None, None, :, :]
    return np.einsum("sijf,sijf->sij", difference, difference)


def optimal_permutations(costs: np.ndarray) -> np.ndarray:
    """The assignment of draw components to reference components with the least total cost.

    Parameters
    ----------
    costs : ndarray of shape (n_draws, K, K)

    Returns
    -------
    ndarray of int of shape (n_draws, K)
        ``perm[s, j]`` is the draw component that becomes component j (so ``values[s, perm[s]]`` is
        aligned); identity rows mean the draw was already aligned.
    """
    n_draws, k, _ = costs.shape
    permutations = np.empty((n_draws, k), dtype=np.int64)
    for s in range(n_draws):
        _, reference_of = linear_sum_assignment(costs[s])
        permutations[s] = np.argsort(reference_of)
    return permutations


def apply_permutations(values: np.ndarray, permutations: np.ndarray, axis: int) -> np.ndarray:
    """Reorder the component axis of every draw.

    Parameters
    ----------
    values : ndarray of shape (n_draws, ...)
        Draws stacked on the first axis.
    permutations : ndarray of int of shape (n_draws, K)
    axis : int
        Position of the component axis in ``values`` (> 0).

    Returns
    -------
    ndarray
        Same shape as ``values``: ``out[s, ..., j, ...] = values[s, ..., perm[s, j], ...]``.
    """
    shape = [permutations.shape[0]] + [1] * (values.ndim - 1)
    shape[axis] = permutations.shape[1]
    return np.take_along_axis(values, permutations.reshape(shape), axis=axis)


def align(draws: dict, reference: dict, signature) -> tuple[dict, np.ndarray]:
    """Align posterior draws to a reference labelling.

    Parameters
    ----------
    draws : dict
        ``{name: (dims, array)}`` with leading dims ``("chain", "draw")``; parameters with a
        ``"component"`` dim are permuted, the others are left as they are.
    reference : dict
        ``{name: array}`` of the reference parameters (no chain/draw axes), components in the order to
        align to.
    signature : callable
        ``signature(params) -> (..., K, F)``, applied to the draws (as ``{name: array}``) and to the
        reference, e.g. ``functools.partial(gaussian_signature, data_scale=...)``.

    Returns
    -------
    aligned : dict
        Same structure as ``draws``.
    permutations : ndarray of int of shape (n_chains, n_draws, K)
        The permutation applied to each draw (see :func:`optimal_permutations`).
    """
    values = {name: np.asarray(array) for name, (_, array) in draws.items()}
    n_chains, n_draws = next(iter(values.values())).shape[:2]
    flat = {name: array.reshape((n_chains * n_draws,) + array.shape[2:]) for name, array in values.items()}
    costs = assignment_costs(signature(flat), signature(reference))
    permutations = optimal_permutations(costs)
    aligned = {}
    for name, (dims, _) in draws.items():
        if "component" in dims:
            moved = apply_permutations(flat[name], permutations, dims.index("component") - 1)
            aligned[name] = (dims, moved.reshape(values[name].shape))
        else:
            aligned[name] = (dims, values[name])
    return aligned, permutations.reshape(n_chains, n_draws, -1)
