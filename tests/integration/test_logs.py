"""Logs: one structured event per task outcome, JSON off a terminal, no credentials."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import signal
from collections.abc import Callable
from pathlib import Path

from leveret import App, Outcome, TaskContext
from leveret.ops.logs import JsonFormatter, TaskLog, TextFormatter, configure, mask
from tests.apps.ops_app import chatty, fail, slow
from tests.support.models import Sleep
from tests.support.ops import events, start_ops_worker
from tests.support.processes import Output
from tests.support.waiting import wait_for
from tests.support.workers import Spawn


async def run_workload(
    make_app: Callable[..., App], spawn: Spawn, tmp_path: Path, *args: str
) -> tuple[Output, dict[str, str]]:
    path = tmp_path / "ledger"
    proc, output, _ = await start_ops_worker(spawn, path, *args)
    app = make_app()
    for task in (slow, fail, chatty):
        app.add(task)
    ids = {
        "ok1": await app.send(slow, Sleep(seconds=0)),
        "ok2": await app.send(slow, Sleep(seconds=0.05)),
        "fail": await app.send(fail, Sleep(seconds=0)),
        "chatty": await app.send(chatty, Sleep(seconds=0)),
    }
    await wait_for(lambda: events(path)["done"] == 3 and events(path)["start"] == 3)
    await wait_for(lambda: sum(ids["fail"] in line for line in output.lines) >= 2)
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 30) == 0, output.text
    output.join()
    return output, ids


async def test_one_json_event_per_task_outcome(
    make_app: Callable[..., App], spawn_worker: Spawn, tmp_path: Path
) -> None:
    output, ids = await run_workload(make_app, spawn_worker, tmp_path)
    assert all(line.startswith("{") for line in output.lines), "every line is a JSON record"
    records = output.records()
    outcomes = {r["task_id"]: r for r in records if r.get("event") == "task"}
    assert len([r for r in records if r.get("event") == "task"]) == 4, "one per task attempt"
    for key in ("ok1", "ok2", "chatty"):
        event = outcomes[ids[key]]
        assert event["outcome"] == "succeeded"
        assert event["level"] == "info"
        assert event["queue"] == "ops"
        assert event["attempt"] == 1
        assert event["duration_ms"] >= 0
        assert event["logger"] == "leveret.task"
    assert outcomes[ids["ok2"]]["task"] == "ops.slow"
    # uvloop's timers run on a millisecond clock read once per loop turn, so a 50 ms
    # sleep may measure a little shorter on the real clock.
    assert outcomes[ids["ok2"]]["duration_ms"] >= 45
    failed = outcomes[ids["fail"]]
    assert failed["outcome"] == "failed-permanently"
    assert failed["level"] == "warning"
    assert failed["error"] == "Permanent: this task can never succeed"
    # What the engine and the handler log while a task runs carries the task's fields.
    engine = [
        r for r in records if r["logger"] == "leveret.delivery" and "dead-lettered" in r["msg"]
    ]
    assert engine[0]["task_id"] == ids["fail"]
    handler = next(r for r in records if r["logger"] == "ops.chatty")
    assert handler["task_id"] == ids["chatty"]
    assert handler["task"] == "ops.chatty"
    assert "hunter2" not in output.text
    assert "reporter:***@reports.example.com" in handler["msg"]


async def test_text_format_for_people(
    make_app: Callable[..., App], spawn_worker: Spawn, tmp_path: Path
) -> None:
    output, ids = await run_workload(make_app, spawn_worker, tmp_path, "--log-format", "text")
    assert not output.records()
    line = next(line for line in output.lines if ids["ok1"] in line and "succeeded" in line)
    assert " INFO " in line
    assert "task=ops.slow" in line
    assert "queue=ops" in line
    assert "hunter2" not in output.text


def test_mask_hides_passwords_only() -> None:
    assert mask("amqp://guest:guest@rabbit:5672/") == "amqp://guest:***@rabbit:5672/"
    assert mask("amqps://u:p%40ss@h/vhost and more") == "amqps://u:***@h/vhost and more"
    assert mask("see https://example.com/a@b") == "see https://example.com/a@b"
    assert mask("mail me: a@b.c") == "mail me: a@b.c"
    assert mask("amqp://guest@rabbit/") == "amqp://guest@rabbit/"
    assert mask("http://example.com:8080/a@b") == "http://example.com:8080/a@b"


def test_formatters_mask_exceptions_and_extras() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    try:
        configure("INFO", "json", stream)
        log = logging.getLogger("leveret.test")
        try:
            raise ConnectionError("cannot reach amqp://admin:s3cret@db:5672/")
        except ConnectionError:
            log.exception("failed", extra={"queue": "q"})
        text = stream.getvalue()
        assert "s3cret" not in text
        assert '"queue": "q"' in text
        assert isinstance(root.handlers[0].formatter, JsonFormatter)
        configure("INFO", "text", stream)
        assert isinstance(root.handlers[0].formatter, TextFormatter)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_direct_task_events_match_the_logging_path() -> None:
    """TaskLog writes straight to the handler when only it would see the event: the
    line must be the one logging would have produced."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    ctx = TaskContext(task_id="id1", name="t.x", queue="q", attempt=2, redelivered=True, headers={})
    try:
        for fmt in ("json", "text"):
            lines = []
            for direct in (True, False):
                stream = io.StringIO()
                configure("INFO", fmt, stream)  # type: ignore[arg-type]
                if not direct:  # any filter on the way forces the logging path
                    logging.getLogger("leveret.task").addFilter(lambda record: True)
                error = ConnectionError("amqp://u:pw@h/ refused")
                TaskLog().after_task(ctx, Outcome.RETRIED, error, 0.0123)
                logging.getLogger("leveret.task").filters.clear()
                lines.append(stream.getvalue())
            if fmt == "json":
                direct_line, logged_line = (json.loads(line) for line in lines)
                direct_line.pop("ts"), logged_line.pop("ts")
                assert direct_line == logged_line
                assert direct_line["error"] == "ConnectionError: amqp://u:***@h/ refused"
                assert direct_line["redelivered"] is True
            else:
                assert lines[0][12:] == lines[1][12:]  # all but the clock
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
