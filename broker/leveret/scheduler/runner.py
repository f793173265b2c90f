"""The scheduler: every replica stands by on the lease queue; the one RabbitMQ makes
its single active consumer leads, and fires each schedule's slots.

Why it neither repeats nor skips a slot:

- Leadership is holding the state messages of the lease queue
  (``leveret.amqp.lease``): RabbitMQ gives them to one consumer at a time, and to the
  next only after the last one's channel is gone and they are back in the queue. A new
  leader therefore starts from everything its predecessor recorded.
- A slot is recorded (a confirmed write to the lease queue, on the lease's own
  channel) only after its task was confirmed by the broker; a leader killed between
  the two leaves a slot its successor sends again, with the same task id
  (``name@slot``), so a handler can tell. That is the only duplicate there is.
- Before each send the leader makes a round trip on the lease channel: a leader that
  was frozen (SIGSTOP, a long GC pause, a cut network) past the broker's heartbeat
  timeout finds its channel closed and steps down instead of firing beside its
  successor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from leveret.amqp.connection import CONNECTION_ERRORS
from leveret.amqp.lease import LEASE_ERRORS, LeaseChannel
from leveret.amqp.types import Delivery
from leveret.errors import BrokerUnavailable, LeveretError, NotConfirmed, PublishError
from leveret.scheduler import state as codec
from leveret.scheduler.metrics import SchedulerMetrics
from leveret.scheduler.schedule import Plan, Schedule, plan
from leveret.scheduler.schedules import Schedules

log = logging.getLogger("leveret.scheduler")

Clock = Callable[[], datetime]


class LeaseLost(Exception):
    """The lease channel is gone: another replica may lead now."""


#: What ends a term as leader (or a wait to become one): rejoin the line.
_REJOIN: tuple[type[BaseException], ...] = (
    LeaseLost,
    *LEASE_ERRORS,
    *CONNECTION_ERRORS,
    BrokerUnavailable,
)
#: What a send may raise that another try can fix.
_SEND_AGAIN: tuple[type[BaseException], ...] = (PublishError, BrokerUnavailable, *CONNECTION_ERRORS)
#: What a failed state write raises.
_WRITE_FAILED: tuple[type[BaseException], ...] = (*LEASE_ERRORS, NotConfirmed)

#: The longest single sleep: a wall clock that jumps is noticed within this.
MAX_SLEEP = 10.0


def lease_queue(namespace: str) -> str:
    return f"{namespace}.scheduler.lease"


def status_queue(namespace: str) -> str:
    return f"{namespace}.scheduler.status"


def _now() -> datetime:
    return datetime.now(UTC)


class Scheduler:
    """Runs an app's schedules; start as many as you like, one fires at a time."""

    def __init__(
        self,
        schedules: Schedules,
        *,
        identity: str | None = None,
        queue_type: str = "classic",
        metrics: SchedulerMetrics | None = None,
        sentry_crons: bool = False,
        clock: Clock = _now,
        ping_timeout: float = 5.0,
    ) -> None:
        self.schedules = schedules
        self.app = schedules.app
        self.identity = identity or f"{socket.gethostname()}:{os.getpid()}"
        self.queue_type = queue_type
        self.metrics = metrics or SchedulerMetrics()
        self.sentry_crons = sentry_crons
        self.clock = clock
        self.ping_timeout = ping_timeout
        namespace = self.app.settings.namespace
        self.lease_queue = lease_queue(namespace)
        self.status_queue = status_queue(namespace)
        self.is_leader = False
        self.connected = False
        self.leader_since: datetime | None = None
        #: The merged state: schedule -> newest slot settled.
        self.state: codec.State = {}
        self._held: list[tuple[Delivery, codec.State]] = []
        self._inbox: asyncio.Queue[Delivery] = asyncio.Queue()
        self._elected = asyncio.Event()
        self._stop = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._writing = False
        self._next: dict[str, datetime] = {}
        self._firing: set[str] = set()
        self._quiet = asyncio.Event()  # set while no slot is being fired
        self._quiet.set()

    # -- running ------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Stand by, lead when elected, and come back after any loss, until stopped."""
        pause = 0.2
        while not self._stop.is_set():
            lease: LeaseChannel | None = None
            try:
                connection = await self.app.connector.get(deadline=float("inf"))
                lease = await LeaseChannel.open(
                    connection,
                    self.lease_queue,
                    queue_type=self.queue_type,
                    status_queue=self.status_queue,
                )
                self._reset()
                # An empty state of our own: the queue is never without a message, so
                # whoever is active always learns that it is.
                await lease.publish(
                    codec.encode({}, joined=self.identity), within=self.ping_timeout
                )
                await lease.consume(self._inbox.put)
                self.connected = True
                log.info("scheduler %s standing by", self.identity)
                if await self._until_elected(lease):
                    await self._lead(lease)
                pause = 0.2
            except _REJOIN as exc:
                if isinstance(exc, asyncio.CancelledError):
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        raise
                if not self._stop.is_set():
                    log.warning(
                        "scheduler %s lost its lease channel (%s: %s); joining again",
                        self.identity,
                        type(exc).__name__,
                        exc,
                    )
            finally:
                self._step_down()
                self.connected = False
                if lease is not None:
                    await lease.close()
            if not self._stop.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(pause):
                        await self._stop.wait()
                pause = min(pause * 2, 5.0)

    def _reset(self) -> None:
        self.state = {}
        self._held = []
        self._inbox = asyncio.Queue()
        self._elected.clear()
        self._writing = False

    async def _until_elected(self, lease: LeaseChannel) -> bool:
        """Wait for the first delivery (we lead), the channel's end, or a stop."""
        waits = {
            asyncio.ensure_future(self._inbox_nonempty()),
            asyncio.ensure_future(self._stop.wait()),
            asyncio.ensure_future(_wait_future(lease.closing)),
        }
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()
        if lease.is_closed:
            raise LeaseLost("the lease channel closed while standing by")
        return not self._stop.is_set()

    async def _inbox_nonempty(self) -> None:
        delivery = await self._inbox.get()
        self._inbox.put_nowait(delivery)

    # -- leading ------------------------------------------------------------------

    async def _lead(self, lease: LeaseChannel) -> None:
        await self._take_over(lease)
        self.is_leader = True
        self.leader_since = self.clock()
        self.metrics.leader.set(1)
        log.info(
            "scheduler %s leads: %d schedules",
            self.identity,
            len(self.schedules),
            extra={"event": "scheduler.leader", "replica": self.identity},
        )
        queues = sorted({schedule.task.queue for schedule in self.schedules})
        await self.app.declare(queues)
        await self._write_state(lease)
        runners = [
            asyncio.create_task(self._run_schedule(schedule, lease), name=schedule.name)
            for schedule in self.schedules
        ]
        runners.append(asyncio.create_task(self._absorb(lease), name="lease inbox"))
        lost = asyncio.ensure_future(_wait_future(lease.closing))
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            done, _ = await asyncio.wait(
                {*runners, lost, stop}, return_when=asyncio.FIRST_COMPLETED
            )
            if stop in done and not lease.is_closed:
                await self._finish_firing()
        finally:
            for task in (*runners, lost, stop):
                task.cancel()
            await asyncio.gather(*runners, return_exceptions=True)
        for task in done:
            if task in runners and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        if lease.is_closed:
            raise LeaseLost("the lease channel closed")

    async def _finish_firing(self, within: float = 10.0) -> None:
        """On a stop, let a slot being sent be recorded too: its successor would
        otherwise send it again. Runners are cancelled right after, between slots."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await self._quiet.wait()

    async def _take_over(self, lease: LeaseChannel) -> None:
        """Read every state message there is before firing anything.

        Deliveries on a channel arrive before the answer to a later request on it, so
        once a passive declare says no message is ready, all of them are in the inbox.
        """
        while True:
            ready = await lease.ping(self.ping_timeout)
            while not self._inbox.empty():
                self._take(self._inbox.get_nowait())
            if ready == 0:
                break
            await asyncio.sleep(0.05)
        now = self.clock()
        for schedule in self.schedules:
            if schedule.name not in self.state:
                # A schedule new to this system starts now: its past slots were never due.
                self.state[schedule.name] = now
                log.info("schedule %s is new: its first slot is the next one", schedule.name)
        await self._compact(lease)

    def _take(self, delivery: Delivery) -> codec.State:
        got = codec.decode(delivery.body)
        codec.merge(self.state, got)
        self._held.append((delivery, got))
        return got

    async def _absorb(self, lease: LeaseChannel) -> None:
        """Deliveries while leading: our own writes coming back, and replicas joining."""
        while True:
            self._take(await self._inbox.get())
            while not self._inbox.empty():
                self._take(self._inbox.get_nowait())
            await self._compact(lease)

    async def _compact(self, lease: LeaseChannel) -> None:
        """Keep one state message: acknowledge every one a held message covers."""
        best = next(
            (i for i, (_, got) in enumerate(self._held) if codec.covers(got, self.state)), None
        )
        if best is None:
            if not self._writing:
                await self._write_state(lease)
            return
        keep = self._held[best]
        for delivery, _ in self._held:
            if delivery is not keep[0]:
                await lease.ack(delivery)
        self._held = [keep]

    async def _write_state(self, lease: LeaseChannel) -> None:
        async with self._write_lock:
            self._writing = True
            try:
                snapshot = dict(self.state)
                await lease.publish(
                    codec.encode(snapshot, leader=self.identity), within=self.ping_timeout
                )
                await lease.publish(
                    self._status(snapshot), queue=self.status_queue, within=self.ping_timeout
                )
            except _WRITE_FAILED as exc:
                task = asyncio.current_task()
                if isinstance(exc, asyncio.CancelledError) and task and task.cancelling():
                    raise
                raise LeaseLost(f"could not record the state: {exc!r}") from exc
            finally:
                self._writing = False

    def _status(self, snapshot: codec.State) -> bytes:
        since = self.leader_since.isoformat() if self.leader_since else None
        return codec.encode(
            snapshot,
            leader=self.identity,
            leader_since=since,
            written_at=_now().isoformat(),
            next={name: at.isoformat() for name, at in self._next.items()},
        )

    def _step_down(self) -> None:
        if self.is_leader:
            log.warning(
                "scheduler %s no longer leads",
                self.identity,
                extra={"event": "scheduler.standby", "replica": self.identity},
            )
        self.is_leader = False
        self.leader_since = None
        self.metrics.leader.set(0)
        self.metrics.next_fire.clear()
        self._next = {}

    # -- firing -------------------------------------------------------------------

    async def _run_schedule(self, schedule: Schedule, lease: LeaseChannel) -> None:
        while True:
            now = self.clock()
            through = self.state[schedule.name]
            decided = plan(schedule.timing, through, now, schedule.missed, schedule.grace)
            if decided.skipped or len(decided.fire) > 1:
                self._backlog(schedule, decided)
            for slot in decided.fire:
                await self._sleep_until(slot + schedule.offset(slot))
                await self._fire(schedule, slot, lease)
            after = max(self.state[schedule.name], now)
            upcoming = schedule.timing.after(after)
            self._next[schedule.name] = upcoming + schedule.offset(upcoming)
            self.metrics.next_fire.labels(schedule.name).set(self._next[schedule.name].timestamp())
            await self._sleep_until(upcoming + schedule.offset(upcoming))

    def _backlog(self, schedule: Schedule, decided: Plan) -> None:
        """Say what happens to slots that were due while nobody fired them."""
        self.metrics.skipped.labels(schedule.name).inc(decided.skipped)
        first = decided.first_skipped.isoformat() if decided.first_skipped else None
        log.log(
            logging.WARNING if decided.skipped else logging.INFO,
            "schedule %s: %d slots due at once; firing %d, skipping %d missed ones%s (%s)",
            schedule.name,
            len(decided.fire) + decided.skipped,
            len(decided.fire),
            decided.skipped,
            f" from {first}" if first else "",
            schedule.missed.describe(),
            extra={
                "event": "schedule.backlog",
                "schedule": schedule.name,
                "fire": [slot.isoformat() for slot in decided.fire],
                "skipped": decided.skipped,
                "first_skipped": first,
            },
        )

    async def _sleep_until(self, moment: datetime) -> None:
        while True:
            left = (moment - self.clock()).total_seconds()
            if left <= 0:
                return
            await asyncio.sleep(min(left, MAX_SLEEP))

    async def _fire(self, schedule: Schedule, slot: datetime, lease: LeaseChannel) -> None:
        """Send the slot's task (confirmed), then record the slot; retry until both."""
        if self._stop.is_set():
            # Stopping: start no new slot; wait to be cancelled.
            await asyncio.get_running_loop().create_future()
        self._firing.add(schedule.name)
        self._quiet.clear()
        try:
            await self._fire_once(schedule, slot, lease)
        finally:
            self._firing.discard(schedule.name)
            if not self._firing:
                self._quiet.set()

    async def _fire_once(self, schedule: Schedule, slot: datetime, lease: LeaseChannel) -> None:
        task_id = schedule.task_id(slot)
        pause = 0.5
        while True:
            try:
                payload = schedule.build(slot)
                await self._fence(lease)
                try:
                    await self.app.send(schedule.task, payload, task_id=task_id)
                except asyncio.CancelledError:
                    self._unrecorded(
                        schedule, task_id, "was being sent when this replica stopped leading"
                    )
                    raise
                break
            except LeaseLost:
                raise
            except _SEND_AGAIN as exc:
                self._failed(schedule, task_id, exc, pause, logging.WARNING)
            except Exception as exc:  # a payload function's bug must not stop the others
                self._failed(schedule, task_id, exc, pause, logging.ERROR)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 30.0)
        sent = self.clock()
        due = slot + schedule.offset(slot)
        lateness = max((sent - due).total_seconds(), 0.0)
        self.state[schedule.name] = max(self.state[schedule.name], slot)
        try:
            await self._write_state(lease)
        except (LeaseLost, asyncio.CancelledError):
            self._unrecorded(
                schedule, task_id, "was sent but the lease was lost before it was recorded"
            )
            raise
        self.metrics.fires.labels(schedule.name).inc()
        self.metrics.lateness.labels(schedule.name).observe(lateness)
        self.metrics.last_fire.labels(schedule.name).set(sent.timestamp())
        log.info(
            "schedule %s fired %s (%.3f s late)",
            schedule.name,
            task_id,
            lateness,
            extra={
                "event": "schedule.fired",
                "schedule": schedule.name,
                "task_id": task_id,
                "slot": slot.isoformat(),
                "lateness": round(lateness, 4),
                "replica": self.identity,
            },
        )
        if self.sentry_crons:
            _check_in(schedule)

    def _unrecorded(self, schedule: Schedule, task_id: str, what: str) -> None:
        log.error(
            "schedule %s: %s %s; the next leader sends it again with the same id",
            schedule.name,
            task_id,
            what,
            extra={"event": "schedule.unrecorded", "schedule": schedule.name, "task_id": task_id},
        )

    async def _fence(self, lease: LeaseChannel) -> None:
        """Make sure the lease is still ours, right before a send."""
        if lease.is_closed:
            raise LeaseLost("the lease channel is closed")
        try:
            await lease.ping(self.ping_timeout)
        except LEASE_ERRORS as exc:
            task = asyncio.current_task()
            if isinstance(exc, asyncio.CancelledError) and task is not None and task.cancelling():
                raise
            raise LeaseLost(f"the lease did not answer ({type(exc).__name__})") from exc

    def _failed(
        self, schedule: Schedule, task_id: str, exc: BaseException, pause: float, level: int
    ) -> None:
        self.metrics.errors.labels(schedule.name).inc()
        log.log(
            level,
            "schedule %s: sending %s failed (%s: %s); trying again in %.1f s",
            schedule.name,
            task_id,
            type(exc).__name__,
            exc,
            pause,
            exc_info=level >= logging.ERROR and not isinstance(exc, LeveretError),
            extra={"event": "schedule.error", "schedule": schedule.name, "task_id": task_id},
        )


async def _wait_future(future: asyncio.Future[Any]) -> None:
    with contextlib.suppress(BaseException):
        await asyncio.shield(future)


def _check_in(schedule: Schedule) -> None:
    """A Sentry Crons check-in for the slot just sent (when Sentry is set up)."""
    try:
        import sentry_sdk
        from sentry_sdk.crons import capture_checkin
        from sentry_sdk.crons.consts import MonitorStatus
    except ImportError:  # pragma: no cover - sentry-sdk is a dependency
        return
    if not sentry_sdk.is_initialized():
        return
    timing = schedule.timing
    config: Any
    expression = getattr(timing, "expression", None)
    if expression is not None:
        config = {
            "schedule": {"type": "crontab", "value": expression},
            "timezone": getattr(timing, "timezone", "UTC"),
        }
    else:
        interval: timedelta = timing.interval  # type: ignore[attr-defined]
        minutes = max(int(interval.total_seconds() // 60), 1)
        config = {"schedule": {"type": "interval", "value": minutes, "unit": "minute"}}
    capture_checkin(monitor_slug=schedule.name, status=MonitorStatus.OK, monitor_config=config)


__all__ = ["LeaseLost", "Scheduler", "lease_queue", "status_queue"]
