"""The frame reader gives aiormq the same frames, and the same errors, as its own."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pamqp.frame
import pytest
from aiormq.connection import FrameReceiver
from aiormq.exceptions import AMQPConnectionError, InvalidFrameError, ProtocolSyntaxError
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from leveret.amqp import compat

DELIVERY = [
    Basic.Deliver(consumer_tag="ctag", delivery_tag=7, exchange="x", routing_key="q"),
    ContentHeader(
        0, 9, Basic.Properties(message_id="m1", message_type="t", headers={"leveret-attempt": 2})
    ),
    ContentBody(b'{"n":123}'),
]
WIRE = b"".join(pamqp.frame.marshal(f, 3) for f in DELIVERY)


async def read_all(data: list[bytes], count: int) -> list[object]:
    reader = asyncio.StreamReader()
    receiver = FrameReceiver(reader)
    receiver.started = True
    for chunk in data:
        reader.feed_data(chunk)
    reader.feed_eof()
    return [await compat.get_frame(receiver) for _ in range(count)]


async def test_frames_are_read_as_aiormq_reads_them() -> None:
    ours = await read_all([WIRE], 3)
    reader = asyncio.StreamReader()
    reader.feed_data(WIRE)
    reader.feed_eof()
    stock = FrameReceiver(reader)
    stock.started = True
    assert compat.STOCK_GET_FRAME is not None
    theirs = [await compat.STOCK_GET_FRAME(stock) for _ in range(3)]

    def wire(got: list[object]) -> list[tuple[int, int, bytes]]:
        return [(n, ch, pamqp.frame.marshal(f, ch)) for n, ch, f in got]  # type: ignore[misc]

    assert wire(ours) == wire(theirs)
    assert b"".join(w for _, _, w in wire(ours)) == WIRE
    assert ours[2][2].value == b'{"n":123}'  # type: ignore[attr-defined]


async def test_frames_split_across_reads() -> None:
    chunks = [WIRE[i : i + 5] for i in range(0, len(WIRE), 5)]
    got = await read_all(chunks, 3)
    assert [type(f) for _, _, f in got] == [Basic.Deliver, ContentHeader, ContentBody]


async def test_a_connection_cut_mid_frame_is_a_connection_error() -> None:
    with pytest.raises(AMQPConnectionError):
        await read_all([WIRE[:20]], 1)


async def test_a_protocol_header_instead_of_a_frame_is_refused() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(b"AMQP\x00\x00\x09\x01")
    with pytest.raises(ProtocolSyntaxError):
        await compat.get_frame(FrameReceiver(reader))


def test_install_replaces_and_uninstall_restores() -> None:
    was_installed = compat.frame_reader_installed()
    try:
        assert compat.install_frame_reader()
        assert FrameReceiver.get_frame is compat.get_frame
        compat.uninstall_frame_reader()
        assert FrameReceiver.get_frame is compat.STOCK_GET_FRAME
    finally:  # as the connections of this test run expect it
        if was_installed:
            compat.install_frame_reader()
        else:
            compat.uninstall_frame_reader()


async def decoded_both(frame: object, channel: int = 3) -> tuple[Any, Any]:
    wire = pamqp.frame.marshal(frame, channel)  # type: ignore[arg-type]
    reader = asyncio.StreamReader()
    reader.feed_data(wire)
    receiver = FrameReceiver(reader)
    receiver.started = True
    ours = await compat.get_frame(receiver)
    return ours, pamqp.frame.unmarshal(wire)


def fields(frame: Any) -> dict[str, Any]:
    if isinstance(frame, ContentHeader):
        return {
            "class_id": frame.class_id,
            "weight": frame.weight,
            "body_size": frame.body_size,
            **{k: getattr(frame.properties, k) for k in Basic.Properties.__slots__},
        }
    if isinstance(frame, ContentBody):
        return {"value": frame.value}
    return {k: getattr(frame, k) for k in frame.__slots__}


PROPERTIES = [
    Basic.Properties(),
    Basic.Properties(
        content_type="application/json",
        delivery_mode=2,
        priority=0,
        message_id="abc",
        timestamp=datetime(2026, 11, 28, 12, 0, 1, tzinfo=UTC),
        message_type="emails.send_receipt",
        app_id="svc",
        headers={"leveret-attempt": 1, "x": "Zoë", "f": 1.5, "l": [1, "a"], "n": None},
    ),
    Basic.Properties(
        content_type="text/plain",
        content_encoding="gzip",
        headers={},
        delivery_mode=1,
        priority=9,
        correlation_id="c",
        reply_to="r",
        expiration="60000",
        message_id="m",
        timestamp=datetime(2200, 1, 1, tzinfo=UTC),
        message_type="t",
        user_id="guest",
        app_id="a",
    ),
]


@pytest.mark.parametrize("props", PROPERTIES)
async def test_content_headers_decode_as_pamqp_decodes_them(props: Basic.Properties) -> None:
    (n, ch, ours), (m, ch2, theirs) = await decoded_both(ContentHeader(0, 1234, props))
    assert (n, ch) == (m, ch2)
    assert type(ours) is ContentHeader
    assert fields(ours) == fields(theirs)


@pytest.mark.parametrize("redelivered", [False, True])
async def test_deliveries_decode_as_pamqp_decodes_them(redelivered: bool) -> None:
    deliver = Basic.Deliver(
        consumer_tag="ctag-1.2", delivery_tag=2**40 + 3, redelivered=redelivered,
        exchange="ns.delivery", routing_key="0.1.émoji-🐇",
    )  # fmt: skip
    (n, ch, ours), (m, ch2, theirs) = await decoded_both(deliver)
    assert (n, ch) == (m, ch2)
    assert fields(ours) == fields(theirs)


async def test_a_body_and_other_methods_decode_as_pamqp_decodes_them() -> None:
    for frame in (ContentBody(b"\x00\xce{}"), Basic.Ack(delivery_tag=9, multiple=True)):
        (n, ch, ours), (m, ch2, theirs) = await decoded_both(frame)
        assert (n, ch, type(ours)) == (m, ch2, type(theirs))
        assert fields(ours) == fields(theirs)


async def test_a_bad_frame_end_is_an_invalid_frame() -> None:
    wire = bytearray(pamqp.frame.marshal(ContentBody(b"{}"), 1))
    wire[-1] = 0
    reader = asyncio.StreamReader()
    reader.feed_data(bytes(wire))
    receiver = FrameReceiver(reader)
    receiver.started = True
    with pytest.raises(InvalidFrameError):
        await compat.get_frame(receiver)
