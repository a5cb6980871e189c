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
    assert {"mixserve.api", "mixserve.config", "mixserve.router.router", "mixserve.actors.engine",
            "mixserve.router.policies.me", "mixserve.cluster.placement", "mixserve.proto"} <= set(known)
    graph = {name: imported(name, path, known) for name, path in known.items()}
    found = [" -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(c, c[1:])) + f" -> {c[-1]}"
             for c in circles(graph)]
    assert found == [], "import circles (break each with a module both sides can import):\n" + "\n".join(found)


def test_a_circle_is_found_and_named():
    graph = {"a": {"b": 3}, "b": {"c": 5}, "c": {"a": 7, "d": 1}, "d": {}}
    assert circles(graph) == [["a", "b", "c", "a"]]
