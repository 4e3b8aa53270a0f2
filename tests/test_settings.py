"""The one table of worker settings: the Struct's checks, the early start's reading, the chart.

``perseid_jobs.worker.settings.SETTINGS`` is where every worker setting's option, variable,
default and check are written; these tests hold the other places to it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from perseid_jobs.core.errors import ConfigError
from perseid_jobs.worker.settings import BY_FIELD, SETTINGS, WorkerSettings, given, worker_argv

from .conftest import JOBS, ROOT

CHART = ROOT / "helm" / "perseid-jobs"
READ_BY_THE_S3_CLIENT = {"AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


def chart_env_names() -> list[str]:
    """The variables the chart's worker containers get (its ``perseid-jobs.env`` template)."""
    tpl = (CHART / "templates" / "_helpers.tpl").read_text()
    m = re.search(r'define "perseid-jobs\.env".*?\{\{- end \}\}\s*$', tpl, re.DOTALL)
    assert m, "_helpers.tpl has no perseid-jobs.env template"
    return re.findall(r"^- name: (\w+)$", m[0], re.MULTILINE)


def test_the_chart_sets_only_variables_of_the_settings_table() -> None:
    envs = {s.env for s in SETTINGS}
    names = chart_env_names()
    assert len(names) >= 10, names
    assert [n for n in names if n not in envs | READ_BY_THE_S3_CLIENT] == []


def test_the_deploy_doc_lists_each_variable_the_chart_sets_with_its_option() -> None:
    doc = (ROOT / "docs" / "deploy.md").read_text()
    m = re.search(r"<!-- chart-env[^>]*-->\n(.*?)\n<!-- end chart-env -->", doc, re.DOTALL)
    assert m, "docs/deploy.md has no chart-env table"
    rows = [re.findall(r"`([^`]+)`", line) for line in m[1].splitlines()[2:]]
    by_env = {s.env: s for s in SETTINGS}
    documented = {}
    for *_values, env, option in rows:
        assert env in by_env, f"{env} is not a worker setting's variable"
        assert by_env[env].option == option, f"{env} is the variable of {by_env[env].option}"
        documented[env] = option
    assert sorted(documented) == sorted(set(chart_env_names()) - READ_BY_THE_S3_CLIENT)


def test_every_variable_the_chart_and_its_docs_name_is_one_of_the_table() -> None:
    envs = {s.env for s in SETTINGS}
    texts = {
        "docs/deploy.md": (ROOT / "docs" / "deploy.md").read_text(),
        "values.yaml": (CHART / "values.yaml").read_text(),
        "values.schema.json": (CHART / "values.schema.json").read_text(),
    }
    for name, text in texts.items():
        unknown = set(re.findall(r"\bPERSEID_[A-Z_]+\b", text)) - envs
        assert not unknown, (
            f"{name} names {sorted(unknown)}, not in perseid_jobs/worker/settings.py"
        )


ENV_NAME = r"\b(?:PERSEID|AWS)_[A-Z_]+\b"


def chart_env_sources() -> dict[str, set[str]]:
    """Each variable the chart sets, and the values it is made from (dotted paths).

    Read from the ``perseid-jobs.env`` template: ``$root.Values.a.b`` is ``a.b``; a
    pool's ``$pool.x`` is ``pools[].x`` or ``poolDefaults.x``; ``.x`` inside
    ``with $root.Values.a`` is ``a.x``.
    """
    tpl = (CHART / "templates" / "_helpers.tpl").read_text()
    m = re.search(r'define "perseid-jobs\.env".*?\{\{- end \}\}\s*$', tpl, re.DOTALL)
    assert m, "_helpers.tpl has no perseid-jobs.env template"
    sources: dict[str, set[str]] = {}
    within: list[str] = []  # the paths of the enclosing with/if blocks ("" for an if)
    env = None
    for line in m[0].splitlines():
        if opened := re.search(r"\{\{-? (with|if) (.*?) -?\}\}", line):
            found = re.search(r"\$root\.Values\.([\w.]+)", opened[2])
            within.append(found[1] if opened[1] == "with" and found else "")
            continue
        if re.search(r"\{\{-? end -?\}\}", line):
            if within:
                within.pop()
            continue
        if named := re.match(r"^- name: (\w+)$", line):
            env = named[1]
            sources[env] = set()
            continue
        if env is None or not line.startswith(" "):
            env = None
            continue
        paths = re.findall(r"\$root\.Values\.([\w.]+)", line)
        paths += [p for x in re.findall(r"\$pool\.(\w+)", line)
                  for p in (f"pools[].{x}", f"poolDefaults.{x}")]  # fmt: skip
        context = next((w for w in reversed(within) if w), "")
        for field in re.findall(r"\{\{ \.(\w*)", line):
            paths.append(f"{context}.{field}" if field else context)
        sources[env].update(paths)
    return sources


def values_comments() -> dict[str, str]:
    """Each key of values.yaml (dotted path, ``[]`` for a list item) and the comment above it."""
    comments: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    above: list[str] = []
    for line in (CHART / "values.yaml").read_text().splitlines():
        if line.lstrip().startswith("#"):
            above.append(line.strip().lstrip("#").strip())
            continue
        m = re.match(r"^(\s*)(- )?([A-Za-z_]\w*):", line)
        if not m:
            above = []
            continue
        indent = len(m[1])
        if m[2]:  # "- key:" opens a list item of the key above
            stack = [(i, k) for i, k in stack if i < indent]
            stack.append((indent, "[]"))
            indent += 2
        stack = [(i, k) for i, k in stack if i < indent]
        stack.append((indent, m[3]))
        path = ".".join(k for _, k in stack).replace(".[]", "[]")
        comments[path] = " ".join(above)
        above = []
    return comments


def test_each_values_comment_names_the_variable_its_value_sets() -> None:
    sources = chart_env_sources()
    assert sources["PERSEID_REDIS_URL"] == {"redis.existingSecret", "redis.urlKey"}
    assert "pools[].slots" in sources["PERSEID_SLOTS"]
    assert sources["AWS_REGION"] == {"bucket.region"}
    comments = values_comments()

    def said(path: str) -> str:
        """A key's comment, and those of the blocks it is in."""
        parts = path.replace("[]", ".[]").split(".")
        heads = [".".join(parts[:i]).replace(".[]", "[]") for i in range(1, len(parts) + 1)]
        return " ".join(comments.get(h, "") for h in heads)

    def names(env: str, path: str) -> bool:
        return re.search(rf"\bsets\b.*\b{env}\b", said(path), re.IGNORECASE) is not None

    unnamed = {env for env, paths in sources.items() if not any(names(env, p) for p in paths)}
    assert unnamed == set(), "values.yaml: say which variable each value sets"
    # And no comment names a variable its key (or a key under it) does not set.
    wrong = {
        (path, env)
        for path, text in comments.items()
        for env in re.findall(ENV_NAME, text)
        if not any(p == path or p.startswith((f"{path}.", f"{path}[]")) for p in sources[env])
    }
    assert wrong == set()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"slots": 0}, "slots 0: an instance must offer at least 1 slot"),
        ({"jobs_dir": Path("/nonexistent/jobs")}, "'/nonexistent/jobs' does not exist"),
        ({"namespace": "a{b}"}, "invalid namespace 'a{b}'"),
        ({"heartbeat_s": 5, "lease_ttl_s": 5}, "lease_ttl_s must be longer than heartbeat_s"),
        ({"kill_grace_s": -1}, "kill_grace_s -1: a duration is a finite number of seconds"),
        ({"jobs_rescan_s": 0.01}, "jobs_rescan_s 0.01: rescan at most every 0.1s"),
    ],
)
def test_settings_built_in_python_are_checked_as_the_command_line_checks_them(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        WorkerSettings(**{"slots": 1, "jobs_dir": JOBS, **fields})


def test_each_default_reads_back_from_its_command_line_text() -> None:
    settings = WorkerSettings(slots=1, jobs_dir=JOBS)
    for s in SETTINGS:
        if s.in_struct and s.default is not None:
            assert s.field == "jobs_dir" or getattr(settings, s.field) == s.default
            parsed = s.parse(s.cli_type(s.cli_default), s.option)
            assert parsed == (s.default.resolve() if isinstance(s.default, Path) else s.default)
    assert BY_FIELD["jobs_rescan_s"].parse("0", "--jobs-rescan") == 0


def test_worker_argv_gives_each_setting_as_the_command_line_reads_it() -> None:
    settings = WorkerSettings(
        slots=3, jobs_dir=JOBS, heartbeat_s=0.2, lease_ttl_s=1, jobs_rescan_s=0,
        instance_id="i-1", metrics_port=9000,
    )  # fmt: skip
    args = worker_argv(settings)[4:]  # after: python -m perseid_jobs worker
    for s in SETTINGS:
        if s.in_struct and (text := given(args, s.field)) is not None:
            value = s.parse(s.cli_type(text), s.option)
            assert value == getattr(settings, s.field) or s.field in ("jobs_dir", "logs_dir")


def test_the_early_start_reads_an_option_else_its_variable_else_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PERSEID_JOBS_DIR", raising=False)
    assert given([], "jobs_dir") == "jobs"
    monkeypatch.setenv("PERSEID_JOBS_DIR", "/from/env")
    assert given([], "jobs_dir") == "/from/env"
    assert given(["--jobs", "/a", "--jobs=/b"], "jobs_dir") == "/b"
    monkeypatch.delenv("PERSEID_SLOTS", raising=False)
    assert given(["--jobs", "/a"], "slots") is None
