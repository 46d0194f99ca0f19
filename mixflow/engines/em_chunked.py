"""The EM engine on chunked (Dask) data: each pass maps the families' own E-step and statistics over the blocks.

A pass is :func:`mixflow.engines.em_steps.data_pass` run on each block (the block prepared in the whole
data's working units by the family's ``prepare_rows``), the blocks' :class:`~mixflow.engines.em_steps.Pass`
results added in a fixed binary tree (:func:`mixflow.chunked.map_reduce`); the M-step, the convergence
test and SQUAREM run on the client, unchanged (:func:`mixflow.engines.em.run_em`). One EM iteration is one
pass over the data. The starts, and the short runs of ``init="auto"``, run on a uniform subsample of the
rows held in memory (:func:`mixflow.chunked.sample_rows`); the runs they lead to continue on all the rows
(:func:`mixflow.engines.em.fit_prepared`, called by :func:`mixflow.fit`).
"""

import contextvars
import threading
from dataclasses import dataclass

import numpy as np

from mixflow.chunked import ChunkedData, map_reduce
from mixflow.engines.em_steps import Pass, add_statistics, chunk_rows, data_pass, e_step, responsibility_entropy
from mixflow.errors import InputError

__all__ = ["ChunkedPrepared", "chunked_predictions", "prepare_chunked"]


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
        raise InputError(f"new_data: expected finite values, got NaN or infinite values in {bad.size} row(s) of "
                         f"chunk {chunk} (rows {start}-{start + values.shape[0] - 1}): {shown}"
                         f"{' ...' if bad.size > 5 else ''}")
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


def chunked_predictions(model, params: dict, data: ChunkedData, what: str):
    """Lazy ``"responsibilities"`` (n, K), ``"labels"`` (n,) or ``"log_density"`` (n,) of chunked data.

    A Dask array computed block by block when asked for; each block is checked (finite values, the
    family's constraints) as it is computed, errors naming the chunk and rows. The working units come from
    the estimate's own moments (``estimate_moments``), so no pass over the data is needed first.
    """
    constants = model.chunked_constants(model.estimate_moments(params), data.features)
    k = np.asarray(params["weights"]).size
    if what == "responsibilities":
        return data.values.map_blocks(_predict_block, model, params, constants, what, dtype=float,
                                      chunks=(data.values.chunks[0], (k,)))
    dtype = np.int64 if what == "labels" else float
    return data.values.map_blocks(_predict_block, model, params, constants, what, dtype=dtype, drop_axis=1,
                                  chunks=(data.values.chunks[0],))

