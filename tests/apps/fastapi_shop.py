"""A FastAPI service whose lifespan opens and closes the App: the README's FastAPI example."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from pydantic import BaseModel

from leveret import App, Task


class Receipt(BaseModel):
    order_id: int
    email: str


send_receipt = Task("shop.send_receipt", Receipt, queue="shop-receipts")


@asynccontextmanager
async def lifespan(api: FastAPI) -> AsyncIterator[None]:
    async with App(app_id="fastapi-shop") as tasks:  # closed when the server stops
        api.state.tasks = tasks
        yield


api = FastAPI(lifespan=lifespan)


@api.post("/orders/{order_id}/receipt", status_code=202)
async def queue_receipt(order_id: int, receipt: Receipt, request: Request) -> dict[str, str]:
    tasks: App = request.app.state.tasks
    return {"task_id": await tasks.send(send_receipt, receipt)}
