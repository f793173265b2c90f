"""The task event written straight to JSON is the line the generic formatter writes,
and buffered lines keep their order with every other record."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from leveret import Outcome, TaskContext
from leveret.ops import logs
from leveret.ops.logs import JsonFormatter, TaskLog, configure

text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
contexts = st.builds(
    TaskContext,
    task_id=st.one_of(text, st.just("amqp://user:secret@host/")),
    name=text,
    queue=text,
    attempt=st.integers(1, 10_000),
    redelivered=st.booleans(),
    headers=st.just({}),
)
errors = st.one_of(
    st.none(),
    st.builds(ValueError, text),
    st.builds(RuntimeError, st.just("connect amqp://guest:guest@rabbit:5672/ refused")),
)


@contextmanager
def only(fmt: logs.LogFormat = "json") -> Iterator[io.StringIO]:
    """``configure()`` onto a string, as the only root handler (pytest's set aside)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    configure("INFO", fmt, stream)
    try:
        yield stream
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def generic_line(ctx: TaskContext, outcome: Outcome, error: BaseException | None,
                 duration: float) -> dict[str, Any]:  # fmt: skip
    """What the logging path (a LogRecord through ``JsonFormatter``) writes."""
    extra: dict[str, Any] = {
        "event": "task",
        "outcome": outcome.value,
        "task_id": ctx.task_id,
        "task": ctx.name,
        "queue": ctx.queue,
        "attempt": ctx.attempt,
        "duration_ms": round(duration * 1000, 3),
    }
    if ctx.redelivered:
        extra["redelivered"] = True
    if error is not None:
        extra["error"] = logs.mask(f"{type(error).__name__}: {error}"[:500])
    level = logs._LEVELS[outcome]
    record = logs.task_log.makeRecord(
        "leveret.task", level, __file__, 0, f"task {outcome.value}", (), None, extra=extra
    )
    parsed: dict[str, Any] = json.loads(JsonFormatter().format(record))
    return parsed


@settings(max_examples=300, deadline=None)
@given(
    ctx=contexts,
    outcome=st.sampled_from(list(Outcome)),
    error=errors,
    duration=st.floats(0, 2000, allow_nan=False),
)
def test_the_direct_line_parses_to_the_generic_one(
    ctx: TaskContext,
    outcome: Outcome,
    error: BaseException | None,
    duration: float,
) -> None:
    with only() as captured:
        TaskLog().after_task(ctx, outcome, error, duration)
    lines = captured.getvalue().split("\n")  # not splitlines(): U+0085 is inside a line
    assert len(lines) == 2
    assert lines[1] == ""
    ours = json.loads(lines[0])
    theirs = generic_line(ctx, outcome, error, duration)
    assert ours.pop("ts")[:16] == theirs.pop("ts")[:16]  # written a moment apart
    assert ours == theirs
    assert list(ours) == list(theirs)  # and in the same order
    assert "secret" not in lines[0]
    assert ":guest@" not in lines[0]


def _ctx(n: int) -> TaskContext:
    return TaskContext(task_id=str(n), name="t", queue="q", attempt=1, redelivered=False,
                       headers={})  # fmt: skip


async def test_lines_of_a_loop_turn_are_written_together_and_in_order() -> None:
    task_log = TaskLog()
    with only() as captured:
        task_log.after_task(_ctx(1), Outcome.SUCCEEDED, None, 0.001)
        task_log.after_task(_ctx(2), Outcome.SUCCEEDED, None, 0.001)
        assert captured.getvalue() == ""  # pending until the end of this turn ...
        logging.getLogger("leveret.other").warning("between")  # ... or the next record
        task_log.after_task(_ctx(3), Outcome.RETRIED, None, 0.001)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    lines = [json.loads(line) for line in captured.getvalue().splitlines()]
    assert [line.get("task_id", line["msg"]) for line in lines] == ["1", "2", "between", "3"]


async def test_flush_writes_what_is_pending() -> None:
    with only() as captured:
        TaskLog().after_task(_ctx(7), Outcome.SUCCEEDED, None, 0.001)
        logging.getLogger().handlers[0].flush()
        assert '"task_id": "7"' in captured.getvalue()


def test_text_format_is_unchanged() -> None:
    with only("text") as stream:
        TaskLog().after_task(_ctx(9), Outcome.SUCCEEDED, None, 0.002)
    assert "task succeeded" in stream.getvalue()
    assert "task_id=9" in stream.getvalue()
