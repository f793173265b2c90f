"""The dashboard's Schedules page against a real RabbitMQ: the schedules of the app,
their next and last fire times and the leader, read as ``leveret schedules list``
reads them; an app without schedules has no such page in its menu."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from leveret import App
from leveret.scheduler import CatchUp, Scheduler, Schedules
from tests.apps.schedules_app import tick
from tests.support.dashboard import serving
from tests.support.models import Job
from tests.support.ops import OPS_APP
from tests.support.scheduler import delete_scheduler_queues
from tests.support.waiting import wait_for

SCHEDULES_APP = "tests.apps.schedules_app:app"


@pytest.fixture
async def cleanup(amqp_url: str, namespace: str) -> AsyncIterator[None]:
    yield
    await delete_scheduler_queues(amqp_url, namespace)


@contextlib.asynccontextmanager
async def leading(make_app: Callable[..., App]) -> AsyncIterator[Scheduler]:
    """A scheduler firing ``tick-1s`` (a name the dashboard's app declares too)."""
    schedules = Schedules(make_app(heartbeat=5))
    schedules.every("tick-1s", tick, Job(n=1), 1, missed=CatchUp(1000))
    scheduler = Scheduler(schedules, ping_timeout=3.0)
    task = asyncio.create_task(scheduler.run())
    try:
        yield scheduler
    finally:
        scheduler.request_stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 30)


async def test_shows_next_and_last_fire_times_and_the_leader(
    make_app: Callable[..., App], amqp_url: str, namespace: str, cleanup: None
) -> None:
    make_app().add(tick)  # so that the fixture deletes the task queue the leader fills
    async with serving(amqp_url, namespace, SCHEDULES_APP) as served, served.client() as client:
        before = (await client.get("/schedules?format=json")).json()["board"]
        assert [s["name"] for s in before["schedules"]] == ["tick-1s", "tick-5s", "nightly"]
        assert before["leader"] is None
        assert all(s["last"] is None and s["next"] for s in before["schedules"])
        nightly = before["schedules"][2]
        assert nightly["when"] == "cron '30 2 * * *' Europe/Berlin"

        async with leading(make_app) as scheduler:
            seen: list[dict[str, Any]] = []

            async def led() -> bool:
                board = (await client.get("/schedules?format=json")).json()["board"]
                seen.append(board)
                return bool(board["leader"] and board["schedules"][0]["last"])

            await wait_for(led, every=0.2, what=lambda: str(seen[-1:]))
            board = seen[-1]
            assert board["leader"] == scheduler.identity
            assert board["replicas"] == 1

            page = await client.get("/schedules")
            assert page.status_code == 200
            assert scheduler.identity in page.text
            assert 'data-schedule="nightly"' in page.text
            assert 'href="/schedules"' in page.text


async def test_an_app_without_schedules_says_so(amqp_url: str, namespace: str) -> None:
    async with serving(amqp_url, namespace, OPS_APP) as served, served.client() as client:
        queues = await client.get("/queues")
        assert 'href="/schedules"' not in queues.text
        board = (await client.get("/schedules?format=json")).json()
        assert board == {"board": None}
        page = await client.get("/schedules")
        assert "declares no schedules" in page.text
