"""Priorities hold on every queue type, or a loud warning says they cannot.

Classic queues order by ``x-max-priority``; quorum queues get strict priorities from
priority bands (one quorum queue per band, drained highest first). A plain quorum
queue given priorities warns at declare and at the first send.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit, urlunsplit

import pytest

from leveret import App, Task, Worker
from leveret.priorities import PriorityIgnored
from tests.faults.proxy import CHANNEL_CLOSE, FaultProxy, Upstream
from tests.support.models import Job as Item
from tests.support.waiting import wait_for
from tests.support.workers import running


async def _high_first(app: App, item: Task[Item], concurrency: int = 1) -> list[int]:
    """100 low then 100 high sent before a worker starts: the order they ran in."""
    order: list[int] = []

    @app.handle(item)
    async def handle(payload: Item) -> None:
        order.append(payload.n)

    await app.declare()
    await app.send_many(item, [Item(n=i) for i in range(100)])  # the task's default priority
    await app.send_many(item, [Item(n=1000 + i) for i in range(100)], priority=9)

    async with running(Worker(app, concurrency=concurrency)):
        await wait_for(lambda: len(order) == 200)

    assert sorted(order) == sorted([*range(100), *range(1000, 1100)])
    return order


async def test_high_priority_tasks_run_before_low_ones(make_app) -> None:  # type: ignore[no-untyped-def]
    app: App = make_app()
    order = await _high_first(app, Task("prio.item", Item, queue="prio", priority=1))
    assert all(n >= 1000 for n in order[:100]), order[:110]


@pytest.mark.parametrize("concurrency", [1, 8])
async def test_priority_bands_make_quorum_queues_strict(make_app, concurrency: int) -> None:  # type: ignore[no-untyped-def]
    app: App = make_app()
    app.queue("banded", type="quorum", priority_bands=(5,))
    order = await _high_first(app, Task("prio.banded", Item, queue="banded"), concurrency)
    high_first = sum(n >= 1000 for n in order[:100])
    assert high_first >= 95, order[:110]


async def test_a_slow_broker_costs_a_banded_worker_no_channel(make_app, amqp_url: str) -> None:  # type: ignore[no-untyped-def]
    """The gate's look at a higher band's depth is a call on that band's consumer
    channel. A call cancelled or timed out makes aiormq close its channel: an answer
    slower than the gate waits for, or a stop during a look, must not."""
    broker = urlsplit(amqp_url)
    proxy = FaultProxy(Upstream(port=broker.port or 5672), name="proxy-bands").start()
    try:
        through = broker._replace(
            netloc=f"{broker.username}:{broker.password}@127.0.0.1:{proxy.port}"
        )
        app: App = make_app(url=urlunsplit(through), heartbeat=60)
        app.queue("banded", type="quorum", priority_bands=(5,))
        app.handle(Task("prio.gated", Item, queue="banded"))(_nothing)
        await app.declare()
        worker = Worker(app, concurrency=4)
        async with running(worker):
            since = time.time()
            proxy.blackhole()
            await asyncio.sleep(6.5)  # longer than the gate waits for an answer (5 s)
            proxy.blackhole(False)
            await asyncio.sleep(1)
            assert worker.ready
            assert not proxy.seen(CHANNEL_CLOSE, since=since, direction="up")
            proxy.blackhole()  # the stop comes in the middle of a look, and still drains
            asyncio.get_running_loop().call_later(1.0, proxy.blackhole, False)
        await app.close()
    finally:
        proxy.stop()


async def _nothing(payload: Item) -> None:
    pass


async def test_a_retry_keeps_its_band(make_app) -> None:  # type: ignore[no-untyped-def]
    app: App = make_app()
    app.queue("banded", type="quorum", priority_bands=(5,))
    item = Task("prio.retried", Item, queue="banded", priority=7)
    seen: list[tuple[int, int]] = []

    @app.handle(item)
    async def handle(payload: Item, ctx) -> None:  # type: ignore[no-untyped-def]
        seen.append((payload.n, ctx.attempt))
        if ctx.attempt == 1:
            raise RuntimeError("once")

    await app.declare()
    await app.send(item, Item(n=1))
    async with running(Worker(app, concurrency=1)):
        await wait_for(lambda: len(seen) == 2)
    assert seen == [(1, 1), (1, 2)]


async def test_a_plain_quorum_queue_given_priorities_warns(make_app) -> None:  # type: ignore[no-untyped-def]
    app: App = make_app()
    app.queue("plainq", type="quorum")
    item = Task("prio.plain", Item, queue="plainq", priority=9)
    app.add(item)
    with pytest.warns(PriorityIgnored, match="priority_bands=\\(5,\\)"):
        await app.declare()

    sender_only: App = make_app()
    sender_only.queue("plainq", type="quorum")
    plain = Task("prio.plain", Item, queue="plainq")
    with pytest.warns(PriorityIgnored, match="'plainq' is a quorum queue"):
        await sender_only.send(plain, Item(n=1), priority=3)
    await sender_only.send(plain, Item(n=2), priority=3)  # said once is enough
