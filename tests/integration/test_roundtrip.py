"""A typed task goes out confirmed and comes back to its handler equal to what was sent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from pydantic import BaseModel

from leveret import App, Task, TaskContext, Worker
from tests.support.waiting import wait_for
from tests.support.workers import running


class Address(BaseModel):
    street: str
    city: str


class Order(BaseModel):
    order_id: int
    customer: str
    total: Decimal
    placed_at: datetime
    ship_to: Address
    tags: list[str]
    notes: dict[str, list[int]]


async def test_payload_round_trips_with_nested_types(make_app) -> None:  # type: ignore[no-untyped-def]
    app: App = make_app()
    place_order = Task("orders.place", Order, queue="orders")
    received: list[tuple[Order, TaskContext]] = []

    @app.handle(place_order)
    async def handle(order: Order, ctx: TaskContext) -> None:
        received.append((order, ctx))

    sent = Order(
        order_id=42,
        customer="Zoë Ñúñez 🐇 李",
        total=Decimal("1234.5678"),
        placed_at=datetime(2026, 11, 28, 12, 30, 15, 123456, tzinfo=timezone(timedelta(hours=5))),
        ship_to=Address(street="Straße 1", city="Kraków"),
        tags=["gift", "ünïcode"],
        notes={"a": [1, 2], "b": []},
    )
    async with running(Worker(app, concurrency=4)):
        task_id = await app.send(place_order, sent)
        await wait_for(lambda: len(received) == 1)

    order, ctx = received[0]
    assert order == sent
    assert order.total == Decimal("1234.5678")
    assert order.placed_at.utcoffset() == timedelta(hours=5)
    assert ctx.task_id == task_id
    assert ctx.attempt == 1
    assert ctx.redelivered is False
    assert ctx.queue == "orders"
    assert ctx.enqueued_at is not None
    assert abs((ctx.enqueued_at - datetime.now(UTC)).total_seconds()) < 60
