"""The EM engine on chunked (Dask) data: each pass maps the families' own E-step and statistics over the blocks.

A pass is :func:`mixflow.engines.em_steps.data_pass` run on each block (the block prepared in the whole
data's working units by the family's ``prepare_rows``), the blocks' :class:`~mixflow.engines.em_steps.Pass`
results added in a fixed binary tree (:func:`mixflow.chunked.map_reduce`); the M-step, the convergence
test and SQUAREM run on the client, unchanged (:func:`mixflow.engines.em.run_em`). One EM iteration is one
pass over the data. The starts, and the short runs of ``init="auto"``, run on a uniform subsample of the
rows held in memory (:func:`mixflow.chunked.sample_rows`); the runs they lead to continue on all the rows
(:func:`mixflow.engines.em.fit_prepared`, called by :func:`mixflow.fit`).

``init="kmeans||"`` seeds from every row instead, by k-means|| (:meth:`ChunkedPrepared.scalable_kmeans_passes`),
so that a cluster too small to show in the subsample can still get a component of its own.
"""

import contextvars
import threading
from dataclasses import dataclass

import numpy as np

from mixflow.chunked import ChunkedData, Moments, map_reduce
from mixflow.engines.em_steps import (
    Pass,
    add_statistics,
    chunk_rows,
    data_pass,
    e_step,
    responsibility_entropy,
    responsibility_statistics,
)
from mixflow.engines.kmeans import recluster, squared_distances
from mixflow.errors import InputError
from mixflow.wording import counted

__all__ = ["KMEANS_OVERSAMPLING", "KMEANS_ROUNDS", "ChunkedPrepared", "chunked_predictions", "prepare_chunked"]

# k-means||'s rounds of drawing and candidates drawn per round per component (l = 2K), the choice Bahmani
# et al. (2012) found as good as more rounds or more candidates
KMEANS_ROUNDS = 5
KMEANS_OVERSAMPLING = 2.0


def _block(model, values, weights, start, constants):
    weights = np.ones(values.shape[0]) if weights is None else weights
    return model.prepare_rows(values, weights, np.arange(start, start + values.shape[0]), constants)


def _block_pass(values, weights, start, model, params, constants, chunk_size):
    prepared = _block(model, values, weights, start, constants)
    rows = chunk_rows(prepared.n_obs, model.chunk_width(values.shape[1]), chunk_size)
    return data_pass(model, params, prepared, rows)


def _block_passes(values, weights, start, model, params_list, constants, chunk_size):
    """:func:`_block_pass` for several parameter sets, the block prepared once."""
    prepared = _block(model, values, weights, start, constants)
    rows = chunk_rows(prepared.n_obs, model.chunk_width(values.shape[1]), chunk_size)
    return [data_pass(model, params, prepared, rows) for params in params_list]


def _add_pass_lists(first: list, second: list) -> list:
    return [_add_passes(a, b) for a, b in zip(first, second, strict=True)]


def _add_passes(first: Pass, second: Pass) -> Pass:
    return Pass(first.log_likelihood + second.log_likelihood, first.counts + second.counts,
                add_statistics(first.statistics, second.statistics))


def _block_criteria(values, weights, start, model, params, constants):
    prepared = _block(model, values, weights, start, constants)
    resp, log_density = e_step(model, params, prepared, values.shape[1], working=True, first_row=start)
    return float(prepared.weights @ log_density), float(prepared.weights @ responsibility_entropy(resp))


def _add_pairs(a, b):
    return a[0] + b[0], a[1] + b[1]


# -- k-means|| over the blocks: each function handles every start's centres, the block prepared once -----------


def _block_points(values, weights, start, model, constants):
    prepared = _block(model, values, weights, start, constants)
    return prepared, model.init_points(prepared)


def _nearest(points: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each point's nearest centre and squared distance to it."""
    distances = squared_distances(points, centres)
    labels = distances.argmin(axis=1)
    return labels, distances[np.arange(points.shape[0]), labels]


def _block_costs(values, weights, start, model, constants, centre_sets):
    prepared, points = _block_points(values, weights, start, model, constants)
    return np.array([prepared.weights @ _nearest(points, centres)[1] for centres in centre_sets])


def _block_draws(values, weights, start, model, constants, centre_sets, costs, oversampling, keys, round_):
    """Rows drawn independently with probability min(1, l w d^2 / cost), per start (Bahmani et al.'s step 4).

    The uniform draws come from a seed of the start's ``keys`` entry, the round and the block's first row.
    """
    prepared, points = _block_points(values, weights, start, model, constants)
    drawn = []
    for centres, cost, key in zip(centre_sets, costs, keys, strict=True):
        uniform = np.random.default_rng([*key, round_, start]).random(points.shape[0])
        closeness = oversampling * prepared.weights * _nearest(points, centres)[1]
        drawn.append(points[uniform * cost < closeness])
    return drawn


def _block_candidate_weights(values, weights, start, model, constants, centre_sets):
    prepared, points = _block_points(values, weights, start, model, constants)
    return [np.bincount(_nearest(points, centres)[0], weights=prepared.weights, minlength=centres.shape[0])
            for centres in centre_sets]


def _block_hard_passes(values, weights, start, model, constants, centre_sets, chunk_size):
    """The statistics of each start's hard partition (every row to its nearest centre)."""
    prepared, points = _block_points(values, weights, start, model, constants)
    rows = chunk_rows(prepared.n_obs, model.chunk_width(values.shape[1]), chunk_size)
    k = model.n_components
    return [responsibility_statistics(model, np.eye(k)[_nearest(points, centres)[0]], prepared, rows)
            for centres in centre_sets]


def _concatenate_lists(first: list, second: list) -> list:
    return [np.concatenate([a, b]) for a, b in zip(first, second, strict=True)]


def _add_lists(first, second):
    return [a + b for a, b in zip(first, second, strict=True)]


@dataclass(frozen=True)
class ChunkedPrepared:
    """Chunked data with the family's constants: what :class:`mixflow.families.base.Prepared` is to numpy data.

    The engine uses its ``constants``, ``n_obs`` and ``total_weight`` as a ``Prepared``'s; its passes run
    blockwise (:meth:`data_pass`, :meth:`final_pass`).
    """

    data: ChunkedData
    constants: dict
    chunk_size: int | None = None

    @property
    def n_obs(self) -> int:
        """Number of rows."""
        return self.data.n_obs

    @property
    def total_weight(self) -> float:
        """Sum of the frequency weights."""
        return self.data.total_weight

    def data_pass(self, model, params: dict) -> Pass:
        """One E-step over every block with the statistics of the next M-step (a pass over the data)."""
        return map_reduce(_block_pass, self.data, _add_passes, model, params, self.constants, self.chunk_size)

    def final_pass(self, model, params: dict) -> tuple[float, float]:
        """The weighted log-likelihood and responsibility entropy (ICL's penalty) at working ``params``."""
        return map_reduce(_block_criteria, self.data, _add_pairs, model, params, self.constants)

    def scalable_kmeans_passes(self, model, seeds: list, sample) -> list[Pass]:
        """The statistics of ``len(seeds)`` k-means|| starts: every row to its nearest k-means|| centre.

        k-means|| (Bahmani, Moseley, Vattani, Kumar and Vassilvitskii 2012, "Scalable k-means++", VLDB 5,
        622-633) on the family's seeding points (``model.init_points``) of every row: a first centre drawn
        from ``sample`` (a uniform subsample, prepared) in proportion to the weights; then
        :data:`KMEANS_ROUNDS` rounds, each drawing every row independently with probability
        min(1, l w d^2 / cost) (d its distance to the centres so far, cost the weighted sum of d^2 over
        the rows, l = :data:`KMEANS_OVERSAMPLING` x K, so about l rows a round); then each candidate
        weighted by the rows nearest to it and reclustered into K centres (weighted k-means++ and
        Lloyd, :func:`~mixflow.engines.kmeans.recluster`). The starts share every pass: 2 x rounds + 2
        passes over the data in all, the last giving each start's statistics for the M-step. Each
        block draws from a seed made of the start's ``seeds`` entry (a ``numpy.random.SeedSequence``),
        the round and the block's first row: the same starts on any scheduler, for the same chunking.
        """
        k = model.n_components
        oversampling = KMEANS_OVERSAMPLING * k
        children = [seed.spawn(2) for seed in seeds]
        rngs = [np.random.default_rng(own[0]) for own in children]
        keys = [own[1].generate_state(2).tolist() for own in children]
        sample_points = model.init_points(sample)
        chance = sample.weights / sample.weights.sum()
        centre_sets = [sample_points[[rng.choice(sample.n_obs, p=chance)]] for rng in rngs]
        costs = map_reduce(_block_costs, self.data, np.add, model, self.constants, centre_sets)
        for round_ in range(KMEANS_ROUNDS):
            drawn = map_reduce(_block_draws, self.data, _concatenate_lists, model, self.constants, centre_sets,
                               costs, oversampling, keys, round_)
            centre_sets = [np.concatenate([centres, new]) for centres, new in zip(centre_sets, drawn, strict=True)]
            if round_ + 1 < KMEANS_ROUNDS:
                costs = map_reduce(_block_costs, self.data, np.add, model, self.constants, centre_sets)
        weights = map_reduce(_block_candidate_weights, self.data, _add_lists, model, self.constants, centre_sets)
        centre_sets = [recluster(candidates, mass, k, rng)
                       for candidates, mass, rng in zip(centre_sets, weights, rngs, strict=True)]
        return map_reduce(_block_hard_passes, self.data, _add_pass_lists, model, self.constants, centre_sets,
                          self.chunk_size)

    def run_together(self, calls: list) -> list:
        """``[call(prepared) for call in calls]``, the calls (EM runs) sharing each pass over the data.

        Each call runs in a thread of its own with a view of these data whose passes wait until every
        running call has asked for one; then one pass computes them all (:class:`_SharedPasses`). A call's
        results are those it would have alone: each parameter set's sums are formed as in
        :meth:`data_pass`. With several restarts continued on the whole data, the data are read once per
        iteration instead of once per restart.
        """
        if len(calls) <= 1:
            return [call(self) for call in calls]
        shared = _SharedPasses(self, len(calls))
        results, errors = [None] * len(calls), [None] * len(calls)

        def work(i):
            try:
                results[i] = calls[i](_SharedView(self, shared))
            except BaseException as error:  # re-raised in the caller's thread below
                errors[i] = error
            finally:
                shared.leave()

        threads = [threading.Thread(target=contextvars.copy_context().run, args=(work, i)) for i in range(len(calls))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for error in errors:
            if error is not None:
                raise error
        return results


class _SharedPasses:
    """Passes over chunked data asked for by several threads at once, computed together.

    A pass waits until every thread still running has asked for one (or left); the last to ask computes
    the batch in one pass over the blocks (:func:`_block_passes`) and wakes the others.
    """

    def __init__(self, prepared: ChunkedPrepared, n_threads: int):
        self.prepared, self.active = prepared, n_threads
        self.pending, self.results, self.model = [], {}, None
        self.condition = threading.Condition()

    def data_pass(self, model, params: dict) -> Pass:
        with self.condition:
            ticket = object()
            self.model = model
            self.pending.append((ticket, params))
            self._run_when_all_asked()
            self.condition.wait_for(lambda: ticket in self.results)
            outcome = self.results.pop(ticket)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def leave(self) -> None:
        with self.condition:
            self.active -= 1
            self._run_when_all_asked()

    def _run_when_all_asked(self) -> None:
        if not self.pending or len(self.pending) < self.active:
            return
        batch, self.pending = self.pending, []
        prepared = self.prepared
        try:
            passes = map_reduce(_block_passes, prepared.data, _add_pass_lists, self.model, [p for _, p in batch],
                                prepared.constants, prepared.chunk_size)
            for (ticket, _), step in zip(batch, passes, strict=True):
                self.results[ticket] = step
        except BaseException as error:  # every waiting run gets the error
            for ticket, _ in batch:
                self.results[ticket] = error
        self.condition.notify_all()


@dataclass(frozen=True)
class _SharedView:
    """A :class:`ChunkedPrepared` whose passes go through a :class:`_SharedPasses`."""

    prepared: ChunkedPrepared
    shared: _SharedPasses

    @property
    def constants(self) -> dict:
        """The family's constants."""
        return self.prepared.constants

    @property
    def n_obs(self) -> int:
        """Number of rows."""
        return self.prepared.n_obs

    @property
    def total_weight(self) -> float:
        """Sum of the frequency weights."""
        return self.prepared.total_weight

    def data_pass(self, model, params: dict) -> Pass:
        """One pass, shared with the other runs'."""
        return self.shared.data_pass(model, params)


def prepare_chunked(model, data: ChunkedData, chunk_size: int | None = None) -> ChunkedPrepared:
    """The family's working units for validated chunked data (from the moments found by the validation)."""
    return ChunkedPrepared(data, model.chunked_constants(data.moments, data.features), chunk_size)


def _predict_block(values, model, params, constants, what: str, block_info=None):
    location = block_info[0]
    start = int(location["array-location"][0][0])
    chunk = int(location["chunk-location"][0])
    bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
    if bad.size:
        shown = (bad[:5] + start).tolist()
        raise InputError("new_data: expected finite values, got NaN or infinite values in "
                         f"{counted(bad.size, 'row')} of chunk {chunk} (rows {start}-{start + values.shape[0] - 1}): "
                         f"{shown}{' ...' if bad.size > 5 else ''}")
    try:
        prepared = _block(model, values, None, start, constants)
        resp, log_density = e_step(model, params, prepared, values.shape[1], first_row=start)
    except InputError as error:
        message = str(error)
        raise InputError(f"new_data:{message[len('data:'):]}" if message.startswith("data:") else message) from None
    if what == "responsibilities":
        return resp
    if what == "labels":
        return resp.argmax(axis=1)
    return log_density


def chunked_predictions(model, params: dict, data: ChunkedData, what: str, moments: Moments):
    """Lazy ``"responsibilities"`` (n, K), ``"labels"`` (n,) or ``"log_density"`` (n,) of chunked data.

    A Dask array computed block by block when asked for; each block is checked (finite values, the
    family's constraints) as it is computed, errors naming the chunk and rows. The working units come from
    ``moments`` (the estimate's, ``model.estimate_moments``, or the fitted rows'), so no pass over the data
    is needed first; the predictions do not depend on them beyond rounding.
    """
    constants = model.chunked_constants(moments, data.features)
    k = np.asarray(params["weights"]).size
    if what == "responsibilities":
        return data.values.map_blocks(_predict_block, model, params, constants, what, dtype=float,
                                      chunks=(data.values.chunks[0], (k,)))
    dtype = np.int64 if what == "labels" else float
    return data.values.map_blocks(_predict_block, model, params, constants, what, dtype=dtype, drop_axis=1,
                                  chunks=(data.values.chunks[0],))

