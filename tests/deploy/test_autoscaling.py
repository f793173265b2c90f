"""Autoscalers scale the worker groups on the queues those groups really consume."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from leveret.amqp.topology import Names, QueueSpec
from leveret.cli.common import load_app
from leveret.priorities import default_bands
from leveret.settings import Settings
from tests.deploy.support import (
    Doc,
    environment,
    of_kind,
    one,
    overlay,
    permission_of,
    workers,
)


def group_env(docs: list[Doc], deployment: Doc) -> dict[str, str | None]:
    return environment(docs, deployment["spec"]["template"]["spec"])


def test_every_worker_group_has_one_scaled_object_on_its_queue() -> None:
    docs = overlay("prod")
    scaled = {s["spec"]["scaleTargetRef"]["name"]: s for s in of_kind(docs, "ScaledObject")}
    assert sorted(scaled) == sorted(d["metadata"]["name"] for d in workers(docs))
    for deployment in workers(docs):
        env = group_env(docs, deployment)
        app = load_app(str(env["LEVERET_APP"]))
        names = Names(str(env["LEVERET_NAMESPACE"]))
        queues = str(env["LEVERET_QUEUES"]).split(",")
        triggers = scaled[deployment["metadata"]["name"]]["spec"]["triggers"]
        assert len(triggers) == len(queues), "one trigger per queue of the group"
        settings = Settings.model_validate(
            {k: env[f"LEVERET_{k.upper()}"] for k in ("queue_type", "priority_bands")}
        )
        for trigger, queue in zip(triggers, queues, strict=True):
            assert queue in app.queues, f"{queue} is not a queue of {env['LEVERET_APP']}"
            assert trigger["type"] == "rabbitmq"
            # Every priority band of the queue, summed (the management API matches the
            # pattern anywhere in a name, as re.search does), and no other queue.
            metadata = trigger["metadata"]
            assert (metadata["useRegex"], metadata.get("operation", "sum")) == ("true", "sum")
            kind = settings.queue_type
            bands = QueueSpec(queue, type=kind, priority_bands=default_bands(settings, kind)).bands
            assert len(bands) > 1
            others = [names.dead_queue(queue), names.work_queue(f"{queue}x")]
            others += [names.work_queue(q) for q in app.queues if q != queue]
            for name in [names.work_queue(b) for b in bands]:
                assert re.search(metadata["queueName"], name), name
            for name in others:
                assert not re.search(metadata["queueName"], name), name


def test_scaling_targets_and_bounds() -> None:
    docs = overlay("prod")
    deployments = {d["metadata"]["name"]: d for d in workers(docs)}
    for scaled in of_kind(docs, "ScaledObject"):
        spec = scaled["spec"]
        deployment = deployments[spec["scaleTargetRef"]["name"]]
        concurrency = int(str(group_env(docs, deployment)["LEVERET_CONCURRENCY"]))
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        assert spec["cooldownPeriod"] > 0
        down = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
        assert down["stabilizationWindowSeconds"] >= 60
        for trigger in spec["triggers"]:
            metadata = trigger["metadata"]
            # Queue length per replica, counting the tasks in progress (http: ready +
            # unacked): a replica is asked to keep at least its prefetch busy.
            assert metadata["mode"] == "QueueLength"
            assert metadata["protocol"] == "http"
            assert metadata.get("excludeUnacknowledged", "false") == "false"
            assert int(metadata["value"]) >= concurrency


def test_keda_reads_the_management_api_of_our_cluster_with_its_own_user() -> None:
    docs = overlay("prod")
    namespace = one(docs, "Namespace")["metadata"]["name"]
    cluster = one(docs, "RabbitmqCluster")["metadata"]["name"]
    vhost = one(docs, "Vhost")["spec"]["name"]
    keda_user = one(docs, "User", "leveret-keda")
    secret = keda_user["spec"]["importCredentialsSecret"]["name"]
    assert {"management", "monitoring"} & set(keda_user["spec"]["tags"])
    permission = permission_of(docs, "leveret-keda")
    assert permission["spec"]["vhost"] == vhost
    for scaled in of_kind(docs, "ScaledObject"):
        for trigger in scaled["spec"]["triggers"]:
            host = urlsplit(trigger["metadata"]["host"])
            assert host.scheme == "http"
            assert host.port == 15672
            assert host.hostname == f"{cluster}.{namespace}.svc"
            assert host.path == f"/{vhost}"
            assert host.username is None, "credentials come from the TriggerAuthentication"
            auth = one(docs, "TriggerAuthentication", trigger["authenticationRef"]["name"])
            refs = {r["parameter"]: (r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
            assert refs == {"username": (secret, "username"), "password": (secret, "password")}


def test_hpa_alternative_covers_every_group() -> None:
    docs = overlay("prod-hpa")
    assert not of_kind(docs, "ScaledObject")
    assert not of_kind(docs, "TriggerAuthentication")
    targets = sorted(
        h["spec"]["scaleTargetRef"]["name"] for h in of_kind(docs, "HorizontalPodAutoscaler")
    )
    assert targets == sorted(d["metadata"]["name"] for d in workers(docs))
    for hpa in of_kind(docs, "HorizontalPodAutoscaler"):
        spec = hpa["spec"]
        assert 1 <= spec["minReplicas"] <= spec["maxReplicas"]
        assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 60


def test_autoscaled_deployments_leave_the_replica_count_to_the_autoscaler() -> None:
    for name in ("prod", "prod-hpa"):
        for deployment in workers(overlay(name)):
            assert "replicas" not in deployment["spec"], f"{name}: {deployment['metadata']}"
    dev = overlay("dev")
    assert not of_kind(dev, "ScaledObject")
    assert not of_kind(dev, "HorizontalPodAutoscaler")
    assert all(d["spec"]["replicas"] >= 1 for d in workers(dev))
