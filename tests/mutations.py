"""Mutation check: deliberate bugs, applied one at a time to a copy of the package, must each fail a fast test.

Run from the repository root (not collected by pytest)::

    python tests/mutations.py            # every mutation
    python tests/mutations.py --only bootstrap_rows_not_units

Each mutation replaces one exact piece of source text (which must occur once) in a temporary copy of
``mixflow/`` and ``tests/``, runs the fast tests (``-m "not slow"``) of the files that should notice, and
prints the tests that failed. The copy is checked first without a mutation: every listed file must pass.
The exit status is 1 when a mutation survives (no test failed) or the baseline fails.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutation:
    name: str
    what: str
    path: str
    old: str
    new: str
    tests: tuple


GAUSSIAN = "mixflow/families/gaussian/model.py"
NUMERICS = "mixflow/families/gaussian/numerics.py"
MUTATIONS = [
    Mutation("prior_shrinkage", "a wrong prior constant: the default shrinkage 0.01 becomes 0.02", GAUSSIAN,
             "    shrinkage: float = 0.01\n", "    shrinkage: float = 0.02\n", ("tests/test_map_reference.py",)),
    Mutation("prior_dof", "the default degrees of freedom d + 2 become d + 1", GAUSSIAN,
             "dof = float(d + 2) if prior.dof is None", "dof = float(d + 1) if prior.dof is None",
             ("tests/test_map_reference.py",)),
    Mutation("prior_spherical_scale", "the spherical prior scale sums the data variances instead of averaging",
             GAUSSIAN, '"spherical": np.asarray(np.trace(data_cov) / d),',
             '"spherical": np.asarray(np.trace(data_cov)),',
             ("tests/test_map_reference.py",)),
    Mutation("prior_mean_unweighted", "the data centre (and default prior mean) ignores the frequency weights",
             GAUSSIAN, "center = weights @ data.values / weights.sum()", "center = data.values.mean(axis=0)",
             ("tests/test_map_reference.py",)),
    Mutation("map_tied_divisor", "the tied MAP M-step divides by one degree of freedom too many", NUMERICS,
             "(dof + d + 1 + n_components + counts.sum())", "(dof + d + 2 + n_components + counts.sum())",
             ("tests/test_map_reference.py",)),
    Mutation("map_spherical_divisor", "the spherical MAP M-step forgets the d of the means' prior", NUMERICS,
             "(dof + 2 + d + counts * d)", "(dof + 2 + counts * d)", ("tests/test_map_reference.py",)),
    Mutation("map_full_pull_transposed", "the full MAP M-step's prior pull uses gap x mean, a transposed "
             "(non-symmetric) outer product", NUMERICS,
             'pull[:, None, None] * np.einsum("ki,kj->kij", gap, gap)',
             'pull[:, None, None] * np.einsum("ki,kj->kji", gap, means)', ("tests/test_map_reference.py",)),
    Mutation("dirichlet_mode", "the MAP weights drop the Dirichlet's - 1", "mixflow/engines/em_steps.py",
             "mass = np.maximum(counts + concentration - 1.0, 0.0)", "mass = np.maximum(counts + concentration, 0.0)",
             ("tests/test_map_reference.py", "tests/test_public_options.py")),
    Mutation("bootstrap_ignores_weights", "a missing weight in the bootstrap: rows drawn uniformly",
             "mixflow/analysis/bootstrap.py", "rng.multinomial(n_draws, frequency / frequency.sum())",
             "rng.multinomial(n_draws, np.full(frequency.size, 1.0 / frequency.size))", ("tests/test_bootstrap.py",)),
    Mutation("bootstrap_rows_not_units", "the bootstrap draws as many units as rows, not the total weight",
             "mixflow/analysis/bootstrap.py", "n_draws = max(int(round(frequency.sum())), 1)",
             "n_draws = job.x.shape[0]", ("tests/test_bootstrap.py",)),
    Mutation("choice_of_k_off_by_one", "an off-by-one in the choice of K", "mixflow/analysis/select.py",
             "            preferred[column] = int(best)\n", "            preferred[column] = int(best) + 1\n",
             ("tests/test_select.py",)),
    Mutation("wald_quantile", "the Wald interval uses the one-sided quantile", "mixflow/present/compare.py",
             "z = st.norm.ppf(0.5 + ci_prob / 2)", "z = st.norm.ppf(ci_prob)", ("tests/test_compare.py",)),
    Mutation("hdi_is_eti", "ci_kind='hdi' silently gives equal-tailed intervals", "mixflow/present/compare.py",
             "interval = getattr(arviz_stats, ci_kind)(", "interval = arviz_stats.eti(", ("tests/test_compare.py",)),
    Mutation("standard_error_is_variance", "the observed-information 'standard errors' are variances",
             "mixflow/analysis/information.py", "np.sqrt(np.maximum(variances[start:start + size], 0.0))",
             "np.maximum(variances[start:start + size], 0.0)", ("tests/test_compare.py",)),
]


def _copy(destination: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for name in ("mixflow", "tests"):
        shutil.copytree(ROOT / name, destination / name, ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", destination / "pyproject.toml")


def _run_tests(copy: Path, files: tuple) -> tuple[list[str], str]:
    files = [f for f in files if (copy / f).exists()]
    env = {**os.environ, "PYTHONPATH": str(copy)}
    completed = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider",
                                "-m", "not slow", *files], cwd=copy, env=env, capture_output=True, text=True)
    failed = re.findall(r"^FAILED (\S+)", completed.stdout, flags=re.MULTILINE)
    errors = re.findall(r"^ERROR (\S+)", completed.stdout, flags=re.MULTILINE)
    summary = completed.stdout.strip().splitlines()[-1] if completed.stdout.strip() else completed.stderr[-500:]
    return failed + errors, summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="names of the mutations to run")
    arguments = parser.parse_args()
    chosen = [m for m in MUTATIONS if not arguments.only or m.name in arguments.only]
    survived = []
    with tempfile.TemporaryDirectory(prefix="mixflow-mutations-") as directory:
        copy = Path(directory)
        _copy(copy)
        files = tuple(sorted({f for m in chosen for f in m.tests}))
        failed, summary = _run_tests(copy, files)
        print(f"baseline (no mutation), {len(files)} files: {summary}", flush=True)
        if failed:
            print("  the baseline fails: " + ", ".join(failed))
            return 1
        for mutation in chosen:
            target = copy / mutation.path
            original = target.read_text()
            count = original.count(mutation.old)
            if count != 1:
                print(f"\n{mutation.name}: the text to replace occurs {count} times in {mutation.path}; fix the script")
                survived.append(mutation.name)
                continue
            target.write_text(original.replace(mutation.old, mutation.new))
            start = time.perf_counter()
            try:
                failed, summary = _run_tests(copy, mutation.tests)
            finally:
                target.write_text(original)
            verdict = f"caught by {len(failed)} test(s)" if failed else "SURVIVED"
            print(f"\n{mutation.name}: {mutation.what} ({mutation.path})\n  {verdict} in "
                  f"{time.perf_counter() - start:.0f} s [{summary}]", flush=True)
            for test in failed:
                print(f"    {test}")
            if not failed:
                survived.append(mutation.name)
    print(f"\n{len(chosen) - len(survived)} of {len(chosen)} mutations caught"
          + (f"; survived: {', '.join(survived)}" if survived else ""))
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
