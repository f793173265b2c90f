"""What every queue of the app holds: from the management API when it answers, else
from passive declares over AMQP.

The management API (RabbitMQ's ``rabbitmq_management`` plugin) knows unacknowledged
counts, in/out rates and the age of the oldest message; AMQP knows only ready
messages and consumers. The page says which source it used, and why not the other;
where the API cannot give a figure, the row says why instead of showing a guess.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import httpx

from leveret.amqp.connection import mask_url
from leveret.amqp.reader import queue_stats
from leveret.amqp.topology import Names
from leveret.app import App

#: Seconds to wait for the management API before falling back to AMQP.
MANAGEMENT_TIMEOUT = 2.0
#: Seconds before a management API that failed is tried again.
RETRY_MANAGEMENT = 60.0
#: The fields read from ``/api/queues``: a broker with thousands of queues answers
#: megabytes without this.
COLUMNS = ",".join(
    (
        "name",
        "type",
        "messages_ready",
        "messages_unacknowledged",
        "consumers",
        "head_message_timestamp",
        "message_stats",
    )
)

#: The page's column for each field of a row.
COLUMN_LABELS = {
    "unacked": "unacked",
    "consumers": "consumers",
    "rate_in": "in/s",
    "rate_out": "out/s",
    "oldest_age": "oldest",
}

NO_RATES = (
    "the management API collects no rates here (management.rates_mode = none); the "
    "message counts are current"
)
EXPIRED_NOT_COUNTED = (
    "messages leave a delay level by expiring into the next one, which the management "
    "API does not count"
)
NO_HEAD_TIMESTAMP = {
    "quorum": "RabbitMQ gives the age of the oldest message for classic queues only",
    "stream": "RabbitMQ gives the age of the oldest message for classic queues only",
}
UNTIMED_HEAD = (
    "the API gives no timestamp for the next message: it carries no timestamp property "
    "(leveret sets one, another producer may not), or this RabbitMQ does not report it"
)
NOT_LISTED = (
    "the management API has no figures for this queue yet (declared moments ago, its "
    "node down, or metrics collection disabled): ready and consumers are from AMQP"
)


@dataclass
class QueueRow:
    """One queue as the page shows it; None where the source cannot tell, with why in
    ``unknown`` (field name -> reason) when the source is the management API."""

    name: str  # the AMQP name
    role: str  # work, dead letters, delay level k, unroutable
    queue: str | None  # the app's short name, for work and dead-letter queues
    ready: int
    consumers: int | None
    unacked: int | None = None
    rate_in: float | None = None  # published a second
    rate_out: float | None = None  # acknowledged a second
    oldest_age: float | None = None  # seconds since the next message's timestamp
    unknown: dict[str, str] = field(default_factory=dict)


@dataclass
class QueueReport:
    source: str  # "management" or "amqp"
    why: str  # a sentence for the page
    rows: list[QueueRow] = field(default_factory=list)
    taken_at: float = field(default_factory=time.time)

    @property
    def shown(self) -> list[QueueRow]:
        """The rows the page lists: delay levels only while they hold messages."""
        return [r for r in self.rows if not r.role.startswith("delay") or r.ready]

    @property
    def notes(self) -> list[tuple[str, str]]:
        """(column, why) for each distinct reason a shown row lacks a figure."""
        found: dict[tuple[str, str], None] = {}
        for row in self.shown:
            for name, why in row.unknown.items():
                found[(COLUMN_LABELS[name], why)] = None
        return list(found)

    @property
    def delayed(self) -> int:
        """Messages waiting in the delay levels (retries, delayed and scheduled sends)."""
        return sum(r.ready for r in self.rows if r.role.startswith("delay"))

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "delayed": self.delayed,
            "why": self.why,
            "taken_at": self.taken_at,
            "queues": [asdict(r) for r in self.rows],
        }


def management_url_for(amqp_url: str) -> str:
    """The management API a broker at ``amqp_url`` would serve: port 15672, same user."""
    first = amqp_url.split(",")[0]
    parts = urlsplit(first)
    scheme = "https" if parts.scheme == "amqps" else "http"
    user = quote(unquote(parts.username or "guest"), safe="")
    password = quote(unquote(parts.password or "guest"), safe="")
    host = parts.hostname or "localhost"
    return urlunsplit((scheme, f"{user}:{password}@{host}:15672", "", "", ""))


def _vhost(amqp_url: str) -> str:
    path = urlsplit(amqp_url.split(",")[0]).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def _rate(stats: dict[str, Any] | None, key: str) -> tuple[float | None, str | None]:
    """A rate from ``message_stats``, or None and why. RabbitMQ leaves out what never
    happened: no ``message_stats`` on a queue without traffic, no ``publish`` key on
    one nobody published to; both mean zero. A count without its ``_details`` means
    rates are switched off."""
    if not stats or key not in stats:
        return 0.0, None
    details = stats.get(f"{key}_details")
    if not isinstance(details, dict) or details.get("rate") is None:
        return None, NO_RATES
    return float(details["rate"]), None


def row_from_api(item: dict[str, Any], role: str, queue: str | None, now: float) -> QueueRow | None:
    """One queue of ``/api/queues``; None when the item has no message counts."""
    if item.get("messages_ready") is None:
        return None
    unknown: dict[str, str] = {}
    stats = item.get("message_stats")
    rate_in, why = _rate(stats, "publish")
    if why:
        unknown["rate_in"] = why
    if role.startswith("delay"):
        rate_out: float | None = None
        unknown["rate_out"] = EXPIRED_NOT_COUNTED
    else:
        rate_out, why = _rate(stats, "ack")
        if why:
            unknown["rate_out"] = why
    ready = int(item["messages_ready"])
    head = item.get("head_message_timestamp")
    oldest = max(0.0, now - float(head)) if isinstance(head, int | float) and head else None
    if oldest is None and ready:
        kind = str(item.get("type") or "classic")
        unknown["oldest_age"] = NO_HEAD_TIMESTAMP.get(kind, UNTIMED_HEAD)
    return QueueRow(
        name=item["name"],
        role=role,
        queue=queue,
        ready=ready,
        consumers=int(item.get("consumers") or 0),
        unacked=int(item.get("messages_unacknowledged") or 0),
        rate_in=rate_in,
        rate_out=rate_out,
        oldest_age=oldest,
        unknown=unknown,
    )


class ManagementUnavailable(Exception):
    """The management API gave no queue list; the message says why and what to do."""


def _explain(exc: Exception, url: str, user: str) -> str:
    """Why the management API at ``url`` (no password in it) gave nothing, for the page."""
    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        if status == 401:
            return (
                f"it refused user {user!r} (401): put a user with the monitoring tag in "
                "LEVERET_DASHBOARD_MANAGEMENT_URL"
            )
        if status == 403:
            return f"user {user!r} may not read this vhost's queues (403): grant it access"
        if status == 404:
            return f"{url} answered 404: is that the management API's address?"
        return f"it answered {status} {exc.response.reason_phrase}"
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer within {MANAGEMENT_TIMEOUT:g} s"
    if isinstance(exc, httpx.TransportError):
        return f"nothing answers at {url} ({type(exc).__name__})"
    return f"{type(exc).__name__}: {exc}"


class QueueWatcher:
    """Reads queue figures for one app, preferring the management API."""

    def __init__(
        self, app: App, management_url: str | None, retry_after: float = RETRY_MANAGEMENT
    ) -> None:
        self.app = app
        self.names = Names(app.settings.namespace)
        self.management_url = management_url or management_url_for(app.settings.url)
        self.vhost = _vhost(app.settings.url)
        self.retry_after = retry_after
        self._management_failed_at: float | None = None
        self._management_error = ""

    def _roles(self) -> dict[str, tuple[str, str | None]]:
        roles: dict[str, tuple[str, str | None]] = {}
        for queue in sorted(self.app.queues):
            roles[self.names.work_queue(queue)] = ("work", queue)
            roles[self.names.dead_queue(queue)] = ("dead letters", queue)
        for level in range(self.app.settings.delay_levels):
            roles[self.names.delay_level(level)] = (f"delay level {level}", None)
        roles[self.names.unroutable] = ("unroutable", None)
        return roles

    async def read(self) -> QueueReport:
        roles = self._roles()
        failed = self._management_failed_at
        if failed is None or time.monotonic() - failed > self.retry_after:
            try:
                return await self._from_management(roles)
            except ManagementUnavailable as exc:
                self._management_failed_at = time.monotonic()
                self._management_error = str(exc)
        return await self._from_amqp(roles)

    async def _queues(self) -> list[dict[str, Any]]:
        parts = urlsplit(self.management_url)
        user = unquote(parts.username or "guest")
        auth = (user, unquote(parts.password or "guest"))
        base = urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]))
        url = f"{base.rstrip('/')}/api/queues/{quote(self.vhost, safe='')}"
        try:
            async with httpx.AsyncClient(timeout=MANAGEMENT_TIMEOUT, auth=auth) as client:
                response = await client.get(url, params={"columns": COLUMNS})
                response.raise_for_status()
                data = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise ManagementUnavailable(_explain(exc, base, user)) from exc
        if not isinstance(data, list) or not all(
            isinstance(i, dict) and isinstance(i.get("name"), str) for i in data
        ):
            raise ManagementUnavailable(f"{base} answered something other than a queue list")
        return data

    async def _from_management(self, roles: dict[str, tuple[str, str | None]]) -> QueueReport:
        data = await self._queues()
        now = time.time()
        found: dict[str, QueueRow] = {}
        for item in data:
            role = roles.get(item["name"])
            if role is None:
                continue
            row = row_from_api(item, role[0], role[1], now)
            if row is not None:
                found[row.name] = row
        missing = [name for name in roles if name not in found]
        if missing:
            found.update(await self._fill_in(missing, roles))
        rows = [found[name] for name in roles if name in found]
        self._management_failed_at = None
        why = f"from the management API at {mask_url(self.management_url)}"
        return QueueReport("management", why, rows, now)

    async def _fill_in(
        self, names: list[str], roles: dict[str, tuple[str, str | None]]
    ) -> dict[str, QueueRow]:
        """Queues the API does not list with figures (or at all): ready and consumers
        from AMQP. Those that do not exist are left out, as the API leaves them out."""
        connection = await self.app.connector.get()
        found = await queue_stats(connection, names)
        rows = {}
        for name, (ready, consumers) in found.items():
            unknown = dict.fromkeys(("unacked", "rate_in", "rate_out", "oldest_age"), NOT_LISTED)
            role, queue = roles[name]
            rows[name] = QueueRow(name, role, queue, ready, consumers, unknown=unknown)
        return rows

    async def _from_amqp(self, roles: dict[str, tuple[str, str | None]]) -> QueueReport:
        connection = await self.app.connector.get()
        found = await queue_stats(connection, list(roles))
        rows = [
            QueueRow(name=name, role=roles[name][0], queue=roles[name][1], ready=r, consumers=c)
            for name, (r, c) in found.items()
        ]
        why = (
            f"from passive declares over AMQP: the management API at "
            f"{mask_url(self.management_url)} gave nothing ({self._management_error}; "
            f"tried again every {self.retry_after:g} s), so unacknowledged counts, rates "
            "and ages are not known; set LEVERET_DASHBOARD_MANAGEMENT_URL or enable "
            "rabbitmq_management"
        )
        return QueueReport("amqp", why, rows)
