"""A burst of first sends on a fresh App: one setup shared, not one channel per message."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiormq
import pytest

from leveret import App, Task, Unroutable
from tests.support.amqp import queue_size
from tests.support.models import Job as Ping
from tests.support.waiting import wait_for


class ChannelCount:
    """Counts the AMQP channels opened, on every aiormq connection of this process."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.opened = 0
        real = aiormq.Connection.channel

        async def channel(connection: aiormq.Connection, *args: Any, **kwargs: Any) -> Any:
            self.opened += 1
            return await real(connection, *args, **kwargs)

        monkeypatch.setattr(aiormq.Connection, "channel", channel)


async def queue_depth(app: App, queue: str) -> int:
    return await queue_size(app.settings.url, app.sender.names.work_queue(queue))


async def declared_elsewhere(make_app: Callable[..., App], task: Task[Ping]) -> App:
    """The queue exists, declared by another App: the one under test starts cold."""
    setup = make_app()
    setup.add(task)
    await setup.declare()
    return setup


async def test_concurrent_first_sends_share_one_setup(
    make_app: Callable[..., App], monkeypatch: pytest.MonkeyPatch
) -> None:
    ping = Task("cold.gather", Ping, queue="cold-gather")
    setup = await declared_elsewhere(make_app, ping)
    app = make_app()
    channels = ChannelCount(monkeypatch)

    ids = await asyncio.gather(*(app.send(ping, Ping(n=i)) for i in range(100)))

    assert len(set(ids)) == 100
    # One to declare the shared topology, one to publish on: before, one per message.
    assert channels.opened <= 3
    assert await queue_depth(setup, "cold-gather") == 100


async def test_cold_send_many_shares_one_setup(
    make_app: Callable[..., App], monkeypatch: pytest.MonkeyPatch
) -> None:
    ping = Task("cold.many", Ping, queue="cold-many")
    setup = await declared_elsewhere(make_app, ping)
    app = make_app()
    channels = ChannelCount(monkeypatch)

    ids = await app.send_many(ping, [Ping(n=i) for i in range(100)])

    assert len(set(ids)) == 100
    assert channels.opened <= 3
    assert await queue_depth(setup, "cold-many") == 100


async def test_concurrent_first_delayed_sends_check_the_queue_once(
    make_app: Callable[..., App], monkeypatch: pytest.MonkeyPatch
) -> None:
    ping = Task("cold.delayed", Ping, queue="cold-delayed")
    setup = await declared_elsewhere(make_app, ping)
    app = make_app()
    channels = ChannelCount(monkeypatch)

    ids = await asyncio.gather(*(app.send(ping, Ping(n=i), delay=0.05) for i in range(50)))

    assert len(set(ids)) == 50
    assert channels.opened <= 4  # and one to check that the queue exists

    async def arrived() -> bool:
        return await queue_depth(setup, "cold-delayed") >= 50

    await wait_for(arrived, what="delayed sends did not arrive")


async def test_a_failed_setup_reaches_every_waiter_and_the_next_call_tries_again(
    make_app: Callable[..., App],
) -> None:
    app = make_app()
    ping = app.add(Task("cold.missing", Ping, queue="cold-missing"))

    results = await asyncio.gather(
        *(app.send(ping, Ping(n=i), delay=5) for i in range(20)), return_exceptions=True
    )
    assert all(isinstance(r, Unroutable) for r in results), results

    await app.declare()
    assert await app.send(ping, Ping(n=0), delay=0.01)
