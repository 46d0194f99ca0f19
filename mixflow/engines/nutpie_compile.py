"""nutpie's compiled form of a PyMC model, with its C callbacks cached on disk like PyTensor's kernels.

nutpie (``nutpie.compile_pymc_model``) compiles the log density and gradient with PyTensor's numba backend,
whose kernels PyTensor caches on disk, then wraps them in two ``numba.cfunc`` C callbacks (log density and
gradient; the traced values) that its Rust sampler calls. Those callbacks are closures over the kernels,
which numba will not cache, so every process compiled them anew: numba links the kernels into the callback
and generates machine code for the whole, the larger part of nutpie's compilation time.

Here the callbacks are written the way PyTensor writes its own cached functions: generated source whose
only globals are the PyTensor kernel and nutpie's address-to-pointer intrinsic, registered under a key that
names what it computes (the key PyTensor gave the kernel, which hashes the graph), so numba's on-disk cache
finds them again in the next process. They are nutpie's callbacks statement for statement (the same return
codes), so the draws are the same.

mixflow's models hold the data and the data-scaled prior as shared variables, inputs of the graph
(:func:`mixflow.families.pymc_parts.graph_input`), so the kernels and the callbacks depend on the graph's
structure only: a new data set of a compiled structure finds them all on disk. The callbacks read the
inputs from nutpie's user data, here a table of each input's address and shape, as nutpie's own callbacks
do from theirs. Within a process a model of a structure compiled before skips even PyTensor's rewriting:
the compiled model is reused with the new model's input values (K choices, bootstrap replicates, refits).
A kernel PyTensor did not key, or an input that is not float64, gets nutpie's own compilation.

In a new process, PyTensor's rewriting of the log density, its gradient and the traced values (and nutpie's
shape computation) would be done again before the kernels are found on disk. So the rewritten graphs are
kept on disk too (:mod:`mixflow.engines.stored_graphs`), with nutpie's sizes and shapes and the key PyTensor
gave each kernel, which names the same kernels and so the same callbacks and draws.
"""

import contextlib
import dataclasses
import hashlib

import numpy as np

from mixflow.engines import stored_graphs

__all__ = ["compile_count", "compile_nutpie"]

_VERSION = 2  # part of every callback's key: bump it when the generated source below changes

_LOGP_SOURCE = """
def {name}(dim, x_, out_, logp_, user_data_):
    if dim != {n_dim}:
        return -1
    try:
        x = numba.carray(x_, ({n_dim},))
        out = numba.carray(out_, ({n_dim},))
        logp = numba.carray(logp_, ())
{shared}        logp_val, grad = kernel(x{arguments})
        logp[()] = logp_val
        out[...] = grad
        if not np.all(np.isfinite(out)):
            return 3
        if not np.isfinite(logp_val):
            return 4
    except Exception:
        return 1
    return 0
"""

_EXPAND_SOURCE = """
def {name}(dim, expanded, x_, out_, user_data_):
    if dim != {n_dim}:
        return -1
    if expanded != {n_expanded}:
        return -1
    try:
        x = numba.carray(x_, ({n_dim},))
        out = numba.carray(out_, ({n_expanded},))
{shared}        (values,) = kernel(x{arguments})
        out[...] = values
    except Exception:
        return -2
    return 0
"""

# one graph input (shared variable) read from the user data: its address, then its shape
_SHARED_LINE = "        {var} = numba.carray(address(table[{at}]), ({shape}), np.float64)\n"

#: Compiled models by the structure of their graph (:func:`_structure_key`), reused with new input values.
_COMPILED: dict = {}
_COMPILED_MAX = 16


def compile_nutpie(pymc_model, initial_point, *, var_names=None, numba_opt: int = 1):
    """``nutpie.compile_pymc_model(pymc_model, var_names=var_names)`` with ``initial_point``, callbacks cached.

    Parameters
    ----------
    pymc_model : pymc.Model
        A model whose data-derived values are float64 shared variables of its graph (mixflow's MCMC models'
        are, :func:`mixflow.families.pymc_parts.graph_input`) or constants.
    initial_point : callable
        ``initial_point(seed)``: a chain's start, a flat float64 array of the free variables on the sampler's
        scale in the order of ``pymc_model.free_RVs`` (nutpie's order).
    var_names : list of str, optional
        The variables nutpie's trace keeps (all the model's unobserved variables when None).
    numba_opt : int, default 1
        LLVM optimisation level numba applies when it compiles a callback (the kernels inside are already
        compiled by PyTensor; the callback is a thin wrapper). At least 1: at 0 LLVM keeps a dead load of
        the kernel's address, which numba counts as a dynamic global and will not cache. It is part of the
        cache key.

    Returns
    -------
    nutpie.compile_pymc.CompiledPyMCModel
        Its ``initial_point_func`` is ``initial_point``. A model whose graph has the structure of one
        compiled before in this process (the same family, K, features and traced variables; other data or
        prior values) reuses that compilation with its own input values (:func:`compile_count` counts the
        compilations); its ``logp_func`` and ``expand_func`` (PyTensor's functions, unused by nutpie's
        sampler) are then None, as they are when the rewritten graphs came from disk. Its ``user_data`` is
        mixflow's table of the inputs' addresses and shapes, so nutpie's ``with_data`` does not apply to it.
    """
    import nutpie
    from nutpie import compile_pymc
    from pytensor.configdefaults import config

    def nutpie_own():
        with _numba_optimisation(numba_opt):
            compiled = nutpie.compile_pymc_model(pymc_model, jitter_rvs=set(), var_names=var_names)
        return dataclasses.replace(compiled, initial_point_func=initial_point)

    # the cached path uses nutpie's own building blocks, which are not public: any other nutpie than the one
    # they were written against gets nutpie's own compilation
    private = ("_make_functions", "_prepare_dims_and_coords", "address_as_void_pointer", "CompiledPyMCModel")
    if not config.numba__cache or not all(hasattr(compile_pymc, name) for name in private) or \
            not nutpie.__version__.startswith("0.16."):
        return nutpie_own()
    outputs = [pymc_model.logp(), *pymc_model.deterministics]  # the graph, built once for the key and the inputs
    structure = _structure_key(pymc_model, var_names, numba_opt, outputs)
    reused, functions = _COMPILED.get(structure), (None, None)
    if reused is None:
        fresh = _compile(pymc_model, var_names, numba_opt, structure)
        if fresh is None:
            return nutpie_own()
        # the cache keeps the callbacks, not PyTensor's functions, which hold this model's data (None when
        # the graphs came from disk)
        functions = fresh.pop("logp_function"), fresh.pop("expand_function")
        reused = _COMPILED[structure] = fresh
        while len(_COMPILED) > _COMPILED_MAX:
            _COMPILED.pop(next(iter(_COMPILED)))
    values = _input_values(outputs, reused["inputs"])
    if values is None:  # the inputs are not those of the compiled graph (cannot happen for one structure)
        return nutpie_own()
    table = _input_table(values)
    return compile_pymc.CompiledPyMCModel(
        _n_dim=reused["n_dim"], dims=reused["dims"], _coords=reused["coords"], _shapes=reused["shapes"],
        compiled_logp_func=reused["logp"], compiled_expand_func=reused["expand"], initial_point_func=initial_point,
        shared_data=dict(zip(reused["inputs"], values, strict=True)), shared_var_keys={}, user_data=table,
        n_expanded=reused["n_expanded"], shape_info=reused["shape_info"], logp_func=functions[0],
        expand_func=functions[1], reparameterized_names=reused["reparameterized"])


def compile_count() -> int:
    """How many graphs this process compiled through the cached path (a reuse does not count)."""
    return _COUNT[0]


_COUNT = [0]
#: How many graphs this process rewrote, and how many it linked from the rewritten graphs on disk.
_GRAPH_COUNTS = {"rewritten": 0, "loaded": 0}


def _structure_key(pymc_model, var_names, numba_opt: int, outputs: list | None = None) -> str:
    """A hash of the model's graph before rewriting: operations, types, names and every constant's value.

    The graph inputs' (shared variables') values are not in it; constants, which the compiled code holds,
    are (in full: the printed graph abbreviates large ones).
    """
    from mixflow.families.pymc_parts import structure_digest

    outputs = [pymc_model.logp(), *pymc_model.deterministics] if outputs is None else outputs
    digest = structure_digest(pymc_model, outputs)
    digest.update(f"{_VERSION}|{var_names}|{numba_opt}".encode())
    return digest.hexdigest()


def _compile(pymc_model, var_names, numba_opt: int, structure: str) -> dict | None:
    """Compile the model's log density and traced values; None when the cached path cannot serve it.

    The rewritten graphs come from disk when a process compiled this structure before (:func:`_load_graphs`),
    otherwise from nutpie's rewriting, and are then stored (:func:`_store_graphs`).
    """
    import numba
    from nutpie import compile_pymc

    graphs, functions = _load_graphs(structure), (None, None)
    if graphs is not None:
        kernels = [stored_graphs.link(graphs[part]["graph"], graphs[part]["key"]) for part in ("logp", "expand")]
        if None in kernels:
            graphs = None
        else:
            _GRAPH_COUNTS["loaded"] += 1
    if graphs is None:
        (n_dim, n_expanded, *functions, _, shape_info, reparameterized) = compile_pymc._make_functions(
            pymc_model, mode="NUMBA", compute_grad=True, join_expanded=True, pymc_initial_point_fn=None,
            var_names=var_names)
        _GRAPH_COUNTS["rewritten"] += 1
        graphs = {"n_dim": n_dim, "n_expanded": n_expanded, "shape_info": shape_info,
                  "reparameterized": reparameterized}
        for part, function in zip(("logp", "expand"), functions, strict=True):
            graphs[part] = {"key": stored_graphs.kernel_key(function),
                            "shared": [variable.name for variable in function.get_shared()],
                            "ndim": [variable.type.ndim for variable in function.get_shared()]}
        if any(variable.type.dtype != "float64" for function in functions for variable in function.get_shared()):
            return None
        kernels = [function.vm.jit_fn for function in functions]
    logp, expand = graphs["logp"], graphs["expand"]
    names = list(dict.fromkeys([*logp["shared"], *expand["shared"]]))
    if None in (logp["key"], expand["key"]) or None in names or len(set(names)) < len(names):
        return None
    if functions[0] is not None:
        _store_graphs(structure, graphs, functions)
    n_dim, n_expanded, shape_info = graphs["n_dim"], graphs["n_expanded"], graphs["shape_info"]
    slots = _slots(names, {name: ndim for part in (logp, expand)
                           for name, ndim in zip(part["shared"], part["ndim"], strict=True)})
    with _numba_optimisation(numba_opt):
        shapes = {"n_dim": n_dim, "n_expanded": n_expanded}
        logp_callback = _cached_cfunc(_LOGP_SOURCE, "mixflow_nutpie_logp", logp["key"], shapes, numba_opt,
                                      kernels[0], [slots[name] for name in logp["shared"]],
                                      numba.types.int64(numba.types.uint64, numba.types.CPointer(numba.types.double),
                                                        numba.types.CPointer(numba.types.double),
                                                        numba.types.CPointer(numba.types.double),
                                                        numba.types.voidptr))
        expand_callback = _cached_cfunc(_EXPAND_SOURCE, "mixflow_nutpie_expand", expand["key"], shapes, numba_opt,
                                        kernels[1], [slots[name] for name in expand["shared"]],
                                        numba.types.int64(numba.types.uint64, numba.types.uint64,
                                                          numba.types.CPointer(numba.types.double),
                                                          numba.types.CPointer(numba.types.double),
                                                          numba.types.voidptr))
    _COUNT[0] += 1
    reparameterized = graphs["reparameterized"]
    dims, coords = compile_pymc._prepare_dims_and_coords(pymc_model, shape_info, reparameterized)
    return {"n_dim": n_dim, "n_expanded": n_expanded, "dims": dims, "coords": coords,
            "shapes": {name: tuple(shape) for name, _, shape in zip(*shape_info, strict=True)},
            "logp": logp_callback, "expand": expand_callback, "inputs": names, "shape_info": shape_info,
            "logp_function": functions[0], "expand_function": functions[1], "reparameterized": reparameterized}


# -- the rewritten graphs on disk ------------------------------------------------------------------------------
def _file_structure(structure: str) -> str:
    """The structure a graph file is stored under: with nutpie's version and this module's callbacks'."""
    import nutpie

    return f"{structure}|nutpie {nutpie.__version__}|callbacks {_VERSION}"


def _store_graphs(structure: str, graphs: dict, functions: list) -> None:
    """Write the rewritten graphs of ``functions`` (PyTensor's) with ``graphs``' sizes and keys; never raises."""
    try:
        parts = [_graph_of(function) for function in functions]
    except Exception:  # noqa: BLE001 - the graphs are only a shortcut
        return
    if None in parts:  # a graph whose inputs are not the point and the shared variables: not stored
        return
    content = dict(graphs, logp=dict(graphs["logp"], graph=parts[0]), expand=dict(graphs["expand"], graph=parts[1]))
    stored_graphs.store("nutpie", _file_structure(structure), content)


def _load_graphs(structure: str) -> dict | None:
    """The rewritten graphs stored for ``structure`` by these versions (None if absent, altered or unreadable)."""
    graphs = stored_graphs.load("nutpie", _file_structure(structure))
    try:
        for part in ("logp", "expand"):
            inputs, _, _ = graphs[part]["graph"]
            placeholders = [(variable.name, variable.type.ndim, variable.type.dtype) for variable in inputs[1:]]
            if placeholders != [(name, ndim, "float64") for name, ndim in
                                zip(graphs[part]["shared"], graphs[part]["ndim"], strict=True)]:
                return None
    except Exception:  # noqa: BLE001 - absent, or not what this module stores: rewritten instead
        return None
    return graphs


def _graph_of(function) -> tuple | None:
    """A compiled function's rewritten graph without its data (:func:`mixflow.engines.stored_graphs.graph_of`).

    None unless the graph's inputs are the point, then the shared variables.
    """
    from pytensor.compile.sharedvalue import SharedVariable

    fgraph = function.maker.fgraph
    point, *shared = fgraph.inputs
    if isinstance(point, SharedVariable) or not all(isinstance(variable, SharedVariable) for variable in shared) or \
            [variable.name for variable in shared] != [variable.name for variable in function.get_shared()]:
        return None
    return stored_graphs.graph_of(fgraph, shared)


def _slots(names: list, ndims: dict) -> dict:
    """Where each input's address and shape sit in the table (:func:`_input_table`): ``{name: (at, ndim)}``."""
    slots, at = {}, 0
    for name in names:
        slots[name] = (at, ndims[name])
        at += 1 + ndims[name]
    return slots


def _input_values(outputs: list, names: list) -> list | None:
    """The values of the graph inputs ``names`` of ``outputs``, C-contiguous float64 copies (None if one is missing)."""
    from pytensor.graph.traversal import ancestors

    found = {variable.name: variable for variable in ancestors(outputs)
             if hasattr(variable, "get_value") and variable.name in names}
    if set(found) != set(names):
        return None
    values = [np.array(found[name].get_value(), dtype=np.float64, order="C", copy=True) for name in names]
    for value in values:
        value.flags.writeable = False
    return values


def _input_table(values: list) -> np.ndarray:
    """The user data the callbacks read the inputs from: each input's address, then its shape."""
    return np.array([entry for value in values for entry in (value.ctypes.data, *value.shape)], dtype=np.uint64)


def _cached_cfunc(source: str, name: str, kernel_key: str, shapes: dict, numba_opt: int, kernel, slots: list,
                  signature):
    """A ``numba.cfunc`` of the generated ``source`` calling ``kernel``, cached on disk under a key of the lot.

    ``slots`` are the ``(at, ndim)`` of the kernel's shared inputs in the user data's table, in the kernel's order.
    """
    import numba
    from nutpie.compile_pymc import address_as_void_pointer
    from pytensor.link.numba.cache import compile_numba_function_src

    lines = "".join(_SHARED_LINE.format(var=f"shared_{i}", at=at,
                                        shape="".join(f"int(table[{at + 1 + j}]), " for j in range(ndim)))
                    for i, (at, ndim) in enumerate(slots))
    if slots:
        size = max(at + 1 + ndim for at, ndim in slots)
        lines = f"        table = numba.carray(user_data_, ({size},), np.uint64)\n" + lines
    arguments = "".join(f", shared_{i}" for i in range(len(slots)))
    text = source.format(name=name, shared=lines, arguments=arguments, **shapes)
    key = hashlib.sha256(f"{_VERSION}|{name}|{kernel_key}|{text}|{numba_opt}|{numba.__version__}".encode()).hexdigest()
    names = {"kernel": kernel, "numba": numba, "np": np, "address": address_as_void_pointer,
             "__name__": __name__}  # a module name, for numba's cache
    function = compile_numba_function_src(text, name, global_env=names, cache_key=key)
    return numba.cfunc(signature, cache=True)(function)


@contextlib.contextmanager
def _numba_optimisation(level: int):
    """Temporarily set numba's LLVM optimisation level of the modules it finalises."""
    from numba.core import config

    saved = config.OPT
    config.OPT = config._OptLevel(level)
    try:
        yield
    finally:
        config.OPT = saved
