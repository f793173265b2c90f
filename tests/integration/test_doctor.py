"""``leveret doctor``: each problem seeded on a real broker is reported, and only it."""

from __future__ import annotations

import json

import pytest

from leveret import App, Task
from leveret.doctor import Finding, diagnose
from leveret.priorities import PriorityIgnored
from tests.apps import doctor_app
from tests.support.amqp import admin_channel
from tests.support.models import Job
from tests.support.processes import cli


def _like(make_app, model: App) -> App:  # type: ignore[no-untyped-def]
    """An app on the test's namespace with the queues and tasks of ``model``."""
    app: App = make_app()
    for spec in model.queues.values():
        app.queue(spec.name, type=spec.type, priority_bands=spec.priority_bands)
    for task in model.contracts.values():
        app.add(task)
    return app


def _subjects(findings: list[Finding]) -> list[tuple[str, str]]:
    return [(f.check, f.subject) for f in findings]


async def test_a_healthy_setup_has_no_findings_and_exits_0(  # type: ignore[no-untyped-def]
    make_app, amqp_url: str, namespace: str
) -> None:
    app = _like(make_app, doctor_app.app)
    await app.declare()
    assert await diagnose(app) == []

    done = cli(amqp_url, namespace, "doctor", "tests.apps.doctor_app:app")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok:" in done.stdout


async def test_missing_queues_are_named(make_app) -> None:  # type: ignore[no-untyped-def]
    app: App = make_app()
    app.add(Task("doctor.job", Job, queue="doc-missing"))
    await app.declare([])  # the shared topology only
    names = app.sender.names
    assert _subjects(await diagnose(app)) == [
        ("topology", f"queue {names.work_queue('doc-missing')}"),
        ("topology", f"queue {names.dead_queue('doc-missing')}"),
    ]


async def test_drift_is_named_argument_by_argument(make_app) -> None:  # type: ignore[no-untyped-def]
    first: App = make_app()
    first.queue("doc-drift", max_priority=5)
    await first.declare()
    second: App = make_app()
    second.queue("doc-drift", max_priority=10)
    [finding] = await diagnose(second)
    assert finding.subject == f"queue {second.sender.names.work_queue('doc-drift')}"
    assert "x-max-priority" in finding.problem
    assert "Changing queue arguments" in finding.fix


async def test_parked_unroutable_messages_are_counted(make_app) -> None:  # type: ignore[no-untyped-def]
    app: App = make_app()
    app.queue("doc-parked")
    await app.declare()
    async with admin_channel(app.settings.url) as channel:
        await channel.confirm_delivery()
        await channel.basic_publish(
            b"{}", exchange=app.sender.names.delivery_exchange, routing_key="nobody"
        )
    [finding] = await diagnose(app)
    assert finding.check == "unroutable"
    assert finding.problem.startswith("1 delayed message")


async def test_time_limits_over_the_consumer_timeout(make_app) -> None:  # type: ignore[no-untyped-def]
    app: App = make_app(consumer_timeout=60)
    slow = Task("doctor.slow", Job, queue="doc-slow")

    @app.handle(slow, timeout=120)
    async def handle(payload: Job) -> None: ...

    await app.declare()
    assert _subjects(await diagnose(app)) == [("time limits", "task doctor.slow")]


async def test_a_plain_quorum_queue_with_priorities_exits_1_naming_it(  # type: ignore[no-untyped-def]
    make_app, amqp_url: str, namespace: str
) -> None:
    app = _like(make_app, doctor_app.plain)
    with pytest.warns(PriorityIgnored):
        await app.declare()
    assert _subjects(await diagnose(app)) == [("priorities", "queue doc-plain")]

    done = cli(amqp_url, namespace, "doctor", "--json", "tests.apps.doctor_app:plain")
    assert done.returncode == 1, done.stdout + done.stderr
    [finding] = json.loads(done.stdout)
    assert finding["subject"] == "queue doc-plain"
    assert "priority_bands=(5,)" in finding["fix"]
