"""The broker side of the manifests, applied to a real RabbitMQ node of this test's own.

The node runs with the cluster's additionalConfig and the compose file's
rabbitmq.conf; the vhost, users, permissions and policy are those of the prod
overlay, applied with rabbitmqctl as the Messaging Topology Operator would apply
them. Then: the workers' user declares the whole topology and sends through the
delay ladder, KEDA's user reads queue lengths the way the ScaledObjects do, the
policy lands on the queues it should, and the metrics the alerts use are exported.
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from leveret import AccessRefused, App, Settings
from leveret.amqp.topology import Names
from leveret.cli.common import load_app
from leveret.ops.discovery import LocalNode, free_port, port_open
from tests.deploy import contract
from tests.deploy.support import DEPLOY, Doc, config_map, of_kind, one, overlay
from tests.support.waiting import wait_for, wait_until

pytestmark = pytest.mark.slow

PASSWORDS = {"leveret-worker": "worker-pw-1", "leveret-keda": "keda-pw-2"}


def conf_lines(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs if not k.lstrip().startswith("#")}


@dataclass
class PluginNode(LocalNode):
    """A LocalNode with the management and Prometheus plugins, as the operator runs it."""

    management_port: int = 0
    prometheus_port: int = 0

    def _prepare(self) -> None:
        super()._prepare()
        plugins = "[rabbitmq_management,rabbitmq_prometheus,rabbitmq_shovel]."
        (self.base / "enabled_plugins").write_text(plugins + "\n")


def http(
    url: str,
    user: str | None = None,
    password: str = "",
    method: str = "GET",
    body: dict[str, Any] | None = None,
) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture(scope="module")
def prod() -> list[Doc]:
    return overlay("prod")


@pytest.fixture(scope="module")
def plugin_node(prod: list[Doc]) -> Iterator[PluginNode]:
    """A node of this module's own, with the plugins and the prod overlay's users."""
    cluster = one(prod, "RabbitmqCluster")["spec"]["rabbitmq"]["additionalConfig"]
    laptop = (DEPLOY / "compose" / "rabbitmq" / "rabbitmq.conf").read_text()
    management, prometheus = free_port(), free_port()
    config = {
        **conf_lines(laptop),
        **conf_lines(cluster),
        "management.tcp.port": str(management),
        "management.tcp.ip": "127.0.0.1",
        "prometheus.tcp.port": str(prometheus),
        "prometheus.tcp.ip": "127.0.0.1",
    }
    found = PluginNode(config=config, management_port=management, prometheus_port=prometheus)
    try:
        # LocalNode.start leaves its log file object to the garbage collector.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            found.start()
        wait_until(
            lambda: port_open("127.0.0.1", management) and port_open("127.0.0.1", prometheus),
            what="the management and Prometheus listeners",
        )
        apply_topology_resources(found, prod)
        yield found
    finally:
        found.kill(signal.SIGKILL)  # nothing to keep: no graceful shutdown needed
        found.destroy()


@pytest.fixture(scope="module")
def declared(plugin_node: PluginNode, prod: list[Doc]) -> None:
    """The workers' topology, declared by the worker user as a starting worker declares
    it, with its queues' statistics in: what KEDA, the policy and the alerts look at."""

    async def declare() -> App:
        app = worker_app(plugin_node, prod)
        try:
            await app.declare()
        finally:
            await app.close()
        return app

    app = asyncio.run(declare())
    names = Names(app.settings.namespace)
    vhost = config_map(prod, "leveret-worker-config")["AMQP_VHOST"]
    admin = conf_lines((DEPLOY / "compose" / "rabbitmq" / "rabbitmq.conf").read_text())
    api = f"http://127.0.0.1:{plugin_node.management_port}/api/queues/"

    def counted(queue: str) -> bool:
        path = urllib.parse.quote(vhost, safe="") + "/" + urllib.parse.quote(queue, safe="")
        status, text = http(api + path, admin["default_user"], admin["default_pass"])
        return status == 200 and "messages" in json.loads(text)

    wait_until(
        lambda: all(counted(names.work_queue(queue)) for queue in app.queues),
        what="the management API never counted the work queues' messages",
    )


def apply_topology_resources(node: PluginNode, docs: list[Doc]) -> None:
    """What the Messaging Topology Operator does with these resources: HTTP API calls."""
    admin = conf_lines((DEPLOY / "compose" / "rabbitmq" / "rabbitmq.conf").read_text())
    credentials = (admin["default_user"], admin["default_pass"])
    api = f"http://127.0.0.1:{node.management_port}/api"

    def put(path: str, body: dict[str, Any]) -> None:
        status, text = http(api + path, *credentials, method="PUT", body=body)
        assert status in (201, 204), f"PUT {path}: {status} {text}"

    def q(name: str) -> str:
        return urllib.parse.quote(name, safe="")

    vhost = one(docs, "Vhost")["spec"]["name"]
    put(f"/vhosts/{q(vhost)}", {})
    for user in of_kind(docs, "User"):
        name = user["metadata"]["name"]
        tags = ",".join(user["spec"].get("tags", []))
        put(f"/users/{q(name)}", {"password": PASSWORDS[name], "tags": tags})
    for permission in of_kind(docs, "Permission"):
        user = permission["spec"]["userReference"]["name"]
        put(f"/permissions/{q(vhost)}/{q(user)}", permission["spec"]["permissions"])
    for policy in of_kind(docs, "Policy"):
        spec = policy["spec"]
        body = {
            "pattern": spec["pattern"],
            "definition": spec["definition"],
            "priority": spec["priority"],
            "apply-to": spec["applyTo"],
        }
        put(f"/policies/{q(spec['vhost'])}/{q(spec['name'])}", body)


def worker_app(node: LocalNode, docs: list[Doc]) -> App:
    """An App configured as the worker ConfigMap configures it, as the worker user."""
    data = config_map(docs, "leveret-worker-config")
    url = f"amqp://leveret-worker:{PASSWORDS['leveret-worker']}@127.0.0.1:{node.port}/"
    fields = {f"LEVERET_{name.upper()}": name for name in Settings.model_fields}
    values: dict[str, Any] = {fields[k]: v for k, v in data.items() if k in fields}
    values["url"] = url + urllib.parse.quote(data["AMQP_VHOST"], safe="")
    app = App(Settings(**values))
    for task in load_app(data["LEVERET_APP"]).contracts.values():
        app.add(task)
    return app


def management_queue(node: PluginNode, vhost: str, queue: str) -> tuple[int, dict[str, Any]]:
    """GET /api/queues/<vhost>/<queue> as KEDA does (protocol http), as KEDA's user."""
    url = (
        f"http://127.0.0.1:{node.management_port}/api/queues/"
        f"{urllib.parse.quote(vhost, safe='')}/{urllib.parse.quote(queue, safe='')}"
    )
    status, body = http(url, "leveret-keda", PASSWORDS["leveret-keda"])
    return status, (json.loads(body) if status == 200 else {})


async def test_worker_user_declares_and_sends_through_the_delay_ladder(
    plugin_node: PluginNode, prod: list[Doc]
) -> None:
    app = worker_app(plugin_node, prod)
    try:
        await app.declare()
        for task in app.contracts.values():
            payload = _example(task.name)
            await app.send(task, task.model.model_validate(payload))
            await app.send(task, task.model.model_validate(payload), delay=0.05)
    finally:
        await app.close()
    names = Names(app.settings.namespace)
    vhost = config_map(prod, "leveret-worker-config")["AMQP_VHOST"]
    # Each task's queue, or its priority band where the queue has bands.
    for queue in {app.queue_spec(t.queue).band(t.priority) for t in app.contracts.values()}:

        def arrived(queue: str = queue) -> bool:
            info = management_queue(plugin_node, vhost, names.work_queue(queue))[1]
            return info.get("messages") == 2

        await wait_for(arrived, what=f"{queue}: the delayed copy must arrive too")
        _, info = management_queue(plugin_node, vhost, names.work_queue(queue))
        assert info["messages"] == 2, f"{queue}: the delayed copy must arrive too"
        assert info["arguments"]["x-queue-type"] == "quorum"


def keda_queues(node: PluginNode, vhost: str, pattern: str) -> list[dict[str, Any]]:
    """The queues a trigger with ``useRegex`` sums, asked for exactly as KEDA asks (it
    reads the ``items`` of the page, and only its first page: keep under 100 bands)."""
    url = (
        f"http://127.0.0.1:{node.management_port}/api/queues/"
        f"{urllib.parse.quote(vhost, safe='')}?page=1&use_regex=true&pagination=false"
        f"&name={urllib.parse.quote_plus(pattern)}&page_size=100"
    )
    status, body = http(url, "leveret-keda", PASSWORDS["leveret-keda"])
    assert status == 200, body
    page = json.loads(body)
    assert page["page_count"] == 1, page
    found: list[dict[str, Any]] = page["items"]
    return found


async def test_keda_user_reads_queue_lengths_but_cannot_publish(
    plugin_node: PluginNode, prod: list[Doc], declared: None
) -> None:
    vhost = one(prod, "Vhost")["spec"]["name"]
    app = worker_app(plugin_node, prod)
    names = Names(app.settings.namespace)
    for scaled in of_kind(prod, "ScaledObject"):
        for trigger in scaled["spec"]["triggers"]:
            assert trigger["metadata"]["useRegex"] == "true"
            found = keda_queues(plugin_node, vhost, trigger["metadata"]["queueName"])
            bands = {
                names.work_queue(band)
                for queue in app.queues.values()
                for band in queue.bands
                if names.work_queue(queue.name) in {q["name"] for q in found}
            }
            assert len(bands) > 1, "the kit's queues have priority bands"
            assert {q["name"] for q in found} == bands  # every band, and nothing else
            for info in found:
                assert {"messages", "messages_ready", "messages_unacknowledged"} <= set(info)
    url = f"http://127.0.0.1:{plugin_node.management_port}/api/vhosts"
    visible = json.loads(http(url, "leveret-keda", PASSWORDS["leveret-keda"])[1])
    assert [v["name"] for v in visible] == [vhost]
    app = App(
        url=f"amqp://leveret-keda:{PASSWORDS['leveret-keda']}@127.0.0.1:{plugin_node.port}/leveret"
    )
    try:
        with pytest.raises(AccessRefused, match="ACCESS_REFUSED"):
            await app.declare([])
    finally:
        await app.close()


def test_policy_lands_on_work_and_delay_queues_only(
    plugin_node: PluginNode, prod: list[Doc], declared: None
) -> None:
    policy = one(prod, "Policy")["spec"]
    names = Names(config_map(prod, "leveret-worker-config")["LEVERET_NAMESPACE"])
    for queue in ("emails", "images"):
        assert (
            management_queue(plugin_node, policy["vhost"], names.work_queue(queue))[1]["policy"]
            == (policy["name"])
        )
        dead = management_queue(plugin_node, policy["vhost"], names.dead_queue(queue))[1]
        assert not dead.get("policy")
    assert (
        management_queue(plugin_node, policy["vhost"], names.delay_level(0))[1]["policy"]
        == (policy["name"])
    )


def test_metrics_the_alerts_use_are_exported(
    plugin_node: PluginNode, prod: list[Doc], declared: None
) -> None:
    monitor = one(prod, "ServiceMonitor")["spec"]
    endpoint = next(e for e in monitor["endpoints"] if e["path"] == "/metrics/detailed")
    query = urllib.parse.urlencode(endpoint["params"], doseq=True)
    url = f"http://127.0.0.1:{plugin_node.prometheus_port}{endpoint['path']}?{query}"
    # Per-queue samples appear once the node has collected the queues' statistics.
    wait_until(lambda: 'queue="leveret.q.emails"' in http(url)[1], what="per-queue metrics")
    status, text = http(url)
    assert status == 200
    exported = {line.split("{")[0] for line in text.splitlines() if not line.startswith("#")}
    missing = contract.RABBITMQ_METRICS - exported
    assert not missing, missing
    assert 'queue="leveret.q.emails"' in text
    assert 'vhost="leveret"' in text


def test_consumer_timeout_is_what_the_workers_are_told(
    plugin_node: PluginNode, prod: list[Doc]
) -> None:
    effective = plugin_node.ctl("eval", "application:get_env(rabbit, consumer_timeout).").strip()
    seconds = float(config_map(prod, "leveret-worker-config")["LEVERET_CONSUMER_TIMEOUT"])
    assert effective == f"{{ok,{int(seconds * 1000)}}}"


def _example(task: str) -> dict[str, Any]:
    return {
        "emails.send_receipt": {
            "order_id": 1,
            "email": "a@example.com",
            "placed_at": "2024-05-01T12:00:00Z",
            "items": [{"sku": "S", "quantity": 1, "unit_price": "1.00"}],
        },
        "images.thumbnail": {"image_id": "i", "width": 10, "height": 10},
    }[task]
