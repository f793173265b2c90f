"""A Flask service that sends a task from a view: the README's Flask example."""

from __future__ import annotations

from flask import Flask, request
from pydantic import BaseModel

from leveret import App, LeveretError, PayloadInvalid, Task


class Receipt(BaseModel):
    order_id: int
    email: str


send_receipt = Task("shop.send_receipt", Receipt, queue="shop-receipts")

tasks = App(app_id="flask-shop")  # LEVERET_URL, LEVERET_NAMESPACE, ... from the environment
web = Flask(__name__)


@web.post("/orders/<int:order_id>/receipt")
def queue_receipt(order_id: int) -> tuple[dict[str, str], int]:
    receipt = Receipt(order_id=order_id, email=request.json["email"])  # type: ignore[index]
    task_id = tasks.sync.send(send_receipt, receipt)  # returns once RabbitMQ confirmed it
    return {"task_id": task_id}, 202


@web.errorhandler(PayloadInvalid)
def refused(error: PayloadInvalid) -> tuple[dict[str, str], int]:
    return {"error": str(error)}, 400


@web.errorhandler(LeveretError)
def not_sent(error: LeveretError) -> tuple[dict[str, str], int]:
    return {"error": str(error)}, 503  # not sent: the client may retry
