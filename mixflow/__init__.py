"""mixflow: finite mixture models declared once, fitted by EM, NUTS and ADVI into one DataTree."""

from mixflow.datasets import list_datasets, load_dataset
from mixflow.families.base import model_from_json
from mixflow.families.gaussian import GaussianMixture, GaussianPrior
from mixflow.fitting import fit, predict, predict_proba
from mixflow.results import load, save
from mixflow.warnings import (
    ConstantFeatureWarning,
    ConvergenceWarning,
    DegenerateComponentWarning,
    MixflowInternalWarning,
    MixflowWarning,
    SamplingWarning,
)

__all__ = [
    "ConstantFeatureWarning",
    "ConvergenceWarning",
    "DegenerateComponentWarning",
    "GaussianMixture",
    "GaussianPrior",
    "MixflowInternalWarning",
    "MixflowWarning",
    "SamplingWarning",
    "fit",
    "list_datasets",
    "load",
    "load_dataset",
    "model_from_json",
    "predict",
    "predict_proba",
    "save",
]
