"""Compiled functions kept for the next fit of a model of the same structure, in this process.

PyTensor does not cache its rewriting of a graph, which takes most of a small fit's time: a fit of a model whose
graphs have the structure of one fitted before (another seed, more draws, a rerun, other data or another prior of
the same shapes) reuses that fit's compiled functions, refilled with its own graph inputs' values
(:func:`mixflow.families.pymc_parts.graph_inputs`).
"""

import threading
from collections import OrderedDict

__all__ = ["MAX_VALUES", "KeptCompiled"]

#: Data of more values than this are not kept with a compiled function (its graph holds a copy of them)
MAX_VALUES = 1_000_000


class KeptCompiled:
    """The compiled objects of the last ``size`` fits, by their structure's key.

    An object is taken out while a fit uses it (another thread fitting the same structure meanwhile compiles its
    own), and kept again once the fit has ended well (a fit that raised is not kept: its state is not known).
    """

    def __init__(self, size: int = 4):
        self._items: OrderedDict = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def take(self, key: str | None):
        """The object kept under ``key``, taken out; None if there is none (or ``key`` is None)."""
        if key is None:
            return None
        with self._lock:
            return self._items.pop(key, None)

    def keep(self, key: str | None, item) -> None:
        """Keep ``item`` under ``key`` for the next fit (not when ``key`` is None); the oldest beyond ``size`` go."""
        if key is None:
            return
        with self._lock:
            self._items[key] = item
            while len(self._items) > self._size:
                self._items.popitem(last=False)
