"""Plain-text summary and comparison table of a results container (for the terminal)."""

import json

import pandas as pd

from mixflow.container.layout import EM_ESTIMATE
from mixflow.families.base import model_from_json

__all__ = ["comparison_text", "describe"]


def describe(tree) -> str:
    """A readable summary: the model, the data, and each method's headline numbers and estimates."""
    model = model_from_json(tree.attrs["model"])
    lines = [f"model: {model!r}", f"data: {tree.attrs.get('data_name')} "
             f"({tree['observed_data'].sizes['obs']} observations, features "
             f"{tree['observed_data']['feature'].values.tolist()})",
             f"seed: {tree.attrs.get('random_seed')}, mixflow {tree.attrs.get('mixflow_version')}"]
    if "em" in tree.children:
        attrs = tree["em"].attrs
        lines.append(f"\nEM ({attrs['method'].upper()}): log-likelihood {attrs['log_likelihood']:.4f}, "
                     f"{attrs['n_parameters']} parameters, BIC {attrs['bic']:.2f}, AIC {attrs['aic']:.2f}, "
                     f"ICL {attrs['icl']:.2f}, {attrs['n_iter']} iterations, "
                     f"{'converged' if attrs['converged'] else 'NOT converged'}")
        if attrs["method"] == "map":
            lines.append(f"log posterior {attrs['log_posterior']:.4f}; prior {json.loads(attrs['prior'])}")
        estimate = tree[EM_ESTIMATE].to_dataset()
        with pd.option_context("display.width", 160, "display.precision", 5):
            for name, variable in estimate.data_vars.items():
                if variable.ndim == 3:
                    for component in variable["component"].values:
                        lines.append(f"\n{name}, component {component}:\n"
                                     f"{variable.sel(component=component).to_pandas()}")
                else:
                    lines.append(f"\n{name}:\n{variable.to_pandas()}")
    return "\n".join(lines)


def comparison_text(tree, *, ci_prob: float | None = None) -> str:
    """The comparison table of :func:`mixflow.compare` as text, with the agreement of hard labels.

    One row per parameter element and method: estimate, sd, interval, whether the EM point lies in the
    method's interval, and ADVI's distance from NUTS. Then the adjusted Rand index of every pair of
    methods, and of each method against the reference labels when the result carries them.
    """
    from mixflow.present.compare import METHOD_LABELS, compare
    from mixflow.present.labels import reference_agreement

    table = compare(tree, ci_prob=ci_prob)
    shown = table.drop(columns=[c for c in table.columns if table[c].isna().all()])
    probability = f"{table.attrs['ci_prob']:.0%}"
    lines = [f"comparison ({probability} {table.attrs['ci_kind'].upper()} intervals of the draws; "
             f"Wald intervals for EM):"]
    with pd.option_context("display.width", 200, "display.max_rows", None, "display.max_columns", None,
                           "display.precision", 5):
        lines.append(shown.to_string(index=False))
        agreement = table.attrs["label_agreement"]
        if agreement.shape[0] > 1:
            named = agreement.rename(index=METHOD_LABELS, columns=METHOD_LABELS)
            lines.append(f"\nagreement of hard cluster labels between methods (adjusted Rand index):\n"
                         f"{named.to_string(float_format=_four)}")
        reference = reference_agreement(tree)
        if len(reference):
            lines.append(f"\nagreement with {reference.attrs['column']!r} (adjusted Rand index):\n"
                         f"{reference.rename(index=METHOD_LABELS).to_string(float_format=_four)}")
    return "\n".join(lines)


def _four(value: float) -> str:
    return f"{value:.4f}"
