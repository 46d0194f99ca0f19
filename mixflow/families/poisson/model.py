"""The Poisson family: a finite mixture of Poisson distributions for counts, with its conjugate Gamma prior.

p(y) = sum_k pi_k Poisson(y | rate_k). The E-step needs ``log Poisson(y | rate_k) = y log(rate_k) - rate_k - log(y!)``,
computed as ``log Poisson(y | y) - (y log(y / rate_k) + rate_k - y)`` (Loader 2000): the three terms of the
first form are each about ``y log y`` and cancel to a few units, losing every digit for counts near 1e15, while
the saturated term is computed once per row by Stirling's series and the deviance term is small where it
matters; the M-step needs per component the weighted count N_k and the weighted total S_k = sum_n r_nk y_n:

- MLE: ``rate_k = S_k / N_k``, the responsibility-weighted mean;
- MAP under ``rate_k ~ Gamma(shape, rate)``: ``rate_k = (S_k + shape - 1) / (N_k + rate)``, the mode of the
  conjugate Gamma posterior (closed form; ``shape >= 1`` keeps the mode finite).

The log-likelihood includes the ``-log(y!)`` terms, so it is the log probability of the counts.
"""

from dataclasses import asdict, dataclass, field
from typing import ClassVar

import numpy as np
from scipy.special import gammaln, xlogy

from mixflow.data import Data
from mixflow.errors import InputError
from mixflow.families import sampling
from mixflow.families.base import MixtureModel, Prepared, register_family
from mixflow.families.checks import (
    check_concentration,
    check_n_components,
    check_parameter_dict,
    named_rows,
    prior_from_argument,
)
from mixflow.families.densities import gamma_log_density
from mixflow.units import unit_shown

__all__ = ["PoissonMixture", "PoissonPrior", "ResolvedPoissonPrior"]

_DEFAULT_EXPOSURE = 0.01


# -- the prior ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PoissonPrior:
    """Conjugate prior of a Poisson mixture, shared by MAP-EM, NUTS and ADVI.

    - weights ~ Dirichlet(weights_concentration);
    - rate_k ~ Gamma(shape, rate) independently (density ``rate^shape / Gamma(shape) x^(shape-1) e^(-rate x)``).

    The default is worth a hundredth of an observation, with its mode at the weighted data mean ybar:
    ``rate = 0.01`` (the prior's "exposure", in observations) and ``shape = 1 + 0.01 * ybar`` (its
    "events" plus one), so the MAP rate is ``(S_k + 0.01 ybar) / (N_k + 0.01)``, a responsibility-weighted
    mean with 0.01 pseudo-observation at ybar. It is proper, weak, and on the scale of the counts.

    Parameters
    ----------
    weights_concentration : float or sequence of float, default 1.0
    shape : float, optional
        Gamma shape, at least 1 (so that the MAP rate is finite).
    rate : float, optional
        Gamma rate (inverse scale), positive.

    """

    weights_concentration: float | tuple = 1.0
    shape: float | None = None
    rate: float | None = None

    def __post_init__(self):
        object.__setattr__(self, "weights_concentration", check_concentration(self.weights_concentration))
        if self.shape is not None:
            if isinstance(self.shape, bool) or not isinstance(self.shape, int | float) \
                    or not (np.isfinite(self.shape) and self.shape >= 1):
                raise InputError(f"shape: expected a number >= 1 (the MAP rate is the posterior mode), "
                                 f"got {self.shape!r}")
            object.__setattr__(self, "shape", float(self.shape))
        if self.rate is not None:
            if isinstance(self.rate, bool) or not isinstance(self.rate, int | float) \
                    or not (np.isfinite(self.rate) and self.rate > 0):
                raise InputError(f"rate: expected a positive number, got {self.rate!r}")
            object.__setattr__(self, "rate", float(self.rate))

    def to_dict(self) -> dict:
        """Plain dict of the hyperparameters (None where a data-scaled default applies)."""
        return asdict(self)


@dataclass(frozen=True)
class ResolvedPoissonPrior:
    """A :class:`PoissonPrior` with every default filled in from the data."""

    concentration: np.ndarray
    shape: float
    rate: float

    def to_dict(self) -> dict:
        """JSON-friendly dict of the numbers actually used."""
        return {"concentration": self.concentration.tolist(), "shape": self.shape, "rate": self.rate}


# -- numerics ----------------------------------------------------------------------------------------------
#: Counts from which :func:`saturated_log_density` uses Stirling's series (its first omitted term is below 1e-17
#: there) rather than ``log(y!)``, whose rounding grows with ``y log y``.
_STIRLING_FROM = 100.0


def saturated_log_density(counts: np.ndarray) -> np.ndarray:
    """``log Poisson(y | y) = y log y - y - log(y!)`` per count, accurate to the rounding of its own (small) value.

    From :data:`_STIRLING_FROM` on, ``-log(2 pi y) / 2`` less Stirling's series of ``log(y!)``'s remainder; below
    it the three terms directly (``0 log 0 = 0``).
    """
    counts = np.asarray(counts, dtype=float)
    direct = xlogy(counts, counts) - counts - gammaln(counts + 1.0)
    large = np.maximum(counts, _STIRLING_FROM)
    inverse = 1.0 / large
    square = inverse * inverse
    series = inverse * (1.0 / 12 - square * (1.0 / 360 - square * (1.0 / 1260 - square / 1680)))
    return np.where(counts < _STIRLING_FROM, direct, -0.5 * np.log(2.0 * np.pi * large) - series)


#: Relative distances ``|rate - y| / y`` up to which :func:`log_density` sums a series for the deviance term.
_NEAR = 0.1


def log_density(rate: np.ndarray, counts: np.ndarray, saturated: np.ndarray) -> np.ndarray:
    """Log Poisson(y_n | rate_k), shape (m, K), from ``saturated`` = :func:`saturated_log_density` of the counts.

    ``log Poisson(y | y) - (y log(y / rate) + rate - y)``, the last term half the unit deviance: where the rate
    is within :data:`_NEAR` of the count, ``y (log1p(d) - d)`` with ``d = (rate - y) / y`` by a series
    (:func:`_log1p_less`), with no cancellation of terms of size ``y log y``; elsewhere ``y log(rate / y) -
    (rate - y)``, whose terms are at most about 20 times the result (relative error about 1e-14, where ``rate / y``
    does not underflow). A count of 0 gives ``-rate``; a rate of 0 gives -inf to a positive count and 0 to a zero
    one.
    """
    counts = counts[:, None]
    floored = np.maximum(counts, 1.0)  # a zero count's terms in y vanish; 1 keeps the ratio finite
    difference = rate[None, :] - counts
    relative = difference / floored
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # a zero rate's log; each branch elsewhere
        far = counts * np.log(rate[None, :] / floored) - difference
        near = counts * _log1p_less(relative)
    return np.where(counts > 0, np.where(np.abs(relative) <= _NEAR, near, far), -rate[None, :]) + saturated[:, None]


def _log1p_less(d: np.ndarray) -> np.ndarray:
    """``log1p(d) - d`` for ``|d| <= 0.1``, to the rounding of its own value (about ``-d^2 / 2``).

    ``log1p(d) = 2 atanh(u)`` with ``u = d / (2 + d)``, so ``log1p(d) - d = -d^2 / (2 + d) + 2 u (u^2 / 3 + u^4 / 5
    + ...)``; with ``|u| <= 0.053`` the terms to ``u^14 / 15`` reach below 1e-16 of the first.
    """
    u = d / (2.0 + d)
    u2 = u * u
    series = u2 * (1 / 3 + u2 * (1 / 5 + u2 * (1 / 7 + u2 * (1 / 9 + u2 * (1 / 11 + u2 * (1 / 13 + u2 / 15))))))
    return 2.0 * u * series - d * d / (2.0 + d)


def m_step(totals: np.ndarray, weighted_counts: np.ndarray, prior: ResolvedPoissonPrior | None) -> np.ndarray:
    """Rates from the weighted totals S_k and counts N_k: the weighted mean, or the Gamma posterior mode."""
    if prior is None:
        return totals / weighted_counts
    return (totals + prior.shape - 1.0) / (weighted_counts + prior.rate)


def check_counts(values: np.ndarray, obs: np.ndarray, features: np.ndarray, name: str = "data") -> np.ndarray:
    """One column of non-negative integers, returned as a float vector; ValueError naming the rows otherwise."""
    if values.shape[1] != 1:
        raise InputError(f"{name}: expected one column of counts for a PoissonMixture, got {values.shape[1]} "
                         f"columns {features.tolist()}")
    counts = values[:, 0]
    bad = (counts < 0) | (counts != np.round(counts))
    if bad.any():
        raise InputError(f"{name}: expected non-negative integer counts, got other values in "
                         f"{named_rows(bad, obs, counts)}")
    return counts


# -- the model ---------------------------------------------------------------------------------------------
@register_family("poisson")
@dataclass(frozen=True)
class PoissonMixture(MixtureModel):
    """A finite mixture of Poisson distributions for non-negative integer counts.

    Parameters
    ----------
    n_components : int
        Number of components K >= 1.
    prior : "default", PoissonPrior or dict, default "default"
        The prior used by MAP-EM, MCMC and ADVI (see :class:`PoissonPrior`).

    Notes
    -----
    The data are one column of counts; frequency weights (e.g. the number of days with each count)
    go in ``weights=``. The parameters are ``weights`` and ``rate``, both with dims ``(component,)``;
    components come in ascending order of rate.

    Examples
    --------
    >>> import mixflow
    >>> from mixflow.families.poisson.model import PoissonMixture
    >>> deaths = mixflow.load_dataset("london_deaths")
    >>> tree = mixflow.fit(PoissonMixture(2), deaths["deaths"], weights=deaths["days"], random_seed=1)

    """

    n_components: int
    pymc_module: ClassVar[str] = "mixflow.families.poisson.pymc"  # the PyMC form (MCMC, ADVI), see MixtureModel
    prior_class: ClassVar[type] = PoissonPrior
    data_plot: ClassVar[str] = "counts"  # see MixtureModel
    predictive_dtype: ClassVar[type] = np.int64  # counts, for ArviZ's discrete predictive checks (rootogram)
    prior: PoissonPrior | str | dict = field(default="default")

    def __post_init__(self):
        object.__setattr__(self, "n_components", check_n_components(self.n_components))
        object.__setattr__(self, "prior", prior_from_argument(self.prior, self.prior_class, self.n_components))

    # -- declaration -----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The declaration as a plain dict."""
        return {"n_components": self.n_components, "prior": self.prior.to_dict()}

    @classmethod
    def from_dict(cls, spec: dict) -> "PoissonMixture":
        """Inverse of :meth:`to_dict`."""
        return cls(spec["n_components"], prior=PoissonPrior(**spec.get("prior", {})))

    def parameter_dims(self, features=None) -> dict:
        """Dims of each parameter, shared by every method's output."""
        return {"weights": ("component",), "rate": ("component",)}

    def n_parameters(self, n_features: int, n_components: int | None = None) -> int:
        """K - 1 weights and K rates."""
        k = n_components or self.n_components
        return 2 * k - 1

    def parameter_unit(self, name: str, element: dict, units: dict) -> str:
        """A rate is an expected count, in the unit of the (one) counted column; weights are unitless."""
        return unit_shown(next(iter(units.values()), "")) if name == "rate" and len(units) == 1 else ""

    def sort_key(self, params: dict) -> np.ndarray:
        """Canonical order: ascending rate."""
        return params["rate"]

    # -- data and prior --------------------------------------------------------------------------------
    def prepare(self, data) -> Prepared:
        """Check the counts and cache :func:`saturated_log_density`."""
        counts = check_counts(data.values, data.obs, data.features)
        weights = data.frequency
        return Prepared({"y": counts, "saturated": saturated_log_density(counts)}, weights,
                        {"mean": float(weights @ counts / weights.sum())})

    def chunked_constants(self, moments, features) -> dict:
        """:meth:`prepare`'s constants (the weighted mean count) from the moments of chunked data."""
        if moments.magnitude.size != 1:
            raise InputError(f"data: expected one column of counts for a PoissonMixture, got {moments.magnitude.size} "
                             f"columns {list(features)}")
        mean = moments.anchors[0] + moments.magnitude[0] * moments.unit_mean[0]
        return {"mean": float(mean), "features": np.asarray(features)}

    def prepare_rows(self, values: np.ndarray, weights: np.ndarray, rows: np.ndarray, constants: dict) -> Prepared:
        """The counts of these rows checked (errors name ``rows``) with their :func:`saturated_log_density`."""
        counts = check_counts(values, rows, constants["features"])
        return Prepared({"y": counts, "saturated": saturated_log_density(counts)}, weights, constants)

    def estimate_moments(self, params: dict):
        """The fitted mixture's mean count (all the Poisson family's constants need)."""
        from mixflow.chunked import Moments

        rate = np.asarray(params["rate"], dtype=float)
        magnitude = np.array([max(float(rate.max()), 1.0)])
        return Moments(1.0, magnitude, np.array([np.asarray(params["weights"]) @ rate]) / magnitude, np.ones((1, 1)))

    def resolve_prior(self, prepared: Prepared) -> ResolvedPoissonPrior:
        """Fill the defaults: Gamma(1 + 0.01 ybar, 0.01), mode at the weighted data mean ybar."""
        prior = self.prior
        rate = _DEFAULT_EXPOSURE if prior.rate is None else prior.rate
        shape = 1.0 + rate * prepared.constants["mean"] if prior.shape is None else prior.shape
        concentration = np.broadcast_to(np.asarray(prior.weights_concentration, dtype=float),
                                        (self.n_components,)).copy()
        return ResolvedPoissonPrior(concentration, float(shape), float(rate))

    def init_points(self, prepared: Prepared) -> np.ndarray:
        """The counts as a column, for k-means++ seeding."""
        return prepared.arrays["y"][:, None]

    # -- EM steps --------------------------------------------------------------------------------------
    def not_a_maximum(self, params: dict, prepared: Prepared) -> bool:
        """A component of positive weight at rate 0 where the likelihood's derivative in its rate is positive.

        At ``rate_k = 0`` the derivative of the log-likelihood is ``w_k (n_1 / f(1) - n_0 / f(0))``, with
        ``n_y`` the observations of count ``y`` and ``f`` the mixture's probability: a component on the zero
        counts alone is a maximum only where the zeros hold it there (a zero-inflated sample), and a start that
        gave a component only zero counts otherwise stops there, far below the maximum.
        """
        rate, weights = np.asarray(params["rate"], dtype=float), np.asarray(params["weights"], dtype=float)
        if not ((rate == 0) & (weights > 0)).any() or "y" not in prepared.arrays:
            return False
        y = np.asarray(prepared.arrays["y"]).ravel()
        n0, n1 = prepared.weights[y == 0].sum(), prepared.weights[y == 1].sum()
        f0, f1 = weights @ np.exp(-rate), weights @ (rate * np.exp(-rate))
        return bool(n1 > 0 and (f1 == 0 or n1 / f1 > n0 / f0))

    def e_step_constants(self, params: dict, prepared: Prepared) -> dict:
        """The rates (nothing to precompute)."""
        return {"rate": np.asarray(params["rate"], dtype=float)}

    def log_density(self, constants: dict, chunk: Prepared) -> tuple[np.ndarray, None]:
        """Per-component log probabilities (m, K) of a chunk's counts, ``log(y!)`` included."""
        return log_density(constants["rate"], chunk.arrays["y"], chunk.arrays["saturated"]), None

    def chunk_features(self, chunk: Prepared) -> None:
        """No per-chunk features beyond the counts."""
        return None

    def chunk_width(self, n_features: int) -> int:
        """Columns of the widest per-row temporary."""
        return 3 * self.n_components

    def stacks_components(self) -> bool:
        """Each component's steps stand alone (see :meth:`MixtureModel.stacks_components`)."""
        return True

    def statistics(self, weighted_resp: np.ndarray, chunk: Prepared, features) -> dict:
        """Weighted totals S_k = sum_n r_nk w_n y_n."""
        return {"total": chunk.arrays["y"] @ weighted_resp}

    def stacked_statistics(self, by_mixture: np.ndarray, chunk: Prepared, features) -> dict:
        """:meth:`statistics` of mixtures stacked (G, m, K), in one batched product.

        Each mixture's totals are made by the same BLAS call as alone (see
        :func:`~mixflow.families.base.batched_products`).
        """
        return {"total": np.matmul(chunk.arrays["y"], by_mixture).reshape(-1)}

    def m_step(self, counts: np.ndarray, stats: dict, prepared: Prepared, prior) -> tuple[dict, list[int]]:
        """Rates (MLE if ``prior`` is None, else MAP); a Poisson component cannot collapse."""
        return {"rate": m_step(stats["total"], counts, prior)}, []

    def log_prior(self, params: dict, prior: ResolvedPoissonPrior) -> float:
        """Sum of the Gamma log densities of the rates (the weights' Dirichlet excluded)."""
        return float(gamma_log_density(np.asarray(params["rate"], dtype=float), prior.shape, prior.rate).sum())

    def predictive_units(self, data):
        """The counts, as ECDFs (they are discrete: a density would smear them)."""
        units, _ = super().predictive_units(data)
        return units, "ecdf"

    def simulate_data(self, params: dict, data: Data, rng: np.random.Generator) -> Data:
        """As many counts as the data's total weight, unweighted."""
        n = sampling.n_units(data)
        counts = rng.poisson(np.asarray(params["rate"], dtype=float)[sampling.component_labels(params, n, rng)])
        return Data(values=counts[:, None].astype(float), features=data.features, obs=np.arange(n), weights=None)

    def simulate_draws(self, draws: dict, data: Data, rng: np.random.Generator) -> np.ndarray:
        """Every draw's replicate (S, n_units, 1) at once, in chunks of draws."""
        n = sampling.n_units(data)

        def replicate(chunk: dict) -> np.ndarray:
            labels = sampling.component_labels_of_draws(chunk["weights"], n, rng)
            return rng.poisson(np.asarray(chunk["rate"], dtype=float)[np.arange(labels.shape[0])[:, None], labels])

        return sampling.by_draw_chunks(replicate, draws, n * self.n_components)[:, :, None].astype(float)

    def sample_points(self, params: dict, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` counts (as a float column) from the mixture and their components."""
        labels = sampling.component_labels(params, n, rng)
        return rng.poisson(np.asarray(params["rate"], dtype=float)[labels])[:, None].astype(float), labels

    def check_parameters(self, params: dict, n_features: int, name: str = "init") -> dict:
        """Validate user-given ``weights`` and ``rate`` (shape (K,), rates at least 0); return copies.

        A rate of 0 is a component on the zero counts alone, which an EM maximum can have.
        """
        k = self.n_components
        out = check_parameter_dict(params, {"weights": (k,), "rate": (k,)}, name)
        if (out["rate"] < 0).any():
            raise InputError(f"{name}['rate']: expected non-negative rates, got {out['rate'].tolist()}")
        return out
