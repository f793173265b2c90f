"""The checks that need the management HTTP API: bindings, policies, permissions and
per-queue consumer timeouts. Each reads the API, never changes the broker.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterator
from typing import Any

from leveret.amqp.topology import Topology
from leveret.app import App
from leveret.doctor.finding import Finding
from leveret.doctor.management import Forbidden, Management

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


async def run(
    mgmt: Management, app: App, version: tuple[int, int] | None
) -> tuple[list[Finding], list[str]]:
    """The findings, and the checks skipped (the API would not show what they need)."""
    topology = Topology(app.settings)
    findings = await _bindings(mgmt, app, topology)
    queues = await _queues(mgmt, topology, app)
    findings += list(_consumer_timeouts(app, topology, queues))
    findings += list(_dead_letter_policies(app, topology, queues, version))
    try:
        findings += await _permissions(mgmt, app, topology)
    except Forbidden as exc:
        return findings, [f"permissions: {exc}"]
    return findings, []


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
    """Each queue's type and arguments, with the policies that apply to it now.

    The policy a queue shows in the API comes from statistics a few seconds old, so
    the policies themselves are read and matched as the broker matches them.
    """
    vhost = mgmt.quoted(mgmt.vhost)
    policies = await mgmt.get(f"policies/{vhost}") or []
    try:
        operator = await mgmt.get(f"operator-policies/{vhost}") or []
    except Forbidden:
        operator = []
    found = {}
    for name, _ in topology.queues(_specs(app)):
        info = await mgmt.get(f"queues/{mgmt.quoted(mgmt.vhost, name)}")
        if info is not None:
            kind = info.get("type", "classic")
            info["policy"] = _matching(policies, name, kind)
            info["operator_policy"] = _matching(operator, name, kind)
            found[name] = info
    return found


def _matching(policies: list[dict[str, Any]], queue: str, kind: str) -> dict[str, Any] | None:
    """The policy RabbitMQ applies to ``queue``: the highest priority one that matches."""
    applies = {"all", "queues", f"{kind}_queues", "streams" if kind == "stream" else "queues"}
    best = None
    for policy in policies:
        try:
            matches = re.search(policy.get("pattern", ""), queue) is not None
        except re.error:
            continue
        higher = best is None or policy.get("priority", 0) > best.get("priority", 0)
        if matches and higher and policy.get("apply-to", "all") in applies:
            best = policy
    return best


def _effective(info: dict[str, Any], key: str) -> tuple[Any, str] | None:
    """A queue's value for a policy key and where it comes from: an x-argument, the
    policy or the operator policy; for limits, the lowest of them, as on the broker."""
    sources = [("an argument", (info.get("arguments") or {}).get(f"x-{key}"))]
    for field in ("policy", "operator_policy"):
        policy = info.get(field) or {}
        value = (policy.get("definition") or {}).get(key)
        sources.append((f"policy {policy.get('name')!r}", value))
    present = [(value, where) for where, value in sources if value is not None]
    if not present:
        return None
    if all(isinstance(v, int | float) for v, _ in present):
        return min(present, key=lambda p: p[0])
    return present[0]


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
            found = _effective(queues.get(name, {}), "consumer-timeout")
            limit = found[0] if found else None
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
        for key, effect in _LOSSY.items():
            found = _effective(info, key)
            if found is None or (key == "delivery-limit" and found[0] == -1):
                continue
            value, where = found
            yield Finding(
                "dead-letter policies",
                f"queue {name}",
                f"{key} {value} (from {where}): {effect.format(value)}",
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
                "raise it with a policy: rabbitmqctl set_policy --apply-to quorum_queues "
                f"dlq-limit '^{re.escape(topology.names.dead_queue(''))}' "
                "'{\"delivery-limit\": 1000000}' (docs/rabbitmq-4.md)",
            )


#: What each permission is needed for.
_NEEDS = {
    "configure": "workers and producers declare the topology at start-up",
    "write": "producers publish, workers publish retries and dead letters, bind queues",
    "read": "workers consume and bind, `leveret dlq` reads dead letters",
}


async def _permissions(mgmt: Management, app: App, topology: Topology) -> list[Finding]:
    """The AMQP user's permissions (reading them takes an administrator's API login)."""
    user = urllib.parse.unquote(urllib.parse.urlsplit(app.settings.urls[0]).username or "guest")
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
