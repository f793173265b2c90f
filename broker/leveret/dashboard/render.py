"""What the templates and the JSON API need to show values: ages, JSON, escaping."""

from __future__ import annotations

import dataclasses
import json
import time
from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment
from markupsafe import escape as _escape

from leveret.deadletter import DeadLetter, Report
from leveret.deadletter.codec import dumps


def escape(text: str) -> str:
    return str(_escape(text))


def ago(value: datetime | float | None) -> str:
    """``3h ago``, for a datetime or an epoch time; ``-`` when unknown."""
    if value is None:
        return "-"
    seconds = time.time() - (value.timestamp() if isinstance(value, datetime) else value)
    return f"{duration(seconds)} ago" if seconds >= 0 else "in the future"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def when(value: datetime | None) -> str:
    if value is None:
        return "-"
    return f"{value.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z"


def pretty(value: Any) -> str:
    return json.dumps(jsonable(value), indent=2, ensure_ascii=False, sort_keys=True)


def letter_dict(letter: DeadLetter) -> dict[str, Any]:
    """Everything about one dead letter: the listing fields, payload, headers, traceback
    and the exact export line."""
    payload, why = letter.read_payload()
    return {
        **letter.summary(),
        "payload": payload,
        "payload_error": why,
        "traceback": letter.traceback,
        "export": json.loads(dumps(letter.queue, letter.body, letter.properties)),
    }


def report_dict(report: Report) -> dict[str, Any]:
    return {
        "action": report.action,
        "dry_run": report.dry_run,
        "total": report.total,
        "matched": report.matched,
        "moved": report.moved,
        "kept": report.kept,
        "queues": [dataclasses.asdict(q) for q in report.queues],
        "errors": report.errors,
    }


def jsonable(value: Any) -> Any:
    """``value`` with our objects turned into JSON-ready dicts."""
    if isinstance(value, DeadLetter):
        return letter_dict(value)
    if isinstance(value, Report):
        return report_dict(value)
    if hasattr(value, "as_dict"):
        return value.as_dict()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def install(env: Environment) -> None:
    env.filters.update(ago=ago, duration=duration, when=when, pretty=pretty)
    env.globals.update(letter_dict=letter_dict)
