"""mixflow: finite mixture models declared once, fitted by EM, NUTS and ADVI into one DataTree."""

from mixflow.bootstrap import bootstrap
from mixflow.compare import adjusted_rand_index, compare, compare_dataset, label_agreement
from mixflow.datasets import list_datasets, load_dataset
from mixflow.families.base import model_from_json
from mixflow.families.gaussian import GaussianMixture, GaussianPrior
from mixflow.families.poisson import PoissonMixture, PoissonPrior
from mixflow.families.regression import RegressionMixture, RegressionPrior
from mixflow.fitting import fit, predict, predict_proba
from mixflow.grouped import GroupedGaussianMixture
from mixflow.information import standard_errors
from mixflow.kmeans import KMeansResult, SoftKMeans, SoftKMeansPrior, kmeans
from mixflow.plots import plot_forest, plot_posteriors, plot_ppc, plot_rank, plot_trace
from mixflow.plots_data import plot_data
from mixflow.plots_fit import plot_convergence, plot_select_k
from mixflow.report import report
from mixflow.results import load, save
from mixflow.select import select_k
from mixflow.warnings import (
    ADVIDivergenceError,
    ConstantFeatureWarning,
    ConvergenceWarning,
    DegenerateComponentWarning,
    MixflowInternalWarning,
    MixflowWarning,
    SamplingWarning,
)

__all__ = [
    "ADVIDivergenceError",
    "ConstantFeatureWarning",
    "ConvergenceWarning",
    "DegenerateComponentWarning",
    "GaussianMixture",
    "GaussianPrior",
    "GroupedGaussianMixture",
    "KMeansResult",
    "MixflowInternalWarning",
    "MixflowWarning",
    "PoissonMixture",
    "PoissonPrior",
    "RegressionMixture",
    "RegressionPrior",
    "SamplingWarning",
    "SoftKMeans",
    "SoftKMeansPrior",
    "adjusted_rand_index",
    "bootstrap",
    "compare",
    "compare_dataset",
    "fit",
    "kmeans",
    "label_agreement",
    "list_datasets",
    "load",
    "load_dataset",
    "model_from_json",
    "plot_convergence",
    "plot_data",
    "plot_forest",
    "plot_posteriors",
    "plot_ppc",
    "plot_rank",
    "plot_select_k",
    "plot_trace",
    "predict",
    "predict_proba",
    "report",
    "save",
    "select_k",
    "standard_errors",
]
