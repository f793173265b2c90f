"""Prometheus metrics of an outbox relay, on a registry of its own.

The names are a contract: the alerts in deploy/ are written against them.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest


class RelayMetrics:
    """Backlog and age of the oldest pending row (read from the table every few
    seconds), rows sent, publishes that failed, readiness."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.published = Counter(
            "leveret_outbox_published",
            "Outbox rows published, confirmed by RabbitMQ and marked sent.",
            registry=r,
        )
        self.failures = Counter(
            "leveret_outbox_publish_failures",
            "Outbox rows whose publish failed, by error; the row stays pending and is tried again.",
            ["error"],
            registry=r,
        )
        self.backlog = Gauge(
            "leveret_outbox_backlog",
            "Committed outbox rows not yet sent.",
            registry=r,
        )
        self.oldest = Gauge(
            "leveret_outbox_oldest_pending_seconds",
            "Age of the oldest committed outbox row not yet sent, in seconds (0 if none).",
            registry=r,
        )
        self.ready = Gauge(
            "leveret_outbox_relay_ready",
            "1 when the relay reaches PostgreSQL and RabbitMQ and is relaying, else 0.",
            registry=r,
        )
        self.cleaned = Counter(
            "leveret_outbox_cleaned",
            "Sent rows deleted after the retention period.",
            registry=r,
        )

    def render(self) -> bytes:
        """The text exposition, for ``/metrics``."""
        return generate_latest(self.registry)
