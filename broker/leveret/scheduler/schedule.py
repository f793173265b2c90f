"""One schedule: which task, with what payload, on which slots, and what to do with
slots nobody fired (the scheduler was down).

``plan`` decides, for a schedule whose slots up to ``through`` are handled, what to
fire now. The newest due slot always fires (it is the current one, however late).
Older due slots ("the backlog") fire if they are less than ``grace`` late - a
failover or a restart is not downtime - and beyond that as the missed-slot policy
says: ``Skip()`` fires none of them, ``CatchUp(n)`` the newest ``n``.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel

from leveret.errors import ConfigError
from leveret.scheduler.timing import Timing
from leveret.task import Task


@dataclass(frozen=True)
class Skip:
    """Fire none of the slots missed while no scheduler ran; go on with the next one."""

    def describe(self) -> str:
        return "skip"


@dataclass(frozen=True)
class CatchUp:
    """Fire the newest ``limit`` slots missed while no scheduler ran, oldest first."""

    limit: int

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ConfigError(f"CatchUp(limit={self.limit}): the limit must be at least 1")

    def describe(self) -> str:
        return f"catch up {self.limit}"


MissedPolicy = Skip | CatchUp

#: A payload for each slot: a model instance, or a function of the slot that builds one.
Payload = BaseModel | Callable[[datetime], BaseModel]


@dataclass(frozen=True)
class Plan:
    """What to do now: slots to fire (oldest first), and how many missed ones are given
    up. The skipped slots are all older than the fired ones, so recording the fired
    ones settles them too."""

    fire: list[datetime]
    skipped: int = 0
    first_skipped: datetime | None = None


def plan(
    timing: Timing,
    through: datetime,
    now: datetime,
    missed: MissedPolicy,
    grace: timedelta,
) -> Plan:
    """The slots in (through, now] to fire now, and those given up (see the module)."""
    keep = missed.limit if isinstance(missed, CatchUp) else 0
    caught: deque[datetime] = deque(maxlen=keep)
    recent: list[datetime] = []
    old = 0
    first_old: datetime | None = None
    for slot in timing.between(through, now):
        if recent and now - recent[-1] > grace:
            # A later slot is due and this one is more than grace late: it was missed.
            # (Slots get less late as they go, so ``recent`` holds at most this one.)
            previous = recent.pop()
            old += 1
            first_old = first_old or previous
            caught.append(previous)
        recent.append(slot)
    return Plan(
        fire=[*caught, *recent],
        skipped=old - len(caught),
        first_skipped=first_old if old > len(caught) else None,
    )


@dataclass(frozen=True)
class Schedule:
    """A task sent on every slot of ``timing``, with the id ``name@slot``."""

    name: str
    task: Task[Any]
    payload: Payload
    timing: Timing
    missed: MissedPolicy = field(default_factory=Skip)
    grace: timedelta = timedelta(minutes=1)
    jitter: timedelta = timedelta(0)

    def task_id(self, slot: datetime) -> str:
        """``name@slot`` in ISO 8601 with the slot's UTC offset: one id per firing."""
        return f"{self.name}@{slot.isoformat()}"

    def build(self, slot: datetime) -> BaseModel:
        """The payload for ``slot``: the instance, or what the factory makes of the slot."""
        if isinstance(self.payload, BaseModel):
            return self.payload
        made: object = self.payload(slot)
        if not isinstance(made, BaseModel) or not isinstance(made, self.task.model):
            raise ConfigError(
                f"schedule {self.name!r}: its payload function returned "
                f"{type(made).__name__}, not the {self.task.model.__name__} that task "
                f"{self.task.name!r} takes"
            )
        return made

    def offset(self, slot: datetime) -> timedelta:
        """This slot's jitter: the same on every replica (a hash of name and slot)."""
        if not self.jitter:
            return timedelta(0)
        digest = hashlib.blake2b(self.task_id(slot).encode(), digest_size=8).digest()
        share = int.from_bytes(digest, "big") / 2**64
        return self.jitter * share

    def describe(self) -> str:
        return self.timing.describe()
