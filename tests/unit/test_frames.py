"""The frame reader gives aiormq the same frames, and the same errors, as its own."""

from __future__ import annotations

import asyncio

import pamqp.frame
import pytest
from aiormq.connection import FrameReceiver
from aiormq.exceptions import AMQPConnectionError, ProtocolSyntaxError
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from broker import frames

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
    return [await frames.get_frame(receiver) for _ in range(count)]


async def test_frames_are_read_as_aiormq_reads_them() -> None:
    ours = await read_all([WIRE], 3)
    reader = asyncio.StreamReader()
    reader.feed_data(WIRE)
    reader.feed_eof()
    stock = FrameReceiver(reader)
    stock.started = True
    theirs = [await frames._STOCK(stock) for _ in range(3)]  # type: ignore[misc]

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
        await frames.get_frame(FrameReceiver(reader))


def test_install_replaces_and_uninstall_restores() -> None:
    assert frames.install()
    assert FrameReceiver.get_frame is frames.get_frame
    frames.uninstall()
    assert FrameReceiver.get_frame is frames._STOCK
    frames.install()
