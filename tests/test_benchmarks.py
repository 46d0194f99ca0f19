"""The benchmark scripts are not run by the suite (they take minutes), but what they import from mixflow
must exist: a rename inside the package would otherwise only show when someone next runs them."""

import ast
import importlib
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).parent.parent / "benchmarks").glob("*.py"))


def _mixflow_imports(path: Path) -> list[tuple[str, str]]:
    """Every ``from mixflow... import name`` and ``mixflow.name`` in the file (module level or in functions)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "mixflow":
            found.extend((node.module, alias.name) for alias in node.names)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "mixflow":
            found.append(("mixflow", node.attr))
    return found


@pytest.mark.parametrize("path", BENCHMARKS, ids=[p.name for p in BENCHMARKS])
def test_what_a_benchmark_imports_from_mixflow_exists(path):
    imports = _mixflow_imports(path)
    assert imports, f"{path.name} imports nothing from mixflow"
    missing = [f"{module}.{name}" for module, name in imports
               if not hasattr(importlib.import_module(module), name)
               and importlib.util.find_spec(f"{module}.{name}") is None]
    assert not missing, f"{path.name} imports names that no longer exist: {missing}"


@pytest.mark.slow
@pytest.mark.parametrize("covariance, k", [("full", 2), ("diag", 3)])
def test_numpyro_peer_has_the_log_density_of_our_pymc_model(covariance, k, monkeypatch):
    """The MCMC benchmark's NumPyro model is the same posterior, Jacobians included, on the same unconstrained
    coordinates (NumPyro is an optional benchmark extra, not a test requirement)."""
    pytest.importorskip("numpyro")
    monkeypatch.syspath_prepend(str(Path(__file__).parent.parent / "benchmarks"))
    numpyro_peer = importlib.import_module("numpyro_peer")
    import numpy as np

    import mixflow
    from mixflow.data import validate_data

    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 2)) + np.repeat([[0.0, 0.0], [3.0, 1.0]], 30, axis=0)
    model = mixflow.GaussianMixture(k, covariance=covariance)
    data = validate_data(x)
    prior = model.resolve_prior(model.prepare(data))
    worst = numpyro_peer.check_log_density(model.pymc_model(data, prior), numpyro_peer.model_inputs(model, data, prior))
    assert worst < 1e-10


def test_the_starts_benchmark_fits_scikit_learn_s_spherical_model_on_one_common_scale(monkeypatch):
    """A scale per feature turns a spherical model into another one (its best log-likelihood is not the spherical
    model's): scikit-learn's best of the benchmark's starts must be mixflow's spherical maximum."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent.parent / "benchmarks"))
    starts = importlib.import_module("starts")
    import numpy as np

    import mixflow

    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 2)) * [1.0, 10.0] + np.repeat([[0.0, 0.0], [4.0, 0.0]], 100, axis=0)
    model = mixflow.GaussianMixture(2, covariance="spherical")
    best = max(value for value, _ in starts.fit_sklearn(model, x, 10, 0))
    ours = mixflow.fit(model, x, method="em", random_seed=0)["em"].attrs["log_likelihood"]
    assert best == pytest.approx(ours, rel=1e-8)
