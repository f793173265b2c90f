"""The demo tasks, tested the way the README's "Testing your tasks" shows."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from leveret import Outcome, PayloadInvalid, Task, TaskNotFound
from leveret.testing import Harness, Kit
from tasks.contracts import LineItem, Receipt, Thumbnail, make_thumbnail, send_receipt

RECEIPT = Receipt(
    order_id=1,
    email="a@example.com",
    placed_at=datetime(2024, 5, 1, tzinfo=UTC),
    items=[LineItem(sku="tea", quantity=2, unit_price=Decimal("3.50"))],
)


async def test_a_receipt_is_sent(leveret_harness: Harness) -> None:
    task_id = await leveret_harness.send(send_receipt, RECEIPT)
    await leveret_harness.run_until_idle()
    [run] = leveret_harness.runs
    assert (run.task_id, run.attempt, run.outcome) == (task_id, 1, Outcome.SUCCEEDED)


async def test_a_thumbnail_too_wide_ends_in_dead_letters(leveret_harness: Harness) -> None:
    await leveret_harness.publish(
        "images.thumbnail", {"image_id": "ab12", "width": 9000, "height": 10}, queue="images"
    )
    await leveret_harness.run_until_idle()
    [letter] = await leveret_harness.dead_letters(queue="images")
    assert letter.reason == "invalid-payload"
    assert letter.task == "images.thumbnail"
    assert leveret_harness.runs == []


async def test_a_busy_image_store_is_retried_after_the_backoff(leveret_kit: Kit) -> None:
    busy = Thumbnail(image_id="0000beef", width=64, height=64)  # 0x0000 % 20 == 0: busy once
    await leveret_kit.send(make_thumbnail, busy)
    await leveret_kit.run_until_idle()
    assert leveret_kit.outcomes() == [Outcome.RETRIED]
    assert "StorageBusy" in leveret_kit.runs[0].error.__class__.__name__
    await leveret_kit.advance(0.5)  # the policy's base: equal jitter waits 0.25..0.5 s
    assert leveret_kit.outcomes() == [Outcome.RETRIED, Outcome.SUCCEEDED]
    retried = leveret_kit.runs[1]
    assert retried.attempt == 2
    assert 0.25 <= retried.at <= 0.5
    assert retried.headers["leveret-last-error"] == "StorageBusy: image store busy"


async def test_receipts_go_before_thumbnails_of_lower_priority(leveret_kit: Kit) -> None:
    await leveret_kit.send(send_receipt, RECEIPT, priority=1)
    await leveret_kit.send(send_receipt, RECEIPT, priority=9)
    assert [m.properties.priority for m in leveret_kit.queued("emails")] == [9, 1]


async def test_sending_what_the_app_does_not_know_fails_at_the_send(leveret_kit: Kit) -> None:
    stranger = Task("billing.refund", Receipt, queue="emails")
    with pytest.raises(TaskNotFound, match=r"billing\.refund"):
        await leveret_kit.send(stranger, RECEIPT)
    with pytest.raises(PayloadInvalid, match="takes Receipt, not Thumbnail"):
        await leveret_kit.send(send_receipt, Thumbnail(image_id="x", width=1, height=1))  # type: ignore[arg-type]
    assert leveret_kit.queued("emails") == []
