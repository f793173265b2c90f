"""A middleware that raises in every hook changes nothing about delivery."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import aio_pika
from pydantic import BaseModel

from leveret import App, Middleware, Outcome, RetryPolicy, TaskContext, Worker
from leveret import message as wire
from tests.support.waiting import wait_for
from tests.support.workers import running

TASKS = 2000
BAD = 20


class Job(BaseModel):
    n: int
    fail_times: int = 0


class Broken(Middleware):
    """Raises from every hook."""

    def before_task(self, ctx: TaskContext) -> None:
        raise RuntimeError("before_task is broken")

    def after_task(
        self, ctx: TaskContext, outcome: Outcome, error: BaseException | None, duration: float
    ) -> None:
        raise RuntimeError("after_task is broken")

    def on_rejected(self, queue: str, reason: str, error: BaseException) -> None:
        raise RuntimeError("on_rejected is broken")

    def before_send(self, task_name: str, queue: str, headers: dict[str, Any]) -> None:
        raise RuntimeError("before_send is broken")

    def after_send(
        self, task_name: str, queue: str, task_id: str, size: int, error: BaseException | None
    ) -> None:
        raise RuntimeError("after_send is broken")


async def test_hooks_that_raise_cause_no_duplicate_no_loss_and_no_failed_send(  # type: ignore[no-untyped-def]
    make_app,
) -> None:
    app: App = make_app(middleware=[Broken()])
    runs: Counter[tuple[int, int]] = Counter()
    done: Counter[int] = Counter()
    policy = RetryPolicy(max_attempts=3, base=0.01, factor=1, jitter="none")

    @app.task(name="hooked", queue="hooked", retry=policy)
    async def hooked(job: Job, ctx: TaskContext) -> None:
        runs[(job.n, ctx.attempt)] += 1
        if ctx.attempt <= job.fail_times:
            raise ConnectionError(f"job {job.n} attempt {ctx.attempt}")
        done[job.n] += 1

    # Every 10th fails for good (3 attempts, then a dead letter), every 10th + 1 fails
    # once, the rest succeed at once; BAD more fail validation (a dead letter each).
    jobs = [Job(n=n, fail_times={0: 99, 1: 1}.get(n % 10, 0)) for n in range(TASKS)]
    doomed = {j.n for j in jobs if j.fail_times == 99}
    async with running(Worker(app, concurrency=32)) as worker:
        ids = await app.send_many(hooked, jobs[1:])
        ids.append(await app.send(hooked, jobs[0]))
        ids.append(await app.send_by_name("hooked", {"n": -1}, task_id="by-name"))
        connection = await app.connector.get()
        channel = await connection.channel()
        exchange = await channel.get_exchange(app.sender.names.tasks_exchange)
        for i in range(BAD):
            message = aio_pika.Message(b'{"n": "x"}', type="hooked", message_id=f"bad-{i}")
            await exchange.publish(message, routing_key="hooked")
        expected_dead = len(doomed) + BAD
        await wait_for(lambda: sum(worker.counts.values()) >= TASKS + 1 + BAD, timeout=120)
        await wait_for(
            lambda: (
                worker.counts[Outcome.DEAD_LETTERED] == len(doomed)
                and worker.counts[Outcome.SUCCEEDED] == TASKS + 1 - len(doomed)
            ),
            timeout=120,
        )
        await asyncio.sleep(1.0)  # a duplicate or an extra dead letter would land meanwhile

    assert len(set(ids)) == len(ids) == TASKS + 1, "every send returned its id"
    assert worker.counts[Outcome.FAILED_PERMANENTLY] == BAD
    assert worker.counts[Outcome.RETRIED] == 2 * len(doomed) + TASKS // 10
    assert set(done) == {j.n for j in jobs if j.n not in doomed} | {-1}, "every handler ran"
    assert max(done.values()) == 1, "no task completed twice"
    assert max(runs.values()) == 1, "no attempt ran twice"
    assert all(runs[(n, a)] == 1 for n in doomed for a in (1, 2, 3))

    dlq_name = app.sender.names.dead_queue("hooked")
    dlq = await channel.declare_queue(dlq_name, passive=True)
    letters: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    while (letter := await dlq.get(no_ack=True, fail=False)) is not None:
        letters[str(letter.message_id)] += 1
        reasons[str(letter.headers[wire.REASON])] += 1
    assert sum(letters.values()) == expected_dead, "each dead letter exactly once"
    assert max(letters.values()) == 1
    assert reasons == {"exhausted": len(doomed), "invalid-payload": BAD}

    errors = app.emitter.errors
    hooks = {hook for (_, hook) in errors}
    assert hooks == {"before_task", "after_task", "on_rejected", "before_send", "after_send"}
    assert errors[("Broken", "after_task")] == TASKS + 1 + 2 * len(doomed) + TASKS // 10
