"""A real worker, configured as the ConfigMap configures it, serves what the probes use.

Runs once the worker has its health server (broker/health.py and --health-port);
until then the manifests are held to the documented paths by test_workers.py.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import urllib.error
import urllib.request

import pytest

from leveret import Settings
from leveret.ops.discovery import free_port
from tests.deploy import contract
from tests.deploy.support import K8S, config_map, render
from tests.support import ROOT
from tests.support.amqp import delete_namespace
from tests.support.waiting import wait_for
from tests.support.workers import Spawn


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


def exported_families(text: str) -> dict[str, str]:
    """`# TYPE name type` lines of a Prometheus exposition, counters without _total."""
    families = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            if kind == "counter":
                name = name.removesuffix("_total")
            families[name] = kind
    return families


def has_health_server() -> bool:
    return (
        contract.optional_module("leveret.ops.health") is not None
        and "health_port" in contract.worker_flags()
    )


async def test_worker_serves_probes_and_metrics_and_drains_on_sigterm(
    request: pytest.FixtureRequest,
) -> None:
    if not has_health_server():
        # Not on this branch yet: the manifests are held to the documented paths.
        assert contract.health_paths() == contract.HEALTH_PATHS
        return
    amqp_url: str = request.getfixturevalue("amqp_url")
    namespace: str = request.getfixturevalue("namespace")
    spawn: Spawn = request.getfixturevalue("spawn_worker")

    env = dict(config_map(render(K8S / "base"), "leveret-worker-config").items())
    port = free_port()
    env.update(
        LEVERET_HEALTH_PORT=str(port),
        # One node here: classic queues, as deploy/compose.yaml runs them.
        LEVERET_QUEUE_TYPE="classic",
        LEVERET_DELAY_QUEUE_TYPE="classic",
    )
    env.pop("LEVERET_NAMESPACE")  # the test's own, from spawn_worker
    base = f"http://127.0.0.1:{port}"
    worker = spawn(env["LEVERET_APP"], env=env)
    try:
        await wait_for(
            lambda: get(base + contract.READINESS_PATH)[0] == 200 or worker.poll() is not None,
            every=0.1,
        )
        assert worker.poll() is None, "the worker exited while starting"
        assert get(base + contract.READINESS_PATH)[0] == 200
        assert get(base + contract.LIVENESS_PATH)[0] == 200
        status, text = get(base + contract.METRICS_PATH)
        assert status == 200
        families = exported_families(text)
        for metric in contract.worker_metrics().values():
            assert families.get(metric.name) == metric.type, metric.name

        if "check" in contract.subcommands(contract.cli_parser()):
            check = [sys.executable, "-m", "leveret", "check"]
            probe_env = {"LEVERET_HEALTH_PORT": str(port), "PYTHONPATH": str(ROOT)}
            probe = await asyncio.create_subprocess_exec(*check, env=probe_env)
            assert await asyncio.wait_for(probe.wait(), timeout=30) == 0

        worker.send_signal(signal.SIGTERM)
        shutdown = float(env["LEVERET_SHUTDOWN_TIMEOUT"])
        assert worker.wait(timeout=shutdown + 10) == 0, "SIGTERM must end in exit 0"
    finally:
        settings = Settings(url=amqp_url, namespace=namespace)
        await delete_namespace(amqp_url, settings, ["emails", "images"])
