"""The engine's failure scenarios, written once against ``leveret.testing.Harness``.

Each scenario drives an app through one documented behaviour (retry with backoff,
``Retry(delay)``, a delayed send, priorities, ``Permanent``, exhausted attempts, a
time limit, an invalid payload, an unknown task, the delivery limit, a replay) and
returns what happened: the outcome of each attempt and every ``leveret-*`` header
of the dead letters. The contract tests run each on the in-memory kit and on
RabbitMQ and require the same result; ``make bench`` times them in memory.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from leveret import NO_RETRY, App, Permanent, Retry, RetryPolicy, TaskContext
from leveret.testing import Harness
from tests.support.models import Job


class Flaky(BaseModel):
    """Fails ``failures`` times, then succeeds."""

    failures: int


#: Headers whose value is a moment (epoch ms): compared by type, not value.
MOMENTS = ("leveret-failed-at", "leveret-enqueued-at", "leveret-published-at")

QUEUE = "kitq"


def scenario_app() -> App:
    """One app with a task for every scenario (fresh per test: handlers keep state)."""
    app = App()
    app.queue(QUEUE, delivery_limit=3)
    fast = RetryPolicy(max_attempts=3, base=0.2, factor=2.0, jitter="none")
    attempts: dict[str, int] = {}
    order: list[int] = []
    app.state = {"order": order}  # type: ignore[attr-defined]

    @app.task(
        name="kit.flaky", queue=QUEUE, retry=RetryPolicy(max_attempts=5, base=1.0, jitter="none")
    )
    async def flaky(args: Flaky, ctx: TaskContext) -> None:
        seen = attempts[ctx.task_id] = attempts.get(ctx.task_id, 0) + 1
        if seen <= args.failures:
            raise ConnectionError(f"failure {seen} of {args.failures}")

    @app.task(name="kit.fails", queue=QUEUE, retry=fast)
    async def fails(job: Job) -> None:
        raise ValueError(f"job {job.n} always fails")

    @app.task(name="kit.permanent", queue=QUEUE, retry=fast)
    async def permanent(job: Job, ctx: TaskContext) -> None:
        if ctx.headers.get("leveret-replays"):
            return  # a replayed copy succeeds
        raise Permanent(f"job {job.n} can never succeed")

    @app.task(name="kit.later", queue=QUEUE, retry=fast)
    async def later(job: Job, ctx: TaskContext) -> None:
        if ctx.attempt == 1:
            raise Retry("not yet", delay=2.0)

    @app.task(name="kit.slow", queue=QUEUE, retry=NO_RETRY, timeout=0.05)
    async def slow(job: Job) -> None:
        import asyncio

        await asyncio.sleep(5)

    @app.task(name="kit.ordered", queue=QUEUE)
    async def ordered(job: Job) -> None:
        order.append(job.n)

    return app


@dataclass
class Result:
    """What a scenario saw, in a form both harnesses can be compared on."""

    outcomes: list[str]
    attempts: list[int]
    dead: list[dict[str, Any]]
    extra: Any = None


async def dead_headers(h: Harness) -> list[dict[str, Any]]:
    """The ``leveret-*`` headers of every dead letter, moments reduced to their type and
    the traceback to its last line (its frames are the same code either way)."""
    found = []
    for letter in await h.dead_letters(queue=QUEUE):
        headers = {k: v for k, v in letter.headers.items() if k.startswith("leveret-")}
        for name in MOMENTS:
            if name in headers:
                headers[name] = type(headers[name]).__name__
        if "leveret-traceback" in headers:
            headers["leveret-traceback"] = headers["leveret-traceback"].strip().splitlines()[-1]
        headers["reason-read"] = letter.reason
        headers["task"] = letter.task
        found.append(headers)
    return found


async def result(h: Harness, extra: Any = None) -> Result:
    return Result(
        outcomes=[str(o) for o in h.outcomes()],
        attempts=[r.attempt for r in h.runs],
        dead=await dead_headers(h),
        extra=extra,
    )


def _task(h: Harness, name: str) -> Any:
    return h.app.contracts[name]


async def retry_backoff(h: Harness) -> Result:
    """Fails twice, then succeeds: backoff 1 s, then 2 s, through the delay levels.

    On RabbitMQ, ``run_until_idle`` calls the worker idle after a few quiet looks
    (0.15 s and up); a shorter first backoff can bring the retry back before that, and
    the second attempt would run inside it (it did, once, on a loaded machine)."""
    await h.send(_task(h, "kit.flaky"), Flaky(failures=2))
    await h.run_until_idle()
    assert h.outcomes() == ["retried"]
    # drain, not advance(0.6): on RabbitMQ the two backoffs take real time, and a
    # loaded machine makes the delay levels late.
    await h.drain(within=30.0)
    return await result(h)


async def retry_delay(h: Harness) -> Result:
    """``Retry(delay=2)``: not run again before, run after (2 s leaves RabbitMQ room)."""
    await h.send(_task(h, "kit.later"), Job(n=1))
    await h.run_until_idle()
    await h.advance(0.1)
    early = len(h.runs)
    await h.advance(2.0)
    return await result(h, extra={"runs_after_0.1s": early})


async def delayed_send(h: Harness) -> Result:
    await h.send(_task(h, "kit.ordered"), Job(n=7), delay=2.0)
    await h.run_until_idle()
    before = len(h.runs)
    await h.advance(2.0)
    return await result(h, extra={"runs_before": before})


async def priorities(h: Harness) -> Result:
    ordered = _task(h, "kit.ordered")
    for n, priority in [(1, 0), (2, 5), (3, 9), (4, 5), (5, 1)]:
        await h.send(ordered, Job(n=n), priority=priority)
    await h.run_until_idle()
    return await result(h, extra=list(h.app.state["order"]))  # type: ignore[attr-defined]


async def permanent(h: Harness) -> Result:
    await h.send(_task(h, "kit.permanent"), Job(n=1))
    await h.run_until_idle()
    return await result(h)


async def exhausted(h: Harness) -> Result:
    await h.send(_task(h, "kit.fails"), Job(n=2))
    await h.drain(within=10)
    return await result(h)


async def time_limit(h: Harness) -> Result:
    await h.send(_task(h, "kit.slow"), Job(n=3))
    await h.run_until_idle()
    return await result(h)


async def invalid_payload(h: Harness) -> Result:
    await h.publish("kit.ordered", {"n": "not a number"}, queue=QUEUE, task_id="bad-payload")
    await h.run_until_idle()
    return await result(h, extra=[r.reason for r in h.rejections])


async def unknown_task(h: Harness) -> Result:
    await h.publish("kit.nobody", {"n": 1}, queue=QUEUE, task_id="unknown")
    await h.run_until_idle()
    return await result(h, extra=[r.reason for r in h.rejections])


async def delivery_limit(h: Harness) -> Result:
    """A copy that already came back unsettled past the queue's limit (3)."""
    await h.publish(
        "kit.ordered", {"n": 9}, queue=QUEUE, task_id="poison", headers={"leveret-returns": 4}
    )
    await h.run_until_idle()
    return await result(h, extra=[r.reason for r in h.rejections])


async def replay(h: Harness) -> Result:
    await h.send(_task(h, "kit.permanent"), Job(n=5))
    await h.run_until_idle()
    replayed = await h.replay(queue=QUEUE, reason="permanent")
    await h.run_until_idle()
    return await result(h, extra={"replayed": replayed})


SCENARIOS: dict[str, Callable[[Harness], Awaitable[Result]]] = {
    f.__name__: f
    for f in (
        retry_backoff,
        retry_delay,
        delayed_send,
        priorities,
        permanent,
        exhausted,
        time_limit,
        invalid_payload,
        unknown_task,
        delivery_limit,
        replay,
    )
}
