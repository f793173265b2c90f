"""What a publisher in another language may get wrong, and what the worker does with it."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest
from pydantic import BaseModel

from leveret import App, ConfigError, RetryPolicy, Task, TaskContext, Worker
from leveret import message as wire
from leveret.amqp.table import ExactProperties
from tests.support.deadletters import dead_letters
from tests.support.waiting import wait_for
from tests.support.workers import running


class Note(BaseModel):
    text: str


async def publish_raw(
    app: App,
    queue: str,
    body: bytes,
    *,
    task: str,
    message_id: str | None = None,
    **properties: Any,
) -> None:
    """Publish as a foreign service would: plain AMQP, only what the caller gives."""
    connection = await app.connector.get()
    channel = await (await connection.channel(publisher_confirms=True)).get_underlay_channel()
    try:
        await channel.basic_publish(
            body,
            exchange=app.sender.names.tasks_exchange,
            routing_key=queue,
            properties=ExactProperties(message_type=task, message_id=message_id, **properties),
            mandatory=True,
        )
    finally:
        await channel.close()


async def test_a_task_without_message_id_keeps_one_derived_id_through_retries_and_death(  # type: ignore[no-untyped-def]
    make_app,
) -> None:
    app: App = make_app()
    runs: list[tuple[str, int, str]] = []
    policy = RetryPolicy(max_attempts=3, base=0.02, jitter="none")

    @app.task(name="idless", queue="idless", retry=policy)
    async def idless(note: Note, ctx: TaskContext) -> None:
        runs.append((note.text, ctx.attempt, ctx.task_id))
        if note.text == "doomed" or ctx.attempt == 1:
            raise RuntimeError(f"{note.text} attempt {ctx.attempt}")

    async with running(Worker(app)):
        for text in ("first", "second", "doomed"):
            await publish_raw(app, "idless", json.dumps({"text": text}).encode(), task="idless")
        [dead] = await dead_letters(app, "idless", 1)
        await wait_for(lambda: len(runs) == 7)

    ids: dict[str, set[str]] = {}
    for text, _, task_id in runs:
        ids.setdefault(text, set()).add(task_id)
    assert sorted((t, a) for t, a, _ in runs) == [
        ("doomed", 1),
        ("doomed", 2),
        ("doomed", 3),
        ("first", 1),
        ("first", 2),
        ("second", 1),
        ("second", 2),
    ]
    assert all(len(found) == 1 for found in ids.values()), f"one id per task: {ids}"
    assert len({next(iter(found)) for found in ids.values()}) == 3, "each task its own id"
    assert all(len(next(iter(found))) == 32 for found in ids.values())
    assert dead.message_id == next(iter(ids["doomed"])), "the dead letter keeps the id"


async def run_with_attempt_header(app: App, attempt: object) -> tuple[list[int], Any]:
    """Publish one always-failing task carrying ``attempt``; its runs and its dead letter."""
    runs: list[int] = []

    @app.task(name="counted", queue="counted", retry=RetryPolicy(max_attempts=4, base=0.01))
    async def counted(note: Note, ctx: TaskContext) -> None:
        runs.append(ctx.attempt)
        raise RuntimeError("always")

    async with running(Worker(app)):
        headers = {wire.ATTEMPT: attempt}
        await publish_raw(app, "counted", b'{"text": "x"}', task="counted", headers=headers)
        [dead] = await dead_letters(app, "counted", 1)
    return runs, dead


@pytest.mark.parametrize("attempt", [-5, 0, 10**12, "x", 1.5, b"\xff"])
async def test_an_attempt_header_out_of_range_is_malformed_never_extra_runs(  # type: ignore[no-untyped-def]
    make_app, attempt: object
) -> None:
    runs, dead = await run_with_attempt_header(make_app(), attempt)
    assert runs == [], "a malformed attempt header never runs the task"
    assert dead.headers[wire.REASON] == "malformed"
    assert dead.headers[wire.ERROR_TYPE] == "leveret.errors.MalformedMessage"
    assert wire.ATTEMPT in str(dead.headers[wire.ERROR_MESSAGE])


async def test_an_attempt_header_in_range_counts_from_there(make_app) -> None:  # type: ignore[no-untyped-def]
    runs, dead = await run_with_attempt_header(make_app(), "3")
    assert runs == [3, 4]
    assert dead.headers[wire.REASON] == "exhausted"


async def test_a_task_on_the_wrong_queue_is_dead_lettered_as_misrouted(make_app) -> None:  # type: ignore[no-untyped-def]
    app: App = make_app()
    ran: list[str] = []

    @app.task(name="lives.here", queue="here")
    async def lives_here(note: Note) -> None:
        ran.append(f"here:{note.text}")

    @app.task(name="lives.there", queue="there")
    async def lives_there(note: Note) -> None:
        ran.append(f"there:{note.text}")

    async with running(Worker(app)):
        await publish_raw(app, "here", b'{"text": "lost"}', task="lives.there", message_id="m1")
        await app.send(lives_there, Note(text="right"))
        [dead] = await dead_letters(app, "here", 1)
        await wait_for(lambda: ran == ["there:right"])
    assert dead.headers[wire.REASON] == "misrouted"
    assert "'there'" in str(dead.headers[wire.ERROR_MESSAGE])


async def test_send_by_name_refuses_a_queue_other_than_the_contracts(make_app) -> None:  # type: ignore[no-untyped-def]
    app: App = make_app()
    app.add(Task("lives.there", Note, queue="there"))
    with pytest.raises(ConfigError, match="misrouted"):
        await app.send_by_name("lives.there", {"text": "x"}, queue="elsewhere")


async def test_gzip_bodies_run_and_other_encodings_are_malformed(make_app) -> None:  # type: ignore[no-untyped-def]
    app: App = make_app(max_payload_bytes=4096)
    ran: list[str] = []

    @app.task(name="zipped", queue="zipped")
    async def zipped(note: Note) -> None:
        ran.append(note.text)

    bomb = gzip.compress(json.dumps({"text": "x" * 1_000_000}).encode())
    assert len(bomb) < 4096
    async with running(Worker(app)):
        gz = gzip.compress(b'{"text": "unzipped"}')
        await publish_raw(app, "zipped", gz, task="zipped", content_encoding="gzip")
        await publish_raw(
            app, "zipped", b'{"text": "charset"}', task="zipped", content_encoding="utf-8"
        )
        await publish_raw(
            app,
            "zipped",
            b"\x1f\x8b broken",
            task="zipped",
            content_encoding="gzip",
            message_id="b",
        )
        await publish_raw(
            app, "zipped", b"{}", task="zipped", content_encoding="br", message_id="c"
        )
        await publish_raw(
            app, "zipped", bomb, task="zipped", content_encoding="gzip", message_id="d"
        )
        dead = await dead_letters(app, "zipped", 3)
        await wait_for(lambda: len(ran) == 2)
    assert sorted(ran) == ["charset", "unzipped"]
    reasons = {m.message_id: m.headers[wire.REASON] for m in dead}
    assert reasons == {"b": "malformed", "c": "malformed", "d": "oversize"}
    assert next(m for m in dead if m.message_id == "d").body == bomb, "kept as it came"


async def test_a_priority_above_the_queues_maximum_runs_and_is_kept(make_app) -> None:  # type: ignore[no-untyped-def]
    app: App = make_app()
    seen: list[int] = []

    @app.task(name="loud", queue="loud", retry=RetryPolicy(max_attempts=2, base=0.01))
    async def loud(note: Note, ctx: TaskContext) -> None:
        seen.append(ctx.attempt)
        raise RuntimeError("fails both times")

    async with running(Worker(app)):
        await publish_raw(app, "loud", b'{"text": "x"}', task="loud", priority=255)
        [dead] = await dead_letters(app, "loud", 1)
    assert seen == [1, 2]
    assert dead.priority == 255, "retry copies and dead letters keep the priority as sent"
