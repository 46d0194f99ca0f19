"""mixflow: finite mixture models declared once, fitted by EM, NUTS and ADVI into one DataTree."""

from mixflow.analysis.bootstrap import bootstrap
from mixflow.analysis.information import standard_errors
from mixflow.analysis.select import select_k
from mixflow.container.io import load, save
from mixflow.datasets import list_datasets, load_dataset
from mixflow.engines.kmeans import KMeansResult, kmeans
from mixflow.errors import InputError, InputTypeError
from mixflow.families.base import model_from_json
from mixflow.families.gaussian.model import GaussianMixture, GaussianPrior
from mixflow.families.grouped.model import GroupedGaussianMixture
from mixflow.families.poisson.model import PoissonMixture, PoissonPrior
from mixflow.families.regression.model import RegressionMixture, RegressionPrior
from mixflow.families.softkmeans.model import SoftKMeans, SoftKMeansPrior
from mixflow.fitting import fit, predict, predict_proba, responsibilities, sample, score_samples
from mixflow.present.compare import adjusted_rand_index, compare, compare_dataset, label_agreement
from mixflow.present.plots.data import plot_data
from mixflow.present.plots.draws import plot_forest, plot_modes, plot_posteriors, plot_ppc, plot_rank, plot_trace
from mixflow.present.plots.fit import plot_convergence, plot_select_k
from mixflow.present.report.page import report
from mixflow.present.summary import describe, summary
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
    "InputError",
    "InputTypeError",
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
    "describe",
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
    "plot_modes",
    "plot_posteriors",
    "plot_ppc",
    "plot_rank",
    "plot_select_k",
    "plot_trace",
    "predict",
    "predict_proba",
    "report",
    "responsibilities",
    "sample",
    "save",
    "score_samples",
    "select_k",
    "standard_errors",
    "summary",
]
