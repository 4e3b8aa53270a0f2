"""The task log, written from a real forked task process."""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from perseid_jobs.logs.tasklog import DEFAULT_MAX_LOG_BYTES, MAX_LINE_BYTES, TaskLog, TaskOutput

STARTED_AT_MS = 1_700_000_000_000


def run_in_child(
    path: Path, body: Callable[[TaskLog], None], timeout: float = 20.0, max_bytes: int | None = None
) -> tuple[int, int]:
    """Run ``body`` in a forked process as the zygote runs a task; return (pid, exit code).

    This process plays the zygote: it prepares the log and the pipes, reads the
    pipes while the task runs, and completes the log once it has ended.
    """
    output = TaskOutput(
        path,
        task_id="01HTASK",
        job="etl",
        max_bytes=DEFAULT_MAX_LOG_BYTES if max_bytes is None else max_bytes,
    )
    with warnings.catch_warnings():
        # Python 3.12+ warns when forking a process with threads (a test S3 server
        # may still be winding down); the child here only runs `body` and exits.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        code = 1
        try:
            log = TaskLog.prepare(output)
            log.begin(started_at_ms=STARTED_AT_MS, attempt=2)
            body(log)
            log.close()
            code = 0
        finally:
            os._exit(code)
    output.attach(pid)
    poller = select.poll()
    for fd in output.fds:
        poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for fd, _ in poller.poll(10):
            if not output.read(fd):
                poller.unregister(fd)
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            output.finish()
            return pid, os.waitstatus_to_exitcode(status)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    output.finish()
    raise AssertionError(f"task process still running after {timeout}s")


def read_lines(path: Path) -> list[dict[str, Any]]:
    lines = path.read_bytes().splitlines()
    docs = [orjson.loads(line) for line in lines]
    assert all(isinstance(doc, dict) for doc in docs)
    return docs


def only(docs: list[dict[str, Any]], msg: str) -> dict[str, Any]:
    found = [doc for doc in docs if doc["msg"] == msg]
    assert len(found) == 1, f"{msg!r} appears {len(found)} times in {docs}"
    return found[0]


def test_records_prints_and_subprocess_output_become_pino_lines(tmp_path: Path) -> None:
    path = tmp_path / "01HTASK.log"

    def task(log: TaskLog) -> None:
        log.logger.info("loaded", extra={"batch": 3, "rows": [1, 2]})
        log.logger.debug("too chatty")
        logging.getLogger("job.module").warning("from the job's own logger")
        print("printed line")
        os.write(2, b"raw stderr\n")
        subprocess.run(["sh", "-c", "echo hi; echo err >&2"], check=True)
        try:
            raise ValueError("boom")
        except ValueError as exc:
            log.logger.error("task raised", exc_info=exc)

    pid, code = run_in_child(path, task)
    assert code == 0, path.read_text()
    docs = read_lines(path)
    before = int(time.time() * 1000) - 60_000
    for doc in docs:
        assert list(doc)[:7] == ["level", "time", "pid", "hostname", "msg", "task", "job"]
        assert doc["time"] > before and doc["pid"] == pid
        assert doc["hostname"] == socket.gethostname()
        assert (doc["task"], doc["job"]) == ("01HTASK", "etl")
    first = docs[0]
    assert (first["msg"], first["level"], first["startedAt"], first["attempt"]) == (
        "task started",
        30,
        STARTED_AT_MS,
        2,
    )
    loaded = only(docs, "loaded")
    assert (loaded["level"], loaded["batch"], loaded["rows"]) == (30, 3, [1, 2])
    assert "stream" not in loaded
    assert only(docs, "from the job's own logger")["level"] == 40
    assert not [doc for doc in docs if doc["msg"] == "too chatty"]
    for msg, level, stream in [
        ("printed line", 30, "stdout"),
        ("raw stderr", 50, "stderr"),
        ("hi", 30, "stdout"),
        ("err", 50, "stderr"),
    ]:
        doc = only(docs, msg)
        assert (doc["level"], doc["stream"]) == (level, stream), doc
    raised = only(docs, "task raised")
    assert raised["level"] == 50
    assert (raised["err"]["type"], raised["err"]["message"]) == ("ValueError", "boom")
    assert raised["err"]["stack"].startswith("Traceback (most recent call last):")
    assert 'raise ValueError("boom")' in raised["err"]["stack"]


def test_unserialisable_extras_are_stringified(tmp_path: Path) -> None:
    path = tmp_path / "t.log"

    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no")

    def task(log: TaskLog) -> None:
        loop: list[Any] = []
        loop.append(loop)
        extra = {"big": 2**70, "loop": loop, "odd": Unprintable(), "when": object(), "msg": "x"}
        log.logger.info("strange extras", extra={k: v for k, v in extra.items() if k != "msg"})
        log.logger.info("forged core field", extra={"task": "someone else"})

    assert run_in_child(path, task)[1] == 0, path.read_text()
    docs = read_lines(path)
    strange = only(docs, "strange extras")
    assert strange["big"] == str(2**70)
    assert strange["loop"] == "[[...]]"
    assert "Unprintable object" in strange["odd"]
    assert strange["when"].startswith("<object object")
    assert only(docs, "forged core field")["task"] == "01HTASK"


def test_flooding_stdout_is_capped_and_never_blocks(tmp_path: Path) -> None:
    path = tmp_path / "flood.log"
    cap = 1024 * 1024
    line = "x" * 999

    def task(log: TaskLog) -> None:
        for _ in range(50_000):  # 50 MB through print()
            print(line)
        os.write(1, b"y" * (1024 * 1024) + b"\n")

    started = time.monotonic()
    assert run_in_child(path, task, timeout=30, max_bytes=cap)[1] == 0
    assert time.monotonic() - started < 30
    raw = path.read_bytes()
    docs = read_lines(path)
    last = docs[-1]
    assert last["level"] == 40
    assert last["msg"] == f"log truncated at {cap} bytes; further output discarded"
    last_line_size = len(raw.splitlines(keepends=True)[-1])
    assert cap - 1100 < len(raw) - last_line_size <= cap
    assert all(doc["msg"] == line for doc in docs[1:-1])


def test_the_cap_holds_across_records_and_captured_output(tmp_path: Path) -> None:
    path = tmp_path / "both.log"
    cap = 256 * 1024

    def task(log: TaskLog) -> None:
        for i in range(5_000):  # records from the task, output through the zygote's pipe
            log.logger.info("record %d", i, extra={"pad": "r" * 200})
            print("p" * 200)
        log.logger.info("after the flood")

    assert run_in_child(path, task, timeout=30, max_bytes=cap)[1] == 0
    raw = path.read_bytes()
    docs = read_lines(path)
    truncations = [doc for doc in docs if doc["msg"].startswith("log truncated")]
    assert len(truncations) == 1 and truncations[0]["level"] == 40
    assert docs[-1] == truncations[0]
    assert len(raw) - len(raw.splitlines(keepends=True)[-1]) <= cap
    assert {doc.get("stream") for doc in docs[1:-1]} == {None, "stdout"}


def test_long_output_without_newline_is_split_at_character_boundaries(tmp_path: Path) -> None:
    path = tmp_path / "long.log"
    text = "é" * 100_000 + "z" * 3  # 200,003 bytes, no newline at all

    def task(log: TaskLog) -> None:
        sys.stdout.write(text)

    assert run_in_child(path, task)[1] == 0
    pieces = [doc["msg"] for doc in read_lines(path)[1:]]
    assert len(pieces) == 4
    assert all(len(piece.encode()) <= MAX_LINE_BYTES for piece in pieces)
    assert "".join(pieces) == text


def test_a_background_process_holding_stdout_delays_neither_the_task_nor_its_log(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bg.log"
    elapsed = tmp_path / "elapsed"
    background_pid = tmp_path / "background.pid"

    def task(log: TaskLog) -> None:
        # Its own session, as a daemon would: the zygote's kill of the task's group misses it.
        background = subprocess.Popen(
            ["sh", "-c", "echo early; exec sleep 30"], start_new_session=True
        )
        background_pid.write_text(str(background.pid))
        time.sleep(0.2)
        started = time.monotonic()
        log.close()
        elapsed.write_text(str(time.monotonic() - started))

    started = time.monotonic()
    try:
        assert run_in_child(path, task)[1] == 0, path.read_text()
        assert time.monotonic() - started < 5
    finally:
        os.kill(int(background_pid.read_text()), signal.SIGKILL)
    assert float(elapsed.read_text()) < 0.5
    docs = read_lines(path)
    assert only(docs, "early")["stream"] == "stdout"
    assert docs[-1]["level"] == 40
    assert "still holds stdout/stderr" in docs[-1]["msg"]


def test_a_new_log_never_writes_into_a_file_an_earlier_attempt_left_linked(
    tmp_path: Path,
) -> None:
    path = tmp_path / "01HTASK.log"
    run_in_child(path, lambda log: print("first attempt"))
    uploaded = tmp_path / "bucket-copy.log"
    os.link(path, uploaded)  # what a directory bucket on the same filesystem holds
    first = uploaded.read_bytes()
    run_in_child(path, lambda log: print("second attempt"))
    assert uploaded.read_bytes() == first
    assert [doc["msg"] for doc in read_lines(path)][-1] == "second attempt"
