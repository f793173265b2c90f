"""Delayed sends: any delay, never early, and a short delay never waits behind a long one."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import BaseModel

from leveret import App, Task, Worker
from tests.support.waiting import wait_for
from tests.support.workers import running


class Tick(BaseModel):
    n: int
    due: float  # epoch seconds: when the message may arrive at the earliest


async def test_two_thousand_random_delays_arrive_none_early(make_app) -> None:  # type: ignore[no-untyped-def]
    app: App = make_app()
    tick = Task("tick", Tick, queue="ticks")
    arrivals: dict[int, float] = {}

    @app.handle(tick)
    async def handle(t: Tick) -> None:
        arrivals[t.n] = time.time() - t.due  # lateness; negative would be early

    rng = random.Random(7)
    delays = [rng.uniform(0, 10) for _ in range(2000)]

    async def send(n: int, delay: float) -> None:
        await app.send(tick, Tick(n=n, due=time.time() + delay), delay=delay)

    async with running(Worker(app, concurrency=64)):
        for start in range(0, len(delays), 200):
            chunk = enumerate(delays[start : start + 200], start)
            await asyncio.gather(*(send(n, delay) for n, delay in chunk))
        await wait_for(lambda: len(arrivals) == len(delays), timeout=60)

    lateness = sorted(arrivals.values())
    assert lateness[0] >= 0, f"a message arrived {-lateness[0]:.3f} s early"
    # Held behind longer delays, messages would be seconds late as a rule (up to 10 s);
    # a busy machine makes a few late by seconds too, so the rule is on the median.
    median = lateness[len(lateness) // 2]
    assert median < 1.0, f"median lateness {median:.2f} s: messages wait behind longer delays"
    assert lateness[-1] < 10.0, "nothing waits a whole longer delay"


async def test_a_short_delay_overtakes_a_long_one(make_app) -> None:  # type: ignore[no-untyped-def]
    app: App = make_app()
    tick = Task("tick", Tick, queue="overtake")
    order: list[int] = []

    @app.handle(tick)
    async def handle(t: Tick) -> None:
        order.append(t.n)

    async with running(Worker(app)):
        await app.send(tick, Tick(n=1, due=0), delay=timedelta(seconds=3))
        await app.send(tick, Tick(n=2, due=0), delay=0.3)
        await app.send(tick, Tick(n=3, due=0), at=datetime.now(UTC) + timedelta(seconds=1))
        await wait_for(lambda: len(order) == 3, timeout=15)
    assert order == [2, 3, 1]


async def test_delays_beyond_the_ladder_and_naive_times_are_refused(make_app) -> None:  # type: ignore[no-untyped-def]
    app: App = make_app(delay_levels=10)
    tick = app.add(Task("tick", Tick, queue="refused"))
    await app.declare()
    with pytest.raises(ValueError, match="longest the delay levels allow"):
        await app.send(tick, Tick(n=0, due=0), delay=timedelta(days=1))
    naive = datetime.now() + timedelta(seconds=1)
    with pytest.raises(ValueError, match="timezone-aware"):
        await app.send(tick, Tick(n=0, due=0), at=naive)
