"""Issue 13 item 16: every option of every command explains itself, in one style."""

from __future__ import annotations

import re
import subprocess
import sys

import typer
from typer.core import TyperGroup, TyperOption
from typer.testing import CliRunner

from perseid_jobs.cli.cli import app, register_commands

METAVAR = re.compile(r"^[A-Z][A-Z0-9_]*$")


def commands() -> dict[str, typer.core.TyperCommand]:
    """The command line as Click sees it (Typer builds it on its own copy of Click)."""
    register_commands()
    group = typer.main.get_command(app)
    assert isinstance(group, TyperGroup)
    return dict(group.commands)  # type: ignore[arg-type]


def test_every_option_and_argument_has_help_and_an_uppercase_metavar() -> None:
    found = commands()
    assert {"schedule", "show", "cancel", "wait", "worker", "logs", "jobs"} <= set(found)
    missing = []
    for name, command in found.items():
        assert command.help, f"{name}: no description"
        for param in command.params:
            if getattr(param, "hidden", False):  # kept for old scripts, not shown in --help
                continue
            label = f"{name} {param.opts[0]}"
            if not getattr(param, "help", None):
                missing.append(f"{label}: no help")
            is_flag = isinstance(param, TyperOption) and param.is_flag
            if not is_flag and not METAVAR.match(param.metavar or ""):
                missing.append(f"{label}: metavar {param.metavar!r}")
    assert not missing, "\n".join(missing)


def test_no_help_output_shows_a_type_label_or_a_lowercase_name() -> None:
    top = subprocess.run(
        [sys.executable, "-m", "perseid_jobs", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "<bool>" not in top.stdout and "wait" in top.stdout
    runner = CliRunner()  # in-process: a subprocess per command costs a second each
    for name in ["", *commands()]:
        result = runner.invoke(app, [*([name] if name else []), "--help"], prog_name="perseid-jobs")
        assert result.exit_code == 0, result.output
        text = result.output
        assert "<bool>" not in text, (name, text)
        assert "--help  " in text or "--help " in text
        usage = text.splitlines()[0]
        assert not re.search(r"[{\[][a-z_]+[}\]]", usage), usage  # `{job}`, not `{JOB}`
        options = [x for x in text.splitlines() if x.lstrip().startswith("--")]
        assert options and all(not re.search(r"--[\w-]+ <", x) for x in options), (name, text)
