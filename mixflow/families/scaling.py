"""Standardised working units: per-feature location and scale, found without overflow or underflow.

EM runs on ``z = (x - center) / scale``, whose features have weighted mean 0 and variance 1 (a constant
feature keeps scale 1), so its arithmetic never meets the ends of the float64 range whatever the data's
units (1e-300 or 1e300). The families map parameters, priors and log densities between the working units
and the data units; these helpers find the location and scale and the log-Jacobian of the map.
"""

from dataclasses import dataclass

import numpy as np
import xarray as xr

from mixflow.data import offset_of_rows

__all__ = ["ChunkedStandardisation", "Standardisation", "from_moments", "scaled_std", "standardise"]


@dataclass(frozen=True)
class Standardisation:
    """The affine map between data and working units, ``z = (x - center) / scale``.

    Attributes
    ----------
    center : ndarray of shape (d,)
        Weighted mean of each feature (data units).
    scale : ndarray of shape (d,)
        Weighted standard deviation of each feature (data units), 1 for a constant feature.
    log_scale : ndarray of shape (d,)
        ``log(scale)``, computed without forming ``scale`` where it would under- or overflow.
    working : ndarray of shape (n, d)
        The standardised data.

    """

    center: np.ndarray
    scale: np.ndarray
    log_scale: np.ndarray
    working: np.ndarray


def standardise(values: np.ndarray, weights: np.ndarray, common: bool = False) -> Standardisation:
    """Centre and scale the columns of ``values`` to weighted mean 0 and variance 1.

    Each column is first divided by its largest absolute value, so that the mean and variance are formed
    from numbers of order one: data near 1e-300 do not underflow and data near 1e300 do not overflow. A column
    far from zero beyond its spread is moved by its smallest value before (:func:`mixflow.data.offset`).

    Parameters
    ----------
    values : ndarray of shape (n, d)
    weights : ndarray of shape (n,)
        Frequency weights (non-negative, positive total).
    common : bool, default False
        One scale for every feature (the root mean square of the per-feature scales), for models whose
        dispersion is the same in every direction (spherical covariances).

    Returns
    -------
    Standardisation

    """
    anchor = offset_of_rows(values)
    values = values - anchor  # exact (Sterbenz): every value within a factor 2 of the anchor, or the anchor 0
    magnitude = np.abs(values).max(axis=0, initial=0.0)
    magnitude = np.where(magnitude > 0, magnitude, 1.0)
    unit = values / magnitude
    total = weights.sum()
    unit_mean = weights @ unit / total
    unit_centred = unit - unit_mean
    unit_sd = np.sqrt(weights @ (unit_centred * unit_centred) / total)
    units = from_moments(magnitude, unit_mean, unit_sd, common, anchor)
    return Standardisation(units.center, units.scale, units.log_scale, unit_centred / units.unit_sd)


@dataclass(frozen=True)
class ChunkedStandardisation:
    """The map of :func:`standardise` from moments summed over chunks, applied chunk by chunk.

    Attributes
    ----------
    center, scale, log_scale : ndarray of shape (d,)
        As :class:`Standardisation`'s.
    magnitude, unit_mean, unit_sd : ndarray of shape (d,)
        The largest absolute value of each feature, and the weighted mean and standard deviation of the
        features divided by it: :meth:`apply` forms the working units exactly as :func:`standardise` does.

    """

    center: np.ndarray
    scale: np.ndarray
    log_scale: np.ndarray
    magnitude: np.ndarray
    unit_mean: np.ndarray
    unit_sd: np.ndarray
    anchor: np.ndarray | float = 0.0

    def apply(self, values: np.ndarray) -> np.ndarray:
        """Rows in working units, ``((x - anchor) / magnitude - unit_mean) / unit_sd``, as :func:`standardise`'s."""
        return ((values - self.anchor) / self.magnitude - self.unit_mean) / self.unit_sd


def from_moments(magnitude: np.ndarray, unit_mean: np.ndarray, unit_sd: np.ndarray,
                 common: bool = False, anchor=0.0) -> ChunkedStandardisation:
    """The standardisation of data with these moments (of ``(x - anchor) / magnitude``, ``magnitude`` positive).

    What :func:`standardise` computes after its pass over the data; chunked data give the moments as sums
    over chunks. A zero ``unit_sd`` (a constant feature) gives scale 1 in data units. ``anchor``: the value
    each column was moved by first (:func:`mixflow.data.offset`; 0 for most data).
    """
    with np.errstate(over="ignore"):  # 1 / a subnormal magnitude, where no constant feature takes it
        unit_sd = np.where(unit_sd > 0, unit_sd, 1.0 / magnitude)  # a constant feature: scale 1 in data units
    log_scale = np.log(magnitude) + np.log(unit_sd)
    if common:
        reference = log_scale.max()
        log_common = reference + 0.5 * np.log(np.mean(np.exp(2.0 * (log_scale - reference))))
        unit_sd = unit_sd * np.exp(log_common - log_scale)
        log_scale = np.full_like(log_scale, log_common)
    with np.errstate(over="ignore", under="ignore"):
        scale = magnitude * unit_sd
    return ChunkedStandardisation(anchor + magnitude * unit_mean, scale, log_scale, magnitude, unit_mean, unit_sd,
                                  anchor)


def scaled_std(values: xr.DataArray, dims, ddof: int = 0, skipna: bool | None = None) -> xr.DataArray:
    """The standard deviation over ``dims``, whatever the values' magnitude.

    The squares of numpy's standard deviation overflow to infinity beyond about 1e154 (a covariance of data in
    units of 1e150) and underflow to zero below about 1e-154: each element's values are divided by their
    largest magnitude first, and the standard deviation of the quotients multiplied by it.
    """
    magnitude = abs(values).max(dims, skipna=True)
    magnitude = magnitude.where((magnitude > 0) & np.isfinite(magnitude), 1.0)
    return (values / magnitude).std(dims, ddof=ddof, skipna=skipna) * magnitude
