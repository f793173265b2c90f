"""Fixtures of the fault suite: our own RabbitMQ nodes, scenarios, and the results table.

Nothing here touches the shared node on 5672: every broker a fault test stops, kills,
freezes or cuts off is started by the suite on free ports in a temporary directory.
"""

from __future__ import annotations

import shutil
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from leveret import Settings
from leveret.ops.discovery import LocalNode, free_port, port_open
from tests.apps.faults_app import QUEUE
from tests.faults.cluster import Cluster, ensure_nft, netns_available
from tests.faults.scenario import FULL, RESULTS, Scenario
from tests.faults.tls import Certs, make_certs
from tests.support.amqp import delete_namespace, fresh_namespace
from tests.support.processes import alive

#: Settings every scenario starts from: quick to notice a dead peer, bounded sends.
BASE_SETTINGS: dict[str, Any] = {
    "heartbeat": 5,
    "confirm_timeout": 5.0,
    "publish_deadline": 20.0,
    "connect_deadline": 30.0,
    "delay_levels": 12,
}


class SingleNode(LocalNode):
    """The suite's own node, with a TLS listener beside the plain one."""

    tls_port: int = 0
    certs: Certs | None = None

    def crash_and_restart(self) -> float:
        """SIGKILL the node, start it again on the same ports; seconds it was down."""
        pid = self.beam_pid()
        down = time.monotonic()
        self.kill(signal.SIGKILL)
        while (pid is not None and alive(pid)) or port_open("127.0.0.1", self.port, 0.2):
            time.sleep(0.05)
        self.start()
        return time.monotonic() - down

    def tls_url(self, host: str = "localhost", ca: Path | None = None) -> str:
        assert self.certs is not None
        cafile = ca or self.certs.ca
        return f"amqps://guest:guest@{host}:{self.tls_port}/?cafile={cafile}"


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make a CA for the TLS tests")
    return make_certs(tmp_path_factory.mktemp("tls"))


def need_rabbitmq_server() -> None:
    installed = shutil.which("rabbitmq-server") or Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
    if not Path(installed).exists():
        pytest.skip(
            "the fault suite starts RabbitMQ nodes of its own and needs rabbitmq-server "
            "installed here (apt-get install rabbitmq-server); it never touches a shared one"
        )


@pytest.fixture(scope="session")
def node(certs: Certs) -> Iterator[SingleNode]:
    """One RabbitMQ node of our own for the single-node scenarios (restartable)."""
    need_rabbitmq_server()
    tls_port = free_port()
    config = {
        "listeners.ssl.1": f"127.0.0.1:{tls_port}",
        "ssl_options.cacertfile": str(certs.ca),
        "ssl_options.certfile": str(certs.cert),
        "ssl_options.keyfile": str(certs.key),
        "ssl_options.verify": "verify_none",
        "ssl_options.fail_if_no_peer_cert": "false",
        "vm_memory_high_watermark.absolute": "1GB",
    }
    single = SingleNode(name=f"faults{uuid.uuid4().hex[:6]}", config=config)
    single.tls_port = tls_port
    single.certs = certs
    single.start()
    yield single
    single.destroy()


@pytest.fixture(scope="session")
def cluster_session() -> Iterator[Cluster]:
    """Three nodes of our own, started once per session (in network namespaces if we can)."""
    need_rabbitmq_server()
    why_not = netns_available()
    layout = "netns" if why_not is None else "loopback"
    if why_not is not None:
        print(f"cluster without network namespaces ({why_not}): no partition scenarios")
    three = Cluster(layout=layout)
    try:
        three.start()
    except Exception:
        three.destroy()
        raise
    three.no_partitions = why_not or ensure_nft()
    yield three
    three.destroy()


@pytest.fixture
def cluster(cluster_session: Cluster) -> Iterator[Cluster]:
    """The session's cluster, whole again before and after each test that hurt it."""
    restore(cluster_session)
    yield cluster_session
    restore(cluster_session)


def restore(cluster: Cluster) -> None:
    cluster.heal()
    for node in cluster.nodes:
        if node.frozen:
            cluster.thaw(node.index)
        if not cluster.running(node.index):
            cluster.restart(node.index)
        for proxy in (node.proxy, node.admin):
            if proxy is not None:
                proxy.clear()
    cluster.wait_healthy()


@pytest.fixture
async def make_scenario(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[..., Scenario]]:
    """Build scenarios on a node (or cluster); each gets its own namespace and ledger."""
    made: list[Scenario] = []

    def make(
        url: str,
        *,
        admin_url: str | None = None,
        app_options: dict[str, Any] | None = None,
        worker_env: dict[str, str] | None = None,
        concurrency: int = 8,
        shutdown_timeout: float = 10.0,
        name: str | None = None,
        **settings: Any,
    ) -> Scenario:
        namespace = settings.pop("namespace", None) or fresh_namespace("f")
        options = {**BASE_SETTINGS, **settings, "url": url, "namespace": namespace}
        directory = tmp_path / namespace
        directory.mkdir()
        scenario = Scenario(
            name=name or request.node.name.removeprefix("test_"),
            settings=Settings(**options),
            admin_url=admin_url or url,
            tmp=directory,
            app_options=app_options or {},
            worker_env=worker_env or {},
            concurrency=concurrency,
            shutdown_timeout=shutdown_timeout,
        )
        made.append(scenario)
        return scenario

    yield make
    for scenario in made:
        await scenario.close()
        await delete_namespace(scenario.admin_url, scenario.settings, [QUEUE], best_effort=True)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The table the README quotes: one row per scenario run in this session."""
    if not RESULTS:
        return
    header = (
        "scenario",
        "confirmed",
        "completed",
        "dead-lettered",
        "lost",
        "duplicates",
        "longest stall s",
    )
    rows = [header, *(tuple(str(c) for c in v.row()) for v in RESULTS)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    size = "full size" if FULL else "fast size (LEVERET_FAULTS_FULL=1 for full)"
    terminalreporter.write_sep("=", f"fault scenarios, {size}")
    for line in lines:
        terminalreporter.write_line(line)
    out = Path(terminalreporter.config.rootpath) / ".pytest_cache" / "faults-table.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
