"""A task past its timeout counts as a failed attempt; start-up refuses impossible timeouts."""

from __future__ import annotations

import asyncio
import time

import pytest

from leveret import NO_RETRY, App, ConfigError, Task, Worker
from leveret import message as wire
from tests.support.deadletters import dead_letters
from tests.support.models import Sleep as Nap
from tests.support.workers import running


async def test_async_and_sync_handlers_time_out(make_app) -> None:  # type: ignore[no-untyped-def]
    app: App = make_app()
    finished: list[str] = []

    @app.task(name="nap.async", queue="naps", timeout=0.3, retry=NO_RETRY)
    async def nap_async(nap: Nap) -> None:
        await asyncio.sleep(nap.seconds)
        finished.append("async")

    @app.task(name="nap.sync", queue="naps", timeout=0.3, retry=NO_RETRY)
    def nap_sync(nap: Nap) -> None:
        time.sleep(nap.seconds)
        finished.append("sync")

    async with running(Worker(app)):
        started = time.monotonic()
        await app.send(nap_async, Nap(seconds=60))
        [first] = await dead_letters(app, "naps", 1)
        await app.send(nap_sync, Nap(seconds=1.5))
        [second] = await dead_letters(app, "naps", 1)
        elapsed = time.monotonic() - started

    for dead, name in ((first, "nap.async"), (second, "nap.sync")):
        assert dead.type == name
        assert dead.headers[wire.ERROR_TYPE] == "leveret.errors.TaskTimeout"
        assert dead.headers[wire.REASON] == "exhausted"
        assert "timeout of 0.3 s" in str(dead.headers[wire.ERROR_MESSAGE])
    assert "abandoned" in str(second.headers[wire.ERROR_MESSAGE])
    assert "async" not in finished, "the async handler was cancelled"
    assert elapsed < 30, "neither nap was waited for"


def test_a_timeout_over_the_brokers_consumer_timeout_is_refused() -> None:
    app = App(consumer_timeout=60)

    @app.task(name="too.long", queue="long", timeout=120)
    async def too_long(nap: Nap) -> None: ...

    with pytest.raises(ConfigError, match="consumer_timeout"):
        Worker(app)

    async def nap(nap: Nap) -> None: ...

    fits = App(consumer_timeout=60, task_timeout=30)
    fits.handle(Task("fits", Nap, queue="long"))(nap)
    Worker(fits)  # the default task timeout fits under it
