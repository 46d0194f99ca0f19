"""ADVI's compiled step: PyMC's ``step_function``, with its rewritten graph kept on disk for the next process.

Compiling the step of a mixture's ADVI takes seconds, most of them PyTensor's rewriting of the graph (the
ELBO's gradient through the model and Adam's updates), which PyTensor does not cache; the numba kernel it
links is cached on disk. A process keeps its compiled steps (:mod:`mixflow.engines.advi`), but every new
process, such as every run of a workflow, rewrote them again. Here the rewritten graph is stored on disk by
the structure of the model's graph (:mod:`mixflow.engines.stored_graphs`), and a process that finds it builds
the step's graph as PyMC does (for its shared variables: q's parameters, Adam's state, the random generators,
the data), then links the stored graph with them in place of its placeholders, without rewriting. The linked
kernel must have the key recorded (the same kernel, so the same numbers); anything else rewrites as before.
"""

import copy
import functools
import hashlib
from pathlib import Path

import numpy as np

from mixflow.engines import stored_graphs

__all__ = ["compile_step", "step_counts"]

#: How many steps this process rewrote, and how many it linked from the rewritten graphs on disk.
_COUNTS = {"rewritten": 0, "loaded": 0}


def step_counts() -> dict:
    """How many ADVI steps this process rewrote, and how many it linked from the graphs on disk."""
    return dict(_COUNTS)


def compile_step(objective, optimiser, structure: str | None = None, mode=None) -> tuple:
    """The step PyMC's ``objective.step_function(score=True, obj_optimizer=optimiser)`` compiles, and its generators.

    The graph, the random generators' updates and their reseeding are PyMC's (``step_function`` and
    :func:`pymc.pytensorf.compile`, whose steps this follows). With ``structure`` (a key of the structure of the
    model's graphs, :func:`mixflow.engines.advi._fitter_key`) and the default mode, the rewritten graph comes
    from disk when a process stored it, and is stored after rewriting otherwise.

    Returns
    -------
    tuple
        The compiled step (it returns the loss) and the list of the random generators it updates.
    """
    import pytensor
    from pymc.pytensorf import collect_default_updates, reseed_rngs
    from pytensor.compile.mode import Mode, get_mode
    from pytensor.configdefaults import config

    updates = objective.updates(obj_optimizer=optimiser)
    seed = objective.approx.rng.randint(2**30, dtype=np.int64)
    rng_updates = collect_default_updates(inputs=[], outputs=[updates.loss])
    if rng_updates:
        reseed_rngs(list(rng_updates), seed)
    try:
        from pymc.model import modelcontext

        check_bounds = modelcontext(None).check_bounds
    except TypeError:
        check_bounds = True
    default = mode is None
    mode = get_mode(mode)
    check = "local_check_parameter_to_ninf_switch" if check_bounds else "local_remove_check_parameter"
    mode = Mode(linker=mode.linker, optimizer=mode.provided_optimizer.including("random_make_inplace", check))
    all_updates = {**rng_updates, **updates}
    stored = None
    if structure is not None and default and config.numba__cache and type(mode.linker).__name__ == "NumbaLinker":
        stored = f"{structure}|{_source_digest()}|check_bounds={check_bounds}"
        function = _linked(stored, updates.loss, all_updates, mode)
        if function is not None:
            _COUNTS["loaded"] += 1
            return function, list(rng_updates)
    function = pytensor.function([], updates.loss, updates=all_updates, mode=mode)
    _COUNTS["rewritten"] += 1
    if stored is not None:
        _store(stored, function)
    return function, list(rng_updates)


@functools.cache
def _source_digest() -> str:
    """A digest of the code that builds the step's graph besides PyMC (Adam's step scaling, this module)."""
    digest = hashlib.sha256()
    for name in ("advi.py", "advi_step.py"):
        digest.update((Path(__file__).parent / name).read_bytes())
    return digest.hexdigest()


def _store(structure: str, function) -> None:
    """Store the rewritten graph of ``function`` (its inputs all shared variables) and its kernel's key."""
    from pytensor.compile.sharedvalue import SharedVariable

    fgraph = function.maker.fgraph
    key = stored_graphs.kernel_key(function)
    if key is None or not all(isinstance(variable, SharedVariable) for variable in fgraph.inputs):
        return
    try:
        graph = stored_graphs.graph_of(fgraph, fgraph.inputs)
    except Exception:  # noqa: BLE001 - the graph is only a shortcut
        return
    if graph is not None:
        stored_graphs.store("advi-step", structure, {"graph": graph, "key": key,
                                                     "update_mapping": dict(fgraph.update_mapping)})


def _linked(structure: str, loss, updates: dict, mode):
    """The step linked from the graph stored for ``structure`` (None if absent or not this step's graph).

    Its inputs are the shared variables PyTensor finds in ``loss`` and ``updates`` (in its order, which is the
    order they had when the graph was stored); each input's update is the stored graph's.
    """
    from pytensor.compile.rebuild import construct_function_ins_and_outs
    from pytensor.graph.fg import FunctionGraph

    content = stored_graphs.load("advi-step", structure)
    if content is None:
        return None
    try:
        inputs, outputs = construct_function_ins_and_outs([], loss, updates=updates)
        placeholders = content["graph"][0]
        variables = [spec.variable for spec in inputs]
        if len(placeholders) != len(variables) or any(
                placeholder.name != variable.name or placeholder.type != variable.type
                for placeholder, variable in zip(placeholders, variables, strict=True)):
            return None
        # the graph's outputs: the loss, then each updated input's new value in the inputs' order
        mapping = sorted(content["update_mapping"].items())
        if [at for at, _ in mapping] != list(range(1, len(mapping) + 1)) or \
                [index for _, index in mapping] != [i for i, spec in enumerate(inputs) if spec.update is not None]:
            return None
        update_at = {index: at for at, index in mapping}
        _, graph_outputs, order = stored_graphs.with_inputs(content["graph"], dict(zip(placeholders, variables,
                                                                                         strict=True)))
        specs = []
        for index, spec in enumerate(inputs):
            spec = copy.copy(spec)
            if spec.update is not None:
                spec.update = graph_outputs[update_at[index]]
            specs.append(spec)
        fgraph = FunctionGraph(variables, graph_outputs[:1], clone=False)
        maker = mode.function_maker(specs, outputs, mode, accept_inplace=True, fgraph=fgraph, no_fgraph_prep=True)
        if not stored_graphs.keep_order(maker.fgraph, order):
            return None
        function = maker.create()
    except Exception:  # noqa: BLE001 - a graph this PyTensor cannot link: rewritten instead
        return None
    return function if stored_graphs.kernel_key(function) == content["key"] else None
