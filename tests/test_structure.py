"""The package's import structure: layers that import downwards only, and no cycle.

Every import statement of every module (at module level and inside functions) is read
with `ast`, so a lazy import that would close a cycle counts too. Importing a module
also runs its parent packages' __init__, so an import of `a.b.c` is an edge to `a.b`
(and `a.b.c`).
"""
import ast
import importlib
import pkgutil
from pathlib import Path

import leclip
import leclip.datasets
import leclip.trainers

# lowest first; a module may import its own layer or lower ones
LAYERS = (
    ("leclip.distributed", "leclip.files"),  # torch.distributed helpers, atomic writes: import no leclip module
    ("leclip.data",),
    ("leclip.engine",),
    ("leclip.dassl", "leclip.dassl_compat"),
    ("leclip",),  # the core: CLIP layer, method parts, metrics, evaluators, world, trainer base
    ("leclip.trainers", "leclip.datasets"),
    # entry points: the harness (its catalogue, one run, the dry run), a fork's line, reports
    ("leclip.catalogue", "leclip.runner", "leclip.preflight", "leclip.harness", "leclip.plugin", "leclip.report"),
)


def all_modules():
    """{module name: source file} of leclip, leclip.trainers and leclip.datasets."""
    modules = {}
    for package in (leclip, leclip.trainers, leclip.datasets):
        modules[package.__name__] = package.__file__
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            spec = importlib.util.find_spec(info.name)
            modules[info.name] = spec.origin
    return modules


def imported_names(name, path, is_package):
    """Absolute names of every leclip module that `name` imports."""
    tree = ast.parse(Path(path).read_text())
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return found


def import_graph():
    modules = all_modules()
    graph = {}
    for name, path in modules.items():
        is_package = path.endswith("__init__.py")
        edges = set()
        for target in imported_names(name, path, is_package):
            parts = target.split(".")
            for k in range(1, len(parts) + 1):  # the module and every parent package it runs
                prefix = ".".join(parts[:k])
                # the root package `leclip` imports nothing (checked below): no edge
                if prefix in modules and prefix not in (name, "leclip") and not name.startswith(prefix + "."):
                    edges.add(prefix)
        graph[name] = edges
    return graph


def layer(name):
    best = None
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if name == prefix or name.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (index, len(prefix))
    return best[0]


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_walk_sees_every_module_and_its_lazy_imports():
    graph = import_graph()
    assert {"leclip.data.datamanager", "leclip.engine.trainer", "leclip.trainers.cfsg", "leclip.datasets.synth"} <= set(graph)
    assert "leclip.trainers" in graph["leclip.catalogue"]  # imported inside a function


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_cycle_finder_finds_a_planted_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_imports_point_down_the_layers():
    upward = [
        (source, target)
        for source, targets in import_graph().items()
        for target in targets
        if layer(target) > layer(source)
    ]
    assert upward == []


def in_data(name):
    return name == "leclip.data" or name.startswith("leclip.data.")


def test_data_imports_nothing_from_the_engine_or_the_facade():
    graph = import_graph()
    data = [source for source in graph if in_data(source)]
    assert "leclip.data.datamanager" in data and "leclip.datasets.synth" not in data
    for source in data:  # its own modules and the torch.distributed helpers only
        assert all(in_data(target) or target == "leclip.distributed" for target in graph[source]), (
            source, graph[source])


def test_the_distributed_helpers_import_no_leclip_module():
    assert import_graph()["leclip.distributed"] == set()


def test_the_atomic_writes_import_no_leclip_module():
    assert import_graph()["leclip.files"] == set()


def test_the_root_package_imports_nothing():
    assert imported_names("leclip", leclip.__file__, True) == set()


def test_only_the_world_its_datasets_and_the_entry_points_import_the_world():
    """The method parts and trainers never import the embedded world (it registers what
    they may use, e.g. CCD's classifier weights "embedded")."""
    allowed = ("leclip.world", "leclip.datasets", "leclip.harness", "leclip.report")
    importers = sorted(
        source for source, targets in import_graph().items()
        if any(t == "leclip.world" or t.startswith("leclip.world.") for t in targets) and not source.startswith(allowed)
    )
    assert importers == []
