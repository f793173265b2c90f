"""Rows of the queues page from items of the management API's ``/api/queues``, in the
shapes RabbitMQ gives them: an idle queue without ``message_stats``, a quorum queue
without ``head_message_timestamp``, rates switched off, figures not yet collected."""

from __future__ import annotations

from typing import Any

from leveret.dashboard.queues import (
    EXPIRED_NOT_COUNTED,
    NO_RATES,
    UNTIMED_HEAD,
    QueueReport,
    row_from_api,
)

NOW = 1_800_000_000.0


def item(**fields: Any) -> dict[str, Any]:
    base = {"name": "ns.q.orders", "type": "classic", "messages_ready": 0, "consumers": 0}
    return {**base, "messages_unacknowledged": 0, **fields}


def test_an_idle_queue_without_message_stats_has_zero_rates() -> None:
    row = row_from_api(item(message_stats=None), "work", "orders", NOW)
    assert row is not None
    assert (row.rate_in, row.rate_out, row.unknown) == (0.0, 0.0, {})


def test_a_count_that_never_happened_is_a_zero_rate() -> None:
    stats = {"publish": 5, "publish_details": {"rate": 2.5}}
    row = row_from_api(item(message_stats=stats), "work", "orders", NOW)
    assert row is not None
    assert (row.rate_in, row.rate_out) == (2.5, 0.0)


def test_counts_without_rates_say_rates_are_off() -> None:
    row = row_from_api(item(message_stats={"publish": 5, "ack": 2}), "work", "orders", NOW)
    assert row is not None
    assert (row.rate_in, row.rate_out) == (None, None)
    assert row.unknown == {"rate_in": NO_RATES, "rate_out": NO_RATES}


def test_the_oldest_age_comes_from_the_head_timestamp_and_is_never_negative() -> None:
    row = row_from_api(item(messages_ready=3, head_message_timestamp=NOW - 42), "work", "o", NOW)
    assert row is not None
    assert row.oldest_age == 42
    ahead = row_from_api(item(messages_ready=3, head_message_timestamp=NOW + 5), "work", "o", NOW)
    assert ahead is not None
    assert ahead.oldest_age == 0


def test_a_missing_age_says_why_only_when_there_is_a_message() -> None:
    quorum = row_from_api(item(type="quorum", messages_ready=4), "work", "ledger", NOW)
    assert quorum is not None
    assert quorum.oldest_age is None
    assert "classic queues only" in quorum.unknown["oldest_age"]
    untimed = item(messages_ready=1, head_message_timestamp=None)
    classic = row_from_api(untimed, "work", "orders", NOW)
    assert classic is not None
    assert classic.unknown["oldest_age"] == UNTIMED_HEAD
    empty = row_from_api(item(type="quorum"), "work", "ledger", NOW)
    assert empty is not None
    assert "oldest_age" not in empty.unknown


def test_delay_levels_have_no_out_rate_and_say_why() -> None:
    row = row_from_api(item(name="ns.delay.3", messages_ready=2), "delay level 3", None, NOW)
    assert row is not None
    assert row.rate_out is None
    assert row.unknown["rate_out"] == EXPIRED_NOT_COUNTED


def test_an_item_without_counts_is_no_row() -> None:
    assert row_from_api({"name": "ns.q.orders", "type": "quorum"}, "work", "o", NOW) is None


def test_notes_name_the_column_once_for_the_rows_shown() -> None:
    rows = [
        row_from_api(item(name=f"ns.q.{n}", type="quorum", messages_ready=1), "work", n, NOW)
        for n in ("a", "b")
    ]
    idle_level = row_from_api(item(name="ns.delay.0"), "delay level 0", None, NOW)
    report = QueueReport("management", "", [r for r in (*rows, idle_level) if r is not None])
    assert [r.name for r in report.shown] == ["ns.q.a", "ns.q.b"]
    [(column, why)] = report.notes
    assert column == "oldest"
    assert "classic queues only" in why
