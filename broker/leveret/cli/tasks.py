"""``declare``, ``send`` and ``schema``: working with an app's tasks from a shell."""

from __future__ import annotations

import argparse
import asyncio
import json

from rich.table import Table

from leveret.cli.common import add_app_argument, fail, load_app, out


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    declare = commands.add_parser("declare", help="declare exchanges, delay levels and queues")
    add_app_argument(declare)
    declare.add_argument("--queues", help="comma-separated queues (default: all the app knows)")
    declare.set_defaults(run=run_declare)

    send = commands.add_parser("send", help="send one task, its arguments as JSON")
    add_app_argument(send)
    send.add_argument("task", help="task name, e.g. emails.send_receipt")
    send.add_argument("payload", help="arguments as a JSON object, e.g. '{\"order_id\": 1}'")
    send.add_argument("--queue", help="needed only for tasks the app does not know")
    send.add_argument("--priority", type=int, default=0)
    send.add_argument("--delay", type=float, default=0.0, help="seconds")
    send.set_defaults(run=run_send)

    schema = commands.add_parser("schema", help="print each task's JSON Schema")
    add_app_argument(schema)
    schema.add_argument("task", nargs="?", help="one task (default: a table of all)")
    schema.set_defaults(run=run_schema)


def run_declare(args: argparse.Namespace) -> int:
    app = load_app(args.app)
    queues = args.queues.split(",") if args.queues else None

    async def declare() -> list[str]:
        async with app:
            return await app.declare(queues)

    names = asyncio.run(declare())
    out.print(
        f"declared namespace [bold]{app.settings.namespace}[/] and queues: {', '.join(names)}"
    )
    return 0


def run_send(args: argparse.Namespace) -> int:
    app = load_app(args.app)
    try:
        payload = json.loads(args.payload)
    except json.JSONDecodeError as exc:
        fail(f"payload is not JSON: {exc}")
    if not isinstance(payload, dict):
        fail("payload must be a JSON object")

    async def send() -> str:
        async with app:
            return await app.send_by_name(
                args.task, payload, queue=args.queue, priority=args.priority, delay=args.delay
            )

    out.print(asyncio.run(send()))
    return 0


def run_schema(args: argparse.Namespace) -> int:
    app = load_app(args.app)
    if args.task:
        task = app.contracts.get(args.task)
        if task is None:
            fail(f"no task {args.task!r}; known: {', '.join(sorted(app.contracts))}")
        out.print_json(json.dumps(task.json_schema()))
        return 0
    table = Table("task", "queue", "priority", "fields")
    for name, task in sorted(app.contracts.items()):
        fields = ", ".join(task.model.model_fields)
        table.add_row(name, task.queue, str(task.priority), fields)
    out.print(table)
    return 0
