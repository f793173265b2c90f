"""Failures are retried through the broker's delay levels, then dead-lettered with why."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
from pydantic import BaseModel

from leveret import App, Permanent, Retry, RetryPolicy, TaskContext, Worker
from leveret import message as wire
from tests.support.deadletters import dead_letters
from tests.support.waiting import wait_for
from tests.support.workers import running


class Work(BaseModel):
    fail_times: int = 0


async def test_fails_four_times_then_succeeds_with_backoff_gaps(make_app) -> None:  # type: ignore[no-untyped-def]
    app: App = make_app()
    policy = RetryPolicy(max_attempts=10, base=0.2, factor=2, jitter="none")
    runs: list[tuple[float, int, str]] = []

    @app.task(name="flaky", queue="flaky", retry=policy)
    async def flaky(work: Work, ctx: TaskContext) -> None:
        runs.append((time.monotonic(), ctx.attempt, ctx.task_id))
        if ctx.attempt <= work.fail_times:
            raise ConnectionError(f"downstream unavailable (attempt {ctx.attempt})")

    async with running(Worker(app)):
        task_id = await app.send(flaky, Work(fail_times=4))
        await wait_for(lambda: len(runs) == 5, timeout=30)
        await asyncio.sleep(0.5)  # a sixth run would show up here

    assert len(runs) == 5
    assert [a for _, a, _ in runs] == [1, 2, 3, 4, 5]
    assert {i for _, _, i in runs} == {task_id}, "the task id is kept across retries"
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(runs)]
    for gap, intended in zip(gaps, [0.2, 0.4, 0.8, 1.6], strict=True):
        assert intended <= gap <= intended + 3.0, (gaps, "never early, within a generous bound")


async def test_failing_forever_ends_in_dead_letters_with_all_fields(make_app) -> None:  # type: ignore[no-untyped-def]
    app: App = make_app()
    # 50 ms = 5 units = levels 2 and 0: every retry passes the same levels again,
    # which a copy still carrying x-death would not survive.
    policy = RetryPolicy(max_attempts=8, base=0.05, factor=1, jitter="none")
    runs: list[int] = []

    @app.task(name="doomed", queue="doomed", retry=policy)
    async def doomed(work: Work, ctx: TaskContext) -> None:
        runs.append(ctx.attempt)
        raise RuntimeError(f"always broken, attempt {ctx.attempt}")

    async with running(Worker(app)):
        task_id = await app.send(doomed, Work())
        [dead] = await dead_letters(app, "doomed", 1)

    assert runs == list(range(1, 9))
    h = dead.headers
    assert dead.message_id == task_id
    assert dead.type == "doomed"
    assert h[wire.ATTEMPT] == 8
    assert h[wire.REASON] == "exhausted"
    assert h[wire.ERROR_TYPE] == "builtins.RuntimeError"
    assert h[wire.ERROR_MESSAGE] == "always broken, attempt 8"
    assert "RuntimeError: always broken" in str(h[wire.TRACEBACK])
    assert h[wire.ORIGIN_QUEUE] == "doomed"
    assert ":" in str(h[wire.WORKER])
    assert abs(int(h[wire.FAILED_AT]) / 1000 - time.time()) < 60  # type: ignore[arg-type]
    assert str(h[wire.LAST_ERROR]).startswith("RuntimeError: always broken, attempt 7")
    assert "x-death" not in h, "our copies never carry the broker's x-death"


async def test_permanent_error_goes_straight_to_dead_letters(make_app) -> None:  # type: ignore[no-untyped-def]
    app: App = make_app()
    runs: list[int] = []

    @app.task(name="refuse", queue="refuse")
    async def refuse(work: Work, ctx: TaskContext) -> None:
        runs.append(ctx.attempt)
        raise Permanent("card declined: no retry will help")

    async with running(Worker(app)):
        await app.send(refuse, Work())
        [dead] = await dead_letters(app, "refuse", 1)

    assert runs == [1]
    assert dead.headers[wire.ATTEMPT] == 1
    assert dead.headers[wire.REASON] == "permanent"
    assert dead.headers[wire.ERROR_TYPE] == "leveret.errors.Permanent"


async def test_retry_exception_sets_the_delay(make_app) -> None:  # type: ignore[no-untyped-def]
    app: App = make_app()
    runs: list[float] = []

    @app.task(name="later", queue="later")
    async def later(work: Work, ctx: TaskContext) -> None:
        runs.append(time.monotonic())
        if ctx.attempt == 1:
            raise Retry("rate limited", delay=0.7)

    async with running(Worker(app)):
        await app.send(later, Work())
        await wait_for(lambda: len(runs) == 2, timeout=15)
    assert 0.7 <= runs[1] - runs[0] <= 0.7 + 3.0


@pytest.mark.parametrize("delay_queue_type", ["quorum"])
async def test_retries_through_a_quorum_ladder_to_a_quorum_queue(  # type: ignore[no-untyped-def]
    make_app, delay_queue_type: str
) -> None:
    app: App = make_app(delay_queue_type=delay_queue_type)
    app.queue("replicated", type="quorum", delivery_limit=5)
    runs: list[int] = []

    @app.task(name="replicated", queue="replicated", retry=RetryPolicy(base=0.1, jitter="none"))
    async def replicated(work: Work, ctx: TaskContext) -> None:
        runs.append(ctx.attempt)
        if ctx.attempt <= work.fail_times:
            raise RuntimeError("not yet")

    async with running(Worker(app)):
        await app.send(replicated, Work(fail_times=3))
        await wait_for(lambda: len(runs) == 4, timeout=20)
    assert runs == [1, 2, 3, 4]


async def test_a_retry_delay_past_the_ladder_is_clamped_not_looped(make_app, caplog) -> None:  # type: ignore[no-untyped-def]
    app: App = make_app()
    runs: list[int] = []

    @app.task(name="far", queue="far", retry=RetryPolicy(max_attempts=5))
    async def far(work: Work, ctx: TaskContext) -> None:
        runs.append(ctx.attempt)
        raise Retry("come back in ten thousand years", delay=10**12)

    longest = app.settings.delay_levels - 1
    async with running(Worker(app)) as worker:
        await app.send(far, Work())
        await wait_for(lambda: worker.counts["retried"] == 1)
        connection = await app.connector.get()
        channel = await connection.channel()
        top = await channel.declare_queue(app.sender.names.delay_level(longest), passive=True)
        assert top.declaration_result.message_count == 1, "parked in the longest delay level"
        await asyncio.sleep(0.5)  # a requeue loop would run it again meanwhile
    assert runs == [1], "retried once, into the longest delay, not looped"
    assert "over the longest delay" in caplog.text
