"""What every figure shares: the colour of each method, the check of a figure path, saving."""

from pathlib import Path

from matplotlib.figure import Figure

from mixflow.errors import InputError, InputTypeError, MissingPathError

__all__ = ["METHOD_COLORS", "REPLICATE_COLOR_NAMES", "check_path", "finish"]

#: One colour per method, shared by every plot.
METHOD_COLORS = {"em": "#222222", "bootstrap": "#8c8c8c", "mcmc": "#1f77b4", "stacked": "#17becf",
                 "advi": "#ff7f0e", "advi_stacked": "#bcbd22"}
#: The name of each method's colour as its replicates are drawn in a predictive check (at alpha 0.3, so that
#: the near-black of EM shows grey).
REPLICATE_COLOR_NAMES = {"em": "grey", "bootstrap": "light grey", "mcmc": "blue", "stacked": "cyan",
                         "advi": "orange", "advi_stacked": "olive"}
_FORMATS = (".png", ".svg", ".pdf")


def check_path(path) -> Path | None:
    """Validate a figure path: None, or a .png/.svg/.pdf file in an existing directory."""
    if path is None:
        return None
    if not isinstance(path, str | Path):
        raise InputTypeError(f"path: expected None or a file path (str or pathlib.Path), got {type(path).__name__}")
    path = Path(path)
    if path.suffix.lower() not in _FORMATS:
        raise InputError(f"path: expected a file name ending in one of {list(_FORMATS)}, got {str(path)!r}")
    if not path.parent.is_dir():
        raise MissingPathError(f"path: expected a file in an existing directory, got {str(path)!r}")
    return path


def finish(figure: Figure, path: Path | None) -> Figure:
    """Save the figure to ``path`` if given and return it; its axes' numbers read in full (no offset)."""
    from matplotlib.ticker import ScalarFormatter

    for ax in figure.axes:  # "+1.311e3" above ticks 0.50-0.58 makes a difference of 0.08 look like a trend
        for axis in (ax.xaxis, ax.yaxis):
            formatter = axis.get_major_formatter()
            if isinstance(formatter, ScalarFormatter):
                formatter.set_useOffset(False)
    if path is not None:
        figure.savefig(path, bbox_inches="tight", dpi=110)
    return figure
