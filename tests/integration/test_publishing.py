"""ConfirmPublisher confirms: nothing is reported as sent that RabbitMQ did not take."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel

from leveret import App, PayloadInvalid, PayloadTooLarge, Task, Unroutable
from tests.support.models import Job as Ping


async def test_send_to_a_queue_nobody_declared_raises_unroutable(make_app) -> None:  # type: ignore[no-untyped-def]
    app: App = make_app()
    nowhere = Task("ping.nowhere", Ping, queue="nobody-listens")
    with pytest.raises(Unroutable, match="nobody-listens"):
        await app.send(nowhere, Ping(n=1))
    with pytest.raises(Unroutable, match="nobody-listens"):
        await app.send(nowhere, Ping(n=1), delay=5)


async def test_send_returns_the_id_of_a_message_the_broker_holds(make_app) -> None:  # type: ignore[no-untyped-def]
    app: App = make_app()
    ping = app.add(Task("ping.held", Ping, queue="held"))
    await app.declare()
    ids = [await app.send(ping, Ping(n=i)) for i in range(5)]
    ids += await app.send_many(ping, [Ping(n=i) for i in range(200)])
    assert len(set(ids)) == 205

    connection = await app.connector.get()
    channel = await connection.channel()
    queue = await channel.declare_queue(app.sender.names.work_queue("held"), passive=True)
    assert queue.declaration_result.message_count == 205
    seen = []
    async with queue.iterator() as messages:
        async for message in messages:
            seen.append(message.message_id)
            assert message.delivery_mode == 2
            assert message.content_type == "application/json"
            assert message.type == "ping.held"
            await message.ack()
            if len(seen) == 205:
                break
    assert sorted(seen) == sorted(ids)


async def test_concurrent_sends_share_the_channel_and_all_confirm(make_app) -> None:  # type: ignore[no-untyped-def]
    app: App = make_app()
    ping = app.add(Task("ping.concurrent", Ping, queue="concurrent"))
    await app.declare()
    ids = await asyncio.gather(*(app.send(ping, Ping(n=i)) for i in range(300)))
    assert len(set(ids)) == 300


async def test_oversize_and_wrong_model_are_refused_before_sending(make_app) -> None:  # type: ignore[no-untyped-def]
    app: App = make_app(max_payload_bytes=1000)

    class Blob(BaseModel):
        data: str

    blob = app.add(Task("blob.big", Blob, queue="blobs"))
    with pytest.raises(PayloadTooLarge, match="over the limit of 1000"):
        await app.send(blob, Blob(data="x" * 2000))
    with pytest.raises(PayloadInvalid, match="takes Blob"):
        await app.send(blob, Ping(n=1))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="priority"):
        await app.send(blob, Blob(data=""), priority=99)
