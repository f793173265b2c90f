"""For tests of the operations edge: a worker's health and metrics endpoints, and the
ledger that tests.apps.ops_app writes from inside worker processes."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

from leveret.ops.health import probe

from tests.support.waiting import PATIENCE


def ledger(path: Path) -> list[tuple[str, str, bool]]:
    """``(event, task id, redelivered)`` lines written by tests.apps.ops_app."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        event, task_id, redelivered = line.split()
        rows.append((event, task_id, redelivered == "1"))
    return rows


def events(path: Path) -> Counter[str]:
    return Counter(event for event, _, _ in ledger(path))


async def status(port: int, path: str) -> int | None:
    """The endpoint's HTTP status, or None if nothing answers."""
    try:
        code, _ = await probe("127.0.0.1", port, path, 2.0)
    except (OSError, TimeoutError):
        return None
    return code


async def wait_status(port: int, path: str, expected: int, within: float = PATIENCE) -> None:
    deadline = time.monotonic() + within
    last: int | None = None
    while time.monotonic() < deadline:
        last = await status(port, path)
        if last == expected:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path} on port {port} answered {last}, not {expected}, in {within} s")


async def scrape(port: int) -> str:
    code, body = await probe("127.0.0.1", port, "/metrics", 30.0)
    assert code == 200
    return body.decode()


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in an exposition (0 if absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0
