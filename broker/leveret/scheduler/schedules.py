"""The schedules of an app, declared in code next to its tasks and checked as they are.

    schedules = Schedules(app)
    schedules.cron("nightly-report", report, Report(kind="daily"), "0 2 * * *",
                   timezone="Europe/Berlin", missed=CatchUp(3))
    schedules.every("heartbeat", ping, lambda slot: Ping(at=slot), timedelta(seconds=30))

Everything that can be wrong with a schedule is refused here, when the module that
declares it is imported (so ``leveret scheduler`` and a worker's start fail at once),
with the schedule's name: an invalid cron expression, an unknown time zone, a name
used twice, a payload its task's model refuses.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from types import ModuleType
from typing import Any

from pydantic import BaseModel, ValidationError

from leveret.app import App
from leveret.errors import ConfigError
from leveret.scheduler.schedule import MissedPolicy, Payload, Schedule, Skip
from leveret.scheduler.timing import EPOCH, Cron, Every, Timing
from leveret.task import Task

#: Names go into task ids, metric labels and log lines.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")


class Schedules:
    """An app's schedules, by name; ``leveret scheduler MODULE:APP`` runs them."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._by_name: dict[str, Schedule] = {}

    def cron(
        self,
        name: str,
        task: Task[Any],
        payload: Payload | dict[str, Any],
        expression: str,
        *,
        timezone: str = "UTC",
        missed: MissedPolicy | None = None,
        grace: timedelta | float = 60.0,
        jitter: timedelta | float = 0.0,
    ) -> Schedule:
        """Send ``task`` on every time matching ``expression`` in ``timezone``."""
        timing = self._timing(name, lambda: Cron(expression, timezone))
        return self._add(name, task, payload, timing, missed, grace, jitter)

    def every(
        self,
        name: str,
        task: Task[Any],
        payload: Payload | dict[str, Any],
        interval: timedelta | float,
        *,
        anchor: datetime = EPOCH,
        missed: MissedPolicy | None = None,
        grace: timedelta | float = 60.0,
        jitter: timedelta | float = 0.0,
    ) -> Schedule:
        """Send ``task`` every ``interval`` (seconds or a timedelta), on slots counted
        from ``anchor``."""
        timing = self._timing(name, lambda: Every(_seconds(interval), anchor))
        return self._add(name, task, payload, timing, missed, grace, jitter)

    def _timing(self, name: str, make: Any) -> Timing:
        try:
            timing: Timing = make()
        except ConfigError as exc:
            raise ConfigError(f"schedule {name!r}: {exc}") from None
        return timing

    def _add(
        self,
        name: str,
        task: Task[Any],
        payload: Payload | dict[str, Any],
        timing: Timing,
        missed: MissedPolicy | None,
        grace: timedelta | float,
        jitter: timedelta | float,
    ) -> Schedule:
        if not isinstance(name, str) or not NAME.match(name):
            raise ConfigError(
                f"schedule name {name!r} must start with a letter or digit and hold only "
                "letters, digits and . _ : -"
            )
        if name in self._by_name:
            raise ConfigError(f"two schedules are named {name!r}: give each its own name")
        if not isinstance(task, Task):
            raise ConfigError(f"schedule {name!r}: {task!r} is not a Task")
        grace_td, jitter_td = _seconds(grace), _seconds(jitter)
        if grace_td < timedelta(0) or jitter_td < timedelta(0):
            raise ConfigError(f"schedule {name!r}: grace and jitter cannot be negative")
        schedule = Schedule(
            name=name,
            task=task,
            payload=_checked_payload(name, task, payload),
            timing=timing,
            missed=missed or Skip(),
            grace=grace_td,
            jitter=jitter_td,
        )
        self.app.add(task)
        self._by_name[name] = schedule
        return schedule

    def __getitem__(self, name: str) -> Schedule:
        try:
            return self._by_name[name]
        except KeyError:
            known = ", ".join(sorted(self._by_name)) or "none"
            raise ConfigError(f"no schedule is named {name!r} (known: {known})") from None

    def __iter__(self) -> Iterator[Schedule]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name


def schedules_of(module: ModuleType, app: App) -> list[Schedules]:
    """The ``Schedules`` of ``app`` that ``module`` holds at its top level: how the
    command line finds the schedules of an app it was given as ``MODULE:APP``."""
    return [v for v in vars(module).values() if isinstance(v, Schedules) and v.app is app]


def _seconds(value: timedelta | float) -> timedelta:
    return value if isinstance(value, timedelta) else timedelta(seconds=value)


def _checked_payload(name: str, task: Task[Any], payload: Any) -> Payload:
    """A model instance checked against the task's model (a dict is validated into
    one); a function is checked when it is called, at each slot."""
    model = task.model
    if isinstance(payload, dict):
        try:
            validated: BaseModel = model.model_validate(payload)
            return validated
        except ValidationError as exc:
            raise ConfigError(
                f"schedule {name!r}: its payload fails {model.__name__}: {exc}"
            ) from None
    if isinstance(payload, BaseModel):
        if not isinstance(payload, model):
            raise ConfigError(
                f"schedule {name!r}: its payload is a {type(payload).__name__}, but task "
                f"{task.name!r} takes {model.__name__}"
            )
        try:  # model_construct() skips validation: check what will be sent
            model.model_validate_json(payload.model_dump_json())
        except ValidationError as exc:
            raise ConfigError(
                f"schedule {name!r}: its payload fails {model.__name__}: {exc}"
            ) from None
        checked: BaseModel = payload
        return checked
    if callable(payload):
        factory: Payload = payload
        return factory
    raise ConfigError(
        f"schedule {name!r}: the payload must be a {model.__name__}, a dict of its fields, "
        f"or a function of the slot returning one; got {type(payload).__name__}"
    )
