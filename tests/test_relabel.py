"""Label switching: chains in different labellings come out aligned, with R-hat near 1."""

import itertools
from functools import partial

import arviz_stats as azs
import numpy as np
import pytest
import xarray as xr

from mixflow.families.relabel import (
    align,
    apply_permutations,
    assignment_costs,
    gaussian_signature,
    optimal_permutations,
)

TRUTH = {"weights": np.array([0.2, 0.3, 0.5]), "mu": np.array([[-4.0, 0.0], [0.0, 2.0], [4.0, -1.0]]),
         "variance": np.array([[1.0, 0.5], [0.8, 0.8], [0.6, 1.2]])}
DIMS = {"weights": ("chain", "draw", "component"), "mu": ("chain", "draw", "component", "feature"),
        "variance": ("chain", "draw", "component", "feature")}
SCALE = np.array([4.0, 2.0])


def _synthetic_draws(n_chains=4, n_draws=500, seed=0):
    """Posterior-like draws scattered around the truth, every chain in the reference labelling."""
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(400 * TRUTH["weights"], size=(n_chains, n_draws))
    mu = TRUTH["mu"] + 0.1 * rng.standard_normal((n_chains, n_draws, 3, 2))
    variance = TRUTH["variance"] * np.exp(0.05 * rng.standard_normal((n_chains, n_draws, 3, 2)))
    return {"weights": weights, "mu": mu, "variance": variance}


def _max_rhat(draws):
    dataset = xr.Dataset({name: (DIMS[name], value) for name, value in draws.items()})
    rhat = azs.rhat(dataset)
    return max(float(rhat[name].max()) for name in rhat.data_vars)


def test_chains_in_different_labellings_are_aligned_exactly():
    original = _synthetic_draws()
    switched = {name: value.copy() for name, value in original.items()}
    chain_permutations = [(0, 1, 2), (2, 0, 1), (1, 2, 0), (2, 1, 0)]
    for chain, perm in enumerate(chain_permutations):
        for name in switched:
            switched[name][chain] = original[name][chain][:, list(perm)]
    switched["mu"][0, 250:] = original["mu"][0, 250:][:, [1, 0, 2]]  # a switch inside a chain too
    switched["weights"][0, 250:] = original["weights"][0, 250:][:, [1, 0, 2]]
    switched["variance"][0, 250:] = original["variance"][0, 250:][:, [1, 0, 2]]
    assert _max_rhat(switched) > 1.5

    aligned, permutations = align({name: (DIMS[name], value) for name, value in switched.items()}, TRUTH,
                                  partial(gaussian_signature, data_scale=SCALE))

    for name, (dims, value) in aligned.items():
        assert dims == DIMS[name]
        np.testing.assert_array_equal(value, original[name])
    assert _max_rhat({name: value for name, (_, value) in aligned.items()}) < 1.01
    relabelled = np.any(permutations != np.arange(3), axis=-1)
    assert relabelled.sum(axis=1).tolist() == [250, 500, 500, 500]


def test_optimal_permutations_match_brute_force():
    rng = np.random.default_rng(1)
    costs = rng.uniform(size=(50, 4, 4))
    permutations = optimal_permutations(costs)
    for s in range(50):
        best = min(itertools.permutations(range(4)), key=lambda p: sum(costs[s, p[j], j] for j in range(4)))
        assert tuple(permutations[s]) == best


def test_apply_permutations_reorders_only_the_component_axis():
    rng = np.random.default_rng(2)
    values = rng.normal(size=(6, 2, 3, 4))  # draws, something, component, feature
    permutations = np.array([rng.permutation(3) for _ in range(6)])
    out = apply_permutations(values, permutations, axis=2)
    for s in range(6):
        np.testing.assert_array_equal(out[s], values[s][:, permutations[s]])


def test_assignment_costs_are_squared_distances():
    signatures = np.array([[[0.0, 0.0], [3.0, 4.0]]])
    reference = np.array([[0.0, 0.0], [3.0, 0.0]])
    np.testing.assert_allclose(assignment_costs(signatures, reference), [[[0.0, 9.0], [25.0, 16.0]]])


@pytest.mark.parametrize("covariance, dispersion, width", [
    ("full", np.array([np.eye(2), 2 * np.eye(2), 3 * np.eye(2)]), 5),
    ("tied", np.eye(2), 3),
    ("diag", np.ones((3, 2)), 5),
    ("spherical", np.ones(3), 5),
])
def test_gaussian_signature_per_covariance_type(covariance, dispersion, width):
    name = "covariance" if covariance in ("full", "tied") else "variance"
    params = {"weights": TRUTH["weights"], "mu": TRUTH["mu"], name: dispersion}
    signature = gaussian_signature(params, SCALE)
    assert signature.shape == (3, width)
    np.testing.assert_allclose(signature[:, :2], TRUTH["mu"] / SCALE)
    np.testing.assert_allclose(signature[:, -1], np.sqrt(TRUTH["weights"]))


def test_concentric_components_are_told_apart_by_their_spread():
    reference = {"weights": np.array([0.5, 0.5]), "mu": np.zeros((2, 1)), "variance": np.array([[1.0], [9.0]])}
    draws = {"weights": (("chain", "draw", "component"), np.full((1, 2, 2), 0.5)),
             "mu": (("chain", "draw", "component", "feature"), np.zeros((1, 2, 2, 1))),
             "variance": (("chain", "draw", "component", "feature"), np.array([[[[8.0], [1.1]], [[0.9], [10.0]]]]))}
    aligned, permutations = align(draws, reference, partial(gaussian_signature, data_scale=np.ones(1)))
    assert permutations[0].tolist() == [[1, 0], [0, 1]]
    np.testing.assert_allclose(aligned["variance"][1][0, :, :, 0], [[1.1, 8.0], [0.9, 10.0]])
