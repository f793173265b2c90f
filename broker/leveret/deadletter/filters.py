"""Which dead letters an operation applies to.

Criteria combine with AND; the values of one criterion with OR. Task names and
exception types take shell-style wildcards (``emails.*``); an exception type matches
by its class name or its dotted name (``SmtpDown`` or ``mail.errors.SmtpDown``).
Ages are read from when the message died; one whose time is unknown matches no age.
Reasons are checked against the ones that exist: a misspelt reason in a purge would
otherwise match nothing, and say nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

from leveret.deadletter.letter import REASONS, UNKNOWN_REASON, DeadLetter
from leveret.errors import ConfigError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")

#: Keyword criteria ``Filter.of`` accepts, with their plural spellings.
CRITERIA = (
    "queue",
    "task",
    "error_type",
    "match",
    "reason",
    "id",
    "older_than",
    "newer_than",
)
_PLURALS = {
    "queues": "queue",
    "tasks": "task",
    "error_types": "error_type",
    "reasons": "reason",
    "ids": "id",
}


def parse_age(text: str, *, now: datetime | None = None) -> datetime:
    """A moment from a duration back from now (``90s``, ``15m``, ``2h``, ``1h30m``,
    ``3d``, ``1w``) or an ISO 8601 date-time (UTC unless it says otherwise)."""
    now = now or datetime.now(tz=UTC)
    spec = text.strip().lower()
    if spec and _DURATION.sub("", spec) == "":
        seconds = sum(float(n) * _UNITS[u] for n, u in _DURATION.findall(spec))
        return now - timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(
            f"cannot read the age {text!r}: give a duration such as 90s, 15m, 2h, 1h30m, "
            "3d or 1w, or a date-time such as 2024-05-01T12:00:00Z"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def check_reason(text: str) -> str:
    """``text`` if it is a reason a dead letter can have; else a ConfigError listing them."""
    if text not in REASONS:
        raise ConfigError(f"unknown reason {text!r}; the reasons are: {', '.join(REASONS)}")
    return text


def _moment(value: Any, *, now: datetime, name: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, timedelta):
        return now - value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return now - timedelta(seconds=value)
    if isinstance(value, str):
        return parse_age(value, now=now)
    raise ConfigError(f"{name} must be a duration, a datetime or a string like '2h', not {value!r}")


def _strings(value: Any, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        items: Iterable[Any] = value.split(",") if name == "queue" else [value]
    elif isinstance(value, Iterable):
        items = value
    else:
        raise ConfigError(f"filter {name!r} takes a string or a list of strings, not {value!r}")
    out = []
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"filter {name!r} takes strings, not {item!r}")
        if item.strip():
            out.append(item.strip())
    return tuple(out)


@dataclass(frozen=True)
class Filter:
    """Criteria a dead letter must meet; the empty filter matches everything."""

    queues: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()
    error_types: tuple[str, ...] = ()
    match: str | None = None
    reasons: tuple[str, ...] = ()
    ids: tuple[str, ...] = ()
    failed_before: datetime | None = None
    failed_after: datetime | None = None

    @classmethod
    def of(cls, criteria: Mapping[str, Any] | None = None, /, **more: Any) -> Filter:
        """A filter from keyword criteria (see ``CRITERIA``), as a dashboard or the
        command line gives them; unknown names and unreadable values are refused."""
        given = {**(criteria or {}), **more}
        unknown = sorted(k for k in given if k not in CRITERIA and k not in _PLURALS)
        if unknown:
            raise ConfigError(
                f"unknown filter{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                f"known filters: {', '.join(CRITERIA)}"
            )
        values: dict[str, Any] = {}
        for key, value in given.items():
            values[_PLURALS.get(key, key)] = value
        now = datetime.now(tz=UTC)
        match = values.get("match")
        if match is not None and not isinstance(match, str):
            raise ConfigError(f"filter 'match' takes a string, not {match!r}")
        return cls(
            queues=_strings(values.get("queue"), "queue"),
            tasks=_strings(values.get("task"), "task"),
            error_types=_strings(values.get("error_type"), "error_type"),
            match=match or None,
            reasons=tuple(map(check_reason, _strings(values.get("reason"), "reason"))),
            ids=_strings(values.get("id"), "id"),
            failed_before=_moment(values.get("older_than"), now=now, name="older_than"),
            failed_after=_moment(values.get("newer_than"), now=now, name="newer_than"),
        )

    @classmethod
    def coerce(cls, where: Filter | Mapping[str, Any] | None) -> Filter:
        if where is None:
            return cls()
        if isinstance(where, Filter):
            return where
        if isinstance(where, Mapping):
            return cls.of(where)
        raise ConfigError(f"a filter is a Filter or a mapping of criteria, not {where!r}")

    @property
    def selects_all(self) -> bool:
        """True when every message of the chosen queues matches."""
        return all(not getattr(self, f.name) for f in fields(self) if f.name != "queues")

    def matches(self, letter: DeadLetter) -> bool:
        if self.tasks and not any(fnmatchcase(letter.task or "", p) for p in self.tasks):
            return False
        if self.error_types and not self._error_type_matches(letter):
            return False
        if self.reasons and (letter.reason or UNKNOWN_REASON) not in self.reasons:
            return False
        if self.ids and not any(letter.id.startswith(p) for p in self.ids):
            return False
        if self.match is not None:
            text = f"{letter.error_type or ''}: {letter.error_message or ''} {letter.reason or ''}"
            if self.match.lower() not in text.lower():
                return False
        if self.failed_before is not None or self.failed_after is not None:
            when = letter.failed_at
            if when is None:
                return False
            if self.failed_before is not None and when >= self.failed_before:
                return False
            if self.failed_after is not None and when < self.failed_after:
                return False
        return True

    def _error_type_matches(self, letter: DeadLetter) -> bool:
        names = [n for n in (letter.error_type, letter.error_name) if n]
        return any(fnmatchcase(n, p) for p in self.error_types for n in names)

    def describe(self) -> str:
        """The criteria in words, for confirmations and logs."""
        parts = []
        if self.tasks:
            parts.append("task " + " or ".join(self.tasks))
        if self.error_types:
            parts.append("error type " + " or ".join(self.error_types))
        if self.reasons:
            parts.append("reason " + " or ".join(self.reasons))
        if self.match:
            parts.append(f"error containing {self.match!r}")
        if self.ids:
            parts.append("id " + " or ".join(self.ids))
        if self.failed_before:
            parts.append(f"failed before {self.failed_before.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z")
        if self.failed_after:
            parts.append(f"failed after {self.failed_after.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z")
        return ", ".join(parts) or "all"
