"""Wrong arguments to a send are refused before connecting, with errors of our tree."""

from __future__ import annotations

import subprocess
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import BaseModel

from leveret import App, InvalidArgument, LeveretError, PayloadInvalid, Retry, Task
from tests.support import ROOT
from tests.support.processes import leveret_command

#: Nothing listens here: a test that reached the broker would fail, not pass.
NOWHERE = "amqp://guest:guest@127.0.0.1:1/"


class Order(BaseModel):
    order_id: int


class Other(BaseModel):
    name: str


order = Task("orders.ship", Order, queue="orders")
#: The app ``leveret send`` loads in the CLI test.
cli_app = App(url=NOWHERE, app_id="send-arguments-test")
cli_app.add(order)


def app() -> App:
    built = App(url=NOWHERE, connect_deadline=0.5)
    built.add(order)
    return built


SOON = datetime.now(UTC) + timedelta(seconds=5)


@pytest.mark.parametrize(
    ("send", "match"),
    [
        (lambda a: a.send(order, Order(order_id=1), priority=11), "priority must be 0..10"),
        (lambda a: a.send(order, Order(order_id=1), priority=-1), "priority must be 0..10"),
        (lambda a: a.send(order, Order(order_id=1), delay=-5), "delay must be >= 0"),
        (
            lambda a: a.send(order, Order(order_id=1), delay=timedelta(seconds=-5)),
            "delay must be >= 0",
        ),
        (
            lambda a: a.send(order, Order(order_id=1), at=datetime.now() + timedelta(seconds=5)),
            "timezone-aware",
        ),
        (lambda a: a.send(order, Order(order_id=1), delay=5, at=SOON), "not both"),
        (
            lambda a: a.send(order, Order(order_id=1), delay=timedelta(days=10_000)),
            "longest the delay levels allow",
        ),
        (lambda a: a.send_many(order, [Order(order_id=1)], priority=11), "priority"),
        (lambda a: a.send_many(order, [Order(order_id=1)], delay=-1), "delay must be >= 0"),
    ],
)
async def test_a_wrong_argument_is_an_invalid_argument(
    send: Callable[[App], Awaitable[object]], match: str
) -> None:
    async with app() as sender:
        with pytest.raises(InvalidArgument, match=match) as caught:
            await send(sender)
    # Still what these were before they joined the tree.
    assert isinstance(caught.value, LeveretError)
    assert isinstance(caught.value, ValueError)
    assert sender.connector.connection is None  # refused before connecting


async def test_a_payload_of_the_wrong_model_is_payload_invalid() -> None:
    async with app() as sender:
        with pytest.raises(PayloadInvalid, match="takes Order, not Other"):
            await sender.send(order, Other(name="x"))  # type: ignore[arg-type]
        with pytest.raises(PayloadInvalid, match="send_by_name"):
            await sender.send_many(order, [Other(name="x")])  # type: ignore[list-item]


@pytest.mark.parametrize("delay", [timedelta(seconds=-1), -0.5, float("nan"), float("-inf")])
def test_a_negative_or_nan_retry_delay_is_an_invalid_argument(delay: timedelta | float) -> None:
    with pytest.raises(InvalidArgument, match=">= 0"):
        Retry(delay=delay)


def leveret(*args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "LEVERET_URL": NOWHERE, "COLUMNS": "40"}
    return subprocess.run(
        leveret_command(*args),
        env={**env, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("orders.ship", '{"order_id": 1}', "--priority", "11"), "priority must be 0..10"),
        (("orders.unknown", "{}", "--queue", "orders", "--priority", "11"), "priority"),
        (("orders.ship", '{"order_id": 1}', "--delay", "-5"), "delay must be >= 0"),
    ],
)
def test_cli_send_with_a_wrong_argument_prints_one_line_and_exits_2(
    args: tuple[str, ...], match: str
) -> None:
    done = leveret("send", "tests.unit.test_send_arguments:cli_app", *args)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr  # not wrapped, even in 40 columns
    assert lines[0].startswith("error: ")
    assert match in lines[0]
    assert done.stdout == ""
