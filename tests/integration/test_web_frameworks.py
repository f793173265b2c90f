"""The README's Flask and FastAPI services, driven through their test clients."""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import Iterator
from types import ModuleType

import pytest

from leveret import App
from tests.support.amqp import ids_in

pytest.importorskip("flask", reason="pip install 'leveret[flask]'")
pytest.importorskip("fastapi", reason="pip install 'leveret[fastapi]'")

from fastapi.testclient import TestClient


@pytest.fixture
def service(amqp_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The services read the broker and namespace from the environment, as in production."""
    monkeypatch.setenv("LEVERET_URL", amqp_url)
    monkeypatch.setenv("LEVERET_NAMESPACE", namespace)
    yield namespace
    for name in ("tests.apps.flask_shop", "tests.apps.fastapi_shop"):
        sys.modules.pop(name, None)  # its App belongs to this test's namespace


def load(name: str) -> ModuleType:
    return importlib.import_module(f"tests.apps.{name}")


async def test_a_flask_view_sends_with_app_sync(service: str, make_app) -> None:  # type: ignore[no-untyped-def]
    shop = load("flask_shop")
    declarer: App = make_app()
    declarer.add(shop.send_receipt)
    await declarer.declare()
    client = shop.web.test_client()

    def post(order_id: int, body: object) -> tuple[int, dict[str, str]]:
        response = client.post(f"/orders/{order_id}/receipt", json=body)
        return response.status_code, response.get_json()

    try:
        status, body = await asyncio.to_thread(post, 1, {"email": "a@example.com"})
        assert status == 202, body
        queue = declarer.sender.names.work_queue("shop-receipts")
        assert await ids_in(declarer.settings.urls[0], queue) == [body["task_id"]]
    finally:
        await asyncio.to_thread(shop.tasks.sync.close)


async def test_fastapi_lifespan_opens_and_closes_the_app(service: str, make_app) -> None:  # type: ignore[no-untyped-def]
    shop = load("fastapi_shop")
    declarer: App = make_app()
    declarer.add(shop.send_receipt)
    await declarer.declare()

    def scenario() -> tuple[int, dict[str, str], App]:
        with TestClient(shop.api) as client:  # runs the lifespan: the App opens ...
            response = client.post("/orders/2/receipt", json={"order_id": 2, "email": "b@x.y"})
            tasks: App = shop.api.state.tasks
            assert tasks.connector.connection is not None
        return response.status_code, response.json(), tasks  # ... and is closed here

    status, body, tasks = await asyncio.to_thread(scenario)
    assert status == 202, body
    assert tasks.connector.connection is None
    queue = declarer.sender.names.work_queue("shop-receipts")
    assert await ids_in(declarer.settings.urls[0], queue) == [body["task_id"]]
