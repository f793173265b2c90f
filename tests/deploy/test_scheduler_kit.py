"""The scheduler in the Kubernetes kit: two replicas, a PDB, a command that runs."""

from __future__ import annotations

import pytest

from leveret.cli.scheduler import load_schedules
from tests.deploy import contract
from tests.deploy.support import (
    OVERLAYS,
    Doc,
    budgets_of,
    container,
    environment,
    matches,
    of_kind,
    one,
    overlay,
)


def schedulers(docs: list[Doc]) -> list[Doc]:
    return [
        d
        for d in of_kind(docs, "Deployment")
        if d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component")
        == "scheduler"
    ]


@pytest.mark.parametrize("name", OVERLAYS)
def test_two_scheduler_replicas_with_a_disruption_budget(name: str) -> None:
    docs = overlay(name)
    (deployment,) = schedulers(docs)
    assert deployment["spec"]["replicas"] == 2
    budgets = budgets_of(docs, deployment)
    assert len(budgets) == 1
    assert budgets[0]["spec"]["minAvailable"] == 1
    assert not of_kind(docs, "ScaledObject") or all(
        o["spec"]["scaleTargetRef"]["name"] != deployment["metadata"]["name"]
        for o in of_kind(docs, "ScaledObject")
    ), "a scheduler is not scaled on a queue"


@pytest.mark.parametrize("name", OVERLAYS)
def test_scheduler_command_parses_and_its_schedules_load(name: str) -> None:
    docs = overlay(name)
    (deployment,) = schedulers(docs)
    spec = container(deployment, "scheduler")
    args = contract.parse_command(spec["args"])
    assert args is not None
    schedules = load_schedules(args.app)
    assert len(schedules) >= 1
    env = environment(docs, deployment["spec"]["template"]["spec"], "scheduler")
    assert env["LEVERET_HEARTBEAT"] == "5", "a frozen leader must lose its lease quickly"
    assert env["LEVERET_SCHEDULER_QUEUE_TYPE"] == "quorum"
    probes = {spec[p]["httpGet"]["path"] for p in ("livenessProbe", "readinessProbe")}
    assert probes == {"/livez", "/readyz"}


def test_the_pod_monitor_scrapes_the_schedulers() -> None:
    docs = overlay("prod")
    monitor = one(docs, "PodMonitor")["spec"]
    (deployment,) = schedulers(docs)
    assert matches(
        monitor["selector"]["matchLabels"], deployment["spec"]["template"]["metadata"]["labels"]
    )
    ports = {p["name"] for p in container(deployment, "scheduler")["ports"]}
    assert {e["port"] for e in monitor["podMetricsEndpoints"]} <= ports
