"""Start strategies of EM against the best known maximum, on data with unequal feature scales and hard optima.

For each case, each of mixflow's start strategies is fitted with several seeds (``mixflow.fit(model, X,
method="em", init=..., random_seed=s)``, other arguments at their defaults), and, for the Gaussian
families, scikit-learn's GaussianMixture with ``n_init`` random-from-data starts (random responsibilities for
a tied covariance, :func:`sklearn_start`) at ``tol=1e-12`` and a
tiny ``reg_covar`` on the standardised data. The best known maximum is the largest log-likelihood any of
them reached that is neither degenerate (a fit flagged so by mixflow, or a scikit-learn fit with a component
variance at mixflow's collapse floor: a singularity of the likelihood, not a maximum) nor spurious (a
component of a few observations near a lower-dimensional subspace, by mixflow's rule,
:func:`mixflow.families.base.spurious_rule`, applied to mixflow's and scikit-learn's fits alike); the best
spurious maximum found is printed alongside (``spurious best``), so that nothing is hidden.
Printed per case and strategy: the worst relative shortfall over the seeds, (best - log L) / |best|, and
the mean CPU time (one BLAS thread, so that other work on the machine does not change the ratios) relative
to ``"kmeans"`` (the default before ``"auto"``: n_init k-means starts run to convergence). For the Gaussian
cases, ``ratio`` is the best known fit's smallest Hathaway ratio (over its components: the smallest
eigenvalue of inv(Sigma_j) Sigma_h over the other components j) and ``min n`` its smallest component's
weight in observations; ``sp ratio`` and ``sp n`` are those of the spurious component of the best spurious
fit (McLachlan and Peel 2000, sec. 3.10), which restarts reach only by chance.

With ``--baseline=REV`` (a git revision of this repository), the default call of that revision and the default
call of this tree are timed on every case by the same script, each in a subprocess importing its code (``git
archive`` of REV; this directory), one after the other, with the same seeds, one BLAS thread and CPU time, after
one untimed call of the case; each seed's time is the least of ``--repeats=R`` calls (3 by default: the same work
each time, so the least is the one other work on the machine disturbed least), and a case's time the mean over
the seeds: ``auto / baseline`` is the default's time against that revision's default, the issue's measure
("less than 3x today's default time": ``b2c0776`` is main when the issue was filed, whose default was n_init=5
k-means starts on the raw features, plain EM to a relative change of 1e-8); ``baseline shortfall`` is that
default's worst relative shortfall. (The strategies' times above, ``... time`` against ``"kmeans"``, are one call
per seed in this process.)

Usage: python benchmarks/starts.py [--quick] [--sklearn-starts=N] [--baseline=REV] [--repeats=R] [--seeds=S]
[part of a case name ...]
(--quick: two small cases, iris and a regression, one seed, 10 sklearn starts; N: scikit-learn starts per case,
100 by default, 0 for none; S: seeds 0..S-1, 3 by default; names: only the cases containing one of them).
``auto seeds at max`` counts the seeds whose default fit is at the best known maximum and sound.
"""

import atexit
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn import datasets as skdata
from sklearn.mixture import GaussianMixture as SkGaussianMixture
from threadpoolctl import threadpool_limits

import mixflow
from mixflow.families.gaussian.numerics import hathaway_ratios

STRATEGIES = ("kmeans", "kmeans++", "random", "auto")
TARGET = 1e-6


def quadratic_regressions(seed: int = 0, low: float = -3.0, high: float = 3.0, level: float = 8.0) -> pd.DataFrame:
    """Two quadratic regressions, y = x^2 and y = level + 2x - x^2 (noise sd 1), x uniform on (low, high).

    The curves cross, so the responses of the two components overlap: clustering (x, x^2, y) splits the
    data along x, and EM from there stays on a worse maximum.
    """
    rng = np.random.default_rng(seed)
    n = 300
    x = rng.uniform(low, high, n)
    first = rng.random(n) < 0.5
    y = np.where(first, x**2, level - x**2 + 2 * x) + rng.normal(0, 1.0, n)
    return pd.DataFrame({"y": y, "x": x, "x2": x**2})


def unequal_scales(seed: int = 0, separation: float = 1.0) -> pd.DataFrame:
    """Three clusters along a narrow feature (means -s, 0, s, sd 0.3); a uniform feature 1000 times wider.

    k-means, on the raw features, cuts the wide feature into strips: a worse maximum.
    """
    rng = np.random.default_rng(seed)
    n = 300
    label = rng.integers(3, size=n)
    narrow = separation * np.array([-1.0, 0.0, 1.0])[label] + rng.normal(0, 0.3, n)
    return pd.DataFrame({"narrow": narrow, "wide": rng.uniform(-300, 300, n)})


def tight_group(seed: int = 123) -> pd.DataFrame:
    """A tight group (60 rows, sd 0.1) inside a wide one (240, sd 3), beside a third (100, sd 0.5 and 2).

    At K=2 (diagonal) the maximum is the tight group against the rest; starts from distances put the tight and
    wide groups together unless a seed falls in the tight one.
    """
    rng = np.random.default_rng(seed)
    points = np.vstack([rng.normal(0, 0.1, (60, 2)), rng.normal(3, 3.0, (240, 2)),
                        rng.normal([10, -5], [0.5, 2], (100, 2))])
    return pd.DataFrame(points, columns=["x", "y"])


def _sklearn_frame(loader) -> pd.DataFrame:
    bunch = loader()
    return pd.DataFrame(bunch.data, columns=bunch.feature_names)


def digits_pca(n_components: int = 6) -> pd.DataFrame:
    """scikit-learn's digits (8x8 images, 64 features) on their leading principal components."""
    from sklearn.decomposition import PCA

    scores = PCA(n_components).fit_transform(skdata.load_digits().data)
    return pd.DataFrame(scores, columns=[f"pc{i + 1}" for i in range(n_components)])


def cases(quick: bool) -> list[tuple]:
    """(name, model, data, weights) of every case."""
    G, shipped = mixflow.GaussianMixture, mixflow.load_dataset
    faithful, iris = shipped("faithful"), shipped("iris").drop(columns="Species")
    quadratic = mixflow.RegressionMixture(2, "y ~ x + x2")
    small = [
        ("unequal scales sim K=3", G(3), unequal_scales(0, 1.0), None),
        ("faithful K=3", G(3), faithful, None),
        ("iris K=3", G(3), iris, None),
        ("quadratic regressions sim K=2", quadratic, quadratic_regressions(0, 0.0, 4.0, 10.0), None),
    ]
    if quick:  # a Gaussian case (its scikit-learn starts reach a spurious maximum as well) and a non-Gaussian one
        return small[2:]
    wine, cancer = _sklearn_frame(skdata.load_wine), _sklearn_frame(skdata.load_breast_cancer)
    diabetes = _sklearn_frame(skdata.load_diabetes)
    linnerud = _sklearn_frame(skdata.load_linnerud)
    deaths, crabs = shipped("london_deaths"), shipped("crabs")
    return small + [
        ("unequal scales sim 2 K=3", G(3), unequal_scales(0, 0.7), None),
        ("tight group sim diag K=2", G(2, covariance="diag"), tight_group(), None),
        ("quadratic regressions sim 2 K=2", quadratic, quadratic_regressions(0), None),
        ("faithful K=2", G(2), faithful, None),
        ("faithful K=4", G(4), faithful, None),
        ("iris K=2", G(2), iris, None),
        ("iris K=4", G(4), iris, None),
        ("wine K=2", G(2), wine, None),
        ("wine K=3", G(3), wine, None),
        ("wine diag K=4", G(4, covariance="diag"), wine, None),
        ("wine tied K=3", G(3, covariance="tied"), wine, None),
        ("wine 3 features tied K=3", G(3, covariance="tied"), wine[["alcohol", "malic_acid", "flavanoids"]], None),
        ("digits PCA-6 tied K=3", G(3, covariance="tied"), digits_pca(6), None),
        ("digits PCA-6 tied K=4", G(4, covariance="tied"), digits_pca(6), None),
        ("linnerud tied K=3", G(3, covariance="tied"), linnerud, None),
        ("breast cancer K=2", G(2), cancer, None),
        ("breast cancer diag K=3", G(3, covariance="diag"), cancer, None),
        ("breast cancer diag K=4", G(4, covariance="diag"), cancer, None),
        ("diabetes K=2", G(2), diabetes, None),
        ("diabetes K=3", G(3), diabetes, None),
        ("diabetes diag K=4", G(4, covariance="diag"), diabetes, None),
        ("galaxies K=3", G(3), shipped("galaxies"), None),
        ("galaxies K=4", G(4), shipped("galaxies"), None),
        ("acidity K=2", G(2), shipped("acidity"), None),
        ("acidity K=3", G(3), shipped("acidity"), None),
        ("enzyme K=3", G(3), shipped("enzyme"), None),
        ("enzyme K=4", G(4), shipped("enzyme"), None),
        ("crabs grouped K=2", mixflow.GroupedGaussianMixture(2, bounds=("lower", "upper")),
         crabs[["lower", "upper"]], crabs["count"].to_numpy()),
        ("london deaths Poisson K=2", mixflow.PoissonMixture(2), deaths[["deaths"]], deaths["days"].to_numpy()),
        ("london deaths Poisson K=3", mixflow.PoissonMixture(3), deaths[["deaths"]], deaths["days"].to_numpy()),
        ("tone regression K=2", mixflow.RegressionMixture(2, "tuned ~ stretchratio"), shipped("tone"), None),
        ("tone regression K=3", mixflow.RegressionMixture(3, "tuned ~ stretchratio"), shipped("tone"), None),
    ]


def shape(model, params: dict, n_obs: float) -> tuple[float, float, bool]:
    """Smallest Hathaway ratio and smallest component (in observations) of a Gaussian fit, and whether it is
    spurious (NaN, NaN, False for other families). The rule is affine invariant: any units will do."""
    if not isinstance(model, mixflow.GaussianMixture):
        return np.nan, np.nan, False
    spurious = model.spurious_components(params, n_obs)
    if spurious:  # the spurious component's own figures
        return min(r for _, _, r in spurious), min(c for _, c, _ in spurious), True
    ratios = hathaway_ratios(model.covariance, params[model.covariance_name()])
    return float(ratios.min()), float(np.min(params["weights"]) * n_obs), False


def fit_mixflow(model, data, weights, init: str, seed: int) -> tuple[float, float, bool, tuple]:
    """Log-likelihood, CPU seconds, degenerate flag and :func:`shape` of one default call with ``init``."""
    begin = time.process_time()
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tree = mixflow.fit(model, data, method="em", init=init, weights=weights, random_seed=seed)
    seconds = time.process_time() - begin
    attrs, estimate = tree["em"].attrs, tree["em/estimate"]
    params = {name: estimate[name].values for name in estimate.data_vars}
    return (attrs["log_likelihood"], seconds, bool(attrs.get("degenerate", 0)),
            shape(model, params, attrs["n_observations"]))


def _sklearn_collapsed(sk, covariance_type: str) -> bool:
    """Whether a component of a fit on standardised data is at the collapse floor mixflow uses (1e-6)."""
    covariances = sk.covariances_
    if covariance_type in ("full", "tied"):
        smallest = np.linalg.eigvalsh(covariances).min()
    else:
        smallest = np.min(covariances)
    return bool(smallest < 2e-6)


def sklearn_start(covariance_type: str) -> str:
    """scikit-learn's ``init_params`` for a covariance type: ``"random_from_data"``, ``"random"`` when tied.

    ``"random_from_data"`` gives K rows a responsibility and no other, while scikit-learn's tied M-step sums
    ``X.T @ X`` over every row: the first shared covariance is about n / K times the data's, every component
    covers every point, and EM can stay at the one-cluster fit (on the digits' principal components it stops
    there after three iterations from every seed). Random responsibilities give every row to every component.
    """
    return "random" if covariance_type == "tied" else "random_from_data"


def fit_sklearn(model, data, n_init: int, seed: int) -> list[tuple[float, tuple]]:
    """Non-collapsed log-likelihoods of scikit-learn's random starts with their :func:`shape` (none when not a
    Gaussian mixture).

    Fitted on the standardised data (one scale for every feature under a spherical covariance; the log-likelihood
    moved back by the Jacobian), one start at a time so
    that collapsed fits can be set aside, at one BLAS thread as mixflow's small fits.
    """
    if not isinstance(model, mixflow.GaussianMixture) or n_init == 0:
        return []
    x = np.asarray(data, dtype=float).reshape(len(data), -1)
    sd = x.std(axis=0)
    if model.covariance == "spherical":  # one scale for all features: a scale per feature changes a spherical model
        sd = np.full_like(sd, np.sqrt(np.mean(sd**2)))
    z = (x - x.mean(axis=0)) / sd
    found = []
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for start in range(n_init):
            sk = SkGaussianMixture(model.n_components, covariance_type=model.covariance,
                                   init_params=sklearn_start(model.covariance),
                                   tol=1e-12, max_iter=500, reg_covar=1e-10, random_state=seed + start)
            try:
                sk.fit(z)
            except ValueError:  # a singular covariance on the way
                continue
            log_likelihood = sk.score(z) * len(z) - len(z) * np.log(sd).sum()
            if not _sklearn_collapsed(sk, model.covariance):
                params = {"weights": sk.weights_, "mu": sk.means_, model.covariance_name(): sk.covariances_}
                found.append((log_likelihood, shape(model, params, len(z))))
    return found


def _best(fits: list[tuple[float, tuple]], spurious: bool) -> tuple[float, tuple]:
    """The highest log-likelihood among the (spurious or sound) fits and its shape; -inf when there is none."""
    chosen = [(ll, fit_shape) for ll, fit_shape in fits if fit_shape[2] == spurious]
    return max(chosen, key=lambda pair: pair[0]) if chosen else (-np.inf, (np.nan, np.nan, spurious))


_DEFAULT_FIT = """
import json, pickle, sys, time, warnings
from threadpoolctl import threadpool_limits
import mixflow
from mixflow.families.base import model_from_json
spec, data, weights, seeds, repeats = pickle.load(open(sys.argv[1], "rb"))
model, out = model_from_json(spec), []
with threadpool_limits(1), warnings.catch_warnings():  # untimed: the process's one-time costs (imports, first use)
    warnings.simplefilter("ignore")
    mixflow.fit(model, data, method="em", weights=weights, random_seed=seeds[0])
for seed in seeds:
    least = float("inf")
    for _ in range(repeats):
        begin = time.process_time()
        with threadpool_limits(1), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = mixflow.fit(model, data, method="em", weights=weights, random_seed=seed)
        least = min(least, time.process_time() - begin)
    out.append((least, float(tree["em"].attrs["log_likelihood"])))
print(json.dumps(out))
"""
#: This tree's code, timed as the baseline's is
HERE = str(Path(__file__).resolve().parent.parent)


def checkout(revision: str) -> str:
    """A directory holding the package as of ``revision`` (``git archive`` of this repository)."""
    root = Path(__file__).resolve().parent.parent
    target = tempfile.mkdtemp(prefix="mixflow-baseline-")
    atexit.register(shutil.rmtree, target, True)  # removed when this process ends, whatever ends it
    archive = subprocess.run(["git", "archive", revision], cwd=root, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", target], input=archive, check=True)
    return target


def fit_default(code: str, model, data, weights, seeds, repeats: int = 1) -> list[tuple[float, float]]:
    """CPU seconds (the least of ``repeats`` calls) and log-likelihood of the default call of the code in ``code``,
    per seed (a subprocess)."""
    with tempfile.NamedTemporaryFile(suffix=".pkl") as handle:
        pickle.dump((model.to_json(), data, weights, seeds, repeats), handle)
        handle.flush()
        result = subprocess.run([sys.executable, "-c", _DEFAULT_FIT, handle.name], capture_output=True, text=True,
                                env={**os.environ, "PYTHONPATH": code}, cwd=code, check=True)
    return [tuple(pair) for pair in json.loads(result.stdout.strip().splitlines()[-1])]


def run_case(name, model, data, weights, seeds, n_sklearn, baseline=None, repeats: int = 3) -> dict:
    """Every strategy's worst log-likelihood over the seeds, its mean time, scikit-learn's best sound fit, and
    the shapes of the best sound and best spurious fits."""
    row, found = {"case": name}, []
    fit_mixflow(model, data, weights, "auto", seeds[0])  # untimed, as the baseline's: one-time costs of the case
    for init in STRATEGIES:
        fits = [fit_mixflow(model, data, weights, init, seed) for seed in seeds]
        row[f"{init} logL"] = min(ll if not degenerate else -np.inf for ll, _, degenerate, _ in fits)
        row[f"{init} logLs"] = [ll if not degenerate and not fit_shape[2] else -np.inf
                                for ll, _, degenerate, fit_shape in fits]
        sound = [(ll, fit_shape) for ll, _, degenerate, fit_shape in fits if not degenerate]
        row[f"{init} best"] = _best(sound, False)[0]
        row[f"{init} s"] = float(np.mean([s for _, s, _, _ in fits]))
        row[f"{init} spurious"] = sum(fit_shape[2] for _, _, degenerate, fit_shape in fits if not degenerate)
        found += sound
    if baseline is not None:
        fits = fit_default(baseline, model, data, weights, seeds, repeats)
        row["baseline s"], row["baseline logL"] = float(np.mean([s for s, _ in fits])), min(ll for _, ll in fits)
        row["default s"] = float(np.mean([s for s, _ in fit_default(HERE, model, data, weights, seeds, repeats)]))
    sklearn = fit_sklearn(model, data, n_sklearn, 0) if weights is None else []
    row["sklearn logL"] = _best(sklearn, False)[0] if sklearn else np.nan
    found += sklearn
    (_, (row["ratio"], row["min n"], _)), (row["spurious best"], (row["sp ratio"], row["sp n"], _)) = (
        _best(found, False), _best(found, True))
    return row


def report(rows: list[dict]) -> pd.DataFrame:
    """Best known maximum, worst relative shortfall per strategy and time relative to "kmeans"."""
    table = pd.DataFrame(rows).set_index("case")
    best = table[[f"{s} best" for s in STRATEGIES] + ["sklearn logL"]].max(axis=1)
    out = pd.DataFrame({"best known": best.round(4)})
    for init in STRATEGIES:
        out[f"{init} shortfall"] = ((best - table[f"{init} logL"]) / best.abs()).map(lambda v: f"{v:.1e}")
    out["sklearn shortfall"] = ((best - table["sklearn logL"]) / best.abs()).map(lambda v: f"{v:.1e}")
    for init in STRATEGIES[1:]:
        out[f"{init} time"] = (table[f"{init} s"] / table["kmeans s"]).round(2)
    if "baseline s" in table:
        out["auto / baseline"] = (table["default s"] / table["baseline s"]).round(2)
        out["baseline shortfall"] = ((best - table["baseline logL"]) / best.abs()).map(lambda v: f"{v:.1e}")
    out["ratio"] = table["ratio"].map(lambda v: f"{v:.1e}")
    out["min n"] = table["min n"].round(1)
    out["spurious best"] = table["spurious best"].where(np.isfinite(table["spurious best"])).round(4)
    out["sp ratio"] = table["sp ratio"].map(lambda v: f"{v:.1e}")
    out["sp n"] = table["sp n"].round(1)
    out["auto spurious"] = table["auto spurious"].astype(int)
    out["auto at max"] = ((best - table["auto logL"]) / best.abs() < TARGET) & (table["auto spurious"] == 0)
    out["auto seeds at max"] = [int(sum((b - ll) / abs(b) < TARGET for ll in lls))
                                for b, lls in zip(best, table["auto logLs"], strict=True)]
    return out


def main(quick: bool, only: list[str], n_sklearn: int | None, baseline: str | None = None,
         n_seeds: int | None = None, repeats: int = 3, cases_of=None) -> None:
    """Every case of ``cases_of(quick)`` (this file's :func:`cases` by default), a row each as it ends, then totals."""
    seeds = list(range(n_seeds)) if n_seeds else [0] if quick else [0, 1, 2]
    code = checkout(baseline) if baseline else None
    n_sklearn = (10 if quick else 100) if n_sklearn is None else n_sklearn
    rows = []
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        for name, model, data, weights in (cases_of or cases)(quick):
            if only and not any(part in name for part in only):
                continue
            rows.append(run_case(name, model, data, weights, seeds, n_sklearn, code, repeats))
            lines = report(rows).to_string().splitlines()
            print("\n".join(lines if len(rows) == 1 else lines[-1:]), flush=True)
        table = report(rows)
    print(f"\nseeds {seeds}; scikit-learn: {n_sklearn} random_from_data (tied: random) starts, tol 1e-12; "
          f"'auto' at the best known maximum (shortfall < {TARGET:g}) in "
          f"{int(table['auto at max'].sum())}/{len(table)} cases (every seed), "
          f"{int(table['auto seeds at max'].sum())}/{len(table) * len(seeds)} fits")
    if code is not None:
        ratios = table["auto / baseline"]
        print(f"'auto' against {baseline}'s default (least of {repeats} calls per seed, each side): CPU time ratio "
              f"median {ratios.median():.2f}, "
              f"max {ratios.max():.2f}; below 3 in {int((ratios < 3).sum())}/{len(table)} cases")


def cli(cases_of=None) -> None:
    """:func:`main` with the command line's options (the module docstring's usage), on ``cases_of``'s cases."""
    given = [a.split("=")[1] for a in sys.argv[1:] if a.startswith("--sklearn-starts=")]
    against = [a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--baseline=")]
    n_seeds = [int(a.split("=")[1]) for a in sys.argv[1:] if a.startswith("--seeds=")]
    n_repeats = [int(a.split("=")[1]) for a in sys.argv[1:] if a.startswith("--repeats=")]
    if n_repeats and n_repeats[0] < 1:  # no call timed: no time, and no fit to read the log-likelihood of
        sys.exit("--repeats: at least 1")
    main("--quick" in sys.argv, [a for a in sys.argv[1:] if not a.startswith("--")],
         int(given[0]) if given else None, against[0] if against else None, n_seeds[0] if n_seeds else None,
         n_repeats[0] if n_repeats else 3, cases_of)


if __name__ == "__main__":
    cli()
