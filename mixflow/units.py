"""Units of measurement of the data's columns, and the units of parameters built from them.

Units are plain strings (``"min"``, ``"km/s"``), one per column, given as a mapping ``{column: unit}``;
a column without a unit is unitless (a ratio, a log, an index) or of unknown unit, and shows none. The
helpers here compose them for parameters: a mean has its feature's unit, a variance the square, a
covariance the product, a regression slope the ratio of the response's to the covariate's.
"""

import re

__all__ = ["axis_label", "check_units", "unit_power", "unit_product", "unit_ratio", "unit_root"]

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


def check_units(units, columns, name: str = "units") -> dict:
    """Validate units of the data's columns: a mapping of column name to a non-empty string.

    Parameters
    ----------
    units : mapping of str to str, or None
        ``{column: unit}``; columns left out have no unit.
    columns : sequence of str
        The columns that may be named (the data's features).
    name : str, default "units"
        The argument named in errors.

    Returns
    -------
    dict
        The units of the named columns, as a plain dict (empty for None).

    """
    if units is None:
        return {}
    if not hasattr(units, "items"):
        raise TypeError(f"{name}: expected a mapping of column name to unit such as {{'waiting': 'min'}}, got "
                        f"{type(units).__name__} {units!r}")
    columns = [str(c) for c in columns]
    unknown = [key for key in units if str(key) not in columns]
    if unknown:
        raise ValueError(f"{name}: expected units of the data's columns {columns}, got unit(s) for {unknown}")
    bad = {key: value for key, value in units.items() if not isinstance(value, str) or not value.strip()}
    if bad:
        raise ValueError(f"{name}: expected each unit to be a non-empty string such as 'min' or 'km/s', got {bad}")
    return {str(key): value.strip() for key, value in units.items()}


def unit_root(unit: str) -> str:
    """The unit of a square root: ``"min"`` for ``"min²"``, ``"km/s"`` for ``"(km/s)²"``; ``""`` otherwise."""
    if not unit.endswith("²"):
        return ""
    base = unit[:-1]
    return base[1:-1] if base.startswith("(") and base.endswith(")") else base
