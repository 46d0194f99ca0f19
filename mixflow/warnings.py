"""Warning classes, so that users can filter each kind on its own, and the error ADVI stops with."""

import os

__all__ = [
    "ADVIDivergenceError",
    "ConstantFeatureWarning",
    "ConvergenceWarning",
    "DeclarationWarning",
    "DegenerateComponentWarning",
    "MixflowInternalWarning",
    "MixflowWarning",
    "PrecisionWarning",
    "SamplingWarning",
    "SpuriousMaximumWarning",
]


#: mixflow's own files (``warnings.warn(..., skip_file_prefixes=PACKAGE_FILES)``): a warning about the user's data
#: or declaration points at the first line outside them, the caller's
PACKAGE_FILES = (os.path.join(os.path.dirname(os.path.abspath(__file__)), ""),)


class MixflowWarning(UserWarning):
    """Base class of every warning mixflow emits."""


class ConvergenceWarning(MixflowWarning):
    """An iterative fit stopped before meeting its convergence criterion."""


class DegenerateComponentWarning(MixflowWarning):
    """A component collapsed (singular covariance, vanishing weight or noise scale)."""


class SpuriousMaximumWarning(DegenerateComponentWarning):
    """A spurious maximum: the fit returned, or a higher one set aside, has a component of a few points.

    Points close together or near a subspace (:func:`mixflow.families.base.spurious_rule`). A kind of
    :class:`DegenerateComponentWarning` (a component the likelihood's singularities make, not a group), so that a
    filter of that class covers it; its own class lets it be filtered, or kept, apart from the collapsed, empty
    and duplicate components.
    """


class ConstantFeatureWarning(MixflowWarning):
    """A feature of the data takes a single value."""


class PrecisionWarning(MixflowWarning):
    """Values of the data that float64, the type every fit computes in, cannot hold exactly."""


class DeclarationWarning(MixflowWarning):
    """The model's declaration does not meet the data as it was likely meant (an end limit that opens no class).

    It is about the rows given: a cross-validation fold's fit, on fewer of them, does not say it again.
    """


class MixflowInternalWarning(MixflowWarning):
    """Something that should never happen did (e.g. EM decreased its objective); please report it."""


class SamplingWarning(MixflowWarning):
    """MCMC diagnostics flag a problem (R-hat above 1.01, too few effective draws, divergences)."""


class ADVIDivergenceError(FloatingPointError):
    """The ELBO or the variational parameters became NaN or infinite during ADVI's ``pm.fit``."""
