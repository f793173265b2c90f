"""Slots of cron and interval schedules, across daylight saving changes; no waiting."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leveret.errors import ConfigError
from leveret.scheduler import state as codec
from leveret.scheduler.timing import Cron, Every

BERLIN = ZoneInfo("Europe/Berlin")


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)  # type: ignore[misc]


def test_0230_berlin_fires_once_a_day_across_both_2027_transitions() -> None:
    """Documented behaviour: the 02:30 that does not exist (clocks forward on March
    28th) fires at 03:00 CEST; the 02:30 that happens twice (clocks back on October
    31st) fires once, at the first (CEST) occurrence."""
    cron = Cron("30 2 * * *", "Europe/Berlin")
    spring = list(cron.between(local(2027, 3, 26, 12), local(2027, 3, 30, 12)))
    assert [s.isoformat() for s in spring] == [
        "2027-03-27T02:30:00+01:00",
        "2027-03-28T03:00:00+02:00",
        "2027-03-29T02:30:00+02:00",
        "2027-03-30T02:30:00+02:00",
    ]
    autumn = list(cron.between(local(2027, 10, 29, 12), local(2027, 11, 2, 12)))
    assert [s.isoformat() for s in autumn] == [
        "2027-10-30T02:30:00+02:00",
        "2027-10-31T02:30:00+02:00",
        "2027-11-01T02:30:00+01:00",
        "2027-11-02T02:30:00+01:00",
    ]
    year = list(cron.between(local(2026, 12, 31, 12), local(2027, 12, 31, 12)))
    assert len(year) == 365
    assert len({s.astimezone(UTC) for s in year}) == 365


def test_hourly_fires_in_both_repeated_hours_and_skips_the_missing_one() -> None:
    cron = Cron("0 * * * *", "Europe/Berlin")
    back = list(
        cron.between(local(2027, 10, 31, 0) - timedelta(seconds=1), local(2027, 10, 31, 23))
    )
    assert len(back) == 25  # 02:00 CEST and 02:00 CET
    forward = list(
        cron.between(local(2027, 3, 28, 0) - timedelta(seconds=1), local(2027, 3, 28, 23))
    )
    assert len(forward) == 23


def test_a_recorded_slot_read_back_resumes_at_the_right_next_slot() -> None:
    """The state stores slots as ISO text with their offset: reading one back in the
    repeated hour must not fire that hour again."""
    cron = Cron("0 * * * *", "Europe/Berlin")
    first_two = list(cron.between(local(2027, 10, 31, 1, 30), local(2027, 10, 31, 3, 30)))
    assert len(first_two) == 3  # 02:00+02, 02:00+01, 03:00+01
    for recorded, expected in itertools.pairwise(first_two):
        stored = codec.decode(codec.encode({"x": recorded}))["x"]
        assert cron.after(stored) == expected


def test_cron_after_is_strictly_later() -> None:
    cron = Cron("30 2 * * *", "Europe/Berlin")
    slot = local(2027, 6, 1, 2, 30)
    assert cron.after(slot) == local(2027, 6, 2, 2, 30)
    assert cron.after(slot - timedelta(microseconds=1)) == slot


@given(
    seconds=st.integers(min_value=1, max_value=86_400),
    at=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
)
def test_interval_slots_are_aligned_and_strictly_later(seconds: int, at: datetime) -> None:
    every = Every(timedelta(seconds=seconds))
    slot = every.after(at)
    assert slot > at
    assert slot - at <= timedelta(seconds=seconds)
    assert int(slot.timestamp()) % seconds == 0
    assert slot.microsecond == 0


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Cron("61 * * * *"), "invalid cron expression '61 * * * *'"),
        (lambda: Cron("* * *"), "invalid cron expression"),
        (lambda: Cron("0 2 * * *", "Europe/Atlantis"), "unknown time zone 'Europe/Atlantis'"),
        (lambda: Every(timedelta(milliseconds=500)), "shorter than one second"),
        (lambda: Every(timedelta(seconds=1.5)), "whole seconds"),
        (lambda: Every(timedelta(seconds=5), datetime(2026, 1, 1)), "needs a time zone"),
    ],
)
def test_bad_timings_are_refused(make: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("*", r"\*")):
        make()  # type: ignore[operator]
