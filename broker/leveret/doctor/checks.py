"""The checks ``leveret doctor`` runs, each yielding the problems it finds with their fix.

What AMQP cannot show (bindings, policies, permissions) is read from the management
HTTP API when it answers; when it does not, those checks are reported as skipped,
never guessed at.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from leveret.amqp import probe
from leveret.amqp.topology import Topology
from leveret.amqp.types import Connection
from leveret.app import App
from leveret.doctor import http_checks
from leveret.doctor.finding import Finding
from leveret.doctor.management import Management, Unreachable, masked
from leveret.priorities import unhonoured


@dataclass
class Diagnosis:
    """The problems found, and the checks that could not run (with why)."""

    findings: list[Finding] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


async def diagnose(app: App, management_url: str | None = None) -> list[Finding]:
    """Every problem between the broker the app connects to and what the app needs."""
    return (await examine(app, management_url)).findings


async def examine(app: App, management_url: str | None = None) -> Diagnosis:
    """``diagnose``, plus the checks skipped for want of the management API.

    Without ``management_url`` the API is looked for beside the broker (its host, port
    15672, the AMQP credentials); one given explicitly that does not answer is a finding.
    """
    connection = await app.connector.get()
    version = probe.server_version(connection)
    found = Diagnosis(list(_version(version, app)))
    found.findings += [f async for f in _topology(connection, app)]
    found.findings += list(_priorities(app))
    found.findings += list(_time_limits(app))
    mgmt = Management.for_amqp(app.settings.urls[0], management_url)
    try:
        findings, skipped = await http_checks.run(mgmt, app, _major_minor(version))
        found.findings += findings
        found.skipped += skipped
    except Unreachable as exc:
        if management_url:
            found.findings.append(
                Finding(
                    "management",
                    masked(mgmt.url),
                    str(exc),
                    "check --management-url / LEVERET_MANAGEMENT_URL (http://user:pass@host:"
                    "15672/) and that the user has the management or monitoring tag",
                )
            )
        found.skipped += [f"{check}: {exc}" for check in http_checks.CHECKS]
    return found


def _major_minor(version: str) -> tuple[int, int] | None:
    parts = version.split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return None


def _version(version: str, app: App) -> Iterator[Finding]:
    found = _major_minor(version)
    quorum = app.settings.delay_queue_type == "quorum" or any(
        s.type == "quorum" for s in app.queues.values()
    )
    if found is None:
        yield Finding(
            "version",
            "broker",
            f"the broker did not announce a RabbitMQ version ({version!r})",
            "leveret needs RabbitMQ 3.10 or later; check that this is RabbitMQ",
        )
    elif quorum and found < (3, 10):
        yield Finding(
            "version",
            f"RabbitMQ {version}",
            "quorum queues dead-letter at-least-once only from 3.10 on",
            "upgrade RabbitMQ to 3.13 or 4.x",
        )


async def _topology(connection: Connection, app: App) -> Any:
    topology = Topology(app.settings)
    for name, kind, arguments in topology.exchanges():
        if not await probe.exchange_exists(connection, name):
            yield Finding("topology", f"exchange {name}", "missing", _declare(app))
        elif drift := await probe.exchange_drift(connection, name, kind, arguments):
            yield Finding("topology", f"exchange {name}", f"differs: {drift}", _migrate(app))
    specs = [app.queue_spec(q) for q in sorted(app.queues)]
    for name, arguments in topology.queues(specs):
        state = await probe.queue_state(connection, name)
        if state is None:
            yield Finding("topology", f"queue {name}", "missing", _declare(app))
            continue
        if drift := await probe.queue_drift(connection, name, arguments):
            yield Finding("topology", f"queue {name}", f"differs: {drift}", _migrate(app))
        if name == topology.names.unroutable and state.messages:
            yield Finding(
                "unroutable",
                f"queue {name}",
                f"{state.messages} delayed message(s) arrived for a queue nobody is bound "
                "for and are parked here",
                f"look at them (management UI: Queues > {name} > Get messages, requeue "
                "on), declare the queue they were meant for, then shovel them back or "
                "purge the queue",
            )


def _declare(app: App) -> str:
    return (
        f"start a worker for the app, or run `leveret declare` "
        f"(namespace {app.settings.namespace!r})"
    )


def _migrate(app: App) -> str:
    return (
        "RabbitMQ cannot change arguments in place: keep the broker's settings in the "
        "app, or drain and delete the queue and let a worker declare it anew "
        "(README: 'Changing queue arguments')"
    )


def _priorities(app: App) -> Iterator[Finding]:
    for queue in sorted(app.queues):
        spec = app.queue_spec(queue)
        problem = unhonoured(spec, app.priorities_on(queue))
        if problem is not None:
            what, _, fix = problem.partition(" For strict priorities ")
            yield Finding("priorities", f"queue {queue}", what.rstrip("."), fix)


def _time_limits(app: App) -> Iterator[Finding]:
    limit = app.settings.consumer_timeout
    for reg in app.registry.values():
        timeout = reg.timeout or app.settings.task_timeout
        if timeout >= limit:
            yield Finding(
                "time limits",
                f"task {reg.task.name}",
                f"may run {timeout:.0f} s, not under the broker's consumer_timeout of "
                f"{limit:.0f} s (LEVERET_CONSUMER_TIMEOUT): RabbitMQ would cancel it and "
                "redeliver a healthy task",
                "lower the task's timeout, or raise consumer_timeout on the broker and "
                "LEVERET_CONSUMER_TIMEOUT to match",
            )
