"""Django's ``send_on_commit`` in a project on PostgreSQL: sent after commit, never on rollback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest

pytest.importorskip("django", reason="pip install 'leveret[django]'")

import django
from django.conf import settings as django_settings
from django.db import connection, connections, transaction

from leveret import ConfigError, InvalidArgument, PayloadInvalid, Settings
from leveret.integrations import django as leveret_django
from tests.apps.django_shop.settings import settings_for
from tests.support.amqp import delete_namespace, fresh_namespace, peek, queue_size
from tests.support.models import Job
from tests.support.postgres import fresh_schema

T = TypeVar("T")


class Rollback(Exception):
    """Raised inside a transaction to roll it back."""


@pytest.fixture(scope="module")
def shop_schema(postgres_url: str) -> Iterator[str]:
    with fresh_schema(postgres_url, "leveret_django") as schema:
        yield schema


@pytest.fixture(scope="module")
def django_thread() -> Iterator[ThreadPoolExecutor]:
    """Django's ORM refuses to run where an event loop runs: it gets a thread of its own."""
    with ThreadPoolExecutor(1, thread_name_prefix="django") as pool:
        yield pool
        pool.submit(connections.close_all).result()


@pytest.fixture
async def shop(
    amqp_url: str, postgres_url: str, shop_schema: str, django_thread: ThreadPoolExecutor
) -> AsyncIterator[Callable[[Callable[[], T]], Any]]:
    """The project set up on its schema and a fresh namespace; ``run(fn)`` runs Django code."""
    namespace = fresh_namespace()
    leveret = {"URL": amqp_url, "NAMESPACE": namespace, "APP_ID": "shop"}
    loop = asyncio.get_running_loop()

    def setup() -> None:
        if not django_settings.configured:
            django_settings.configure(**settings_for(postgres_url, shop_schema, leveret))
            django.setup()
            from tests.apps.django_shop.models import Order

            with connection.schema_editor() as editor:
                editor.create_model(Order)
        else:
            django_settings.LEVERET = leveret
        leveret_django._app = None  # each test reads the setting afresh

    async def run(fn: Callable[[], T]) -> T:
        return await loop.run_in_executor(django_thread, fn)

    await run(setup)
    app = leveret_django.get_app()
    from tests.apps.django_shop.views import send_receipt

    app.add(send_receipt)
    await app.declare()
    yield run
    await app.close()
    await delete_namespace(amqp_url, app.settings, app.queues)


def receipts_queue() -> str:
    return leveret_django.get_app().sender.names.work_queue("shop-receipts")


async def test_a_committed_order_sends_exactly_one_task_after_the_commit(
    shop: Any, amqp_url: str
) -> None:
    from tests.apps.django_shop.models import Order
    from tests.apps.django_shop.views import Receipt, send_receipt

    def place() -> tuple[int, str, int]:
        with transaction.atomic():
            order = Order.objects.create(email="a@example.com")
            task_id = leveret_django.send_on_commit(
                send_receipt, Receipt(order_id=order.pk, email=order.email)
            )
            queued_before_commit = asyncio.run(queue_size(amqp_url, receipts_queue()))
        return order.pk, task_id, queued_before_commit

    order_id, task_id, before = await shop(place)
    assert before == 0
    [message] = await peek(amqp_url, receipts_queue())
    assert message.header.properties.message_id == task_id
    assert json.loads(message.body) == {"order_id": order_id, "email": "a@example.com"}
    assert message.header.properties.app_id == "shop"


async def test_a_rolled_back_order_sends_nothing(shop: Any, amqp_url: str) -> None:
    from tests.apps.django_shop.models import Order
    from tests.apps.django_shop.views import Receipt, place_order, send_receipt

    def abandon() -> int:
        try:
            with transaction.atomic():
                order = Order.objects.create(email="gone@example.com")
                leveret_django.send_on_commit(
                    send_receipt, Receipt(order_id=order.pk, email=order.email)
                )
                raise Rollback
        except Rollback:
            pass
        return Order.objects.filter(email="gone@example.com").count()

    assert await shop(abandon) == 0
    # A committed order afterwards: its task is the only one, so the first never went.
    _, task_id = await shop(lambda: place_order("kept@example.com"))
    assert [m.header.properties.message_id for m in await peek(amqp_url, receipts_queue())] == [
        task_id
    ]


async def test_bad_input_is_refused_before_the_commit(shop: Any, amqp_url: str) -> None:
    from tests.apps.django_shop.models import Order
    from tests.apps.django_shop.views import Receipt, send_receipt

    def wrong(payload: Any, **options: Any) -> int:
        try:
            with transaction.atomic():
                Order.objects.create(email="wrong@example.com")
                leveret_django.send_on_commit(send_receipt, payload, **options)
        except (PayloadInvalid, InvalidArgument):
            pass
        else:
            raise AssertionError(f"{payload!r} {options} was not refused")
        return Order.objects.filter(email="wrong@example.com").count()

    assert await shop(lambda: wrong(Job(n=1))) == 0
    good = Receipt(order_id=1, email="x@example.com")
    assert await shop(lambda: wrong(good, priority=99)) == 0
    assert await shop(lambda: wrong(good, delay=-1)) == 0
    assert await queue_size(amqp_url, receipts_queue()) == 0


async def test_outside_a_transaction_it_sends_at_once(shop: Any, amqp_url: str) -> None:
    from tests.apps.django_shop.views import Receipt, send_receipt

    receipt = Receipt(order_id=7, email="now@example.com")
    task_id = await shop(lambda: leveret_django.send_on_commit(send_receipt, receipt))
    assert [m.header.properties.message_id for m in await peek(amqp_url, receipts_queue())] == [
        task_id
    ]


def test_the_app_comes_from_the_leveret_setting_over_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LEVERET_PUBLISH_DEADLINE", "7")
    app = leveret_django.app_from_settings({"namespace": "shop", "APP_ID": "orders"})
    assert app.settings.namespace == "shop"
    assert app.settings.publish_deadline == 7
    assert app.app_id == "orders"
    assert app.settings.url == Settings().url
    with pytest.raises(ConfigError, match="NAMESPAC"):
        leveret_django.app_from_settings({"NAMESPAC": "typo"})
    with pytest.raises(ConfigError, match="must be a dict"):
        leveret_django.app_from_settings("amqp://x")  # type: ignore[arg-type]
