"""The Gaussian family: declaration, conjugate prior and the dispatch to its numerics."""

from dataclasses import asdict, dataclass, field
from typing import ClassVar

import numpy as np
from scipy import stats as st

from mixflow.data import Data
from mixflow.families import sampling
from mixflow.families.base import MixtureModel, Prepared, register_family
from mixflow.families.checks import check_concentration, check_n_components, check_parameter_dict, prior_from_argument
from mixflow.families.gaussian import numerics as gn

__all__ = ["GaussianMixture", "GaussianPrior", "ResolvedGaussianPrior"]

_RELATIVE_FLOOR = 1e-6


def _as_tuple(value):
    """Arrays and lists to (nested) tuples so the declaration stays hashable and JSON-friendly."""
    if value is None or np.isscalar(value):
        return None if value is None else float(value)
    array = np.asarray(value, dtype=float)
    return tuple(map(tuple, array)) if array.ndim == 2 else tuple(array.tolist())


@dataclass(frozen=True)
class GaussianPrior:
    """Conjugate prior of a Gaussian mixture, shared by MAP-EM, NUTS and ADVI.

    - weights ~ Dirichlet(weights_concentration);
    - "full": Sigma_k ~ InverseWishart(dof, scale), mu_k | Sigma_k ~ Normal(mean, Sigma_k / shrinkage);
    - "tied": one Sigma ~ InverseWishart(dof, scale), mu_k | Sigma ~ Normal(mean, Sigma / shrinkage);
    - "diag": sigma2_kj ~ InverseGamma(dof / 2, scale_j / 2), mu_kj | sigma2_kj ~ Normal(mean_j, sigma2_kj / shrinkage);
    - "spherical": sigma2_k ~ InverseGamma(dof / 2, scale / 2), mu_k | sigma2_k ~ Normal(mean, sigma2_k I / shrinkage).

    Defaults (``None``) are filled from the data at fit time, after mclust's ``defaultPrior`` (Fraley &
    Raftery 2007): ``mean`` the data mean, ``shrinkage`` 0.01, ``dof`` d + 2, and ``scale`` the data
    covariance divided by K^(2/d) (its diagonal for "diag", the mean of its diagonal for "spherical").
    ``weights_concentration`` 1 is a flat Dirichlet (MAP weights equal the MLE ones).

    Parameters
    ----------
    weights_concentration : float or sequence of float, default 1.0
    mean : sequence of float of length d, optional
    shrinkage : float, default 0.01
    dof : float, optional
        Degrees of freedom; must exceed d - 1.
    scale : float, sequence of length d, or d x d nested sequence, optional

    """

    weights_concentration: float | tuple = 1.0
    mean: tuple | None = None
    shrinkage: float = 0.01
    dof: float | None = None
    scale: float | tuple | None = None

    def __post_init__(self):
        check_concentration(self.weights_concentration)
        if not (np.isfinite(self.shrinkage) and self.shrinkage > 0):
            raise ValueError(f"shrinkage: expected a positive number, got {self.shrinkage!r}")
        if self.dof is not None and not (np.isfinite(self.dof) and self.dof > 0):
            raise ValueError(f"dof: expected a positive number, got {self.dof!r}")
        for name in ("weights_concentration", "mean", "scale"):
            object.__setattr__(self, name, _as_tuple(getattr(self, name)))
        object.__setattr__(self, "shrinkage", float(self.shrinkage))
        object.__setattr__(self, "dof", None if self.dof is None else float(self.dof))

    def to_dict(self) -> dict:
        """Plain dict of the hyperparameters (None where a data-scaled default applies)."""
        return asdict(self)


@dataclass(frozen=True)
class ResolvedGaussianPrior:
    """A :class:`GaussianPrior` with every default filled in from the data (numpy arrays)."""

    concentration: np.ndarray
    mean: np.ndarray
    shrinkage: float
    dof: float
    scale: np.ndarray

    def to_dict(self) -> dict:
        """JSON-friendly dict of the numbers actually used."""
        return {k: np.asarray(v).tolist() if isinstance(v, np.ndarray) else v for k, v in asdict(self).items()}


@register_family("gaussian")
@dataclass(frozen=True)
class GaussianMixture(MixtureModel):
    """A finite mixture of multivariate normal distributions.

    Parameters
    ----------
    n_components : int
        Number of components K >= 1.
    covariance : {"full", "tied", "diag", "spherical"}, default "full"
        Covariance structure, as in scikit-learn and mclust (VVV, EEE, VVI, VII).
    prior : "default", GaussianPrior or dict, default "default"
        The prior used by MAP-EM, MCMC and ADVI (see :class:`GaussianPrior`).

    Examples
    --------
    >>> import mixflow
    >>> model = mixflow.GaussianMixture(2, covariance="full")
    >>> tree = mixflow.fit(model, mixflow.load_dataset("faithful"), random_seed=1)

    """

    n_components: int
    pymc_module: ClassVar[str] = "mixflow.families.gaussian.pymc"  # the PyMC form (MCMC, ADVI), see MixtureModel
    workflow_keys: ClassVar[tuple] = ("covariance",)
    covariance: str = "full"
    prior: GaussianPrior | str | dict = field(default="default")

    def __post_init__(self):
        object.__setattr__(self, "n_components", check_n_components(self.n_components))
        if self.covariance not in gn.COVARIANCE_TYPES:
            raise ValueError(f"covariance: expected one of {list(gn.COVARIANCE_TYPES)}, got {self.covariance!r}")
        object.__setattr__(self, "prior", prior_from_argument(self.prior, GaussianPrior, self.n_components))

    # -- declaration -----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The declaration as a plain dict."""
        return {"n_components": self.n_components, "covariance": self.covariance, "prior": self.prior.to_dict()}

    @classmethod
    def from_dict(cls, spec: dict) -> "GaussianMixture":
        """Inverse of :meth:`to_dict`."""
        return cls(spec["n_components"], covariance=spec.get("covariance", "full"),
                   prior=GaussianPrior(**spec.get("prior", {})))

    def covariance_name(self) -> str:
        """Name of the dispersion parameter: ``covariance`` (full, tied) or ``variance``."""
        return "covariance" if self.covariance in ("full", "tied") else "variance"

    def parameter_dims(self, features=None) -> dict:
        """Dims of each parameter, shared by every method's output."""
        dispersion = {
            "full": ("component", "feature", "feature_"),
            "tied": ("feature", "feature_"),
            "diag": ("component", "feature"),
            "spherical": ("component",),
        }[self.covariance]
        return {"weights": ("component",), "mu": ("component", "feature"), self.covariance_name(): dispersion}

    def n_parameters(self, n_features: int, n_components: int | None = None) -> int:
        """Number of free parameters (for BIC, AIC, ICL), optionally after trimming to fewer components."""
        k, d = n_components or self.n_components, n_features
        dispersion = {"full": k * d * (d + 1) // 2, "tied": d * (d + 1) // 2, "diag": k * d, "spherical": k}
        return (k - 1) + k * d + dispersion[self.covariance]

    def collapse_description(self, components: list[int]) -> str:
        """The tied covariance is one matrix; otherwise name the components."""
        if self.covariance == "tied":
            return "the tied covariance collapsed (singular): a floor of 1e-6 x the data variance was added"
        return super().collapse_description(components)

    def sort_key(self, params: dict) -> np.ndarray:
        """Canonical order: ascending first coordinate of ``mu``."""
        return params["mu"][:, 0]

    # -- data and prior --------------------------------------------------------------------------------
    def prepare(self, data) -> Prepared:
        """Centre the data at its weighted mean; the floor is 1e-6 of each feature's variance."""
        weights = data.frequency
        center = weights @ data.values / weights.sum()
        z = data.values - center
        variance = weights @ (z * z) / weights.sum()
        floor = _RELATIVE_FLOOR * np.where(variance > 0, variance, 1.0)
        return Prepared({"z": z}, weights, {"center": center, "floor": floor, "variance": variance})

    def resolve_prior(self, prepared: Prepared) -> ResolvedGaussianPrior:
        """Fill the prior's defaults from the data (mclust's default conjugate prior)."""
        prior, k = self.prior, self.n_components
        z, w = prepared.arrays["z"], prepared.weights
        d = z.shape[1]
        data_cov = (z * w[:, None]).T @ z / w.sum()
        constant = np.diag(data_cov) == 0  # a constant feature: unit scale rather than a singular prior
        data_cov[constant, constant] = 1.0
        default_scale = {
            "full": data_cov, "tied": data_cov, "diag": np.diag(data_cov).copy(),
            "spherical": np.asarray(np.trace(data_cov) / d),
        }[self.covariance] / k ** (2.0 / d)
        scale = default_scale if prior.scale is None else np.asarray(prior.scale, dtype=float)
        mean = prepared.constants["center"] if prior.mean is None else np.asarray(prior.mean, dtype=float)
        dof = float(d + 2) if prior.dof is None else prior.dof
        _check_resolved(self.covariance, mean, scale, dof, d)
        concentration = np.broadcast_to(np.asarray(prior.weights_concentration, dtype=float), (k,)).copy()
        return ResolvedGaussianPrior(concentration, mean, prior.shrinkage, dof, scale)

    def init_points(self, prepared: Prepared) -> np.ndarray:
        """Points used to seed k-means++ (the centred data)."""
        return prepared.arrays["z"]

    # -- EM steps --------------------------------------------------------------------------------------
    def e_step_constants(self, params: dict, prepared: Prepared) -> dict:
        """Per-iteration constants of the E-step (precision factors, offsets)."""
        return gn.e_step_constants(self.covariance, params, prepared.constants["center"])

    def log_density(self, constants: dict, chunk: Prepared) -> tuple[np.ndarray, np.ndarray]:
        """Per-component log densities (m, K) of a chunk and its second-order features.

        For "full" and "tied" the features are a view of a buffer kept in ``constants``, overwritten by
        the next call with the same constants.
        """
        return gn.log_density(self.covariance, constants, chunk.arrays["z"])

    def chunk_features(self, chunk: Prepared) -> np.ndarray:
        """Second-order features of a chunk (what the M-step statistics need)."""
        return gn.chunk_features(self.covariance, chunk.arrays["z"])

    def chunk_width(self, n_features: int) -> int:
        """Columns of the widest per-row temporary (sizes the chunks)."""
        d = n_features
        return (d * (d + 1) // 2 if self.covariance in ("full", "tied") else d) + 2 * self.n_components + d

    def statistics(self, weighted_resp: np.ndarray, chunk: Prepared, features: np.ndarray) -> dict:
        """Sufficient statistics of a chunk (sum them over chunks)."""
        return gn.statistics(self.covariance, weighted_resp, chunk.arrays["z"], features)

    def m_step(self, counts: np.ndarray, stats: dict, prepared: Prepared, prior) -> tuple[dict, list[int]]:
        """Component parameters (MLE if ``prior`` is None, else MAP) and the components floored."""
        params = gn.m_step(self.covariance, counts, stats, prepared.constants["center"], prior)
        return gn.floor_variances(self.covariance, params, prepared.constants["floor"])

    def log_prior(self, params: dict, prior: ResolvedGaussianPrior) -> float:
        """Log density of the component parameters under the prior (the weights' Dirichlet excluded)."""
        return _log_prior(self.covariance, params, prior)

    @classmethod
    def label_tag(cls, options: dict) -> str:
        """The covariance type (``full`` by default)."""
        return options.get("covariance", "full")

    def simulate_data(self, params: dict, data: Data, rng: np.random.Generator) -> Data:
        """As many points as the data's total weight, unweighted."""
        x, _ = sampling.gaussian_points(params, sampling.n_units(data), rng)
        return Data(values=x, features=data.features, obs=np.arange(x.shape[0]), weights=None)

    def check_parameters(self, params: dict, n_features: int, name: str = "init") -> dict:
        """Validate user-given parameters (shapes, finiteness, positive definiteness); return copies."""
        return _check_parameters(self, params, n_features, name)


def _check_resolved(covariance, mean, scale, dof, d):
    if mean.shape != (d,):
        raise ValueError(f"prior.mean: expected {d} values (one per feature), got shape {mean.shape}")
    expected = {"full": (d, d), "tied": (d, d), "diag": (d,), "spherical": ()}[covariance]
    if scale.shape != expected:
        raise ValueError(f"prior.scale: expected shape {expected} for covariance={covariance!r}, got {scale.shape}")
    if dof <= d - 1:
        raise ValueError(f"prior.dof: expected more than d - 1 = {d - 1} degrees of freedom, got {dof}")
    positive = np.linalg.eigvalsh(scale).min() > 0 if scale.ndim == 2 else (scale > 0).all()
    if not positive:
        raise ValueError("prior.scale: expected a positive definite scale (positive values), got "
                         f"{scale.tolist()}")


def _log_prior(covariance: str, params: dict, prior: ResolvedGaussianPrior) -> float:
    kappa, dof, mean, scale = prior.shrinkage, prior.dof, prior.mean, prior.scale
    mu = params["mu"]
    if covariance == "full":
        return float(sum(
            st.invwishart.logpdf(cov, df=dof, scale=scale) + st.multivariate_normal.logpdf(m, mean, cov / kappa)
            for m, cov in zip(mu, params["covariance"], strict=True)
        ))
    if covariance == "tied":
        cov = params["covariance"]
        return float(st.invwishart.logpdf(cov, df=dof, scale=scale)
                     + st.multivariate_normal.logpdf(mu, mean, cov / kappa).sum())
    variance = params["variance"]
    if covariance == "diag":
        return float(st.invgamma.logpdf(variance, dof / 2, scale=scale / 2).sum()
                     + st.norm.logpdf(mu, mean, np.sqrt(variance / kappa)).sum())
    return float(st.invgamma.logpdf(variance, dof / 2, scale=scale / 2).sum()
                 + st.norm.logpdf(mu, mean, np.sqrt(variance / kappa)[:, None]).sum())


def _check_parameters(model: GaussianMixture, params: dict, d: int, name: str) -> dict:
    k = model.n_components
    dispersion = model.covariance_name()
    shapes = {"weights": (k,), "mu": (k, d),
              dispersion: {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[model.covariance]}
    out = check_parameter_dict(params, shapes, name)
    dispersion_value = out[dispersion]
    if dispersion == "covariance":
        matrices = dispersion_value.reshape(-1, d, d)
        if not all(np.allclose(m, m.T) and np.linalg.eigvalsh(m)[0] > 0 for m in matrices):
            raise ValueError(f"{name}['covariance']: expected symmetric positive definite matrices")
    elif (dispersion_value <= 0).any():
        raise ValueError(f"{name}['variance']: expected positive variances, got {dispersion_value.tolist()}")
    return out
