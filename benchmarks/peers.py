"""The peer's side of the PyMC benchmarks: the same posterior as mixflow's, written the usual PyMC way, and
the alignment of its draws to mixflow's labelling.

- Old Faithful (full covariance): ``pm.Mixture`` of ``pm.MvNormal`` components with Wishart precisions
  (so covariances are Inverse-Wishart, as in mixflow's prior).
- 1-D: ``pm.NormalMixture`` with a Normal-Inverse-Gamma prior and the means ordered, started at spread data
  quantiles (what a competent PyMC user writes to break the components' symmetry).
"""

from functools import partial

import numpy as np
import pymc as pm
import pytensor.tensor as pt

import mixflow
from mixflow.data import validate_data
from mixflow.families.gaussian.pymc import standardization
from mixflow.families.relabel import align, gaussian_signature


def faithful_model(x, prior, k=2, mu_initval=None):
    """Full-covariance Gaussian mixture with Wishart precisions; ``mu_initval`` (k, d) sets the start."""
    d = x.shape[1]
    with pm.Model(coords={"component": range(k), "feature": range(d), "feature_": range(d)}) as model:
        weights = pm.Dirichlet("weights", a=prior.concentration, dims="component")
        precision = pm.Wishart("precision", nu=int(prior.dof), V=np.linalg.inv(prior.scale),
                               dims=("component", "feature", "feature_"))
        # (tau=precision would be the shorter spelling, but PyMC 6.4 gets the batched logp wrong with a
        # Wishart-distributed tau: a (K, K, d) array instead of (K,); cov= is right)
        covariance = pm.Deterministic("covariance", pt.linalg.inv(precision),
                                      dims=("component", "feature", "feature_"))
        mu = pm.MvNormal("mu", mu=prior.mean, cov=covariance / prior.shrinkage, dims=("component", "feature"),
                         initval=mu_initval)
        components = [pm.MvNormal.dist(mu=mu[j], cov=covariance[j]) for j in range(k)]
        pm.Mixture("x", w=weights, comp_dists=components, observed=x)
    return model


def ordered_1d_model(x, prior, k):
    """1-D Gaussian mixture, Normal-Inverse-Gamma prior, ordered means started at the data's k quantiles."""
    x = np.asarray(x, dtype=float).reshape(-1)
    with pm.Model(coords={"component": range(k)}) as model:
        weights = pm.Dirichlet("weights", a=prior.concentration, dims="component")
        variance = pm.InverseGamma("variance", alpha=prior.dof / 2, beta=float(prior.scale[0]) / 2, dims="component")
        pm.Normal("mu", mu=float(prior.mean[0]), sigma=pt.sqrt(variance / prior.shrinkage), dims="component",
                  transform=pm.distributions.transforms.ordered, initval=np.quantile(x, (np.arange(k) + 0.5) / k))
        pm.NormalMixture("x", w=weights, mu=model["mu"], sigma=pt.sqrt(variance), observed=x)
    return model


def aligned_draws(model, x, values: dict, seed) -> tuple[dict, int]:
    """The peer's draws ``{name: (chain, draw, ...)}`` in mixflow's parameter shapes, relabelled to the MAP-EM
    labelling; returns them and the number of draws whose labels were permuted."""
    data = validate_data(x)
    dims = model.parameter_dims(data.features)
    raw = {}
    for name in dims:
        value = np.asarray(values[name], dtype=float)
        if data.n_features == 1 and name != "weights" and value.ndim == 3:  # (chain, draw, component)
            value = value[..., None]
        raw[name] = (("chain", "draw", *dims[name]), value)
    tree = mixflow.fit(model, x, method="map", random_seed=seed)  # the labelling to align to
    reference = {name: tree["em/estimate"][name].values for name in tree["em/estimate"].data_vars}
    signature = partial(gaussian_signature, data_scale=standardization(model, data).scale)
    aligned, permutations = align(raw, reference, signature)
    switched = int(np.any(permutations != np.arange(model.n_components), axis=-1).sum())
    return {name: value for name, (_, value) in aligned.items()}, switched
