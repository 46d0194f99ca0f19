"""Responsibilities and pointwise log-likelihoods over posterior draws, against a naive scipy computation."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.special import logsumexp

import mixflow
from mixflow.data import validate_data
from mixflow.engines import over_draws


def _draws(rng, count):
    weights = rng.dirichlet([5.0, 5.0, 5.0], size=count)
    mu = np.array([[-2.0, 0.0], [0.0, 1.0], [3.0, -1.0]]) + rng.normal(0, 0.2, size=(count, 3, 2))
    factors = rng.normal(0, 0.3, size=(count, 3, 2, 2)) + np.eye(2)
    return {"weights": weights, "mu": mu, "covariance": factors @ np.swapaxes(factors, -1, -2) + 0.1 * np.eye(2)}


@pytest.mark.parametrize("small_blocks", [False, True])
def test_responsibilities_over_draws_match_scipy(small_blocks, monkeypatch):
    rng = np.random.default_rng(4)
    x = rng.normal(0, 2, size=(50, 2))
    draws = _draws(rng, 9)
    if small_blocks:  # several blocks of draws and several chunks of rows, with short last ones
        monkeypatch.setattr(over_draws, "_BLOCK_FLOATS", 4 * 3 * 50)
        monkeypatch.setattr(over_draws, "chunk_rows", lambda n_obs, width: 7)
    out = over_draws.responsibilities_over_draws(mixflow.GaussianMixture(3), validate_data(x), draws,
                                                 log_likelihood=True)
    log_joint = np.stack([
        np.column_stack([np.log(draws["weights"][s, k]) + stats.multivariate_normal.logpdf(
            x, draws["mu"][s, k], draws["covariance"][s, k]) for k in range(3)])
        for s in range(9)])  # (draw, obs, component)
    log_px = logsumexp(log_joint, axis=2)
    resp = np.exp(log_joint - log_px[:, :, None])
    np.testing.assert_allclose(out["log_likelihood"], log_px, rtol=1e-12)
    np.testing.assert_allclose(out["mean"], resp.mean(axis=0), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(out["sd"], resp.std(axis=0, ddof=1), rtol=1e-6, atol=1e-10)


def test_one_draw_has_zero_spread():
    rng = np.random.default_rng(5)
    draws = {name: value[:1] for name, value in _draws(rng, 1).items()}
    out = over_draws.responsibilities_over_draws(mixflow.GaussianMixture(3), validate_data(rng.normal(size=(20, 2))),
                                                 draws)
    assert set(out) == {"mean", "sd"} and np.all(out["sd"] == 0.0)
    np.testing.assert_allclose(out["mean"].sum(axis=1), 1.0, rtol=1e-12)


FAMILY_DRAWS = {
    "gaussian diag": (lambda: mixflow.GaussianMixture(3, covariance="diag"),
                      lambda rng, s: {"mu": rng.normal(0, 1, (s, 3, 2)), "variance": rng.uniform(0.5, 2, (s, 3, 2))}),
    "poisson": (lambda: mixflow.PoissonMixture(3), lambda rng, s: {"rate": rng.uniform(1, 9, (s, 3))}),
    "soft k-means": (lambda: mixflow.SoftKMeans(3, variance=0.7), lambda rng, s: {"mu": rng.normal(0, 1, (s, 3, 2))}),
}


@pytest.mark.parametrize("family", FAMILY_DRAWS)
def test_draws_side_by_side_give_each_draw_alone(family, monkeypatch):
    """A block of draws evaluated with their components side by side equals the draws one at a time."""
    make, parameters = FAMILY_DRAWS[family]
    model, rng = make(), np.random.default_rng(8)
    x = rng.poisson(4, size=(40, 1)) if family == "poisson" else rng.normal(0, 1.5, size=(40, 2))
    draws = {"weights": rng.dirichlet([4.0] * 3, size=6), **parameters(rng, 6)}
    assert model.stacks_components()
    together = over_draws.responsibilities_over_draws(model, validate_data(x), draws, log_likelihood=True)
    monkeypatch.setattr(type(model), "stacks_components", lambda self: False)
    alone = over_draws.responsibilities_over_draws(model, validate_data(x), draws, log_likelihood=True)
    for key in ("log_likelihood", "mean", "sd"):
        np.testing.assert_allclose(together[key], alone[key], rtol=1e-12, atol=1e-14)


def test_a_draw_that_cannot_score_the_data_is_named_by_its_own_component():
    rng = np.random.default_rng(6)
    draws = _draws(rng, 4)
    draws["covariance"][2, 1] = np.zeros((2, 2))  # draw 2's component 1: singular
    # the draws' parameters are at fault, not the data: said so, with what keeps a sampler from such draws
    with pytest.raises(mixflow.InputError, match=r"^draws: a draw among 0-3 \(over chains\) cannot be evaluated: "
                                                 r"params\['covariance'\]: .* component \[1\] .*; a sampler that "
                                                 r"reached a component collapsing onto a few rows draws such "
                                                 r"parameters: fewer components or a stronger prior keep it away$"):
        over_draws.responsibilities_over_draws(mixflow.GaussianMixture(3), validate_data(rng.normal(size=(20, 2))),
                                               draws)


REPLICATE_CASES = {
    **FAMILY_DRAWS,
    "gaussian full": (lambda: mixflow.GaussianMixture(3), lambda rng, s: {
        "mu": rng.normal(0, 3, (s, 3, 2)), "covariance": _draws(rng, s)["covariance"]}),
    "gaussian tied": (lambda: mixflow.GaussianMixture(3, covariance="tied"), lambda rng, s: {
        "mu": rng.normal(0, 3, (s, 3, 2)), "covariance": _draws(rng, s)["covariance"][:, 0]}),
    "gaussian spherical": (lambda: mixflow.GaussianMixture(3, covariance="spherical"), lambda rng, s: {
        "mu": rng.normal(0, 3, (s, 3, 2)), "variance": rng.uniform(0.2, 2, (s, 3))}),
}


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("family", REPLICATE_CASES)
def test_replicates_of_every_draw_at_once_follow_each_draw_s_own_mixture(family, chunked, monkeypatch):
    """Each draw's replicate, drawn with the others at once, has that draw's distribution: a two-sample
    Kolmogorov-Smirnov test of every feature against replicates drawn one at a time (``model.simulate``),
    p-value above 1e-4, and below it against another draw's (the draws differ enough for 4000 units to tell).
    ``chunked``: blocks of 3 draws, the last one short."""
    from mixflow.families import sampling

    if chunked:
        monkeypatch.setattr(sampling, "CHUNK_ELEMENTS", 3 * 4000 * 4)
    make, parameters = REPLICATE_CASES[family]
    model, rng = make(), np.random.default_rng(11)
    x = rng.poisson(4, size=(40, 1)) if family == "poisson" else rng.normal(0, 1.5, size=(40, 2))
    data = validate_data(x, weights=np.full(40, 100.0))  # 4000 frequency units: a replicate has 4000 rows
    draws = {"weights": rng.dirichlet([1.0] * 3, size=7), **parameters(rng, 7)}
    together = model.simulate_draws(draws, data, np.random.default_rng(1))
    assert together.shape == (7, 4000, x.shape[1])
    for s in range(7):
        alone = model.simulate({name: value[s] for name, value in draws.items()}, data, np.random.default_rng(2 + s))
        other = model.simulate({name: value[(s + 1) % 7] for name, value in draws.items()}, data,
                               np.random.default_rng(20 + s))
        for feature in range(x.shape[1]):
            assert stats.ks_2samp(together[s, :, feature], alone[:, feature]).pvalue > 1e-4, (s, feature)
        assert min(stats.ks_2samp(together[s, :, f], other[:, f]).pvalue for f in range(x.shape[1])) < 1e-4, s


def test_a_family_without_its_own_replicates_of_many_draws_draws_them_one_at_a_time():
    model = mixflow.RegressionMixture(2, "y ~ x")
    rng = np.random.default_rng(3)
    data = validate_data(pd.DataFrame({"x": rng.uniform(0, 5, 30), "y": rng.normal(0, 1, 30)}))
    draws = {"weights": rng.dirichlet([2.0, 2.0], size=4), "coefficients": rng.normal(0, 1, (4, 2, 2)),
             "variance": rng.uniform(0.5, 1.5, (4, 2))}
    one, many = np.random.default_rng(5), np.random.default_rng(5)
    expected = np.stack([model.simulate({name: value[s] for name, value in draws.items()}, data, one)
                         for s in range(4)])
    np.testing.assert_array_equal(model.simulate_draws(draws, data, many), expected)


def test_a_component_of_weight_zero_is_never_drawn_even_the_last():
    """The cumulative weights end at exactly 1: with the last weight 0, the largest uniform draw below 1 still
    goes to the last component of positive weight (weights divided by their sum first can leave the cumulative
    sum a rounding below 1 before it)."""
    from mixflow.families import sampling

    rng = np.random.default_rng(0)
    weights = next(w for w in (np.append(rng.dirichlet([1.0] * 4), 0.0) for _ in range(1000))
                   if np.cumsum(w / w.sum())[-2] < 1.0)

    class Largest:
        """A generator whose every uniform draw is the largest double below 1."""

        def random(self, shape):
            return np.full(shape, np.nextafter(1.0, 0.0))

    labels = sampling.component_labels_of_draws(weights[None, :], 50, Largest())
    assert np.all(labels == 3)
    labels = sampling.component_labels_of_draws(np.array([[0.0, 0.5, 0.0, 0.5, 0.0]]), 10000, rng)
    assert set(np.unique(labels)) == {1, 3}
