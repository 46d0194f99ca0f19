"""The units a container records, for the labels of plots and tables.

The data's units are the root attribute ``units`` (:func:`mixflow.container.read.data_units`); a
parameter's unit comes from its family (:meth:`mixflow.families.base.MixtureModel.parameter_unit`).
"""

from mixflow.container.read import data_units
from mixflow.families.base import model_from_json
from mixflow.units import axis_label

__all__ = ["ParameterUnits", "feature_label", "with_unit_column"]


class ParameterUnits:
    """The unit of each parameter element of a container: ``units("mu", {"feature": "waiting"})``."""

    def __init__(self, tree):
        self.model = model_from_json(tree.attrs["model"])
        self.data = data_units(tree)

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


def with_unit_column(table, tree):
    """A :func:`mixflow.compare` table with a ``unit`` column before ``method`` (itself when no units are recorded)."""
    import pandas as pd

    from mixflow.present.compare import element_columns

    units = ParameterUnits(tree)
    if not units.data:
        return table
    elements = element_columns(table)
    column = [units(row["parameter"], {c: row[c] for c in elements if pd.notna(row[c])}) for _, row in table.iterrows()]
    out = table.copy()
    out.insert(out.columns.get_loc("method"), "unit", column)
    return out
