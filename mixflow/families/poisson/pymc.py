"""The PyMC form of a Poisson mixture (:class:`mixflow.families.poisson.model.PoissonMixture`).

The declared model, term for term: ``weights`` ~ Dirichlet(concentration), ``rate_k`` ~ Gamma(shape, rate)
independently (the prior EM's MAP step uses, :meth:`PoissonMixture.resolve_prior`), and the counts'
mixture likelihood ``sum_n w_n log sum_k pi_k Poisson(y_n | rate_k)`` with ``log(y!)`` included, as a
``pm.Potential`` named ``log_likelihood``. Without the Jacobians of the transforms
(``compile_logp(jacobian=False)``) the density is exactly the EM MAP objective (no constant at all: the
rates are sampled in data units).

What NUTS sees: the weights through PyMC's simplex transform and the rates through its log transform, so
the sampler moves on log rates, where the posterior of a rate estimated from N_k counts is close to normal
with sd ``1 / sqrt(N_k rate_k)``. A standardisation would only shift log rates by a constant, which the
sampler's adaptation absorbs, so there is none.

Labels (:func:`label_signature`): ``2 sqrt(rate)``, the variance-stabilising transform of a Poisson count
(a component's replicate counts have sd about 1 on that scale), and ``sqrt(weight)``.
"""

import numpy as np

from mixflow.data import Data
from mixflow.families.pymc_parts import (
    check_inputs,
    data_rows,
    dirichlet_weights,
    graph_input,
    lifted_weights,
    mixture_potential,
)
from mixflow.families.relabel import Signature

__all__ = ["build_model", "free_values", "label_signature", "poisson_signature"]


def build_model(model, data: Data, prior=None, *, minibatch_size: int | None = None):
    """Build the PyMC model of a Poisson mixture for ``data``, with exactly the declared prior.

    Parameters
    ----------
    model : PoissonMixture
    data : mixflow.data.Data
        Validated data: one column of non-negative integer counts; frequency weights count each row.
    prior : ResolvedPoissonPrior, optional
        By default ``model.resolve_prior(model.prepare(data))``, the one EM uses.
    minibatch_size : int, optional
        Rows per minibatch (ADVI); None uses every row.

    Returns
    -------
    pymc.Model
        Coords ``component``. Free variables ``weights`` and ``rate`` (dims ``component``, both in data
        units); the potential ``log_likelihood``.
    """
    import pymc as pm
    import pytensor.tensor as pt

    check_inputs(data, prior, minibatch_size, ("concentration", "shape", "rate"))
    prepared = model.prepare(data)
    if prior is None:
        prior = model.resolve_prior(prepared)
    arrays = (prepared.arrays["y"], prepared.arrays["saturated"])
    with pm.Model(coords={"component": np.arange(model.n_components)}) as pymc_model:
        weights = dirichlet_weights(prior.concentration)
        rate = pm.Gamma("rate", alpha=graph_input("prior_shape", prior.shape),
                        beta=graph_input("prior_rate", prior.rate), dims="component")
        (counts, saturated), row_weights, factor = data_rows(arrays, prepared.weights, minibatch_size)
        # the saturated term less half the unit deviance, as the EM's log_density (mixflow.families.poisson.model)
        # without its series near the count: log1p's rounding there is about 1e-16 of |rate - count| per row,
        # where y log(rate) - rate - log(y!) loses about 1e-16 of y log y (every digit for counts near 1e15); away
        # from the count log(rate / y), since (rate - y) / y rounds to -1 for a rate below 1e-16 of the count (log1p
        # -inf, a NaN gradient), and log1p's argument is held at 0 there so that its branch's gradient stays finite
        counts = counts[:, None]
        floored = pt.maximum(counts, 1.0)
        difference = rate[None, :] - counts
        relative = difference / floored
        near = pt.abs(relative) <= 0.5
        ratio_log = pt.switch(near, pt.log1p(pt.switch(near, relative, 0.0)), pt.log(rate[None, :] / floored))
        log_density = counts * ratio_log - difference + saturated[:, None]
        mixture_potential(weights, log_density, row_weights, factor)
    return pymc_model


def free_values(model, data: Data, params: dict, *, min_weight: float = 1e-8) -> dict:
    """Values of the free variables (``weights`` lifted inside the simplex, ``rate``) for ``params``.

    A rate of 0 (an EM component on the zero counts alone) is lifted to ``min_weight`` times the larger of 1 and
    the mean count: the sampler's rate is positive (its log is the unconstrained value).
    """
    counts = data.values[:, 0]
    scale = max(1.0, float(data.frequency @ counts / data.frequency.sum()))
    return {"weights": lifted_weights(params["weights"], min_weight),
            "rate": np.maximum(np.asarray(params["rate"], dtype=float), min_weight * scale)}


def poisson_signature(params: dict) -> np.ndarray:
    """``2 sqrt(rate)`` and ``sqrt(weights)`` per component, shape (..., K, 2)."""
    rate = np.asarray(params["rate"], dtype=float)
    weights = np.asarray(params["weights"], dtype=float)
    return np.stack([2.0 * np.sqrt(rate), np.sqrt(weights)], axis=-1)


def label_signature(model, data: Data) -> Signature:
    """The signature of :func:`poisson_signature` (it needs nothing from the data)."""
    return Signature(poisson_signature, "squared distance of (2 sqrt(rate), sqrt(weight))")
