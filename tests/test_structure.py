"""Size and shape of the package: modules under 400 lines, functions under 60, no CLI import
cycle, and the task side (launch/, logs/) clear of Redis. The chaos tests keep the same sizes.

Read from the sources (ast), not by importing them.
"""

from __future__ import annotations

import ast
from pathlib import Path

from .conftest import ROOT

PACKAGE = ROOT / "perseid_jobs"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


CHAOS = ROOT / "tests" / "chaos"


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def sized() -> list[Path]:
    """What the size limits hold: the package and the chaos tests."""
    return modules() + sorted(CHAOS.rglob("*.py"))


def test_every_module_is_at_most_400_lines() -> None:
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in sized()}
    over = {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES}
    assert over == {}
    assert "tests/chaos/test_worker_kills.py" in sizes


def test_every_function_is_at_most_60_lines() -> None:
    over = {}
    for path in sized():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    over[f"{path.relative_to(ROOT)}:{node.name}"] = lines
    assert over == {}


def module_name(path: Path) -> str:
    """``perseid_jobs/worker/claiming.py`` -> ``perseid_jobs.worker.claiming``."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in it (functions and TYPE_CHECKING included).

    Relative imports resolved to full names; ``from X import y`` counts as X and, if y is
    a module of the package, X.y too. Of the package's own ``__init__`` only what it imports
    at import time counts: its ``__getattr__`` imports the client lazily, on first use.
    """
    name = module_name(path)
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    nodes = tree.body if name == "perseid_jobs" else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            for alias in node.names:
                sub = ROOT.joinpath(*target.split("."), alias.name)
                if sub.with_suffix(".py").exists() or sub.is_dir():
                    found.add(f"{target}.{alias.name}")
    return found


def graph() -> dict[str, set[str]]:
    """The package's modules and what each imports (package modules and outside ones)."""
    return {module_name(p): imports(p) for p in modules()}


def reached(start: set[str], edges: dict[str, set[str]]) -> dict[str, tuple[str, ...]]:
    """Every module imported from ``start``, transitively through the package: its path."""
    paths = {m: (m,) for m in start}
    todo = sorted(start)
    while todo:
        here = todo.pop()
        for dep in sorted(edges.get(here, set())):
            for parent in _parents(dep):  # importing a.b.c runs a/__init__, a/b/__init__ too
                if parent not in paths:
                    paths[parent] = (*paths[here], parent)
                    if parent in edges:
                        todo.append(parent)
    return paths


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def test_the_task_side_imports_neither_the_store_nor_redis() -> None:
    """The warm parent and its task processes (launch/, logs/) never import Redis code.

    So a job that does not use Redis pays nothing for it, and the zygote stays small.
    """
    edges = graph()
    start = {m for m in edges if m.startswith(("perseid_jobs.launch.", "perseid_jobs.logs."))}
    assert "perseid_jobs.launch.zygote" in start and "perseid_jobs.logs.tasklog" in start
    bad = {
        m: " -> ".join(path)
        for m, path in reached(start, edges).items()
        if m == "redis" or m.startswith(("redis.", "perseid_jobs.store"))
    }
    assert bad == {}


def test_the_subpackages_init_files_are_empty() -> None:
    inits = [p for p in PACKAGE.glob("*/__init__.py")]
    assert len(inits) == 7
    assert {str(p.relative_to(PACKAGE)): p.read_text() for p in inits if p.read_text()} == {}


def test_the_command_line_modules_import_no_cycle() -> None:
    edges = graph()
    cli = {m for m in edges if m.startswith("perseid_jobs.cli.") and not m.endswith("__init__")}
    among = {m: {d for d in edges[m] if d in cli} for m in cli}
    seen: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import cycle: {' -> '.join((*path, name))}"
        if name not in seen:
            for dep in sorted(among[name]):
                visit(dep, (*path, name))
            seen.append(name)

    for name in sorted(among):
        visit(name, ())
    commands = {m for m in cli if m.rpartition(".")[2].startswith("cli")}
    assert among["perseid_jobs.cli.cli_common"] & commands == set(), "cli_common imports no command"
