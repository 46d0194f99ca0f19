"""NumPyro's side of the MCMC benchmark: the posterior mixflow's PyMC model defines, written in NumPyro.

Same posterior and same parametrisation: the sampler sees the same unconstrained coordinates as mixflow's
PyMC model (PyMC's simplex transform for the weights, PyMC's ``CholeskyCovTransform`` for full
covariances, the log for variances, the means as they are), so the two NUTS implementations explore the
same density on the same space. The sites are named after PyMC's value variables; the unconstrained sites
are ``ImproperUniform`` reals whose prior and Jacobian enter through ``numpyro.factor``. The data are
standardised exactly as mixflow does (:func:`mixflow.families.gaussian.pymc.standardization`), with the
prior mapped into z units, and the likelihood carries the same constant Jacobian of the standardisation.

:func:`check_log_density` evaluates both log densities (Jacobians included) at random unconstrained points
and returns the largest relative difference.

Importing this module imports JAX: the caller sets the number of host devices first (see
``numpyro.set_host_device_count``).
"""

import numpy as np
import numpyro
import numpyro.distributions as dist
from jax import numpy as jnp
from jax.scipy.linalg import solve_triangular
from jax.scipy.special import logsumexp, multigammaln

from mixflow.families.gaussian.pymc import standardization

numpyro.enable_x64()  # float64 like PyMC, so that the densities agree to rounding

LOG_2PI = float(np.log(2 * np.pi))


def model_inputs(model, data, prior) -> dict:
    """Data in z units and the prior's hyperparameters in z units, as mixflow's PyMC model builds them."""
    std = standardization(model, data)
    if model.covariance == "full":
        unit = np.outer(std.scale, std.scale)
    elif model.covariance == "diag":
        unit = std.scale**2
    else:
        raise NotImplementedError(f"the NumPyro peer covers 'full' and 'diag', got {model.covariance!r}")
    return {"z": (data.values - std.center) / std.scale, "frequency": data.frequency, "k": model.n_components,
            "covariance": model.covariance, "center": std.center, "scale": std.scale, "unit": unit,
            "mean": (prior.mean - std.center) / std.scale, "scale_z": np.asarray(prior.scale, float) / unit,
            "dof": float(prior.dof), "shrinkage": float(prior.shrinkage),
            "concentration": np.asarray(prior.concentration, float), "offset": -float(np.log(std.scale).sum())}


def simplex(free):
    """PyMC's ``SimplexTransform``: (K-1,) reals -> weights (K,), and the log-Jacobian."""
    full = jnp.concatenate([free, -jnp.sum(free, keepdims=True)])
    weights = jnp.exp(full - logsumexp(full))
    n = free.shape[-1] + 1
    total = jnp.sum(free)
    log_jac = jnp.log(n) + n * total - n * logsumexp(jnp.concatenate([free + total, jnp.zeros(1)]))
    return weights, log_jac


def cholesky_cov(free, d: int):
    """PyMC's ``CholeskyCovTransform``: (..., d(d+1)/2) reals (row-major lower triangle, log diagonal) ->
    the Cholesky factor L (..., d, d) of the SPD matrix L L', and the log-Jacobian of free -> L L'."""
    rows, cols = np.tril_indices(d)
    diagonal = rows == cols
    values = jnp.where(diagonal, jnp.exp(free), free)
    factor = jnp.zeros((*free.shape[:-1], d, d)).at[..., rows, cols].set(values)
    powers = np.array([d - i + 1 for i in rows[diagonal]], dtype=float)  # (n - k + 2) for k = i + 1
    log_jac = d * np.log(2.0) + jnp.sum(free[..., diagonal] * powers, axis=-1)
    return factor, log_jac


def inverse_wishart_logp(factor, dof: float, scale_chol):
    """log InverseWishart(Sigma | dof, scale) with Sigma = factor factor' (batched over leading axes)."""
    d = scale_chol.shape[-1]
    constant = -0.5 * dof * d * np.log(2.0) - multigammaln(dof / 2.0, d)
    log_det = 2.0 * jnp.sum(jnp.log(jnp.diagonal(factor, axis1=-2, axis2=-1)), axis=-1)
    log_det_scale = 2.0 * np.sum(np.log(np.diag(scale_chol)))
    trace = jnp.sum(solve_triangular(factor, jnp.broadcast_to(scale_chol, factor.shape), lower=True) ** 2,
                    axis=(-2, -1))
    return constant + 0.5 * (dof * log_det_scale - (dof + d + 1) * log_det - trace)


def mixture_model(inputs: dict):
    """The NumPyro model: mixflow's Normal-Inverse-Wishart ("full") or Normal-Inverse-Gamma ("diag") mixture."""
    k, z = inputs["k"], inputs["z"]
    d = z.shape[1]
    free_weights = numpyro.sample("weights_simplex__", dist.ImproperUniform(dist.constraints.real_vector, (),
                                                                           (k - 1,)))
    weights, log_jac = simplex(free_weights)
    numpyro.factor("weights_prior", dist.Dirichlet(inputs["concentration"]).log_prob(weights) + log_jac)
    kappa = inputs["shrinkage"]
    if inputs["covariance"] == "full":
        free_cov = numpyro.sample("covariance_std_cholesky-cov__",
                                  dist.ImproperUniform(dist.constraints.real_vector, (k,), (d * (d + 1) // 2,)))
        factor, log_jac = cholesky_cov(free_cov, d)
        numpyro.factor("covariance_prior", jnp.sum(inverse_wishart_logp(factor, inputs["dof"],
                                                                        np.linalg.cholesky(inputs["scale_z"]))
                                                   + log_jac))
        mu = numpyro.sample("mu_std", dist.MultivariateNormal(inputs["mean"], scale_tril=factor / np.sqrt(kappa)))
        residual = z[:, None, :] - mu[None]  # (n, K, d)
        solved = solve_triangular(factor[None], residual[..., None], lower=True)[..., 0]
        log_det = 2.0 * jnp.sum(jnp.log(jnp.diagonal(factor, axis1=-2, axis2=-1)), axis=-1)
        log_density = -0.5 * (jnp.sum(solved**2, axis=-1) + log_det + d * LOG_2PI)
        dispersion = factor @ jnp.swapaxes(factor, -1, -2)
    else:
        free_var = numpyro.sample("variance_std_log__", dist.ImproperUniform(dist.constraints.real, (k, d), ()))
        variance = jnp.exp(free_var)
        numpyro.factor("variance_prior", jnp.sum(dist.InverseGamma(inputs["dof"] / 2.0, inputs["scale_z"] / 2.0)
                                                 .log_prob(variance) + free_var))
        mu = numpyro.sample("mu_std", dist.Normal(inputs["mean"], jnp.sqrt(variance / kappa)))
        log_density = jnp.sum(dist.Normal(mu[None], jnp.sqrt(variance)[None]).log_prob(z[:, None, :]), axis=-1)
        dispersion = variance
    log_px = logsumexp(jnp.log(weights) + log_density, axis=1) + inputs["offset"]
    numpyro.factor("log_likelihood", jnp.sum(inputs["frequency"] * log_px))
    numpyro.deterministic("weights", weights)
    numpyro.deterministic("mu", inputs["center"] + inputs["scale"] * mu)
    numpyro.deterministic("covariance" if inputs["covariance"] == "full" else "variance", dispersion * inputs["unit"])


def free_point(inputs: dict, params: dict) -> dict:
    """The unconstrained sites at parameters in data units (the inverse of the model's transforms)."""
    log_w = np.log(np.maximum(params["weights"], 1e-8))
    log_w = log_w - np.log(np.exp(log_w).sum())
    point = {"weights_simplex__": (log_w - log_w.mean())[:-1],
             "mu_std": (params["mu"] - inputs["center"]) / inputs["scale"]}
    if inputs["covariance"] == "full":
        factor = np.linalg.cholesky(params["covariance"] / inputs["unit"])
        rows, cols = np.tril_indices(factor.shape[-1])
        packed = factor[:, rows, cols]
        point["covariance_std_cholesky-cov__"] = np.where(rows == cols, np.log(np.abs(packed)), packed)
    else:
        point["variance_std_log__"] = np.log(params["variance"] / inputs["unit"])
    return point


def check_log_density(pymc_model, inputs: dict, n_points: int = 5, seed: int = 0) -> float:
    """Largest relative difference of NumPyro's and PyMC's log densities (Jacobians included) at
    ``n_points`` random unconstrained points (standard normal in every coordinate)."""
    import jax
    from numpyro.infer.util import potential_energy

    logp = pymc_model.compile_logp(jacobian=True)
    energy = jax.jit(lambda params: potential_energy(mixture_model, (inputs,), {}, params))
    names = [pymc_model.rvs_to_values[rv].name for rv in pymc_model.free_RVs]
    shapes = {name: np.shape(value) for name, value in pymc_model.initial_point().items()}
    rng = np.random.default_rng(seed)
    worst = 0.0
    for _ in range(n_points):
        point = {name: rng.standard_normal(shapes[name]) for name in names}
        theirs = float(logp(point))
        ours = -float(energy({name: jnp.asarray(value) for name, value in point.items()}))
        worst = max(worst, abs(ours - theirs) / abs(theirs))
    return worst
