"""Structured logs: one event per task outcome, JSON for machines, plain text for people.

``configure()`` picks JSON when stderr is not a terminal (a container's log collector)
and a readable line on a terminal. Every record logged while a task runs, by the
engine or by the handler, carries that task's id, name, queue and attempt. Passwords
in AMQP URLs are masked in every line, whoever logs them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import time
from contextvars import ContextVar
from json.encoder import encode_basestring as _string
from typing import Any, Literal, TextIO

from leveret.middleware import Middleware, Outcome
from leveret.task import TaskContext

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

_MESSAGES = {outcome: f"task {outcome.value}" for outcome in Outcome}
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


#: Built once: ``json.dumps`` with options builds a new encoder on every call.
_ENCODE = json.JSONEncoder(default=str, ensure_ascii=False).encode
#: The encoded ``"level", "logger", "msg"`` part of a line, by (level, logger, msg).
_HEADS: dict[tuple[str, str, str], str] = {}


def _flat(fields: dict[str, Any]) -> str:
    """The members of a JSON object for ``fields``; plain values without an encoder."""
    parts = []
    for key, value in fields.items():
        kind = type(value)
        if kind is str:
            parts.append(f"{_string(key)}: {_string(mask(value))}")
        elif kind is int or (kind is float and value - value == 0):  # finite
            parts.append(f"{_string(key)}: {value!r}")
        elif kind is float:
            parts.append(f"{_string(key)}: {_string(repr(value))}")  # nan, inf: strings
        else:
            parts.append(f"{_string(key)}: {_ENCODE(value)}")
    return ", ".join(parts)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, the extra fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        exc = None
        if record.exc_info:
            exc = self.formatException(record.exc_info)
        elif record.exc_text:
            exc = record.exc_text
        return self.render(
            record.created, record.levelname, record.name, record.getMessage(), _fields(record), exc
        )

    def render(
        self,
        created: float,
        level: str,
        logger: str,
        msg: str,
        fields: dict[str, Any],
        exc: str | None = None,
    ) -> str:
        head = _HEADS.get((level, logger, msg))
        if head is None:
            head = _ENCODE({"level": level.lower(), "logger": logger, "msg": mask(msg)})[1:-1]
            if len(_HEADS) < 1000:  # messages with arguments vary: keep only the first
                _HEADS[(level, logger, msg)] = head
        body = _flat(fields) if fields else ""
        if exc:
            body += (", " if body else "") + '"exc": ' + _ENCODE(mask(exc))
        return f'{{"ts": "{_iso(created)}", {head}{", " if body else ""}{body}}}'


class TextFormatter(logging.Formatter):
    """``12:30:15.123 INFO    leveret.task   task succeeded  task=... id=...``"""

    def format(self, record: logging.LogRecord) -> str:
        exc = self.formatException(record.exc_info) if record.exc_info else None
        return self.render(
            record.created, record.levelname, record.name, record.getMessage(), _fields(record), exc
        )

    def render(
        self,
        created: float,
        level: str,
        logger: str,
        msg: str,
        fields: dict[str, Any],
        exc: str | None = None,
    ) -> str:
        clock = time.strftime("%H:%M:%S", time.localtime(created))
        line = f"{clock}.{int(created % 1 * 1000):03d} {level:<7} {logger:<18} {msg}"
        if fields:
            line += "  " + " ".join(f"{k}={_short(v)}" for k, v in fields.items())
        if exc:
            line += "\n" + exc
        return mask(line)


class EventHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler ``configure()`` installs; it can also write an event directly.

    A task event through ``logging`` costs a LogRecord, the handler chain and a
    generic formatter: tens of microseconds on every task. When nothing but this
    handler would see it, ``TaskLog`` hands the fields over here instead and the
    line comes out the same, for a fraction of that.

    Lines written on the event loop are joined and written once per loop turn (one
    ``write`` and flush instead of one per task). Any other record, ``flush()`` and
    ``close()`` write what is pending first, so lines keep their order. A process
    killed with SIGKILL loses at most the lines of its last loop turn, the same turn
    whose acknowledgements had not reached the broker either.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        self._pending: list[str] = []

    def emit_event(self, level: int, logger: str, msg: str, fields: dict[str, Any]) -> None:
        formatter = self.formatter
        assert isinstance(formatter, JsonFormatter | TextFormatter)
        self.write_line(
            formatter.render(time.time(), logging.getLevelName(level), logger, msg, fields)
        )

    def write_line(self, line: str) -> None:
        """Write one formatted line: at the end of this loop turn on a loop, else now."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self.lock:  # type: ignore[union-attr]
            pending = self._pending
            pending.append(line)
            if loop is not None and len(pending) > 1:
                return  # a write is already scheduled for this turn
        if loop is None:
            self._write_pending()
        else:
            loop.call_soon(self._write_pending)

    def _write_pending(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            pending = self._pending
            if not pending:
                return
            self._pending = []
            pending.append("")
            try:
                self.stream.write(self.terminator.join(pending))
                self.stream.flush()
            except (OSError, ValueError):
                pass  # like logging: a closed stream must not stop the worker

    def emit(self, record: logging.LogRecord) -> None:
        if self._pending:
            self._write_pending()
        super().emit(record)

    def flush(self) -> None:
        self._write_pending()
        super().flush()


def _direct(logger: logging.Logger, level: int) -> EventHandler | None:
    """The root's EventHandler if it alone would handle ``logger``'s records, else None."""
    node: logging.Logger | None = logger
    while node is not None and node.parent is not None:  # up to, not including, the root
        if node.handlers or node.filters or not node.propagate:
            return None
        node = node.parent
    root = logging.root
    handlers = root.handlers
    if len(handlers) != 1 or root.filters:
        return None
    handler = handlers[0]
    if not isinstance(handler, EventHandler) or handler.filters or level < handler.level:
        return None
    return handler


_second: list[Any] = [-1, ""]  # the last second formatted, and its text


def _iso(created: float) -> str:
    """UTC ISO 8601 with milliseconds; the date and time part is reused within a second."""
    second = int(created)
    if second != _second[0]:
        _second[:] = [second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))]
    return f"{_second[1]}.{int((created - second) * 1000):03d}Z"


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
    handler = EventHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)


def _error_text(error: BaseException) -> str:
    return mask(f"{type(error).__name__}: {error}"[:500])


#: ``"level": ..., "outcome": ..., "task_id": `` of a task event, by outcome.
_TASK_HEADS: dict[Outcome, str] = {}
#: ``, "task": ..., "queue": ..., "attempt": `` by (task, queue), for the tasks seen.
_TASK_NAMES: dict[tuple[str, str], str] = {}


def _task_line(
    created: float,
    level: int,
    outcome: Outcome,
    ctx: TaskContext,
    error: BaseException | None,
    duration: float,
) -> str:
    """The JSON line ``JsonFormatter`` writes for a task event, from cached pieces."""
    head = _TASK_HEADS.get(outcome)
    if head is None:
        head = _TASK_HEADS[outcome] = (
            _ENCODE(
                {
                    "level": logging.getLevelName(level).lower(),
                    "logger": task_log.name,
                    "msg": _MESSAGES[outcome],
                    "event": "task",
                    "outcome": outcome.value,
                }
            )[1:-1]
            + ', "task_id": '
        )
    names = _TASK_NAMES.get((ctx.name, ctx.queue))
    if names is None:
        names = f", {_flat({'task': ctx.name, 'queue': ctx.queue})}, " + '"attempt": '
        if len(_TASK_NAMES) < 10_000:
            _TASK_NAMES[(ctx.name, ctx.queue)] = names
    tail = ""
    if ctx.redelivered:
        tail = ', "redelivered": true'
    if error is not None:
        tail += ', "error": ' + _string(mask(_error_text(error)))
    attempt: object = ctx.attempt
    if type(attempt) is not int:
        attempt = _ENCODE(attempt)  # never from the pipeline; kept exact for any caller
    return (
        f'{{"ts": "{_iso(created)}", {head}{_string(mask(ctx.task_id))}{names}{attempt}'
        f', "duration_ms": {round(duration * 1000, 3)!r}{tail}}}'
    )


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
        handler = _direct(task_log, level)
        if handler is not None and type(handler.formatter) is JsonFormatter:
            # The common case, written straight to JSON: the same line, without the dict.
            handler.write_line(_task_line(time.time(), level, outcome, ctx, error, duration))
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
            extra["error"] = _error_text(error)
        msg = _MESSAGES[outcome]
        if handler is not None:
            handler.emit_event(level, task_log.name, msg, extra)
            return
        # What Logger.log does, without its stack walk for the caller's file and line.
        record = task_log.makeRecord(task_log.name, level, __file__, 0, msg, (), None, extra=extra)
        task_log.handle(record)

    def on_rejected(self, queue: str, reason: str, error: BaseException) -> None:
        task_log.warning(
            "message rejected",
            extra={
                "event": "rejected",
                "queue": queue,
                "reason": reason,
                "error": _error_text(error),
            },
        )
