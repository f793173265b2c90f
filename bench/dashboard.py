"""The dashboard with a full dead-letter queue: page latency and the process's memory,
beside ``leveret dlq summary`` (the other way to learn the same), in the same run."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import aiormq
import httpx
from pamqp.commands import Basic

from bench.harness import Harness
from bench.scenarios import Row
from leveret import message
from leveret.ops.discovery import free_port

ROOT = Path(__file__).resolve().parent.parent
QUEUE = "work"  # a queue of bench.apps:app, so the dashboard covers its dead letters
REQUESTS = 40


def _peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def fill_dead_letters(url: str, queue: str, count: int) -> None:
    """``count`` dead letters of ten causes, about 1 KB each, as a worker writes them."""
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        pending = []
        for i in range(count):
            try:
                raise TimeoutError(f"timeout connecting to 10.0.{i % 10}.{i % 250}")
            except TimeoutError as exc:
                headers = message.error_headers(exc, reason="exhausted", worker="b:1", queue=QUEUE)
            headers[message.ATTEMPT] = 3
            props = Basic.Properties(
                content_type=message.CONTENT_TYPE,
                delivery_mode=message.PERSISTENT,
                message_id=uuid.uuid4().hex,
                message_type=f"bench.task{i % 10}",
                timestamp=datetime.now(tz=UTC),
                headers=headers,
            )
            body = b'{"n": %d, "pad": "%s"}' % (i, b"x" * 600)
            pending.append(channel.basic_publish(body, routing_key=queue, properties=props))
            if len(pending) >= 2000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await connection.close()


def _start(*args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "leveret", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def _latencies(client: httpx.AsyncClient, path: str) -> list[float]:
    times = []
    for _ in range(REQUESTS):
        start = time.perf_counter()
        r = await client.get(path)
        r.raise_for_status()
        times.append(time.perf_counter() - start)
    return sorted(times)


async def measure(h: Harness, count: int) -> dict[str, float]:
    """Figures of one dashboard over ``count`` dead letters, and of the CLI summary."""
    dlq = h.names.dead_queue(QUEUE)
    await fill_dead_letters(h.url, dlq, count)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "LEVERET_URL": h.url,
        "LEVERET_NAMESPACE": h.namespace,
    }
    figures: dict[str, float] = {}

    start = time.perf_counter()
    cli = _start("dlq", "summary", "--queue", QUEUE, "--json", env=env)
    peak = 0.0
    while cli.poll() is None:
        peak = max(peak, _peak_rss_mb(cli.pid))
        await asyncio.sleep(0.05)
    figures["cli_seconds"] = time.perf_counter() - start
    figures["cli_rss"] = peak

    port = free_port()
    proc = _start("dashboard", "bench.apps:app", "--port", str(port), env=env)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            start = time.perf_counter()
            while True:
                try:
                    snap = (await client.get("/dead-letters?format=json")).json()["snapshot"]
                    if snap["finished_at"] and snap["scanned"] >= count:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)
            figures["scan_seconds"] = time.perf_counter() - start
            for name, path in (("groups", "/dead-letters"), ("queues", "/queues")):
                times = await _latencies(client, path)
                figures[f"{name}_p50"] = times[len(times) // 2]
                figures[f"{name}_max"] = times[-1]
            key = snap["groups"][0]["key"]
            times = await _latencies(client, f"/dead-letters/groups/{key}")
            figures["group_p50"] = times[len(times) // 2]
            start = time.perf_counter()
            (await client.get(f"/dead-letters/groups/{key}/letters")).raise_for_status()
            figures["letters_first_page"] = time.perf_counter() - start
        figures["dashboard_rss"] = _peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
        await h._channel.queue_purge(dlq)
    return figures


async def scenario(h: Harness, count: int) -> list[Row]:
    f = await measure(h, count)
    what = f"{count:,} dead letters"
    cli = f["cli_seconds"] * 1000
    return [
        Row(
            "dashboard",
            f"{what}: grouping scan (background)",
            "s",
            f["scan_seconds"],
            f["cli_seconds"],
            better="lower",
            note="raw = leveret dlq summary",
        ),
        Row(
            "dashboard",
            f"{what}: /dead-letters p50",
            "ms",
            f["groups_p50"] * 1000,
            cli,
            better="lower",
            limit=300.0,
            note=f"max {f['groups_max'] * 1000:.0f} ms",
        ),
        Row(
            "dashboard",
            f"{what}: /queues p50",
            "ms",
            f["queues_p50"] * 1000,
            cli,
            better="lower",
            limit=300.0,
            note=f"max {f['queues_max'] * 1000:.0f} ms",
        ),
        Row(
            "dashboard",
            f"{what}: a group's page p50",
            "ms",
            f["group_p50"] * 1000,
            cli,
            better="lower",
            limit=300.0,
        ),
        Row(
            "dashboard",
            f"{what}: a group's first 50 letters",
            "ms",
            f["letters_first_page"] * 1000,
            cli,
            better="lower",
            note="read on demand",
        ),
        Row(
            "dashboard",
            f"{what}: dashboard peak RSS",
            "MB",
            f["dashboard_rss"],
            f["cli_rss"],
            better="lower",
            limit=150.0,
            note="raw = dlq summary's",
        ),
    ]
