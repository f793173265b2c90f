"""The in-memory kit on its own: the virtual clock, crashes, parking and clear errors."""

from __future__ import annotations

import pytest

from leveret import App, InvalidArgument, Outcome, RetryPolicy, TaskContext, Unroutable
from leveret.testing import Kit, KitError, WorkerKilled
from tests.support.models import Job


def backoff_app() -> App:
    app = App()

    @app.task(name="t.flaky", queue="q", retry=RetryPolicy(max_attempts=4, base=60, jitter="none"))
    async def flaky(job: Job, ctx: TaskContext) -> None:
        if ctx.attempt < 3:
            raise ConnectionError("down")

    return app


async def test_backoff_runs_on_the_virtual_clock_at_exact_times() -> None:
    app = backoff_app()
    async with Kit(app) as kit:
        await kit.send(app.contracts["t.flaky"], Job(n=1))
        await kit.advance(3600)  # an hour of backoff, in no time
        assert [(r.attempt, r.at, r.outcome) for r in kit.runs] == [
            (1, 0.0, Outcome.RETRIED),
            (2, 60.0, Outcome.RETRIED),
            (3, 180.0, Outcome.SUCCEEDED),
        ]
        assert kit.now == 3600


async def test_delayed_sends_wait_for_the_clock() -> None:
    app = backoff_app()
    async with Kit(app) as kit:
        await kit.send(app.contracts["t.flaky"], Job(n=1), delay=30)
        assert await kit.run_until_idle() == 0
        assert [due for due, _ in kit.delayed] == [30.0]
        await kit.advance(29.99)
        assert kit.runs == []
        await kit.drain()
        assert kit.runs[0].at == 30.0


async def test_the_clock_never_goes_back() -> None:
    async with Kit(backoff_app()) as kit:
        with pytest.raises(InvalidArgument, match="time only moves forward"):
            await kit.advance(-1)


async def test_an_unstarted_kit_says_how_to_start_it() -> None:
    with pytest.raises(KitError, match="async with Kit"):
        await Kit(backoff_app()).run_until_idle()


def crashing_app(queue_type: str) -> App:
    app = App()
    app.queue("crashy", type=queue_type, delivery_limit=2)  # type: ignore[arg-type]

    @app.task(name="t.crash", queue="crashy")
    async def crash(job: Job) -> None:
        raise WorkerKilled

    return app


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
async def test_a_task_that_kills_its_worker_ends_at_the_delivery_limit(queue_type: str) -> None:
    app = crashing_app(queue_type)
    async with Kit(app) as kit:
        await kit.send(app.contracts["t.crash"], Job(n=1))
        await kit.run_until_idle()
        assert kit.outcomes() == ["killed"] * 3  # a delivery limit of 2 allows 3 deliveries
        [letter] = await kit.dead_letters(queue="crashy")
        assert letter.reason == "delivery-limit"
        assert kit.queued("crashy") == []


async def test_a_delayed_message_whose_queue_vanished_is_parked() -> None:
    app = backoff_app()
    async with Kit(app) as kit:
        await kit.send(app.contracts["t.flaky"], Job(n=1), delay=5)
        del kit.broker.queues[kit.broker.names.work_queue("q")]
        await kit.advance(5)
        assert len(kit.parked) == 1
        with pytest.raises(Unroutable, match="no queue is bound"):
            await kit.send(app.contracts["t.flaky"], Job(n=2))


async def test_the_app_is_bound_back_to_rabbitmq_afterwards() -> None:
    app = backoff_app()
    transport, settings = app.transport, app.settings
    async with Kit(app):
        assert app.transport is not transport
    assert (app.transport, app.settings) == (transport, settings)
    assert app.middleware == []
