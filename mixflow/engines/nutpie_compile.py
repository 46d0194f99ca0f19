"""nutpie's compiled form of a PyMC model, with its C callbacks cached on disk like PyTensor's kernels.

nutpie (``nutpie.compile_pymc_model``) compiles the log density and gradient with PyTensor's numba backend,
whose kernels PyTensor caches on disk, then wraps them in two ``numba.cfunc`` C callbacks (log density and
gradient; the traced values) that its Rust sampler calls. Those callbacks are closures over the kernels,
which numba will not cache, so every process compiled them anew: numba links the kernels into the callback
and generates machine code for the whole, the larger part of nutpie's compilation time.

Here the callbacks are written the way PyTensor writes its own cached functions: generated source whose
only global is the PyTensor kernel, registered under a key that names what it computes (the key PyTensor
gave the kernel, which hashes the graph and its constants, the data included), so numba's on-disk cache
finds them again in the next process. They are nutpie's callbacks statement for statement (the same return
codes), so the draws are the same. A model whose graph holds shared variables, or a kernel PyTensor did not
key, gets nutpie's own compilation.
"""

import contextlib
import dataclasses
import hashlib

import numpy as np

__all__ = ["compile_nutpie"]

_VERSION = 1  # part of every callback's key: bump it when the generated source below changes

_LOGP_SOURCE = """
def {name}(dim, x_, out_, logp_, user_data_):
    if dim != {n_dim}:
        return -1
    try:
        x = numba.carray(x_, ({n_dim},))
        out = numba.carray(out_, ({n_dim},))
        logp = numba.carray(logp_, ())
        logp_val, grad = kernel(x)
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
        (values,) = kernel(x)
        out[...] = values
    except Exception:
        return -2
    return 0
"""


def compile_nutpie(pymc_model, initial_point, *, var_names=None, numba_opt: int = 1):
    """``nutpie.compile_pymc_model(pymc_model, var_names=var_names)`` with ``initial_point``, callbacks cached.

    Parameters
    ----------
    pymc_model : pymc.Model
        A model whose data are constants of its graph (mixflow's MCMC models are).
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
        Its ``initial_point_func`` is ``initial_point``.
    """
    import numba
    import nutpie
    from nutpie import compile_pymc
    from pytensor.configdefaults import config

    def nutpie_own():
        with _numba_optimisation(numba_opt):
            compiled = nutpie.compile_pymc_model(pymc_model, jitter_rvs=set(), var_names=var_names)
        return dataclasses.replace(compiled, initial_point_func=initial_point)

    # the cached path uses nutpie's own building blocks, which are not public: any other nutpie than the one
    # they were written against gets nutpie's own compilation
    private = ("_make_functions", "_prepare_dims_and_coords", "make_user_data", "CompiledPyMCModel")
    if not config.numba__cache or not all(hasattr(compile_pymc, name) for name in private) or \
            not nutpie.__version__.startswith("0.16."):
        return nutpie_own()
    # the start is the caller's: PyMC's initial-point function is not compiled (nutpie's helper only wraps it)
    (n_dim, n_expanded, logp_function, expand_function, _, shape_info, reparameterized) = compile_pymc._make_functions(
        pymc_model, mode="NUMBA", compute_grad=True, join_expanded=True, pymc_initial_point_fn=None,
        var_names=var_names)
    logp_key, expand_key = (_kernel_key(function) for function in (logp_function, expand_function))
    if logp_function.get_shared() or expand_function.get_shared() or None in (logp_key, expand_key):
        return nutpie_own()
    point = np.asarray(initial_point(0), dtype=float)
    for function in (logp_function, expand_function):  # the kernels as PyTensor compiles (or caches) them
        function.vm.jit_fn(point)
    with _numba_optimisation(numba_opt):
        shapes = {"n_dim": n_dim, "n_expanded": n_expanded}
        logp_callback = _cached_cfunc(_LOGP_SOURCE, "mixflow_nutpie_logp", logp_key, shapes, numba_opt,
                                      logp_function.vm.jit_fn,
                                      numba.types.int64(numba.types.uint64, numba.types.CPointer(numba.types.double),
                                                        numba.types.CPointer(numba.types.double),
                                                        numba.types.CPointer(numba.types.double),
                                                        numba.types.voidptr))
        expand_callback = _cached_cfunc(_EXPAND_SOURCE, "mixflow_nutpie_expand", expand_key, shapes, numba_opt,
                                        expand_function.vm.jit_fn,
                                        numba.types.int64(numba.types.uint64, numba.types.uint64,
                                                          numba.types.CPointer(numba.types.double),
                                                          numba.types.CPointer(numba.types.double),
                                                          numba.types.voidptr))
    dims, coords = compile_pymc._prepare_dims_and_coords(pymc_model, shape_info, reparameterized)
    shapes = {name: tuple(shape) for name, _, shape in zip(*shape_info, strict=True)}
    return compile_pymc.CompiledPyMCModel(
        _n_dim=n_dim, dims=dims, _coords=coords, _shapes=shapes,
        compiled_logp_func=logp_callback, compiled_expand_func=expand_callback, initial_point_func=initial_point,
        shared_data={}, shared_var_keys={}, user_data=compile_pymc.make_user_data({}, {}), n_expanded=n_expanded,
        shape_info=shape_info, logp_func=logp_function, expand_func=expand_function,
        reparameterized_names=reparameterized)


def _kernel_key(function) -> str | None:
    """The key PyTensor cached the compiled function's kernel under (None if it did not cache it)."""
    from pytensor.link.numba.cache import CACHED_SRC_FUNCTIONS

    return CACHED_SRC_FUNCTIONS.get(getattr(function.vm.jit_fn, "py_func", None))


def _cached_cfunc(source: str, name: str, kernel_key: str, shapes: dict, numba_opt: int, kernel, signature):
    """A ``numba.cfunc`` of the generated ``source`` calling ``kernel``, cached on disk under a key of the lot."""
    import numba
    from pytensor.link.numba.cache import compile_numba_function_src

    text = source.format(name=name, **shapes)
    key = hashlib.sha256(f"{_VERSION}|{name}|{kernel_key}|{text}|{numba_opt}|{numba.__version__}".encode()).hexdigest()
    names = {"kernel": kernel, "numba": numba, "np": np, "__name__": __name__}  # a module name, for numba's cache
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
