"""Structured logs: one event per task outcome, JSON for machines, plain text for people.

``configure()`` picks JSON when stderr is not a terminal (a container's log collector)
and a readable line on a terminal. Every record logged while a task runs, by the
engine or by the handler, carries that task's id, name, queue and attempt. Passwords
in AMQP URLs are masked in every line, whoever logs them.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from contextvars import ContextVar
from typing import Any, Literal, TextIO

from broker.middleware import Middleware, Outcome
from broker.task import TaskContext

LogFormat = Literal["auto", "json", "text"]

task_log = logging.getLogger("leveret.task")

#: The task whose code is running in this context (asyncio task), for log fields.
current_task: ContextVar[TaskContext | None] = ContextVar("leveret_task", default=None)

_URL_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@/\s]+@", re.IGNORECASE)

#: Attributes every LogRecord has: anything else was passed with ``extra=``.
_STANDARD = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
    | {"message", "asctime", "taskName"}
)

_LEVELS = {
    Outcome.SUCCEEDED: logging.INFO,
    Outcome.RETRIED: logging.WARNING,
    Outcome.DEAD_LETTERED: logging.WARNING,
    Outcome.FAILED_PERMANENTLY: logging.WARNING,
    Outcome.ABANDONED: logging.WARNING,
}


def mask(text: str) -> str:
    """Replace the password of any ``scheme://user:password@`` in ``text``."""
    if "@" not in text:
        return text
    return _URL_PASSWORD.sub(r"\g<head>***@", text)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """The record's ``extra`` fields, plus the running task's if it has none."""
    fields = {k: v for k, v in record.__dict__.items() if k not in _STANDARD}
    ctx = current_task.get()
    if ctx is not None and "task_id" not in fields:
        fields["task_id"] = ctx.task_id
        fields["task"] = ctx.name
        fields["queue"] = ctx.queue
        fields["attempt"] = ctx.attempt
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, the extra fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": mask(record.getMessage()),
        }
        out.update(_fields(record))
        if record.exc_info:
            out["exc"] = mask(self.formatException(record.exc_info))
        elif record.exc_text:
            out["exc"] = mask(record.exc_text)
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``12:30:15.123 INFO    leveret.task   task succeeded  task=... id=...``"""

    def format(self, record: logging.LogRecord) -> str:
        clock = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = (
            f"{clock}.{int(record.msecs):03d} {record.levelname:<7} {record.name:<18} "
            f"{record.getMessage()}"
        )
        fields = _fields(record)
        if fields:
            line += "  " + " ".join(f"{k}={_short(v)}" for k, v in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return mask(line)


def _iso(created: float) -> str:
    millis = int(created % 1 * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{millis:03d}Z"


def _short(value: Any) -> str:
    text = str(value)
    return repr(text) if " " in text or not text else text


def configure(
    level: str | int = "INFO", fmt: LogFormat = "auto", stream: TextIO | None = None
) -> None:
    """Send every log record to ``stream`` (stderr) in the chosen format, once."""
    stream = stream if stream is not None else sys.stderr
    if fmt == "auto":
        fmt = "text" if stream.isatty() else "json"
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)


class TaskLog(Middleware):
    """Logs one event per task attempt (``leveret.task``) and tags records during it."""

    def before_task(self, ctx: TaskContext) -> None:
        current_task.set(ctx)

    def after_task(
        self, ctx: TaskContext, outcome: Outcome, error: BaseException | None, duration: float
    ) -> None:
        current_task.set(None)
        level = _LEVELS[outcome]
        if not task_log.isEnabledFor(level):
            return
        extra: dict[str, Any] = {
            "event": "task",
            "outcome": outcome.value,
            "task_id": ctx.task_id,
            "task": ctx.name,
            "queue": ctx.queue,
            "attempt": ctx.attempt,
            "duration_ms": round(duration * 1000, 3),
        }
        if ctx.redelivered:
            extra["redelivered"] = True
        if error is not None:
            extra["error"] = f"{type(error).__name__}: {error}"[:500]
        task_log.log(level, "task %s", outcome.value, extra=extra)

    def on_rejected(self, queue: str, reason: str, error: BaseException) -> None:
        task_log.warning(
            "message rejected",
            extra={
                "event": "rejected",
                "queue": queue,
                "reason": reason,
                "error": f"{type(error).__name__}: {error}"[:500],
            },
        )
