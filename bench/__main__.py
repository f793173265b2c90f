"""``python -m bench [--quick] [--only drain,latency] [--local]``."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

from rich.console import Console

from bench import machine, report
from bench.harness import Harness
from bench.scenarios import FULL, OPT_IN, QUICK, SCENARIOS, Row
from leveret.ops.discovery import LocalNode, find_broker

console = Console(width=170)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (under a minute)")
    parser.add_argument(
        "--only", default="", help=f"comma-separated scenarios of: {', '.join(SCENARIOS)}"
    )
    parser.add_argument(
        "--local",
        action="store_true",
        help="start a throwaway RabbitMQ node (isolated) instead of using the one found",
    )
    parser.add_argument(
        "--note",
        default="machine shared with other test runs",
        help="recorded with the results (e.g. what else ran on the machine)",
    )
    return parser.parse_args(argv)


async def run(args: argparse.Namespace, url: str, how: str) -> int:
    sizes = QUICK if args.quick else FULL
    chosen = [s.strip() for s in args.only.split(",") if s.strip()] or [
        s for s in SCENARIOS if s not in OPT_IN
    ]
    unknown = [s for s in chosen if s not in SCENARIOS]
    if unknown:
        console.print(f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
        return 2
    namespace = f"bench{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="leveret-bench-") as tmp:
        harness = Harness(url, namespace, Path(tmp))
        server = await harness.start()
        env = machine.describe(server, f"{how}, namespace {namespace}")
        env["mode"] = ("quick" if args.quick else "full") + ("-some" if args.only else "")
        env["note"] = args.note
        console.print(
            f"broker: {env['rabbitmq']} via {env['broker']} (deleted afterwards); "
            f"{env['cores']} cores, load {env['load_average']}"
        )
        rows: list[Row] = []
        began = time.monotonic()
        try:
            for name in chosen:
                started = time.monotonic()
                rows += await SCENARIOS[name](harness, sizes)
                console.print(f"  {name}: {time.monotonic() - started:.1f} s")
        finally:
            await harness.close()
        env["seconds"] = round(time.monotonic() - began, 1)
        env["load_average_end"] = [round(x, 2) for x in __import__("os").getloadavg()]
    report.show(rows, env, console)
    json_path, md_path = report.write(rows, env)
    console.print(f"written: {json_path}, {md_path} ({env['seconds']} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.local:
        node = LocalNode().start()
        url, how, close = node.url, f"throwaway LocalNode on port {node.port}", node.destroy
    else:
        found = find_broker()
        url, how, close = found.url, f"shared broker ({found.how})", found.close
    try:
        return asyncio.run(run(args, url, how))
    finally:
        close()


if __name__ == "__main__":
    sys.exit(main())
