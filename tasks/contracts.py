"""Task contracts: what a producer imports to send a task. No handler code here."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, Field

from leveret import Task


class LineItem(BaseModel):
    sku: str
    quantity: int = Field(gt=0)
    unit_price: Decimal


class Receipt(BaseModel):
    """Send an order's receipt by e-mail."""

    order_id: int
    email: str
    placed_at: datetime
    items: list[LineItem]
    note: str = ""


class Thumbnail(BaseModel):
    """Render a thumbnail of an uploaded image."""

    image_id: str
    width: int = Field(gt=0, le=4096)
    height: int = Field(gt=0, le=4096)


send_receipt = Task("emails.send_receipt", Receipt, queue="emails", priority=5)
make_thumbnail = Task("images.thumbnail", Thumbnail, queue="images", priority=1)

ALL = (send_receipt, make_thumbnail)
