"""What every component family provides, and the parts of a mixture that do not depend on the family.

A model is ``family + n_components + prior``: a small frozen dataclass. The family-specific numerics are
pure functions in the family's own module; the model class only declares and dispatches. The EM engine
talks to a model only through the methods listed in :class:`MixtureModel`.
"""

import importlib
import json
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

import numpy as np
import xarray as xr

from mixflow.errors import InputError, InputTypeError, UnsupportedError
from mixflow.units import unit_power, unit_product, unit_shown
from mixflow.wording import agreeing, counted

__all__ = ["SPURIOUS_RATIO", "SPURIOUS_SIZE", "MixtureModel", "Prepared", "batched_products", "family_class",
           "family_names", "few_rows_components", "model_from_json", "register_family", "require_pymc_form",
           "spurious_rule", "supports_pymc", "with_prior"]

_FAMILIES: dict[str, type] = {}
#: The modules that register the families (under ``mixflow.families.``), imported before the registry is read:
#: ``import mixflow`` imports none of them, and a worker may unpickle a model of one family only
_FAMILY_MODULES = ("gaussian.model", "grouped.model", "poisson.model", "regression.model", "softkmeans.model")


def _registry() -> dict[str, type]:
    """The registered families, every family's module imported first."""
    for module in _FAMILY_MODULES:
        importlib.import_module(f"mixflow.families.{module}")
    return _FAMILIES


def register_family(name: str):
    """Class decorator: make a model class reachable from its JSON ``family`` key."""

    def decorate(cls):
        cls.family = name
        _FAMILIES[name] = cls
        return cls

    return decorate


def family_names() -> list[str]:
    """The registered family names (the ``family`` key of a model's JSON and of a workflow's [[models]])."""
    return sorted(_registry())


def family_class(name: str) -> type:
    """The model class registered under ``name``; ValueError naming the registered ones otherwise."""
    if name not in _registry():
        raise InputError(f"family: expected one of {family_names()}, got {name!r}")
    return _FAMILIES[name]


def with_prior(methods) -> bool:
    """Whether any of ``methods`` fits under the model's prior: MAP, NUTS (``"mcmc"``) or ADVI."""
    return any(method in ("map", "mcmc", "advi") for method in methods)


def supports_pymc(model) -> bool:
    """Whether ``model`` is a mixflow model whose family has a PyMC form (MCMC, ADVI): see MixtureModel."""
    return isinstance(model, MixtureModel) and model.pymc_module is not None


def require_pymc_form(model) -> None:
    """Raise the named error unless :func:`supports_pymc`."""
    if not supports_pymc(model):
        names = ", ".join(cls.__name__ for cls in _registry().values() if cls.pymc_module is not None)
        raise InputTypeError(f"model: expected a mixflow model with a PyMC form ({names}), got {type(model).__name__}, "
                        "which has none")


def model_from_json(text: str) -> "MixtureModel":
    """Rebuild a model from :meth:`MixtureModel.to_json`."""
    try:
        spec = json.loads(text)
    except (TypeError, json.JSONDecodeError) as error:
        raise InputError(f"model: expected the model declaration as JSON (as mixflow writes it), got "
                         f"{str(text)[:60]!r} ({error})") from None
    if not isinstance(spec, dict):
        raise InputError(f"model: expected the model declaration as a JSON object, got {str(text)[:60]!r}")
    family = spec.pop("family", None)
    if family not in _registry():
        raise InputError(f"text: expected a model JSON with family in {sorted(_FAMILIES)}, got {family!r}")
    return _FAMILIES[family].from_dict(spec)


@dataclass(frozen=True)
class Prepared:
    """Row-aligned arrays a family works on, plus constants; sliced by rows into chunks.

    Attributes
    ----------
    arrays : dict of str to ndarray
        Arrays whose first axis is the observation axis.
    weights : ndarray of shape (n_obs,)
        Frequency weights (ones where none were given).
    constants : dict
        Anything not row-aligned (e.g. the centre the data were shifted by).

    """

    arrays: dict
    weights: np.ndarray
    constants: dict

    @property
    def n_obs(self) -> int:
        """Number of rows."""
        return self.weights.shape[0]

    @property
    def total_weight(self) -> float:
        """Sum of the frequency weights."""
        return float(self.weights.sum())

    @cached_property
    def unit_weights(self) -> bool:
        """Whether every frequency weight is one (no weights given), read once: every EM pass asks."""
        return bool(np.all(self.weights == 1.0))

    def rows(self, start: int, stop: int) -> "Prepared":
        """The chunk of rows ``start:stop`` (views, no copies)."""
        return Prepared({k: v[start:stop] for k, v in self.arrays.items()}, self.weights[start:stop],
                        self.constants)

    def take(self, indices: np.ndarray) -> "Prepared":
        """The rows at ``indices`` (copies), in that order, with the same constants (the same working units)."""
        return Prepared({k: v[indices] for k, v in self.arrays.items()}, self.weights[indices], self.constants)


#: A component of at least this many times its prior's worth in observations (a Gaussian's d + 2, a regression's
#: p + 2 shape + 2) should outweigh its default prior (the families' ``prior_problems``) ...
PRIOR_WORTH = 5
#: ... and its dispersion is the prior's when the prior's part exceeds this many times the component's own scatter
PRIOR_OUTWEIGHS = 4
#: A component of fewer observations than ``SPURIOUS_SIZE`` times the number its dispersion needs, narrower
#: than another component by a Hathaway ratio below ``SPURIOUS_RATIO``, is spurious (:func:`spurious_rule`).
SPURIOUS_RATIO = 5e-3
SPURIOUS_SIZE = 5
#: A small narrow component whose mean lies outside every other component's ellipsoid of probability
#: ``SEPARATED_QUANTILE`` is a group, not spurious, when it holds at least ``SEPARATED_SIZE`` times the
#: observations its dispersion needs and has a Hathaway ratio of at least ``SEPARATED_RATIO``, or at least
#: ``SEPARATED_MARGIN`` observations more than it needs and a ratio of at least ``SMALL_GROUP_RATIO``
#: (:func:`spurious_rule`).
SEPARATED_SIZE = 2
SEPARATED_RATIO = 1e-6
SEPARATED_MARGIN = 1
SMALL_GROUP_RATIO = 1e-3
SEPARATED_QUANTILE = 0.999
#: relative rounding of a count (weight times the number of observations) compared with a whole threshold
_COUNT_ROUNDING = 1e-9
#: relative share of a component's rows' weight that may leak to the other components while its size still counts
#: them all, in the size thresholds of :func:`spurious_rule` (a tight group's rows each keep nearly all their weight)
_COUNT_LEAK = 1e-3


def batched_products(data: np.ndarray, by_mixture: np.ndarray) -> np.ndarray:
    """``(data.T @ own).T`` of each mixture's responsibilities ``own`` (m, K) of ``by_mixture``, concatenated.

    ``by_mixture`` (G, m, K) and data (m, T) give shape (G K, T). One batched ``np.matmul``, which makes each
    mixture's product by the same BLAS call as the product alone (the same shapes and strides), so each is that
    product to the bit, at one call's Python cost.
    """
    groups, _, k = by_mixture.shape
    return np.matmul(data.T, by_mixture).transpose(0, 2, 1).reshape(groups * k, data.shape[1])


def few_rows_components(counts: np.ndarray, parameters: int) -> list[tuple[int, float]]:
    """The components of a fit of two or more that hold fewer observations' worth of weight than ``parameters``.

    ``parameters`` counts the free parameters of one component's own density (its mean and its own dispersion,
    :meth:`MixtureModel.component_parameters`); 0 counts none and flags nothing. Such a component's likelihood is
    that of a density fitted to fewer rows than it has parameters: for a Gaussian with its own covariance fitted
    to n rows in d dimensions, the log-likelihood it gains on its own rows over new rows is on average
    n d (d + 3) / (2 (n - d - 2)), which AIC charges as its d (d + 3) / 2 parameters (BIC log(N) / 2 each, N all
    the rows) only when n is large: at n equal to its parameters the gain is n / (n - d - 2) times AIC's charge, 5 for
    d = 2, 2.25 for d = 3, 1.75 for d = 4, 1.4 for d = 6, and it grows without bound as n falls to d + 2, so
    the criteria reward the few rows' fit rather than a group. A fit of one component is never flagged: it holds
    every row, the baseline that the fits of more components are compared with. Counts are compared with the same
    allowance for weight leaking to the other components as :func:`spurious_rule`'s.

    Parameters
    ----------
    counts : ndarray of shape (K,)
        Each component's weight times the number of observations.
    parameters : int
        Free parameters of one component's own density.

    Returns
    -------
    list of (int, float)
        The components with too few observations: index and observations' worth of weight.

    """
    counts = np.asarray(counts, dtype=float)
    if parameters <= 0 or counts.size < 2:
        return []
    return [(int(h), float(counts[h])) for h in np.flatnonzero(counts < parameters * (1 - _COUNT_LEAK))]


def spurious_rule(counts: np.ndarray, ratios: np.ndarray, needed: int,
                  separated: np.ndarray | None = None) -> list[tuple[int, float, float]]:
    """The spurious components of a fit: a local maximum made by a few points close together or near a subspace.

    McLachlan and Peel (2000, sec. 3.10): such a component has a large likelihood because its dispersion is
    tiny, not because it describes a group; restarts reach these maxima only by chance, and more components
    or starts make more of them. Component h is spurious when it holds fewer observations' worth of weight
    than its dispersion needs (``needed``: d + 1 for a full covariance, 2 for variances), or when it holds
    fewer than ``SPURIOUS_SIZE * needed`` and its Hathaway ratio (``ratios``, the smallest eigenvalue of
    inv(Sigma_j) Sigma_h over the other components j, see
    :func:`mixflow.families.gaussian.numerics.hathaway_ratios`) is below ``SPURIOUS_RATIO``.

    Both thresholds come from measurement on the data of ``benchmarks/starts.py``: they separate the
    ratios and sizes of the legitimate maxima from those of the spurious ones that restarts reach by
    chance (the figures are in the README, "How EM starts and stops"). The ratio is invariant under any
    affine change of the data, so standardisation or correlated features do not change it, as they change
    the ratio of a covariance's own smallest and largest eigenvalues.

    A small narrow component is nonetheless a group when it is ``separated`` (its mean outside every other
    component's ellipsoid of probability :data:`SEPARATED_QUANTILE`: a slice of another component, which a
    spurious one often is, lies inside it), holds at least :data:`SEPARATED_SIZE` times ``needed`` and is
    narrower than the others by a ratio of at least :data:`SEPARATED_RATIO` (a factor of 1000 in sd), or holds
    at least :data:`SEPARATED_MARGIN` observation more than ``needed`` (so that its dispersion is not merely
    determined by its points) and has a ratio of at least :data:`SMALL_GROUP_RATIO` (a few points are a group
    when they are not also flat: five points near a line far away stay spurious): a tight cluster far from
    the rest, of 2% of the data or of five round points, is what a mixture is for, while a component flatter than
    that (points within 1e-4 of a line, say: a ratio of 1e-8) is spurious wherever it lies, as is a component
    of fewer observations than ``needed``. The component holding more observations than every other is never
    spurious by its ratio: on small data (17 rows, say) it is "small" by ``SPURIOUS_SIZE``, and narrow against
    a wide component of a few outlying rows, yet it is the fit's bulk, not a few points close together or near a
    subspace.

    Parameters
    ----------
    counts : ndarray of shape (K,)
        Each component's weight times the number of observations.
    ratios : ndarray of shape (K,)
        Each component's Hathaway ratio (infinite when it has no other component to compare with).
    needed : int
        Observations a component's dispersion needs to be estimated (non-singular).
    separated : ndarray of bool, shape (K,), optional
        Whether each component's mean lies outside every other component's ellipsoid of probability
        :data:`SEPARATED_QUANTILE` (none is, if not given).

    Returns
    -------
    list of (int, float, float)
        The spurious components: index, observations' worth of weight, Hathaway ratio.

    """
    # as floats, component by component: a few components, where numpy's calls cost more than the comparisons
    counts, ratios = np.asarray(counts, dtype=float).tolist(), np.asarray(ratios, dtype=float).tolist()
    separated = [False] * len(counts) if separated is None else np.asarray(separated, dtype=bool).tolist()
    # more observations than every other component (the only one at the largest count): the fit's bulk, not a few
    # points; none when a count is NaN
    some_nan, largest = any(count != count for count in counts), max(counts, default=-np.inf)
    at_largest = [not some_nan and count == largest for count in counts]
    one_largest = at_largest.count(True) == 1
    found = []
    for h, (count, ratio, apart) in enumerate(zip(counts, ratios, separated, strict=True)):
        group = apart and count >= (needed + SEPARATED_MARGIN) * (1 - _COUNT_ROUNDING) and ratio >= (
            SEPARATED_RATIO if count >= SEPARATED_SIZE * needed * (1 - _COUNT_ROUNDING) else SMALL_GROUP_RATIO)
        # a group of 30 rows holds 30 observations, though its weight leaks a little to the other components
        # (29.998 observations' worth, say, which the warning says as 30)
        small = count < SPURIOUS_SIZE * needed * (1 - _COUNT_LEAK)
        if count < needed * (1 - _COUNT_LEAK) or (small and ratio < SPURIOUS_RATIO and not group
                                                  and not (at_largest[h] and one_largest)):
            found.append((h, count, ratio))
    return found


class MixtureModel:
    """Interface of a mixture model declaration (documentation of the seam; see GaussianMixture).

    Subclasses are frozen dataclasses with at least ``n_components`` and ``prior`` and implement:

    - ``parameter_dims(features)``: dict name -> dims, ``weights`` first;
    - ``prepare(data)``: a :class:`Prepared` from validated :class:`mixflow.data.Data`;
    - ``resolve_prior(data)``: the prior with every default filled in from the data;
    - ``e_step_constants(params, prepared)`` and ``log_density(constants, chunk)``: the per-component
      log density as an (n_rows, n_components) array plus the chunk's features (or None). The features
      may live in a buffer that ``log_density`` adds to ``constants`` and reuses for the next chunk
      (the Gaussian's "full" and "tied"): use them before the next call with the same constants. Beyond
      adding such a key, ``log_density`` and ``statistics`` change nothing they are given: the runs of a
      pass in threads each get a shallow copy of ``constants``;
    - ``chunk_features(chunk)`` and ``chunk_width(n_features)``: per-chunk features shared by the E- and
      M-steps, and the width of the widest per-row temporary (to size chunks);
    - ``statistics(weighted_responsibilities, chunk, features)``: summable sufficient statistics;
    - ``m_step(counts, statistics, prepared, prior)``: component parameters from the statistics (MLE when
      ``prior`` is None, MAP otherwise), returning them and the indices of collapsed components;
    - ``log_prior(params, prior)``: log density of the component parameters (weights excluded);
    - ``init_points(prepared)``: points for k-means++ seeding;
    - ``to_working(params, prepared)`` and ``to_data(params, prepared)``: parameters between data units and
      the units EM works in (a family that standardises its data in ``prepare``; the identity by
      default), ``working_prior(prepared)``: the prior in the working units, and
      ``mle_problems(prepared)``: what in the data keeps the MLE from existing (warnings). Every
      parameter the engine passes to ``e_step_constants``, ``m_step`` and ``log_prior`` is in working
      units, and ``log_density`` and ``log_prior`` include the Jacobian, so log-likelihoods and log
      posterior densities are those of the data;
    - ``check_parameters(params, n_features)``: validation of user-given initial parameters;
    - ``collapse_description(components)``: the start of the collapse warning (a default is given);
    - ``extra_coords(data)``: coordinate values of any dims beyond obs/feature/component;
    - ``n_parameters(n_features, n_components=None)`` and ``sort_key(params)`` (the canonical component order).

    Families with a PyMC form (MCMC and ADVI, :mod:`mixflow.engines.mcmc`, :mod:`mixflow.engines.advi`) also
    implement, in a family module imported inside the methods (importing mixflow never imports PyMC):

    - ``pymc_model(data, prior=None, *, minibatch_size=None) -> pymc.Model``: the free variables with
      exactly the prior EM's MAP uses, ``pm.Deterministic`` (or free variables) named and dimensioned like
      the EM estimate (:meth:`parameter_dims`), and ``pm.Potential("log_likelihood", ...)`` with the labels
      marginalised, frequency weights applied, scaled by ``n_obs / minibatch_size`` under minibatches
      (shared plumbing: :mod:`mixflow.families.pymc_parts`). ``prior`` is the resolved prior (default: the one
      ``resolve_prior(prepare(data))`` gives); ``data`` is validated :class:`mixflow.data.Data`;
    - ``pymc_start(data, params) -> dict``: values of the free variables (untransformed, by name) for
      parameters in data units such as the EM estimate, the weights lifted inside the simplex;
    - ``label_signature(data) -> callable``: ``signature(params) -> ndarray (..., K, m)`` of unitless numbers
      per component, the cost of :func:`mixflow.families.relabel.align` (a
      :class:`mixflow.families.relabel.Signature`, whose ``description`` is recorded with the aligned draws).

    A family names its PyMC module in the class attribute ``pymc_module``; the module defines
    ``build_model(model, data, prior, *, minibatch_size)``, ``free_values(model, data, params)`` and
    ``label_signature(model, data)``, which the three methods above call.

    Every family draws replicate data with ``simulate_data(params, data, rng)`` (helpers in
    :mod:`mixflow.families.sampling`); :meth:`simulate` gives the values of one replicate.
    """

    n_components: int
    pymc_module: ClassVar[str | None] = None
    #: Which data plot draws the family (:func:`mixflow.plot_data`): points (histogram or scatter with
    #: ellipses), counts, regression lines or classes.
    data_plot: ClassVar[str] = "points"
    #: The dtype of the data column(s) and their replicates in a method's ``observed_data`` and
    #: ``posterior_predictive`` (ArviZ's predictive checks tell discrete data from continuous by it).
    predictive_dtype: ClassVar[type] = np.float64
    #: Keys of a workflow's [[models]] table beyond family, n_components and prior: the constructor's
    #: keyword arguments (:meth:`from_options`).
    workflow_keys: ClassVar[tuple] = ()
    #: The family's prior declaration (e.g. :class:`~mixflow.families.gaussian.model.GaussianPrior`), which a
    #: ``prior`` dict is read into (:func:`~mixflow.families.checks.prior_from_argument`); a workflow checks its
    #: [[models]] prior table with it apart from the table's other keys. None: checked only by the constructor.
    prior_class: ClassVar[type | None] = None

    @classmethod
    def from_options(cls, n_components: int, prior="default", **options) -> "MixtureModel":
        """The model from a workflow's [[models]] table: ``cls(n_components, prior=prior, **options)``."""
        return cls(n_components, prior=prior, **options)

    @classmethod
    def label_tag(cls, options: dict) -> str | None:
        """A short tag of the options for output names (e.g. the covariance type), or None."""
        return None

    def _pymc_form(self):
        require_pymc_form(self)
        return importlib.import_module(self.pymc_module)

    def pymc_model(self, data, prior=None, *, minibatch_size: int | None = None):
        """The PyMC model of this declaration for ``data``, with exactly the prior EM's MAP uses."""
        return self._pymc_form().build_model(self, data, prior, minibatch_size=minibatch_size)

    def pymc_start(self, data, params: dict) -> dict:
        """Values of the free variables (untransformed) for parameters in data units, e.g. the EM estimate."""
        return self._pymc_form().free_values(self, data, params)

    def label_signature(self, data):
        """The per-component signature :func:`mixflow.families.relabel.align` matches labels by."""
        return self._pymc_form().label_signature(self, data)

    def to_json(self) -> str:
        """Serialise the declaration (family, n_components, options, prior) to JSON."""
        return json.dumps({"family": self.family, **self.to_dict()}, sort_keys=True)

    def permute(self, params: dict, order: np.ndarray, features) -> dict:
        """Reorder every parameter that has a ``component`` dimension."""
        dims = self.parameter_dims(features)
        out = {}
        for name, value in params.items():
            axis = dims[name].index("component") if "component" in dims[name] else None
            out[name] = value if axis is None else np.take(value, order, axis=axis)
        return out

    def collapse_description(self, components: list[int]) -> str:
        """What collapsed, for the warning (families name their own dispersion parameter)."""
        return (f"{agreeing(len(components), 'component')} {components} collapsed (singular covariance): a floor of "
                "1e-6 x the data variance was added")

    def chunked_constants(self, moments, features) -> dict:
        """The constants of :meth:`prepare` from moments summed over chunks (Dask input), for :meth:`prepare_rows`.

        ``moments`` is a :class:`mixflow.chunked.Moments`; ``features`` the feature names. Families that
        work on chunked data implement it with :meth:`prepare_rows` and :meth:`estimate_moments`.
        """
        supported = sorted(name for name, cls in _registry().items()
                           if cls.chunked_constants is not MixtureModel.chunked_constants)
        raise InputError(f"data: expected numpy or pandas data for the {self.family!r} family, got Dask data, "
                         f"which the families {supported} take")

    def columns_text(self, features: list[str]) -> str:
        """What the data's columns are, for a summary or a report: ``"2 features ['eruptions', 'waiting']"``."""
        return f"{counted(len(features), 'feature')} {features}"

    def constant_feature_note(self, under_prior: bool) -> str:
        """What a constant feature beside others does to this family's fits, added to its warning (none by default).

        ``under_prior``: a method that fits under the model's prior (MAP, NUTS, ADVI) is among those asked for.
        """
        return ""

    def infinite_values_hint(self, workflow: bool = False) -> str:
        """What to do instead of infinite values in the data, added to their error (none by default).

        ``workflow``: said in a workflow's terms (its ``[[models]]`` keys) rather than Python's.
        """
        return ""

    def unread_columns(self, columns) -> list:
        """The columns of a data frame the model never reads: none by default, every column is a feature.

        :func:`mixflow.fit` and :func:`mixflow.select_k` drop those that are not numeric (a state's name beside
        a regression's response and covariates) instead of refusing the data for them.
        """
        return []

    def prepare_to_score(self, data) -> Prepared:
        """:meth:`prepare` of data a fitted mixture only scores (new rows, held-out folds), not fits.

        The same by default; a family whose fit needs more of the data than scoring does (a regression's
        design of full rank) checks that in :meth:`prepare` alone: one new row must be scorable.
        """
        return self.prepare(data)

    def prepare_rows(self, values: np.ndarray, weights: np.ndarray, rows: np.ndarray, constants: dict) -> Prepared:
        """What :meth:`prepare` gives for these rows of the data, with the whole data's ``constants``.

        ``values`` (m, d) and ``weights`` (m,) are one block of chunked data, ``rows`` their positions in
        it (named by errors), ``constants`` :meth:`chunked_constants`'.
        """
        raise UnsupportedError(f"model: the {self.family!r} family does not prepare chunked data")

    def estimate_moments(self, params: dict):
        """:class:`mixflow.chunked.Moments` of the fitted mixture (data-unit ``params``), or None.

        They fix the working units of new chunked data without a pass over them. None when the estimate
        does not describe every column (a regression's covariates): the fitted rows' moments are used then.
        """
        raise UnsupportedError(f"model: the {self.family!r} family does not prepare chunked data")

    def to_working(self, params: dict, prepared: Prepared) -> dict:
        """Parameters from data units to the units EM works in (``prepared``'s); the same by default."""
        return params

    def to_data(self, params: dict, prepared: Prepared) -> dict:
        """Inverse of :meth:`to_working`."""
        return params

    def working_prior(self, prepared: Prepared):
        """The resolved prior in the units EM works in; by default :meth:`resolve_prior`'s (data units)."""
        return self.resolve_prior(prepared)

    def mle_problems(self, prepared: Prepared, features=None) -> list[str]:
        """Descriptions of what in the data keeps the maximum-likelihood estimate from existing; none by default.

        ``features``: the data's feature names, for the descriptions.
        """
        return []

    def prior_problems(self, params: dict, responsibilities: np.ndarray, prepared: Prepared, prior) -> list[str]:
        """What in a MAP fit says its default prior, not the data, set an estimate (warnings); none by default.

        ``params`` and ``prepared`` in working units, ``responsibilities`` (n_obs, K) at ``params``.
        """
        return []

    def mle_fit_problems(self, params: dict, prepared: Prepared) -> list[str]:
        """What in an MLE's estimate the data do not determine (warnings); none by default.

        ``params`` and ``prepared`` in working units (the rows fitted, in memory).
        """
        return []

    def not_a_maximum(self, params: dict, prepared: Prepared) -> bool:
        """Whether the MLE's EM fixed point ``params`` is on a boundary from which the likelihood rises.

        EM can stop at such a point and never leave it (a Poisson rate of 0: the component's responsibility
        for every positive count is 0, so its rate stays 0); it is then no maximum, and the run is not counted
        as one. False by default (``prepared``: the rows the run was fitted to, in memory).
        """
        return False

    def split_axes(self) -> tuple[str, ...]:
        """The axes along which the local search cuts a component's points in two, ``"major"`` and ``"minor"``.

        The major axis is the direction of the points' largest spread (a split of a group into two, along it);
        by default that alone. See :func:`mixflow.engines.starts.transfer_moves`.
        """
        return ("major",)

    def fewest_values_for_starts(self, map_fit: bool) -> int | None:
        """The fewest distinct values a feature needs for its values to be starts, or None for no such starts.

        A start by a feature's values puts the rows of one value (or of a few) in a component, which must be
        a bounded fit: under a MAP fit's prior it always is (the prior bounds the feature's spread within the
        component), so 2; without one, by default never (a variance of zero). See
        :func:`mixflow.engines.starts.value_starts`.
        """
        return 2 if map_fit else None

    def stacks_components(self) -> bool:
        """Whether several mixtures' parameters can run as one of their components side by side (MLE steps).

        True where :meth:`e_step_constants`, :meth:`log_density`, :meth:`statistics` and :meth:`m_step` (with
        its prior or without) treat each component alone, whatever their number, and the features
        :meth:`log_density` returns are the chunk's, shared by every component: then one evaluation scores
        several parameter sets (posterior draws, :mod:`mixflow.engines.over_draws`), and one pass evaluates
        several EM runs (:meth:`stacks_mixtures`). False by default.
        """
        return False

    def stacks_mixtures(self) -> bool:
        """Whether one pass over the data can evaluate several mixtures of this family stacked.

        The stack is :meth:`stack_mixtures`' (each parameter with a component dim concatenated along it, one
        shared by a mixture's components stacked on a new leading axis); :meth:`e_step_constants` and
        :meth:`log_density` take it as they take one mixture, giving each component its own mixture's shared
        parameters, :meth:`statistics` is given each mixture's responsibilities alone, and
        :meth:`stacked_m_step` pools within each mixture. Then
        :func:`mixflow.engines.em_run.run_together` evaluates several EM runs in one pass. By default
        :meth:`stacks_components` (nothing is shared, and the stack is the components side by side).
        """
        return self.stacks_components()

    def stack_mixtures(self, mixtures: list[dict]) -> dict:
        """Several mixtures' parameter sets (of as many components each) as one (see :meth:`stacks_mixtures`).

        A parameter with a ``component`` dim (:meth:`parameter_dims`) is concatenated along it; one without
        (shared by a mixture's components, e.g. a tied covariance) gets a new leading axis, one entry per
        mixture. :meth:`unstack_mixtures` is the inverse.
        """
        dims = self.parameter_dims()
        return {name: (np.concatenate([mixture[name] for mixture in mixtures], axis=dims[name].index("component"))
                       if "component" in dims[name] else np.stack([mixture[name] for mixture in mixtures]))
                for name in mixtures[0]}

    def unstack_mixtures(self, stacked: dict, groups: int) -> list[dict]:
        """Each mixture's own parameters of a stack of ``groups`` (the inverse of :meth:`stack_mixtures`), views.

        Also of any dict of arrays shaped like the stack's parameters (e.g. their unconstrained forms).
        """
        dims, parts = self.parameter_dims(), {}
        for name, value in stacked.items():
            if "component" not in dims[name]:
                parts[name] = value  # one entry per mixture along the leading axis
                continue
            axis = dims[name].index("component")
            by_mixture = value.reshape(value.shape[:axis] + (groups, -1) + value.shape[axis + 1:])
            parts[name] = np.moveaxis(by_mixture, axis, 0) if axis else by_mixture
        return [{name: value[index] for name, value in parts.items()} for index in range(groups)]

    def stacked_statistics(self, by_mixture: np.ndarray, chunk: Prepared, features) -> dict:
        """:meth:`statistics` of mixtures stacked (:meth:`stacks_mixtures`): each mixture's, concatenated in order.

        ``by_mixture`` holds each mixture's weighted responsibilities as its own contiguous (m, K) array, shape
        (G, m, K). Each mixture's statistics are formed alone, through products of the shapes its own pass would
        use, so that they are those of that pass to the bit (a product of another shape may sum in another
        order). By default one :meth:`statistics` call per mixture.
        """
        parts = [self.statistics(own, chunk, features) for own in by_mixture]
        return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}

    def stacked_m_step(self, counts: np.ndarray, statistics: dict, prepared: Prepared, prior,
                       groups: int) -> tuple[dict, list[int]]:
        """:meth:`m_step` of ``groups`` mixtures stacked (:meth:`stacks_mixtures`), each pooled within itself.

        ``counts`` and ``statistics`` are the stack's (each mixture's statistics concatenated in order); the
        parameters returned are stacked as :meth:`stack_mixtures` stacks them, and the collapsed components
        are indices into the stack. By default :meth:`m_step`, which treats each component alone.
        """
        return self.m_step(counts, statistics, prepared, prior)

    def exact_steps(self, params: dict, prepared: Prepared, above: float = 0.0):
        """The E- and M-steps without the fast path's rounding, where its relative size exceeds ``above``.

        None by default (the family's EM steps are exact enough as they are); else a pair of functions,
        ``log_density(params) -> (n_obs, K)`` (log densities of the data, Jacobian included) and
        ``m_step(weighted_resp, prior) -> (components, collapsed)``, both in working units.
        """
        return None

    def density_points(self, prepared) -> np.ndarray | None:
        """The rows in the working units of the family's density, where the data's own density is measured.

        EM's local search frees a component onto the rows where the data gather far more sharply than a fit
        says (:func:`mixflow.engines.starts.dense_moves`); None (the default) for a family whose density is not
        one of points in a space (counts, a response given covariates, classes).
        """
        return None

    def rows_are_classes(self) -> bool:
        """Whether each row is a class of binned data (its weight the class's count): few rows, each a group.

        EM's local search then frees a component onto each class in turn, whose count apart (a spike between empty
        classes) can hold a component of its own that no start from distances reaches. False by default.
        """
        return False

    def component_rows(self, params: dict) -> int:
        """The fewest observations a component's parameters (working ``params``) need: 1 by default, a mean's.

        More where a component has its own dispersion: d + 1 for a full covariance.
        """
        return 1

    def component_parameters(self, params: dict) -> int:
        """Free parameters of one component's own density (``params`` of any units: their shapes): 0, none, by default.

        Those its rows alone determine, its mean and its own dispersion, not its weight nor a parameter the
        components share; the choice of K skips a maximum likelihood fit with a component of fewer observations
        than these (:func:`few_rows_components`). 0 where no component has a dispersion of its own: a mean or a
        rate alone gains on its rows about what the criteria charge for it, however few they are.
        """
        return 0

    def component_parameters_text(self) -> str:
        """:meth:`component_parameters` in words ("d (d + 3) / 2, its mean and full covariance"), "" where 0."""
        return ""

    def spurious_components(self, params: dict, total_weight: float) -> list[tuple[int, float, float]]:
        """Spurious components of working parameters (:func:`spurious_rule`).

        None for a family without a dispersion per component to compare.
        """
        return []

    def spurious_rule_text(self) -> str:
        """What makes a component spurious, in the family's terms, with its thresholds; "" without the rule.

        Said in the warning of a spurious winner: :meth:`spurious_rule_gist`, then its source and thresholds.
        """
        return ""

    def spurious_rule_gist(self) -> str:
        """The gist of :meth:`spurious_rule_text`, without its thresholds (the choice-of-K table's legend); ""."""
        return ""

    def extra_coords(self, data) -> dict:
        """Coordinates of family-specific dims (e.g. regression coefficients); none by default."""
        return {}

    def simulate_data(self, params: dict, data, rng: np.random.Generator):
        """A replicate data set drawn from the fitted mixture, shaped like ``data`` (same columns).

        Parameters
        ----------
        params : dict of str to ndarray
            One set of the model's parameters (an estimate or a posterior draw).
        data : mixflow.data.Data
            The observed data (their columns, covariates, frequency weights).
        rng : numpy.random.Generator

        Returns
        -------
        mixflow.data.Data
            Each family says what it draws (as many points or counts as the total weight; a regression's
            new responses at the observed covariates; grouped data's new class counts).
        """
        raise UnsupportedError(f"model: no sampler for the {self.family!r} family")

    def sample_points(self, params: dict, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` new rows drawn from one parameter set, with the component each came from.

        Returns
        -------
        tuple of ndarray
            Values of shape (n, n_features), the data's columns, and component labels of shape (n,).
            Families that model rows on their own (Gaussian, Poisson, soft k-means) implement it; a family
            whose rows need more than the parameters (a regression's covariates, grouped data's classes)
            does not.
        """
        raise UnsupportedError(f"tree: the {self.family!r} family cannot draw new rows from its parameters "
                               "alone (it models them given covariates or classes)")

    def simulate(self, params: dict, data, rng: np.random.Generator) -> np.ndarray:
        """One replicate of the data's values (:meth:`simulate_data`), for posterior predictive draws.

        Returns
        -------
        ndarray of shape (n_units, n_features)
            One row per frequency unit (the rows themselves for unweighted data), the data's columns.
        """
        return self.simulate_data(params, data, rng).values

    def simulate_draws(self, draws: dict, data, rng: np.random.Generator) -> np.ndarray:
        """:meth:`simulate` for each of many parameter sets: ``draws`` holds (S, ...) arrays; returns (S, ...).

        One draw after another here; families whose replicate is a few array operations draw them all at once.
        """
        count = np.shape(draws["weights"])[0]
        return np.stack([self.simulate({name: value[s] for name, value in draws.items()}, data, rng)
                         for s in range(count)])

    def predictive_units(self, data) -> tuple[xr.DataArray, str | None]:
        """What a predictive check compares, one row per frequency unit: (units (obs, feature), density kind).

        Every feature of the data, rows repeated by their rounded weights, drawn as densities (kind None);
        families override this (counts as ECDFs, a regression's response only, classes at their midpoints).
        """
        rows = data.rounded_units()
        return xr.DataArray(data.values[rows], dims=("obs", "feature"), coords={"feature": data.features}), None

    def plot_parameters(self, params: dict) -> dict:
        """The parameters as the family's data plot draws them (soft k-means adds its fixed variance)."""
        return params

    def predictive_variable(self, data) -> tuple[str, tuple]:
        """Name and dims of one :meth:`simulate` replicate in ``/mcmc/posterior_predictive``.

        ``x`` by rows (``obs``), or by frequency units (``unit``) for weighted data; a family that replicates
        another variable overrides this (grouped data: the class counts).
        """
        return "x", ("obs" if data.weights is None else "unit", "feature")

    def parameter_unit(self, name: str, element: dict, units: dict) -> str:
        """The unit of one element of parameter ``name``, from the data's ``units`` (``{column: unit}``).

        ``element`` maps the parameter's dims other than ``component`` to coordinates, e.g.
        ``{"feature": "waiting", "feature_": "eruptions"}``. By default an element along ``feature`` has
        that feature's unit, one along ``feature`` and ``feature_`` their product, a ``variance`` without a
        feature the square of the features' common unit; weights and the rest are unitless (``""``).
        Families whose parameters are not in the features' units override it.
        """
        if "feature" in element and "feature_" in element:
            return unit_product(units.get(str(element["feature"]), ""), units.get(str(element["feature_"]), ""))
        if "feature" in element:  # a mean, or a "diag" variance: the square
            unit = units.get(str(element["feature"]), "")
            return unit_power(unit, 2) if name == "variance" else unit_shown(unit)
        common = set(units.values())
        if name == "variance" and len(common) == 1:
            return unit_power(common.pop(), 2)
        return ""

    def canonical_order(self, params: dict) -> np.ndarray:
        """Permutation putting components in ascending order of :meth:`sort_key` (stable)."""
        return np.argsort(self.sort_key(params), kind="stable")
