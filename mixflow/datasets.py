"""The shipped reference datasets, loaded from the package without any network access."""

from importlib import resources

import pandas as pd

__all__ = ["DESCRIPTIONS", "list_datasets", "load_dataset"]

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


def list_datasets() -> pd.DataFrame:
    """List the shipped datasets.

    Returns
    -------
    pandas.DataFrame
        One row per dataset, indexed by name, with its number of rows, its columns and a one-line
        description.

    """
    rows = []
    for name, description in DESCRIPTIONS.items():
        frame = load_dataset(name)
        rows.append(
            {"name": name, "rows": len(frame), "columns": ", ".join(frame.columns), "description": description}
        )
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
        The data as in the CSV file, with its column names.

    """
    if name not in DESCRIPTIONS:
        raise ValueError(f"name: expected one of {sorted(DESCRIPTIONS)}, got {name!r}")
    path = resources.files("mixflow").joinpath("shipped_data", f"{name}.csv")
    with resources.as_file(path) as file:
        return pd.read_csv(file)
