"""Size and shape of the package: modules under 400 lines, functions under 60, no CLI import cycle.

Read from the sources (ast), not by importing them.
"""

from __future__ import annotations

import ast
from pathlib import Path

from .conftest import ROOT

PACKAGE = ROOT / "perseid_jobs"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_module_is_at_most_400_lines() -> None:
    sizes = {str(p.relative_to(PACKAGE)): len(p.read_text().splitlines()) for p in modules()}
    over = {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES}
    assert over == {}


def test_every_function_is_at_most_60_lines() -> None:
    over = {}
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    over[f"{path.relative_to(PACKAGE)}:{node.name}"] = lines
    assert over == {}


def local_imports(path: Path) -> set[str]:
    """The package's modules that ``path`` imports, anywhere in it (functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
    return found


def test_the_command_line_modules_import_no_cycle() -> None:
    cli = {p.stem: local_imports(p) for p in PACKAGE.glob("cli*.py") if p.stem != "client"}
    graph = {name: {m for m in imports if m in cli} for name, imports in cli.items()}
    seen: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import cycle: {' -> '.join((*path, name))}"
        if name not in seen:
            for dep in graph[name]:
                visit(dep, (*path, name))
            seen.append(name)

    for name in graph:
        visit(name, ())
    assert graph["cli_common"] == set(), "cli_common imports no other command-line module"
