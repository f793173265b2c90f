"""Dead-letter operations through the Python API, against a real RabbitMQ."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from leveret import App, Outcome, Permanent, RetryPolicy, Task, TaskContext, Worker, message
from leveret.deadletter import DeadLetters
from leveret.deadletter.codec import ExactProperties
from leveret.errors import ConfigError, QueueNotFound
from tests.support.amqp import delete_namespace, fill, ids_in, peek, queue_size
from tests.support.deadletters import dead_letter
from tests.support.models import Job
from tests.support.waiting import wait_for
from tests.support.workers import running


class SmtpDown(Exception):
    pass


FAST_RETRY = RetryPolicy(max_attempts=2, base=0.02, cap=0.05)


def failing_app(make_app: Callable[..., App], *, retry: RetryPolicy = FAST_RETRY) -> App:
    """An app whose tasks fail: odd numbers with SmtpDown, even ones permanently."""
    app = make_app()
    job = Task("jobs.run", Job, queue="jobs")

    @app.handle(job, retry=retry)
    async def run(payload: Job, ctx: TaskContext) -> None:
        if payload.n % 2:
            raise SmtpDown(f"smtp down for {payload.n}")
        raise Permanent(f"bad input {payload.n}")

    app.state_job = job  # type: ignore[attr-defined]
    return app


def dead_count(worker: Worker, expected: int | None = None) -> Any:
    """Tasks the worker dead-lettered (or whether that is ``expected``)."""
    count = worker.counts[Outcome.DEAD_LETTERED] + worker.counts[Outcome.FAILED_PERMANENTLY]
    return count if expected is None else count == expected


async def produce_dead_letters(app: App, count: int) -> list[str]:
    job: Task[Job] = app.state_job  # type: ignore[attr-defined]
    worker = Worker(app, concurrency=8)
    async with running(worker):
        ids = [await app.send(job, Job(n=i)) for i in range(count)]
        await wait_for(lambda: dead_count(worker) == count)
    return ids


async def test_list_summary_and_find_read_worker_dead_letters(make_app) -> None:  # type: ignore[no-untyped-def]
    app = failing_app(make_app)
    ids = await produce_dead_letters(app, 6)
    async with DeadLetters(app) as dead:
        assert await dead.sizes() == {"jobs": 6}
        letters = await dead.letters()
        assert sorted(letter.id for letter in letters) == sorted(ids)
        smtp = [letter for letter in letters if letter.error_name == "SmtpDown"]
        assert len(smtp) == 3
        for letter in smtp:
            assert letter.task == "jobs.run"
            assert letter.reason == "exhausted"
            assert letter.attempts == 2
            assert letter.queue == "jobs"
            assert letter.failed_at is not None
            assert abs(letter.failed_at - datetime.now(tz=UTC)) < timedelta(minutes=5)
            assert "SmtpDown" in (letter.traceback or "")
            assert letter.payload()["n"] % 2 == 1
        groups = await dead.summary()
        assert [(g.task, g.kind.rsplit(".", 1)[-1], g.count) for g in groups] == [
            ("jobs.run", "Permanent", 3),
            ("jobs.run", "SmtpDown", 3),
        ]
        assert len(await dead.letters(limit=2)) == 2
        assert len(await dead.letters({"error_type": "SmtpDown", "match": "down for 3"})) == 1
        found = await dead.find(ids[0][:10])
        assert [letter.id for letter in found] == [ids[0]]
        assert await dead.find("nothing-like-it") == []
        # Reading removed nothing.
        assert await dead.sizes() == {"jobs": 6}


async def test_replay_sends_matches_back_and_keeps_the_rest(make_app) -> None:  # type: ignore[no-untyped-def]
    app = failing_app(make_app)
    ids = await produce_dead_letters(app, 6)
    names = app.sender.names
    async with DeadLetters(app) as dead:
        smtp_ids = {letter.id for letter in await dead.letters({"error_type": "SmtpDown"})}
        dry = await dead.replay({"error_type": "SmtpDown"}, dry_run=True)
        assert (dry.matched, dry.moved, dry.total) == (3, 0, 6)
        assert await dead.sizes() == {"jobs": 6}

        seen = []
        report = await dead.replay({"error_type": "SmtpDown"}, on_progress=seen.append)
        assert (report.total, report.matched, report.moved, report.kept) == (6, 3, 3, 3)
        assert report.errors == []
        assert seen[-1].scanned == 6

        replayed = await peek(app.settings.url, names.work_queue("jobs"))
        assert {str(d.header.properties.message_id) for d in replayed} == smtp_ids
        for delivered in replayed:
            headers = delivered.header.properties.headers
            assert delivered.header.properties.message_type == "jobs.run"
            assert headers[message.ATTEMPT] == 1
            assert headers[message.REPLAYS] == 1
            assert headers[message.PREVIOUS_ERRORS][0].startswith("SmtpDown: smtp down for ")
            assert message.REASON not in headers
            assert message.TRACEBACK not in headers
        left = await dead.letters()
        assert {letter.id for letter in left} == set(ids) - smtp_ids
        assert all(letter.error_name == "Permanent" for letter in left)


async def test_a_replayed_task_that_fails_again_keeps_its_history(make_app) -> None:  # type: ignore[no-untyped-def]
    app = failing_app(make_app)
    await produce_dead_letters(app, 2)
    async with DeadLetters(app) as dead:
        for round_ in (1, 2):
            report = await dead.replay({"error_type": "SmtpDown"})
            assert report.moved == 1
            worker = Worker(app, concurrency=2)
            async with running(worker):
                await wait_for(partial(dead_count, worker, expected=1))
            (letter,) = await dead.letters({"error_type": "SmtpDown"})
            assert letter.replays == round_
            assert letter.attempts == 2  # went through its retries again
            assert letter.previous_errors == ["SmtpDown: smtp down for 1"] * round_
            assert letter.reason == "exhausted"


async def test_limit_rate_and_another_target_queue(make_app) -> None:  # type: ignore[no-untyped-def]
    app = failing_app(make_app)
    app.queue("elsewhere")
    await app.declare()
    await produce_dead_letters(app, 6)
    names = app.sender.names
    async with DeadLetters(app) as dead:
        started = asyncio.get_running_loop().time()
        report = await dead.replay({"queue": "jobs"}, limit=2, rate=20, to="elsewhere")
        assert report.moved == 2
        assert report.matched == 2
        assert asyncio.get_running_loop().time() - started >= 0.04  # spaced by the rate
        assert await queue_size(app.settings.url, names.work_queue("elsewhere")) == 2
        assert await queue_size(app.settings.url, names.work_queue("jobs")) == 0
        assert (await dead.sizes())["jobs"] == 4
        with pytest.raises(ConfigError, match="rate must be above 0"):
            await dead.replay(rate=0)
        with pytest.raises(ConfigError, match="limit must be"):
            await dead.purge(limit=-1)
        nothing = await dead.replay(limit=0)
        assert nothing.moved == 0
        assert (await dead.sizes())["jobs"] == 4


async def test_purge_deletes_only_matches(make_app) -> None:  # type: ignore[no-untyped-def]
    app = failing_app(make_app)
    await produce_dead_letters(app, 6)
    async with DeadLetters(app) as dead:
        dry = await dead.purge({"error_type": "Permanent"}, dry_run=True)
        assert dry.matched == 3
        report = await dead.purge({"error_type": "Permanent"})
        assert (report.moved, report.kept) == (3, 3)
        assert {letter.error_name for letter in await dead.letters()} == {"SmtpDown"}
        assert (await dead.purge({"older_than": "1h"})).moved == 0
        assert (await dead.purge()).moved == 3
        assert await dead.sizes() == {"jobs": 0}


async def test_export_and_import_are_lossless(make_app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    app = make_app()
    app.queue("jobs")
    await app.declare()
    url, names = app.settings.url, app.sender.names
    exotic = {
        "bytes": b"\x00\xff\x10",
        "decimal": Decimal("-12.3450"),
        "when": datetime(2024, 2, 29, 23, 59, 59, tzinfo=UTC),
        "double": 0.1,
        "single": 0.5,
        "big": 2**40,
        "negative": -7,
        "flag": True,
        "nothing": None,
        "list": [1, "two", [3.25, b"four"], {"five": Decimal("5")}],
        "table": {"inner": {"deeper": "yes", "$tag-like": 1}},
        "unicode": "Zoë 🐇 李",
    }
    messages = [
        (b'{"n": 1}', dead_letter(task="jobs.run", queue="jobs", extra=exotic)),
        (
            b"\xff\xfe not json at all",
            ExactProperties(
                message_id="foreign-1",
                content_type="application/octet-stream",
                content_encoding="gzip",
                correlation_id="corr",
                reply_to="replies",
                expiration="86400000",
                timestamp=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
                message_type="foreign.thing",
                user_id="guest",
                app_id="legacy-php",
                priority=9,
                delivery_mode=1,
                headers={"x-death": [{"reason": "rejected", "queue": "elsewhere", "count": 2}]},
            ),
        ),
        (b"", ExactProperties(message_id="bare")),
    ]
    await fill(url, names.dead_queue("jobs"), messages)
    first, second = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    async with DeadLetters(app) as dead:
        assert await dead.export_to(first) == 3
        assert (await dead.purge()).moved == 3
        imported = await dead.import_from(first)
        assert (imported.lines, imported.published) == (3, 3)
        assert imported.queues == {"jobs": 3}
        assert await dead.export_to(second) == 3
    assert first.read_text() == second.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.jsonl", "two.jsonl"]  # noqa: ASYNC240

    # Into another namespace (another cluster): same messages, same order.
    other = make_app(namespace=f"{app.settings.namespace}x")
    other.queue("jobs")
    try:
        await other.declare()
        async with DeadLetters(other) as dead:
            await dead.import_from(first)
            assert await dead.export_to(second) == 3
    finally:
        await other.close()
        await delete_namespace(url, other.settings, ["jobs"])  # the fixture cleans only its own
    assert first.read_text() == second.read_text()


async def test_foreign_messages_are_listed_exported_and_replayed(make_app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    app = make_app()
    app.queue("jobs")
    await app.declare()
    odd = [
        (b"<xml>not json</xml>", ExactProperties(message_id="f1")),
        (
            b"\x00\x01\x02",
            ExactProperties(
                headers={
                    message.ATTEMPT: "three",
                    message.FAILED_AT: "yesterday",
                    "x-death": "garbage",
                    message.PREVIOUS_ERRORS: "nope",
                },
            ),
        ),
        (b"{}", ExactProperties(message_id="f3", message_type="x", headers={"blob": b"\xff"})),
    ]
    await fill(app.settings.url, app.sender.names.dead_queue("jobs"), odd)
    async with DeadLetters(app) as dead:
        letters = await dead.letters()
        assert len(letters) == 3
        assert {letter.reason for letter in letters} == {None}
        groups = await dead.summary()
        assert sum(g.count for g in groups) == 3
        assert await dead.export_to(tmp_path / "odd.jsonl") == 3
        report = await dead.replay()
        assert report.moved == 3
    ids = await ids_in(app.settings.url, app.sender.names.work_queue("jobs"))
    assert {"f1", "f3"} <= set(ids)
    assert len(ids) == 3


async def test_delivery_limit_dead_letters_from_a_quorum_queue(make_app) -> None:  # type: ignore[no-untyped-def]
    import aiormq

    app = make_app()
    app.queue("qq", type="quorum", delivery_limit=1)
    await app.declare()
    names = app.sender.names
    task_id = await app.send_by_name("jobs.crashy", {"n": 1}, queue="qq")
    connection = await aiormq.connect(app.settings.url)
    try:
        channel = await connection.channel()
        for _ in range(2):  # a worker "crashing" on it twice
            delivered = await channel.basic_get(names.work_queue("qq"))
            assert delivered.header.properties.message_id == task_id
            await channel.basic_nack(delivered.delivery.delivery_tag, requeue=True)
    finally:
        await connection.close()
    async with DeadLetters(app) as dead:

        async def arrived() -> bool:
            return (await dead.sizes())["qq"] == 1

        await wait_for(arrived, what="the quorum queue dead-letters at its delivery limit")
        (letter,) = await dead.letters()
        assert letter.id == task_id
        assert letter.reason == "delivery-limit"
        assert letter.task == "jobs.crashy"
        assert letter.origin_queue == "qq"
        assert letter.failed_at is not None
        assert (await dead.summary())[0].kind == "(delivery-limit)"
        await fill(app.settings.url, names.dead_queue("qq"), [(b"{}", dead_letter(queue="qq"))])
        report = await dead.replay({"reason": "delivery-limit"})
        assert (report.moved, report.kept) == (1, 1)
        (kept,) = await dead.letters()
        assert kept.reason == "exhausted"
    (delivered,) = await peek(app.settings.url, names.work_queue("qq"))
    headers = delivered.header.properties.headers
    assert "x-death" not in headers
    assert headers[message.REPLAYS] == 1
    assert headers[message.PREVIOUS_ERRORS] == ["delivery-limit: dead-lettered by RabbitMQ from qq"]


async def test_missing_queues_and_unknown_filters_are_clear_errors(make_app) -> None:  # type: ignore[no-untyped-def]
    app = make_app()
    app.queue("jobs")
    await app.declare()
    await fill(
        app.settings.url,
        app.sender.names.dead_queue("jobs"),
        [(b"{}", dead_letter(queue="jobs"))],
    )
    async with DeadLetters(app) as dead:
        with pytest.raises(QueueNotFound, match=r"queue '.*\.dlq\.nope' does not exist"):
            await dead.letters({"queue": "nope"})
        with pytest.raises(ConfigError, match="unknown filter colour"):
            await dead.letters({"colour": "red"})
        with pytest.raises(QueueNotFound, match=r"work queue .* does not exist"):
            await dead.replay(to="nowhere")
        assert await dead.sizes() == {"jobs": 1}
    async with DeadLetters(app.settings) as dead:
        with pytest.raises(ConfigError, match="which dead-letter queues"):
            await dead.letters()
        assert len(await dead.letters({"queue": "jobs"})) == 1


async def test_dead_letters_arriving_during_a_replay_are_left_for_later(make_app) -> None:  # type: ignore[no-untyped-def]
    """Replays that fail straight back, and new dead letters, land behind the run's end."""
    app = make_app()
    job = Task("jobs.always_fails", Job, queue="jobs")

    @app.handle(job, retry=RetryPolicy(max_attempts=1))
    async def fail(payload: Job) -> None:
        raise SmtpDown("still down")

    await app.declare()
    names = app.sender.names
    await fill(
        app.settings.url,
        names.dead_queue("jobs"),
        [(b'{"n": 1}', dead_letter(task=job.name, queue="jobs")) for _ in range(300)],
    )
    worker = Worker(app, concurrency=16)
    async with running(worker), DeadLetters(app) as dead:
        extra = [uuid.uuid4().hex for _ in range(50)]
        started = asyncio.Event()

        async def more() -> None:
            await started.wait()  # the run has counted its messages
            for task_id in extra:
                await fill(
                    app.settings.url,
                    names.dead_queue("jobs"),
                    [(b'{"n": 2}', dead_letter(task=job.name, task_id=task_id))],
                )
                await asyncio.sleep(0.01)

        adding = asyncio.create_task(more())
        report = await dead.replay(rate=400, on_progress=lambda _: started.set())
        await adding
        assert report.moved == 300
        assert report.total == 300
        await wait_for(lambda: worker.counts[Outcome.DEAD_LETTERED] == 300)
    letters = await DeadLetters(app).letters(limit=None)
    assert len(letters) == 350
    replays = Counter(letter.replays for letter in letters)
    assert replays == {1: 300, 0: 50}
    assert set(extra) <= {letter.id for letter in letters}


async def test_a_replay_goes_back_to_the_priority_band_it_died_in(
    make_app: Callable[..., App], amqp_url: str
) -> None:
    app = make_app()
    app.queue("banded", type="quorum", priority_bands=(5,))
    job = Task("jobs.banded", Job, queue="banded")

    @app.handle(job)
    async def run(payload: Job) -> None:
        raise Permanent(f"bad input {payload.n}")

    async def dead_after_sending(*priorities: int, waiting: int = 0) -> None:
        """Send these, run a worker until they and the ``waiting`` ones are dead."""
        worker = Worker(app, concurrency=4)
        async with running(worker):
            for n, priority in enumerate(priorities):
                await app.send(job, Job(n=n), priority=priority)
            await wait_for(lambda: dead_count(worker, len(priorities) + waiting))

    names = app.sender.names
    high, low = names.work_queue("banded.p5"), names.work_queue("banded")
    await dead_after_sending(9, 1)
    async with DeadLetters(app) as dead:
        assert (await dead.replay()).moved == 2
    assert (await queue_size(amqp_url, high), await queue_size(amqp_url, low)) == (1, 1)
    assert [json.loads(d.body)["n"] for d in await peek(amqp_url, high)] == [0]

    # Given only settings (as `leveret dlq` without an app), the bands follow from them.
    await dead_after_sending(7, waiting=2)  # the two replayed die again beside it
    settings = app.settings.model_copy(update={"queue_type": "quorum", "priority_bands": (5,)})
    async with DeadLetters(settings) as dead:
        assert (await dead.replay({"queue": "banded"})).moved == 3
    assert (await queue_size(amqp_url, high), await queue_size(amqp_url, low)) == (2, 1)
