"""The demo workload: two worker processes, a producer of mixed-priority tasks, a summary.

    python -m tasks.demo [--tasks 3000] [--workers 2]

It finds RabbitMQ as ``leveret.ops.discovery`` describes, works under a namespace of its own,
and removes everything it declared when it ends.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import aio_pika
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from leveret import App, BrokerUnavailable
from leveret.amqp.connection import mask_url
from leveret.amqp.topology import Topology
from leveret.ops.discovery import find_broker
from tasks.contracts import ALL, LineItem, Receipt, Thumbnail, make_thumbnail, send_receipt

console = Console()
ROOT = Path(__file__).resolve().parent.parent


def receipt(n: int, priority: int) -> Receipt:
    return Receipt(
        order_id=n,
        email=f"customer{n}@example.com",
        placed_at=datetime.now(UTC),
        items=[LineItem(sku=f"SKU-{n % 97}", quantity=1 + n % 3, unit_price=Decimal("9.99"))],
        note=str(priority),
    )


def start_workers(
    count: int, url: str, namespace: str, ledger: Path
) -> list[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "LEVERET_URL": url,
        "LEVERET_NAMESPACE": namespace,
        "DEMO_LEDGER": str(ledger),
        "PYTHONPATH": str(ROOT),
    }
    return [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "leveret",
                "--log-level",
                "WARNING",
                "worker",
                "tasks.handlers:app",
                "--concurrency",
                "32",
            ],
            env=env,
            cwd=ROOT,
        )
        for _ in range(count)
    ]


def read_ledger(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if line]


async def produce(app: App, total: int, ledger: Path) -> tuple[float, float, Counter[int]]:
    """Send ``total`` tasks in batches of one priority each; wait until all are done."""
    by_priority: Counter[int] = Counter()
    columns = (
        TextColumn("{task.description:>5}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    start = time.perf_counter()
    with Progress(*columns, console=console) as progress:
        sent_bar = progress.add_task("sent", total=total)
        done_bar = progress.add_task("done", total=total)
        sent = 0
        while sent < total:
            size = min(100, total - sent)
            priority = random.choice((0, 0, 1, 3, 5, 9))
            if random.random() < 0.8:
                await app.send_many(
                    send_receipt,
                    [receipt(sent + i, priority) for i in range(size)],
                    priority=priority,
                )
            else:
                thumbs = [
                    Thumbnail(image_id=uuid.uuid4().hex, width=120 + priority, height=90)
                    for _ in range(size)
                ]
                await app.send_many(make_thumbnail, thumbs, priority=priority)
            by_priority[priority] += size
            sent += size
            progress.update(sent_bar, completed=sent)
            progress.update(done_bar, completed=len(read_ledger(ledger)))
        sent_at = time.perf_counter()
        deadline = time.monotonic() + 120
        while (done := len(read_ledger(ledger))) < total and time.monotonic() < deadline:
            progress.update(done_bar, completed=done)
            await asyncio.sleep(0.1)
        progress.update(done_bar, completed=len(read_ledger(ledger)))
    return sent_at - start, time.perf_counter() - start, by_priority


async def cleanup(url: str, app: App) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await (await connection.channel()).get_underlay_channel()
        await Topology(app.settings).delete(channel, sorted(app.queues))


async def run(total: int, workers: int) -> int:
    try:
        found = find_broker()
    except BrokerUnavailable as exc:
        console.print(f"[bold red]{exc}[/]")
        return 1
    namespace = f"demo-{uuid.uuid4().hex[:6]}"
    console.print(f"RabbitMQ {mask_url(found.url)} ({found.how}), namespace {namespace}")
    app = App(url=found.url, namespace=namespace, app_id="demo-producer")
    for task in ALL:
        app.add(task)
    ledger = Path(tempfile.mkdtemp(prefix="leveret-demo-")) / "done.log"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        await app.declare()
        procs = start_workers(workers, found.url, namespace, ledger)
        send_time, total_time, by_priority = await produce(app, total, ledger)
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(timeout=60) for proc in procs]
        rows = read_ledger(ledger)
        summarize(total, rows, send_time, total_time, by_priority, codes)
        return 0 if len({r[0] for r in rows}) == total and codes == [0] * len(codes) else 1
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        await cleanup(found.url, app)
        await app.close()
        found.close()


def summarize(
    total: int,
    rows: list[list[str]],
    send_time: float,
    total_time: float,
    by_priority: Counter[int],
    codes: list[int],
) -> None:
    ids = Counter(r[0] for r in rows)
    done_by_priority = Counter(int(r[2]) for r in rows)
    table = Table(title="demo summary", show_header=False)
    table.add_row("sent (confirmed)", f"{total:,}")
    table.add_row("done", f"{len(ids):,}")
    table.add_row("lost", f"{total - len(ids):,}")
    table.add_row("run twice", f"{sum(1 for c in ids.values() if c > 1):,}")
    table.add_row("done after a retry", f"{sum(1 for r in rows if int(r[4]) > 1):,}")
    table.add_row("publish rate", f"{total / send_time:,.0f} tasks/s")
    table.add_row("end-to-end rate", f"{len(ids) / total_time:,.0f} tasks/s")
    table.add_row("workers' exit codes (SIGTERM)", " ".join(map(str, codes)))
    console.print(table)
    prio = Table("priority", "sent", "done", title="by priority")
    for p in sorted(by_priority, reverse=True):
        prio.add_row(str(p), f"{by_priority[p]:,}", f"{done_by_priority[p]:,}")
    console.print(prio)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    sys.exit(asyncio.run(run(args.tasks, args.workers)))


if __name__ == "__main__":
    main()
