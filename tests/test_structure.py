"""The package's shape, read from its source with ``ast``: the layers import one way (the
library never imports a verb or the command line) and no module imports itself back
through others, counting imports inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "posefix"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, tuple[ast.Module, str]]:
    """Module name -> (its syntax tree, the package its relative imports start from)."""
    out = {}
    for p in sorted(PACKAGE.rglob("*.py")):
        name = _module_name(p)
        package = name if p.name == "__init__.py" else name.rpartition(".")[0]
        out[name] = (ast.parse(p.read_text(), str(p)), package)
    return out


def _imports(name: str, tree: ast.Module, package: str, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports anywhere (also inside functions)."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            targets = [f"{stem}.{a.name}" for a in node.names] + [stem]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name and t != "posefix":
                out.add(t)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, tree, package, known)
            for name, (tree, package) in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle, as the modules along it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        state[m] = 2
        path.pop()
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_the_import_graph_is_read() -> None:
    graph = _graph()
    assert "posefix.diagnosis" in graph["posefix.comparison"]  # a top-level import
    assert "posefix.report" in graph["posefix.commands.analyze"]  # one inside a function
    assert "posefix.commands.evaluate" in graph["posefix.commands.analyze"]  # a sibling
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circle() -> None:
    assert _cycle(_graph()) is None


def test_the_library_never_imports_a_verb_or_the_command_line() -> None:
    upward = {m: sorted(n for n in deps if n.startswith(("posefix.commands", "posefix.cli")))
              for m, deps in _graph().items()
              if not m.startswith(("posefix.commands", "posefix.cli", "posefix.__main__"))}
    assert {m: d for m, d in upward.items() if d} == {}
