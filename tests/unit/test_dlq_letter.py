"""Any message in a dead-letter queue can be read, and a replayed copy carries its history."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pamqp.commands import Basic

from leveret import message
from leveret.deadletter import DeadLetter

WHEN = datetime(2024, 5, 1, 12, 0, 5, tzinfo=UTC)


def worker_letter(**extra: Any) -> DeadLetter:
    try:
        raise KeyError("customer 42")
    except KeyError as exc:
        headers = message.error_headers(exc, reason="exhausted", worker="host:7", queue="emails")
    headers[message.ATTEMPT] = 10
    headers[message.FAILED_AT] = int(WHEN.timestamp() * 1000)
    headers[message.ENQUEUED_AT] = 1
    headers["traceparent"] = "00-abc-def-01"
    headers.update(extra)
    props = Basic.Properties(
        message_id="t-1",
        message_type="emails.send",
        priority=5,
        expiration="1000",
        user_id="someone",
        headers=headers,
    )
    return DeadLetter.parse("emails", b'{"order": 1}', props)


def test_a_worker_dead_letter_says_why_it_died() -> None:
    letter = worker_letter()
    assert letter.id == "t-1"
    assert letter.task == "emails.send"
    assert letter.reason == "exhausted"
    assert letter.error_type == "builtins.KeyError"
    assert letter.error_name == "KeyError"
    assert letter.kind == "builtins.KeyError"
    assert letter.describe() == "KeyError: 'customer 42'"
    assert letter.attempts == 10
    assert letter.failed_at == WHEN
    assert letter.worker == "host:7"
    assert letter.origin_queue == "emails"
    assert "KeyError" in (letter.traceback or "")
    assert letter.payload() == {"order": 1}
    assert letter.replays == 0
    assert letter.previous_errors == []


def test_a_broker_dead_letter_reads_x_death_as_delivery_limit() -> None:
    death = {
        "count": 1,
        "reason": "delivery_limit",
        "queue": "ns.q.emails",
        "time": WHEN,
        "exchange": "ns.tasks",
        "routing-keys": ["emails"],
    }
    props = Basic.Properties(
        message_id="t-2",
        message_type="emails.send",
        headers={
            "x-death": [death],
            "x-first-death-reason": "delivery_limit",
            "x-delivery-count": 11,
            message.ATTEMPT: 1,
        },
    )
    letter = DeadLetter.parse("emails", b"{}", props)
    assert letter.reason == "delivery-limit"
    assert letter.error_type is None
    assert letter.kind == "(delivery-limit)"
    assert letter.failed_at == WHEN
    assert letter.origin_queue == "emails"
    assert letter.describe() == "delivery-limit: dead-lettered by RabbitMQ from emails"
    kept = letter.kept_properties("guest")
    assert "x-delivery-count" not in kept.headers
    assert kept.headers["x-death"] == [death]
    assert kept.headers[message.REASON] == "delivery-limit"
    assert kept.headers[message.ORIGIN_QUEUE] == "emails"
    assert kept.headers[message.FAILED_AT] == int(WHEN.timestamp() * 1000)


def test_x_first_death_reason_alone_is_enough() -> None:
    props = Basic.Properties(headers={"x-first-death-reason": b"rejected"})
    assert DeadLetter.parse("q", b"", props).reason == "rejected"


def test_foreign_messages_never_break_reading() -> None:
    odd_headers: list[dict[str, Any] | None] = [
        None,
        {},
        {"x-death": "not a list", message.ATTEMPT: "three", message.FAILED_AT: "yesterday"},
        {"x-death": [1, 2], message.REPLAYS: -4, message.PREVIOUS_ERRORS: "not a list"},
        {message.ERROR_TYPE: b"\xff\xfe", message.PREVIOUS_ERRORS: [b"Bytes: x", None, 3]},
        {message.FAILED_AT: 10**30},
    ]
    for headers in odd_headers:
        props = Basic.Properties(headers=headers)
        letter = DeadLetter.parse("q", b"\x00\x01 not json", props)
        assert letter.id.startswith("~")
        assert letter.task is None
        assert letter.payload() is None
        assert letter.replays >= 0
        assert isinstance(letter.describe(), str)
        assert letter.summary()["queue"] == "q"
    weird = DeadLetter.parse(
        "q", b"", Basic.Properties(headers={message.PREVIOUS_ERRORS: [b"Bytes: x", None, 3]})
    )
    assert weird.previous_errors == ["Bytes: x", "3"]


def test_a_body_nested_too_deeply_is_read_but_not_shown_as_json() -> None:
    deep = DeadLetter.parse("q", b"[" * 100_000 + b"]" * 100_000, Basic.Properties())
    assert deep.read_payload() == (None, "nested too deeply (over 100 levels)")
    assert deep.payload() is None
    assert deep.summary()["queue"] == "q"
    under = DeadLetter.parse("q", b'{"a": ' * 99 + b"1" + b"}" * 99, Basic.Properties())
    assert under.read_payload()[1] is None
    over = DeadLetter.parse("q", b"[" * 101 + b"]" * 101, Basic.Properties())
    assert over.read_payload()[1] == "nested too deeply (over 100 levels)"
    assert DeadLetter.parse("q", b"\xff", Basic.Properties()).read_payload()[1] == "not UTF-8"
    assert DeadLetter.parse("q", b"{no", Basic.Properties()).read_payload()[1] == "not JSON"


def test_ids_of_messages_without_one_are_stable_digests() -> None:
    a = DeadLetter.parse("q", b"same", Basic.Properties())
    b = DeadLetter.parse("q", b"same", Basic.Properties())
    c = DeadLetter.parse("q", b"other", Basic.Properties())
    assert a.id == b.id != c.id


def test_a_replayed_copy_starts_over_and_remembers() -> None:
    letter = worker_letter(**{"x-death": [{"reason": "expired"}], "x-delivery-count": 3})
    props = letter.replay_properties(now_ms=123)
    headers = props.headers
    assert props.message_id == "t-1"
    assert props.message_type == "emails.send"
    assert props.priority == 5
    assert props.delivery_mode == message.PERSISTENT
    assert props.expiration is None
    assert props.user_id is None
    assert headers[message.ATTEMPT] == 1
    assert headers[message.REPLAYS] == 1
    assert headers[message.PREVIOUS_ERRORS] == ["KeyError: 'customer 42'"]
    assert headers[message.PUBLISHED_AT] == 123
    assert headers[message.ENQUEUED_AT] == 1
    assert headers["traceparent"] == "00-abc-def-01"
    for gone in (message.REASON, message.ERROR_TYPE, message.TRACEBACK, "x-death"):
        assert gone not in headers
    assert "x-delivery-count" not in headers


def test_the_error_history_is_bounded() -> None:
    earlier = [f"E{i}: old" for i in range(message.MAX_PREVIOUS_ERRORS)]
    letter = worker_letter(**{message.PREVIOUS_ERRORS: earlier, message.REPLAYS: 20})
    headers = letter.replay_properties(now_ms=1).headers
    history = headers[message.PREVIOUS_ERRORS]
    assert len(history) == message.MAX_PREVIOUS_ERRORS
    assert history[-1] == "KeyError: 'customer 42'"
    assert history[0] == "E1: old"
    assert headers[message.REPLAYS] == 21


def test_kept_copies_drop_only_what_the_broker_would_refuse() -> None:
    letter = worker_letter()
    kept = letter.kept_properties("guest")
    assert kept.user_id is None  # not ours: the broker would refuse it
    assert kept.expiration == "1000"
    assert kept.headers == letter.headers
    mine = DeadLetter.parse("q", b"", Basic.Properties(user_id="guest"))
    assert mine.kept_properties("guest").user_id == "guest"


def test_copies_never_carry_a_direct_reply_to_address() -> None:
    props = Basic.Properties(message_id="r", reply_to="amq.rabbitmq.reply-to.g2dkAA", headers={})
    letter = DeadLetter.parse("q", b"", props)
    assert letter.replay_properties(now_ms=1).reply_to is None
    assert letter.kept_properties("guest").reply_to is None
    plain = DeadLetter.parse("q", b"", Basic.Properties(reply_to="replies"))
    assert plain.replay_properties(now_ms=1).reply_to == "replies"
