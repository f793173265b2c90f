"""A task past its time limit fails as a timeout, whichever way the limit is kept."""

from __future__ import annotations

import asyncio

import pytest

from leveret import NO_RETRY, App, Task, Worker
from leveret import time_limits as deadlines
from tests.support.models import Sleep as Nap
from tests.support.waiting import wait_for
from tests.support.workers import running


@pytest.mark.parametrize("swept", [False, True], ids=["asyncio-timeout", "swept"])
async def test_slow_task_is_dead_lettered_as_timeout(make_app, monkeypatch, swept) -> None:  # type: ignore[no-untyped-def]
    if swept:
        monkeypatch.setattr(deadlines, "EXACT_BELOW", 0.0)
    app: App = make_app()
    nap = Task("naps.take", Nap, queue="naps")
    finished: list[float] = []

    @app.handle(nap, retry=NO_RETRY, timeout=2.0)
    async def take(n: Nap) -> None:
        await asyncio.sleep(n.seconds)
        finished.append(n.seconds)

    async with running(Worker(app, concurrency=4)) as worker:
        await app.send(nap, Nap(seconds=30))
        await app.send(nap, Nap(seconds=0.01))
        await wait_for(lambda: sum(worker.counts.values()) == 2)
    assert finished == [0.01]
    assert worker.counts == {"dead-lettered": 1, "succeeded": 1}
