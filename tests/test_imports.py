"""The project's own import graph has no circle. Its modules are found where pyproject.toml maps the
packages (router/ is mixserve.router, ...). An import inside a function counts as well: it closes the
circle all the same and only moves the failure from import time to call time (the bench's Clock was
such a circle). Imports of other distributions (torch, ray) are not edges."""
import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def modules() -> dict[str, Path]:
    """Every module of the project by its import name."""
    dirs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    found = {}
    for package, folder in dirs.items():
        for path in (ROOT / folder).glob("*.py"):
            found[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return found


def imported(name: str, path: Path, known: dict[str, Path]) -> dict[str, int]:
    """The project modules that `name` imports -> the line of the first such import. A package's
    own ancestors are left out: Python imports them before the module, whatever it says."""
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    ancestors = {name.rsplit(".", i)[0] for i in range(1, name.count(".") + 1)}
    edges: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            targets = [module] + [f"{module}.{a.name}" for a in node.names]  # `from pkg import submodule`
        else:
            continue
        for target in targets:
            parts = target.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b first
                prefix = ".".join(parts[:i])
                if prefix in known and prefix != name and prefix not in ancestors:
                    edges.setdefault(prefix, node.lineno)
    return edges


def circles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One circle through each strongly connected set of modules (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            members = set(stack[stack.index(v):])
            del stack[stack.index(v):]
            if len(members) > 1:
                found.append(_path(v, members, graph))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _path(start: str, members: set[str], graph: dict[str, dict[str, int]]) -> list[str]:
    """The shortest way from `start` back to itself inside `members`."""
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(set(graph[v]) & members):
                if w == start:
                    return paths[v] + [start]
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    return [start]


def test_the_project_imports_form_no_circle():
    known = modules()
    assert {"mixserve.serving.ensemble", "mixserve.config", "mixserve.router.router", "mixserve.actors.engine",
            "mixserve.router.policies.me", "mixserve.cluster.placement", "mixserve.proto"} <= set(known)
    graph = {name: imported(name, path, known) for name, path in known.items()}
    found = [" -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(c, c[1:])) + f" -> {c[-1]}"
             for c in circles(graph)]
    assert found == [], "import circles (break each with a module both sides can import):\n" + "\n".join(found)


def test_a_circle_is_found_and_named():
    graph = {"a": {"b": 3}, "b": {"c": 5}, "c": {"a": 7, "d": 1}, "d": {}}
    assert circles(graph) == [["a", "b", "c", "a"]]


# The packages in layers, bottom first (docs/architecture.md, "Layout"): a package imports its own layer's
# and the layers below, never one above, and no two packages import each other round a circle. The config (with
# what it checks: the prompt gate, the engine table, engine sim's keys, model references, co-located groups) is one
# node apart from the rest of mixserve/, which is the command line; it imports none of the others, and all
# may import it.
LAYERS = (
    ("mixserve.config",),
    ("mixserve.proto",),
    ("mixserve.actors",),
    ("mixserve.router",),
    ("mixserve.cluster",),
    ("mixserve.serving",),
    ("mixserve.bench", "mixserve.eval", "mixserve.models", "mixserve.soak"),  # the tools
    ("mixserve",),  # the command line: mixserve/cli.py dispatches to each tool's cli.py
)
CONFIG = {"mixserve.config", "mixserve.gate", "mixserve.engines", "mixserve.references", "mixserve.scaling",
          "mixserve.sim", "mixserve.split_models", "mixserve.groups"}


def package(module: str) -> str:
    """The layer node a module belongs to: its top-level package under mixserve (policies are the
    router's), the config node for the config's modules, and `mixserve` for the command line."""
    if module in CONFIG:
        return "mixserve.config"
    parts = module.split(".")
    known = {name for layer in LAYERS for name in layer}
    return ".".join(parts[:2]) if ".".join(parts[:2]) in known else "mixserve"


def packages(graph: dict[str, dict[str, int]]) -> dict[str, dict[str, str]]:
    """The package graph of a module graph: package -> package it imports -> where, the first such
    import as "module (line N)"."""
    found: dict[str, dict[str, str]] = {}
    for module in sorted(graph):
        edges = found.setdefault(package(module), {})
        for target, line in sorted(graph[module].items()):
            if package(target) != package(module):
                edges.setdefault(package(target), f"{module} (line {line})")
    return found


def upward(graph: dict[str, dict[str, str]]) -> list[str]:
    """Every package import that goes up the layers, named by where it is."""
    rank = {name: i for i, layer in enumerate(LAYERS) for name in layer}
    return [f"{a} imports {b} at {where}: {b} is above {a}" for a in sorted(graph)
            for b, where in sorted(graph[a].items()) if rank[b] > rank[a]]


def package_problems(graph: dict[str, dict[str, int]]) -> list[str]:
    pgraph = packages(graph)
    found = [" -> ".join(f"{a} ({pgraph[a][b]})" for a, b in zip(c, c[1:])) + f" -> {c[-1]}"
             for c in circles(pgraph)]
    return found + upward(pgraph)


def test_the_packages_import_down_the_layers_and_form_no_circle():
    known = modules()
    assert {package(name) for name in known} == {name for layer in LAYERS for name in layer}, \
        "a package that is in no layer: add it to LAYERS"
    graph = {name: imported(name, path, known) for name, path in known.items()}
    problems = package_problems(graph)
    assert problems == [], "package imports against the layers (move the shared thing down):\n" + "\n".join(problems)


def test_a_package_circle_is_found_and_named():
    """One import from the members up to the router: no module circle, but a package circle and an
    upward import, both named by the module and line that made them."""
    known = modules()
    graph = {name: imported(name, path, known) for name, path in known.items()}
    graph["mixserve.actors.engine"]["mixserve.router.request"] = 1
    assert circles(graph) == []
    problems = package_problems(graph)
    circle = problems[0]
    assert "mixserve.actors (mixserve.actors.engine (line 1)) -> mixserve.router" in circle
    assert "mixserve.actors imports mixserve.router at mixserve.actors.engine (line 1): mixserve.router is above " \
           "mixserve.actors" in problems


def test_two_packages_that_import_each_other_are_named():
    graph = {"mixserve.router.router": {"mixserve.serving.app": 9}, "mixserve.serving.app": {"mixserve.router.router": 4}}
    assert package_problems(graph) == [
        "mixserve.router (mixserve.router.router (line 9)) -> mixserve.serving (mixserve.serving.app (line 4)) "
        "-> mixserve.router",
        "mixserve.router imports mixserve.serving at mixserve.router.router (line 9): mixserve.serving is above "
        "mixserve.router"]
