"""Scheduler replicas on a real RabbitMQ: one fires, the others take over; missed slots
follow the policy; the CLI lists and runs schedules."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta

import pytest

from leveret import App
from leveret.scheduler import CatchUp, Scheduler, Schedules
from leveret.scheduler.timing import Every
from tests.apps.schedules_app import QUEUE, tick
from tests.support.models import Job
from tests.support.processes import cli
from tests.support.scheduler import Ledger, delete_scheduler_queues, firings
from tests.support.waiting import wait_for

SECOND = Every(timedelta(seconds=1))


@pytest.fixture
async def cleanup(amqp_url: str, namespace: str) -> AsyncIterator[None]:
    yield
    await delete_scheduler_queues(amqp_url, namespace)


def replica(make_app: Callable[..., App], **schedule: object) -> Scheduler:
    app = make_app(heartbeat=5)
    schedules = Schedules(app)
    schedules.every(
        "tick",
        tick,
        lambda slot: Job(n=int(slot.timestamp())),
        1,
        **schedule,  # type: ignore[arg-type]
    )
    return Scheduler(schedules, ping_timeout=3.0)


@contextlib.asynccontextmanager
async def running(scheduler: Scheduler) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(scheduler.run())
    try:
        yield task
    finally:
        scheduler.request_stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 30)


async def fired(amqp_url: str, namespace: str) -> Ledger:
    return Ledger.of("tick", SECOND, await firings(amqp_url, f"{namespace}.q.{QUEUE}"))


@pytest.fixture
def unrecorded(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[], int]]:
    """How many slots a leader sent but could not record before it lost the lease:
    the only duplicates there may be."""
    caplog.set_level(logging.INFO, logger="leveret.scheduler")

    def count() -> int:
        return sum(getattr(r, "event", None) == "schedule.unrecorded" for r in caplog.records)

    return count


async def test_two_replicas_one_fires_and_the_other_takes_over(
    make_app: Callable[..., App],
    amqp_url: str,
    namespace: str,
    cleanup: None,
    unrecorded: Callable[[], int],
) -> None:
    replicas = [replica(make_app), replica(make_app)]
    async with running(replicas[0]) as first_task, running(replicas[1]) as second_task:
        await wait_for(
            lambda: sum(r.is_leader for r in replicas) == 1 and all(r.connected for r in replicas),
            what="one replica leading, the other standing by",
        )
        leader, standby = replicas if replicas[0].is_leader else replicas[::-1]
        leader_task = first_task if leader is replicas[0] else second_task
        await wait_for(
            lambda: leader.metrics.fires.labels("tick")._value.get() >= 3,
            what="the leader fired fewer than 3 slots",
        )
        assert not standby.is_leader
        # The leader dies: its lease channel goes with its connection.
        leader_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await leader_task
        await leader.app.close()
        await wait_for(lambda: standby.is_leader, what="the standby never took over")
        await wait_for(
            lambda: standby.metrics.fires.labels("tick")._value.get() >= 3,
            what="the new leader fired fewer than 3 slots",
        )
    ledger = await fired(amqp_url, namespace)
    assert len(ledger.expected) >= 6
    assert not ledger.missing, ledger.summary()
    assert sum(ledger.duplicates.values()) <= unrecorded(), ledger.summary()


async def test_a_restarted_scheduler_fires_what_its_policy_says(
    make_app: Callable[..., App],
    amqp_url: str,
    namespace: str,
    cleanup: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Stopped for more than ten slots, with no grace and CatchUp(3): the current slot
    and the three before it fire, the older missed ones do not."""
    caplog.set_level(logging.INFO, logger="leveret.scheduler")
    before = replica(make_app, missed=CatchUp(3), grace=0)
    async with running(before):
        await wait_for(lambda: before.metrics.fires.labels("tick")._value.get() >= 2)
    last = (await fired(amqp_url, namespace)).expected[-1]
    await wait_for(
        lambda: SECOND.after(last + timedelta(seconds=11)) < before.clock(),
        timeout=60,
        every=0.2,
        what="eleven slots to pass",
    )
    after = replica(make_app, missed=CatchUp(3), grace=0)
    seen = len(caplog.records)
    async with running(after):
        await wait_for(lambda: after.metrics.fires.labels("tick")._value.get() >= 5)
    backlog = [r for r in caplog.records[seen:] if getattr(r, "event", None) == "schedule.backlog"]
    # The restart's backlog first; a busy machine may fall a slot behind later, never
    # so far that a slot is skipped.
    assert backlog, "the restart found no backlog"
    assert all(r.skipped == 0 for r in backlog[1:]), [r.getMessage() for r in backlog]  # type: ignore[attr-defined]
    fire = list(backlog[0].fire)  # type: ignore[attr-defined]
    skipped: int = backlog[0].skipped  # type: ignore[attr-defined]
    assert len(fire) == 4, "three missed slots and the current one"
    ledger = await fired(amqp_url, namespace)
    slots = sorted(ledger.counts)
    gap = [s for s in ledger.expected if s > last and not ledger.counts[s]]
    assert len(gap) == skipped >= 7
    assert [s.isoformat() for s in slots if last < s <= slots[-1]][:4] == fire
    assert gap[-1] < min(s for s in slots if s > last), "only the oldest were skipped"
    assert not ledger.duplicates


def test_cli_lists_and_runs_schedules(
    make_app: Callable[..., App], amqp_url: str, namespace: str
) -> None:
    make_app().add(tick)  # so that the fixture deletes what `schedules run` declares
    app = "tests.apps.schedules_app:app"
    listing = cli(amqp_url, namespace, "schedules", "list", app)
    assert listing.returncode == 0, listing.stderr
    for name in ("tick-1s", "tick-5s", "nightly"):
        assert name in listing.stdout
    assert "cron '30 2 * * *' Europe/Berlin" in listing.stdout
    assert "replicas: 0" in listing.stdout
    ran = cli(amqp_url, namespace, "schedules", "run", app, "tick-5s")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip().startswith("tick-5s@run-")
    unknown = cli(amqp_url, namespace, "schedules", "run", app, "nope")
    assert unknown.returncode == 2
    assert "no schedule is named 'nope'" in unknown.stderr
