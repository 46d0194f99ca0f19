"""Units of measurement of the data's columns, and the units of parameters built from them.

Units are plain strings (``"min"``, ``"km/s"``), one per column, given as a mapping ``{column: unit}``;
a column without a unit is of unknown unit and shows none, nor does a parameter whose unit involves it (the
covariance of a column in min with one of unknown unit: min times what?). A column that is dimensionless (a
ratio, a log, an index) is given the unit ``"1"``: it shows none itself, and a product or ratio with it has
the other's unit. The helpers here compose them for parameters: a mean has its feature's unit, a variance the
square, a covariance the product, a regression slope the ratio of the response's to the covariate's. Units given
by the user are checked by :func:`mixflow.data.check_units`, with the data (this module imports nothing of
mixflow's, so the families can compose units at the bottom of the package).
"""

import re

__all__ = ["DIMENSIONLESS", "axis_label", "unit_power", "unit_product", "unit_ratio", "unit_root", "unit_shown"]

_SIMPLE = re.compile(r"^[^\s/*·^()]+$")  # one symbol ("min", "cm", "deaths"): no parentheses needed


def _grouped(unit: str) -> str:
    return unit if _SIMPLE.match(unit) else f"({unit})"


#: The unit of a dimensionless column: neutral in products and ratios, shown as none
DIMENSIONLESS = "1"


def unit_power(unit: str, power: int = 2) -> str:
    """``unit`` to an integer power: ``"min²"``, ``"(km/s)²"``; ``""`` for an unknown or dimensionless unit."""
    if not unit or unit == DIMENSIONLESS:
        return ""
    superscripts = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")
    return f"{_grouped(unit)}{str(power).translate(superscripts)}" if power != 1 else unit


def unit_shown(unit: str) -> str:
    """A column's unit as a parameter in it shows it: ``""`` for a dimensionless one (``"1"``)."""
    return "" if unit == DIMENSIONLESS else unit


def unit_product(first: str, second: str) -> str:
    """The unit of a product: ``"min²"`` for equal units, ``"cm·min"`` otherwise.

    One alone if the other is dimensionless (``"1"``); ``""`` if either is unknown (``""``).
    """
    if not first or not second:
        return ""
    if first == second:
        return unit_power(first, 2)
    if DIMENSIONLESS in (first, second):
        return second if first == DIMENSIONLESS else first
    return f"{_grouped(first)}·{_grouped(second)}"


def unit_ratio(numerator: str, denominator: str) -> str:
    """The unit of a ratio: ``"min/cm"``; ``""`` for equal units or either unknown (``""``).

    ``"1/cm"`` for a dimensionless numerator (``"1"``), the numerator's for a dimensionless denominator.
    """
    if not numerator or not denominator or numerator == denominator:
        return ""
    if denominator == DIMENSIONLESS:
        return numerator
    return f"{_grouped(numerator) if numerator != DIMENSIONLESS else '1'}/{_grouped(denominator)}"


def axis_label(name: str, unit: str | None) -> str:
    """``"waiting (min)"``, or the name alone when it has no unit (or is dimensionless)."""
    return f"{name} ({unit})" if unit and unit != DIMENSIONLESS else str(name)


def unit_root(unit: str) -> str:
    """The unit of a square root: ``"min"`` for ``"min²"``, ``"km/s"`` for ``"(km/s)²"``; ``""`` otherwise."""
    if not unit.endswith("²"):
        return ""
    base = unit[:-1]
    return base[1:-1] if base.startswith("(") and base.endswith(")") else base
