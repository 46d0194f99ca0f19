"""InputError: every check of the user's input raises it, so the command line can tell bad input from a bug."""

import ast
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mixflow
from mixflow.errors import InputError, InputTypeError, UnsupportedError
from mixflow.workflow.config import WorkflowError

PACKAGE = Path(mixflow.__file__).resolve().parent
# Plain ValueError/TypeError left on purpose: internal invariants and protocols, not checks of user input.
# (file relative to the package, enclosing function) -> why
INTERNAL = {
    ("workflow/run.py", "_jsonable"): "json.dumps's default hook must raise TypeError for what it cannot encode",
}


def _plain_raises() -> list[tuple[str, str, int]]:
    """``raise ValueError(...)`` / ``raise TypeError(...)`` (or bare) in mixflow's source: (file, function, line)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        functions = [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)]
        for node in ast.walk(tree):
            if not isinstance(node, ast.Raise) or node.exc is None:
                continue
            raised = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(raised, ast.Name) and raised.id in ("ValueError", "TypeError"):
                inside = [f for f in functions if f.lineno <= node.lineno <= f.end_lineno]
                name = min(inside, key=lambda f: f.end_lineno - f.lineno).name if inside else "<module>"
                found.append((path.relative_to(PACKAGE).as_posix(), name, node.lineno))
    return found


def test_no_plain_value_or_type_error_is_raised_outside_the_internal_invariants():
    unexpected = [f"mixflow/{file}:{line} in {function}" for file, function, line in _plain_raises()
                  if (file, function) not in INTERNAL]
    assert not unexpected, ("raise InputError (a wrong value) or InputTypeError (a wrong type) where user input "
                            "is checked, or add an internal invariant to INTERNAL with the reason:\n"
                            + "\n".join(unexpected))


def test_the_allow_list_names_only_sites_that_exist():
    sites = {(file, function) for file, function, _ in _plain_raises()}
    assert set(INTERNAL) <= sites, set(INTERNAL) - sites


def test_the_checker_sees_a_plain_raise(tmp_path, monkeypatch):
    (tmp_path / "module.py").write_text("def check(x):\n    if x:\n        raise ValueError('x')\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path)
    assert _plain_raises() == [("module.py", "check", 3)]


def test_input_errors_stay_value_and_type_errors():
    assert issubclass(InputError, ValueError) and not issubclass(InputError, TypeError)
    assert issubclass(InputTypeError, InputError) and issubclass(InputTypeError, TypeError)
    assert issubclass(UnsupportedError, InputError) and issubclass(UnsupportedError, NotImplementedError)


def test_asking_a_family_for_what_it_does_not_offer_is_bad_input():
    # drawing rows of a regression needs its covariates: the user's request, not a bug (status 2, not 1)
    rng = np.random.default_rng(0)
    x = rng.normal(size=60)
    frame = pd.DataFrame({"y": np.where(np.arange(60) < 30, 1 + 2 * x, 5 - x) + rng.normal(0, 0.3, 60), "x": x})
    tree = mixflow.fit(mixflow.RegressionMixture(2, "y ~ x"), frame, random_seed=0)
    with pytest.raises(UnsupportedError, match=r"^tree: the 'regression' family cannot draw new rows"):
        mixflow.sample(tree, 5)
    assert issubclass(WorkflowError, InputError)
    assert mixflow.InputError is InputError and mixflow.InputTypeError is InputTypeError
    assert {"InputError", "InputTypeError"} <= set(mixflow.__all__)


@pytest.mark.parametrize("call, error, match", [
    (lambda x: mixflow.GaussianMixture(0), InputError, r"n_components: expected an integer >= 1, got 0"),
    (lambda x: mixflow.GaussianMixture(2, covariance="foo"), InputError, r"covariance: expected one of"),
    (lambda x: mixflow.fit(mixflow.GaussianMixture(2), x, n_init=0), InputError, r"n_init: expected an integer"),
    (lambda x: mixflow.fit("model", x), InputTypeError, r"model: expected a mixflow model"),
    (lambda x: mixflow.fit(mixflow.GaussianMixture(2), x, weights=["a"] * 40), InputTypeError,
     r"weights: expected real numbers"),
    (lambda x: mixflow.fit(mixflow.GaussianMixture(2), x, units={"nope": "m"}), InputError,
     r"units: expected units of the data's columns"),
    (lambda x: mixflow.load_dataset("nope"), InputError, r"name: expected one of"),
    # a value of the wrong type is an InputTypeError (also a TypeError), a wrong value of the right type not
    (lambda x: mixflow.fit(mixflow.GaussianMixture(2), x, n_init="3"), InputTypeError, r"n_init: expected an integer"),
    (lambda x: mixflow.fit(mixflow.GaussianMixture(2), x, n_init=2.0), InputTypeError, r"n_init: expected an integer"),
    (lambda x: mixflow.fit(mixflow.GaussianMixture(2), x, n_init=3.5), InputTypeError, r"n_init: expected an integer"),
    (lambda x: mixflow.GaussianMixture(2.5), InputTypeError, r"n_components: expected an integer >= 1, got 2.5"),
    (lambda x: mixflow.PoissonMixture(2.5), InputTypeError, r"n_components: expected an integer >= 1, got 2.5"),
    (lambda x: mixflow.fit(mixflow.GaussianMixture(2), x, method="advi", minibatch_size="100"), InputTypeError,
     r"minibatch_size: expected None or an integer in \[1, n_obs = 40\], got '100'"),
    (lambda x: mixflow.fit(mixflow.GaussianMixture(2), x, method="advi", minibatch_size=41), InputError,
     r"minibatch_size: expected None or an integer in \[1, n_obs = 40\], got 41"),
    # every count check is one (mixflow.arguments.check_count): a bool is not a count,
    # a string not a seed
    (lambda x: mixflow.fit(mixflow.GaussianMixture(2), x, max_iter=True), InputTypeError,
     r"max_iter: expected an integer >= 1, got True"),
    (lambda x: mixflow.fit(mixflow.GaussianMixture(2), x, chunk_size=True), InputTypeError,
     r"chunk_size: expected None \(.*\) or an integer >= 1, got True"),
    (lambda x: mixflow.fit(mixflow.GaussianMixture(2), x, random_seed="7"), InputTypeError,
     r"random_seed: expected None or a non-negative integer"),
    (lambda x: mixflow.select_k(mixflow.GaussianMixture(2), x, ks=[1, 2], n_jobs="2"), InputTypeError,
     r"n_jobs: expected None \(all available cores\) or an integer >= 1, got '2'"),
    (lambda x: mixflow.select_k(mixflow.GaussianMixture(2), x, ks=[1, 2], n_folds=1), InputError,
     r"n_folds: expected None \(no cross-validation\) or an integer >= 2, got 1"),
])
def test_checks_of_user_input_raise_input_errors(call, error, match):
    x = np.random.default_rng(0).normal(size=(40, 2))
    with pytest.raises(error, match=match) as caught:
        call(x)
    assert isinstance(caught.value, ValueError)  # what code written before InputError catches
    assert isinstance(caught.value, TypeError) == (error is InputTypeError)
