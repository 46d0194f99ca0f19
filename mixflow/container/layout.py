"""The container's layout, named once: group paths and the methods they belong to.

Every module that writes or reads a group of the container takes its path from here, so the layout
(``../README.md``, "The container") is written in one place.
"""

__all__ = [
    "ADVI",
    "ADVI_MODES",
    "ADVI_STACKED",
    "DRAW_GROUPS",
    "EM",
    "EM_BOOTSTRAP",
    "EM_ESTIMATE",
    "EM_RESPONSIBILITIES",
    "EM_SAMPLE_STATS",
    "MCMC",
    "MCMC_MODES",
    "MCMC_STACKED",
    "METHODS",
    "OBSERVED_DATA",
    "REFERENCE_LABELS",
    "RESPONSIBILITY_GROUPS",
    "RUN_WARNINGS",
    "UNITS",
    "ZARR_STORED_CHUNKS",
    "group",
]

OBSERVED_DATA = "observed_data"
REFERENCE_LABELS = "reference_labels"
EM = "em"
MCMC = "mcmc"
ADVI = "advi"

#: Root attribute: the warnings raised while a workflow produced the container (JSON list of
#: ``{"stage", "category", "message"}``).
RUN_WARNINGS = "run_warnings"

#: Root attribute: the units of the data's columns that have one (JSON object ``{column: unit}``).
UNITS = "units"

#: Root attribute of a Zarr store written by mixflow (``tree.to_zarr``), not of the container: how many chunks of
#: each array the store held once written (JSON object ``{array path: [stored, of]}``, arrays with any). Zarr stores
#: no chunk wholly of the fill value and reads a missing one as the fill value; fewer stored is a chunk lost.
ZARR_STORED_CHUNKS = "zarr_stored_chunks"

#: Every method a container can hold, in display order (the bootstrap lives under /em; "stacked", MCMC's
#: draws of every mode resampled by the modes' stacking weights, under /mcmc when the chains found several;
#: "advi_stacked", the same for ADVI's fits from several starts, under /advi).
METHODS = ("em", "bootstrap", "mcmc", "stacked", "advi", "advi_stacked")


def group(method: str, name: str) -> str:
    """The path of group ``name`` of a method's subtree, e.g. ``group("mcmc", "posterior")``."""
    return f"{method}/{name}"


EM_ESTIMATE = group(EM, "estimate")
EM_RESPONSIBILITIES = group(EM, "responsibilities")
EM_SAMPLE_STATS = group(EM, "sample_stats")
EM_BOOTSTRAP = group(EM, "bootstrap")
MCMC_MODES = group(MCMC, "modes")
MCMC_STACKED = group(MCMC, "stacked")
ADVI_MODES = group(ADVI, "modes")  # ADVI fits from several starts (starts="em-optima"), as MCMC's chains
ADVI_STACKED = group(ADVI, "stacked")

#: Where each method's draws of the model parameters are (every one of them an ArviZ ``posterior``).
DRAW_GROUPS = {"bootstrap": group(EM_BOOTSTRAP, "posterior"), "mcmc": group(MCMC, "posterior"),
               "stacked": group(MCMC_STACKED, "posterior"), "advi": group(ADVI, "posterior"),
               "advi_stacked": group(ADVI_STACKED, "posterior")}
#: Where each method's responsibilities are.
RESPONSIBILITY_GROUPS = {"em": EM_RESPONSIBILITIES, "mcmc": group(MCMC, "responsibilities"),
                         "advi": group(ADVI, "responsibilities")}
