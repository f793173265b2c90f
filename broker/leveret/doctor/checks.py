"""The checks ``leveret doctor`` runs, each yielding the problems it finds with their fix.

What AMQP cannot show is not guessed at: bindings, policies and the broker's own
``consumer_timeout`` are not visible over it (the management plugin shows them).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from leveret.amqp import probe
from leveret.amqp.topology import Topology
from leveret.amqp.types import Connection
from leveret.app import App
from leveret.priorities import unhonoured


@dataclass(frozen=True)
class Finding:
    """One problem: which check found it, on what, what is wrong, and what to do."""

    check: str
    subject: str
    problem: str
    fix: str

    def line(self) -> str:
        return f"{self.check}: {self.subject}: {self.problem}. Fix: {self.fix}"

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


async def diagnose(app: App) -> list[Finding]:
    """Every problem between the broker the app connects to and what the app needs."""
    connection = await app.connector.get()
    findings = list(_version(probe.server_version(connection), app))
    findings += [f async for f in _topology(connection, app)]
    findings += list(_priorities(app))
    findings += list(_time_limits(app))
    return findings


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
