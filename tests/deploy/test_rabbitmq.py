"""The RabbitMQ cluster, vhost, users and policy fit the topology the code declares."""

from __future__ import annotations

import re
from dataclasses import replace

from leveret import Settings
from leveret.amqp.topology import Names, work_queue_arguments
from leveret.cli.common import load_app
from tests.deploy.support import (
    Doc,
    config_map,
    environment,
    of_kind,
    one,
    overlay,
    permission_of,
    workers,
)


def settings_of(docs: list[Doc]) -> tuple[Settings, list[str]]:
    """The namespace and delay levels the workers run with, and the app's queues."""
    deployment = workers(docs)[0]
    env = environment(docs, deployment["spec"]["template"]["spec"])
    app = load_app(str(env["LEVERET_APP"]))
    settings = Settings(
        namespace=str(env["LEVERET_NAMESPACE"]),
        delay_levels=int(env.get("LEVERET_DELAY_LEVELS") or Settings().delay_levels),
    )
    return settings, sorted(app.queues)


def declared_names(settings: Settings, queues: list[str]) -> dict[str, list[str]]:
    """Every exchange and queue the topology declares, by role (broker/topology.py)."""
    n = Names(settings.namespace)
    levels = [n.delay_level(k) for k in range(settings.delay_levels)]
    return {
        "work": [n.work_queue(q) for q in queues],
        "dead": [n.dead_queue(q) for q in queues],
        "delay": levels,
        "exchanges": [n.tasks_exchange, n.delivery_exchange, n.dead_exchange, n.unroutable],
        "unroutable": [n.unroutable],
    }


def test_production_cluster_is_replicated_and_persistent() -> None:
    cluster = one(overlay("prod"), "RabbitmqCluster")["spec"]
    assert cluster["replicas"] == 3
    assert cluster["persistence"]["storage"]
    assert cluster["resources"]["requests"]["memory"] == cluster["resources"]["limits"]["memory"]
    assert cluster["image"].split(":")[1][0].isdigit(), "pin a RabbitMQ version"


def test_production_queues_are_quorum_queues() -> None:
    """In a cluster every hop must be a quorum queue: dead-lettering is at-least-once."""
    data = config_map(overlay("prod"), "leveret-worker-config")
    assert data["LEVERET_QUEUE_TYPE"] == "quorum"
    assert data["LEVERET_DELAY_QUEUE_TYPE"] == "quorum"


def test_everything_refers_to_the_one_cluster_and_vhost() -> None:
    for name in ("dev", "prod"):
        docs = overlay(name)
        cluster = one(docs, "RabbitmqCluster")["metadata"]["name"]
        vhost = one(docs, "Vhost")["spec"]["name"]
        assert config_map(docs, "leveret-worker-config")["AMQP_VHOST"] == vhost
        for kind in ("Vhost", "User", "Permission", "Policy"):
            for doc in of_kind(docs, kind):
                assert doc["spec"]["rabbitmqClusterReference"]["name"] == cluster
                if kind in ("Permission", "Policy"):
                    assert doc["spec"]["vhost"] == vhost
        users = {u["metadata"]["name"] for u in of_kind(docs, "User")}
        for permission in of_kind(docs, "Permission"):
            assert permission["spec"]["userReference"]["name"] in users


def test_worker_permissions_cover_every_name_the_topology_declares() -> None:
    docs = overlay("prod")
    settings, queues = settings_of(docs)
    names = [x for group in declared_names(settings, queues).values() for x in group]
    worker = permission_of(docs, "leveret-worker")
    for access, pattern in worker["spec"]["permissions"].items():
        missing = [x for x in names if not re.search(pattern, x)]
        assert not missing, f"{access} permission {pattern!r} misses {missing[:3]}"
        other = Names(settings.namespace + "-other")
        assert not re.search(pattern, other.work_queue("emails")), "reaches beyond the namespace"


def test_policy_covers_work_and_delay_queues_but_not_dead_letters() -> None:
    docs = overlay("prod")
    settings, queues = settings_of(docs)
    names = declared_names(settings, queues)
    policy = one(docs, "Policy")["spec"]
    assert policy["applyTo"] == "queues"
    pattern = policy["pattern"]
    for name in names["work"] + names["delay"]:
        assert re.search(pattern, name), f"policy {pattern!r} misses {name}"
    for name in names["dead"] + names["unroutable"]:
        assert not re.search(pattern, name), f"policy {pattern!r} must not apply to {name}"
    assert policy["definition"] == {
        "dead-letter-strategy": "at-least-once",
        "overflow": "reject-publish",
        "delivery-limit": 10,
    }


def test_queue_arguments_match_the_policy() -> None:
    """What the code declares for the app's queues, as quorum queues, the policy enforces."""
    docs = overlay("prod")
    policy = one(docs, "Policy")["spec"]["definition"]
    env = environment(docs, workers(docs)[0]["spec"]["template"]["spec"])
    app = load_app(str(env["LEVERET_APP"]))
    names = Names(str(env["LEVERET_NAMESPACE"]))
    for spec in app.queues.values():
        args = work_queue_arguments(replace(spec, type="quorum"), names)
        assert args["x-dead-letter-strategy"] == policy["dead-letter-strategy"]
        assert args["x-overflow"] == policy["overflow"]
        assert args["x-delivery-limit"] == policy["delivery-limit"], spec.name
