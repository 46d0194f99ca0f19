"""Warning classes, so that users can filter each kind on its own, and the error ADVI stops with."""

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
]


class MixflowWarning(UserWarning):
    """Base class of every warning mixflow emits."""


class ConvergenceWarning(MixflowWarning):
    """An iterative fit stopped before meeting its convergence criterion."""


class DegenerateComponentWarning(MixflowWarning):
    """A component collapsed (singular covariance, vanishing weight or noise scale)."""


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
