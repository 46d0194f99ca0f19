"""Plain-text summary of a results container (for the terminal)."""

import json

import pandas as pd

from mixflow.families.base import model_from_json

__all__ = ["describe"]


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
        estimate = tree["em/estimate"].to_dataset()
        with pd.option_context("display.width", 160, "display.precision", 5):
            for name, variable in estimate.data_vars.items():
                if variable.ndim == 3:
                    for component in variable["component"].values:
                        lines.append(f"\n{name}, component {component}:\n"
                                     f"{variable.sel(component=component).to_pandas()}")
                else:
                    lines.append(f"\n{name}:\n{variable.to_pandas()}")
    return "\n".join(lines)
