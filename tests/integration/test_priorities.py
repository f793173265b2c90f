"""Classic work queues honour message priorities."""

from __future__ import annotations

from leveret import App, Task, Worker
from tests.support.models import Job as Item
from tests.support.waiting import wait_for
from tests.support.workers import running


async def test_high_priority_tasks_run_before_low_ones(make_app) -> None:  # type: ignore[no-untyped-def]
    app: App = make_app()
    item = Task("prio.item", Item, queue="prio", priority=1)
    order: list[int] = []

    @app.handle(item)
    async def handle(payload: Item) -> None:
        order.append(payload.n)

    await app.declare()
    await app.send_many(item, [Item(n=i) for i in range(100)])  # default priority 1
    await app.send_many(item, [Item(n=1000 + i) for i in range(100)], priority=9)

    async with running(Worker(app, concurrency=1)):
        await wait_for(lambda: len(order) == 200)

    assert all(n >= 1000 for n in order[:100]), order[:110]
    assert sorted(order) == sorted([*range(100), *range(1000, 1100)])
