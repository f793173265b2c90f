"""Every overlay renders, and every object in it is valid for the API that will get it."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.deploy.support import (
    K8S,
    KUBERNETES_VERSIONS,
    OVERLAYS,
    Doc,
    load_all_yaml,
    of_kind,
    one,
    overlay,
    render,
    validate,
    validate_core,
    validate_custom,
    workers,
)

# What each overlay must contain beside the workers.
EXPECTED_KINDS = {
    "dev": {"Namespace", "RabbitmqCluster", "Vhost", "User", "Permission", "Policy", "Secret"},
    "prod": {
        "Namespace",
        "RabbitmqCluster",
        "ScaledObject",
        "TriggerAuthentication",
        "PodMonitor",
        "ServiceMonitor",
        "PrometheusRule",
    },
    "prod-hpa": {"Namespace", "RabbitmqCluster", "HorizontalPodAutoscaler", "PodMonitor"},
}


@pytest.mark.parametrize("name", OVERLAYS)
def test_overlay_renders_with_every_object_valid(name: str) -> None:
    docs = overlay(name)
    kinds = {d["kind"] for d in docs}
    assert EXPECTED_KINDS[name] <= kinds, f"{name} lacks {EXPECTED_KINDS[name] - kinds}"
    for doc in docs:
        validate(doc)


@pytest.mark.parametrize("name", OVERLAYS)
def test_overlay_puts_everything_in_its_namespace_once(name: str) -> None:
    docs = overlay(name)
    namespace = one(docs, "Namespace")["metadata"]["name"]
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == namespace, doc["metadata"]
    names = Counter((d["kind"], d["metadata"]["name"]) for d in docs)
    assert not [n for n, count in names.items() if count > 1]


def test_every_overlay_runs_the_same_worker_groups() -> None:
    groups = {
        name: sorted(d["metadata"]["name"] for d in workers(overlay(name))) for name in OVERLAYS
    }
    assert len(set(map(tuple, groups.values()))) == 1, groups
    assert len(groups["prod"]) >= 2


def test_base_renders_on_its_own() -> None:
    docs = render(K8S / "base")
    assert {d["kind"] for d in docs} == {
        "ServiceAccount",
        "ConfigMap",
        "Deployment",
        "PodDisruptionBudget",
    }


def test_one_off_job_is_valid() -> None:
    for doc in load_all_yaml(K8S / "jobs" / "dlq.yaml"):
        for version in KUBERNETES_VERSIONS:
            validate_core(doc, version)


def test_schema_check_catches_a_misspelt_field() -> None:
    """The CRD check refuses unknown fields: a typo is not silently pruned."""
    scaled = of_kind(overlay("prod"), "ScaledObject")[0]
    scaled["spec"]["cooldownPeriods"] = scaled["spec"].pop("cooldownPeriod")
    with pytest.raises(AssertionError, match="cooldownPeriods"):
        validate_custom(scaled)
    deployment: Doc = workers(overlay("prod"))[0]
    deployment["spec"]["template"]["spec"]["terminationGracePeriod"] = 60
    with pytest.raises(AssertionError, match="terminationGracePeriod"):
        validate_core(deployment, KUBERNETES_VERSIONS[0])
