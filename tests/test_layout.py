"""The package's shape: no import circle (function-level imports included), data flowing one way."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "prep"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """Every prep module a file imports, wherever the import statement sits."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found |= {n for n in names if n in modules}
    return found


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    graph = {m: imports_of(p, modules) - {m} for m, p in files.items()}
    for m in graph:  # importing a package's module runs the package's __init__ too; ours hold only docstrings
        graph[m] = {d for d in graph[m] if d != "prep"}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (cycle := visit(d)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def test_no_import_circle_anywhere():
    assert find_cycle(import_graph()) is None, " -> ".join(find_cycle(import_graph()))


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_data_flows_one_way():
    """The core knows no executor, no tool and no CLI; the text layer knows neither core nor io."""
    graph = import_graph()
    for module, deps in graph.items():
        if module.startswith(("prep.core", "prep.text", "prep.io")):
            bad = {d for d in deps if d.startswith(("prep.engines", "prep.tools", "prep.cli", "prep.run"))}
            assert not bad, f"{module} reaches up to {bad}"
        if module.startswith("prep.text"):
            assert not {d for d in deps if d.startswith("prep.io")}, module
    assert not any(d.startswith("prep.engines.ray") for d in graph["prep.engines.local.coordinator"])
    for module in [m for m in graph if m.startswith("prep.engines.ray")]:
        assert not any(d.startswith("prep.engines.local") for d in graph[module]), module
