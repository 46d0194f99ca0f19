"""Soft k-means: a Gaussian mixture whose covariances are all ``sigma^2 I``, with sigma^2 fixed and known.

Fitted by EM like any family.

Its responsibilities are the soft assignments ``r_nk ∝ pi_k exp(-||x_n - mu_k||^2 / (2 sigma^2))`` and its
M-step moves each mean to its responsibility-weighted average; as sigma^2 -> 0 they become Lloyd's hard
assignments and means (:func:`mixflow.kmeans`).
"""

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from mixflow.data import Data
from mixflow.errors import InputError
from mixflow.families import sampling
from mixflow.families.base import MixtureModel, Prepared, batched_products, register_family
from mixflow.families.checks import check_concentration, check_n_components, check_parameter_dict, prior_from_argument
from mixflow.families.gaussian import numerics as gn
from mixflow.families.scaling import from_moments, standardise

__all__ = ["ResolvedSoftKMeansPrior", "SoftKMeans", "SoftKMeansPrior"]


@dataclass(frozen=True)
class SoftKMeansPrior:
    """Conjugate prior of :class:`SoftKMeans`: weights ~ Dirichlet, mu_k ~ Normal(mean, variance I / shrinkage).

    ``mean`` defaults to the weighted data mean and ``shrinkage`` to 0.01 (worth a hundredth of an
    observation), as in :class:`mixflow.GaussianPrior`; the variance is the model's fixed one.
    """

    weights_concentration: float | tuple = 1.0
    mean: tuple | None = None
    shrinkage: float = 0.01

    def __post_init__(self):
        object.__setattr__(self, "weights_concentration", check_concentration(self.weights_concentration))
        if isinstance(self.shrinkage, bool) or not isinstance(self.shrinkage, int | float) \
                or not (np.isfinite(self.shrinkage) and self.shrinkage > 0):
            raise InputError(f"shrinkage: expected a positive number, got {self.shrinkage!r}")
        object.__setattr__(self, "shrinkage", float(self.shrinkage))
        if self.mean is not None:
            object.__setattr__(self, "mean", tuple(np.atleast_1d(np.asarray(self.mean, dtype=float)).tolist()))

    def to_dict(self) -> dict:
        """Plain dict of the hyperparameters (None where a data-scaled default applies)."""
        return {"weights_concentration": self.weights_concentration, "mean": self.mean, "shrinkage": self.shrinkage}


@dataclass(frozen=True)
class ResolvedSoftKMeansPrior:
    """A :class:`SoftKMeansPrior` with its defaults filled in.

    In data units ``variance`` and ``log_scale`` are None (the model's variance applies); in the working
    units EM runs in (:meth:`SoftKMeans.working_prior`) they hold the fixed variance in those units and
    the log scale of the standardisation, so that :meth:`SoftKMeans.log_prior` is the density of the
    data-unit means.
    """

    concentration: np.ndarray
    mean: np.ndarray
    shrinkage: float
    variance: float | None = None
    log_scale: np.ndarray | None = None

    def to_dict(self) -> dict:
        """JSON-friendly dict of the numbers actually used."""
        return {"concentration": self.concentration.tolist(), "mean": self.mean.tolist(), "shrinkage": self.shrinkage}


@register_family("soft_kmeans")
@dataclass(frozen=True)
class SoftKMeans(MixtureModel):
    """Soft k-means: a Gaussian mixture whose covariances are all ``variance * I``, with ``variance`` fixed.

    Parameters
    ----------
    n_components : int
        Number of components K >= 1.
    variance : float
        The known variance sigma^2 (data units squared) of every component and feature; ``1 / variance``
        is MacKay's stiffness beta. As it goes to 0, EM becomes Lloyd's k-means (see :func:`kmeans`).
    prior : "default", SoftKMeansPrior or dict, default "default"
        Prior of the means and weights for MAP-EM (see :class:`SoftKMeansPrior`).

    Notes
    -----
    Parameters ``weights`` (component) and ``mu`` (component, feature), as in
    :class:`mixflow.GaussianMixture`; the mixing weights are estimated. Components come in ascending
    order of the first coordinate of ``mu``.

    """

    n_components: int
    pymc_module: ClassVar[str] = "mixflow.families.softkmeans.pymc"  # the PyMC form (MCMC, ADVI), see MixtureModel
    workflow_keys: ClassVar[tuple] = ("variance",)
    prior_class: ClassVar[type] = SoftKMeansPrior
    variance: float
    prior: SoftKMeansPrior | str | dict = "default"

    def __post_init__(self):
        object.__setattr__(self, "n_components", check_n_components(self.n_components))
        if isinstance(self.variance, bool) or not isinstance(self.variance, int | float | np.floating) \
                or not (np.isfinite(self.variance) and self.variance > 0):
            raise InputError(f"variance: expected a positive number (the fixed sigma^2), got {self.variance!r}")
        object.__setattr__(self, "variance", float(self.variance))
        object.__setattr__(self, "prior", prior_from_argument(self.prior, self.prior_class, self.n_components))

    def to_dict(self) -> dict:
        """The declaration as a plain dict."""
        return {"n_components": self.n_components, "variance": self.variance, "prior": self.prior.to_dict()}

    @classmethod
    def from_dict(cls, spec: dict) -> "SoftKMeans":
        """Inverse of :meth:`to_dict`."""
        return cls(spec["n_components"], spec["variance"], prior=SoftKMeansPrior(**spec.get("prior", {})))

    def parameter_dims(self, features=None) -> dict:
        """``weights`` (component) and ``mu`` (component, feature)."""
        return {"weights": ("component",), "mu": ("component", "feature")}

    def n_parameters(self, n_features: int, n_components: int | None = None) -> int:
        """K - 1 weights and K d means (the variance is fixed)."""
        k = n_components or self.n_components
        return (k - 1) + k * n_features

    def sort_key(self, params: dict) -> np.ndarray:
        """Canonical order: ascending first coordinate of ``mu``."""
        return params["mu"][:, 0]

    def prepare(self, data) -> Prepared:
        """Standardise the data (weighted mean 0, one common scale, as the variance is the same for all features).

        EM works in these units, the fixed variance divided by the squared scale, whatever the data's
        magnitude; :meth:`to_data` maps the means back and :meth:`log_density` includes the Jacobian.
        """
        weights = data.frequency
        units = standardise(data.values, weights, common=True)
        scale = units.scale[0]
        with np.errstate(over="ignore", under="ignore"):
            variance = self.variance / scale / scale
        constants = {"center": units.center, "scale": units.scale, "log_scale": units.log_scale,
                     "working_center": np.zeros_like(units.center), "working_variance": variance}
        return Prepared({"z": units.working}, weights, constants)

    def chunked_constants(self, moments, features) -> dict:
        """:meth:`prepare`'s constants from the moments of chunked data."""
        units = from_moments(moments.magnitude, moments.unit_mean, moments.unit_sd, common=True, anchor=moments.anchor)
        scale = units.scale[0]
        with np.errstate(over="ignore", under="ignore"):
            variance = self.variance / scale / scale
        return {"center": units.center, "scale": units.scale, "log_scale": units.log_scale,
                "working_center": np.zeros_like(units.center), "working_variance": variance, "units": units}

    def prepare_rows(self, values: np.ndarray, weights: np.ndarray, rows: np.ndarray, constants: dict) -> Prepared:
        """The rows in the working units of the whole data (:meth:`chunked_constants`)."""
        return Prepared({"z": constants["units"].apply(values)}, weights, constants)

    def estimate_moments(self, params: dict):
        """The fitted mixture's mean and per-feature variance (the fixed variance within components)."""
        from mixflow.families.gaussian.model import _mixture_moments

        mu = np.asarray(params["mu"], dtype=float)
        return _mixture_moments(np.asarray(params["weights"], dtype=float), mu, np.full(mu.shape, self.variance))

    def resolve_prior(self, prepared: Prepared) -> ResolvedSoftKMeansPrior:
        """Fill the defaults: the prior mean is the weighted data mean (data units)."""
        d = prepared.constants["center"].size
        mean = prepared.constants["center"] if self.prior.mean is None else np.asarray(self.prior.mean)
        if mean.shape != (d,):
            raise InputError(f"prior.mean: expected {d} values (one per feature), got shape {mean.shape}")
        concentration = np.broadcast_to(np.asarray(self.prior.weights_concentration, dtype=float),
                                        (self.n_components,)).copy()
        return ResolvedSoftKMeansPrior(concentration, mean, self.prior.shrinkage)

    def working_prior(self, prepared: Prepared) -> ResolvedSoftKMeansPrior:
        """The prior in the working units of ``prepared`` (its mean standardised, the variance with it)."""
        prior, constants = self.resolve_prior(prepared), prepared.constants
        mean = (prior.mean - constants["center"]) / constants["scale"]
        return ResolvedSoftKMeansPrior(prior.concentration, mean, prior.shrinkage, constants["working_variance"],
                                       constants["log_scale"])

    def to_working(self, params: dict, prepared: Prepared) -> dict:
        """Means from data units to the working units of ``prepared``."""
        constants = prepared.constants
        return {**params, "mu": (np.asarray(params["mu"], dtype=float) - constants["center"]) / constants["scale"]}

    def to_data(self, params: dict, prepared: Prepared) -> dict:
        """Means from the working units of ``prepared`` to data units."""
        with np.errstate(over="ignore", under="ignore"):
            return {**params, "mu": params["mu"] * prepared.constants["scale"] + prepared.constants["center"]}

    def init_points(self, prepared: Prepared) -> np.ndarray:
        """The standardised data (one common scale: the geometry of the data)."""
        return prepared.arrays["z"]

    def e_step_constants(self, params: dict, prepared: Prepared) -> dict:
        """The spherical Gaussian constants with the fixed variance, and the Jacobian of the standardisation."""
        constants = prepared.constants
        spherical = {"mu": params["mu"], "variance": np.full(len(params["mu"]), constants["working_variance"])}
        out = gn.e_step_constants("spherical", spherical, constants["working_center"])
        out["offset"] = out["offset"] + 2.0 * constants["log_scale"].sum()
        return out

    def log_density(self, constants: dict, chunk: Prepared) -> tuple[np.ndarray, np.ndarray]:
        """Log N(x_n | mu_k, variance I), shape (m, K)."""
        return gn.log_density("spherical", constants, chunk.arrays["z"])

    def chunk_features(self, chunk: Prepared) -> None:
        """No second-order features are needed (the variance is fixed)."""
        return None

    def chunk_width(self, n_features: int) -> int:
        """Columns of the widest per-row temporary."""
        return 2 * self.n_components + n_features

    def stacks_components(self) -> bool:
        """Each component's steps stand alone (see :meth:`MixtureModel.stacks_components`)."""
        return True

    def statistics(self, weighted_resp: np.ndarray, chunk: Prepared, features) -> dict:
        """First moments per component (K, d)."""
        return {"first": (chunk.arrays["z"].T @ weighted_resp).T}

    def stacked_statistics(self, by_mixture: np.ndarray, chunk: Prepared, features) -> dict:
        """:meth:`statistics` of mixtures stacked, each mixture's product in one batched product."""
        return {"first": batched_products(chunk.arrays["z"], by_mixture)}

    def m_step(self, counts: np.ndarray, stats: dict, prepared: Prepared, prior) -> tuple[dict, list[int]]:
        """Responsibility-weighted means (MAP: shrunk towards the prior mean by ``shrinkage``), working units."""
        if prior is None:
            return {"mu": stats["first"] / counts[:, None]}, []
        kappa = prior.shrinkage
        return {"mu": (stats["first"] + kappa * prior.mean) / (counts + kappa)[:, None]}, []

    def log_prior(self, params: dict, prior: ResolvedSoftKMeansPrior) -> float:
        """Sum of log N(mu_k | mean, variance I / shrinkage) of the data-unit means.

        ``params`` and ``prior`` both in data units, or both in working units (:meth:`working_prior`).
        """
        variance = self.variance if prior.variance is None else prior.variance
        scale = variance / prior.shrinkage
        gaps = params["mu"] - prior.mean
        k, d = gaps.shape
        value = float(-0.5 * ((gaps * gaps).sum() / scale + k * d * (np.log(2 * np.pi * scale))))
        return value if prior.log_scale is None else value - k * float(prior.log_scale.sum())

    def plot_parameters(self, params: dict) -> dict:
        """The parameters with the fixed variance as a spherical ``variance`` per component."""
        return {**params, "variance": np.full(np.asarray(params["weights"]).size, self.variance)}

    def simulate_data(self, params: dict, data: Data, rng: np.random.Generator) -> Data:
        """As many points as the data's total weight, unweighted, with the fixed spherical variance."""
        spherical = {**params, "variance": np.full(np.asarray(params["weights"]).size, self.variance)}
        x, _ = sampling.gaussian_points(spherical, sampling.n_units(data), rng)
        return Data(values=x, features=data.features, obs=np.arange(x.shape[0]), weights=None)

    def simulate_draws(self, draws: dict, data: Data, rng: np.random.Generator) -> np.ndarray:
        """Every draw's replicate at once, with the fixed spherical variance."""
        spherical = {**draws, "variance": np.full(np.shape(draws["weights"]), self.variance)}
        return sampling.gaussian_replicates(spherical, data, rng)

    def sample_points(self, params: dict, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` points from the mixture (the fixed spherical variance) and their components."""
        spherical = {**params, "variance": np.full(np.asarray(params["weights"]).size, self.variance)}
        return sampling.gaussian_points(spherical, n, rng)

    def check_parameters(self, params: dict, n_features: int, name: str = "init") -> dict:
        """Validate user-given ``weights`` (K,) and ``mu`` (K, d); return copies."""
        return check_parameter_dict(params, {"weights": (self.n_components,),
                                             "mu": (self.n_components, n_features)}, name)
