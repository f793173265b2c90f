"""What every queue of the app holds: from the management API when it answers, else
from passive declares over AMQP.

The management API (RabbitMQ's ``rabbitmq_management`` plugin) knows unacknowledged
counts, in/out rates and the age of the oldest message; AMQP knows only ready
messages and consumers. The page says which source it used, and why not the other.
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


@dataclass
class QueueRow:
    """One queue as the page shows it; None where the source cannot tell."""

    name: str  # the AMQP name
    role: str  # work, dead letters, delay level k, unroutable
    queue: str | None  # the app's short name, for work and dead-letter queues
    ready: int
    consumers: int | None
    unacked: int | None = None
    rate_in: float | None = None
    rate_out: float | None = None
    oldest_age: float | None = None  # seconds


@dataclass
class QueueReport:
    source: str  # "management" or "amqp"
    why: str  # a sentence for the page
    rows: list[QueueRow] = field(default_factory=list)
    taken_at: float = field(default_factory=time.time)

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


class QueueWatcher:
    """Reads queue figures for one app, preferring the management API."""

    def __init__(self, app: App, management_url: str | None) -> None:
        self.app = app
        self.names = Names(app.settings.namespace)
        self.management_url = management_url or management_url_for(app.settings.url)
        self.vhost = _vhost(app.settings.url)
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
        if failed is None or time.monotonic() - failed > RETRY_MANAGEMENT:
            try:
                return await self._from_management(roles)
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                self._management_failed_at = time.monotonic()
                self._management_error = f"{type(exc).__name__}: {exc}"
        return await self._from_amqp(roles)

    async def _from_management(self, roles: dict[str, tuple[str, str | None]]) -> QueueReport:
        parts = urlsplit(self.management_url)
        auth = (unquote(parts.username or "guest"), unquote(parts.password or "guest"))
        base = urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]))
        url = f"{base.rstrip('/')}/api/queues/{quote(self.vhost, safe='')}"
        async with httpx.AsyncClient(timeout=MANAGEMENT_TIMEOUT, auth=auth) as client:
            response = await client.get(url)
            response.raise_for_status()
            data = response.json()
        now = time.time()
        rows = []
        for item in data:
            role = roles.get(item["name"])
            if role is None:
                continue
            stats = item.get("message_stats") or {}
            head = item.get("head_message_timestamp")
            rows.append(
                QueueRow(
                    name=item["name"],
                    role=role[0],
                    queue=role[1],
                    ready=int(item.get("messages_ready") or 0),
                    consumers=int(item.get("consumers") or 0),
                    unacked=int(item.get("messages_unacknowledged") or 0),
                    rate_in=(stats.get("publish_details") or {}).get("rate"),
                    rate_out=(stats.get("ack_details") or {}).get("rate"),
                    oldest_age=max(0.0, now - float(head)) if head else None,
                )
            )
        rows.sort(key=lambda r: list(roles).index(r.name))
        self._management_failed_at = None
        return QueueReport(
            "management", f"from the management API at {mask_url(self.management_url)}", rows
        )

    async def _from_amqp(self, roles: dict[str, tuple[str, str | None]]) -> QueueReport:
        connection = await self.app.connector.get()
        found = await queue_stats(connection, list(roles))
        rows = [
            QueueRow(name=name, role=roles[name][0], queue=roles[name][1], ready=r, consumers=c)
            for name, (r, c) in found.items()
        ]
        why = (
            f"from passive declares over AMQP: the management API at "
            f"{mask_url(self.management_url)} did not answer ({self._management_error}), so "
            "unacknowledged counts, rates and ages are not known; set "
            "LEVERET_DASHBOARD_MANAGEMENT_URL or enable rabbitmq_management"
        )
        return QueueReport("amqp", why, rows)
