"""Messages no task can run are dead-lettered at once with a reason; the worker goes on."""

from __future__ import annotations

import json

import aio_pika
from pydantic import BaseModel, Field

from leveret import App, Task, Worker
from leveret import message as wire
from tests.support.deadletters import dead_letters
from tests.support.waiting import wait_for
from tests.support.workers import running


class Greeting(BaseModel):
    name: str = Field(min_length=1)


async def test_each_kind_of_bad_message_is_dead_lettered_with_its_reason(  # type: ignore[no-untyped-def]
    make_app,
) -> None:
    app: App = make_app(max_payload_bytes=4096)
    greet = Task("greet", Greeting, queue="greetings")
    greeted: list[str] = []

    @app.handle(greet)
    async def handle(payload: Greeting) -> None:
        greeted.append(payload.name)

    bad = {
        "not-json": (b"\x00\xffnot json{", "greet"),
        "unknown": (b'{"name": "x"}', "no.such.task"),
        "invalid": (b'{"name": ""}', "greet"),
        "oversize": (json.dumps({"name": "x" * 5000}).encode(), "greet"),
    }
    async with running(Worker(app, concurrency=2)):
        connection = await app.connector.get()
        channel = await connection.channel()
        exchange = await channel.get_exchange(app.sender.names.tasks_exchange)
        for i, (label, (body, task_name)) in enumerate(bad.items()):
            await app.send(greet, Greeting(name=f"before-{i}"))
            await exchange.publish(
                aio_pika.Message(body, type=task_name, message_id=label), routing_key="greetings"
            )
            await app.send(greet, Greeting(name=f"after-{i}"))
        await wait_for(lambda: len(greeted) == 8)
        dead = await dead_letters(app, "greetings", 4)

    reasons = {m.message_id: m.headers[wire.REASON] for m in dead}
    assert reasons == {
        "not-json": "malformed",
        "unknown": "unknown-task",
        "invalid": "invalid-payload",
        "oversize": "oversize",
    }
    for m in dead:
        assert m.headers[wire.ORIGIN_QUEUE] == "greetings"
        assert m.headers[wire.ERROR_MESSAGE]
        assert m.body == bad[str(m.message_id)][0], "the body is kept byte for byte"
    assert sorted(greeted) == sorted(
        [f"before-{i}" for i in range(4)] + [f"after-{i}" for i in range(4)]
    )


async def test_foreign_header_values_survive_a_dead_letter_unchanged(make_app) -> None:  # type: ignore[no-untyped-def]
    from leveret.amqp.table import ExactProperties

    app: App = make_app()
    greet = Task("greet", Greeting, queue="foreign")
    app.handle(greet)(lambda payload: None)
    headers = {"ratio": 0.1, "blob": b"\xff\x00", "nested": {"when": 1.5e300}, "tags": [1, "a"]}
    async with running(Worker(app)):
        connection = await app.connector.get()
        raw = await (await connection.channel()).get_underlay_channel()
        await raw.basic_publish(
            b'{"name": ""}',
            exchange=app.sender.names.tasks_exchange,
            routing_key="foreign",
            properties=ExactProperties(
                message_type="greet",
                message_id="odd-headers",
                reply_to="amq.rabbitmq.reply-to.g1h2AA",
                headers=headers,
            ),
        )
        [dead] = await dead_letters(app, "foreign", 1)
    assert dead.headers[wire.REASON] == "invalid-payload"
    for key, value in headers.items():
        assert dead.headers[key] == value, key
