"""Prometheus metrics of a scheduler replica; the names are a contract for alerts.

    leveret_scheduler_leader                        1 on the replica that fires, else 0
    leveret_schedule_last_fire_timestamp_seconds    {schedule} when its last slot was sent
    leveret_schedule_next_fire_timestamp_seconds    {schedule} when its next slot is due
    leveret_schedule_lateness_seconds               {schedule} histogram: sent - due
    leveret_schedule_fires_total                    {schedule}
    leveret_schedule_skipped_total                  {schedule} slots given up by the policy
    leveret_schedule_errors_total                   {schedule} failed attempts to fire

Only the leader exports the next fire time; after a failover the old leader's
series goes stale, so alerts take ``max by (schedule)`` over replicas.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENESS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class SchedulerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.leader = Gauge(
            "leveret_scheduler_leader", "1 if this replica is the leader", registry=r
        )
        self.last_fire = Gauge(
            "leveret_schedule_last_fire_timestamp_seconds",
            "When the schedule's last slot was sent (Unix time)",
            ["schedule"],
            registry=r,
        )
        self.next_fire = Gauge(
            "leveret_schedule_next_fire_timestamp_seconds",
            "When the schedule's next slot is due, jitter included (Unix time)",
            ["schedule"],
            registry=r,
        )
        self.lateness = Histogram(
            "leveret_schedule_lateness_seconds",
            "Seconds from a slot's due time (jitter included) to its confirmed send",
            ["schedule"],
            buckets=LATENESS_BUCKETS,
            registry=r,
        )
        self.fires = Counter("leveret_schedule_fires", "Slots sent", ["schedule"], registry=r)
        self.skipped = Counter(
            "leveret_schedule_skipped",
            "Missed slots given up by the missed-slot policy",
            ["schedule"],
            registry=r,
        )
        self.errors = Counter(
            "leveret_schedule_errors",
            "Failed attempts to fire a slot (retried)",
            ["schedule"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
