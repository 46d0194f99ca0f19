"""Numbers for people: a value to the precision its uncertainty supports, plain notation where it reads.

``format_number(21437.2, 251.3)`` gives ``"21,440"`` and its sd ``"250"``: two significant digits of
the sd set the last digit shown of both (the convention of the GUM and of most journals). Without an
sd, four significant digits; plain notation between 1e-3 and 1e7, scientific beyond (with an sd, plain
up to 1e12).
"""

import json
import math

from mixflow.wording import counted, listed

__all__ = ["advi_progress", "compile_seconds", "format_number", "format_with_sd", "plot_problem",
           "recorded_warning_line", "set_aside_runs", "warnings_and_diagnostics"]


def _decimals(sd: float, digits: int = 2) -> int:
    """Decimal places that keep ``digits`` significant digits of ``sd`` (negative: tens, hundreds, ...)."""
    return digits - 1 - math.floor(math.log10(abs(sd)))


def _fixed(value: float, decimals: int) -> str:
    rounded = round(value, decimals)
    return f"{rounded:,.{max(decimals, 0)}f}"


def format_number(value, sd=None, *, digits: int = 4) -> str:
    """``value`` rounded to the precision ``sd`` supports (or to ``digits`` significant digits)."""
    if value is None or not math.isfinite(float(value)):
        return "" if value is None else str(value)
    value = float(value)
    if sd is not None and math.isfinite(float(sd)) and float(sd) > 0:
        decimals = _digits_held(value, _decimals(float(sd)))
        if abs(value) < 1e12 and decimals > -12:  # plain with an sd: its digits say the precision
            return _fixed(value, decimals)
    if value == 0:
        return "0"
    if 1e-3 <= abs(value) < 1e7:
        return _fixed(value, max(digits - 1 - math.floor(math.log10(abs(value))), 0))
    return f"{value:.{digits - 1}e}"


def format_with_sd(value, sd) -> tuple[str, str]:
    """The value and its sd, both to the precision of two significant digits of the sd.

    An sd below what the value's float64 digits resolve (a value known to more than 15 significant digits,
    e.g. from frequency weights in the 1e100s) shows the value to 15 digits and the sd in scientific notation.
    """
    if sd is None or not math.isfinite(float(sd)) or float(sd) <= 0:
        return format_number(value), ""
    decimals = _decimals(float(sd))
    plain = abs(float(sd)) < 1e12 and decimals == _digits_held(float(value), decimals)
    return format_number(value, sd), (_fixed(float(sd), decimals) if plain else f"{float(sd):.1e}")


def _digits_held(value, decimals: int) -> int:
    """``decimals`` at most the decimal places of 15 significant digits of ``value`` (float64's)."""
    value = float(value) if value is not None else 0.0
    if value == 0 or not math.isfinite(value):
        return decimals
    return min(decimals, 14 - math.floor(math.log10(abs(value))))


def searched_a_sample(attrs) -> bool:
    """Whether an EM fit's starts were searched on a sample of its rows (large data), from ``/em`` attrs."""
    return int(attrs.get("search_rows", 0)) < int(attrs.get("n_rows", 0))


def set_aside_runs(attrs, prefix: str = "") -> str:
    """What an EM fit's runs ended on besides the winner's tier, from ``/em`` attrs, or '' when nothing was.

    ``"<d> of <n> runs ended degenerate (a component collapsed or emptied) and <s> spurious, set aside"``:
    short runs included, since the screening sets them aside as well; a collapsed run's likelihood is unbounded
    and may be higher than the winner's, an emptied one's is a fit of fewer components.
    """
    parts = [f"{int(attrs.get(key, 0))} {text}" for key, text in (
        ("n_degenerate_restarts", "degenerate (a component collapsed or emptied)"),
        ("n_spurious_restarts", "spurious")) if int(attrs.get(key, 0))]
    if not parts:
        return ""
    return f"{prefix}of {int(attrs.get('n_starts', 0))} runs, {' and '.join(parts)}, set aside"


def compile_seconds(attrs) -> float | None:
    """The seconds of a NUTS or ADVI fit's ``wall_time`` spent compiling (or loading) the model; None if not recorded.

    ADVI records them as ``compile_time``; NUTS among its phases' ``timings`` (``"compile"``).
    """
    if "compile_time" in attrs:
        return float(attrs["compile_time"])
    return json.loads(attrs.get("timings", "{}")).get("compile")


def advi_progress(attrs, digits: int = 7) -> tuple[str, str]:
    """ADVI's convergence and final ELBO in words, from ``/advi`` attrs: of each fit when it ran from several starts.

    ``("settled after 420 iterations", "final ELBO -749.14")``; several fits:
    ``("settled after 420, 700 and 510 iterations (fits 0, 1, 2)", "final ELBO -749.14, -752.3, -750 (fits 0, 1, 2)")``,
    a fit that did not settle said so.
    """
    if "n_iter_per_fit" not in attrs:
        n_iter = attrs.get("n_iter", "?")
        settled = (f"settled after {n_iter} iterations" if attrs.get("converged", 1) else
                   f"did not settle in {n_iter} iterations")
        return settled, f"final ELBO {_elbo(attrs.get('final_elbo', float('nan')), attrs.get('final_elbo_se'), digits)}"
    iterations, converged = json.loads(attrs["n_iter_per_fit"]), json.loads(attrs["converged_per_fit"])
    elbos = json.loads(attrs["final_elbo_per_fit"])
    errors = json.loads(attrs.get("final_elbo_se_per_fit", "null")) or [None] * len(elbos)
    fits = f"(fits {', '.join(map(str, range(len(iterations))))})"
    each = [str(n) + ("" if ok else " (not settled)") for n, ok in zip(iterations, converged, strict=True)]
    counts = listed(each)
    state = "settled" if all(converged) else "not all settled"
    return (f"{state} after {counts} iterations {fits}",
            f"final ELBO {', '.join(_elbo(e, se, digits) for e, se in zip(elbos, errors, strict=True))} {fits}")


def _elbo(value, se, digits: int) -> str:
    """An ELBO to the decimals its standard error ``se`` holds (two significant digits of it), with the error.

    The final ELBO is the mean of a window of single-sample estimates: its digits beyond that error are noise.
    Without an error (results written before it was recorded), ``digits`` significant digits.
    """
    if se is None or not math.isfinite(float(se)) or float(se) <= 0:
        return f"{float(value):.{digits}g}"
    shown, error = format_with_sd(float(value), float(se))
    return f"{shown} (se {error})"


def warnings_and_diagnostics(warned: int, findings) -> str:
    """``"1 warning while running; the diagnostics: 1 problem, 0 warnings"``: a run's warnings and findings, counted.

    The one wording of the run's last line and of its report's summary, so that a reader comparing them finds the
    same numbers: ``warned`` counts the warnings raised while running (those a workflow records in the container),
    ``findings`` the diagnostics' ``(level, text)`` (level ``"bad"``, a problem, or ``"warn"``), counted apart and
    said only when there are some.
    """
    levels = [level for level, _ in findings]
    text = f"{counted(warned, 'warning')} while running"
    if not levels:
        return text
    problems, warnings = counted(levels.count("bad"), "problem"), counted(levels.count("warn"), "warning")
    return f"{text}; the diagnostics: {problems}, {warnings}"


def plot_problem(name: str, error: Exception) -> str:
    """A plot that could not be drawn, as a finding of the diagnostics (the report's and the run's alike)."""
    return f"The {name} plot could not be drawn: {error}"


def recorded_warning_line(recorded: dict) -> str:
    """A warning a workflow recorded (``recorded_warnings``' entries), as ``[stage] Category: message``."""
    stage = f"[{recorded['stage']}] " if recorded.get("stage") else ""
    return f"{stage}{recorded.get('category')}: {recorded.get('message')}"
