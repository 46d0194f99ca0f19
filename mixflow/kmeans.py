"""k-means: greedy k-means++ seeding and weighted Lloyd iterations (used to initialise EM)."""

import numpy as np

__all__ = ["kmeans_plusplus", "lloyd", "squared_distances"]


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
    weights = np.ones(points.shape[0]) if weights is None else weights
    centers = centers.copy()
    labels = None
    distortion = []
    for _ in range(max_iter):
        distances = squared_distances(points, centers)
        new_labels = np.argmin(distances, axis=1)
        distortion.append(float(weights @ distances[np.arange(points.shape[0]), new_labels]))
        if labels is not None and np.array_equal(labels, new_labels):
            break
        labels = new_labels
        for k in range(centers.shape[0]):
            members = labels == k
            mass = weights[members].sum()
            if mass > 0:
                centers[k] = weights[members] @ points[members] / mass
    return labels, centers, distortion
