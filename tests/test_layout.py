"""The package's layout: imports run one way, from the lower layers up, with no circles.

The layers, bottom first (a module imports only from its own layer or lower ones):
foundations (data, datasets, warnings, parallel, wording), families, container, checks, engines, fitting,
analysis, present, workflow, the command line and the public API.
"""

import ast
import itertools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mixflow"
LAYERS = (
    ("mixflow.warnings", "mixflow.errors", "mixflow.parallel", "mixflow.atomic", "mixflow.datasets", "mixflow.data",
     "mixflow.chunked", "mixflow.units", "mixflow.arguments", "mixflow.wording"),
    ("mixflow.families",),
    ("mixflow.container",),
    ("mixflow.checks",),
    ("mixflow.engines",),
    ("mixflow.fitting",),
    ("mixflow.analysis",),
    ("mixflow.present",),
    ("mixflow.workflow",),
    ("mixflow.cli", "mixflow.sklearn", "mixflow"),
)
MAX_FLOORS = 10


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _resolve(name: str, modules) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """Module -> the mixflow modules it imports (at the top or inside functions)."""
    modules = _modules()
    graph = {}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).strip(".")
                names = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                target = _resolve(name, modules) if name.startswith("mixflow") else None
                if target and target != module and not (target == "mixflow" and module != "mixflow"):
                    targets.add(target)
        graph[module] = targets
    return graph


def layer_of(module: str) -> int:
    matches = [(len(prefix), i) for i, layer in enumerate(LAYERS) for prefix in layer
               if module == prefix or module.startswith(prefix + ".")]
    assert matches, f"{module} belongs to no layer: add it to LAYERS"
    return max(matches)[1]


def floors(graph) -> dict[str, int]:
    depth = {}

    def visit(module, path=()):
        assert module not in path, f"import circle: {' -> '.join((*path, module))}"
        if module not in depth:
            depth[module] = 1 + max((visit(t, (*path, module)) for t in graph[module]), default=0)
        return depth[module]

    for module in graph:
        visit(module)
    return depth


def test_no_import_circle_and_at_most_ten_floors():
    graph = import_graph()
    depth = floors(graph)  # raises on a circle, naming it
    deepest = max(depth, key=depth.get)
    assert depth[deepest] <= MAX_FLOORS, f"{deepest} sits on floor {depth[deepest]}"


def test_imports_never_go_up_a_layer():
    upward = [f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})"
              for module, targets in import_graph().items() for target in sorted(targets)
              if layer_of(target) > layer_of(module)]
    assert not upward, "\n".join(upward)


def test_family_modules_do_not_import_each_other_except_declared_bases():
    # a family's folder is self-contained; soft k-means, grouped data and regression reuse the Gaussian numerics
    allowed = {("grouped", "gaussian"), ("softkmeans", "gaussian"), ("regression", "gaussian")}
    graph = import_graph()
    families = [m.split(".")[2] for m in graph if m.startswith("mixflow.families.") and m.count(".") >= 3]
    crossing = [(module, target) for module, targets in graph.items() for target in targets
                for a, b in itertools.permutations(set(families), 2)
                if module.startswith(f"mixflow.families.{a}.") and target.startswith(f"mixflow.families.{b}")
                and (a, b) not in allowed]
    assert not crossing, crossing


def test_the_checker_sees_a_circle():
    with pytest.raises(AssertionError, match="import circle: a -> b -> a"):
        floors({"a": {"b"}, "b": {"a"}})


def test_every_warning_names_the_callers_line():
    # warnings.warn with skip_file_prefixes=PACKAGE_FILES, never a stacklevel: a count of frames goes wrong when
    # the call path changes (a fit's warnings pointed at mixflow's own em.py), the package's prefix never does
    counted = []
    for module, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "warn" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "warnings":
                keywords = {keyword.arg: keyword.value for keyword in node.keywords}
                named = isinstance(keywords.get("skip_file_prefixes"), ast.Name) and \
                    keywords["skip_file_prefixes"].id == "PACKAGE_FILES"
                counted.append((module, node.lineno, named and "stacklevel" not in keywords))
    assert len(counted) > 30 and all(fine for _, _, fine in counted), [c for c in counted if not c[2]]


def test_the_suite_s_workers_run_a_module_s_tests_together(request):
    """Under ``--dist loadgroup`` (``make test``) a module's tests are one group on one worker, its fixtures computed
    once: pytest-xdist names the group at the end of the node id. Under pytest 9.2 it silently did not."""
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("the suite is not run by pytest-xdist with --dist loadgroup")
    assert request.node.nodeid.endswith("@test_layout"), request.node.nodeid
