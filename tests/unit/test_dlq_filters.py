"""Filters select dead letters by task, error, reason, id and age; bad criteria are refused."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pamqp.commands import Basic

from leveret import message, retry
from leveret.deadletter import DeadLetter, Filter, parse_age
from leveret.deadletter.letter import REASONS
from leveret.errors import ConfigError

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def letter(
    *,
    task: str | None = "emails.send",
    task_id: str = "abc123",
    error_type: str | None = "mail.errors.SmtpDown",
    error_message: str = "Connection refused by smtp.example.com",
    reason: str | None = "exhausted",
    failed_at: datetime | None = NOW - timedelta(hours=2),
) -> DeadLetter:
    headers: dict[str, object] = {}
    if error_type:
        headers[message.ERROR_TYPE] = error_type
        headers[message.ERROR_MESSAGE] = error_message
    if reason:
        headers[message.REASON] = reason
    if failed_at:
        headers[message.FAILED_AT] = int(failed_at.timestamp() * 1000)
    props = Basic.Properties(message_id=task_id, message_type=task, headers=headers)
    return DeadLetter.parse("emails", b"{}", props)


@pytest.mark.parametrize(
    ("text", "ago"),
    [
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("2h", timedelta(hours=2)),
        ("1h30m", timedelta(minutes=90)),
        ("3d", timedelta(days=3)),
        ("1w", timedelta(weeks=1)),
        ("0.5h", timedelta(minutes=30)),
    ],
)
def test_durations_count_back_from_now(text: str, ago: timedelta) -> None:
    assert parse_age(text, now=NOW) == NOW - ago


def test_iso_times_are_utc_unless_they_say_otherwise() -> None:
    assert parse_age("2024-04-30T10:00:00", now=NOW) == datetime(2024, 4, 30, 10, tzinfo=UTC)
    assert parse_age("2024-04-30T10:00:00Z", now=NOW) == datetime(2024, 4, 30, 10, tzinfo=UTC)
    moment = parse_age("2024-04-30T12:00:00+02:00", now=NOW)
    assert moment == datetime(2024, 4, 30, 10, tzinfo=UTC)


@pytest.mark.parametrize("bad", ["", "5x", "h", "yesterday", "1h 30"])
def test_unreadable_ages_are_refused_with_examples(bad: str) -> None:
    with pytest.raises(ConfigError, match="duration such as 90s"):
        parse_age(bad)


def test_unknown_filters_are_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"unknown filter colour; known filters: queue, task"):
        Filter.of(colour="red")
    with pytest.raises(ConfigError, match="unknown filters a, b"):
        Filter.of({"a": 1, "b": 2})
    with pytest.raises(ConfigError, match="takes a string"):
        Filter.of(match=3)
    with pytest.raises(ConfigError, match="strings"):
        Filter.of(task=[1])


def test_the_empty_filter_matches_everything() -> None:
    assert Filter().matches(letter())
    assert Filter().selects_all
    assert Filter.of(queue="emails").selects_all
    assert not Filter.of(task="x").selects_all
    assert Filter.coerce(None) == Filter()
    assert Filter.coerce({"task": "a"}) == Filter.of(task="a")


def test_task_names_take_wildcards() -> None:
    assert Filter.of(task="emails.*").matches(letter())
    assert Filter.of(task=["images.*", "emails.send"]).matches(letter())
    assert not Filter.of(task="images.*").matches(letter())
    assert not Filter.of(task="emails.*").matches(letter(task=None))


def test_error_types_match_by_class_or_dotted_name() -> None:
    assert Filter.of(error_type="SmtpDown").matches(letter())
    assert Filter.of(error_type="mail.errors.SmtpDown").matches(letter())
    assert Filter.of(error_type="Smtp*").matches(letter())
    assert not Filter.of(error_type="ValueError").matches(letter())
    assert not Filter.of(error_type="SmtpDown").matches(letter(error_type=None))


def test_text_match_is_on_the_error_in_any_case() -> None:
    assert Filter.of(match="connection REFUSED").matches(letter())
    assert Filter.of(match="smtpdown").matches(letter())
    assert not Filter.of(match="timeout").matches(letter())


def test_reasons_and_id_prefixes() -> None:
    assert Filter.of(reason="exhausted").matches(letter())
    assert not Filter.of(reason="permanent").matches(letter())
    assert Filter.of(reason="unknown").matches(letter(reason=None, error_type=None))
    assert Filter.of(id="abc").matches(letter())
    assert Filter.of(ids=["zzz", "abc123"]).matches(letter())
    assert not Filter.of(id="abd").matches(letter())


def test_a_reason_that_does_not_exist_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown reason 'exhuasted'; the reasons are: exh"):
        Filter.of(reason="exhuasted")
    with pytest.raises(ConfigError, match="unknown reason 'Permanent'"):
        Filter.of(reasons=["exhausted", "Permanent"])


def test_every_reason_is_documented_and_every_documented_reason_exists() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "dead-letters.md").read_text()
    table = docs.split("## What ends up there, and why", 1)[1].split("\n## ", 1)[0]
    first_cells = [row.split("|")[1] for row in table.splitlines() if row.startswith("| `")][1:]
    documented = {name for cell in first_cells for name in re.findall(r"`([a-z-]+)`", cell)}
    assert documented == set(REASONS)
    assert set(retry.REASONS) <= set(REASONS)


def test_ages_bound_when_it_died_and_unknown_times_never_match() -> None:
    now = datetime.now(tz=UTC)
    old = letter(failed_at=now - timedelta(hours=3))
    new = letter(failed_at=now - timedelta(minutes=5))
    assert Filter.of(older_than="1h").matches(old)
    assert not Filter.of(older_than="1h").matches(new)
    assert Filter.of(newer_than="1h").matches(new)
    assert not Filter.of(newer_than="1h").matches(old)
    assert Filter.of(older_than=timedelta(minutes=1), newer_than="1d").matches(new)
    unknown = letter(failed_at=None)
    assert not Filter.of(older_than="1s").matches(unknown)
    assert Filter.of(task="emails.send").matches(unknown)


def test_criteria_combine_with_and() -> None:
    flt = Filter.of(task="emails.*", error_type="ValueError")
    assert not flt.matches(letter())
    assert "task emails.*" in flt.describe()
    assert "error type ValueError" in flt.describe()
    assert Filter().describe() == "all"


def test_queues_are_comma_separated_or_listed() -> None:
    assert Filter.of(queue="a,b").queues == ("a", "b")
    assert Filter.of(queues=["a", "b"]).queues == ("a", "b")
