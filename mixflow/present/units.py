"""The units a container records, for the labels of plots and tables.

The data's units are the root attribute ``units`` (:func:`mixflow.container.read.data_units`); a
parameter's unit comes from its family (:meth:`mixflow.families.base.MixtureModel.parameter_unit`).
"""

from mixflow.container.read import data_units
from mixflow.families.base import model_from_json
from mixflow.units import axis_label

__all__ = ["ParameterUnits", "feature_label"]


class ParameterUnits:
    """The unit of each parameter element of a container: ``units("mu", {"feature": "waiting"})``."""

    def __init__(self, tree):
        self.model = model_from_json(tree.attrs["model"])
        stated = data_units(tree)
        # every feature, "" where no unit was given (unknown): a parameter of several features (a spherical
        # variance, a covariance) has a unit only where all of theirs are known
        features = [str(f) for f in tree["observed_data"]["feature"].values] if stated else []
        self.data = {**{feature: "" for feature in features}, **stated}

    def __call__(self, name: str, element: dict | None = None) -> str:
        """The unit of parameter ``name`` at ``element`` (``{dim: coordinate}``), ``""`` when unitless."""
        if not self.data:
            return ""
        return self.model.parameter_unit(name, {k: v for k, v in (element or {}).items() if k != "component"},
                                         self.data)

    def label(self, title: str, name: str, element: dict | None = None) -> str:
        """``title`` with the element's unit in parentheses, when it has one."""
        return axis_label(title, self(name, element))


def feature_label(tree, feature) -> str:
    """A feature's name with its unit, for an axis: ``"waiting (min)"``."""
    return axis_label(str(feature), data_units(tree).get(str(feature)))

