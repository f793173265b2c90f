"""For tests of the operations edge: a worker's health and metrics endpoints, and the
ledger that tests.apps.ops_app writes from inside worker processes."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from leveret.ops.discovery import free_port
from leveret.ops.health import probe
from tests.support.processes import Output
from tests.support.waiting import PATIENCE
from tests.support.workers import Spawn

OPS_APP = "tests.apps.ops_app:app"


async def start_ops_worker(
    spawn: Spawn, ledger_path: Path, *args: str, env: Mapping[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], Output, int]:
    """A worker of tests.apps.ops_app with its health server on a free port, writing
    its ledger to ``ledger_path``; returned once /readyz says it is ready, with its
    output reader and that port."""
    port = free_port()
    proc = spawn(
        OPS_APP,
        "--health-port",
        str(port),
        *args,
        env={"OPS_LEDGER": str(ledger_path), **(env or {})},
    )
    output = Output(proc)
    try:
        await wait_status(port, "/readyz", 200)
    except AssertionError:
        raise AssertionError("worker never became ready:\n" + output.text) from None
    return proc, output, port


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
