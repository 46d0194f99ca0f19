"""Mixtures of linear regressions: declaration, Normal-Inverse-Gamma prior and the dispatch to its numerics.

p(y | x) = sum_k pi_k N(y | x' beta_k, variance_k): each component is a regression line (plane) with its
own noise variance. The E-step weighs the residuals of each line; the M-step is weighted least squares
per component (see :mod:`mixflow.families.regression.numerics`).
"""

import re
from dataclasses import KW_ONLY, InitVar, asdict, dataclass, field
from typing import ClassVar

import numpy as np

from mixflow.data import Data
from mixflow.errors import InputError, InputTypeError
from mixflow.families import sampling
from mixflow.families.base import (
    PRIOR_OUTWEIGHS,
    PRIOR_WORTH,
    SPURIOUS_RATIO,
    SPURIOUS_SIZE,
    MixtureModel,
    Prepared,
    batched_products,
    register_family,
    spurious_rule,
)
from mixflow.families.checks import check_concentration, check_n_components, check_parameter_dict, prior_from_argument
from mixflow.families.densities import inverse_gamma_log_density, normal_log_density_of_factors
from mixflow.families.gaussian.numerics import ABSOLUTE_FLOOR
from mixflow.families.regression import numerics as rn
from mixflow.units import unit_power, unit_ratio, unit_shown
from mixflow.wording import agreeing, counted, perhaps

__all__ = ["RegressionMixture", "RegressionPrior", "ResolvedRegressionPrior", "parse_formula"]

#: The smallest noise variance of any component, relative to the working response's variance (1 but for a constant
#: response); each component's own floor is also what its sums resolve (see ``numerics.m_step``)
_RELATIVE_FLOOR = ABSOLUTE_FLOOR
_NAME = r"[A-Za-z_.][A-Za-z0-9_.]*"


def parse_formula(formula: str) -> tuple[str, tuple[str, ...], bool]:
    """Parse ``"y ~ x1 + x2"`` into (response, covariates, intercept).

    Terms are column names joined by ``+``; ``- 1`` or ``+ 0`` (or a leading ``0 +``) drops the intercept,
    ``1`` keeps it. Names are letters, digits, ``_`` and ``.``; use ``response=`` and ``covariates=`` for
    other column names.
    """
    if not isinstance(formula, str) or formula.count("~") != 1:
        raise InputError(f"formula: expected 'response ~ covariate + ...', got {formula!r}")
    left, right = (part.strip() for part in formula.split("~"))
    if not re.fullmatch(_NAME, left):
        raise InputError(f"formula: expected one response column name left of '~', got {left!r}")
    parts = re.split(r"\s*([+-])\s*", right)
    parts = parts[1:] if parts[0] == "" else ["+", *parts]
    if not right or any(term == "" for term in parts[1::2]):
        raise InputError(f"formula: expected terms joined by '+' right of '~', got {right!r}")
    intercept, covariates = True, []
    for sign, term in zip(parts[0::2], parts[1::2], strict=True):
        if term in ("0", "1"):
            intercept = (term == "1") != (sign == "-")
        elif sign == "-":
            raise InputError(f"formula: only '- 1' can be subtracted, got '- {term}' in {formula!r}")
        elif not re.fullmatch(_NAME, term):
            raise InputError(f"formula: expected column names as terms, got {term!r} in {formula!r}")
        else:
            covariates.append(term)
    return left, tuple(covariates), intercept


def _positive(value, name: str, lower: float = 0.0) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not (np.isfinite(value) and value > lower):
        raise InputError(f"{name}: expected a number > {lower:g}, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class RegressionPrior:
    """Normal-Inverse-Gamma prior of a mixture of regressions, shared by MAP-EM, NUTS and ADVI.

    - weights ~ Dirichlet(weights_concentration);
    - variance_k ~ InverseGamma(shape, scale) (density ``scale^shape / Gamma(shape) v^(-shape-1) e^(-scale/v)``);
    - coefficients_k | variance_k ~ Normal(mean, variance_k * covariance), coefficients in data units.

    Defaults (``None``) are filled in from the data at fit time, in the spirit of mclust's default prior:
    ``mean`` the weighted least-squares coefficients of one regression through all the data;
    ``covariance`` ``(X'WX / N)^-1 / shrinkage`` for the design X (intercept column and covariates),
    a unit-information g-prior: it is worth ``shrinkage`` observations (default 0.01) and is invariant to
    shifting or rescaling a covariate; ``shape`` 1.5 and ``scale`` ``s2 / (2 K^2)`` where s2 is the
    residual variance of that single regression (mclust's InverseGamma(d/2 + 1, var / (2 K^(2/d))) for
    d = 1).

    Parameters
    ----------
    weights_concentration : float or sequence of float, default 1.0
    mean : sequence of float of length p, optional
        Prior mean of the coefficients (intercept first).
    shrinkage : float, default 0.01
        Used only when ``covariance`` is not given.
    covariance : p x p nested sequence, optional
        The matrix V0 (symmetric positive definite).
    shape : float, optional
    scale : float, optional

    """

    weights_concentration: float | tuple = 1.0
    mean: tuple | None = None
    shrinkage: float = 0.01
    covariance: tuple | None = None
    shape: float | None = None
    scale: float | None = None

    def __post_init__(self):
        object.__setattr__(self, "weights_concentration", check_concentration(self.weights_concentration))
        object.__setattr__(self, "shrinkage", _positive(self.shrinkage, "shrinkage"))
        if self.shrinkage is None:
            raise InputError("shrinkage: expected a number > 0, got None")
        object.__setattr__(self, "shape", _positive(self.shape, "shape"))
        object.__setattr__(self, "scale", _positive(self.scale, "scale"))
        if self.mean is not None:
            mean = np.asarray(self.mean, dtype=float)
            if mean.ndim != 1 or not np.isfinite(mean).all():
                raise InputError(f"mean: expected a finite vector, got {self.mean!r}")
            object.__setattr__(self, "mean", tuple(mean.tolist()))
        if self.covariance is not None:
            cov = np.asarray(self.covariance, dtype=float)
            if cov.ndim != 2 or cov.shape[0] != cov.shape[1] or not np.allclose(cov, cov.T) \
                    or np.linalg.eigvalsh(cov)[0] <= 0:
                raise InputError(f"covariance: expected a symmetric positive definite matrix, got {self.covariance!r}")
            object.__setattr__(self, "covariance", tuple(map(tuple, cov.tolist())))

    def to_dict(self) -> dict:
        """Plain dict of the hyperparameters (None where a data-scaled default applies)."""
        return asdict(self)


@dataclass(frozen=True)
class ResolvedRegressionPrior:
    """A :class:`RegressionPrior` with every default filled in, in data units, plus its working form."""

    concentration: np.ndarray
    mean: np.ndarray
    covariance: np.ndarray
    shape: float
    scale: float
    working: dict

    def to_dict(self) -> dict:
        """JSON-friendly dict of the numbers actually used (data units)."""
        return {"concentration": self.concentration.tolist(), "mean": self.mean.tolist(),
                "covariance": self.covariance.tolist(), "shape": self.shape, "scale": self.scale}


@dataclass(frozen=True)
class WorkingRegressionPrior:
    """The resolved prior in the working units EM runs in (:meth:`RegressionMixture.working_prior`).

    ``working`` has ``mean`` (p,) and ``precision`` (p, p) of the working coefficients (V0's inverse),
    and ``shape`` and ``scale`` of the inverse-gamma prior on the working variance.
    """

    concentration: np.ndarray
    working: dict
    coordinates: rn.Coordinates


def _checked(value, shape: tuple, name: str, coefficient_names: list) -> np.ndarray:
    array = np.asarray(value, dtype=float)
    if array.shape != shape:
        raise InputError(f"prior.{name}: expected shape {shape} (one row per coefficient {coefficient_names}), "
                         f"got {array.shape}")
    return array


def _normal_inverse_gamma(coefficients: np.ndarray, variance: np.ndarray, mean: np.ndarray, covariance: np.ndarray,
                          shape: float, scale: float) -> float:
    """Sum over components of log N(beta_k | mean, variance_k V0) + log InvGamma(variance_k | shape, scale)."""
    factor = np.linalg.cholesky(covariance)  # variance_k V0 = (sqrt(variance_k) L)(...)^T
    p = coefficients.shape[1]
    normal = normal_log_density_of_factors(
        coefficients, mean, np.linalg.inv(factor)[None] / np.sqrt(variance)[:, None, None],
        p * np.log(variance) + 2.0 * np.log(np.diagonal(factor)).sum())
    return float(normal.sum() + inverse_gamma_log_density(variance, shape, scale).sum())


def _working_log_prior(params: dict, prior: WorkingRegressionPrior) -> float:
    """The data-unit log prior density from working parameters: the working density plus the Jacobian.

    Per component, beta_working = diag(s_j / s_y) (shifted beta) and variance_working = variance / s_y^2,
    so the Jacobian is ``sum_j log s_j - (p + 2) log s_y`` (s_j = 1 for the intercept).
    """
    working, coordinates = prior.working, prior.coordinates
    variance, coefficients = params["variance"], params["coefficients"]
    total = _normal_inverse_gamma(coefficients, variance, working["mean"], np.linalg.inv(working["precision"]),
                                  working["shape"], working["scale"])
    p = coefficients.shape[1]
    jacobian = np.log(coordinates.covariate_scale).sum() - (p + 2) * coordinates.log_response_scale
    return float(total + coefficients.shape[0] * jacobian)


@register_family("regression")
@dataclass(frozen=True)
class RegressionMixture(MixtureModel):
    """A finite mixture of linear regressions with a noise variance per component.

    Parameters
    ----------
    n_components : int
        Number of components K >= 1.
    formula : str, optional
        ``"response ~ covariate + ..."`` (``- 1`` drops the intercept); or give the next three.
    response : str, optional
        Name of the response column.
    covariates : sequence of str, default ()
        Names of the covariate columns.
    intercept : bool, default True
    prior : "default", RegressionPrior or dict, default "default"
        The prior used by MAP-EM, MCMC and ADVI (see :class:`RegressionPrior`).

    Notes
    -----
    The data must have the response and covariate columns (other columns are ignored). Parameters:
    ``weights`` (component), ``coefficients`` (component, coefficient) with coefficient names
    ``"intercept"`` and the covariate names, ``variance`` (component). Components come in ascending order
    of their first coefficient (the intercept when there is one). A formula and the equivalent
    ``response``/``covariates`` give equal models.

    Examples
    --------
    >>> import mixflow
    >>> from mixflow.families.regression.model import RegressionMixture
    >>> tone = mixflow.load_dataset("tone")
    >>> tree = mixflow.fit(RegressionMixture(2, "tuned ~ stretchratio"), tone, method="map", random_seed=1)

    """

    n_components: int
    pymc_module: ClassVar[str] = "mixflow.families.regression.pymc"  # the PyMC form (MCMC, ADVI), see MixtureModel
    data_plot: ClassVar[str] = "regression"  # see MixtureModel
    workflow_keys: ClassVar[tuple] = ("formula", "response", "covariates", "intercept")
    prior_class: ClassVar[type] = RegressionPrior
    formula: InitVar[str | None] = None
    _: KW_ONLY
    response: str | None = None
    covariates: tuple = ()
    intercept: bool = True
    prior: RegressionPrior | str | dict = field(default="default")

    def __post_init__(self, formula):
        object.__setattr__(self, "n_components", check_n_components(self.n_components))
        covariates = (self.covariates,) if isinstance(self.covariates, str) else self.covariates
        if not isinstance(covariates, list | tuple) or not all(isinstance(c, str) and c for c in covariates):
            raise InputTypeError(f"covariates: expected a list of column names, got {self.covariates!r}")
        covariates = tuple(covariates)
        if not isinstance(self.intercept, bool):
            raise InputTypeError(f"intercept: expected True or False, got {self.intercept!r}")
        if formula is not None:
            parsed = parse_formula(formula)
            given = (self.response, covariates, self.intercept)
            if (self.response is not None or covariates) and given != parsed:
                raise InputError(f"formula: {formula!r} disagrees with response={self.response!r}, "
                                 f"covariates={list(covariates)}, intercept={self.intercept}; give one or the other")
            if not self.intercept and parsed[2]:  # True is the default, which a formula without one overrides
                raise InputError(f"intercept: expected True (or left out) with the formula {formula!r}, which has an "
                                 f"intercept, got False; drop it in the formula: '{formula} - 1'")
            object.__setattr__(self, "response", parsed[0])
            covariates = parsed[1]
            object.__setattr__(self, "intercept", parsed[2])
        if not isinstance(self.response, str) or not self.response:
            raise InputError(f"response: expected a column name (or a formula 'y ~ x'), got {self.response!r}")
        if len(set(covariates)) != len(covariates) or self.response in covariates:
            raise InputError(f"covariates: expected distinct names other than the response {self.response!r}, "
                             f"got {list(covariates)}")
        if not covariates and not self.intercept:
            raise InputError("covariates: expected at least one covariate or an intercept, got neither")
        object.__setattr__(self, "covariates", covariates)
        object.__setattr__(self, "prior", prior_from_argument(self.prior, self.prior_class, self.n_components))

    # -- declaration -----------------------------------------------------------------------------------
    def as_formula(self) -> str:
        """The model's formula, e.g. ``"tuned ~ stretchratio"``."""
        terms = list(self.covariates) + ([] if self.intercept else ["0"])
        return f"{self.response} ~ {' + '.join(terms) if terms else '1'}"

    def to_dict(self) -> dict:
        """The declaration as a plain dict."""
        return {"n_components": self.n_components, "response": self.response, "covariates": list(self.covariates),
                "intercept": self.intercept, "prior": self.prior.to_dict()}

    @classmethod
    def from_dict(cls, spec: dict) -> "RegressionMixture":
        """Inverse of :meth:`to_dict`."""
        return cls(spec["n_components"], response=spec["response"], covariates=tuple(spec.get("covariates", ())),
                   intercept=spec.get("intercept", True), prior=RegressionPrior(**spec.get("prior", {})))

    @property
    def coefficient_names(self) -> list[str]:
        """``"intercept"`` (if any) then the covariates."""
        return (["intercept"] if self.intercept else []) + list(self.covariates)

    def parameter_dims(self, features=None) -> dict:
        """Dims of each parameter, shared by every method's output."""
        return {"weights": ("component",), "coefficients": ("component", "coefficient"), "variance": ("component",)}

    def component_rows(self, params: dict) -> int:
        """A component's noise variance needs p + 1 observations (p coefficients)."""
        return np.shape(params["coefficients"])[-1] + 1

    def component_parameters(self, params: dict) -> int:
        """A component's p coefficients and its own variance: p + 1.

        A line with its own variance fitted to n rows gains on them, over new rows, about n (p + 1) / (n - p - 2)
        of log-likelihood (the small-sample correction of AICc), as a Gaussian component with its own covariance
        does: more than the criteria charge when n is near p + 1.
        """
        return np.shape(params["coefficients"])[-1] + 1

    def component_parameters_text(self) -> str:
        """:meth:`component_parameters` in words."""
        return "p + 1, its p coefficients and its variance"

    def spurious_rule_gist(self) -> str:
        """A line through a few points."""
        return "a line fitted to a few points it passes almost exactly"

    def spurious_rule_text(self) -> str:
        """The rule of :meth:`spurious_components` in words: a line, its variance, no separation test."""
        return (f"{self.spurious_rule_gist()} (McLachlan and Peel 2000, sec. 3.10), with "
                "fewer observations than its coefficients and variance need, or fewer than "
                f"{SPURIOUS_SIZE} times that, no more than another component, and a variance at most "
                f"{SPURIOUS_RATIO:g} of another's")

    def spurious_components(self, params: dict, total_weight: float) -> list[tuple[int, float, float]]:
        """Spurious components (:func:`~mixflow.families.base.spurious_rule`): lines through a few points.

        A component needs :meth:`component_rows` observations; its Hathaway ratio is its
        variance over the largest other component's (the Gaussian rule's smallest eigenvalue, in one
        dimension). A line fitted to a handful of points that it passes almost exactly has a large likelihood
        from its tiny variance alone, as a Gaussian component on a few points close together or near a subspace has. The
        Gaussian rule's exception for a small tight group lying apart from the others has no counterpart:
        lines cross, so no line lies outside another's reach.
        """
        variance = np.asarray(params["variance"], dtype=float)
        if variance.size < 2:
            return []
        largest_other = np.array([np.delete(variance, h).max() for h in range(variance.size)])
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = np.where(largest_other > 0, variance / largest_other, np.inf)
        counts = np.asarray(params["weights"], dtype=float) * total_weight
        return spurious_rule(counts, ratios, self.component_rows(params))

    def extra_coords(self, data) -> dict:
        """The ``coefficient`` coordinate."""
        return {"coefficient": np.array(self.coefficient_names)}

    def n_parameters(self, n_features: int, n_components: int | None = None) -> int:
        """K - 1 weights, K p coefficients and K variances."""
        k = n_components or self.n_components
        return (k - 1) + k * len(self.coefficient_names) + k

    def parameter_unit(self, name: str, element: dict, units: dict) -> str:
        """The intercept in the response's unit, a slope in response per covariate, the variance squared."""
        response = units.get(self.response, "")
        if name == "variance":
            return unit_power(response, 2)
        if name == "coefficients":
            coefficient = str(element.get("coefficient", ""))
            if coefficient == "intercept":
                return unit_shown(response)
            return unit_ratio(response, units.get(coefficient, ""))
        return ""

    def sort_key(self, params: dict) -> np.ndarray:
        """Canonical order: ascending first coefficient (the intercept when there is one)."""
        return params["coefficients"][:, 0]

    # -- data and prior --------------------------------------------------------------------------------
    def columns_text(self, features: list[str]) -> str:
        """The response and covariates, and the columns held beside them that the formula does not read."""
        unread = [str(c) for c in self.unread_columns(features)]
        beside = f"; {counted(len(unread), 'column')} not read {unread}" if unread else ""
        covariates = f"{counted(len(self.covariates), 'covariate')} {list(self.covariates)}"
        return f"response {self.response!r}, {covariates}{beside}"

    def unread_columns(self, columns) -> list:
        """The columns the formula does not name."""
        return [c for c in columns if str(c) not in (self.response, *self.covariates)]

    def _check_named(self, names: list[str]) -> None:
        """Raise unless the data's columns ``names`` hold the formula's response and covariates.

        A misspelt one is said with the column it is closest to.
        """
        missing = [c for c in (self.response, *self.covariates) if c not in names]
        if missing:
            raise InputError(f"data: expected columns {[self.response, *self.covariates]} (response and "
                             f"covariates of the model), got {names} (missing {missing})"
                             f"{perhaps(missing, set(names) - {self.response, *self.covariates})}")

    def _columns(self, data) -> tuple[np.ndarray, np.ndarray]:
        features = [str(f) for f in data.features]
        self._check_named(features)
        index = {name: j for j, name in enumerate(features)}
        return data.values[:, [index[c] for c in self.covariates]], data.values[:, index[self.response]]

    def prepare(self, data) -> Prepared:
        """Working (standardised) design and response, their products, the variance floor and the coordinates.

        EM works in these units whatever the data's magnitude; :meth:`to_data` maps the estimate back and
        :meth:`log_density` includes the Jacobian of the response's scale. The design must have full rank.
        """
        return self._prepare(data, full_rank=True)

    def prepare_to_score(self, data) -> Prepared:
        """:meth:`prepare` without the rank check: rows to score may share one covariate value, or be one row."""
        return self._prepare(data, full_rank=False)

    def _prepare(self, data, full_rank: bool) -> Prepared:
        covariates, response = self._columns(data)
        weights = data.frequency
        design, working, coordinates = rn.design_and_response(covariates, response, weights, self.intercept)
        gram = (design * weights[:, None]).T @ design / weights.sum()
        if full_rank and np.linalg.matrix_rank(gram) < design.shape[1]:
            raise InputError(f"data: expected covariates {list(self.covariates)} that are not collinear "
                             f"{'(with the intercept) ' if self.intercept else ''}on the rows with positive "
                             "weight, got a rank-deficient design")
        variance = weights @ (working - weights @ working / weights.sum()) ** 2 / weights.sum()
        variance = variance if variance > 0 else 1.0
        return Prepared({"design": design, "response": working, "outer": rn.augmented_outer(design, working)},
                        weights, {"coordinates": coordinates, "response_variance": variance, "gram": gram})

    def chunked_constants(self, moments, features) -> dict:
        """:meth:`prepare`'s constants from the moments of chunked data, with the pooled regression.

        The working design's Gram matrix, the response's variance and the pooled regression come from the
        weighted moments of the columns (:class:`mixflow.chunked.Moments`), not from another pass.
        """
        from mixflow.families.scaling import from_moments

        names = [str(f) for f in features]
        self._check_named(names)
        x, y = [names.index(c) for c in self.covariates], names.index(self.response)
        mag, mean, sd = moments.magnitude, moments.unit_mean, moments.unit_sd
        anchor = moments.anchors
        x_units = from_moments(mag[x], mean[x], sd[x], anchor=anchor[x])
        y_units = from_moments(mag[[y]], mean[[y]], sd[[y]], anchor=anchor[[y]])
        columns = x + [y]
        unit_sd = np.concatenate([x_units.unit_sd, y_units.unit_sd])
        # E_w[a b] of the working columns: centred products over the standard deviations, or, without an
        # intercept (no centring), the uncentred ones
        products = moments.unit_cross[np.ix_(columns, columns)] / moments.total_weight
        if not self.intercept:
            products = products + np.outer(mean[columns], mean[columns])
        products = products / np.outer(unit_sd, unit_sd)
        q = len(x)
        if self.intercept:
            coordinates = rn.Coordinates(x_units.center, float(y_units.center[0]), True, x_units.scale,
                                         float(y_units.scale[0]), float(y_units.log_scale[0]))
            gram = np.zeros((q + 1, q + 1))
            gram[0, 0], gram[1:, 1:] = 1.0, products[:q, :q]
            cross = np.concatenate([[0.0], products[:q, q]])
        else:
            coordinates = rn.Coordinates(np.zeros(q), 0.0, False, x_units.scale, float(y_units.scale[0]),
                                         float(y_units.log_scale[0]))
            gram, cross = products[:q, :q], products[:q, q]
        if np.linalg.matrix_rank(gram) < gram.shape[0]:
            raise InputError(f"data: expected covariates {list(self.covariates)} that are not collinear "
                             f"{'(with the intercept) ' if self.intercept else ''}on the rows with positive "
                             "weight, got a rank-deficient design")
        variance = moments.unit_cross[y, y] / moments.total_weight / (unit_sd[q] * unit_sd[q])
        variance = variance if variance > 0 else 1.0
        pooled = np.linalg.solve(gram, cross)
        second = products[q, q]  # E_w[y^2] of the working response
        residual_variance = second - 2.0 * pooled @ cross + pooled @ gram @ pooled
        return {"coordinates": coordinates, "response_variance": variance, "gram": gram,
                "pooled": (pooled, residual_variance),
                "columns": (np.array(x), y), "units": (x_units, y_units)}

    def prepare_rows(self, values: np.ndarray, weights: np.ndarray, rows: np.ndarray, constants: dict) -> Prepared:
        """The working design, response and their products of these rows (:meth:`chunked_constants`)."""
        (x, y), (x_units, y_units) = constants["columns"], constants["units"]
        if self.intercept:
            design = np.column_stack([np.ones(values.shape[0]), x_units.apply(values[:, x])])
            response = y_units.apply(values[:, [y]])[:, 0]
        else:
            coordinates = constants["coordinates"]
            design, response = values[:, x] / coordinates.covariate_scale, values[:, y] / coordinates.response_scale
        return Prepared({"design": design, "response": response, "outer": rn.augmented_outer(design, response)},
                        weights, constants)

    def estimate_moments(self, params: dict):
        """None: the estimate does not describe the covariates, whose units the fitted rows' moments fix."""
        return None

    def _pooled(self, prepared: Prepared) -> tuple[np.ndarray, float]:
        """Working coefficients and residual variance of one weighted regression through all the data."""
        if "pooled" in prepared.constants:  # chunked data: from their moments
            pooled, residual_variance = prepared.constants["pooled"]
            if not residual_variance > 0:
                residual_variance = prepared.constants["response_variance"]
            return pooled, float(residual_variance)
        design, response, w = prepared.arrays["design"], prepared.arrays["response"], prepared.weights
        pooled = np.linalg.solve(prepared.constants["gram"], (design * w[:, None]).T @ response / w.sum())
        residual_variance = w @ (response - design @ pooled) ** 2 / w.sum()
        if not residual_variance > 0:  # an exact fit: fall back on the response's own variance
            residual_variance = prepared.constants["response_variance"]
        return pooled, float(residual_variance)

    def working_prior(self, prepared: Prepared) -> "WorkingRegressionPrior":
        """The prior in working units: what the M-step and :meth:`log_prior` use (see :meth:`resolve_prior`)."""
        prior, k, p = self.prior, self.n_components, len(self.coefficient_names)
        coordinates = prepared.constants["coordinates"]
        pooled, residual_variance = self._pooled(prepared)
        linear = coordinates.linear_map(p)
        if prior.mean is None:
            mean = pooled
        else:
            mean = coordinates.to_working(_checked(prior.mean, (p,), "mean", self.coefficient_names))
        if prior.covariance is None:
            precision = prepared.constants["gram"] * prior.shrinkage
        else:
            covariance = _checked(prior.covariance, (p, p), "covariance", self.coefficient_names)
            precision = linear.T @ np.linalg.inv(covariance) @ linear
        shape = 1.5 if prior.shape is None else prior.shape
        scale = (residual_variance / (2.0 * k**2) if prior.scale is None
                 else float(coordinates.variance_to_working(prior.scale)))
        working = {"mean": mean, "precision": precision, "shape": float(shape), "scale": scale}
        concentration = np.broadcast_to(np.asarray(prior.weights_concentration, dtype=float), (k,)).copy()
        return WorkingRegressionPrior(concentration, working, coordinates)

    def resolve_prior(self, prepared: Prepared) -> ResolvedRegressionPrior:
        """Fill the prior's defaults from the data (one pooled regression; see :class:`RegressionPrior`).

        Data units, given values kept as given; ``working`` holds the same prior in the working units.
        """
        prior, p = self.prior, len(self.coefficient_names)
        working_prior = self.working_prior(prepared)
        working, coordinates = working_prior.working, prepared.constants["coordinates"]
        mean = coordinates.to_data(working["mean"]) if prior.mean is None else np.asarray(prior.mean, dtype=float)
        if prior.covariance is None:
            linear = coordinates.linear_map(p)
            with np.errstate(over="ignore", under="ignore"):
                covariance = linear @ np.linalg.inv(working["precision"]) @ linear.T
        else:
            covariance = np.asarray(prior.covariance, dtype=float)
        scale = float(coordinates.variance_to_data(working["scale"])) if prior.scale is None else prior.scale
        return ResolvedRegressionPrior(working_prior.concentration, mean, covariance, working["shape"], scale,
                                       working)

    def to_working(self, params: dict, prepared: Prepared) -> dict:
        """Parameters from data units to the working units of ``prepared``."""
        coordinates = prepared.constants["coordinates"]
        variance = coordinates.variance_to_working(params["variance"])
        if not (variance > 0).all():
            raise InputError(f"params['variance']: expected positive variances in the standardised units of the "
                             f"data, got {variance.tolist()} (a variance underflows to zero in data units for "
                             "responses near 1e-300: rescale the data and fit again)")
        return {**params, "coefficients": coordinates.to_working(params["coefficients"]), "variance": variance}

    def to_data(self, params: dict, prepared: Prepared) -> dict:
        """Parameters from the working units of ``prepared`` to data units."""
        coordinates = prepared.constants["coordinates"]
        return {**params, "coefficients": coordinates.to_data(params["coefficients"]),
                "variance": coordinates.variance_to_data(params["variance"])}

    def split_axes(self) -> tuple[str, ...]:
        """Both: along a line (its points' major axis) and across it, the points above it from those below.

        A component's points spread most along its line (in :meth:`init_points`' units), so the major axis cuts
        the line in two; the minor axis, about normal to it, cuts by the sign of the residual, which is how two
        lines close together divide the points between them (scikit-learn's diabetes data, three lines of the
        response on bmi and bp: a maximum 1.36 higher is one such move away).
        """
        return ("major", "minor")

    def init_points(self, prepared: Prepared) -> np.ndarray:
        """Covariates and response, each scaled to unit weighted variance, for k-means++ seeding."""
        design = prepared.arrays["design"][:, 1:] if self.intercept else prepared.arrays["design"]
        points = np.column_stack([design, prepared.arrays["response"]])
        w = prepared.weights
        centred = points - w @ points / w.sum()
        scale = np.sqrt(w @ centred**2 / w.sum())
        return centred / np.where(scale > 0, scale, 1.0)

    # -- EM steps --------------------------------------------------------------------------------------
    def e_step_constants(self, params: dict, prepared: Prepared) -> dict:
        """Working coefficients and variances, and the log scale of the response (the Jacobian)."""
        return {"coefficients": np.asarray(params["coefficients"], dtype=float),
                "variance": np.asarray(params["variance"], dtype=float),
                "log_scale": prepared.constants["coordinates"].log_response_scale}

    def log_density(self, constants: dict, chunk: Prepared) -> tuple[np.ndarray, np.ndarray]:
        """Per-component log densities (m, K) of the responses in data units, and the chunk's augmented products."""
        out = rn.log_density(constants["coefficients"], constants["variance"], chunk.arrays["design"],
                             chunk.arrays["response"])
        out -= constants["log_scale"]
        return out, chunk.arrays["outer"]

    def chunk_features(self, chunk: Prepared) -> np.ndarray:
        """The augmented products (computed once in :meth:`prepare`)."""
        return chunk.arrays["outer"]

    def chunk_width(self, n_features: int) -> int:
        """Columns of the widest per-row temporary."""
        return 3 * self.n_components + len(self.coefficient_names)

    def stacks_components(self) -> bool:
        """Each component's steps stand alone (see :meth:`MixtureModel.stacks_components`)."""
        return True

    def statistics(self, weighted_resp: np.ndarray, chunk: Prepared, features: np.ndarray) -> dict:
        """Per-component weighted Gram sums of ``[D, y]``, shape (K, T)."""
        return {"gram": (features.T @ weighted_resp).T}

    def stacked_statistics(self, by_mixture: np.ndarray, chunk: Prepared, features: np.ndarray) -> dict:
        """:meth:`statistics` of mixtures stacked, each mixture's product in one batched product."""
        return {"gram": batched_products(features, by_mixture)}

    def prior_problems(self, params: dict, responsibilities: np.ndarray, prepared: Prepared, prior) -> list[str]:
        """Components of many observations whose noise variance is mostly the default prior's.

        The default prior's part of a component's MAP variance is twice its scale (the pooled regression's residual
        variance over 2 K^2) plus the coefficients' squared distance from its mean (that one regression through
        all rows), weighed by its precision: for lines far apart, both are their spread between them. The prior is
        worth ``p + 2 shape + 2`` observations; a component of :data:`PRIOR_WORTH` times as many should outweigh
        it, and when the prior's part exceeds :data:`PRIOR_OUTWEIGHS` times such a component's residual sum of
        squares, its variance is some five times the data's own or more: the prior's, not the data's.
        """
        given = (self.prior.scale, self.prior.mean, self.prior.covariance)
        if any(value is not None for value in given) or "design" not in prepared.arrays:  # the user's are theirs
            return []
        working, weights = prior.working, prepared.weights
        coefficients = np.asarray(params["coefficients"], dtype=float)
        residuals = prepared.arrays["response"][:, None] - prepared.arrays["design"] @ coefficients.T
        scatter = (weights[:, None] * responsibilities * residuals**2).sum(axis=0)
        gap = coefficients - working["mean"]
        part = 2.0 * working["scale"] + np.einsum("kp,pq,kq->k", gap, working["precision"], gap)
        worth = coefficients.shape[1] + 2.0 * working["shape"] + 2.0
        counts = weights @ responsibilities
        outweighed = np.flatnonzero((counts >= PRIOR_WORTH * worth) & (part > PRIOR_OUTWEIGHS * scatter)).tolist()
        if not outweighed:
            return []
        return [f"the default prior outweighs the data in the noise variance of "
                f"{agreeing(len(outweighed), 'component')} {outweighed}: its scale and the coefficients' distance "
                f"from its mean (one regression through all the rows) exceed {PRIOR_OUTWEIGHS} times the component's "
                "own residual sum of squares, so the variance is mostly the prior's; lines far apart inflate that "
                "one regression's residuals. Give the prior a scale, mean or covariance (RegressionPrior(...)) or use "
                "the MLE (method='em')"]

    def collapse_description(self, components: list[int]) -> str:
        """A regression collapses through its noise variance."""
        return (f"{agreeing(len(components), 'component')} {components}: the noise variance collapsed: the line "
                "passes through the component's rows exactly (no more rows than coefficients, or many rows with one "
                "response value, such as a count's zeros, which a flat line fits); it is held at the smallest variance "
                "its sums resolve (1000 machine epsilons of the terms its residual sum of squares is formed from)")

    def m_step(self, counts: np.ndarray, stats: dict, prepared: Prepared, prior) -> tuple[dict, list[int]]:
        """Weighted least squares per component (MAP: the Normal-Inverse-Gamma mode); floored variances."""
        p = len(self.coefficient_names)
        coefficients, variance, collapsed = rn.m_step(counts, stats["gram"], p,
                                                      None if prior is None else prior.working,
                                                      _RELATIVE_FLOOR * prepared.constants["response_variance"])
        return {"coefficients": coefficients, "variance": variance}, collapsed

    def log_prior(self, params: dict, prior) -> float:
        """Sum over components of log N(beta_k | mean, variance_k V0) + log InvGamma(variance_k).

        Data-unit ``params`` under the data-unit :meth:`resolve_prior`, or working ``params`` under
        :meth:`working_prior`; either way the density of the data-unit parameters.
        """
        if isinstance(prior, WorkingRegressionPrior):
            return _working_log_prior(params, prior)
        return _normal_inverse_gamma(params["coefficients"], params["variance"], prior.mean, prior.covariance,
                                     prior.shape, prior.scale)

    def design(self, data: Data) -> tuple[np.ndarray, int]:
        """The design matrix (intercept column first, then the covariates) and the response column index."""
        features = [str(f) for f in data.features]
        columns = [data.values[:, features.index(c)] for c in self.covariates]
        design = np.column_stack(([np.ones(data.n_obs)] if self.intercept else []) + columns)
        return design, features.index(self.response)

    def predictive_units(self, data):
        """The response only (the covariates are held fixed)."""
        units, _ = super().predictive_units(data)
        return units.sel(feature=[self.response]), None

    def simulate(self, params: dict, data, rng: np.random.Generator) -> np.ndarray:
        """One replicate of the responses (n_units,): the covariates are held fixed, so only the response is data.

        Stored as the posterior predictive ``x`` (obs), like the pointwise log-likelihood's ``x`` and the observed
        responses beside it (:meth:`predictive_variable`), the pairing ArviZ's LOO-PIT and predictive checks read.
        """
        _, response = self.design(data)
        return self.simulate_data(params, data, rng).values[:, response]

    def predictive_variable(self, data) -> tuple[str, tuple]:
        """Name and dims of one replicate: ``x`` by rows (``obs``) or frequency units (``unit``), the response only."""
        return "x", ("obs" if data.weights is None else "unit",)

    def simulate_data(self, params: dict, data: Data, rng: np.random.Generator) -> Data:
        """The covariates as observed (each unit of a row's integer weight its own row), new responses."""
        rows = sampling.expanded_rows(data, "simulate a regression's responses")
        design, response = self.design(data)
        labels = sampling.component_labels(params, rows.size, rng)
        coefficients, variance = np.asarray(params["coefficients"]), np.asarray(params["variance"], dtype=float)
        values = data.values[rows].copy()
        values[:, response] = np.einsum("np,np->n", design[rows], coefficients[labels]) + np.sqrt(
            variance[labels]) * rng.standard_normal(rows.size)
        return Data(values=values, features=data.features, obs=np.arange(rows.size), weights=None)

    def check_parameters(self, params: dict, n_features: int, name: str = "init") -> dict:
        """Validate user-given ``weights``, ``coefficients`` (K, p) and ``variance`` (K,); return copies."""
        k, p = self.n_components, len(self.coefficient_names)
        out = check_parameter_dict(params, {"weights": (k,), "coefficients": (k, p), "variance": (k,)}, name)
        if (out["variance"] <= 0).any():
            raise InputError(f"{name}['variance']: expected positive variances, got {out['variance'].tolist()}")
        return out
