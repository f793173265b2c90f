"""What an operator asks of the schedules without leading: what the leader last wrote,
and one firing now.
"""

from __future__ import annotations

import json
import secrets
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime

from leveret.amqp.browse import browse
from leveret.amqp.lease import declared_consumers
from leveret.scheduler.runner import lease_queue, status_queue
from leveret.scheduler.schedules import Schedules


@dataclass
class Status:
    """The leader's last status message, and how many replicas stand in line."""

    replicas: int
    leader: str | None = None
    leader_since: datetime | None = None
    written_at: datetime | None = None
    through: dict[str, datetime] = field(default_factory=dict)
    next: dict[str, datetime] = field(default_factory=dict)


@dataclass(frozen=True)
class Row:
    """One schedule as an operator sees it: when, the last slot fired, the next."""

    name: str
    task: str
    when: str
    missed: str
    last: datetime | None
    next: datetime

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "task": self.task,
            "when": self.when,
            "missed": self.missed,
            "last": self.last.isoformat() if self.last else None,
            "next": self.next.isoformat(),
        }


def overview(schedules: Schedules, status: Status, now: datetime) -> list[Row]:
    """Each schedule with its last fired slot and next fire time: the leader's word for
    the next when it has written one, else the timing's own."""
    return [
        Row(
            name=schedule.name,
            task=schedule.task.name,
            when=schedule.describe(),
            missed=schedule.missed.describe(),
            last=status.through.get(schedule.name),
            next=status.next.get(schedule.name) or schedule.timing.after(now),
        )
        for schedule in schedules
    ]


async def read_status(schedules: Schedules) -> Status:
    app = schedules.app
    namespace = app.settings.namespace
    connection = await app.connector.get()
    counts = await declared_consumers(connection, lease_queue(namespace))
    status = Status(replicas=counts[1] if counts else 0)
    if await declared_consumers(connection, status_queue(namespace)) is None:
        return status
    newest: dict[str, object] | None = None
    async with aclosing(browse(connection, status_queue(namespace))) as messages:
        async for delivery in messages:
            try:
                raw = json.loads(delivery.body)
            except ValueError:
                continue
            if isinstance(raw, dict) and (
                newest is None or str(raw.get("written_at")) > str(newest.get("written_at"))
            ):
                newest = raw
    if newest is None:
        return status
    status.leader = _str(newest.get("leader"))
    status.leader_since = _time(newest.get("leader_since"))
    status.written_at = _time(newest.get("written_at"))
    status.through = _times(newest.get("through"))
    status.next = _times(newest.get("next"))
    return status


async def run_now(schedules: Schedules, name: str) -> str:
    """Send the schedule's task once, now, with an id of its own (``name@run-...``);
    the schedule's slots are not affected."""
    schedule = schedules[name]
    now = datetime.now(UTC)
    task_id = f"{name}@run-{now.isoformat(timespec='milliseconds')}-{secrets.token_hex(3)}"
    await schedules.app.declare([schedule.task.queue])
    return await schedules.app.send(schedule.task, schedule.build(now), task_id=task_id)


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _time(value: object) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _times(value: object) -> dict[str, datetime]:
    found: dict[str, datetime] = {}
    if isinstance(value, dict):
        for name, raw in value.items():
            at = _time(raw)
            if at is not None:
                found[str(name)] = at
    return found
