"""The Gaussian family: declaration, conjugate prior and the dispatch to its numerics."""

from dataclasses import asdict, dataclass, field
from functools import cache
from typing import ClassVar

import numpy as np
from scipy import stats as st

from mixflow.data import Data
from mixflow.errors import InputError
from mixflow.families import sampling
from mixflow.families.base import (
    PRIOR_OUTWEIGHS,
    PRIOR_WORTH,
    SEPARATED_MARGIN,
    SEPARATED_QUANTILE,
    SEPARATED_RATIO,
    SEPARATED_SIZE,
    SMALL_GROUP_RATIO,
    SPURIOUS_RATIO,
    SPURIOUS_SIZE,
    MixtureModel,
    Prepared,
    batched_products,
    register_family,
    spurious_rule,
)
from mixflow.families.checks import check_concentration, check_n_components, check_parameter_dict, prior_from_argument
from mixflow.families.densities import (
    inverse_gamma_log_density,
    inverse_wishart_log_density,
    normal_log_density_of_factors,
)
from mixflow.families.gaussian import numerics as gn
from mixflow.families.gaussian import units as gu
from mixflow.families.scaling import from_moments, standardise
from mixflow.wording import agreeing, counted, listed

__all__ = ["GaussianMixture", "GaussianPrior", "ResolvedGaussianPrior"]

_SINGULAR = 1e3 * np.finfo(float).eps  # smallest eigenvalue of a correlation matrix below it x d: singular
_DISTINCT_ROWS_CHECKED = 100_000  # above this many rows the MLE support check (distinct rows) is skipped
#: EM's answer is polished by centred steps where the one-pass forms' relative rounding exceeds this.
EXACT_ABOVE = 1e-12


@cache
def _separated_quantile(d: int) -> float:
    """The chi-square quantile of d degrees that a separated component's mean lies beyond (made once per d)."""
    return float(st.chi2.ppf(SEPARATED_QUANTILE, d))


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
    covariance S divided by K^(2/d) (its diagonal for "diag", the mean of its diagonal for "spherical").
    ``weights_concentration`` 1 is a flat Dirichlet (MAP weights equal the MLE ones). Unlike mclust, S
    divides by the total weight (mclust's ``var()`` by n - 1), "diag" has a scale per feature (mclust one
    scalar, the "spherical" one), and a singular S is replaced by its diagonal for "full" and "tied"
    (mclust does so when n <= d); the README's prior table gives the reasons.

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
            raise InputError(f"shrinkage: expected a positive number, got {self.shrinkage!r}")
        if self.dof is not None and not (np.isfinite(self.dof) and self.dof > 0):
            raise InputError(f"dof: expected a positive number, got {self.dof!r}")
        for name in ("weights_concentration", "mean", "scale"):
            object.__setattr__(self, name, _as_tuple(getattr(self, name)))
        object.__setattr__(self, "shrinkage", float(self.shrinkage))
        object.__setattr__(self, "dof", None if self.dof is None else float(self.dof))

    def to_dict(self) -> dict:
        """Plain dict of the hyperparameters (None where a data-scaled default applies)."""
        return asdict(self)


@dataclass(frozen=True)
class ResolvedGaussianPrior:
    """A :class:`GaussianPrior` with every default filled in from the data (numpy arrays).

    In data units (:meth:`GaussianMixture.resolve_prior`) ``log_scale`` is None; in the working units EM
    runs in (:meth:`GaussianMixture.working_prior`) it holds the log scales of the standardisation, so
    that :meth:`GaussianMixture.log_prior` is the density of the data-unit parameters.
    """

    concentration: np.ndarray
    mean: np.ndarray
    shrinkage: float
    dof: float
    scale: np.ndarray
    log_scale: np.ndarray | None = None

    def to_dict(self) -> dict:
        """JSON-friendly dict of the numbers actually used (``log_scale`` is not a hyperparameter)."""
        return {k: np.asarray(v).tolist() if isinstance(v, np.ndarray) else v for k, v in asdict(self).items()
                if k != "log_scale"}


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
    prior_class: ClassVar[type] = GaussianPrior
    covariance: str = "full"
    prior: GaussianPrior | str | dict = field(default="default")

    def __post_init__(self):
        object.__setattr__(self, "n_components", check_n_components(self.n_components))
        if self.covariance not in gn.COVARIANCE_TYPES:
            raise InputError(f"covariance: expected one of {list(gn.COVARIANCE_TYPES)}, got {self.covariance!r}")
        object.__setattr__(self, "prior", prior_from_argument(self.prior, self.prior_class, self.n_components))

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
        what = ("the tied covariance collapsed" if self.covariance == "tied"
                else f"{agreeing(len(components), 'component')} {components} collapsed")
        return (f"{what} onto a point or a subspace (singular covariance: too few distinct rows, e.g. "
                "repeated points, rows that share one value of a feature with few values, such as a code, or features "
                "that are linear functions of others): "
                + gn.FLOOR_DESCRIPTION.format(its="its" if self.covariance == "tied" or len(components) == 1
                                              else "their", floor=gn.PRECISION_FLOOR))

    def sort_key(self, params: dict) -> np.ndarray:
        """Canonical order: ascending first coordinate of ``mu``."""
        return params["mu"][:, 0]

    # -- data and prior --------------------------------------------------------------------------------
    def prepare(self, data) -> Prepared:
        """Standardise the data (weighted mean 0, variance 1 per feature; one scale for "spherical").

        EM works in these units (:func:`mixflow.families.scaling.standardise`), whatever the data's
        magnitude; :meth:`to_data` maps the estimate back and :meth:`log_density` includes the Jacobian,
        so log-likelihoods are those of the data.
        """
        weights = data.frequency
        units = standardise(data.values, weights, common=self.covariance == "spherical")
        d = data.values.shape[1]
        constants = {"center": units.center, "scale": units.scale, "log_scale": units.log_scale,
                     "floor": np.full(d, gn.ABSOLUTE_FLOOR), "working_center": np.zeros(d)}
        return Prepared({"z": units.working}, weights, constants)

    def chunked_constants(self, moments, features) -> dict:
        """:meth:`prepare`'s constants from the moments of chunked data, and the working data covariance."""
        units = from_moments(moments.magnitude, moments.unit_mean, moments.unit_sd,
                             common=self.covariance == "spherical", anchor=moments.anchor)
        d = units.center.size
        constants = {"center": units.center, "scale": units.scale, "log_scale": units.log_scale,
                     "floor": np.full(d, gn.ABSOLUTE_FLOOR), "working_center": np.zeros(d), "units": units}
        if moments.unit_cross is not None:
            spread = np.outer(units.unit_sd, units.unit_sd)
            constants["working_cov"] = moments.unit_cross / moments.total_weight / spread
        return constants

    def prepare_rows(self, values: np.ndarray, weights: np.ndarray, rows: np.ndarray, constants: dict) -> Prepared:
        """The rows in the working units of the whole data (:meth:`chunked_constants`)."""
        return Prepared({"z": constants["units"].apply(values)}, weights, constants)

    def estimate_moments(self, params: dict):
        """The fitted mixture's mean and per-feature variance, relative to each feature's largest |mean| + sd."""
        mu, weights = np.asarray(params["mu"], dtype=float), np.asarray(params["weights"], dtype=float)
        variance = {"full": lambda v: np.diagonal(v, axis1=-2, axis2=-1), "tied": lambda v: np.diagonal(v)[None, :],
                    "diag": lambda v: v, "spherical": lambda v: np.asarray(v)[:, None]}[self.covariance](
            np.asarray(params["covariance" if self.covariance in ("full", "tied") else "variance"], dtype=float))
        return _mixture_moments(weights, mu, np.broadcast_to(variance, mu.shape))

    def working_prior(self, prepared: Prepared) -> ResolvedGaussianPrior:
        """The prior in working units, defaults filled from the data (mclust's default conjugate prior).

        Its ``log_scale`` makes :meth:`log_prior` the density of the data-unit parameters.
        """
        prior, k, constants = self.prior, self.n_components, prepared.constants
        center, scale = constants["center"], constants["scale"]
        d = center.size
        if prior.scale is None:
            data_cov = constants.get("working_cov")  # chunked data: from their moments
            if data_cov is None:
                z, weights = prepared.arrays["z"], prepared.weights
                data_cov = (z * weights[:, None]).T @ z / weights.sum()
            scale_w = _default_scale(self.covariance, data_cov.copy(), k)
        else:
            scale_w = _given_scale(self.covariance, prior.scale, scale, d)
        mean = constants["working_center"] if prior.mean is None else _given_mean(prior.mean, center, scale)
        dof = float(d + 2) if prior.dof is None else prior.dof
        _check_resolved(self.covariance, mean, scale_w, dof, d, given=prior.scale is not None)
        concentration = np.broadcast_to(np.asarray(prior.weights_concentration, dtype=float), (k,)).copy()
        return ResolvedGaussianPrior(concentration, mean, prior.shrinkage, dof, scale_w, constants["log_scale"])

    def resolve_prior(self, prepared: Prepared) -> ResolvedGaussianPrior:
        """The prior in data units, defaults filled from the data (what MCMC and ADVI use, and is recorded).

        The defaults are :meth:`working_prior`'s mapped to data units; given values are kept as given.
        """
        working, prior = self.working_prior(prepared), self.prior
        center, scale = prepared.constants["center"], prepared.constants["scale"]
        mean = center.copy() if prior.mean is None else _one_feature_shaped(prior.mean, center.shape)
        scale_d = (gu.dispersion_to_data(self.covariance, working.scale, scale) if prior.scale is None
                   else _one_feature_shaped(prior.scale, _SCALE_SHAPES[self.covariance](center.size)))
        return ResolvedGaussianPrior(working.concentration, mean, working.shrinkage, working.dof, scale_d)

    def to_working(self, params: dict, prepared: Prepared) -> dict:
        """Parameters from data units to the working units of ``prepared``."""
        return gu.to_working(self.covariance, params, prepared.constants["center"], prepared.constants["scale"])

    def to_data(self, params: dict, prepared: Prepared) -> dict:
        """Parameters from the working units of ``prepared`` to data units."""
        return gu.to_data(self.covariance, params, prepared.constants["center"], prepared.constants["scale"])

    def prior_problems(self, params: dict, responsibilities: np.ndarray, prepared: Prepared, prior) -> list[str]:
        """Components of many observations whose covariance is mostly the default prior's scale.

        The default scale is the whole data's covariance over K^(2/d) (after mclust): for groups far apart,
        that covariance is their spread between them, and a MAP covariance adds it to each component's own
        scatter. The prior is worth d + 2 observations (its default degrees of freedom): a component of
        :data:`PRIOR_WORTH` times as many should outweigh it, and when the prior's scale exceeds
        :data:`PRIOR_OUTWEIGHS` times such a component's scatter in a feature (the sum over its rows of the
        squared deviations), its variance there is some five times the data's own or more: the prior's, not the
        data's. (A scale about as large as the scatter, as for iris setosa's petals, is the prior's usual pull.)
        """
        if self.prior.scale is not None or "z" not in prepared.arrays:  # a scale the user chose is theirs
            return []
        z, weights = prepared.arrays["z"], prepared.weights
        d = z.shape[1]
        counts = (weights[:, None] * responsibilities).sum(axis=0)
        scale = np.asarray(prior.scale, dtype=float)
        if self.covariance == "spherical":  # one variance for every feature: its scale against the total scatter
            scale = np.full(d, float(scale) * d)
        elif scale.ndim == 2:  # full and tied: the diagonal, each feature's
            scale = np.diag(scale)
        mu = np.asarray(params["mu"])
        scatters = [(weights * responsibilities[:, k]) @ (z - mu[k]) ** 2 for k in range(mu.shape[0])]  # kept ones
        # a feature of one value has no scatter anywhere: its spread is the prior's by necessity, and is said
        # (ConstantFeatureWarning), not the prior outweighing data that exist
        varies = weights @ (z - weights @ z / weights.sum()) ** 2 > 0
        if self.covariance == "tied":  # one covariance, of every component's scatter pooled
            counts, scatters = np.array([counts.sum()]), [np.sum(scatters, axis=0)]
        outweighed = []
        for k, scatter in enumerate(scatters):
            scatter = np.full(d, scatter.sum()) if self.covariance == "spherical" else scatter
            if counts[k] >= PRIOR_WORTH * (d + 2) and (scale > PRIOR_OUTWEIGHS * scatter)[varies].any():
                outweighed.append(k)
        if not outweighed:
            return []
        where = ("the tied covariance" if self.covariance == "tied" else
                 f"the covariance of {agreeing(len(outweighed), 'component')} {outweighed}")
        return [f"the default prior outweighs the data in {where}: its scale "
                f"(the whole data's covariance over K^(2/d), as mclust's) exceeds {PRIOR_OUTWEIGHS} times the "
                "data's own scatter there, so the estimate is mostly the prior's; groups far apart inflate the "
                "data's covariance. Give the "
                "prior a scale (GaussianPrior(scale=...), e.g. the MLE's pooled covariance) or use the MLE "
                "(method='em')"]

    def fewest_values_for_starts(self, map_fit: bool) -> int | None:
        """MAP fits: 2; a tied covariance's MLE: more values than components.

        The shared covariance then keeps the spread of the values a component does not hold; with K values or
        fewer, a component on each makes it singular (see :meth:`mle_problems`).
        """
        if map_fit:
            return 2
        return self.n_components + 1 if self.covariance == "tied" else None

    def mle_problems(self, prepared: Prepared, features=None) -> list[str]:
        """What in the data keeps the MLE from existing.

        Too few distinct rows for the covariance type; for a tied covariance, a feature of no more distinct
        values than components (``features``: the features' names).
        """
        k, (n, d) = self.n_components, prepared.arrays["z"].shape
        present = prepared.arrays["z"][prepared.weights > 0]
        names = [str(f) for f in features] if features is not None else [f"column {j}" for j in range(d)]
        problems = []
        distinct = np.unique(present, axis=0).shape[0] if n <= _DISTINCT_ROWS_CHECKED else n
        needed = {"full": k * (d + 1), "tied": k + d, "diag": 2 * k, "spherical": 2 * k}[self.covariance]
        if distinct < needed:
            problems.append(f"data: {counted(distinct, 'distinct row')} for {counted(k, 'component')} and "
                            f"{counted(d, 'feature')}, where a "
                            f"{self.covariance!r} covariance needs at least {needed} to have a maximum-likelihood "
                            "estimate (fewer leave a component's covariance singular); use method='map' (the "
                            "prior keeps it regular)" + (", a covariance type with fewer parameters, or fewer "
                                                         "components" if k > 1 else " or a covariance type with fewer "
                                                         "parameters"))
        elif self.covariance in ("full", "tied") and (dependent := dependent_features(
                present, prepared.weights[prepared.weights > 0])):
            out = listed([repr(names[j]) for j, _ in dependent])
            relations = (f"is a linear function of {listed([repr(names[i]) for i in dependent[0][1]])} (within "
                         "rounding)" if len(dependent) == 1 else "are linear functions of others (" + "; ".join(
                             f"{names[j]!r} of {listed([repr(names[i]) for i in of])}" for j, of in dependent)
                         + ", within rounding)")
            problems.append(f"data: {agreeing(len(dependent), 'feature')} {out} {relations}, so the data lie on a "
                            "lower-dimensional subspace: a "
                            f"{self.covariance!r} covariance is singular there at any number of components and has "
                            f"no maximum-likelihood estimate; leave {out} out, or use covariance='diag' or "
                            "'spherical', or method='map' (the prior keeps it regular)")
        if self.covariance == "tied":
            counts = [np.unique(present[:, j]).size for j in range(d)]
            few = [j for j in range(d) if 2 <= counts[j] <= k]  # a constant feature collapses any fit (warned then)
            if few:
                names = ", ".join(f"{features[j] if features is not None else f'column {j}'!s} ({counts[j]})"
                                  for j in few)
                takes = agreeing(len(few), "takes", "take")
                problems.append(f"data: {agreeing(len(few), 'feature')} {names} {takes} no more distinct values than "
                                f"the {k} components: a "
                                "'tied' covariance's likelihood has no maximum there (components each on the rows of "
                                "one value make the shared variance of that feature zero, and the likelihood grows "
                                "without bound towards them), so the fit returned is a local maximum; use "
                                "method='map' (the prior keeps the covariance regular), another covariance type, or "
                                f"leave {agreeing(len(few), 'that feature', 'those features')} out")
        return problems

    def component_rows(self, params: dict) -> int:
        """A full covariance needs d + 1 observations, variances ("diag", "spherical") two, a tied one's mean one."""
        return {"full": np.shape(params["mu"])[1] + 1, "tied": 1}.get(self.covariance, 2)

    def component_parameters(self, params: dict) -> int:
        """A component's mean and own covariance: d (d + 3) / 2 for "full", 2 d for "diag", d + 1 for "spherical".

        0 for "tied": the covariance is shared by every row, and a component's mean alone gains on its rows what the
        criteria charge for it.
        """
        d = np.shape(params["mu"])[1]
        return {"full": d * (d + 3) // 2, "diag": 2 * d, "spherical": d + 1}.get(self.covariance, 0)

    def component_parameters_text(self) -> str:
        """:meth:`component_parameters` in words, for this covariance type; "" for "tied"."""
        return {"full": "d (d + 3) / 2, its mean and full covariance in d dimensions",
                "diag": "2 d, its mean and variances in d dimensions",
                "spherical": "d + 1, its mean and variance in d dimensions"}.get(self.covariance, "")

    def spurious_rule_gist(self) -> str:
        """A few points close together or near a subspace."""
        return "a component fitted to a few points close together or near a lower-dimensional subspace"

    def spurious_rule_text(self) -> str:
        """The rule of :meth:`spurious_components` in words: a subspace, a covariance, an ellipsoid."""
        return (f"{self.spurious_rule_gist()} (McLachlan "
                "and Peel 2000, sec. 3.10), with fewer observations than its covariance needs, or fewer than "
                f"{SPURIOUS_SIZE} times that, no more than another component, and at most {SPURIOUS_RATIO:g} as wide "
                "as another component in its narrowest direction, and not a group lying apart from the others (its "
                f"mean outside their {SEPARATED_QUANTILE:.1%} ellipsoids, with at least {SEPARATED_SIZE} times the "
                f"observations its covariance needs, or {SEPARATED_MARGIN} more than it needs and at least "
                f"{SMALL_GROUP_RATIO:g} as wide as the others)")

    def constant_feature_note(self, under_prior: bool) -> str:
        """Under a prior, a component's spread along a constant feature is the prior's shrunk by the component's size.

        Its term in the log-likelihood then changes with the components' sizes and number, so the fits of different
        K differ by more than the other features say. Without a prior the spread collapses, which the fit flags.
        """
        if not under_prior:
            return ""
        return ("; under the prior (MAP, NUTS, ADVI) each component's spread along such a feature is the prior's "
                "shrunk by the component's size, a term of the log-likelihood that changes with K: leave such "
                "features out to compare fits of different K")

    def spurious_components(self, params: dict, total_weight: float) -> list[tuple[int, float, float]]:
        """Spurious components (:func:`~mixflow.families.base.spurious_rule`); none for a tied covariance.

        A component needs :meth:`component_rows` observations. Its separation is the squared Mahalanobis
        distance of its mean under the nearest other component
        (:func:`~mixflow.families.gaussian.numerics.separations`), against the chi-square quantile of d degrees.
        """
        if self.covariance == "tied":
            return []
        needed = self.component_rows(params)
        counts = np.asarray(params["weights"]) * total_weight
        small = np.flatnonzero(counts < SPURIOUS_SIZE * needed)  # the components whose ratio matters
        if not small.size:
            return []
        dispersion = params[self.covariance_name()]
        ratios = gn.hathaway_ratios(self.covariance, dispersion, small)
        # the separation decides only for a small component narrow enough to be spurious and large and wide
        # enough to be a group (see spurious_rule); the others' verdicts do not depend on it
        open_question = small[(ratios[small] < SPURIOUS_RATIO) & (ratios[small] >= SEPARATED_RATIO)
                              & (counts[small] >= (needed + SEPARATED_MARGIN) * (1 - 1e-9))]
        separated = np.zeros(counts.shape, dtype=bool)
        if open_question.size:
            separated = gn.separations(self.covariance, params["mu"], dispersion, open_question) > \
                _separated_quantile(np.shape(params["mu"])[1])
        return spurious_rule(counts, ratios, needed, separated)

    def density_points(self, prepared: Prepared) -> np.ndarray:
        """The standardised data, the working units of the component densities."""
        return prepared.arrays["z"]

    def init_points(self, prepared: Prepared) -> np.ndarray:
        """Points used to seed k-means++: the centred data over one common scale (their geometry kept)."""
        log_scale = prepared.constants["log_scale"]
        return prepared.arrays["z"] * np.exp(log_scale - log_scale.max())

    # -- EM steps --------------------------------------------------------------------------------------
    def e_step_constants(self, params: dict, prepared: Prepared) -> dict:
        """Per-iteration constants of the E-step (precision factors, offsets), from working parameters.

        The offset carries the Jacobian ``-sum log scale`` of the standardisation, so the log densities
        are those of the data.
        """
        constants = gn.e_step_constants(self.covariance, params, prepared.constants["working_center"])
        constants["offset"] = constants["offset"] + 2.0 * prepared.constants["log_scale"].sum()
        return constants

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

    def stacks_components(self) -> bool:
        """Each component's steps stand alone (see :meth:`MixtureModel.stacks_components`)."""
        return self.covariance != "tied"  # a tied covariance pools the components

    def stacks_mixtures(self) -> bool:
        """Mixtures stack, tied ones too (a covariance per mixture, see :meth:`MixtureModel.stacks_mixtures`)."""
        return True

    def statistics(self, weighted_resp: np.ndarray, chunk: Prepared, features: np.ndarray) -> dict:
        """Sufficient statistics of a chunk (sum them over chunks)."""
        return gn.statistics(self.covariance, weighted_resp, chunk.arrays["z"], features)

    def stacked_statistics(self, by_mixture: np.ndarray, chunk: Prepared, features: np.ndarray) -> dict:
        """:meth:`statistics` of mixtures stacked, each mixture's products in one batched product.

        A tied covariance's pooled second moment, a product with a vector, is formed one mixture at a time.
        """
        if self.covariance == "tied":
            return super().stacked_statistics(by_mixture, chunk, features)
        return {"first": batched_products(chunk.arrays["z"], by_mixture),
                "second": batched_products(features, by_mixture)}

    def m_step(self, counts: np.ndarray, stats: dict, prepared: Prepared, prior) -> tuple[dict, list[int]]:
        """Component parameters (MLE if ``prior`` is None, else MAP) and the components floored."""
        params = gn.m_step(self.covariance, counts, stats, prepared.constants["working_center"], prior)
        return gn.floor_variances(self.covariance, params, prepared.constants["floor"])

    def stacked_m_step(self, counts: np.ndarray, stats: dict, prepared: Prepared, prior,
                       groups: int) -> tuple[dict, list[int]]:
        """:meth:`m_step` of ``groups`` mixtures stacked: a tied covariance pools each mixture's own scatter."""
        params = gn.m_step(self.covariance, counts, stats, prepared.constants["working_center"], prior, groups)
        return gn.floor_variances(self.covariance, params, prepared.constants["floor"])

    def exact_steps(self, params: dict, prepared: Prepared, above: float = EXACT_ABOVE):
        """The centred E- and M-steps where the one-pass forms' relative rounding at ``params`` exceeds ``above``.

        :func:`~mixflow.families.gaussian.numerics.centred_log_density` and
        :func:`~mixflow.families.gaussian.numerics.centred_m_step`, where components lie many of their own
        sds from the data centre (far-apart clusters), on data in memory. None elsewhere.
        """
        constants = prepared.constants
        if "z" not in getattr(prepared, "arrays", {}) or gn.one_pass_error(self.covariance, params,
                                                            constants["working_center"]) <= above:
            return None
        z, jacobian = prepared.arrays["z"], constants["log_scale"].sum()

        def log_density(at: dict) -> np.ndarray:
            return gn.centred_log_density(self.covariance, at, z) - jacobian

        def m_step(weighted_resp: np.ndarray, prior) -> tuple[dict, list[int]]:
            components = gn.centred_m_step(self.covariance, weighted_resp, z, prior)
            return gn.floor_variances(self.covariance, components, constants["floor"], centred=True)

        return log_density, m_step

    def log_prior(self, params: dict, prior: ResolvedGaussianPrior) -> float:
        """Log density of the data-unit component parameters under the prior (the weights' Dirichlet excluded).

        ``params`` and ``prior`` are both in data units, or both in working units (:meth:`working_prior`).
        """
        value = _log_prior(self.covariance, params, prior)
        if prior.log_scale is None:
            return value
        return value + gu.log_prior_jacobian(self.covariance, prior.log_scale, params["mu"].shape[0])

    @classmethod
    def label_tag(cls, options: dict) -> str:
        """The covariance type (``full`` by default)."""
        return options.get("covariance", "full")

    def simulate_data(self, params: dict, data: Data, rng: np.random.Generator) -> Data:
        """As many points as the data's total weight, unweighted."""
        x, _ = sampling.gaussian_points(params, sampling.n_units(data), rng)
        return Data(values=x, features=data.features, obs=np.arange(x.shape[0]), weights=None)

    def simulate_draws(self, draws: dict, data: Data, rng: np.random.Generator) -> np.ndarray:
        """Every draw's replicate at once (in chunks of draws that keep the temporary arrays small)."""
        return sampling.gaussian_replicates(draws, data, rng)

    def sample_points(self, params: dict, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` points from the mixture and their components."""
        return sampling.gaussian_points(params, n, rng)

    def check_parameters(self, params: dict, n_features: int, name: str = "init") -> dict:
        """Validate user-given parameters (shapes, finiteness, positive definiteness); return copies."""
        return _check_parameters(self, params, n_features, name)



def dependent_features(values: np.ndarray, weights: np.ndarray) -> list[tuple[int, list[int]]]:
    """Features that are linear functions of earlier ones on these rows: each with the features it is a function of.

    In the data's order, each feature that varies (a constant one is warned of on its own) is fitted by weighted
    least squares on the earlier ones kept, all standardised: it is dependent where the variance it leaves is
    below ``_SINGULAR`` times the number of features, the test of a singular correlation matrix the default
    prior's scale uses, and named with the features of non-negligible coefficients. Empty when the features are
    linearly independent.
    """
    varying = np.flatnonzero(np.ptp(values, axis=0) > 0)
    centred = values[:, varying] - np.average(values[:, varying], axis=0, weights=weights)
    rows = centred / np.sqrt(np.average(centred**2, axis=0, weights=weights))
    rows *= np.sqrt(weights / weights.sum())[:, None]  # unit variance each, weighted: sums of squares are variances
    kept, found = [], []
    for j in range(varying.size):
        if kept:
            coefficients, *_ = np.linalg.lstsq(rows[:, kept], rows[:, j], rcond=None)
            left = rows[:, j] - rows[:, kept] @ coefficients
            if left @ left < _SINGULAR * varying.size:
                found.append((int(varying[j]), [int(varying[i]) for i, c in zip(kept, coefficients, strict=True)
                                                if abs(c) > 1e-6]))
                continue
        kept.append(j)
    return found

def _mixture_moments(weights: np.ndarray, mu: np.ndarray, variance: np.ndarray):
    """:class:`mixflow.chunked.Moments` of a mixture of components with means ``mu`` and variances (K, d)."""
    from mixflow.chunked import Moments

    magnitude = (np.abs(mu) + np.sqrt(variance)).max(axis=0)
    magnitude = np.where(magnitude > 0, magnitude, 1.0)
    unit_mu = mu / magnitude
    unit_mean = weights @ unit_mu
    unit_variance = weights @ (variance / magnitude / magnitude + (unit_mu - unit_mean) ** 2)
    return Moments(1.0, magnitude, unit_mean, np.diag(unit_variance))


def _default_scale(covariance: str, data_cov: np.ndarray, k: int) -> np.ndarray:
    """The default scale (after mclust) in working units: the data covariance (divided by the total weight) / K^(2/d).

    Its diagonal for "diag", the mean of its diagonal for "spherical"; a constant feature gets 1. A
    singular data covariance (fewer distinct rows than features, collinear features) is replaced by its
    diagonal for "full" and "tied", as mclust does when n <= d.
    """
    d = data_cov.shape[0]
    constant = np.diag(data_cov) == 0  # a constant feature: unit scale rather than a singular prior
    data_cov[constant, constant] = 1.0
    if covariance in ("full", "tied") and not np.linalg.eigvalsh(data_cov)[0] > _SINGULAR * d:
        data_cov = np.diag(np.diag(data_cov))  # as mclust for n <= d: the variances alone, a regular scale
    return {
        "full": data_cov, "tied": data_cov, "diag": np.diag(data_cov).copy(),
        "spherical": np.asarray(np.trace(data_cov) / d),
    }[covariance] / k ** (2.0 / d)


#: The prior scale's shape by covariance type, for d features
_SCALE_SHAPES = {"full": lambda d: (d, d), "tied": lambda d: (d, d), "diag": lambda d: (d,), "spherical": lambda d: ()}


def _one_feature_shaped(given, shape: tuple) -> np.ndarray:
    """A given prior mean or scale as an array; with one feature a single number takes the ``shape`` asked for.

    (A number is then the mean, or the variance's scale, whatever the covariance type; other shapes are left
    for the caller to refuse.)
    """
    value = np.asarray(given, dtype=float)
    return value.reshape(shape) if value.size == 1 and int(np.prod(shape)) == 1 else value


def _given_mean(mean, center: np.ndarray, scale: np.ndarray) -> np.ndarray:
    value = _one_feature_shaped(mean, center.shape)
    if value.shape != center.shape:
        raise InputError(f"prior.mean: expected {center.size} values (one per feature), got shape {value.shape}")
    return (value - center) / scale


def _given_scale(covariance: str, given, scale: np.ndarray, d: int) -> np.ndarray:
    expected = _SCALE_SHAPES[covariance](d)
    value = _one_feature_shaped(given, expected)
    if value.shape != expected:
        raise InputError(f"prior.scale: expected shape {expected} for covariance={covariance!r}, got {value.shape}")
    _check_positive(value, given=True)
    return gu.dispersion_to_working(covariance, value, scale)


def _check_positive(scale: np.ndarray, given: bool) -> None:
    positive = np.linalg.eigvalsh(scale).min() > 0 if scale.ndim == 2 else (scale > 0).all()
    if positive:
        return
    if given:
        raise InputError(f"prior.scale: expected a positive definite scale (positive values), got {scale.tolist()}")
    raise InputError("prior.scale: expected a positive definite default scale (the data covariance / K^(2/d)), "
                     "got a singular one: the data lie in a lower-dimensional subspace (fewer distinct rows "
                     "than features, or collinear features); give prior={'scale': ...}, drop a feature, or "
                     "use covariance='diag' or 'spherical'")


def _check_resolved(covariance, mean, scale, dof, d, given: bool):
    if mean.shape != (d,):
        raise InputError(f"prior.mean: expected {d} values (one per feature), got shape {mean.shape}")
    if dof <= d - 1:
        raise InputError(f"prior.dof: expected more than d - 1 = {d - 1} degrees of freedom, got {dof}")
    _check_positive(scale, given)


def _log_prior(covariance: str, params: dict, prior: ResolvedGaussianPrior) -> float:
    """Sum over components of the Normal-inverse-Wishart (or -inverse-gamma) log density of their parameters."""
    kappa, dof, mean, scale = prior.shrinkage, prior.dof, prior.mean, prior.scale
    mu = params["mu"]
    if covariance in ("full", "tied"):  # N(mu_k | mean, Sigma_k / kappa) IW(Sigma_k | dof, scale); tied: one Sigma
        covariances = params["covariance"]
        inverse_wishart, inverse, log_det = inverse_wishart_log_density(covariances, dof, scale)
        if covariance == "tied":
            inverse, log_det = inverse[None], np.full(mu.shape[0], log_det)
        d = mu.shape[1]
        # Sigma / kappa: its inverse factor sqrt(kappa) L^-1, its log determinant less d log kappa
        normal = normal_log_density_of_factors(mu, mean, np.sqrt(kappa) * inverse, log_det - d * np.log(kappa))
        return float(np.sum(inverse_wishart) + normal.sum())
    variance = params["variance"]
    spread = variance / kappa if covariance == "diag" else (variance / kappa)[:, None]
    normal = -0.5 * ((mu - mean) ** 2 / spread + np.log(2.0 * np.pi * spread))
    return float(inverse_gamma_log_density(variance, dof / 2, scale / 2).sum() + normal.sum())


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
            raise InputError(f"{name}['covariance']: expected symmetric positive definite matrices")
    elif (dispersion_value <= 0).any():
        raise InputError(f"{name}['variance']: expected positive variances, got {dispersion_value.tolist()}")
    return out
