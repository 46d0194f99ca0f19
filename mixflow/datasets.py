"""The shipped reference datasets, loaded from the package without any network access."""

from importlib import resources

import pandas as pd

from mixflow.errors import InputError

__all__ = ["DESCRIPTIONS", "UNITS", "list_datasets", "load_dataset"]

#: Every shipped dataset with a one-line description.
DESCRIPTIONS = {
    "faithful": "Old Faithful eruptions and waiting times (272 x 2, minutes); the 2-D EM example",
    "iris": "Fisher/Anderson iris, four measurements in cm and the species (150 x 5)",
    "galaxies": "velocities (km/s) of 82 galaxies in the Corona Borealis region",
    "acidity": "log acidity index of 155 lakes (Richardson & Green 1997)",
    "enzyme": "enzymatic activity in the blood of 245 people (Richardson & Green 1997)",
    "london_deaths": "days with 0..9 deaths of women over 80 in London, 1910-1912 (counts as frequencies)",
    "crabs": "Weldon's 1,000 Naples crabs, forehead/body-length ratio binned in 29 classes (counts)",
    "tone": "tone perception: perceived against actual stretch ratio, one musician (150 x 2)",
}

#: The unit of each column that has one (data/README.md); ratios, logs, indices and labels have none.
UNITS = {
    "faithful": {"eruptions": "min", "waiting": "min"},
    "iris": {"Sepal.Length": "cm", "Sepal.Width": "cm", "Petal.Length": "cm", "Petal.Width": "cm"},
    "galaxies": {"velocity": "km/s"},
    "acidity": {},
    "enzyme": {},
    "london_deaths": {"deaths": "deaths/day", "days": "days"},
    "crabs": {},
    "tone": {},
}


def list_datasets() -> pd.DataFrame:
    """List the shipped datasets.

    Returns
    -------
    pandas.DataFrame
        One row per dataset, indexed by name, with its number of rows, its columns (with their units) and a
        one-line description.

    """
    rows = []
    for name, description in DESCRIPTIONS.items():
        frame = load_dataset(name)
        columns = ", ".join(f"{c} ({UNITS[name][c]})" if c in UNITS[name] else c for c in frame.columns)
        rows.append({"name": name, "rows": len(frame), "columns": columns, "description": description})
    return pd.DataFrame(rows).set_index("name")


def load_dataset(name: str) -> pd.DataFrame:
    """Load one shipped dataset as a DataFrame (a fresh copy on every call).

    Parameters
    ----------
    name : str
        One of the names listed by :func:`list_datasets`, e.g. ``"faithful"``.

    Returns
    -------
    pandas.DataFrame
        The data as in the CSV file, with its column names; ``attrs["units"]`` maps each column that has a
        unit to it (:data:`UNITS`), and ``attrs["name"]`` is ``name``: :func:`mixflow.fit` records both in the result.

    """
    if name not in DESCRIPTIONS:
        raise InputError(f"name: expected one of {sorted(DESCRIPTIONS)}, got {name!r}")
    path = resources.files("mixflow").joinpath("shipped_data", f"{name}.csv")
    with resources.as_file(path) as file:
        frame = pd.read_csv(file)
    frame.attrs["units"] = dict(UNITS[name])
    frame.attrs["name"] = name
    return frame
