"""Publish frames written directly are byte for byte what pamqp writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pamqp.frame
import pytest
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from leveret.amqp import frames_out

HEADERS: list[dict[str, Any] | None] = [
    None,
    {},
    {"leveret-attempt": 1, "leveret-enqueued-at": 1_790_000_000_123},
    {"a": -1, "b": 300, "c": 40_000, "d": -70_000, "e": 3_000_000_000, "f": -(2**40)},
    {"s": "Zoë 🐇", "empty": "", "t": True, "f": 1.5, "l": ["x", 1], "n": None},
    {"nested": {"k": "v"}, "big": 2**70 // 2**8},
]


def pamqp_bytes(exchange: str, key: str, body: bytes, props: Basic.Properties, limit: int) -> bytes:
    frames: list[Any] = [
        Basic.Publish(exchange=exchange, routing_key=key, mandatory=True),
        ContentHeader(0, len(body), props),
    ]
    frames += [ContentBody(body[i : i + limit]) for i in range(0, len(body), limit)]
    return b"".join(pamqp.frame.marshal(f, 5) for f in frames)


@pytest.mark.parametrize("headers", HEADERS)
@pytest.mark.parametrize(
    "stamp",
    [None, datetime(2026, 11, 28, 12, 0, tzinfo=UTC), datetime(2026, 1, 1, 3, 4, 5)],
)
def test_same_bytes_as_pamqp(headers: dict[str, Any] | None, stamp: datetime | None) -> None:
    props = Basic.Properties(
        content_type="application/json",
        headers=headers,
        delivery_mode=2,
        priority=0,
        message_id="0123456789abcdef",
        timestamp=stamp,
        message_type="emails.send_receipt",
        app_id="svc",
    )
    body = b'{"n": 1, "name": "\xc3\xa9"}'
    ours = b"".join(frames_out.publish(5, "ns.tasks", "emails", body, props, 131064))
    assert ours == pamqp_bytes("ns.tasks", "emails", body, props, 131064)


def test_every_property_and_a_body_split_over_frames() -> None:
    props = Basic.Properties(
        content_type="text/plain",
        content_encoding="gzip",
        headers={"x": 1},
        delivery_mode=1,
        priority=9,
        correlation_id="c",
        reply_to="r",
        expiration="60000",
        message_id="m",
        timestamp=datetime(2026, 5, 5, tzinfo=timezone(timedelta(hours=2))),
        message_type="t",
        user_id="guest",
        app_id="a",
    )
    body = bytes(range(256)) * 10
    ours = b"".join(frames_out.publish(5, "", "q", body, props, 1000))
    assert ours == pamqp_bytes("", "q", body, props, 1000)


def test_empty_body_has_no_body_frame() -> None:
    props = Basic.Properties(message_id="m")
    frames = frames_out.publish(5, "x", "q", b"", props, 1000)
    assert len(frames) == 2
    assert b"".join(frames) == pamqp_bytes("x", "q", b"", props, 1000)


def test_an_overlong_short_string_is_refused() -> None:
    with pytest.raises(ValueError, match="short string"):
        frames_out.publish(1, "x", "q" * 256, b"", Basic.Properties(), 1000)


class OwnHeaders(Basic.Properties):
    """A subclass that encodes its headers its own way (here: always an empty table)."""

    def encode_property(self, name: str, value: Any) -> bytes:
        if name == "headers":
            return b"\x00\x00\x00\x00"
        return bytes(super().encode_property(name, value))


def test_a_properties_subclass_encodes_itself() -> None:
    props = OwnHeaders(message_id="m", headers={"x": 1.5})
    assert frames_out.table(props.headers) != b"\x00\x00\x00\x00"
    ours = b"".join(frames_out.publish(5, "x", "q", b"{}", props, 1000))
    assert ours == pamqp_bytes("x", "q", b"{}", props, 1000)
