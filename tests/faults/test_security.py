"""Security under the same roof: TLS, per-service users, secrets kept out of output,
and payloads that are too big or not JSON."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import pickle
import subprocess
import sys
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import aiormq
import pytest
from pydantic import ValidationError

from leveret import App, BrokerUnavailable, NotConfirmed, PayloadTooLarge, Settings
from leveret.amqp.topology import Names
from leveret.ops.discovery import free_port
from tests.apps.faults_app import QUEUE, Job, job
from tests.faults.conftest import SingleNode
from tests.faults.proxy import FaultProxy, Upstream
from tests.faults.scenario import FULL
from tests.faults.test_messages import publish_raw
from tests.support import ROOT
from tests.support.amqp import admin_channel

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600 if FULL else 150)]

SECRET = "Zx9-secret-Pw-41"


# -- TLS ------------------------------------------------------------------------------


async def connect_error(url: str) -> str:
    """The BrokerUnavailable message a connect to ``url`` ends with."""
    app = App(Settings(url=url, connect_deadline=3))
    try:
        with pytest.raises(BrokerUnavailable) as caught:
            await app.connector.get()
    finally:
        await app.close()
    return str(caught.value)


async def test_tls_verified_by_default(node: SingleNode) -> None:
    """amqps with the right CA works; verification is on without being asked for."""
    app = App(Settings(url=node.tls_url(), connect_deadline=5))
    try:
        connection = await app.connector.get()
        assert connection.transport is not None
    finally:
        await app.close()
    # No CA given: the system's trust store does not know our CA, so it is refused.
    message = await connect_error(f"amqps://guest:guest@localhost:{node.tls_port}/")
    assert "TLS handshake" in message
    assert "not signed by a CA this client trusts" in message
    assert "?cafile=" in message


async def test_tls_wrong_ca_or_host_or_plaintext_refused(node: SingleNode) -> None:
    """Each mistake is refused with an error that says what to fix."""
    assert node.certs is not None
    wrong_ca = await connect_error(node.tls_url(ca=node.certs.other_ca))
    assert "not signed by a CA this client trusts" in wrong_ca, wrong_ca

    # The certificate names DNS:localhost only; 127.0.0.1 is the same server by IP.
    wrong_host = await connect_error(node.tls_url(host="127.0.0.1"))
    assert "not issued for the host in the URL" in wrong_host, wrong_host
    assert "subjectAltName" in wrong_host

    plaintext = await connect_error(f"amqp://guest:guest@localhost:{node.tls_port}/")
    assert "use amqps://" in plaintext, plaintext

    tls_to_plain_port = await connect_error(
        f"amqps://guest:guest@localhost:{node.port}/?cafile={node.certs.ca}"
    )
    assert "does not speak TLS" in tls_to_plain_port, tls_to_plain_port
    for message in (wrong_ca, wrong_host, plaintext, tls_to_plain_port):
        print(message)
        assert "guest:guest" not in message


# -- per-service users ----------------------------------------------------------------


def producer_permissions(namespace: str) -> str:
    """What a service that only sends needs: the shared exchanges and the delay ladder."""
    return rf"^{namespace}\.(tasks|delivery|dead|unroutable|delay\.[0-9]+)$"


@pytest.fixture(scope="module")
def users(node: SingleNode) -> Iterator[dict[str, str]]:
    """A producer-only user and a worker user for one namespace; removed afterwards."""
    namespace = f"f{uuid.uuid4().hex[:10]}"
    tag = uuid.uuid4().hex[:6]
    made = {"namespace": namespace, "producer": f"producer-{tag}", "worker": f"worker-{tag}"}
    only_send = producer_permissions(namespace)
    everything = rf"^{namespace}\..*$"
    for role, perms in (("producer", only_send), ("worker", everything)):
        node.ctl("add_user", made[role], SECRET)
        node.ctl("set_permissions", "-p", "/", made[role], perms, perms, perms)
    yield made
    for role in ("producer", "worker"):
        node.ctl("delete_user", made[role])


def user_url(node: SingleNode, user: str, password: str = SECRET) -> str:
    return f"amqp://{user}:{password}@127.0.0.1:{node.port}/"


async def test_producer_only_user_cannot_consume_or_purge(
    node: SingleNode,
    users: dict[str, str],
    make_scenario,  # type: ignore[no-untyped-def]
) -> None:
    """The producer sends (now and delayed); reading or purging tasks is refused."""
    s = make_scenario(
        user_url(node, users["producer"]),
        admin_url=node.url,
        worker_env={"LEVERET_URL": user_url(node, users["worker"])},
        namespace=users["namespace"],
    )
    s.workers.spawn()  # the worker user declares the queues
    await s.workers.wait_ready()
    await s.produce((n, {}) for n in range(5))
    await s.app.send(job, Job(n=99), task_id=s.task_id(99), delay=0.2)
    s.ledger.expected.add(s.task_id(99))
    await s.settle(within=30)
    assert s.verdict(record=False).lost == []

    connection = await aio_pika.connect(user_url(node, users["producer"]))
    try:
        for queue in (s.names.work_queue(QUEUE), s.names.dead_queue(QUEUE)):
            for action in ("consume", "purge", "get"):
                channel = await connection.channel()
                raw = await channel.get_underlay_channel()
                with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
                    await forbidden(raw, action, queue)
    finally:
        await connection.close()


async def forbidden(raw: aiormq.abc.AbstractChannel, action: str, queue: str) -> object:
    if action == "consume":
        return await raw.basic_consume(queue, _ignore)
    if action == "purge":
        return await raw.queue_purge(queue)
    return await raw.basic_get(queue)


async def _ignore(_: object) -> None:
    return None


def replay_command(app: str, queue: str, rate: int | None = None) -> list[str]:
    """The dead-letter replay command line (one place to adapt if its flags change)."""
    command = [sys.executable, "-m", "leveret", "dlq", "replay", "--app", app, "--queue", queue]
    return command if rate is None else [*command, "--rate", f"{rate}/s"]


NO_REPLAY = importlib.util.find_spec("leveret.deadletter") is None
NO_REPLAY_REASON = "broker/deadletter.py (leveret dlq replay) is not part of this build yet"


async def _dead_letter_one(url: str, namespace: str) -> None:
    """Put one message in the dead-letter queue, as an administrator."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(Names(namespace).dead_exchange)
        await exchange.publish(aio_pika.Message(b"{}", message_id="dead-1"), routing_key=QUEUE)


@pytest.mark.skipif(NO_REPLAY, reason=NO_REPLAY_REASON)
def test_replay_needs_a_user_allowed_to(node: SingleNode, users: dict[str, str]) -> None:
    """The replay command works for the worker user and fails clearly for the producer."""
    env = {
        "LEVERET_NAMESPACE": users["namespace"],
        "LEVERET_DELAY_LEVELS": "12",
        "PYTHONPATH": str(ROOT),
    }
    declared = subprocess.run(
        [sys.executable, "-m", "leveret", "declare", "tests.apps.faults_app:app"],
        env={**os.environ, **env, "LEVERET_URL": node.url},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert declared.returncode == 0, declared.stdout + declared.stderr
    asyncio.run(_dead_letter_one(node.url, users["namespace"]))
    cmd = replay_command("tests.apps.faults_app:app", QUEUE)
    refused = subprocess.run(
        cmd,
        env={**env, "LEVERET_URL": user_url(node, users["producer"])},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert refused.returncode != 0
    said = refused.stdout + refused.stderr
    assert "ACCESS_REFUSED" in said or "permission" in said.lower(), said
    assert "Traceback" not in said, said
    assert SECRET not in said
    allowed = subprocess.run(
        cmd,
        env={**env, "LEVERET_URL": user_url(node, users["worker"])},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr


# -- secrets --------------------------------------------------------------------------


async def test_credentials_never_in_logs_or_exceptions(
    node: SingleNode,
    users: dict[str, str],
    caplog: pytest.LogCaptureFixture,
    make_scenario,  # type: ignore[no-untyped-def]
) -> None:
    """Failed logins, lost connections, refused sends, bad settings: the password shows nowhere."""
    caplog.set_level(logging.DEBUG)
    said: list[str] = []

    def keep(exc: BaseException) -> None:
        said.append("".join(traceback.format_exception(exc)) + repr(exc))

    # A wrong password, a port nobody listens on, a URL that is not AMQP.
    for url in (
        user_url(node, users["worker"], password=SECRET + "-wrong"),
        f"amqp://someone:{SECRET}@127.0.0.1:{free_port()}/",
    ):
        app = App(Settings(url=url, connect_deadline=2))
        with pytest.raises(BrokerUnavailable) as caught:
            await app.connector.get()
        keep(caught.value)
        await app.close()
    with pytest.raises(ValidationError) as invalid:
        Settings(url=f"http://someone:{SECRET}@example.com/")
    keep(invalid.value)

    # A producer and a worker through a proxy that cuts them off, then refuses them.
    proxy = FaultProxy(Upstream(port=node.port), name="proxy-secrets").start()
    try:
        s = make_scenario(
            proxy.url(users["worker"], SECRET),
            admin_url=node.url,
            namespace=users["namespace"],
            publish_deadline=3.0,
        )
        await s.declare()
        worker = s.workers.spawn(log_level="DEBUG")
        await s.workers.wait_ready()
        await s.produce((n, {}) for n in range(20))
        proxy.reset_all()
        await s.produce((n, {}) for n in range(20, 40))
        await s.settle(within=30)
        proxy.refuse()
        proxy.reset_all()
        with pytest.raises(NotConfirmed) as refused:
            await s.app.send(job, Job(n=1000))
        keep(refused.value)
        proxy.refuse(False)
        await asyncio.sleep(1)
    finally:
        proxy.stop()
    worker_output = worker.output()

    assert "connection" in caplog.text.lower()  # the logs did talk about connections
    assert SECRET not in caplog.text
    for text in said:
        assert SECRET not in text, text
    assert SECRET not in worker_output, worker_output[-3000:]
    if importlib.util.find_spec("leveret.ops.metrics") is not None:
        from prometheus_client import REGISTRY

        for metric in REGISTRY.collect():
            for sample in metric.samples:
                assert not any(SECRET in str(v) for v in sample.labels.values()), sample


# -- payloads -------------------------------------------------------------------------


class Tripwire:
    """Unpickling this touches a file: proof that something ran pickle on a body."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path.touch, (str(self.path),))  # type: ignore[return-value]


async def test_oversize_refused_at_send_and_dead_lettered_at_receive(
    node: SingleNode,
    tmp_path: Path,
    make_scenario,  # type: ignore[no-untyped-def]
) -> None:
    """Too big: refused before publishing, and dead-lettered unparsed on arrival; JSON only."""
    limit = 32 * 1024
    s = make_scenario(node.url, max_payload_bytes=limit)
    await s.declare()

    with pytest.raises(PayloadTooLarge, match="over the limit"):
        await s.app.send_by_name("faults.unknown_big", {"pad": "x" * limit}, queue=QUEUE)
    async with admin_channel(node.url) as channel:
        ok = await channel.queue_declare(s.names.work_queue(QUEUE), passive=True)
        assert ok.message_count == 0, "an oversize payload reached the queue"

    tripwire = tmp_path / "unpickled"
    foreign = [
        # Too big and not JSON either: the size check must come first.
        ("too-big", "faults.job", b"\x80" * (limit + 1), "application/json"),
        # A pickle, labelled as one: never unpickled, dead-lettered as not JSON.
        (
            "pickle",
            "faults.job",
            pickle.dumps(Tripwire(tripwire)),
            "application/x-python-serialize",
        ),
    ]
    s.ledger.expected.update(i for i, *_ in foreign)
    s.workers.spawn()
    await s.workers.wait_ready()
    await publish_raw(node.url, s.names.tasks_exchange, foreign)
    await s.settle(within=30, dead=len(foreign))

    dead = {d.task_id: d for d in await s.dead_letters()}
    assert dead["too-big"].reason == "oversize", dead["too-big"].headers
    assert dead["pickle"].reason == "malformed", dead["pickle"].headers
    assert not tripwire.exists(), "something unpickled a message body"
    s.verdict(dead=set(dead), record=False)


async def test_worker_without_permission_stops_with_a_clear_error(
    node: SingleNode,
    users: dict[str, str],
    make_scenario,  # type: ignore[no-untyped-def]
) -> None:
    """A worker run with the producer's credentials says so and stops; it does not spin."""
    s = make_scenario(
        user_url(node, users["producer"]), admin_url=node.url, namespace=users["namespace"]
    )
    worker = s.workers.spawn()
    code = await s.workers.wait_exit(worker, 6)
    output = worker.output()
    retries = output.count("reconnecting")
    print(f"exit code {code}, {retries} reconnects in {len(output)} bytes of log")
    assert retries < 20, f"the worker retried {retries} times in 6 s"
    assert code not in (None, 0)
    assert "ACCESS_REFUSED" in output
