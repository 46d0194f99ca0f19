"""Units of measurement of the data's columns, and the units of parameters built from them.

Units are plain strings (``"min"``, ``"km/s"``), one per column, given as a mapping ``{column: unit}``;
a column without a unit is unitless (a ratio, a log, an index) or of unknown unit, and shows none. The
helpers here compose them for parameters: a mean has its feature's unit, a variance the square, a
covariance the product, a regression slope the ratio of the response's to the covariate's. Units given
by the user are checked by :func:`mixflow.data.check_units`, with the data (this module imports nothing of
mixflow's, so the families can compose units at the bottom of the package).
"""

import re

__all__ = ["axis_label", "unit_power", "unit_product", "unit_ratio", "unit_root"]

_SIMPLE = re.compile(r"^[^\s/*·^()]+$")  # one symbol ("min", "cm", "deaths"): no parentheses needed


def _grouped(unit: str) -> str:
    return unit if _SIMPLE.match(unit) else f"({unit})"


def unit_power(unit: str, power: int = 2) -> str:
    """``unit`` to an integer power: ``"min²"``, ``"(km/s)²"``; ``""`` for a unitless quantity."""
    if not unit:
        return ""
    superscripts = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")
    return f"{_grouped(unit)}{str(power).translate(superscripts)}" if power != 1 else unit


def unit_product(first: str, second: str) -> str:
    """The unit of a product: ``"min²"`` for equal units, ``"cm·min"`` otherwise, one alone if the other is ``""``."""
    if first == second:
        return unit_power(first, 2)
    if not first or not second:
        return first or second
    return f"{_grouped(first)}·{_grouped(second)}"


def unit_ratio(numerator: str, denominator: str) -> str:
    """The unit of a ratio: ``"min/cm"``; ``""`` for equal units; ``"1/cm"`` for a unitless numerator."""
    if numerator == denominator:
        return ""
    if not denominator:
        return numerator
    return f"{_grouped(numerator) if numerator else '1'}/{_grouped(denominator)}"


def axis_label(name: str, unit: str | None) -> str:
    """``"waiting (min)"``, or the name alone when it has no unit."""
    return f"{name} ({unit})" if unit else str(name)


def unit_root(unit: str) -> str:
    """The unit of a square root: ``"min"`` for ``"min²"``, ``"km/s"`` for ``"(km/s)²"``; ``""`` otherwise."""
    if not unit.endswith("²"):
        return ""
    base = unit[:-1]
    return base[1:-1] if base.startswith("(") and base.endswith(")") else base
