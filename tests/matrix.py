"""``make test-matrix``: the suites once more on the other stacks, all at the same time.

Three make targets, each a run of its own:

- ``test-stock``      unit and integration suites on aiormq's own frame reader;
- ``test-pythons``    the unit suite and an integration subset on Python 3.12 and 3.13;
- ``test-rabbitmq4``  unit and integration suites against a RabbitMQ 4 node.

They share no state (each test has its own namespace; the RabbitMQ 4 run has its own
node) and spend most of their time waiting on a broker, so side by side they take
little longer than the longest of them alone. Each one's output goes to
``.pytest_cache/matrix/TARGET.log``; a line per target says how it ended and how long
it took, and a failed target's log is printed whole.

No RabbitMQ 4 answering at ``RABBITMQ4_URL`` skips that target with how to start one,
and fails the run under ``CI=true``.

    python -m tests.matrix [TARGET ...]
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
LOGS = ROOT / ".pytest_cache" / "matrix"
TARGETS = ("test-rabbitmq4", "test-stock", "test-pythons")
RABBITMQ4_URL = "amqp://guest:guest@127.0.0.1:5682/"

#: The lines of a log worth repeating in the summary: the per-version lines of
#: ``tests.pythons``, else pytest's last line.
VERSIONS = re.compile(r"^python \d+\.\d+\.\d+: (passed|failed|skipped).*$", re.MULTILINE)
PYTEST = re.compile(r"^=* ?\d+ (passed|failed|errors?)\b.*$", re.MULTILINE)


@dataclass
class Run:
    target: str
    proc: subprocess.Popen[bytes] | None
    log: Path
    started: float
    skipped: str | None = None


def answers(url: str) -> bool:
    """Whether anything listens where ``url`` points."""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672), 3):
            return True
    except OSError:
        return False


def start(target: str) -> Run:
    log = LOGS / f"{target}.log"
    began = time.monotonic()
    if target == "test-rabbitmq4":
        url = os.environ.get("RABBITMQ4_URL", RABBITMQ4_URL)
        if not answers(url):
            return Run(
                target,
                None,
                log,
                began,
                skipped=f"no RabbitMQ 4 at {url}: start one with `sudo .ci/rabbitmq4.sh up`",
            )
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            ["make", "--no-print-directory", target],
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return Run(target, proc, log, began)


def summary(log: Path) -> str:
    text = log.read_text(errors="replace") if log.exists() else ""
    lines = [m.group(0) for m in VERSIONS.finditer(text)] or [
        m.group(0).strip("= ") for m in PYTEST.finditer(text)
    ]
    return "; ".join(lines) or "(no summary line)"


def main(argv: list[str]) -> int:
    targets = argv or list(TARGETS)
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        print(f"unknown target(s) {', '.join(unknown)}; known: {', '.join(TARGETS)}")
        return 2
    ci = os.environ.get("CI", "").lower() == "true"
    LOGS.mkdir(parents=True, exist_ok=True)
    print(f"running {', '.join(targets)} side by side; logs in {LOGS.relative_to(ROOT)}/")
    runs = [start(t) for t in targets]
    failed: list[Run] = []
    pending = {r.target: r for r in runs if r.proc is not None}
    for run in runs:
        if run.skipped is not None:
            print(f"{run.target}: {'failed' if ci else 'skipped'}: {run.skipped}", flush=True)
            if ci:
                failed.append(run)
    while pending:
        for target, run in list(pending.items()):
            assert run.proc is not None
            code = run.proc.poll()
            if code is None:
                continue
            del pending[target]
            took = time.monotonic() - run.started
            status = "passed" if code == 0 else f"failed (exit {code})"
            print(f"{target}: {status} in {took:.0f} s: {summary(run.log)}", flush=True)
            if code != 0:
                failed.append(run)
        time.sleep(0.5)
    for run in failed:
        if run.proc is not None:
            print(f"\n===== {run.target}: its whole log =====", flush=True)
            sys.stdout.write(run.log.read_text(errors="replace"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
