"""``leveret doctor`` through the management HTTP API: each problem seeded on a real
broker is reported, and only it; without the API each such check says it was skipped."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

import pytest

from leveret import App, Task
from leveret.amqp.topology import Topology
from leveret.doctor import Finding, examine
from leveret.ops.discovery import free_port
from leveret.priorities import PriorityIgnored
from tests.apps import doctor_app
from tests.support.amqp import admin_channel
from tests.support.management import WithManagement
from tests.support.models import Job
from tests.support.processes import cli


@pytest.fixture
def app_on(make_app, management: WithManagement) -> Callable[..., App]:  # type: ignore[no-untyped-def]
    """Apps on the broker whose management API the tests read (the test's namespace)."""

    def make(model: App = doctor_app.app, **overrides: object) -> App:
        overrides.setdefault("url", management.amqp_url)
        app: App = make_app(**overrides)
        for spec in model.queues.values():
            app.queue(spec.name, type=spec.type, priority_bands=spec.priority_bands)
        for task in model.contracts.values():
            app.add(task)
        return app

    return make


def _subjects(findings: list[Finding]) -> list[tuple[str, str]]:
    return [(f.check, f.subject) for f in findings]


async def test_a_healthy_setup_has_no_findings_and_skips_nothing(  # type: ignore[no-untyped-def]
    app_on, management: WithManagement, namespace: str
) -> None:
    app = app_on()
    await app.declare()
    found = await examine(app, management.management_url)
    assert (found.findings, found.skipped) == ([], [])

    done = cli(
        management.amqp_url, namespace, "doctor", "--management-url", management.management_url,
        "tests.apps.doctor_app:app",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok:" in done.stdout
    assert "skipped" not in done.stdout


async def test_missing_bindings_are_named(app_on, management: WithManagement) -> None:  # type: ignore[no-untyped-def]
    app = app_on()
    await app.declare()
    names = app.sender.names
    work = names.work_queue("doc-classic")
    level = names.delay_level(3)
    [(_, onward, _, key)] = [
        b for b in Topology(app.settings).bindings([]) if b[0] == level and b[2] == "exchange"
    ]
    async with admin_channel(management.amqp_url) as channel:
        await channel.queue_unbind(work, names.tasks_exchange, routing_key="doc-classic")
        await channel.exchange_unbind(onward, level, routing_key=key)
    found = await examine(app, management.management_url)
    assert _subjects(found.findings) == [
        ("bindings", f"exchange {names.delay_level(2)}"),
        ("bindings", f"queue {work}"),
    ]
    assert "unroutable" in found.findings[1].problem


async def test_policies_that_would_lose_dead_letters(app_on, management: WithManagement) -> None:  # type: ignore[no-untyped-def]
    app = app_on()
    await app.declare()
    names = app.sender.names
    policy = f"doc-{uuid.uuid4().hex[:8]}"
    pattern = "^" + re.escape(names.dead_queue("doc-classic")) + "$"
    body = {"pattern": pattern, "definition": {"message-ttl": 60000, "max-length": 10}}
    assert management.call("PUT", "policies/" + management.vhost_path(policy), body) in (201, 204)
    try:
        found = await examine(app, management.management_url)
    finally:
        management.call("DELETE", "policies/" + management.vhost_path(policy))
    subject = f"queue {names.dead_queue('doc-classic')}"
    assert _subjects(found.findings) == [("dead-letter policies", subject)] * 2
    problems = " ".join(f.problem for f in found.findings)
    assert "message-ttl 60000" in problems
    assert "max-length 10" in problems
    assert policy in problems


async def test_missing_permissions_are_named_with_what_needs_them(  # type: ignore[no-untyped-def]
    app_on, management: WithManagement, namespace: str
) -> None:
    await app_on().declare()
    user = f"doc-{uuid.uuid4().hex[:8]}"
    body = {"password": "secret-pw", "tags": "monitoring"}
    assert management.call("PUT", "users/" + user, body) in (201, 204)
    grants = {"configure": "^nothing-here$", "write": ".*", "read": f"^{namespace}\\.dlq\\."}
    assert management.call("PUT", "permissions/" + management.vhost_path(user), grants) in (
        201,
        204,
    )
    try:
        port = management.amqp_url.rsplit(":", 1)[1].strip("/")
        restricted = app_on(url=f"amqp://{user}:secret-pw@127.0.0.1:{port}/")
        found = await examine(restricted, management.management_url.replace("://", f"://{user}:x@"))
        assert [f.check for f in found.findings] == ["management"]  # wrong password
        admin = management.management_url.replace("://", "://guest:guest@")
        found = await examine(restricted, admin)  # the AMQP user's permissions, read by an admin
    finally:
        management.call("DELETE", "users/" + user)
    assert _subjects(found.findings) == [("permissions", f"user {user}")] * 2
    configure, read = (f.problem for f in found.findings)
    assert configure.startswith("configure permission '^nothing-here$'")
    assert "declare the topology" in configure
    assert read.startswith(f"read permission '^{namespace}\\\\.dlq\\\\.'")
    assert "consume" in read


async def test_a_per_queue_consumer_timeout_under_a_task_time_limit(  # type: ignore[no-untyped-def]
    app_on, management: WithManagement
) -> None:
    app = app_on(doctor_app.plain)
    slow = app.add(Task("doctor.slow", Job, queue="doc-plain"))

    @app.handle(slow, timeout=120)
    async def handle(payload: Job) -> None: ...

    with pytest.warns(PriorityIgnored):
        await app.declare()
    policy = f"doc-{uuid.uuid4().hex[:8]}"
    pattern = "^" + re.escape(app.sender.names.work_queue("doc-plain")) + "$"
    body = {"pattern": pattern, "definition": {"consumer-timeout": 60000}}
    status = management.call("PUT", "policies/" + management.vhost_path(policy), body)
    if status == 400:
        pytest.skip("this RabbitMQ has no per-queue consumer-timeout policy (3.12 and later)")
    try:
        found = await examine(app, management.management_url)
    finally:
        management.call("DELETE", "policies/" + management.vhost_path(policy))
    assert ("consumer timeout", "task doctor.slow") in _subjects(found.findings)


async def test_without_the_api_each_check_says_skipped(  # type: ignore[no-untyped-def]
    make_app, amqp_url: str, namespace: str
) -> None:
    app: App = make_app()
    app.queue("doc-alone")
    await app.declare()
    nowhere = f"http://guest:hunter2@127.0.0.1:{free_port()}/"
    found = await examine(app)
    if not found.skipped:
        pytest.skip("the management API answers beside this broker: nothing is skipped")
    assert found.findings == []
    assert [s.partition(":")[0] for s in found.skipped] == [
        "bindings", "consumer timeout", "dead-letter policies", "permissions"
    ]  # fmt: skip

    done = cli(amqp_url, namespace, "doctor", "tests.apps.doctor_app:plain")
    assert done.stdout.count("skipped: ") == 4

    given = cli(
        amqp_url, namespace, "doctor", "--management-url", nowhere,
        "tests.apps.doctor_app:plain",
    )  # fmt: skip
    assert given.returncode == 1
    assert "hunter2" not in given.stdout + given.stderr
    assert "guest:***@" in given.stdout
