"""What a Django service writes: the order row and its receipt task, committed together."""

from __future__ import annotations

from django.db import transaction
from pydantic import BaseModel

from leveret import Task
from leveret.integrations.django import send_on_commit
from tests.apps.django_shop.models import Order


class Receipt(BaseModel):
    order_id: int
    email: str


send_receipt = Task("shop.send_receipt", Receipt, queue="shop-receipts")


def place_order(email: str) -> tuple[Order, str]:
    """Save an order and send its receipt once the order is committed."""
    with transaction.atomic():
        order = Order.objects.create(email=email)
        task_id = send_on_commit(send_receipt, Receipt(order_id=order.pk, email=email))
    return order, task_id
