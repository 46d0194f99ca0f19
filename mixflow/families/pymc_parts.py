"""The one PyMC model of a declared mixture, shared by MCMC (NUTS) and ADVI: what every family shares.

Each family builds its own model through its ``pymc_model`` method (``pymc.py`` in each
family's folder), term for term the declared one: the mixing
weights and component parameters with exactly the prior the EM engine maximises under ``method="map"``,
and the mixture likelihood with the discrete labels summed out. Its density over (weights, component
parameters), without the Jacobians of the unconstraining transforms (``model.compile_logp(jacobian=False)``),
is the EM MAP objective plus a constant, so ``pm.find_MAP`` on it lands on the EM MAP estimate.

What the families share lives here, so that it is written once:

- :func:`dirichlet_weights`: the free ``weights`` ~ Dirichlet(concentration) (PyMC's simplex transform);
- :func:`data_rows`: the row arrays and frequency weights as tensors, drawn through ``pm.Minibatch``
  under minibatches, with the factor ``n_obs / B`` that makes a minibatch sum an unbiased estimate of
  the full-data sum (what ``total_size`` does for an observed variable);
- :func:`mixture_potential`: ``pm.Potential("log_likelihood", ...)``, the log-sum-exp over components of
  log weight plus component log density, each row counted by its frequency weight, scaled by the factor;
- :func:`check_inputs` and :func:`lifted_weights`: argument checks and starting weights inside the simplex;
- :func:`graph_input`: a data-derived value (the rows, the data-scaled prior, a standardisation) as an
  input of the graph rather than a constant, so that one compiled model serves every data set of its
  structure. Every family declares its data-derived values this way.

Free variables are named after the parameter they carry: the parameter itself (``weights``, ``rate``), or
the parameter in standardised units with the suffix ``_std`` (:func:`parameter_of`). The parameters in
data units are free variables or ``pm.Deterministic`` with the names and dims of the EM estimate
(``model.parameter_dims(features)``). There is no observed random variable: posterior predictive draws and
pointwise log-likelihoods are computed by :mod:`mixflow.engines.mcmc` from the draws.
"""

import contextlib
import contextvars

import numpy as np

from mixflow.arguments import check_integer
from mixflow.data import Data, add_to_digest
from mixflow.errors import InputTypeError
from mixflow.families.base import require_pymc_form, supports_pymc

__all__ = ["build_model", "check_inputs", "data_rows", "dirichlet_weights", "graph_input", "graph_inputs",
           "lifted_weights", "mixture_potential", "parameter_of", "streamed_rows", "structure_digest", "supports_pymc",
           "weighted_moments"]

LOG_2PI = float(np.log(2 * np.pi))
_STANDARDISED = "_std"


def build_model(model, data: Data, prior=None, *, minibatch_size: int | None = None):
    """The PyMC model of ``model`` for ``data``: ``model.pymc_model(data, prior, minibatch_size=...)``.

    Parameters
    ----------
    model : MixtureModel
        A declaration with a PyMC form (Gaussian, Poisson, regression).
    data : mixflow.data.Data
        Validated data (:func:`mixflow.data.validate_data`); frequency weights count each row.
    prior : resolved prior, optional
        ``model.resolve_prior(model.prepare(data))`` (the one EM uses) by default.
    minibatch_size : int, optional
        Rows per minibatch (ADVI). None uses every row in every evaluation (MCMC).

    Returns
    -------
    pymc.Model
    """
    require_pymc_form(model)
    return model.pymc_model(data, prior, minibatch_size=minibatch_size)


def check_inputs(data, prior, minibatch_size, prior_fields: tuple[str, ...]) -> None:
    """Check the arguments of a family's ``pymc_model``; errors name the argument."""
    if not isinstance(data, Data):
        raise InputTypeError(f"data: expected validated mixflow.data.Data (see mixflow.data.validate_data), "
                        f"got {type(data).__name__}")
    if prior is not None and not all(hasattr(prior, name) for name in prior_fields):
        raise InputTypeError(f"prior: expected None or a resolved prior from model.resolve_prior(...), "
                        f"got {type(prior).__name__}")
    check_minibatch_size(minibatch_size, data.n_obs)


def check_minibatch_size(minibatch_size, n_obs: int) -> None:
    """None, or an integer number of rows in [1, n_obs]."""
    if minibatch_size is None:
        return
    check_integer("minibatch_size", minibatch_size, lambda v: 1 <= v <= n_obs,
                  f"None or an integer in [1, n_obs = {n_obs}]")


def dirichlet_weights(concentration: np.ndarray):
    """The free mixing weights ``weights`` ~ Dirichlet(concentration), dims ``component``."""
    import pymc as pm

    return pm.Dirichlet("weights", a=graph_input("concentration", concentration), dims="component")


# the rows' source while a model is built for streamed minibatches (see :func:`streamed_rows`)
_ROW_SOURCE = contextvars.ContextVar("mixflow_row_source", default=None)


@contextlib.contextmanager
def streamed_rows(source):
    """Models built inside take their rows from ``source`` instead of the data (:func:`data_rows`).

    ``source.bind(arrays, frequency)`` receives what :func:`data_rows` would have used and returns
    ``(rows, row_weights, factor)``: tensors whose values the source replaces between optimisation steps
    (e.g. shared variables refilled from Dask blocks, :mod:`mixflow.engines.advi_stream`) and the factor
    scaling a minibatch sum to the full data.
    """
    token = _ROW_SOURCE.set(source)
    try:
        yield source
    finally:
        _ROW_SOURCE.reset(token)


def data_rows(arrays: tuple, frequency: np.ndarray, minibatch_size: int | None) -> tuple[list, object, float]:
    """Row-aligned arrays and frequency weights as tensors, all rows or one minibatch of them.

    Parameters
    ----------
    arrays : tuple of ndarray
        Arrays whose first axis is the observation axis (e.g. standardised data, design, response).
    frequency : ndarray of shape (n_obs,)
    minibatch_size : int or None

    Returns
    -------
    rows : list of tensors
        The arrays (or the same random rows of each).
    row_weights : tensor
        The frequency weights of those rows.
    factor : float
        ``n_obs / minibatch_size`` under minibatches, else 1.
    """
    import pymc as pm

    source = _ROW_SOURCE.get()
    if source is not None:
        return source.bind(arrays, frequency)
    if minibatch_size is None:
        rows = [graph_input(f"rows_{i}", a, rows=True) for i, a in enumerate(arrays)]
        return rows, graph_input("row_weights", frequency, rows=True), 1.0
    *rows, row_weights = pm.Minibatch(*arrays, frequency, batch_size=int(minibatch_size))
    return rows, row_weights, frequency.shape[0] / int(minibatch_size)


def mixture_potential(weights, component_log_density, row_weights, factor: float, offset: float = 0.0):
    """``pm.Potential("log_likelihood")``: sum over rows of w_n log sum_k pi_k p_k(x_n), times ``factor``.

    Parameters
    ----------
    weights : tensor of shape (K,)
    component_log_density : tensor of shape (m, K)
        Log density of each row under each component, in data units.
    row_weights : tensor of shape (m,)
    factor : float
    offset : float or scalar tensor, default 0
        A constant added to every row's log density (e.g. the log Jacobian of a standardisation), added
        after the log-sum-exp rather than to each component.
    """
    import pymc as pm
    import pytensor.tensor as pt

    log_px = pt.special.logsumexp(pt.log(weights) + component_log_density, axis=1) + offset
    return pm.Potential("log_likelihood", factor * pt.sum(row_weights * log_px))


def graph_input(name: str, value, *, rows: bool = False):
    """``value`` as an input of the model's graph (a PyTensor shared variable), not a constant of it.

    The compiled log density then depends on the graph's structure only (family, covariance type, K,
    number of features), not on the data or the data-scaled prior, so PyTensor's and numba's caches
    (in memory and on disk) serve every data set, bootstrap replicate and refit of that structure.
    The static shape is the value's, except the first axis of row arrays (``rows=True``): one compiled
    function for any number of rows.

    Parameters
    ----------
    name : str
        The variable's name (unique within a model).
    value : array-like of float
    rows : bool, default False
        The first axis is the observation axis.
    """
    import pytensor

    array = np.array(value, dtype=float)  # a copy: the graph never aliases the caller's data
    shape = (None, *array.shape[1:]) if rows else array.shape
    return pytensor.shared(array, name=name, shape=shape)


def structure_digest(pymc_model, outputs: list):
    """A SHA-256 (hashlib object, to add to) of the structure of ``outputs``, graphs of ``pymc_model``.

    That is their operations, types and names, every constant's value (in full: the printed graph abbreviates
    large ones), and the model's free variables with the types of their values. The graph inputs' values
    (:func:`graph_input`) are not in it: two models of one structure compute the same function of them.
    """
    import hashlib

    import pytensor
    from pytensor.graph.basic import Constant
    from pytensor.graph.traversal import ancestors

    digest = hashlib.sha256()
    digest.update(pytensor.printing.debugprint(outputs, file="str", print_type=True).encode())
    for variable in ancestors(outputs):
        if isinstance(variable, Constant):
            add_to_digest(digest, variable.data)
    free = [(rv.name, str(pymc_model.rvs_to_values[rv].type)) for rv in pymc_model.free_RVs]
    digest.update(f"{free}".encode())
    return digest


def graph_inputs(outputs: list) -> dict | None:
    """The float shared variables (:func:`graph_input`) ``outputs`` depend on, by name.

    None when one has no name or two share one: their values could not be carried from one model to another of
    the same structure by name.
    """
    from pytensor.graph.traversal import ancestors
    from pytensor.tensor.sharedvar import TensorSharedVariable

    found = [variable for variable in ancestors(outputs) if isinstance(variable, TensorSharedVariable)]
    names = [variable.name for variable in found]
    if None in names or len(set(names)) < len(names):
        return None
    return dict(zip(names, found, strict=True))


def weighted_moments(data: Data) -> tuple[np.ndarray, np.ndarray]:
    """Frequency-weighted mean and (biased) variance of each feature of ``data``, shapes (d,) and (d,)."""
    weights = data.frequency
    center = weights @ data.values / weights.sum()
    return center, weights @ (data.values - center) ** 2 / weights.sum()


def lifted_weights(weights, min_weight: float = 1e-8) -> np.ndarray:
    """Weights lifted to at least ``min_weight`` and renormalised, so that a start is inside the simplex."""
    lifted = np.maximum(np.asarray(weights, dtype=float), min_weight)
    return lifted / lifted.sum()


def parameter_of(free_name: str) -> str:
    """The parameter a free variable carries (``mu_std`` -> ``mu``; ``weights`` -> ``weights``)."""
    return free_name[:-len(_STANDARDISED)] if free_name.endswith(_STANDARDISED) else free_name
