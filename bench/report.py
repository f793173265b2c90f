"""The result table: printed, and written as JSON and markdown to bench/results/."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.scenarios import Row

RESULTS = Path(__file__).resolve().parent / "results"


def _num(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _target(row: Row) -> str:
    if row.limit is not None:
        return f"{'>=' if row.better == 'higher' else '<='} {_num(row.limit)} {row.unit}"
    if row.target is None:
        return ""
    return f"{'>=' if row.better == 'higher' else '<='} {row.target:g}x"


def _met(row: Row) -> str:
    return {True: "yes", False: "NO", None: ""}[row.met]


def _cells(row: Row) -> list[str]:
    ratio = row.ratio
    return [
        row.scenario,
        row.metric,
        f"{_num(row.ours)} {row.unit}" if row.ours is not None else "n/a",
        f"{_num(row.raw)} {row.unit}" if row.raw is not None else "",
        f"{ratio:.2f}x" if ratio is not None else "",
        _target(row),
        _met(row),
        row.note,
    ]


HEADERS = ["scenario", "what", "leveret", "raw aio-pika", "ratio", "target", "met", "note"]


def show(rows: list[Row], env: dict[str, Any], console: Console) -> None:
    table = Table(title="leveret beside raw aio-pika (same run, same guarantees)")
    for header in HEADERS:
        table.add_column(header, overflow="fold")
    for row in rows:
        table.add_row(*_cells(row))
    console.print(table)
    console.print(_machine_line(env))


def _machine_line(env: dict[str, Any]) -> str:
    return (
        f"{env['cores']} cores (load {env['load_average']} at start), {env['rabbitmq']} "
        f"({env['broker']}), Python {env['python']}, aio-pika {env['aio_pika']}, "
        f"aiormq {env['aiormq']}, pydantic {env['pydantic']}, uvloop {env.get('uvloop', '?')}, "
        f"commit {env['commit']}, "
        f"mode {env['mode']}; {env.get('note', '')}"
    )


def markdown(rows: list[Row], env: dict[str, Any]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + " --- |" * len(HEADERS)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in _cells(r)) + " |" for r in rows]
    return "\n".join(lines) + "\n\n" + _machine_line(env) + "\n"


def write(rows: list[Row], env: dict[str, Any]) -> tuple[Path, Path]:
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(tz=UTC).strftime("%Y%m%dT%H%M%SZ")
    data = {
        "machine": env,
        "rows": [
            {**r.__dict__, "ratio": r.ratio, "met": r.met, "target_text": _target(r)} for r in rows
        ],
    }
    json_path = RESULTS / f"{stamp}-{env['mode']}.json"
    md_path = RESULTS / f"{stamp}-{env['mode']}.md"
    json_path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    md_path.write_text(markdown(rows, env))
    (RESULTS / f"latest-{env['mode']}.md").write_text(markdown(rows, env))
    (RESULTS / f"latest-{env['mode']}.json").write_text(json.dumps(data, indent=2, default=str))
    return json_path, md_path
