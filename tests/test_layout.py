"""The package's layout rules (issue 22), checked by walking every module's imports:

- no import circle between embgemma's modules (imports inside functions count too: a circle hidden
  in a function is still two modules that each need the other; imports under ``if TYPE_CHECKING:``,
  for annotations only, do not);
- no module uses another module's private names (``from .model import _x``, ``model._x``): what is
  shared has a public name in one home;
- no Python module over 700 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "embgemma"
MAX_LINES = 700


def _modules() -> dict[str, Path]:
    """Dotted name -> file, for every .py file of the package (a package is named by its __init__.py)."""
    out = {}
    for f in sorted(PKG.rglob("*.py")):
        parts = list(f.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = f
    return out


MODULES = _modules()
EXTENSIONS = {"embgemma._core"}  # compiled: imports nothing of the package


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    if level == 0:
        return name or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _known(name: str) -> str | None:
    """The package module an import name refers to (the longest known prefix), else None."""
    while name:
        if name in MODULES or name in EXTENSIONS:
            return name
        name = name.rpartition(".")[0]
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(module: str) -> tuple[set[str], list[str]]:
    """(modules of the package this one imports, private names it takes from other modules)."""
    f = MODULES[module]
    tree = ast.parse(f.read_text(encoding="utf-8"), str(f))
    is_package = f.name == "__init__.py"
    deps: set[str] = set()
    private: list[str] = []
    aliases: dict[str, str] = {}  # local name -> package module it is bound to
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and _is_type_checking(block.test)
                   for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            for a in node.names:
                target = _known(a.name)
                if target:
                    deps.add(target)
                    aliases[a.asname or a.name.split(".")[0]] = target if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            src = _resolve(module, is_package, node.level, node.module)
            target = _known(src)
            if not target:
                continue
            for a in node.names:
                sub = f"{src}.{a.name}"
                if sub in MODULES or sub in EXTENSIONS:  # a submodule, imported by name
                    deps.add(sub)
                    aliases[a.asname or a.name] = sub
                    continue
                deps.add(target)
                if a.name.startswith("_") and not a.name.startswith("__"):
                    private.append(f"line {node.lineno}: from {src} import {a.name}")
    for node in ast.walk(tree):  # module._name through an alias bound above
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.attr.startswith("_")
                and not node.attr.startswith("__") and node.value.id in aliases):
            private.append(f"line {node.lineno}: {node.value.id}.{node.attr} ({aliases[node.value.id]})")
    deps.discard(module)
    return deps, private


GRAPH = {m: _imports(m) for m in MODULES}


def test_no_import_circle():
    edges = {m: {d for d in GRAPH[m][0] if d in MODULES} for m in MODULES}
    # a submodule importing its own package's __init__ (e.g. `import embgemma` for __version__) is a
    # circle with the __init__ that imports it: count it like any other edge
    state: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(edges[m]):
            if state.get(d) == 1:
                circles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(MODULES):
        if m not in state:
            visit(m)
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)


def test_no_private_names_across_modules():
    found = [f"{m}: {p}" for m in MODULES for p in GRAPH[m][1]]
    assert not found, "private names used across modules (give them a public name in one home):\n" + "\n".join(found)


def test_no_module_over_700_lines():
    long = {m: n for m, f in MODULES.items() if (n := len(f.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"
