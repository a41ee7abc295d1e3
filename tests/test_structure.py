"""The package's import graph, read from the source with `ast` (nothing is imported).

The modules form a stack: no import cycles (function-level imports count too); the fp32
export sits below its fp16 and int8 conversions; the deployment smoke test is imported only by
the CLI and by `auto`, which runs it; our Triton backends import nothing of stdr_deploy.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "stdr_deploy"


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (a `from pkg import name` counts as pkg.name
    when that is a module, else as pkg)."""
    modules = module_names()

    def known(name: str) -> str:
        while name not in modules:
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {known(a.name) for a in node.names if a.name.split(".")[0] == "stdr_deploy"}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parent + [base] if base else parent)
                if base.split(".")[0] == "stdr_deploy":
                    found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else known(base) for a in node.names}
        found.discard(name)
        graph[name] = found
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (or a module importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while not group or group[-1] != node:
                group.append(stack.pop())
            if len(group) > 1 or node in graph.get(node, ()):
                found.append(sorted(group))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def reaches(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for other in graph.get(todo.pop(), ()):
            if other not in seen:
                seen.add(other)
                todo.append(other)
    return seen


def test_the_cycle_finder_finds_a_cycle_through_three_modules():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_package_has_no_import_cycles():
    graph = import_graph()
    assert "stdr_deploy.export.fp32" in graph and "stdr_deploy.export.cache" in graph["stdr_deploy.export.fp32"]
    assert cycles(graph) == []


def test_only_the_cli_and_auto_import_the_smoke_test():
    graph = import_graph()
    importers = {name for name, imports in graph.items() if "stdr_deploy.smoke" in imports}
    assert importers and all(name.startswith("stdr_deploy.cli.") or name == "stdr_deploy.auto" for name in importers)


def test_the_fp32_export_sits_below_fp16_and_int8_which_sit_below_runners_and_the_smoke_test():
    graph = import_graph()
    export = {name for name in graph if name.startswith("stdr_deploy.export")}
    above = {"stdr_deploy.precision", "stdr_deploy.quantize", "stdr_deploy.onnx_files"}
    for name in export:
        assert not reaches(graph, name) & above, name
    for name in ("stdr_deploy.precision", "stdr_deploy.quantize"):
        assert not reaches(graph, name) & {"stdr_deploy.runners", "stdr_deploy.smoke", "stdr_deploy.onnx_files"}, name


def test_our_triton_backends_import_nothing_of_the_package():
    graph = import_graph()
    backends = [name for name in graph if name.startswith("stdr_deploy.backends.")]
    assert len(backends) >= 3 and all(not graph[name] for name in backends)
