"""PyTensor's rewritten graphs kept on disk, so that a new process links them instead of rewriting them again.

PyTensor caches the numba kernels it compiles on disk, but not its rewriting of a graph, which for a mixture's
log density and gradient takes seconds, more than the linking: every process rewrote every graph anew. Here a
compiled function's rewritten graph is written to a ``mixflow`` folder of PyTensor's compile directory, one
file per structure (the caller's key of what the graph computes) and versions of Python, NumPy, PyTensor,
numba, PyMC and mixflow: the graph with its shared variables replaced by placeholders of the same name and
type (their values, the data, are not written), its order of evaluation and the key PyTensor gave its kernel.
A process that finds the file links the graph with PyTensor's numba linker, in the stored order, without
rewriting, and uses it only if the linked kernel has the key recorded, which names the same kernel and so the
same numbers. A file that is unreadable, of other versions or altered (its contents are checksummed) is
ignored and the graph rewritten; a failure to write one is ignored as well. Files are written whole or not at
all (:func:`mixflow.atomic.atomic_write`). They are pickles, loaded as trusted as the compiled code PyTensor and
numba keep in the same per-user directory: the checksum detects damage, not tampering.

Users: nutpie's log density and traced values (:mod:`mixflow.engines.nutpie_compile`) and ADVI's step
(:mod:`mixflow.engines.advi_step`).
"""

import functools
import hashlib
import importlib.metadata
import io
import itertools
import json
import pickle
import sys
from pathlib import Path

import numpy as np

from mixflow.atomic import atomic_write

__all__ = ["FOLDER", "graph_of", "kernel_key", "link", "load", "store"]

FORMAT = 3  # part of every file's name and header: bump it when what is stored changes
MAGIC = b"mixflow graphs\n"
#: Where the rewritten graphs are kept (None: a ``mixflow`` folder of PyTensor's compile directory).
FOLDER: list = [None]


def path(kind: str, structure: str) -> Path:
    """The file of a structure's rewritten graphs, named by the kind, the structure and the versions."""
    from pytensor.configdefaults import config

    folder = FOLDER[0] if FOLDER[0] is not None else Path(config.compiledir) / "mixflow"
    name = hashlib.sha256(f"{kind}|{structure}|{json.dumps(versions(), sort_keys=True)}".encode()).hexdigest()
    return Path(folder) / f"{kind}-graphs-{name}.bin"


@functools.cache
def versions() -> dict:
    """What the stored graphs depend on besides the structure: the file format and the packages' versions."""
    import numba
    import pymc
    import pytensor

    try:
        mixflow_version = importlib.metadata.version("mixflow")
    except importlib.metadata.PackageNotFoundError:
        mixflow_version = None
    return {"format": FORMAT, "python": sys.version, "numpy": np.__version__, "pytensor": pytensor.__version__,
            "numba": numba.__version__, "pymc": pymc.__version__, "mixflow": mixflow_version}


def store(kind: str, structure: str, content) -> None:
    """Write ``content`` (graphs of :func:`graph_of`, sizes, keys) as the file of ``structure``; never raises."""
    try:
        buffer = io.BytesIO()
        GraphPickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(content)
        payload = buffer.getvalue()
        header = json.dumps({"kind": kind, "structure": structure, "versions": versions(),
                             "sha256": hashlib.sha256(payload).hexdigest()}, sort_keys=True).encode()
        target = path(kind, structure)
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, lambda temporary: temporary.write_bytes(MAGIC + header + b"\n" + payload))
    except Exception:  # noqa: BLE001 - the graphs are only a shortcut: a fit never fails for want of them
        return


def load(kind: str, structure: str):
    """What :func:`store` wrote for ``structure`` with these versions (None if absent, altered or unreadable)."""
    try:
        content = path(kind, structure).read_bytes()
        if not content.startswith(MAGIC):
            return None
        header, _, payload = content[len(MAGIC):].partition(b"\n")
        if json.loads(header) != {"kind": kind, "structure": structure, "versions": versions(),
                                  "sha256": hashlib.sha256(payload).hexdigest()}:
            return None
        return pickle.loads(payload)
    except Exception:  # noqa: BLE001 - absent, truncated, another format: the graphs are rewritten instead
        return None


def graph_of(fgraph, shared: list) -> tuple | None:
    """The inputs, outputs and order of evaluation of a rewritten graph, without the values of its shared variables.

    ``shared`` (some of its inputs) are replaced by placeholders of their name and type; None if a shared
    variable is left in the graph. The order is the graph's own (it follows the in-place operations'
    constraints as the rewriting left them, which a new graph of the same nodes need not reproduce); the
    kernel's statements, and so its key, follow it.
    """
    from pytensor.compile.sharedvalue import SharedVariable
    from pytensor.graph.traversal import ancestors

    placeholders = {variable: variable.type(name=variable.name) for variable in shared}
    graph = _cloned(fgraph.inputs, fgraph.outputs, fgraph.toposort(), placeholders)
    if any(isinstance(variable, SharedVariable) for variable in ancestors(graph[1])):
        return None
    return graph


def with_inputs(graph: tuple, replacements: dict) -> tuple:
    """A stored graph (:func:`graph_of`) with its placeholders replaced (``{placeholder: variable}``)."""
    return _cloned(*graph, replacements)


def _cloned(inputs: list, outputs: list, order: list, replacements: dict) -> tuple:
    """A copy of a graph's inputs, outputs and order of evaluation, with ``replacements`` for some of its inputs.

    Constants are kept as they are (a copy would be a new array, whose strides may differ).
    """
    from pytensor.graph.basic import Constant, clone_get_equiv
    from pytensor.graph.traversal import ancestors

    memo = dict(replacements)
    memo.update({variable: variable for variable in ancestors(outputs) if isinstance(variable, Constant)})
    equivalent = clone_get_equiv(inputs, outputs, copy_inputs=False, memo=memo)
    return [equivalent[v] for v in inputs], [equivalent[v] for v in outputs], [equivalent[node] for node in order]


def keep_order(fgraph, order: list) -> bool:
    """Make ``order`` the only order of evaluation of ``fgraph`` (the stored one); False if it is not one."""
    from pytensor.graph.features import Feature

    class Order(Feature):
        """Each node after the one before it in the stored order."""

        def orderings(self, fgraph):
            return {node: [before] for before, node in itertools.pairwise(order)}

    fgraph.attach_feature(Order())
    return fgraph.toposort() == order


def link(graph: tuple, key: str):
    """The numba kernel of a stored graph, linked without rewriting (None if its key is not ``key``)."""
    from pytensor.graph.fg import FunctionGraph
    from pytensor.link.numba.linker import NumbaLinker

    try:
        inputs, outputs, order = graph
        fgraph = FunctionGraph(inputs, outputs, clone=False)
        if not keep_order(fgraph, order):
            return None
        thunk = NumbaLinker().accept(fgraph).make_all()[0]
    except Exception:  # noqa: BLE001 - a graph this PyTensor cannot link: rewritten instead
        return None
    return thunk.jit_fn if kernel_key(thunk) == key else None


def kernel_key(function) -> str | None:
    """The key PyTensor cached a compiled function's (or a linker thunk's) kernel under (None if not cached)."""
    from pytensor.link.numba.cache import CACHED_SRC_FUNCTIONS

    jit_fn = function.jit_fn if hasattr(function, "jit_fn") else getattr(function.vm, "jit_fn", None)
    return CACHED_SRC_FUNCTIONS.get(getattr(jit_fn, "py_func", None))


class GraphPickler(pickle.Pickler):
    """A pickler that keeps an array's strides.

    PyTensor's key of a constant hashes them, and plain pickling makes them those of a new array (an axis of
    length 1, or an empty array, may have any strides).
    """

    def reducer_override(self, obj):
        if type(obj) is not np.ndarray or obj.ndim == 0 or obj.dtype.hasobject:
            return NotImplemented
        for contiguous, order in (("C_CONTIGUOUS", "C"), ("F_CONTIGUOUS", "F")):
            if obj.flags[contiguous]:
                return _strided, (obj.tobytes(order=order), obj.dtype.str, obj.shape, order, obj.strides,
                                  bool(obj.flags.writeable))
        raise pickle.PicklingError("an array that is not contiguous")


def _strided(data: bytes, dtype: str, shape: tuple, order: str, strides: tuple, writeable: bool) -> np.ndarray:
    """The array of ``data`` (its values in ``order``) with ``strides``.

    They differ from a new array's only where an axis of length 0 or 1 leaves them free.
    """
    base = np.frombuffer(data, dtype=dtype).reshape(shape, order=order).copy(order=order)
    return np.lib.stride_tricks.as_strided(base, strides=strides, writeable=writeable)
