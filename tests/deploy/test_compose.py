"""deploy/compose.yaml, read as Docker Compose would, against the code it runs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import signal
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aio_pika

from leveret import Settings
from leveret.amqp.topology import Names
from leveret.cli.common import load_app
from tests.deploy import contract
from tests.deploy.support import DEPLOY, load_yaml
from tests.support import ROOT
from tests.support.amqp import delete_namespace

COMPOSE = DEPLOY / "compose.yaml"
LEVERET_SERVICES = ("worker-1", "worker-2", "producer")


def compose() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(COMPOSE)
    return data


def services() -> dict[str, Any]:
    found: dict[str, Any] = compose()["services"]
    return found


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"([\d.]+)(ms|s|m|h)", duration))


def rabbitmq_conf() -> dict[str, str]:
    text = (DEPLOY / "compose" / "rabbitmq" / "rabbitmq.conf").read_text()
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs if not k.lstrip().startswith("#")}


def unescape(text: str) -> str:
    """Compose's own interpolation: $$ is a literal $, a lone $ would be substituted."""
    bare = text.replace("$$", "")
    assert "$" not in bare, f"unescaped $ in {text!r}: compose would substitute it"
    return text.replace("$$", "$")


def test_services_rabbitmq_two_workers_and_a_producer() -> None:
    assert {"rabbitmq", *LEVERET_SERVICES} <= set(services())
    rabbitmq = services()["rabbitmq"]
    assert "management" in rabbitmq["image"]
    plugins = (DEPLOY / "compose" / "rabbitmq" / "enabled_plugins").read_text()
    assert "rabbitmq_management" in plugins
    assert "rabbitmq_prometheus" in plugins
    assert any(str(p).endswith(":15672") for p in rabbitmq["ports"])


def test_health_checks_gate_the_start_order() -> None:
    svc = services()
    assert svc["rabbitmq"]["healthcheck"]["test"][0] == "CMD"
    for name in ("worker-1", "worker-2"):
        test = svc[name]["healthcheck"]["test"]
        assert test[0] == "CMD"
        contract.parse_command(test[2:])
        assert test[1] == "leveret"
        assert svc[name]["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
    producer_needs = svc["producer"]["depends_on"]
    assert any(
        dep.startswith("worker") and how["condition"] == "service_healthy"
        for dep, how in producer_needs.items()
    ), "the producer starts once a worker has declared the queues"


def test_workers_run_the_image_as_kubernetes_does() -> None:
    for name in ("worker-1", "worker-2"):
        worker = services()[name]
        assert (ROOT / worker["build"]["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
        assert (COMPOSE.parent / worker["build"]["context"]).resolve() == ROOT
        args = contract.parse_command(worker["command"])
        assert args is not None
        app = load_app(args.app)
        assert set(args.queues.split(",")) == {r.task.queue for r in app.registry.values()}
        assert seconds(worker["stop_grace_period"]) > args.shutdown_timeout
        assert worker["read_only"] is True
        assert worker["cap_drop"] == ["ALL"]


def test_worker_url_and_consumer_timeout_match_the_broker() -> None:
    conf = rabbitmq_conf()
    for name in LEVERET_SERVICES:
        env = services()[name]["environment"]
        url = urlsplit(env["LEVERET_URL"])
        assert url.hostname == "rabbitmq"
        assert (url.username, url.password) == (conf["default_user"], conf["default_pass"])
        assert url.path == "/" + conf["default_vhost"]
        assert float(env["LEVERET_CONSUMER_TIMEOUT"]) * 1000 == int(conf["consumer_timeout"])


def test_producer_sends_payloads_the_task_contracts_accept() -> None:
    script = unescape(services()["producer"]["command"][0])
    shell = {r"\$\(\(.*?\)\)": "7", r"\$\(date[^)]*\)": "2024-05-01T12:00:00Z", r"\$n\b": "7"}
    sent = []
    for line in script.splitlines():
        if line.strip().startswith("leveret "):
            for pattern, value in shell.items():
                line = re.sub(pattern, value, line)
            args = contract.parse_command(shlex.split(line)[1:])
            assert args is not None
            contract_ = load_app(args.app).contracts[args.task]
            contract_.model.model_validate_json(args.payload)
            sent.append(args.task)
    assert len(set(sent)) >= 2, "the demo producer sends both kinds of task"


def test_mounted_files_exist() -> None:
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), f"{name}: {source}"


def test_prometheus_scrapes_every_worker_health_port() -> None:
    config = load_yaml(DEPLOY / "compose" / "prometheus" / "prometheus.yml")
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "leveret-workers")
    targets = {t for group in job["static_configs"] for t in group["targets"]}
    expected = set()
    for name in ("worker-1", "worker-2"):
        command = services()[name]["command"]
        expected.add(f"{name}:{command[command.index('--health-port') + 1]}")
    assert targets == expected
    assert job.get("metrics_path", contract.METRICS_PATH) == contract.METRICS_PATH
    rule_files = {Path(p).name for p in config["rule_files"]}
    mounted = {Path(v.split(":")[1]).name for v in services()["prometheus"]["volumes"]}
    assert rule_files <= mounted


async def test_producer_script_sends_both_tasks_through_a_real_broker(
    amqp_url: str, namespace: str
) -> None:
    """The producer's shell loop, run by /bin/sh against RabbitMQ for a few rounds."""
    producer = services()["producer"]
    script = unescape(producer["command"][0])
    bin_dir = Path(sys.executable).parent
    env = {
        **{k: unescape(str(v)) for k, v in producer["environment"].items()},
        "LEVERET_URL": amqp_url,
        "LEVERET_NAMESPACE": namespace,
        "PRODUCER_INTERVAL": "0",
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
    }
    app = load_app("tasks.handlers:app")
    settings = Settings(url=amqp_url, namespace=namespace)
    declare = await asyncio.create_subprocess_exec(
        "leveret", "declare", "tasks.handlers:app", env=env, cwd=ROOT
    )
    assert await asyncio.wait_for(declare.wait(), timeout=60) == 0
    loop = await asyncio.create_subprocess_exec(
        *producer["entrypoint"], script, env=env, cwd=ROOT, start_new_session=True
    )
    names = Names(namespace)
    try:
        counts: dict[str, int] = {}
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            for _ in range(300):
                for queue in app.queues:
                    declared = await channel.declare_queue(names.work_queue(queue), passive=True)
                    counts[queue] = declared.declaration_result.message_count or 0
                if all(counts.values()) or loop.returncode is not None:
                    break
                await asyncio.sleep(0.1)
        assert loop.returncode is None, "the producer loop ended by itself"
        assert all(counts.values()), f"messages per queue: {counts}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(loop.pid, signal.SIGTERM)
        await loop.wait()
        await delete_namespace(amqp_url, settings, sorted(app.queues))
