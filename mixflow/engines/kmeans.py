"""k-means: the hard-assignment limit of a Gaussian mixture, and EM's default initialiser.

- :func:`kmeans_plusplus` and :func:`lloyd`: greedy k-means++ seeding and weighted Lloyd iterations (they
  also initialise EM);
- :func:`kmeans`: the public k-means, with the distortion recorded per iteration;
- :func:`recluster`: k centres from weighted candidates, the last step of k-means|| (:data:`SCALABLE_KMEANS`,
  whose passes over chunked data are in :mod:`mixflow.engines.em_chunked`).
"""

import secrets
from dataclasses import dataclass

import numpy as np

from mixflow.arguments import check_count
from mixflow.errors import InputError

__all__ = [
    "SCALABLE_KMEANS",
    "KMeansResult",
    "kmeans",
    "kmeans_plusplus",
    "lloyd",
    "lloyd_run",
    "recluster",
    "squared_distances",
]

SCALABLE_KMEANS = "kmeans||"  # the start strategy of k-means|| (Bahmani et al. 2012), for chunked data


def squared_distances(points: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances, shape (n_points, n_centers), clipped at zero."""
    out = points @ centers.T
    out *= -2.0
    out += np.einsum("ij,ij->i", points, points)[:, None]
    out += np.einsum("ij,ij->i", centers, centers)[None, :]
    return np.maximum(out, 0.0, out=out)


def kmeans_plusplus(points: np.ndarray, n_clusters: int, rng: np.random.Generator,
                    weights: np.ndarray | None = None) -> np.ndarray:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007, with 2 + log k local trials).

    Parameters
    ----------
    points : ndarray of shape (n, p)
    n_clusters : int
    rng : numpy.random.Generator
    weights : ndarray of shape (n,), optional
        Frequency weights: a point counts ``weights[i]`` times.

    Returns
    -------
    ndarray of shape (n_clusters, p)
        The seeds, rows of ``points``.

    """
    n = points.shape[0]
    weights = np.ones(n) if weights is None else weights
    n_trials = 2 + int(np.log(n_clusters))
    first = rng.choice(n, p=weights / weights.sum())
    centers = [points[first]]
    closest = squared_distances(points, points[first][None])[:, 0]
    for _ in range(1, n_clusters):
        potential = weights * closest
        total = potential.sum()
        if total <= 0:  # fewer distinct points than clusters: repeat a point
            candidates = rng.choice(n, size=1, p=weights / weights.sum())
        else:
            candidates = rng.choice(n, size=n_trials, p=potential / total)
        distances = np.minimum(closest[:, None], squared_distances(points, points[candidates]))
        best = int(np.argmin(weights @ distances))
        centers.append(points[candidates[best]])
        closest = distances[:, best]
    return np.array(centers)


def lloyd(points: np.ndarray, centers: np.ndarray, weights: np.ndarray | None = None,
          max_iter: int = 100) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Weighted Lloyd iterations from given centres until the labels stop changing.

    Returns
    -------
    labels : ndarray of shape (n,)
    centers : ndarray of shape (k, p)
    distortion : list of float
        The weighted sum of squared distances to the assigned centre, per iteration (never increases).

    """
    labels, centers, distortion, _ = lloyd_run(points, centers, weights, max_iter)
    return labels, centers, distortion


def lloyd_run(points: np.ndarray, centers: np.ndarray, weights: np.ndarray | None = None,
              max_iter: int = 100) -> tuple[np.ndarray, np.ndarray, list[float], bool]:
    """:func:`lloyd`, also telling whether the labels stopped changing within ``max_iter`` assignments.

    Each iteration assigns every point to its nearest centre, records the distortion
    J = sum_n w_n ||x_n - c_{label_n}||^2 (computed from the differences, not the expanded distances),
    then moves each centre to the weighted mean of its points (an empty cluster keeps its centre).
    Both steps can only lower J, so the recorded values never increase.
    """
    weights = np.ones(points.shape[0]) if weights is None else weights
    centers = np.array(centers, dtype=float, copy=True)
    labels = None
    distortion = []
    converged = False
    for _ in range(max_iter):
        new_labels = np.argmin(squared_distances(points, centers), axis=1)
        gaps = points - centers[new_labels]
        distortion.append(float(weights @ np.einsum("ij,ij->i", gaps, gaps)))
        if labels is not None and np.array_equal(labels, new_labels):
            converged = True
            break
        labels = new_labels
        for k in range(centers.shape[0]):
            members = labels == k
            mass = weights[members].sum()
            if mass > 0:
                centers[k] = weights[members] @ points[members] / mass
    return labels, centers, distortion, converged


def recluster(candidates: np.ndarray, weights: np.ndarray, n_clusters: int, rng: np.random.Generator) -> np.ndarray:
    """``n_clusters`` centres from weighted candidate points: weighted k-means++ seeds, then Lloyd's iterations.

    The last step of k-means|| (Bahmani et al. 2012, step 8), where ``weights[i]`` is the weight of the
    rows nearer to candidate ``i`` than to any other.

    Parameters
    ----------
    candidates : ndarray of shape (m, p)
    weights : ndarray of shape (m,)
        Non-negative, at least one positive.
    n_clusters : int
    rng : numpy.random.Generator

    Returns
    -------
    ndarray of shape (n_clusters, p)

    """
    kept = weights > 0
    points, mass = candidates[kept], weights[kept]
    _, centers, _ = lloyd(points, kmeans_plusplus(points, n_clusters, rng, mass), mass)
    return centers


# -- the public k-means ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KMeansResult:
    """The best of several k-means runs.

    Attributes
    ----------
    centers : ndarray of shape (n_clusters, n_features)
        Cluster centres, in ascending order of their first coordinate.
    labels : ndarray of shape (n_obs,)
        Index of each observation's centre.
    distortion : float
        J = sum_n w_n ||x_n - c_{label_n}||^2 at the end.
    history : ndarray of shape (n_iter,)
        J after each assignment step of the best run (never increases).
    n_iter : int
        Assignment steps of the best run.
    converged : bool
        Whether the labels of the best run stopped changing within ``max_iter`` steps.
    restart_distortions : ndarray of shape (n_init,)
        Final J of every run (the best is the smallest).
    features : ndarray of shape (n_features,)
        Feature names.
    random_seed : int

    """

    centers: np.ndarray
    labels: np.ndarray
    distortion: float
    history: np.ndarray
    n_iter: int
    converged: bool
    restart_distortions: np.ndarray
    features: np.ndarray
    random_seed: int


def kmeans(data, n_clusters: int, *, random_seed: int | None = None, n_init: int = 10, max_iter: int = 300,
           weights=None) -> KMeansResult:
    """k-means: the hard-assignment, isotropic, equal-variance limit of EM for a Gaussian mixture.

    Each run seeds with greedy k-means++ and then alternates Lloyd's two steps (assign to the nearest
    centre, move each centre to its cluster's weighted mean); the distortion J never increases. The run
    with the smallest final J is kept. :class:`SoftKMeans` with a small ``variance`` gives the same
    centres from the same start.

    Parameters
    ----------
    data : array-like of shape (n_obs,) or (n_obs, n_features), DataFrame, or xarray
    n_clusters : int
        At most the number of observations with positive weight.
    random_seed : int, optional
        Seed of the k-means++ draws (drawn and recorded when None).
    n_init : int, default 10
        Number of runs.
    max_iter : int, default 300
        Assignment steps per run.
    weights : array-like of shape (n_obs,), optional
        Frequency weights.

    Returns
    -------
    KMeansResult

    """
    from mixflow.data import validate_data

    n_clusters = check_count("n_clusters", n_clusters, 1)
    n_init = check_count("n_init", n_init, 1)
    max_iter = check_count("max_iter", max_iter, 1)
    if random_seed is None:
        random_seed = secrets.randbits(63)
    random_seed = check_count("random_seed", random_seed, 0)
    validated = validate_data(data, weights=weights, warn_constant=False)
    frequency = validated.frequency
    n_support = int(np.count_nonzero(frequency))
    if n_clusters > n_support:
        raise InputError(f"n_clusters: expected at most the number of observations with positive weight "
                         f"({n_support}), got {n_clusters}")
    runs = []
    for seed in np.random.SeedSequence(random_seed).spawn(n_init):
        rng = np.random.default_rng(seed)
        seeds = kmeans_plusplus(validated.values, n_clusters, rng, frequency)
        runs.append(lloyd_run(validated.values, seeds, frequency, max_iter))
    finals = np.array([run[2][-1] for run in runs])
    labels, centers, history, converged = runs[int(np.argmin(finals))]
    order = np.argsort(centers[:, 0], kind="stable")
    relabel = np.empty_like(order)
    relabel[order] = np.arange(order.size)
    return KMeansResult(centers=centers[order], labels=relabel[labels], distortion=float(history[-1]),
                        history=np.array(history), n_iter=len(history), converged=bool(converged),
                        restart_distortions=finals, features=validated.features, random_seed=random_seed)
