"""The package's import graph: no module imports another that (directly or not) imports it back,
and no module reaches into another's private names.

An import circle works only as long as the imports happen in the right order (or hide inside
functions), and every new import can break it; a private name used elsewhere is a helper that
cannot be renamed without reading the whole package. The graph is read from the source with
``ast`` (imports inside functions count: they are part of the circle all the same).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "speechul"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> list[tuple[str, str]]:
    """(imported module, imported name or "") of every import of ``speechul`` code in a file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, "") for a in node.names if a.name.split(".")[0] == "speechul"]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            base = base[: len(base) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            if target.split(".")[0] != "speechul":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.append((sub, "") if sub in known else (target, alias.name))
    return out


def graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (anywhere in the file)."""
    modules = _modules()
    return {name: {target for target, _ in _imports(name, path, set(modules))
                   if target in modules and target != name}
            for name, path in modules.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_cycle_finder_finds_a_cycle():
    """The mechanism can fail: a -> b -> c -> a is found, a -> b alone is not."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_package_modules():
    """The package's own ``__init__`` gathers every module for ``import speechul``, so it is
    left out; sub-packages' ``__init__`` files count like modules."""
    edges = {n: ts - {"speechul"} for n, ts in graph().items() if n != "speechul"}
    assert edges["speechul.datasets"], "the import graph was not read"
    found = cycles(edges)
    assert found == [], f"import cycle(s) among speechul's modules: {found}"


def test_no_private_name_imported_from_another_module():
    """``from .x import _helper`` couples two modules through a name that promises nothing."""
    modules = _modules()
    private = [f"{name} imports {target}.{imported}"
               for name, path in modules.items()
               for target, imported in _imports(name, path, set(modules))
               if imported.startswith("_") and not imported.startswith("__") and target != name]
    assert private == [], "\n".join(private)
