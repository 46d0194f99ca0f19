"""mixflow: finite mixture models declared once, fitted by EM, NUTS and ADVI into one DataTree.

``import mixflow`` loads nothing heavy: the first use of a public name (PEP 562's module ``__getattr__``) imports
every module the public names come from, so that ``mixflow.<subpackage>.<module>`` is there too from then on.
The command line starts at once, and can answer a Ctrl-C from its first moment.
"""

import importlib

#: The public names, by the module (under ``mixflow.``) that defines them.
_PUBLIC = {
    "analysis.bootstrap": ["bootstrap"],
    "analysis.information": ["standard_errors"],
    "analysis.select": ["select_k"],
    "container.io": ["load", "save"],
    "datasets": ["list_datasets", "load_dataset"],
    "engines.kmeans": ["KMeansResult", "kmeans"],
    "errors": ["InputError", "InputTypeError", "MissingPathError", "UnsupportedError"],
    "families.base": ["model_from_json"],
    "families.gaussian.model": ["GaussianMixture", "GaussianPrior"],
    "families.grouped.model": ["GroupedGaussianMixture"],
    "families.poisson.model": ["PoissonMixture", "PoissonPrior"],
    "families.regression.model": ["RegressionMixture", "RegressionPrior"],
    "families.softkmeans.model": ["SoftKMeans", "SoftKMeansPrior"],
    "fitting": ["fit", "predict", "predict_proba", "responsibilities", "sample", "score_samples"],
    "present.compare": ["adjusted_rand_index", "compare", "compare_dataset", "label_agreement"],
    "present.plots.data": ["plot_data"],
    "present.plots.draws": ["plot_forest", "plot_modes", "plot_posteriors", "plot_ppc", "plot_rank", "plot_trace"],
    "present.plots.fit": ["plot_convergence", "plot_select_k"],
    "present.report.page": ["report"],
    "present.summary": ["describe", "summary"],
    "warnings": ["ADVIDivergenceError", "ConstantFeatureWarning", "ConvergenceWarning", "DeclarationWarning",
                 "DegenerateComponentWarning", "MixflowInternalWarning", "MixflowWarning", "PrecisionWarning",
                 "SamplingWarning", "SpuriousMaximumWarning"],
}
__all__ = sorted(name for names in _PUBLIC.values() for name in names)


def _load() -> None:
    """Import the public names' modules and bind the names here (once: then they are module attributes)."""
    namespace = globals()
    for module, names in _PUBLIC.items():
        loaded = importlib.import_module(f"mixflow.{module}")
        namespace.update({name: getattr(loaded, name) for name in names})


def __getattr__(name: str):
    if name.startswith("_"):  # probes (inspect's __wrapped__, IPython's _repr_* and canaries) load nothing
        raise AttributeError(f"module 'mixflow' has no attribute {name!r}")
    _load()
    try:
        return globals()[name]
    except KeyError:
        raise AttributeError(f"module 'mixflow' has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
