"""Minibatch ADVI on Dask data: the minibatches streamed from the blocks, never the whole array in memory.

:class:`MinibatchStream` is what :func:`mixflow.engines.advi.fit_advi` takes as ``stream``:

1. the PyMC model is the family's own, built on the uniform sample the result keeps (its standardisation
   and prior), with its rows replaced (:func:`mixflow.families.pymc_parts.streamed_rows`) by shared
   variables holding one minibatch of ``batch_size`` rows, the log-likelihood scaled by
   ``n_obs / batch_size`` (the role of PyMC's ``total_size``): an unbiased estimate of the full-data
   log-likelihood, frequency weights included;
2. a ``pm.fit`` callback puts the next minibatch in the shared variables after every iteration;
3. minibatches come from a buffer of ``refill_every * batch_size`` rows refilled every ``refill_every``
   iterations. By default each of its rows is drawn uniformly from all the rows (the blocks holding them
   computed, only the rows drawn sent to the client): the minibatches are independent uniform draws, as
   ``pm.Minibatch``'s are, at the price of reading every block once per refill (one pass over the data per
   ``refill_every`` iterations). With ``blocks_per_refill=r``, a refill reads only ``r`` blocks, drawn in
   proportion to their rows, and each row is drawn from one of them: every row keeps probability
   ``1 / n_obs`` per slot, but the minibatches of one refill share their blocks, so on data stored in
   order (by time, by place, by class) the gradient drifts with the blocks drawn, and the averaging of the
   last window (:class:`~mixflow.engines.advi.SettleCheck`) can settle on a few blocks' answer.

Every choice (blocks, rows) is drawn on the client from the seed before anything is computed, so the same
seed gives the same minibatches on any scheduler; the blocks' rows are taken where the blocks live (the
active ``dask.distributed`` client, or Dask's threads).

Families: those whose PyMC form feeds rows through :func:`~mixflow.families.pymc_parts.data_rows` with a
row-wise map of the data this module knows (Gaussian, soft k-means, Poisson). The map is checked against the
family's own on the sample's first rows when the model is built.
"""

import numpy as np

from mixflow.data import Data
from mixflow.errors import InputError
from mixflow.families.pymc_parts import check_minibatch_size, streamed_rows

__all__ = ["DEFAULT_BATCH_SIZE", "MinibatchStream", "streams"]

DEFAULT_BATCH_SIZE = 1000
_REFILL_EVERY = 100
_CHECKED_ROWS = 16


def _gaussian_rows(model, reference: Data):
    from mixflow.families.gaussian.pymc import standardization

    std = standardization(model, reference)
    return lambda values: ((values - std.center) / std.scale,)


def _soft_kmeans_rows(model, reference: Data):
    from mixflow.families.softkmeans.pymc import soft_kmeans_scale

    center, scale = soft_kmeans_scale(reference)
    return lambda values: ((values - center) / scale,)


def _poisson_rows(model, reference: Data):
    def rows(values):
        prepared = model.prepare(Data(values=values, features=reference.features, obs=np.arange(values.shape[0]),
                                      weights=None))
        return prepared.arrays["y"], prepared.arrays["saturated"]

    return rows


# the row-wise map of each family's PyMC form from data rows to the arrays it passes to data_rows
_ROW_MAPS = {"gaussian": _gaussian_rows, "soft_kmeans": _soft_kmeans_rows, "poisson": _poisson_rows}


def streams(model) -> bool:
    """Whether ADVI of ``model`` on Dask data can stream its minibatches from the blocks."""
    return getattr(model, "family", None) in _ROW_MAPS


def _take(values, weights, rows):
    return values[rows], (None if weights is None else weights[rows])


class MinibatchStream:
    """Minibatches of ``batch_size`` rows of chunked data, streamed into a PyMC model's shared variables.

    Parameters
    ----------
    data : mixflow.chunked.ChunkedData
        Validated Dask data.
    batch_size : int or None
        Rows per minibatch, in [1, n_obs]; None gives ``min(DEFAULT_BATCH_SIZE, n_obs)``.
    random_seed : int
        Seeds the blocks and rows drawn (each fit of :meth:`begin` its own child seed, by order).
    refill_every : int, default 100
        Iterations served by one refill of the buffer.
    blocks_per_refill : int, optional
        Blocks drawn per refill (with replacement, in proportion to their rows); None (the default) draws
        each row uniformly from all the rows.

    Attributes
    ----------
    rows_computed : int
        Rows taken from the blocks and sent to the client so far (distinct rows per refill).
    blocks_read : int
        Blocks computed so far (distinct blocks per refill).
    refills : int
    """

    def __init__(self, data, batch_size, random_seed: int, *, refill_every: int = _REFILL_EVERY,
                 blocks_per_refill: int | None = None):
        check_minibatch_size(batch_size, data.n_obs)
        self.data = data
        self.batch_size = min(DEFAULT_BATCH_SIZE, data.n_obs) if batch_size is None else int(batch_size)
        self.refill_every = int(refill_every)
        self.blocks_per_refill = None if blocks_per_refill is None else int(blocks_per_refill)
        self.seed = int(random_seed)
        self.sizes = np.asarray(data.values.chunks[0], dtype=np.int64)
        self._blocks = data.blocks()
        self._n_begun = 0
        self._row_map = self._shared = self._shared_weights = None
        self._queue, self._rng = [], None
        self.rows_computed = self.blocks_read = self.refills = 0

    # -- the model -----------------------------------------------------------------------------------------
    def build(self, model, reference: Data, prior):
        """The family's PyMC model on ``reference`` (standardisation, prior) with its rows streamed."""
        if not streams(model):
            family = getattr(model, "family", type(model).__name__)
            raise InputError(f"model: expected a family whose ADVI streams minibatches from Dask blocks "
                             f"({', '.join(sorted(_ROW_MAPS))}), got {family!r}")
        self._row_map = _ROW_MAPS[model.family](model, reference)
        self._reference = reference
        with streamed_rows(self):
            return model.pymc_model(reference, prior)

    def bind(self, arrays: tuple, frequency: np.ndarray):
        """:func:`~mixflow.families.pymc_parts.data_rows` under :func:`streamed_rows`: the shared minibatch."""
        import pytensor

        head = self._row_map(self._reference.values[:_CHECKED_ROWS])
        if len(head) != len(arrays) or not all(np.allclose(h, a[:_CHECKED_ROWS], rtol=1e-12, atol=0.0)
                                               for h, a in zip(head, arrays, strict=False)):
            raise RuntimeError("mixflow internal error: the streamed rows' map differs from the family's PyMC form; "
                               "update mixflow.engines.advi_stream")
        self._shared = [pytensor.shared(np.array(a[:self.batch_size]), name=f"minibatch_{i}")
                        for i, a in enumerate(arrays)]
        self._shared_weights = pytensor.shared(np.array(frequency[:self.batch_size]), name="minibatch_weights")
        return list(self._shared), self._shared_weights, self.data.n_obs / self.batch_size

    # -- the minibatches ---------------------------------------------------------------------------------
    def begin(self):
        """Start a fit: its own generator, the first minibatch in place; returns the ``pm.fit`` callback."""
        self._rng = np.random.default_rng([self.seed, self._n_begun])
        self._n_begun += 1
        self._queue = []
        self.advance()
        return self.callback

    def callback(self, approx, losses, i) -> None:
        """``pm.fit``'s callback: the next minibatch for the next iteration."""
        self.advance()

    def advance(self) -> None:
        """Put the next minibatch in the shared variables (refilling the buffer when it is used up)."""
        if not self._queue:
            self._queue = self._refill()
        values, weights = self._queue.pop()
        for shared, array in zip(self._shared, self._row_map(values), strict=True):
            shared.set_value(np.asarray(array, dtype=shared.dtype))
        self._shared_weights.set_value(np.asarray(weights, dtype=self._shared_weights.dtype))

    def _refill(self) -> list:
        """The next ``refill_every`` minibatches (last first), from ``blocks_per_refill`` random blocks."""
        import dask

        rng, sizes, shape = self._rng, self.sizes, (self.refill_every, self.batch_size)
        if self.blocks_per_refill is None:  # rows drawn uniformly from all the rows
            starts = self.data.row_starts
            block = np.searchsorted(starts, rng.integers(0, self.data.n_obs, size=shape), side="right") - 1
        else:  # a few blocks drawn in proportion to their rows, then each row from one of them
            blocks = rng.choice(sizes.size, size=self.blocks_per_refill, p=sizes / sizes.sum())
            block = blocks[rng.integers(self.blocks_per_refill, size=shape)]
        row = rng.integers(0, sizes[block])
        wanted = np.unique(block)
        take = dask.delayed(_take, pure=True, nout=2)
        picked = {}
        tasks = []
        for b in wanted:
            rows, where = np.unique(row[block == b], return_inverse=True)
            picked[int(b)] = (rows, where)
            values, weights, _ = self._blocks[int(b)]
            tasks.append(take(values, weights, rows))
        (parts,) = dask.compute(tasks)
        values = np.empty((*block.shape, self.data.n_features))
        weights = np.ones(block.shape)
        for b, (taken, taken_weights) in zip(wanted, parts, strict=True):
            rows, where = picked[int(b)]
            mask = block == b
            values[mask] = taken[where]
            if taken_weights is not None:
                weights[mask] = taken_weights[where]
            self.rows_computed += rows.size
        self.blocks_read += wanted.size
        self.refills += 1
        return [(values[i], weights[i]) for i in range(self.refill_every - 1, -1, -1)]

    def attrs(self) -> dict:
        """What the ``/advi`` attributes record of the stream."""
        drawn = ("each minibatch row drawn uniformly from all the rows" if self.blocks_per_refill is None else
                 f"{self.blocks_per_refill} blocks drawn in proportion to their rows, each minibatch row from one "
                 "of them, uniformly")
        return {"minibatch_size": self.batch_size,
                "minibatch_source": (f"streamed from the {self.sizes.size} Dask blocks of all {self.data.n_obs} rows: "
                                     f"every {self.refill_every} iterations, {drawn}; only the rows drawn reach the "
                                     "client; log-likelihood scaled by n_obs / minibatch_size"),
                "minibatch_refill_every": self.refill_every,
                "minibatch_blocks_per_refill": -1 if self.blocks_per_refill is None else self.blocks_per_refill,
                "minibatch_rows_computed": int(self.rows_computed), "minibatch_blocks_read": int(self.blocks_read)}
