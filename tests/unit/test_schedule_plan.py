"""What a scheduler fires after a gap, by missed-slot policy; and what a schedule refuses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from leveret import App, Task
from leveret.errors import ConfigError
from leveret.scheduler import CatchUp, Every, Schedules, Skip, plan
from leveret.scheduler import state as codec

T0 = datetime(2027, 1, 1, tzinfo=UTC)
SECOND = timedelta(seconds=1)
EVERY = Every(SECOND)


class Report(BaseModel):
    kind: str
    days: int = 1


report = Task("reports.build", Report, queue="reports")


def test_on_time_fires_the_one_slot() -> None:
    decided = plan(EVERY, T0, T0 + SECOND + timedelta(milliseconds=3), Skip(), SECOND * 60)
    assert decided.fire == [T0 + SECOND]
    assert decided.skipped == 0


def test_nothing_due_fires_nothing() -> None:
    decided = plan(EVERY, T0, T0 + timedelta(milliseconds=999), Skip(), SECOND)
    assert decided.fire == []


@pytest.mark.parametrize(
    ("policy", "fired", "skipped"),
    [
        (Skip(), [12], 11),
        (CatchUp(1), [11, 12], 10),
        (CatchUp(3), [9, 10, 11, 12], 8),
        (CatchUp(50), list(range(1, 13)), 0),
    ],
)
def test_after_a_gap_of_twelve_slots_the_policy_decides(
    policy: Skip | CatchUp, fired: list[int], skipped: int
) -> None:
    """Stopped after slot 0, back at 12.2 s with no grace: the current slot (12)
    always fires; the eleven missed ones as the policy says."""
    decided = plan(EVERY, T0, T0 + SECOND * 12.2, policy, timedelta(0))
    assert decided.fire == [T0 + SECOND * n for n in fired]
    assert decided.skipped == skipped
    assert decided.first_skipped == (T0 + SECOND if skipped else None)


def test_slots_within_grace_fire_whatever_the_policy() -> None:
    """A failover of ten seconds is not downtime: with a minute of grace, all fire."""
    decided = plan(EVERY, T0, T0 + SECOND * 10.5, Skip(), timedelta(minutes=1))
    assert decided.fire == [T0 + SECOND * n for n in range(1, 11)]


@given(
    gap=st.integers(min_value=0, max_value=300),
    grace=st.integers(min_value=0, max_value=100),
    limit=st.one_of(st.none(), st.integers(min_value=1, max_value=400)),
)
def test_every_due_slot_is_fired_or_skipped_once_in_order(
    gap: int, grace: int, limit: int | None
) -> None:
    policy = Skip() if limit is None else CatchUp(limit)
    now = T0 + SECOND * gap + timedelta(milliseconds=500)
    decided = plan(EVERY, T0, now, policy, SECOND * grace)
    assert decided.fire == sorted(decided.fire)
    assert len(decided.fire) + decided.skipped == gap
    if gap:
        assert decided.fire[-1] == T0 + SECOND * gap  # the current slot always fires
        late = [s for s in decided.fire[:-1] if now - s > SECOND * grace]
        assert len(late) <= (limit or 0)


def test_state_merge_keeps_each_schedules_newest_slot() -> None:
    mine = {"a": T0, "b": T0 + SECOND}
    assert codec.merge(mine, {"a": T0 + SECOND * 5, "b": T0, "c": T0}) is True
    assert mine == {"a": T0 + SECOND * 5, "b": T0 + SECOND, "c": T0}
    assert codec.covers(mine, {"a": T0})
    assert not codec.covers({"a": T0}, mine)
    assert codec.decode(b"not json") == {}
    assert codec.decode(codec.encode(mine, leader="x")) == mine


def test_task_ids_name_the_schedule_and_the_slot() -> None:
    schedules = Schedules(App())
    nightly = schedules.cron(
        "nightly-report", report, Report(kind="n"), "0 2 * * *", timezone="Europe/Berlin"
    )
    slot = nightly.timing.after(datetime(2026, 11, 30, 12, tzinfo=UTC))
    assert nightly.task_id(slot) == "nightly-report@2026-12-01T02:00:00+01:00"


def test_jitter_is_the_same_everywhere_and_within_bounds() -> None:
    schedules = Schedules(App())
    tick = schedules.every("tick", report, {"kind": "t"}, 60, jitter=30)
    offsets = {tick.offset(T0 + SECOND * 60 * n) for n in range(50)}
    assert all(timedelta(0) <= o < timedelta(seconds=30) for o in offsets)
    assert len(offsets) > 40
    assert tick.offset(T0) == tick.offset(T0)


def test_a_payload_function_is_called_per_slot() -> None:
    schedules = Schedules(App())
    daily = schedules.every("daily", report, lambda slot: Report(kind=slot.isoformat()), 86400)
    assert daily.build(T0) == Report(kind=T0.isoformat())


@pytest.mark.parametrize(
    ("declare", "message"),
    [
        (
            lambda s: s.cron("n", report, Report(kind="x"), "0 25 * * *"),
            "schedule 'n': invalid cron",
        ),
        (
            lambda s: s.cron("n", report, Report(kind="x"), "0 2 * * *", timezone="Mars/Base"),
            "schedule 'n': unknown time zone 'Mars/Base'",
        ),
        (lambda s: s.every("n", report, {"kind": 3}, 60), "schedule 'n': its payload fails Report"),
        (
            lambda s: s.every("n", report, Report.model_construct(kind=None), 60),
            "schedule 'n': its payload fails Report",
        ),
        (lambda s: s.every("n", report, "daily", 60), "schedule 'n': the payload must be"),
        (lambda s: s.every("n", report, {"kind": "x"}, 0.5), "schedule 'n': interval"),
        (lambda s: s.every("bad name", report, {"kind": "x"}, 60), "schedule name 'bad name'"),
        (
            lambda s: s.every("n", report, {"kind": "x"}, 60, missed=CatchUp(0)),
            "CatchUp\\(limit=0\\)",
        ),
    ],
)
def test_bad_schedules_are_refused_naming_them(declare: object, message: str) -> None:
    schedules = Schedules(App())
    with pytest.raises(ConfigError, match=message):
        declare(schedules)  # type: ignore[operator]
    assert len(schedules) == 0


def test_two_schedules_with_one_name_are_refused() -> None:
    schedules = Schedules(App())
    schedules.every("twice", report, {"kind": "x"}, 60)
    with pytest.raises(ConfigError, match="two schedules are named 'twice'"):
        schedules.cron("twice", report, {"kind": "y"}, "0 2 * * *")


def test_a_payload_function_returning_the_wrong_model_is_refused_at_the_slot() -> None:
    schedules = Schedules(App())
    wrong = schedules.every("wrong", report, lambda slot: codec_model(), 60)
    with pytest.raises(ConfigError, match="returned Other, not the Report"):
        wrong.build(T0)
    with pytest.raises(ConfigError, match="no schedule is named 'missing' \\(known: wrong\\)"):
        schedules["missing"]


class Other(BaseModel):
    x: int = 1


def codec_model() -> BaseModel:
    return Other()
