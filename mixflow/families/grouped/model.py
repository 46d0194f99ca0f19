"""Grouped (binned) data: an exact EM for a univariate Gaussian mixture observed only as class counts.

The data are classes ``[lower_j, upper_j)`` with counts n_j; each count is that many observations known
only to lie in their class (interval censoring). The likelihood is ``sum_j n_j log P_j`` with
``P_j = sum_k pi_k (Phi((upper_j - mu_k) / sigma_k) - Phi((lower_j - mu_k) / sigma_k))``. The end classes
can be declared open (R's mixdist makes the first class ``(-inf, a_1]`` and the last ``(a_m, inf)``), and
then the class probabilities sum to one: the multinomial likelihood of the counts. Openness is declared
by value, not by row position, so any subset of the classes (cross-validation folds, a single class to
predict) means the same thing.

EM treats the exact values as missing twice over, the component and the position inside the class
(McLachlan & Jones 1988). The E-step gives the class responsibilities ``r_jk = pi_k P_jk / P_j`` and the
first two moments of a normal truncated to the class, ``E[x | j, k]`` and ``E[x^2 | j, k]``; the M-step
is the ordinary Gaussian one (MLE, or MAP under :class:`mixflow.GaussianPrior`) on those expected
sufficient statistics. It is a true EM: the grouped log-likelihood (or log posterior) never decreases.

``likelihood="midpoint"`` instead treats every class as its midpoint repeated n_j times (the usual
approximation; it is what :class:`mixflow.GaussianMixture` does with weights), so both can be compared
on the same data and in the same workflow.
"""

import warnings
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import xarray as xr
from scipy.special import log_ndtr

from mixflow.data import Data
from mixflow.errors import InputError, InputTypeError
from mixflow.families import sampling
from mixflow.families.base import MixtureModel, Prepared, register_family
from mixflow.families.checks import check_n_components, check_parameter_dict, named_rows, prior_from_argument
from mixflow.families.gaussian import numerics as gn
from mixflow.families.gaussian import units as gu
from mixflow.families.gaussian.model import GaussianMixture, GaussianPrior
from mixflow.families.scaling import Standardisation, standardise
from mixflow.units import unit_power, unit_shown
from mixflow.warnings import PACKAGE_FILES, DeclarationWarning, MixflowWarning
from mixflow.wording import agreeing, counted

__all__ = ["GroupedGaussianMixture", "interval_log_probability", "truncated_moments"]

LIKELIHOODS = ("interval", "midpoint")
_RELATIVE_FLOOR = 1e-6
_LOG_SQRT_2PI = 0.5 * np.log(2 * np.pi)


def interval_log_probability(alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """log(Phi(beta) - Phi(alpha)) for alpha < beta (either may be infinite), accurate in both tails.

    Below zero it is ``log Phi(beta) + log(1 - Phi(alpha) / Phi(beta))``; above, the same on the
    reflected interval ``(-beta, -alpha)``, so that neither difference loses its digits.
    """
    upper_tail = alpha > 0
    low = np.where(upper_tail, -beta, alpha)
    high = np.where(upper_tail, -alpha, beta)
    log_high, log_low = log_ndtr(high), log_ndtr(low)
    with np.errstate(divide="ignore"):
        return log_high + np.log(-np.expm1(log_low - log_high))


#: The largest end, in the component's sds, that :func:`truncated_moments` stands in for a lost moment with (its
#: square stays finite)
_FAR_END = 1e150


def truncated_moments(alpha: np.ndarray, beta: np.ndarray, log_mass: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """E[U] and E[U^2] of a standard normal U truncated to [alpha, beta], given log(Phi(beta) - Phi(alpha)).

    ``E[U] = (phi(alpha) - phi(beta)) / Z`` and ``E[U^2] = 1 + (alpha phi(alpha) - beta phi(beta)) / Z``,
    with ``x phi(x) = 0`` at infinite ends; the ratios are formed in logs.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        ratio_low = np.exp(-0.5 * alpha**2 - _LOG_SQRT_2PI - log_mass)
        ratio_high = np.exp(-0.5 * beta**2 - _LOG_SQRT_2PI - log_mass)
        first = ratio_low - ratio_high
        second = 1.0 + np.where(np.isfinite(alpha), alpha * ratio_low, 0.0) \
            - np.where(np.isfinite(beta), beta * ratio_high, 0.0)
    lost = ~(np.isfinite(first) & np.isfinite(second))
    if lost.any():
        # a class thousands of trillions of sds from the component (a collapsed one): alpha^2 and log_mass round by
        # more than the ratios' size, which overflow; there the truncated normal sits at the nearer end, and the
        # class's responsibility for the component is 0 (a NaN moment would make its sums NaN all the same)
        nearer = np.clip(np.where(alpha > 0, alpha, beta), -_FAR_END, _FAR_END)
        first, second = np.where(lost, nearer, first), np.where(lost, nearer * nearer, second)
    return first, second


def _class_units(lower: np.ndarray, upper: np.ndarray, weights: np.ndarray) -> Standardisation:
    """The working units of classes: the count-weighted midpoints standardised (:func:`standardise`).

    Where the classes with counts are one class (or classes of one midpoint), the midpoints have no spread, and
    their rounding would set the unit, putting the other classes' limits at 1e14 units: the unit is then the sd of
    one observation spread evenly over its class, the classes' mean width over sqrt(12) (as
    :meth:`GroupedGaussianMixture.chunked_constants` sets it from chunked data's moments).
    """
    midpoints = (0.5 * lower + 0.5 * upper)[:, None]
    units = standardise(midpoints, weights)
    held = weights > 0
    width = float(weights[held] @ (upper[held] - lower[held]) / weights[held].sum())
    apart = (midpoints[held, 0] - units.center[0]) / width  # the midpoints' spread in class widths, scale-free
    if np.sqrt(weights[held] @ (apart * apart) / weights[held].sum()) > _SPREAD_RESOLVED:
        return units
    scale = width / np.sqrt(12.0)
    return Standardisation(units.center, np.array([scale]), np.array([np.log(scale)]),
                           (midpoints - units.center) / scale)


def _classes_with_counts(prepared: Prepared) -> tuple[np.ndarray, np.ndarray]:
    """The distinct classes of the rows with counts and each one's count (its rows' weights summed).

    The classes as ``(C, 2)`` working limits (open ends infinite), in order.
    """
    held = prepared.weights > 0
    classes, index = np.unique(np.column_stack([prepared.arrays["low"][held], prepared.arrays["high"][held]]),
                               axis=0, return_inverse=True)
    return classes, np.bincount(index.ravel(), weights=prepared.weights[held], minlength=classes.shape[0])


def _check_classes(lower: np.ndarray, upper: np.ndarray, obs: np.ndarray) -> None:
    empty = ~(lower < upper)
    if empty.any():
        raise InputError(f"data: expected each class's lower bound below its upper bound, got "
                         f"{named_rows(empty, obs, np.column_stack([lower, upper]))}")


def _limit(value, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating) or not np.isfinite(value):
        raise InputError(f"{name}: expected None or a finite class limit, got {value!r}")
    return float(value)


#: Midpoints whose sd is below this share of the classes' mean width have no spread of their own (:func:`_class_units`).
_SPREAD_RESOLVED = 1e-6
#: Words in a column's name that say it holds the classes' counts (:meth:`GroupedGaussianMixture._warn_unweighted`).
_COUNT_WORDS = ("count", "freq", "number", "weight", "n_", "total")
#: A component with all but this share of its probability in one or two classes is not determined by them
#: (:meth:`GroupedGaussianMixture.mle_fit_problems`).
_WITHIN_CLASSES = 1e-3


@register_family("grouped_gaussian")
@dataclass(frozen=True)
class GroupedGaussianMixture(MixtureModel):
    """A univariate Gaussian mixture fitted to class counts (binned data) by exact grouped-data EM.

    Parameters
    ----------
    n_components : int
        Number of components K >= 1.
    common_variance : bool, default False
        One variance shared by all components (mixdist's ``consigma="SFX"``) instead of one each.
    open_below : float, optional
        A class whose upper limit is at or below this value extends down to minus infinity (mixdist's
        first class ``(-inf, a_1]``: give ``a_1``).
    open_above : float, optional
        A class whose lower limit is at or above this value extends up to plus infinity (mixdist's last
        class: give its lower limit). With neither, every count is censored to its own finite class; that
        is not a truncated likelihood (for a sample recorded only inside the classes' range the class
        probabilities would have to be renormalised, which this does not do).
    likelihood : {"interval", "midpoint"}, default "interval"
        The exact grouped likelihood, or the midpoint approximation (each class at its midpoint).
    bounds : (str, str), default ("lower", "upper")
        Names of the columns with the class limits; data with exactly two columns may use any names
        (first lower, then upper).
    prior : "default", GaussianPrior or dict, default "default"
        As for :class:`mixflow.GaussianMixture` with one feature; its defaults are scaled to the class
        midpoints weighted by the counts.

    Notes
    -----
    Fit with the counts as frequency weights: ``mixflow.fit(GroupedGaussianMixture(2, open_below=0.5835,
    open_above=0.6915), crabs[["lower", "upper"]], weights=crabs["count"])``. Classes may come in any
    order (and may even overlap: each row is its own censoring interval). Parameters: ``weights``
    (component), ``mu`` (component) and ``variance`` (component), or ``variance`` () with a common
    variance. Components come in ascending order of ``mu``.

    """

    n_components: int
    pymc_module: ClassVar[str] = "mixflow.families.grouped.pymc"  # the PyMC form (MCMC, ADVI), see MixtureModel
    data_plot: ClassVar[str] = "classes"  # see MixtureModel
    workflow_keys: ClassVar[tuple] = ("common_variance", "open_below", "open_above", "likelihood", "bounds")
    prior_class: ClassVar[type] = GaussianPrior
    common_variance: bool = False
    open_below: float | None = None
    open_above: float | None = None
    likelihood: str = "interval"
    bounds: tuple = ("lower", "upper")
    prior: GaussianPrior | str | dict = field(default="default")

    def __post_init__(self):
        object.__setattr__(self, "n_components", check_n_components(self.n_components))
        if not isinstance(self.common_variance, bool):
            raise InputTypeError(f"common_variance: expected True or False, got {self.common_variance!r}")
        object.__setattr__(self, "open_below", _limit(self.open_below, "open_below"))
        object.__setattr__(self, "open_above", _limit(self.open_above, "open_above"))
        if self.open_below is not None and self.open_above is not None and not self.open_below < self.open_above:
            raise InputError(f"open_above: expected a limit above open_below = {self.open_below}, "
                             f"got {self.open_above}")
        if self.likelihood not in LIKELIHOODS:
            raise InputError(f"likelihood: expected one of {list(LIKELIHOODS)}, got {self.likelihood!r}")
        bounds = tuple(self.bounds) if isinstance(self.bounds, list | tuple) else None
        if bounds is None or len(bounds) != 2 or not all(isinstance(b, str) and b for b in bounds) \
                or bounds[0] == bounds[1]:
            raise InputError(f"bounds: expected two distinct column names (lower, upper), got {self.bounds!r}")
        object.__setattr__(self, "bounds", bounds)
        prior = prior_from_argument(self.prior, self.prior_class, self.n_components)
        if self.common_variance and isinstance(prior.scale, float):
            prior = GaussianPrior(prior.weights_concentration, prior.mean, prior.shrinkage, prior.dof,
                                  ((prior.scale,),))
        object.__setattr__(self, "prior", prior)

    # -- declaration -----------------------------------------------------------------------------------
    @property
    def gaussian(self) -> GaussianMixture:
        """The one-feature Gaussian mixture whose M-step and prior this model uses."""
        return GaussianMixture(self.n_components, covariance="tied" if self.common_variance else "spherical",
                               prior=self.prior)

    def to_dict(self) -> dict:
        """The declaration as a plain dict."""
        return {"n_components": self.n_components, "common_variance": self.common_variance,
                "open_below": self.open_below, "open_above": self.open_above, "likelihood": self.likelihood,
                "bounds": list(self.bounds), "prior": self.prior.to_dict()}

    @classmethod
    def from_dict(cls, spec: dict) -> "GroupedGaussianMixture":
        """Inverse of :meth:`to_dict`."""
        return cls(spec["n_components"], common_variance=spec.get("common_variance", False),
                   open_below=spec.get("open_below"), open_above=spec.get("open_above"),
                   likelihood=spec.get("likelihood", "interval"), bounds=tuple(spec.get("bounds", ("lower", "upper"))),
                   prior=GaussianPrior(**spec.get("prior", {})))

    def rows_are_classes(self) -> bool:
        """The rows are the classes, their weights the counts."""
        return True

    def component_rows(self, params: dict) -> int:
        """Two bins for a component's own variance, one for its mean alone (a common variance)."""
        return 1 if self.common_variance else 2

    def component_parameters(self, params: dict) -> int:
        """A component's mean and own variance: 2; 0 with a common variance (its mean alone is charged fairly)."""
        return 0 if self.common_variance else 2

    def component_parameters_text(self) -> str:
        """:meth:`component_parameters` in words; "" with a common variance."""
        return "" if self.common_variance else "2, its mean and variance"

    def parameter_dims(self, features=None) -> dict:
        """``weights`` and ``mu`` (component); ``variance`` (component) or () when common."""
        return {"weights": ("component",), "mu": ("component",),
                "variance": () if self.common_variance else ("component",)}

    def n_parameters(self, n_features: int, n_components: int | None = None) -> int:
        """K - 1 weights, K means and K variances (one if common)."""
        k = n_components or self.n_components
        return (k - 1) + k + (1 if self.common_variance else k)

    def mle_problems(self, prepared: Prepared, features=None) -> list[str]:
        """Fewer classes with counts than the parameters need: the class probabilities do not determine them.

        ``C`` distinct classes with counts give ``C - 1`` free class probabilities; a mixture of more parameters
        has no unique maximum there (one class: a zero variance inside it), so its estimate is one of many.
        """
        classes = _classes_with_counts(prepared)[0]
        parameters = self.n_parameters(1)
        if classes.shape[0] - 1 >= parameters:
            return []
        k, n_classes = self.n_components, classes.shape[0]
        fixes = ["method='map' (the prior keeps the estimate unique)", *["fewer components"] * (k > 1),
                 *["common_variance=True"] * (k > 1 and not self.common_variance)]
        return [f"data: {counted(n_classes, 'class', 'classes')} with counts {agreeing(n_classes, 'gives', 'give')} "
                f"{counted(n_classes - 1, 'free class probability', 'free class probabilities')}, fewer than "
                f"the {parameters} parameters of {counted(k, 'component')}, so they have no unique "
                "maximum-likelihood estimate (a single class is matched best by a variance of zero inside it) and "
                f"the fit returned is one of many; use {', '.join(fixes)} or finer classes"]

    def mle_fit_problems(self, params: dict, prepared: Prepared) -> list[str]:
        """Components whose probability lies within one or two classes, and whose variance no count outside decides.

        The grouped likelihood sees a component only through its class probabilities. With all but
        :data:`_WITHIN_CLASSES` of them in two adjacent classes, one share between the two is determined; if the
        classes around hold no count the component explains (less than one observation's worth, by the
        responsibilities), its mean and variance are a ridge along which the likelihood rises (the small
        probability leaking to the other classes falls) or stays flat (within an open class) as the variance
        shrinks towards zero: EM creeps along it and stops where ``max_iter`` or ``tol`` stops it, not at a maximum.
        Counts in the classes around that the component's tails explain (a narrow group with a few rows on either
        side) determine its variance: the likelihood falls both ways from the estimate, a maximum.
        """
        classes, counts = _classes_with_counts(prepared)
        mu = np.asarray(params["mu"], dtype=float)
        sd = np.broadcast_to(np.sqrt(np.asarray(params["variance"], dtype=float)), mu.shape)
        mass = np.exp(interval_log_probability((classes[:, :1] - mu) / sd, (classes[:, 1:] - mu) / sd))
        joint = mass * np.asarray(params["weights"], dtype=float)
        with np.errstate(invalid="ignore", divide="ignore"):
            explained = counts[:, None] * np.nan_to_num(joint / joint.sum(axis=1, keepdims=True))
        top = np.sort(mass, axis=0)[::-1]
        center, scale = prepared.constants["center"][0], prepared.constants["scale"][0]
        problems = []
        for k in np.flatnonzero(top[:2].sum(axis=0) >= 1 - _WITHIN_CLASSES):
            holds = np.argsort(mass[:, k])[::-1][:1 + (top[0, k] < 1 - _WITHIN_CLASSES)]
            if explained[:, k].sum() - explained[holds, k].sum() >= 1.0:  # its tails' counts decide its variance
                continue
            named = " and ".join(f"[{low * scale + center:.6g}, {high * scale + center:.6g})"
                                 for low, high in sorted(classes[holds].tolist()))
            problems.append(f"component {int(k)} (mean {mu[k] * scale + center:.6g}, sd {sd[k] * scale:.3g}) has its "
                            f"probability within the {agreeing(len(holds), 'class', 'classes')} {named}, and the "
                            "classes around hold no count it explains: the classes cannot determine both its mean and "
                            "its variance, and the likelihood rises (or stays flat) as its variance shrinks towards "
                            "zero, so the estimate is where EM stopped on that ridge, not a maximum, and more "
                            "iterations do not settle it; use method='map' (the prior keeps the variance from zero)"
                            + (", fewer components" if mu.size > 1 else "") + " or finer classes")
        return problems

    def parameter_unit(self, name: str, element: dict, units: dict) -> str:
        """Means in the unit of the class limits, variances in its square; weights are unitless."""
        unit = units.get(self.bounds[0], "")
        return {"mu": unit_shown(unit), "variance": unit_power(unit, 2)}.get(name, "")

    def sort_key(self, params: dict) -> np.ndarray:
        """Canonical order: ascending mean."""
        return params["mu"]

    def _to_gaussian(self, params: dict) -> dict:
        variance = np.asarray(params["variance"], dtype=float)
        dispersion = {"covariance": variance.reshape(1, 1)} if self.common_variance else {"variance": variance}
        return {"mu": np.asarray(params["mu"], dtype=float)[:, None], **dispersion}

    def _from_gaussian(self, params: dict) -> dict:
        variance = params["covariance"][0, 0] if self.common_variance else params["variance"]
        return {"mu": params["mu"][:, 0], "variance": np.asarray(variance, dtype=float)}

    # -- data and prior --------------------------------------------------------------------------------
    def unread_columns(self, columns) -> list:
        """The columns beside the two of the class limits (when those are named; two columns are read as they are)."""
        names = [str(c) for c in columns]
        return [c for c in columns if str(c) not in self.bounds] if all(b in names for b in self.bounds) else []

    def columns_text(self, features: list[str]) -> str:
        """Two columns, one variable: each row is a class of it, between the limits the columns hold; others unread."""
        unread = [str(c) for c in self.unread_columns(features)]
        limits = [str(f) for f in features if str(f) not in unread]
        beside = f"; {counted(len(unread), 'column')} not read {unread}" if unread else ""
        return f"classes of one variable, its limits in {limits}{beside}"

    def infinite_values_hint(self, workflow: bool = False) -> str:
        """An open end class is declared, not written as an infinite limit (as R's ``cut`` writes it)."""
        if workflow:
            return ("; an end class open to infinity is given by its finite limit and declared open, in [[models]]: "
                    "open_below = <the first class's upper limit>, open_above = <the last class's lower limit>")
        return ("; an end class open to infinity is given by its finite limit and declared open: "
                "GroupedGaussianMixture(..., open_below=<the first class's upper limit>, open_above=<the last "
                "class's lower limit>)")

    def class_limits(self, data) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper limit of every class (row) of ``data``, open ends as infinities."""
        features = [str(f) for f in data.features]
        if all(b in features for b in self.bounds):
            return data.values[:, features.index(self.bounds[0])], data.values[:, features.index(self.bounds[1])]
        if len(features) == 2:
            return data.values[:, 0], data.values[:, 1]
        raise InputError(f"data: expected the class limits in columns {list(self.bounds)} (or exactly two "
                         f"columns, lower then upper), got columns {features}")

    def prepare(self, data) -> Prepared:
        """Check the classes; standardise limits and midpoints by the weighted midpoints; open the end classes.

        EM works in these units (mean 0 and variance 1 of the count-weighted midpoints), whatever the
        data's magnitude; :meth:`to_data` maps the estimate back.
        """
        return self._prepare(data, warn=True)

    def prepare_to_score(self, data) -> Prepared:
        """:meth:`prepare` without its warnings about the classes and their counts, which the fit gave.

        Scoring the fit's own rows again (a bootstrap replicate's alignment, the responsibilities over draws) or
        new ones has nothing to add to them.
        """
        return self._prepare(data, warn=False)

    def _prepare(self, data, warn: bool) -> Prepared:
        lower, upper = self.class_limits(data)
        _check_classes(lower, upper, data.obs)
        if warn:
            self._warn_opened(lower, upper, data.frequency)
            self._warn_unweighted(data)
        weights = data.frequency
        units = _class_units(lower, upper, weights)
        center, scale = units.center[0], units.scale[0]
        low, high = (lower - center) / scale, (upper - center) / scale
        if self.open_below is not None:
            low[upper <= self.open_below] = -np.inf
        if self.open_above is not None:
            high[lower >= self.open_above] = np.inf
        constants = {"center": units.center, "scale": units.scale, "log_scale": units.log_scale,
                     "floor": np.array([_RELATIVE_FLOOR]), "working_center": np.zeros(1)}
        return Prepared({"z": units.working, "low": low, "high": high}, weights, constants)

    def _warn_unweighted(self, data: Data) -> None:
        """Warn when classes come without counts: beside columns not read, or as a histogram's classes alone.

        Beside columns not read: one of them likely holds the counts. A histogram's classes alone: several, each
        given once, none overlapping another (rows of single observations known only by their class repeat it).
        Without weights each row is one observation; class counts are frequency weights (``weights=``).
        """
        beside = self.unread_columns(data.features)
        if data.weights is None and not beside and data.n_obs > 1:
            lower, upper = self.class_limits(data)
            order = np.argsort(lower, kind="stable")
            rounding = 1e-9 * (upper.max() - lower.min())  # limits from sums of widths (0.1 + 0.2) may overlap by it
            if np.all(upper[order][:-1] <= lower[order][1:] + rounding):  # distinct, disjoint: a histogram's classes
                warnings.warn(f"weights: none given, so each of the {data.n_obs} classes counts as one observation; "
                              f"each class is given once and none overlaps another, as a histogram's classes are: "
                              f"if the classes have counts, pass them as weights (weights=counts; in a workflow, "
                              f"[data] weights = \"<the counts' column>\"); if each row is one observation, say so "
                              f"with weights=np.ones(n)", MixflowWarning, skip_file_prefixes=PACKAGE_FILES)
        if data.weights is None and beside:
            named = [str(c) for c in beside]
            positions = {str(f): j for j, f in enumerate(data.features)}
            columns = data.values[:, [positions[c] for c in named]]
            whole = np.all((columns >= 0) & (columns == np.round(columns)), axis=0)  # counts are whole numbers
            counts = [c for c, is_whole in zip(named, whole, strict=True) if is_whole]
            likely = min(counts or named, key=lambda c: not any(word in c.lower() for word in _COUNT_WORDS))
            warnings.warn(f"weights: none given, so each of the {data.n_obs} classes counts as one observation, and "
                          f"{agreeing(len(named), 'column')} {named} beside the class limits "
                          f"{agreeing(len(named), 'is', 'are')} not read; if a column holds the classes' counts, pass "
                          f"it as weights (e.g. weights=data[{likely!r}])", MixflowWarning,
                          skip_file_prefixes=PACKAGE_FILES)

    def _warn_opened(self, lower: np.ndarray, upper: np.ndarray, counts: np.ndarray) -> None:
        """Warn when ``open_above`` (``open_below``) opens classes of more than one lower (upper) limit.

        Each opened class then reaches infinity, so they overlap one another: a threshold given where the last
        (first) class's own limit was meant. Classes of one limit opened together are one class in several rows.
        """
        held = counts > 0
        for key, limit, limits, end in (("open_above", self.open_above, lower, "last"),
                                        ("open_below", self.open_below, upper, "first")):
            if limit is None:
                continue
            reached = (limits >= limit) if key == "open_above" else (limits <= limit)
            opened = np.unique(limits[held & reached])
            if not reached.any():  # a threshold that opens no class, not even an empty one, changes nothing
                own = limits.max() if key == "open_above" else limits.min()
                warnings.warn(f"{key}: {limit:g} opens no class: every class's {'lower' if end == 'last' else 'upper'} "
                              f"limit is {'below' if end == 'last' else 'above'} it, so the classes are fitted as if "
                              f"{key} were not given; to open the {end} class (as mixdist does), give its "
                              f"{'lower' if end == 'last' else 'upper'} limit, {own:g}", DeclarationWarning,
                              skip_file_prefixes=PACKAGE_FILES)
            if opened.size > 1:
                own = opened[-1] if key == "open_above" else opened[0]
                warnings.warn(f"{key}: {limit:g} opens {opened.size} classes of different limits "
                              f"{[float(v) for v in opened]}, each then reaching {'+' if end == 'last' else '-'}"
                              f"infinity over the others; to open only the {end} class (as mixdist does), give its "
                              f"{'lower' if end == 'last' else 'upper'} limit, {own:g}", DeclarationWarning,
                              skip_file_prefixes=PACKAGE_FILES)

    def chunked_constants(self, moments, features) -> dict:
        """:meth:`prepare`'s constants from the moments of chunked data: those of the class midpoints.

        The midpoints' weighted mean and variance follow from the limits' (their half-sum); their
        magnitude is bounded by the larger of the limits', which changes only the rounding.
        """
        from mixflow.families.scaling import from_moments

        names = [str(f) for f in features]
        if all(b in names for b in self.bounds):
            columns = [names.index(self.bounds[0]), names.index(self.bounds[1])]
        elif len(names) == 2:
            columns = [0, 1]
        else:
            raise InputError(f"data: expected the class limits in columns {list(self.bounds)} (or exactly two "
                             f"columns, lower then upper), got columns {names}")
        magnitude = moments.magnitude[columns]
        top = magnitude.max()
        ratio = magnitude / top  # the limits' unit values in the midpoints' common unit
        unit_mean = np.array([0.5 * ratio @ moments.unit_mean[columns]])
        cross = moments.unit_cross[np.ix_(columns, columns)] * np.outer(ratio, ratio)
        unit_variance = 0.25 * cross.sum() / moments.total_weight
        # the limits' anchors (their smallest values where they sit far from zero): the midpoints' is their half-sum
        anchor = np.array([0.5 * moments.anchors[columns].sum()])
        unit_sd = np.sqrt(max(unit_variance, 0.0))
        # the classes' mean width in the common unit, for midpoints without a spread of their own (_class_units)
        width = ((moments.anchors[columns[1]] - moments.anchors[columns[0]]) / top
                 + ratio @ (moments.unit_mean[columns] * np.array([-1.0, 1.0])))
        if not unit_sd > _SPREAD_RESOLVED * width:
            unit_sd = width / np.sqrt(12.0)
        units = from_moments(np.array([top]), unit_mean, np.array([unit_sd]), anchor=anchor)
        constants = {"center": units.center, "scale": units.scale, "log_scale": units.log_scale,
                     "floor": np.array([_RELATIVE_FLOOR]), "working_center": np.zeros(1), "units": units,
                     "columns": columns, "features": np.asarray(names)}
        constants["working_cov"] = np.array([[unit_variance / units.unit_sd[0] ** 2]])
        return constants

    def prepare_rows(self, values: np.ndarray, weights: np.ndarray, rows: np.ndarray, constants: dict) -> Prepared:
        """The classes of these rows checked (errors name ``rows``) and standardised as :meth:`prepare` does."""
        lower, upper = values[:, constants["columns"][0]], values[:, constants["columns"][1]]
        _check_classes(lower, upper, rows)
        center, scale = constants["center"][0], constants["scale"][0]
        low, high = (lower - center) / scale, (upper - center) / scale
        if self.open_below is not None:
            low[upper <= self.open_below] = -np.inf
        if self.open_above is not None:
            high[lower >= self.open_above] = np.inf
        z = constants["units"].apply((0.5 * lower + 0.5 * upper)[:, None])
        return Prepared({"z": z, "low": low, "high": high}, weights, constants)

    def estimate_moments(self, params: dict):
        """The fitted mixture's mean and variance, as moments of the class midpoints."""
        from mixflow.families.gaussian.model import _mixture_moments

        mu = np.asarray(params["mu"], dtype=float)[:, None]
        variance = np.broadcast_to(np.asarray(params["variance"], dtype=float), (mu.shape[0],))[:, None]
        moments = _mixture_moments(np.asarray(params["weights"], dtype=float), mu, variance)
        # the limits' columns both carry the midpoints' moments (their half-sum gives them back)
        from mixflow.chunked import Moments

        return Moments(1.0, np.repeat(moments.magnitude, 2), np.repeat(moments.unit_mean, 2),
                       np.full((2, 2), moments.unit_cross[0, 0]))

    def resolve_prior(self, prepared: Prepared):
        """The Gaussian prior's defaults, from the midpoints weighted by the counts (data units)."""
        return self.gaussian.resolve_prior(prepared)

    def working_prior(self, prepared: Prepared):
        """The Gaussian prior in the working units of ``prepared``."""
        return self.gaussian.working_prior(prepared)

    def to_working(self, params: dict, prepared: Prepared) -> dict:
        """Parameters from data units to the working units of ``prepared``."""
        center, scale = prepared.constants["center"][0], prepared.constants["scale"][0]
        out = dict(params)
        out["mu"] = (np.asarray(params["mu"], dtype=float) - center) / scale
        out["variance"] = np.asarray(params["variance"], dtype=float) / scale / scale
        gu.check_positive_definite("variance", np.atleast_1d(out["variance"]), "spherical")
        return out

    def to_data(self, params: dict, prepared: Prepared) -> dict:
        """Parameters from the working units of ``prepared`` to data units."""
        center, scale = prepared.constants["center"][0], prepared.constants["scale"][0]
        out = dict(params)
        with np.errstate(over="ignore", under="ignore"):
            out["mu"] = params["mu"] * scale + center
            out["variance"] = params["variance"] * scale * scale
        return out

    def init_points(self, prepared: Prepared) -> np.ndarray:
        """The standardised midpoints."""
        return prepared.arrays["z"]

    # -- EM steps --------------------------------------------------------------------------------------
    def e_step_constants(self, params: dict, prepared: Prepared) -> dict:
        """Working means and standard deviations, each of shape (K,), and the midpoint density's Jacobian."""
        mu = np.asarray(params["mu"], dtype=float)
        sd = np.broadcast_to(np.sqrt(np.asarray(params["variance"], dtype=float)), mu.shape)
        return {"mu": mu, "sd": sd, "log_scale": float(prepared.constants["log_scale"][0])}

    def log_density(self, constants: dict, chunk: Prepared) -> tuple[np.ndarray, tuple]:
        """Log P(class j | component k), shape (m, K), and E[z | j, k], E[z^2 | j, k] (centred units)."""
        mu, sd = constants["mu"], constants["sd"]
        if self.likelihood == "midpoint":
            z = chunk.arrays["z"]
            standard = (z - mu) / sd
            return -0.5 * standard**2 - np.log(sd) - _LOG_SQRT_2PI - constants["log_scale"], (z, z * z)
        alpha = (chunk.arrays["low"][:, None] - mu) / sd
        beta = (chunk.arrays["high"][:, None] - mu) / sd
        log_mass = interval_log_probability(alpha, beta)
        first, second = truncated_moments(alpha, beta, log_mass)
        expected = mu + sd * first
        expected_square = mu**2 + 2.0 * mu * sd * first + sd**2 * second
        return log_mass, (expected, expected_square)

    def chunk_features(self, chunk: Prepared) -> tuple:
        """Midpoint moments (used only for the first M-step from initial responsibilities)."""
        z = chunk.arrays["z"]
        return z, z * z

    def chunk_width(self, n_features: int) -> int:
        """Columns of the widest per-row temporary."""
        return 8 * self.n_components

    def statistics(self, weighted_resp: np.ndarray, chunk: Prepared, features: tuple) -> dict:
        """Expected first and second moments per component (pooled second moment if the variance is common)."""
        expected, expected_square = features
        first = np.einsum("mk,mk->k", np.broadcast_to(expected, weighted_resp.shape), weighted_resp)
        second = np.einsum("mk,mk->k", np.broadcast_to(expected_square, weighted_resp.shape), weighted_resp)
        return {"first": first[:, None], "second": second.sum(keepdims=True) if self.common_variance
                else second[:, None]}

    def m_step(self, counts: np.ndarray, stats: dict, prepared: Prepared, prior) -> tuple[dict, list[int]]:
        """The one-feature Gaussian M-step (MLE, or MAP under the prior) on the expected statistics."""
        covariance = "tied" if self.common_variance else "spherical"
        params = gn.m_step(covariance, counts, stats, prepared.constants["working_center"], prior)
        params, collapsed = gn.floor_variances(covariance, params, prepared.constants["floor"])
        return self._from_gaussian(params), collapsed

    def log_prior(self, params: dict, prior) -> float:
        """The Gaussian prior's log density of the component parameters (weights excluded)."""
        return self.gaussian.log_prior(self._to_gaussian(params), prior)

    def class_of(self, data: Data, values: np.ndarray) -> np.ndarray:
        """Row of the class each value falls in: the last class (by lower limit) starting at or below it."""
        lower, _ = self.class_limits(data)
        order = np.argsort(lower, kind="stable")
        position = np.searchsorted(lower[order], values, side="right") - 1
        return order[np.clip(position, 0, lower.size - 1)]

    def predictive_units(self, data):
        """Each unit at its class midpoint (observed and replicated counts are counts of the same classes)."""
        lower, upper = self.class_limits(data)
        rows = data.rounded_units()
        midpoints = (0.5 * (lower + upper))[rows][:, None]
        return xr.DataArray(midpoints, dims=("obs", "feature"), coords={"feature": ["class midpoint"]}), "ecdf"

    @classmethod
    def label_tag(cls, options: dict) -> str:
        """The likelihood (``interval`` by default), ``-common`` with a common variance."""
        return options.get("likelihood", "interval") + ("-common" if options.get("common_variance") else "")

    def simulate_data(self, params: dict, data: Data, rng: np.random.Generator) -> Data:
        """As many values as the total count, counted into the observed classes (the new weights)."""
        n = sampling.n_units(data)
        labels = sampling.component_labels(params, n, rng)
        sd = np.broadcast_to(np.sqrt(np.asarray(params["variance"], dtype=float)), np.shape(params["mu"]))
        values = np.asarray(params["mu"], dtype=float)[labels] + sd[labels] * rng.standard_normal(n)
        counts = np.bincount(self.class_of(data, values), minlength=data.n_obs).astype(float)
        return Data(values=data.values.copy(), features=data.features, obs=data.obs.copy(), weights=counts)

    def simulate(self, params: dict, data, rng: np.random.Generator) -> np.ndarray:
        """Replicate class counts (n_obs,): as many values as the total count, counted into the classes.

        The classes stay those observed; what is replicated are their counts, stored as the posterior
        predictive ``weights`` (see :meth:`predictive_variable`) beside the observed counts.
        """
        return self.simulate_data(params, data, rng).weights

    def predictive_variable(self, data) -> tuple[str, tuple]:
        """Name and dims of one replicate: ``weights`` (obs), the counts, like ``/observed_data/weights``."""
        return "weights", ("obs",)

    def check_parameters(self, params: dict, n_features: int, name: str = "init") -> dict:
        """Validate user-given ``weights``, ``mu`` and ``variance``; return copies."""
        k = self.n_components
        out = check_parameter_dict(params, {"weights": (k,), "mu": (k,),
                                            "variance": () if self.common_variance else (k,)}, name)
        if (out["variance"] <= 0).any():
            raise InputError(f"{name}['variance']: expected positive variances, got {out['variance'].tolist()}")
        return out
