"""The checks that need the management HTTP API: bindings, policies, permissions and
per-queue consumer timeouts. Each reads the API, never changes the broker.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from leveret.amqp.topology import Topology
from leveret.app import App
from leveret.doctor.finding import Finding
from leveret.doctor.management import Management

#: Checks run only through the management API, in the order they are reported.
CHECKS = ("bindings", "consumer timeout", "dead-letter policies", "permissions")

#: Policy keys that make a dead-letter queue lose, expire or move its letters.
_LOSSY = {
    "message-ttl": "letters expire after {} ms",
    "expires": "the queue itself is deleted after {} ms unused",
    "max-length": "letters beyond {} are dropped or dead-lettered",
    "max-length-bytes": "letters beyond {} bytes are dropped or dead-lettered",
    "dead-letter-exchange": "letters are dead-lettered again, to {!r}",
    "delivery-limit": "a letter returned more than {} times is dropped",
}

#: RabbitMQ 4.x gives every quorum queue this delivery limit unless one is set.
DEFAULT_DELIVERY_LIMIT_4X = 20


def _specs(app: App) -> list[Any]:
    return [app.queue_spec(q) for q in sorted(app.queues)]


async def run(mgmt: Management, app: App, version: tuple[int, int] | None) -> list[Finding]:
    topology = Topology(app.settings)
    findings = await _bindings(mgmt, app, topology)
    queues = await _queues(mgmt, topology, app)
    findings += list(_consumer_timeouts(app, topology, queues))
    findings += list(_dead_letter_policies(app, topology, queues, version))
    findings += await _permissions(mgmt, app, topology)
    return findings


async def _bindings(mgmt: Management, app: App, topology: Topology) -> list[Finding]:
    rows = await mgmt.get(f"bindings/{mgmt.quoted(mgmt.vhost)}") or []
    present = {
        (b["source"], b["destination"], b["destination_type"], b["routing_key"]) for b in rows
    }
    findings = []
    for source, dest, kind, key in topology.bindings(_specs(app)):
        if (source, dest, kind, key) not in present:
            findings.append(
                Finding(
                    "bindings",
                    f"{kind} {dest}",
                    f"not bound to exchange {source} with key {key!r}: "
                    + _unbound_effect(topology, source),
                    "start a worker or run `leveret declare`: declaring binds it again "
                    f"(namespace {app.settings.namespace!r})",
                )
            )
    return findings


def _unbound_effect(topology: Topology, source: str) -> str:
    n = topology.names
    if source == n.tasks_exchange:
        return "sends to it fail as unroutable"
    if source == n.dead_exchange:
        return "its dead letters are dropped"
    if source == n.delivery_exchange:
        return "retries and delayed sends for it are parked as unroutable"
    return "the delay ladder is broken: retries and delayed sends are parked or lost"


async def _queues(mgmt: Management, topology: Topology, app: App) -> dict[str, dict[str, Any]]:
    found = {}
    for name, _ in topology.queues(_specs(app)):
        info = await mgmt.get(f"queues/{mgmt.quoted(mgmt.vhost, name)}")
        if info is not None:
            found[name] = info
    return found


def _effective(info: dict[str, Any], key: str) -> Any:
    """A queue's value for a policy key: its own x-argument wins, as on the broker."""
    arguments = info.get("arguments") or {}
    if f"x-{key}" in arguments:
        return arguments[f"x-{key}"]
    return (info.get("effective_policy_definition") or {}).get(key)


def _consumer_timeouts(
    app: App, topology: Topology, queues: dict[str, dict[str, Any]]
) -> Iterator[Finding]:
    """A per-queue consumer timeout (argument or policy, RabbitMQ 3.12+) under a task's
    time limit. The node-wide value is not in the HTTP API: that one is checked against
    LEVERET_CONSUMER_TIMEOUT by the time limits check."""
    for reg in app.registry.values():
        timeout = reg.timeout or app.settings.task_timeout
        queue = reg.task.queue
        if queue not in app.queues:
            continue
        for band in app.queue_spec(queue).bands:
            name = topology.names.work_queue(band)
            limit = _effective(queues.get(name, {}), "consumer-timeout")
            if isinstance(limit, int | float) and timeout * 1000 >= limit:
                yield Finding(
                    "consumer timeout",
                    f"task {reg.task.name}",
                    f"may run {timeout:.0f} s, not under queue {name}'s consumer timeout "
                    f"of {limit / 1000:.0f} s: RabbitMQ would cancel it and redeliver a "
                    "healthy task",
                    "lower the task's timeout, or raise the queue's `consumer-timeout` "
                    "policy above it",
                )


def _dead_letter_policies(
    app: App,
    topology: Topology,
    queues: dict[str, dict[str, Any]],
    version: tuple[int, int] | None,
) -> Iterator[Finding]:
    for queue in sorted(app.queues):
        name = topology.names.dead_queue(queue)
        info = queues.get(name)
        if info is None:
            continue
        policy = info.get("policy") or info.get("operator_policy") or "an argument"
        for key, effect in _LOSSY.items():
            value = _effective(info, key)
            if value is not None and not (key == "delivery-limit" and value == -1):
                yield Finding(
                    "dead-letter policies",
                    f"queue {name}",
                    f"{key} {value} (from {policy}): {effect.format(value)}",
                    f"exclude {name} from the policy (narrow its pattern, or give the "
                    "dead-letter queues a policy of their own with higher priority)",
                )
        quorum = info.get("type") == "quorum"
        on_4x = version is not None and version >= (4, 0)
        if quorum and on_4x and _effective(info, "delivery-limit") is None:
            yield Finding(
                "dead-letter policies",
                f"queue {name}",
                f"RabbitMQ 4 gives quorum queues a delivery limit of "
                f"{DEFAULT_DELIVERY_LIMIT_4X}: a letter returned that often (a "
                "`leveret dlq` scan closed early counts) is dropped",
                "lift it with a policy: rabbitmqctl set_policy --apply-to quorum_queues "
                f"leveret-dlq '^{re.escape(topology.names.dead_queue(''))}' "
                "'{\"delivery-limit\": -1}'",
            )


#: What each permission is needed for.
_NEEDS = {
    "configure": "workers and producers declare the topology at start-up",
    "write": "producers publish, workers publish retries and dead letters, bind queues",
    "read": "workers consume and bind, `leveret dlq` reads dead letters",
}


async def _permissions(mgmt: Management, app: App, topology: Topology) -> list[Finding]:
    user = (await mgmt.get("whoami") or {}).get("name", "")
    row = await mgmt.get(f"permissions/{mgmt.quoted(mgmt.vhost, user)}")
    if row is None:
        return [
            Finding(
                "permissions",
                f"user {user}",
                f"has no permissions on vhost {mgmt.vhost!r}",
                f"rabbitmqctl set_permissions -p {mgmt.vhost} {user} "
                f"'^{re.escape(app.settings.namespace)}\\.' (the same for write and read)",
            )
        ]
    names = [e[0] for e in topology.exchanges()] + [q[0] for q in topology.queues(_specs(app))]
    findings = []
    for kind, why in _NEEDS.items():
        pattern = row.get(kind) or ""
        try:
            denied = [n for n in names if not pattern or not re.search(pattern, n)]
        except re.error:
            denied = names
        if denied:
            shown = ", ".join(denied[:3]) + (f" and {len(denied) - 3} more" if denied[3:] else "")
            findings.append(
                Finding(
                    "permissions",
                    f"user {user}",
                    f"{kind} permission {pattern!r} does not cover {shown} ({why})",
                    f"give {user} {kind} on '^{re.escape(app.settings.namespace)}\\.' "
                    f"(rabbitmqctl set_permissions -p {mgmt.vhost} {user} ...)",
                )
            )
    return findings
