"""Start strategies of the EM engine, the default start's portfolio of them, and the ranking of restarts.

Every strategy turns a family's seeding points (``model.init_points(prepared)``, shape (n, p)) into
starting responsibilities (n, K); one M-step then gives the starting parameters.

- ``"kmeans"``: k-means++ seeds and Lloyd iterations on the points as the family gives them;
- ``"kmeans++"``: the k-means++ seeds alone, each point to its nearest seed;
- ``"random"``: responsibilities drawn uniformly and normalised (as scikit-learn's ``init_params="random"``);
- ``"standardised-kmeans"``: k-means on the points scaled to unit weighted sd per feature, so that a feature
  with a small spread counts as much as a wide one;
- ``"random-partition"``: every point to a component drawn at random (as flexmix starts), which does not
  depend on any distance between the points;
- ``"random-centres"``: every point to the nearest of K rows drawn at random, in standardised units (as
  scikit-learn's ``init_params="random_from_data"``);
- ``"hierarchical"``: Ward's agglomeration (the model-based agglomeration of the spherical Gaussian, Fraley
  1998) of the standardised points, on a subsample of at most ``HIERARCHICAL_POINTS`` rows (drawn in
  proportion to the frequency weights), cut at K clusters; every point then goes to its nearest cluster mean;
- ``"hierarchical-pca"``: the same on the standardised points' leading ``max(2, K)`` principal components,
  where the directions of largest spread (often those that separate groups) are not outweighed by many
  features of noise;
- ``"low-kurtosis"``: the same on the sphered points' K - 1 directions of lowest kurtosis
  (:func:`low_kurtosis_projection`; at K = 2 the exact two-means cut of the one direction,
  :func:`two_means_cut`), along which groups differ whatever the spread of other directions (an overall size
  that distances follow); ``"auto"`` takes it at K = 2, where the lowest-kurtosis direction is the one that
  separates two groups of not too unequal weights (Peña and Prieto 2001);
- ``"feature-values:j"`` and ``"feature-gaps:j"`` (``"auto"`` only, where a component whose rows share one
  feature's value is a bounded fit: MAP fits, and tied covariances' MLE for a feature of more values than
  components; :func:`value_starts`): the rows grouped by
  the values of a discrete feature j (a 0/1 code, a small count), K groups of about equal weight with equal
  values together (:func:`feature_value_labels`), or cut at the K - 1 widest gaps between its values, so that
  a value far from the others is a group however few rows hold it (:func:`feature_gap_labels`).

``"auto"`` draws its starts from a per-family portfolio of these (the deterministic ones once, the random
ones in turn; where bounded, the values of each discrete feature too), runs each briefly, and continues the best
to convergence: the "short runs, then continue the best" strategy of Biernacki, Celeux and Govaert (2003),
Comput. Stat. Data Anal. 41, 561-575. A start whose partition repeats an earlier one's (:func:`partition_key`) is
replaced by one of the family's random strategy (:func:`replacement_strategy`).

Restarts are ranked in three tiers (:func:`rank_runs`): sound runs first, then spurious ones (a component of a
few observations close together or near a lower-dimensional subspace, :func:`mixflow.families.base.spurious_rule`), then
degenerate ones (a component collapsed onto a point, or its weight fell below half an observation's worth);
by objective within a tier. A spurious or degenerate run wins only when no run of a better tier exists.

After the continuation, ``"auto"`` searches around its best fit (:func:`transfer_moves`): a component is split
in two along its principal axis and one half handed to another component, the split-and-merge idea of Ueda,
Nakano, Ghahramani and Hinton (2000), Neural Comput. 12, 2109-2128, in the form that also exists for K=2. A
move is kept when EM from it ends higher; maxima that random starts reach rarely are often one such move away.
For K >= 3 it also tries Ueda et al.'s own move (:func:`split_merge_moves`): two components merged and a third
split in two, which changes how the data are divided among the components without changing their number (a
maximum whose groups are cut otherwise than the fit's is often one such move away, and no transfer reaches it).
"""

from typing import NamedTuple

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.linalg import null_space
from scipy.optimize import minimize
from scipy.spatial import cKDTree
from scipy.special import logsumexp

from mixflow.engines.kmeans import kmeans_plusplus, lloyd, squared_distances
from mixflow.errors import InputError

__all__ = [
    "HIERARCHICAL_POINTS",
    "PORTFOLIO",
    "STRATEGIES",
    "hierarchical_labels",
    "is_degenerate",
    "labels_key",
    "local_log_density",
    "low_kurtosis_projection",
    "partition_key",
    "portfolio_schedule",
    "principal_components",
    "rank_runs",
    "replacement_strategy",
    "split_merge_moves",
    "standardise",
    "start_responsibilities",
    "boundary_moves",
    "dense_moves",
    "discrete_features",
    "draws_nothing",
    "feature_gap_labels",
    "feature_value_labels",
    "neighbourhood_moves",
    "outlier_moves",
    "transfer_moves",
    "two_means_cut",
    "value_starts",
]

PORTFOLIO = "auto"
STRATEGIES = ("kmeans", "kmeans++", "random", "standardised-kmeans", "random-partition", "random-centres",
              "hierarchical", "hierarchical-pca", "low-kurtosis")
HIERARCHICAL_POINTS = 1000
# the low-kurtosis start's directions are sought on at most this many rows, from at most this many starting axes
PROJECTION_POINTS = 2000
PROJECTION_STARTS = 10
# the sphering of the low-kurtosis start leaves out directions of less than this share of the largest variance
SPHERED_LEAST = 1e-4
# a feature with at least 2 and at most this many distinct values is discrete: for a MAP fit, its values are a start
DISCRETE_VALUES = 10
FEATURE_VALUES = "feature-values"
FEATURE_GAPS = "feature-gaps"
# starts per restart asked for (n_init): twice this in all, of which the screening runs a quarter, half or all,
# as the short runs agree or not (see em._screening_stages); the short runs' first-round iteration cap
# (doubled each round) and tolerance
CANDIDATES_PER_RESTART = 4
SHORT_MAX_ITER = 20
SHORT_TOL = 1e-6
#: Split-and-merge moves tried per round of the local search, the most promising (Ueda et al.'s C_max)
SPLIT_MERGE_CANDIDATES = 5
# the local search's boundary moves hand these fractions of a component's points to a neighbour: a few points
# (two maxima that differ on the boundary's points), or much of the component (two maxima that cut overlapping
# groups at places far apart, which a split along the component's principal axis, often another direction, misses)
BOUNDARY_FRACTIONS = (1 / 32, 1 / 8, 3 / 8)
# the local search's outlier moves free a component onto these shares of the total weight, the rows the fit
# explains worst: a small group of outliers (a few extreme rows, the zero counts) that a component of its own
# fits far better, which no start from distances and no move of points between neighbours reaches
OUTLIER_FRACTIONS = (1 / 100,)
# the local search's freed moves take a component's rows to the others and free it onto these shares of the total
# weight, the rows the others then explain worst: a small group apart that shows only once the component is gone
FREED_FRACTIONS = (1 / 32, 1 / 16, 1 / 8)
# a MAP fit's outlier moves also free a component onto each of this many rows the fit explains worst together
# with its nearest rows (:func:`neighbourhood_moves`): a small group of similar outlying rows
NEIGHBOURHOOD_SEEDS = 3
# of a family whose rows are classes (grouped data: few rows, each a count), this many classes seed a neighbourhood
# move each, under the MLE too, those whose counts the fit falls shortest of first: a component on one class's count
# apart (a spike between empty classes) is a maximum that no start from distances and none of the rows of lowest
# probability leads to
CLASS_SEEDS = 16
# the dense-group moves' local density of a row: the distance to its DENSE_NEIGHBOURS-th nearest row (by weight),
# among at most DENSE_POINTS rows (a fixed draw: the others are never moved onto)
DENSE_NEIGHBOURS = 5
DENSE_POINTS = 2000
# a component holding less than this many observations' worth of weight is degenerate (empty)
MIN_COMPONENT_COUNT = 0.5


class _Portfolio(NamedTuple):
    """A family's starts of ``init="auto"``."""

    #: deterministic strategies, run first and once
    once: tuple[str, ...]
    #: random strategies, taking turns after them
    cycled: tuple[str, ...]
    #: the strategy that replaces a start repeating an earlier one's partition
    replacement: str
    #: whether the family's MAP fits start from the values of discrete features
    takes_values: bool
    #: whether the screening may stop once its first starts agree (see em._screening_stages)
    stops_on_agreement: bool
    #: whether two components also start from the direction of lowest kurtosis (:func:`low_kurtosis_projection`)
    by_projection: bool


# Regression mixtures do not start from distances (clustering the response, or the response with the covariates,
# misses mixtures whose lines cross): random partitions and random responsibilities are its main starts; nor from
# the values of one column, which a regression's lines do not follow; and their screening runs all its starts,
# since lines through a few rows make maxima close in value that few starts reach, so that the first starts
# agreeing on one says little.
_PORTFOLIOS = {
    "default": _Portfolio(("hierarchical", "hierarchical-pca"),
                          ("standardised-kmeans", "random-partition", "random-centres", "kmeans++", "kmeans"),
                          "random-centres", takes_values=True, stops_on_agreement=True, by_projection=True),
    "regression": _Portfolio((), ("random-partition", "random", "random-centres", "kmeans"), "random-partition",
                             takes_values=False, stops_on_agreement=False, by_projection=False),
}


def _portfolio(family: str) -> _Portfolio:
    return _PORTFOLIOS.get(family, _PORTFOLIOS["default"])


def replacement_strategy(family: str) -> str:
    """The strategy that replaces a start of ``init="auto"`` repeating an earlier one: the family's first random one.

    Random strategies seldom repeat a partition, and a new random start is worth its run where a repeat is not.
    """
    return _portfolio(family).replacement


def stops_on_agreement(family: str) -> bool:
    """Whether the screening of ``init="auto"`` for a family may stop once its first short runs agree."""
    return _portfolio(family).stops_on_agreement


def portfolio_schedule(family: str, n_candidates: int, by_values: list[str] = (), n_components: int = 0) -> list[str]:
    """The strategy of each start of ``init="auto"`` for a family: ``n_candidates`` and the discrete features'.

    Parameters
    ----------
    family : str
        The model's registered family name (e.g. ``"gaussian"``, ``"regression"``).
    n_candidates : int
        Number of starts of the portfolio.
    by_values : list of str, optional
        Starts by a discrete feature's values (:func:`value_starts`), after the family's deterministic
        strategies, at most ``n_candidates // 4`` of them, for families whose portfolio takes them: added to
        the ``n_candidates``, so they take no place of the others.
    n_components : int, optional
        The model's K: at K = 2, families that take it get the ``"low-kurtosis"`` start too, after their
        deterministic strategies and added to the ``n_candidates``. Two groups differ most, in units where the
        data's covariance is the identity, along the direction of lowest kurtosis (:func:`low_kurtosis_projection`),
        which a start from distances misses where another direction (an overall size, say) holds most of the
        spread; for more components that direction tells two groups of them apart, not K.

    Returns
    -------
    list of str
        Names from :data:`STRATEGIES`, and those of ``by_values`` taken.

    """
    portfolio = _portfolio(family)
    once, cycled = portfolio.once, portfolio.cycled
    names = list(once)[:n_candidates]
    while len(names) < n_candidates:
        names.append(cycled[(len(names) - len(once)) % len(cycled)])
    values = list(by_values)[:n_candidates // 4] if portfolio.takes_values else []
    projection = ["low-kurtosis"] if portfolio.by_projection and n_components == 2 else []
    place = min(len(once), n_candidates)
    return names[:place] + projection + values + names[place:]


def standardise(points: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Points centred and scaled to unit weighted sd per feature (a constant feature is only centred).

    Parameters
    ----------
    points : ndarray of shape (n, p)
    weights : ndarray of shape (n,)
        Frequency weights.

    Returns
    -------
    ndarray of shape (n, p)

    """
    total = weights.sum()
    centred = points - weights @ points / total
    sd = np.sqrt(weights @ (centred * centred) / total)
    return centred / np.where(sd > 0, sd, 1.0)


def principal_components(points: np.ndarray, weights: np.ndarray, n_components: int) -> np.ndarray:
    """The standardised points projected on their leading ``n_components`` principal axes (weighted).

    Parameters
    ----------
    points : ndarray of shape (n, p)
    weights : ndarray of shape (n,)
    n_components : int

    Returns
    -------
    ndarray of shape (n, min(n_components, p))

    """
    scaled, _, axes = _standardised_axes(points, weights)
    return scaled @ axes[:, ::-1][:, :n_components]


def _standardised_axes(points: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The standardised points, and the eigenvalues (ascending) and eigenvectors of their weighted covariance."""
    scaled = standardise(points, weights)
    values, axes = np.linalg.eigh((scaled * weights[:, None]).T @ scaled / weights.sum())
    return scaled, values, axes


def _kmeans_labels(points: np.ndarray, weights: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    labels, _, _ = lloyd(points, kmeans_plusplus(points, k, rng, weights), weights)
    return labels


def _seed_labels(points: np.ndarray, weights: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    return np.argmin(squared_distances(points, kmeans_plusplus(points, k, rng, weights)), axis=1)


def _random_partition(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """Labels drawn uniformly, every component given at least one point when n >= k."""
    labels = rng.integers(k, size=n)
    if n >= k:
        labels[rng.choice(n, size=k, replace=False)] = np.arange(k)
    return labels


def _random_centre_labels(points: np.ndarray, weights: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Each point to the nearest of k distinct rows drawn in proportion to the weights."""
    centres = points[rng.choice(points.shape[0], size=k, replace=False, p=weights / weights.sum())]
    return np.argmin(squared_distances(points, centres), axis=1)


def hierarchical_labels(points: np.ndarray, weights: np.ndarray, k: int, rng: np.random.Generator,
                        max_points: int = HIERARCHICAL_POINTS) -> np.ndarray:
    """Ward's agglomeration cut at ``k`` clusters, on a subsample; every point to its nearest cluster mean.

    Unweighted data with at most ``max_points`` rows are agglomerated whole (no random draw). Otherwise
    ``max_points`` rows are drawn in proportion to the weights (with replacement when there are weights, so
    that a row of weight w counts about w times).

    Parameters
    ----------
    points : ndarray of shape (n, p)
    weights : ndarray of shape (n,)
    k : int
    rng : numpy.random.Generator
    max_points : int, default HIERARCHICAL_POINTS

    Returns
    -------
    ndarray of shape (n,)
        Labels in 0..k-1.

    """
    n = points.shape[0]
    unweighted = np.all(weights == 1.0)
    if unweighted and n <= max_points:
        rows = np.arange(n)
    else:
        rows = rng.choice(n, size=max_points, replace=not unweighted, p=weights / weights.sum())
    sample = points[rows]
    if np.ptp(sample, axis=0).max(initial=0.0) == 0:  # one distinct point: nothing to agglomerate
        return _random_partition(n, k, rng)
    clusters = fcluster(linkage(sample, method="ward"), t=k, criterion="maxclust") - 1
    if unweighted and n <= max_points and np.unique(clusters).size == k:
        return clusters
    means = np.array([sample[clusters == c].mean(axis=0) for c in np.unique(clusters)])
    labels = np.argmin(squared_distances(points, means), axis=1)
    return labels


def _sphered(points: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The standardised points centred and sphered (weighted covariance the identity) in their directions of variance.

    A direction of less than ``SPHERED_LEAST`` of the largest variance is left out: such a direction is often a
    column's rounding (a rounded total of the others), whose errors, about uniform, have a lower kurtosis than
    any two groups.
    """
    scaled, values, axes = _standardised_axes(points, weights)
    keep = values > SPHERED_LEAST * values.max(initial=0.0)
    return scaled @ (axes[:, keep] / np.sqrt(values[keep]))


def low_kurtosis_projection(points: np.ndarray, weights: np.ndarray, n_directions: int, rng: np.random.Generator,
                            max_points: int = PROJECTION_POINTS) -> np.ndarray:
    """The sphered points projected on their directions of lowest kurtosis, each orthogonal to those before it.

    Peña and Prieto (2001), "Cluster identification using projections", J. Am. Stat. Assoc. 96, 1433-1445: in
    sphered data, a mixture of two groups is most bimodal, and its kurtosis lowest, along the direction that
    separates the groups, whatever the other directions' spreads were before sphering. Each direction minimises
    the projection's fourth moment on the unit sphere (L-BFGS from each of the first ``PROJECTION_STARTS`` axes
    of the space left, the lowest kept), on at most ``max_points`` rows (drawn in proportion to the weights
    where there are more).

    Parameters
    ----------
    points : ndarray of shape (n, p)
    weights : ndarray of shape (n,)
    n_directions : int
    rng : numpy.random.Generator
    max_points : int, default PROJECTION_POINTS

    Returns
    -------
    ndarray of shape (n, min(n_directions, q))
        q being the number of directions of positive variance (none when the points are all equal).

    """
    sphered = _sphered(points, weights)
    n, q = sphered.shape
    if n > max_points:
        sample = sphered[rng.choice(n, size=max_points, replace=True, p=weights / weights.sum())]
        share = np.full(max_points, 1 / max_points)
    else:
        sample, share = sphered, weights / weights.sum()
    found = []
    basis = np.eye(q)
    for _ in range(min(n_directions, q)):
        inside = sample @ basis

        def fourth_moment(w, inside=inside):
            """The projection's fourth moment at w / |w|, and its gradient in w."""
            norm2 = w @ w
            y = inside @ w
            moment = share @ y ** 4
            return moment / norm2 ** 2, 4 * (share * y ** 3) @ inside / norm2 ** 2 - 4 * moment * w / norm2 ** 3

        best = min((minimize(fourth_moment, start, jac=True, method="L-BFGS-B")
                    for start in np.eye(basis.shape[1])[:PROJECTION_STARTS]), key=lambda result: result.fun)
        found.append(basis @ best.x / np.linalg.norm(best.x))
        basis = null_space(np.array(found))
    return sphered @ np.array(found).reshape(len(found), q).T


def two_means_cut(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Labels 0/1 of the cut of one-dimensional values that leaves the least weighted within-group sum of squares.

    The exact two-means split, every cut between distinct values tried: a row of weight w counts as w equal rows.
    All values equal: every row labelled 0.
    """
    order = np.argsort(values, kind="stable")
    mass = weights[order] / weights.sum()  # shares, and the values centred and scaled: neither squares overflow
    ordered = values[order] - mass @ values[order]  # nor cancels in values far from 0
    ordered = ordered / max(np.abs(ordered).max(initial=0.0), np.finfo(float).tiny)
    below_mass, below_sum = np.cumsum(mass)[:-1], np.cumsum(mass * ordered)[:-1]
    total_mass, total_sum = mass.sum(), mass @ ordered
    above_mass, above_sum = total_mass - below_mass, total_sum - below_sum
    with np.errstate(divide="ignore", invalid="ignore"):
        between = below_sum ** 2 / below_mass + above_sum ** 2 / above_mass  # the larger, the smaller the within
    between = np.where((np.diff(ordered) > 0) & (below_mass > 0) & (above_mass > 0), between, -np.inf)
    labels = np.zeros(values.size, dtype=np.int64)
    if np.isfinite(between).any():
        labels[order[np.argmax(between) + 1:]] = 1
    return labels


def discrete_features(points: np.ndarray, limit: int = DISCRETE_VALUES) -> list[int]:
    """The features with 2 to ``limit`` distinct values, fewest first: the starts by value (:func:`value_starts`).

    A group marked by one feature's values (a 0/1 code such as sex) makes that feature constant within each
    component. Under a Gaussian MLE that is a singularity (a variance of zero), set aside as degenerate; a MAP
    fit's prior bounds the variance, and there such a split can be the highest maximum by far, while starts
    from distances, which see the code as one feature among many, rarely put the rows together by it.
    """
    return list(_discrete_counts(points, limit))


def _discrete_counts(points: np.ndarray, limit: int) -> dict[int, int]:
    """The features of 2 to ``limit`` distinct values and their numbers of values, fewest first."""
    counts = [np.unique(points[:, j]).size for j in range(points.shape[1])]
    return {j: counts[j] for j in sorted((j for j, count in enumerate(counts) if 2 <= count <= limit),
                                         key=lambda j: (counts[j], j))}


def value_starts(points: np.ndarray, fewest: int = 2, limit: int = DISCRETE_VALUES) -> list[str]:
    """The starts by the values of each discrete feature of at least ``fewest`` values (fewest values first).

    ``"feature-values:j"`` for each, and ``"feature-gaps:j"`` for those of more than two values (with two,
    both cut the rows by the value). For a fit where a component whose rows share one feature's value is
    bounded (``model.fewest_values_for_starts``): a MAP fit, whose prior bounds the spread; a tied
    covariance's MLE, where the other components keep the shared covariance's spread as long as the feature
    has more values than components, and a component may sit on the rows of one value, or of a few values
    set apart from the rest, which distances between whole rows do not favour.
    """
    return [name for j, count in _discrete_counts(points, limit).items() if count >= fewest
            for name in [f"{FEATURE_VALUES}:{j}"] + ([f"{FEATURE_GAPS}:{j}"] if count > 2 else [])]


def feature_value_labels(points: np.ndarray, weights: np.ndarray, k: int, feature: int) -> np.ndarray:
    """The rows in ``k`` groups by the values of one feature: about equal weight, equal values together.

    Each distinct value goes to the group of the middle of its weight in the cumulative weight (so a 0/1
    feature at k = 2 is split by its value). While fewer than ``k`` groups are left (fewer values than
    groups, or one value holding most of the weight), the heaviest group is split in two
    (:func:`_split_to_k`).
    """
    values, inverse = np.unique(points[:, feature], return_inverse=True)
    mass = np.bincount(inverse, weights=weights, minlength=values.size)
    middle = (np.cumsum(mass) - mass / 2) / mass.sum()
    labels = np.unique(np.minimum((k * middle).astype(np.int64), k - 1)[inverse], return_inverse=True)[1]
    return _split_to_k(labels, points, weights, k)


def feature_gap_labels(points: np.ndarray, weights: np.ndarray, k: int, feature: int) -> np.ndarray:
    """The rows in ``k`` groups cut at the ``k - 1`` widest gaps between one feature's distinct values.

    A value (or a few) far from the others is a group of its own however few rows hold it, where
    :func:`feature_value_labels` joins it to its neighbours to make the weights even. Equal gaps are cut
    lowest first. With fewer values than groups, the heaviest group is split in two (:func:`_split_to_k`).
    """
    values, inverse = np.unique(points[:, feature], return_inverse=True)
    widest = np.argsort(-np.diff(values), kind="stable")[:k - 1]
    groups = np.zeros(values.size, dtype=np.int64)
    groups[widest + 1] = 1
    return _split_to_k(np.cumsum(groups)[inverse], points, weights, k)


def _split_to_k(labels: np.ndarray, points: np.ndarray, weights: np.ndarray, k: int) -> np.ndarray:
    """Labels 0..g-1 made ``k`` groups: while fewer are left, the heaviest is split along its principal axis.

    The split is along the principal axis of the group's standardised points (in half by rows where they
    are all equal).
    """
    scaled = standardise(points, weights)
    for new in range(int(labels.max()) + 1, k):
        rows = np.flatnonzero(labels == np.argmax(np.bincount(labels, weights=weights, minlength=new)))
        side = _principal_split(scaled[rows], weights[rows])
        if side.all() or not side.any():  # points all equal: no axis to split along
            side = np.arange(rows.size) >= rows.size // 2
        labels[rows[side]] = new
    return labels


def draws_nothing(strategy: str, n_rows: int, unweighted: bool, k: int) -> bool:
    """Whether a start of ``strategy`` draws no random number, and so can be reused within one fit.

    Such a strategy gives the same responsibilities whenever it runs on the same points (a second round of starts
    asks again): Ward's agglomeration of unweighted data of at most :data:`HIERARCHICAL_POINTS` rows, the
    low-kurtosis cut of at most :data:`PROJECTION_POINTS` rows, the starts by a feature's values (points of some
    spread: on one distinct point the first two draw a random partition). Each under its own name:
    ``"hierarchical-pca"`` on all the principal components is a rotation of ``"hierarchical"``'s points, with the
    same distances in exact arithmetic, but where distances tie (rounded values) the rotation's rounding can break
    the ties otherwise and cut another partition.
    """
    whole = unweighted and n_rows <= HIERARCHICAL_POINTS
    if strategy in ("hierarchical", "hierarchical-pca"):
        return whole
    if strategy == "low-kurtosis":
        return n_rows <= PROJECTION_POINTS and (k == 2 or whole)
    return strategy.startswith((FEATURE_VALUES + ":", FEATURE_GAPS + ":"))


def start_responsibilities(strategy: str, points: np.ndarray, weights: np.ndarray, k: int,
                           rng: np.random.Generator) -> np.ndarray:
    """Starting responsibilities of one strategy.

    Parameters
    ----------
    strategy : str
        One of :data:`STRATEGIES`.
    points : ndarray of shape (n, p)
        The family's seeding points.
    weights : ndarray of shape (n,)
        Frequency weights.
    k : int
        Number of components.
    rng : numpy.random.Generator

    Returns
    -------
    ndarray of shape (n, k)
        Rows summing to one (hard assignments except for ``"random"``).

    """
    n = points.shape[0]
    if strategy == "random":
        resp = rng.uniform(size=(n, k))
        return resp / resp.sum(axis=1, keepdims=True)
    if strategy == "random-partition":
        labels = _random_partition(n, k, rng)
    elif strategy == "kmeans":
        labels = _kmeans_labels(points, weights, k, rng)
    elif strategy == "kmeans++":
        labels = _seed_labels(points, weights, k, rng)
    elif strategy == "standardised-kmeans":
        labels = _kmeans_labels(standardise(points, weights), weights, k, rng)
    elif strategy == "random-centres":
        labels = _random_centre_labels(standardise(points, weights), weights, k, rng)
    elif strategy == "hierarchical":
        labels = hierarchical_labels(standardise(points, weights), weights, k, rng)
    elif strategy == "hierarchical-pca":
        labels = hierarchical_labels(principal_components(points, weights, max(2, k)), weights, k, rng)
    elif strategy == "low-kurtosis":
        projected = low_kurtosis_projection(points, weights, max(1, k - 1), rng)
        if projected.shape[1] == 0:  # one distinct point: no direction to project on
            labels = _random_partition(n, k, rng)
        elif k == 2:
            labels = two_means_cut(projected[:, 0], weights)
        else:
            labels = hierarchical_labels(projected, weights, k, rng)
    elif strategy.startswith(FEATURE_VALUES + ":"):
        labels = feature_value_labels(points, weights, k, int(strategy.split(":")[1]))
    elif strategy.startswith(FEATURE_GAPS + ":"):
        labels = feature_gap_labels(points, weights, k, int(strategy.split(":")[1]))
    else:
        raise InputError(f"strategy: expected one of {list(STRATEGIES)}, got {strategy!r}")
    return np.eye(k)[labels]


def partition_key(responsibilities: np.ndarray) -> bytes | None:
    """A key equal for two hard starts that put the same points together, whatever the components' order.

    Deterministic strategies (k-means from different seeds often ends in the same Lloyd solution, and
    several strategies can agree) repeat starts; a repeated start repeats its run, which costs passes over
    the data and finds nothing new. Soft (``"random"``) responsibilities have no key (None).

    Parameters
    ----------
    responsibilities : ndarray of shape (n, K)

    Returns
    -------
    bytes or None
        The labels renumbered in order of first appearance.

    """
    labels = np.argmax(responsibilities, axis=1)
    if not np.array_equal(responsibilities, np.eye(responsibilities.shape[1])[labels]):
        return None
    return labels_key(labels, responsibilities.shape[1])


def labels_key(labels: np.ndarray, n_components: int) -> bytes:
    """:func:`partition_key` of a hard partition given by its labels (n,), of ``n_components`` components."""
    _, first = np.unique(labels, return_index=True)
    renumber = np.empty(n_components, dtype=np.int64)
    renumber[labels[np.sort(first)]] = np.arange(first.size)
    return renumber[labels].tobytes()


def is_degenerate(collapsed, weights: np.ndarray, total_weight: float) -> bool:
    """Whether a fit is degenerate: a component collapsed, or one holds less than half an observation's weight.

    Parameters
    ----------
    collapsed : collection of int
        Components whose dispersion hit the floor during the run.
    weights : ndarray of shape (K,)
        Mixing weights at the end of the run.
    total_weight : float
        Number of observations (sum of the frequency weights).

    """
    return bool(len(collapsed)) or bool(np.min(weights) * total_weight < MIN_COMPONENT_COUNT)


def rank_runs(objectives: np.ndarray, degenerate: np.ndarray, spurious: np.ndarray | None = None) -> np.ndarray:
    """Order of runs from best to worst: sound ones by objective, then spurious ones, then degenerate ones.

    Within each tier, by objective, NaN last.

    Parameters
    ----------
    objectives : ndarray of shape (n_runs,)
    degenerate : ndarray of bool, shape (n_runs,)
    spurious : ndarray of bool, shape (n_runs,), optional
        Runs with a spurious component (none if not given).

    Returns
    -------
    ndarray of int, shape (n_runs,)

    """
    score = np.where(np.isnan(objectives), -np.inf, objectives)
    degenerate = np.asarray(degenerate, dtype=bool)
    spurious = np.zeros_like(degenerate) if spurious is None else np.asarray(spurious, dtype=bool)
    return np.lexsort((-score, np.isnan(objectives), spurious & ~degenerate, degenerate))


def _principal_split(points: np.ndarray, weights: np.ndarray, axis: str = "major") -> np.ndarray:
    """Whether each point lies on the positive side of a weighted principal axis through the weighted mean.

    The ``"major"`` axis (of the largest spread) or the ``"minor"`` one (of the smallest); no point for a
    component of no weight.
    """
    if not weights.sum() > 0:
        return np.zeros(points.shape[0], dtype=bool)
    centred = points - weights @ points / weights.sum()
    _, axes = np.linalg.eigh((centred * weights[:, None]).T @ centred)
    return centred @ axes[:, -1 if axis == "major" else 0] > 0


def transfer_moves(responsibilities: np.ndarray, points: np.ndarray, weights: np.ndarray,
                   axes: tuple[str, ...] = ("major",)) -> list[np.ndarray]:
    """Responsibilities one split-and-transfer move away from a fit's, the most promising first.

    For each component k, its points (weighted by its responsibilities) are cut in two by the hyperplane through
    their mean normal to a principal axis (each of ``axes``, the model's
    :meth:`~mixflow.families.base.MixtureModel.split_axes`: by default the major one, of the largest spread); each
    half in turn is handed to each other component i, k keeping the other half. That is a split of k merged at
    once with i (Ueda et al. 2000 split one component and merge two others, which needs K >= 3). Moves are
    ordered by the cosine between the half's responsibilities and i's (their merge criterion): a half that i
    already shares is the likeliest to belong to it. A half holding less than one observation's weight moves
    nothing and is left out.

    Parameters
    ----------
    responsibilities : ndarray of shape (n, K)
        The fit's responsibilities.
    points : ndarray of shape (n, p)
        The seeding points the split is made in (standardised).
    weights : ndarray of shape (n,)
        Frequency weights.
    axes : tuple of str
        The principal axes to cut along, ``"major"`` and/or ``"minor"``.

    Returns
    -------
    list of ndarray of shape (n, K)
        Starting responsibilities, rows summing to one.

    """
    k_total = responsibilities.shape[1]
    root = np.sqrt(weights)
    scored = []
    for k, axis in ((k, axis) for k in range(k_total) for axis in axes):
        own = responsibilities[:, k]
        side = _principal_split(points, own * weights, axis)
        for half in (side, ~side):
            moved = own * half
            if moved @ weights < 1.0 or (own - moved) @ weights < 1.0:
                continue
            for i in range(k_total):
                if i == k:
                    continue
                other = responsibilities[:, i] * root
                with np.errstate(over="ignore"):  # frequency weights near 1e200: the product of the norms overflows
                    norm = np.sqrt((moved * root) @ (moved * root) * (other @ other))
                if not np.isfinite(norm):
                    norm = np.sqrt((moved * root) @ (moved * root)) * np.sqrt(other @ other)
                cosine = (moved * root) @ other / norm if norm > 0 else 0.0
                new = responsibilities.copy()
                new[:, i] += moved
                new[:, k] -= moved
                scored.append((-cosine, len(scored), new))
    scored.sort(key=lambda item: item[:2])
    return [new for _, _, new in scored]


def _cosine(first: np.ndarray, second: np.ndarray, root: np.ndarray) -> float:
    """Cosine between two columns of responsibilities, each row weighted by its frequency weight."""
    first, second = first * root, second * root
    norm = np.sqrt((first @ first) * (second @ second))
    return float(first @ second / norm) if norm > 0 else 0.0


def split_merge_moves(responsibilities: np.ndarray, points: np.ndarray, weights: np.ndarray,
                      limit: int = SPLIT_MERGE_CANDIDATES) -> list[np.ndarray]:
    """Responsibilities one split-and-merge move (Ueda et al. 2000) away from a fit's, the ``limit`` most promising.

    For each pair of components (i, j) and each third component k, i and j are merged into i, and k's points
    (weighted by its responsibilities) are cut in two by the hyperplane through their mean normal to their
    principal axis: k keeps one half, j takes the other. Moves are ordered by Ueda et al.'s merge criterion,
    the cosine between i's and j's responsibilities (components that share their points are the likeliest to
    be one), then by k's share of the weight (a large component is the likelier to hold two groups); only the
    first ``limit`` are made, as Ueda et al. try a few candidates (``C_max`` = 5), since there are
    K (K - 1) (K - 2) / 2 of them. A half holding less than one observation's weight leaves k as it is, and
    the move is left out. None for K < 3.

    Parameters
    ----------
    responsibilities : ndarray of shape (n, K)
        The fit's responsibilities.
    points : ndarray of shape (n, p)
        The seeding points the split is made in (standardised).
    weights : ndarray of shape (n,)
        Frequency weights.
    limit : int
        How many moves to make, the most promising.

    Returns
    -------
    list of ndarray of shape (n, K)
        Starting responsibilities, rows summing to one.

    """
    k_total = responsibilities.shape[1]
    root = np.sqrt(weights)
    counts = weights @ responsibilities
    halves = {}  # k -> the part of k's responsibilities on one side of its principal split, if both hold weight
    for k in range(k_total if k_total >= 3 else 0):
        own = responsibilities[:, k]
        moved = own * _principal_split(points, own * weights)
        if moved @ weights >= 1.0 and (own - moved) @ weights >= 1.0:
            halves[k] = moved
    scored = [(-_cosine(responsibilities[:, i], responsibilities[:, j], root), -counts[k], i, j, k)
              for i in range(k_total) for j in range(i + 1, k_total) for k in halves if k not in (i, j)]
    moves = []
    for *_, i, j, k in sorted(scored)[:limit]:
        new = responsibilities.copy()
        new[:, i] += new[:, j]
        new[:, j] = halves[k]
        new[:, k] -= halves[k]
        moves.append(new)
    return moves


def boundary_moves(log_joint: np.ndarray, fractions=BOUNDARY_FRACTIONS) -> list[np.ndarray]:
    """Hard responsibilities of a fit with its points nearest another component's boundary handed over to it.

    Nearby maxima of a mixture's likelihood often differ by a few points on the boundary between two components,
    which EM does not move across once the assignments have hardened. For each ordered pair (k, i) and each
    fraction f, the ``ceil(f * n_k)`` points assigned to k (n_k of them) with the largest log ratio
    ``log p(i | x) - log p(k | x)`` are given to i; every other point keeps its component.

    Parameters
    ----------
    log_joint : ndarray of shape (n, K)
        ``log w_k + log p_k(x_n)`` of the fit.
    fractions : sequence of float
        Shares of a component's points to move.

    Returns
    -------
    list of ndarray of shape (n, K)
        Starting responsibilities, the smaller moves first.

    """
    k_total = log_joint.shape[1]
    labels = np.argmax(log_joint, axis=1)
    hard = np.eye(k_total)[labels]
    out = []
    for fraction in fractions:
        for k in range(k_total):
            mine = np.flatnonzero(labels == k)
            count = int(np.ceil(fraction * mine.size))
            if mine.size - count < 1:
                continue
            for i in range(k_total):
                if i == k:
                    continue
                nearest = mine[np.argsort(log_joint[mine, k] - log_joint[mine, i], kind="stable")[:count]]
                moved = hard.copy()
                moved[nearest] = np.eye(k_total)[i]
                out.append(moved)
    return out


def outlier_moves(log_joint: np.ndarray, weights: np.ndarray, least: int,
                  fractions=OUTLIER_FRACTIONS, local: np.ndarray | None = None) -> list[np.ndarray]:
    """Hard responsibilities of a fit with one component freed onto the rows the fit explains worst.

    A mixture whose likelihood is highest with a component on a few outlying rows (two extreme incomes beside
    a tied covariance, the zero counts of a Poisson mixture) has a maximum that starts from distances seldom
    reach, and that moving points between neighbouring components does not lead to: every component is
    needed where it is. For each component k and each size, k's rows go to the other component each is
    likeliest under, and that many rows of lowest mixture density ``log sum_k exp(log_joint)`` go to k. The
    sizes are ``least`` rows (as few as the component's parameters need: a group of a few extreme rows) and
    each of ``fractions`` of the total weight, but at least ``least``. A row no other component can hold
    (log density -inf under each) stays with k.

    Parameters
    ----------
    log_joint : ndarray of shape (n, K)
        ``log w_k + log p_k(x_n)`` of the fit.
    weights : ndarray of shape (n,)
        Frequency weights.
    least : int
        The fewest rows a freed component takes, the first size.
    fractions : sequence of float
        Shares of the total weight a freed component takes.
    local : ndarray of shape (n,), optional
        The data's own log density at each row (:func:`local_log_density`; -inf for a row not to be moved
        onto): the rows are then ranked by the fit's density against it (:func:`dense_moves`).

    Returns
    -------
    list of ndarray of shape (n, K)
        Starting responsibilities, the smaller moves first; none for K < 2, and none of a size that would
        take more than half the rows.

    """
    k_total = log_joint.shape[1]
    n = int(np.count_nonzero(weights > 0))  # rows of weight 0 (held out) hold nothing
    if k_total < 2:
        return []
    finite, density = _mixture_density(log_joint)
    if local is not None:
        density = density - local
    worst = np.argsort(np.where(weights > 0, density, np.inf), kind="stable")
    sizes = _group_sizes(weights[worst], n, least, fractions, [least] if least <= n // 2 else [])
    others = [_likeliest_other(finite, k) for k in range(k_total)]
    out = []
    for size in sizes:
        for k in range(k_total):
            labels = others[k].copy()
            labels[worst[:size]] = k
            out.append(np.eye(k_total)[labels])
    return out


def _mixture_density(log_joint: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``log_joint`` with every non-finite entry -inf, and each row's mixture log density (-inf where none holds it)."""
    finite = np.where(np.isfinite(log_joint), log_joint, -np.inf)
    with np.errstate(divide="ignore"):
        return finite, logsumexp(finite, axis=1)


def _likeliest_other(finite: np.ndarray, k: int) -> np.ndarray:
    """For each row, the component other than k it is likeliest under; k itself where no other is finite."""
    without = finite.copy()
    without[:, k] = -np.inf
    likeliest = np.argmax(without, axis=1)
    return np.where(np.isfinite(without[np.arange(finite.shape[0]), likeliest]), likeliest, k)


def _group_sizes(ordered_weights: np.ndarray, n: int, least: int, fractions, sizes: list[int]) -> list[int]:
    """``sizes``, then for each of ``fractions`` the rows (in order) holding that share of the weight (>= ``least``).

    Each size once, none above half the ``n`` rows.
    """
    held = np.cumsum(ordered_weights)
    sizes = list(sizes)
    for fraction in fractions:
        size = max(int(np.searchsorted(held, fraction * held[-1])) + 1, least)
        if size not in sizes and size <= n // 2:
            sizes.append(size)
    return sizes


def freed_moves(reduced: list[np.ndarray], weights: np.ndarray, least: int,
                fractions=FREED_FRACTIONS) -> list[np.ndarray]:
    """Hard responsibilities of a fit with one component given to the others and freed onto the rows they explain worst.

    :func:`outlier_moves` frees a component onto the rows the fit explains worst. A group apart can show only
    once the component is gone and the others have widened to take its rows: on three features of the wine
    data with a tied covariance, the best fit holds two cultivars in one component and twelve wines in another,
    and from the fit of the three cultivars it is reached by giving one cultivar's component to its neighbour and
    freeing it onto the rows that fit explains worst, not the rows the three-cultivar fit does.
    ``reduced[k]`` is ``log w_j + log p_j(x_n)`` of the fit with component k's responsibilities given to the
    other component each row is likeliest under and one M-step taken, its column k -inf
    (:func:`mixflow.engines.em._reduced_log_joint`'s).
    For each k and size, that many rows of lowest mixture density under ``reduced[k]`` go to k and every other
    row to the component it is likeliest under there.

    Parameters
    ----------
    reduced : list of ndarray of shape (n, K)
        One per component, in order.
    weights : ndarray of shape (n,)
        Frequency weights; rows of weight 0 (held out) are not moved onto.
    least : int
        The fewest rows a freed component takes.
    fractions : sequence of float
        Shares of the total weight a freed component takes (at least ``least`` rows, at most half of them).

    Returns
    -------
    list of ndarray of shape (n, K)
        Starting responsibilities, component by component, the smaller moves first.

    """
    n = int(np.count_nonzero(weights > 0))
    out = []
    for k, log_joint in enumerate(reduced):
        finite, density = _mixture_density(log_joint)
        worst = np.argsort(np.where(weights > 0, density, np.inf), kind="stable")  # a row none can hold first
        likeliest = np.argmax(finite, axis=1)
        for size in _group_sizes(weights[worst], n, least, fractions, []):
            labels = likeliest.copy()
            labels[worst[:size]] = k
            out.append(np.eye(log_joint.shape[1])[labels])
    return out


def reduced_responsibilities(resp: np.ndarray, log_joint: np.ndarray, k: int) -> np.ndarray:
    """Responsibilities (n, K) with component k's share of each row given to the other it is likeliest under.

    A row no other component can hold (``log_joint`` -inf in each) stays with k.
    """
    others = _likeliest_other(_mixture_density(log_joint)[0], k)
    rows = np.flatnonzero(others != k)
    merged = resp.copy()
    merged[rows, others[rows]] += merged[rows, k]
    merged[rows, k] = 0.0
    return merged


def neighbourhood_moves(log_joint: np.ndarray, weights: np.ndarray, points: np.ndarray, least: int,
                        seeds: int = NEIGHBOURHOOD_SEEDS, classes: bool = False) -> list[np.ndarray]:
    """Hard responsibilities of a fit with one component freed onto an outlying row and its nearest rows.

    :func:`outlier_moves` frees a component onto the rows the fit explains worst, wherever each lies; a maximum
    with a component on a few similar rows (two wines apart from the others, with a bounded MAP dispersion)
    is reached from one of them only when they are the worst together. For each of the ``seeds`` rows of
    lowest mixture density ``log sum_k exp(log_joint)``, the row and its nearest rows in ``points`` (by
    Euclidean distance, the row first) until they hold ``least`` of the weight form the group; each component
    in turn takes the group and gives its other rows to the other component each is likeliest under.

    Parameters
    ----------
    log_joint : ndarray of shape (n, K)
        ``log w_k + log p_k(x_n)`` of the fit.
    weights : ndarray of shape (n,)
        Frequency weights; rows of weight 0 (held out) are neither seeds nor neighbours.
    points : ndarray of shape (n, p)
        The seeding points the distances are measured in (standardised).
    least : int
        The weight a group holds, at least: as many rows as a component's parameters need.
    seeds : int
        How many of the worst rows start a group.
    classes : bool, default False
        Whether the rows are classes and the weights their counts (grouped data): then the worst explained are
        those whose count the fit falls shortest of, by ``w log(w / (W p))`` with ``p`` the fit's probability of
        the class and ``W`` the total count (the class's term of the G statistic, highest first), not those of
        lowest probability: a class holding much of the data between empty ones may be given a fair probability
        by a wide component, and still be where the fit is worst.

    Returns
    -------
    list of ndarray of shape (n, K)
        Starting responsibilities, the worst row's groups first; none for K < 2, nor when the groups would take
        more than half the weight, and a group only once.
    """
    k_total = log_joint.shape[1]
    held = np.flatnonzero(weights > 0)
    if k_total < 2 or least > weights.sum() / 2:
        return []
    finite, density = _mixture_density(log_joint)
    if classes:
        with np.errstate(divide="ignore", invalid="ignore"):
            shortfall = weights[held] * (np.log(weights[held] / weights.sum()) - density[held])
        worst = held[np.argsort(-np.nan_to_num(shortfall, nan=-np.inf), kind="stable")[:seeds]]
    else:
        worst = held[np.argsort(density[held], kind="stable")[:seeds]]
    others = [_likeliest_other(finite, k) for k in range(k_total)]
    out, seen = [], set()
    for row in worst:
        distance = np.sum((points[held] - points[row]) ** 2, axis=1)
        order = held[np.lexsort((held != row, distance))]  # the row itself first, then by distance
        group = np.sort(order[:int(np.searchsorted(np.cumsum(weights[order]), least)) + 1])
        if group.tobytes() in seen:
            continue
        seen.add(group.tobytes())
        for k in range(k_total):
            labels = others[k].copy()
            labels[group] = k
            out.append(np.eye(k_total)[labels])
    return out


def local_log_density(points: np.ndarray, weights: np.ndarray, neighbours: int = DENSE_NEIGHBOURS,
                      most: int = DENSE_POINTS) -> np.ndarray:
    """The data's own log density at each row, up to a constant: ``-d log r``, a k-nearest-neighbour estimate.

    ``r`` is the distance from the row to its ``neighbours``-th nearest row, counting a row of weight w as w
    rows (its own further copies at distance 0). On more than ``most`` rows, only a fixed draw of ``most`` of
    them (the same for every fit of the data) is measured, among themselves, and the others get -inf. A distance
    of 0 (a point repeated ``neighbours`` times) is floored at 1e-3 of the median positive one, so a repeated
    point ranks high but finite.
    """
    n, d = points.shape
    rows = np.arange(n)
    if n > most:
        rows = np.sort(np.random.default_rng(0).choice(n, size=most, replace=False))
    sample, mass = points[rows], weights[rows]
    local = np.full(n, -np.inf)
    if rows.size < 2:
        return local
    distance, index = cKDTree(sample).query(sample, k=min(neighbours + 1, rows.size))
    enough = np.cumsum(mass[index], axis=1) - 1.0 >= neighbours  # the row itself counts its weight less one
    reached = np.where(enough.any(axis=1), np.argmax(enough, axis=1), index.shape[1] - 1)  # else the farthest
    radius = distance[np.arange(rows.size), reached]
    positive = radius[radius > 0]
    radius = np.maximum(radius, 1e-3 * np.median(positive) if positive.size else 1.0)
    local[rows] = -d * np.log(radius)
    return local


def dense_moves(log_joint: np.ndarray, weights: np.ndarray, least: int, local: np.ndarray) -> list[np.ndarray]:
    """Hard responsibilities of a fit with one component freed onto the rows where the data are densest against it.

    A tight group inside a wide component (a bright core, a cluster of repeated measurements) is a maximum that
    starts from distances reach only when a seed happens to fall in it, and no move of points between
    components leads to: the fit explains the group's rows well enough, only far less sharply than the data
    gather there. Its rows are those whose own density (``local``, :func:`local_log_density`) most exceeds the
    fit's; each component is freed onto them as in :func:`outlier_moves` (the same sizes, as shares of the
    weight of the rows whose density was measured, -inf marking the others, which are never moved onto), its
    rows going to the other component each is likeliest under.
    """
    measured = np.where(np.isfinite(local), weights, 0.0)  # the sizes are shares of the measured rows' weight
    return outlier_moves(log_joint, measured, least, local=local)
