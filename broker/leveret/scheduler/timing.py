"""When a schedule's slots fall: a cron expression in a time zone, or a fixed interval.

Both are pure functions of time, so every replica computes the same slots and a slot
names the same instant wherever it is computed; that is what makes a task id built
from it (``name@slot``) identify a firing.

Cron expressions are read by cronsim, which follows Debian cron across daylight
saving changes: a time that does not exist on the day the clocks go forward (02:30
in Europe/Berlin) fires once at the end of the gap (03:00), a time that happens twice
when they go back fires once, at its first occurrence; a job that runs every hour
runs in both repeated hours.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from leveret.errors import ConfigError

#: Where interval slots are counted from unless a schedule says otherwise.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Timing:
    """A rule for slots: ``after(t)`` is the first slot strictly later than ``t``."""

    zone: tzinfo

    def after(self, moment: datetime) -> datetime:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def between(self, start: datetime, end: datetime) -> Iterator[datetime]:
        """The slots in (start, end], oldest first."""
        slot = self.after(start)
        while slot <= end:
            yield slot
            slot = self.after(slot)


@dataclass(frozen=True)
class Cron(Timing):
    """A cron expression (5 fields, or 6 with seconds first) read in a time zone."""

    expression: str
    timezone: str = "UTC"
    zone: tzinfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            zone: tzinfo = ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigError(
                f"unknown time zone {self.timezone!r} ({exc}): use an IANA name such as "
                "'Europe/Berlin' or 'UTC'"
            ) from None
        object.__setattr__(self, "zone", zone)
        try:
            CronSim(self.expression, datetime.now(zone))
        except CronSimError as exc:
            raise ConfigError(
                f"invalid cron expression {self.expression!r} ({exc}): five fields, "
                "'minute hour day-of-month month day-of-week', e.g. '30 2 * * *'"
            ) from None

    def after(self, moment: datetime) -> datetime:
        local = moment.astimezone(self.zone)
        # Whole seconds: cronsim counts from the second a moment falls in.
        return next(CronSim(self.expression, local.replace(microsecond=0)))

    def describe(self) -> str:
        return f"cron {self.expression!r} {self.timezone}"


@dataclass(frozen=True)
class Every(Timing):
    """A fixed interval, counted from ``anchor`` (the Unix epoch unless given): slots
    fall on the same instants whenever and wherever the scheduler starts."""

    interval: timedelta
    anchor: datetime = EPOCH
    zone: tzinfo = field(default=UTC, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.interval < timedelta(seconds=1):
            raise ConfigError(f"interval {self.interval} is shorter than one second")
        if self.interval % timedelta(seconds=1):
            raise ConfigError(f"interval {self.interval} must be whole seconds")
        if self.anchor.tzinfo is None:
            raise ConfigError(f"anchor {self.anchor} needs a time zone (e.g. tzinfo=UTC)")

    def after(self, moment: datetime) -> datetime:
        passed = (moment - self.anchor) // self.interval
        return (self.anchor + (passed + 1) * self.interval).astimezone(UTC)

    def describe(self) -> str:
        return f"every {self.interval.total_seconds():g} s"
