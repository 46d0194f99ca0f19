"""EM runs in step (engines/em_run.run_together): one pass over the data for several runs, each run its own."""

import numpy as np
import pytest

import mixflow
from mixflow.data import validate_data
from mixflow.engines import em_run
from mixflow.engines.em import EMOptions, initial_parameters
from mixflow.engines.em_steps import chunk_rows, data_pass

CASES = {
    "gaussian full": (lambda: mixflow.GaussianMixture(3), "faithful", None),
    "gaussian diag": (lambda: mixflow.GaussianMixture(3, covariance="diag"), "iris", ["Species"]),
    "gaussian spherical": (lambda: mixflow.GaussianMixture(2, covariance="spherical"), "faithful", None),
    "gaussian tied": (lambda: mixflow.GaussianMixture(3, covariance="tied"), "iris", ["Species"]),
    "poisson": (lambda: mixflow.PoissonMixture(2), "london_deaths", ["days"]),
    "regression": (lambda: mixflow.RegressionMixture(2, "tuned ~ stretchratio"), "tone", None),
    "soft k-means": (lambda: mixflow.SoftKMeans(3, variance=0.5), "faithful", None),
}


def _setting(case: str, n_starts: int = 4):
    make, name, drop = CASES[case]
    model, frame = make(), mixflow.load_dataset(name)
    data = validate_data(frame.drop(columns=drop) if drop else frame)
    prepared = model.prepare(data)
    rows = chunk_rows(prepared.n_obs, model.chunk_width(data.n_features))
    starts = [initial_parameters(model, prepared, "random-partition", np.random.default_rng(seed), None, rows)
              for seed in range(n_starts)]
    return model, data, prepared, rows, starts


@pytest.mark.parametrize("case", CASES)
def test_a_stacked_pass_gives_each_mixture_its_own_pass(case):
    """Log-likelihood, counts and statistics to 1e-13 (the same terms; the products' shapes may round otherwise).

    Each mixture's statistics are its own, concatenated: per component, or per mixture (a tied covariance's
    pooled second moment)."""
    model, _, prepared, rows, starts = _setting(case)
    assert model.stacks_mixtures()
    stacked = model.stack_mixtures(starts)
    together = data_pass(model, stacked, prepared, rows, groups=len(starts))
    k = model.n_components
    for index, start in enumerate(starts):
        alone, own = data_pass(model, start, prepared, rows), slice(index * k, (index + 1) * k)
        assert together.log_likelihood[index] == pytest.approx(alone.log_likelihood, rel=1e-13)
        np.testing.assert_allclose(together.counts[own], alone.counts, rtol=1e-13)
        for name, value in alone.statistics.items():
            mine = np.split(together.statistics[name], len(starts))[index]
            np.testing.assert_allclose(mine, value, rtol=1e-13, atol=0)


@pytest.mark.parametrize("case", CASES)
def test_a_family_s_batched_statistics_are_each_mixture_s_own_to_the_bit(case):
    """A family's stacked_statistics (one batched product over the mixtures) against one statistics call per
    mixture (the base class's): the same BLAS call for each mixture, so the same bits."""
    from mixflow.families.base import MixtureModel

    model, _, prepared, _, _ = _setting(case)
    rng = np.random.default_rng(0)
    for groups in (2, 7):
        resp = rng.dirichlet(np.ones(model.n_components), size=(prepared.n_obs, groups)).reshape(prepared.n_obs, -1)
        by_mixture = np.ascontiguousarray(resp.reshape(prepared.n_obs, groups, -1).transpose(1, 0, 2))
        features = model.chunk_features(prepared)
        mine = model.stacked_statistics(by_mixture, prepared, features)
        each = MixtureModel.stacked_statistics(model, by_mixture, prepared, features)
        assert mine.keys() == each.keys()
        for name, value in each.items():
            np.testing.assert_array_equal(mine[name], value)


@pytest.mark.parametrize("map_fit", [False, True], ids=["mle", "map"])
@pytest.mark.parametrize("case", CASES)
def test_parameters_from_several_responsibilities_are_each_set_s_own_to_the_bit(case, map_fit, monkeypatch):
    """One M-step from each of several sets of responsibilities, stacked (the local search's moves), against one set
    at a time: the same statistics by the same products and the same M-step, so the same bits, but for the
    regression's least squares (products over more components may round otherwise: to 1e-12 relative); in chunks
    of 7 rows, and in batches cut by the stack's size limit."""
    from mixflow.engines.em_steps import responsibility_statistics

    model, _, prepared, _, _ = _setting(case)
    prior = model.working_prior(prepared) if map_fit else None
    rng = np.random.default_rng(1)
    resps = [rng.dirichlet(np.ones(model.n_components), size=prepared.n_obs) for _ in range(5)]
    resps[1][:, 0] = 0.0  # an empty component: its guarded count, and a zero weight
    resps[1] /= resps[1].sum(axis=1, keepdims=True)
    monkeypatch.setattr(em_run, "_MAX_STACKED", 2 * model.n_components)  # batches of two sets, and one of one
    active = np.arange(model.n_components)
    for rows in (7, prepared.n_obs):
        found = em_run.parameters_from(model, prepared, resps, prior, rows)
        for resp, mine in zip(resps, found, strict=True):
            alone = em_run.maximisation_step(model, responsibility_statistics(model, resp, prepared, rows),
                                             prepared, prior, active)[0]
            assert list(mine) == list(alone)
            for name, value in alone.items():
                np.testing.assert_allclose(mine[name], value, rtol=1e-12 if case == "regression" else 0, atol=0)


@pytest.mark.parametrize("map_fit", [False, True], ids=["mle", "map"])
@pytest.mark.parametrize("case", CASES)
def test_runs_in_step_are_the_runs_alone(case, map_fit):
    """Each run stops where it would alone: its objective to 1e-10 and its parameters within the stopping rule's
    sqrt(tol); iterations within one SQUAREM cycle (products of another shape may round otherwise). MAP too:
    the prior's M-step treats each component alone, the Dirichlet each run's weights."""
    model, data, prepared, rows, starts = _setting(case)
    prior = model.working_prior(prepared) if map_fit else None
    options = EMOptions(map=map_fit)
    alone = [em_run.run_em(model, prepared, start, prior, options, rows, data.features) for start in starts]
    together = em_run.run_together(model, prepared, [(start, options) for start in starts], prior, rows,
                                   data.features)
    for one, other in zip(alone, together, strict=True):
        assert other.converged == one.converged
        assert other.history_objective[-1] == pytest.approx(one.history_objective[-1], rel=1e-10)
        assert abs(other.n_iter - one.n_iter) <= 3
        for name, value in one.params.items():
            np.testing.assert_allclose(other.params[name], value, rtol=np.sqrt(options.tol), atol=np.sqrt(options.tol))


def test_runs_of_different_lengths_and_sizes_run_in_step():
    """max_iter per run, and trimmed runs (fewer components) evaluated beside full ones."""
    model, data, prepared, rows, starts = _setting("gaussian full")
    short, long = EMOptions(max_iter=5), EMOptions()
    two = {"weights": np.array([0.4, 0.6]), "mu": starts[0]["mu"][:2], "covariance": starts[0]["covariance"][:2]}
    jobs = [(starts[0], short), (starts[1], long), (two, long), (starts[2], short)]
    together = em_run.run_together(model, prepared, jobs, None, rows, data.features)
    assert [run.n_iter for run in together][0] <= 5 and together[3].n_iter <= 5
    assert together[2].params["weights"].size == 2
    alone = em_run.run_em(model, prepared, two, None, long, rows, data.features)
    assert together[2].history_objective[-1] == pytest.approx(alone.history_objective[-1], rel=1e-10)


def test_a_stack_of_tied_mixtures_keeps_a_covariance_per_mixture():
    """Stacked, each tied mixture's covariance is its own (a leading axis), and comes back as it went in."""
    model, _, prepared, rows, starts = _setting("gaussian tied", n_starts=3)
    stacked = model.stack_mixtures(starts)
    assert stacked["covariance"].shape == (3, 4, 4) and stacked["mu"].shape == (9, 4)
    for start, mine in zip(starts, model.unstack_mixtures(stacked, 3), strict=True):
        assert mine.keys() == start.keys()
        for name, value in start.items():
            np.testing.assert_array_equal(mine[name], value)


@pytest.mark.parametrize("map_fit", [False, True], ids=["mle", "map"])
@pytest.mark.parametrize("name", ["iris", "faithful"])
def test_tied_runs_in_step_are_the_runs_alone(name, map_fit):
    """The tied M-step pools each stacked mixture's own scatter (MLE and MAP): every run equals its run alone
    to the rounding of the sums: its final objective to 1e-12 (relative), its log-likelihood and parameters
    to 1e-12 and its parameters to 1e-9 where it stops at the same pass (the rounding of each pass's sums, carried
    through the passes by EM's map, whose rate near 1 at a flat maximum amplifies it up to 1 / (1 - rate)), else (a
    product of another shape rounded otherwise near the stop) its parameters within the stopping rule's sqrt(tol),
    a pass or two apart."""
    model = mixflow.GaussianMixture(3, covariance="tied")
    frame = mixflow.load_dataset(name)
    data = validate_data(frame.drop(columns=["Species"]) if name == "iris" else frame)
    prepared = model.prepare(data)
    rows = chunk_rows(prepared.n_obs, model.chunk_width(data.n_features))
    prior = model.working_prior(prepared) if map_fit else None
    starts = [initial_parameters(model, prepared, "random-partition", np.random.default_rng(seed), prior, rows)
              for seed in range(4)]
    options = EMOptions(map=map_fit)
    together = em_run.run_together(model, prepared, [(start, options) for start in starts], prior, rows,
                                   data.features)
    for start, run in zip(starts, together, strict=True):
        alone = em_run.run_em(model, prepared, start, prior, options, rows, data.features)
        assert run.converged == alone.converged and abs(run.n_iter - alone.n_iter) <= 2
        assert run.history_objective[-1] == pytest.approx(alone.history_objective[-1], rel=1e-12)
        if run.n_iter != alone.n_iter:  # the log-likelihood is not flat at the MAP: it moves with the parameters
            within = np.sqrt(options.tol)
        else:
            within = 1e-9
            assert run.history_log_likelihood[-1] == pytest.approx(alone.history_log_likelihood[-1], rel=1e-12)
        for key, value in alone.params.items():
            np.testing.assert_allclose(run.params[key], value, rtol=within, atol=within)


def test_a_collapsed_tied_mixture_in_a_stack_is_its_own():
    """The floor lifts the tied covariance of the stacked mixture that collapsed, reported as its component 0,
    and leaves the others' as their M-steps alone give them."""
    model, _, prepared, rows, starts = _setting("gaussian tied", n_starts=3)
    collapsed = dict(starts[1], covariance=starts[1]["covariance"] * 1e-40,
                     mu=np.repeat(prepared.arrays["z"][:1], 3, axis=0))  # every component on one row
    requests = [(start, np.arange(3)) for start in (starts[0], collapsed, starts[2])]
    points = em_run._evaluate_together(model, prepared, None, None, rows, None, False, requests)
    for request, point in zip(requests, points, strict=True):
        alone = em_run._evaluate(model, prepared, None, None, rows, None, False, *request)
        assert point.collapsed == alone.collapsed
        for key, value in alone.following.items():
            np.testing.assert_allclose(point.following[key], value, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("case", CASES)
def test_stacked_points_carry_each_set_s_own_unconstrained_form(case):
    """The flat and tracked forms and the layout computed for the stack at once are each set's own (weights
    centred per set; a tied covariance, one per set, in its place): the flat form read by the layout is the set's
    unconstrained form alone, exactly."""
    from mixflow.engines.accelerate import to_tracked, to_unconstrained, unflatten

    model, _, prepared, rows, starts = _setting(case)
    requests = [(start, np.arange(model.n_components)) for start in starts]
    points = em_run._evaluate_together(model, prepared, None, None, rows, None, False, requests)
    for (params, _), point in zip(requests, points, strict=True):
        assert "layout" in point.__dict__  # set for the stack, not computed from the point alone
        expected, read = to_unconstrained(params), unflatten(point.flat, list(point.layout))
        assert read.keys() == expected.keys()
        for name, value in expected.items():
            np.testing.assert_array_equal(read[name], value)
        np.testing.assert_array_equal(point.tracked, to_tracked(params))


def test_a_stack_is_cut_into_passes_of_at_most_max_stacked_components(monkeypatch):
    """More runs than one pass may hold go in several passes; each run's point is still its own."""
    model, _, prepared, rows, starts = _setting("gaussian full", n_starts=5)
    requests = [(start, np.arange(3)) for start in starts]
    whole = em_run._evaluate_together(model, prepared, None, None, rows, None, False, requests)
    monkeypatch.setattr(em_run, "_MAX_STACKED", 6)  # two sets of 3 components per pass
    cut = em_run._evaluate_together(model, prepared, None, None, rows, None, False, requests)
    assert [b.size for b in em_run._batches(np.arange(5), 3)] == [2, 2, 1]
    for one, other in zip(whole, cut, strict=True):
        assert other.value == pytest.approx(one.value, rel=1e-13)
        np.testing.assert_allclose(other.following["mu"], one.following["mu"], rtol=1e-12)


def test_a_set_that_needs_the_centred_pass_leaves_the_others_stacked(monkeypatch):
    """A set whose component lies thousands of its sds from the data centre is evaluated alone (centred pass),
    and the others still in one stacked pass; every point is the set's own."""
    model, _, prepared, rows, starts = _setting("gaussian full")
    far = {**starts[1], "mu": starts[1]["mu"] + np.array([[1e5, 0.0], [0.0, 0.0], [0.0, 0.0]])}
    assert model.exact_steps(far, prepared, em_run._CENTRED_ABOVE) is not None
    requests = [(params, np.arange(3)) for params in (starts[0], far, starts[2], starts[3])]
    stacked_sizes = []
    stacked_points = em_run._stacked_points

    def spy(*args):
        stacked_sizes.append(len(args[7]))
        return stacked_points(*args)

    monkeypatch.setattr(em_run, "_stacked_points", spy)
    points = em_run._evaluate_together(model, prepared, None, None, rows, None, False, requests)
    assert stacked_sizes == [3]
    for request, point in zip(requests, points, strict=True):
        alone = em_run._evaluate(model, prepared, None, None, rows, None, False, *request)
        assert point.value == pytest.approx(alone.value, rel=1e-13)
        for key, value in alone.following.items():
            np.testing.assert_allclose(point.following[key], value, rtol=1e-12, atol=1e-14)


def test_short_axis_reductions_are_numpys_to_the_bit():
    # log_normalise's max and sum over components, one component at a time below _SHORT_AXIS: the same bits as
    # numpy's reduction (which adds a short row one value after the other), infinities and NaN included
    from mixflow.engines.em_steps import _last_axis

    rng = np.random.default_rng(1)
    for k in range(1, 12):
        for shape in [(1000, k), (300, 7, k)]:
            values = rng.normal(size=shape) * rng.exponential(size=shape) * 1e3
            values[::7, ..., 0], values[::11, ..., -1] = -np.inf, np.nan
            assert np.array_equal(_last_axis(values, np.maximum), values.max(axis=-1), equal_nan=True)
            with np.errstate(over="ignore"):
                positive = np.exp(values - 1e3)
            assert np.array_equal(_last_axis(positive, np.add), positive.sum(axis=-1), equal_nan=True)
