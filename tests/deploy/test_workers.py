"""The worker Deployments agree with the worker's code: flags, probes, queues, shutdown."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from leveret import Settings
from leveret.cli.common import load_app
from tests.deploy import contract
from tests.deploy.support import (
    OVERLAYS,
    Doc,
    container,
    environment,
    matches,
    of_kind,
    one,
    overlay,
    secret_refs,
    workers,
)

# Seconds the kubelet must leave after the worker's own drain: closing connections,
# flushing acks and logs. Shorter than this and the drain's tail is SIGKILLed.
GRACE_MARGIN = 10


def pod(deployment: Doc) -> Doc:
    spec: Doc = deployment["spec"]["template"]["spec"]
    return spec


def settings_from(env: dict[str, str | None]) -> Settings:
    """The Settings a worker with this environment gets (secrets stand in as 'x')."""
    fields = {f"LEVERET_{name.upper()}": name for name in Settings.model_fields}
    values = {fields[k]: (v if v is not None else "x") for k, v in env.items() if k in fields}
    return Settings(**values)


@pytest.fixture(params=OVERLAYS)
def docs(request: pytest.FixtureRequest) -> list[Doc]:
    return overlay(request.param)


def test_every_leveret_variable_is_a_flag_or_setting(docs: list[Doc]) -> None:
    known = contract.known_worker_flags() | set(Settings.model_fields) | {"app"}
    for deployment in workers(docs):
        env = environment(docs, pod(deployment))
        for key in env:
            if key.startswith("LEVERET_"):
                assert key[len("LEVERET_") :].lower() in known, (
                    f"{deployment['metadata']['name']}: {key} is no `leveret worker` flag "
                    "and no setting (broker/settings.py)"
                )


def test_settings_from_the_manifests_are_valid(docs: list[Doc]) -> None:
    for deployment in workers(docs):
        settings = settings_from(environment(docs, pod(deployment)))
        assert settings.url.startswith("amqp://")
        assert settings.task_timeout < settings.consumer_timeout


def test_url_points_at_the_cluster_and_vhost(docs: list[Doc]) -> None:
    cluster = one(docs, "RabbitmqCluster")["metadata"]["name"]
    vhost = one(docs, "Vhost")["spec"]["name"]
    for deployment in workers(docs):
        url = urlsplit(str(environment(docs, pod(deployment))["LEVERET_URL"]))
        assert url.scheme == "amqp"
        assert url.hostname == cluster, "the operator names the client Service after the cluster"
        assert url.port == 5672
        assert url.path == f"/{vhost}"
        assert url.username == "$(AMQP_USERNAME)"
        assert url.password == "$(AMQP_PASSWORD)"


def test_secrets_referenced_are_the_ones_rabbitmq_users_import(docs: list[Doc]) -> None:
    imported = {u["spec"]["importCredentialsSecret"]["name"] for u in of_kind(docs, "User")}
    for deployment in workers(docs):
        required = {(n, k) for n, k, optional in secret_refs(pod(deployment)) if not optional}
        assert required == {
            ("leveret-worker-credentials", "username"),
            ("leveret-worker-credentials", "password"),
        }
        assert {name for name, _ in required} <= imported
    generated = {s["metadata"]["name"]: s for s in of_kind(docs, "Secret")}
    generated.pop("leveret-dashboard-credentials", None)  # a token, not a RabbitMQ user
    for name, secret in generated.items():  # dev generates its own
        assert set(secret["data"]) == {"username", "password"}, name
        assert name in imported


def test_grace_period_outlasts_the_shutdown_timeout(docs: list[Doc]) -> None:
    for deployment in workers(docs):
        env = environment(docs, pod(deployment))
        shutdown = float(str(env["LEVERET_SHUTDOWN_TIMEOUT"]))
        grace = pod(deployment)["terminationGracePeriodSeconds"]
        assert grace >= shutdown + GRACE_MARGIN, (
            f"{deployment['metadata']['name']}: terminationGracePeriodSeconds {grace} must "
            f"exceed LEVERET_SHUTDOWN_TIMEOUT {shutdown} by {GRACE_MARGIN} s"
        )
    assert "shutdown_timeout" in contract.worker_flags()


def test_probes_use_the_health_endpoint(docs: list[Doc]) -> None:
    paths = contract.health_paths()
    assert set(contract.HEALTH_PATHS) <= set(paths), "broker/health.py lacks a probe path"
    for deployment in workers(docs):
        spec = container(deployment)
        env = environment(docs, pod(deployment))
        port = next(p for p in spec["ports"] if p["name"] == "health")
        assert str(port["containerPort"]) == env["LEVERET_HEALTH_PORT"]
        assert port["containerPort"] == contract.HEALTH_PORT
        probes = {
            k: spec[k]["httpGet"] for k in ("startupProbe", "livenessProbe", "readinessProbe")
        }
        assert probes["livenessProbe"]["path"] == contract.LIVENESS_PATH
        assert probes["startupProbe"]["path"] == contract.LIVENESS_PATH
        assert probes["readinessProbe"]["path"] == contract.READINESS_PATH
        assert {p["port"] for p in probes.values()} == {"health"}


def test_worker_command_and_queues_come_from_the_app(docs: list[Doc]) -> None:
    consumed: dict[str, str] = {}
    for deployment in workers(docs):
        name = deployment["metadata"]["name"]
        spec = container(deployment)
        assert "command" not in spec, "the image's entrypoint is the `leveret` console script"
        args = contract.parse_command(spec["args"])
        assert args is not None
        app = load_app(args.app)
        served = {r.task.queue for r in app.registry.values()}
        queues = str(environment(docs, pod(deployment))["LEVERET_QUEUES"]).split(",")
        for queue in queues:
            assert queue in served, f"{name} consumes {queue!r}, which has no handler"
            assert queue not in consumed, f"{queue} is consumed by {consumed.get(queue)} too"
            consumed[queue] = name
    assert set(consumed) == served, f"queues nobody consumes: {served - set(consumed)}"


def test_task_timeouts_fit_under_the_brokers_consumer_timeout(docs: list[Doc]) -> None:
    config = one(docs, "RabbitmqCluster")["spec"]["rabbitmq"]["additionalConfig"]
    lines = {
        k.strip(): v.strip()
        for k, _, v in (line.partition("=") for line in config.splitlines())
        if v and not k.lstrip().startswith("#")
    }
    broker_ms = int(lines["consumer_timeout"])
    for deployment in workers(docs):
        env = environment(docs, pod(deployment))
        settings = settings_from(env)
        assert settings.consumer_timeout * 1000 == broker_ms, (
            "LEVERET_CONSUMER_TIMEOUT must state the broker's consumer_timeout"
        )
        app = load_app(str(env["LEVERET_APP"]))
        for registration in app.registry.values():
            timeout = registration.timeout or settings.task_timeout
            assert timeout < settings.consumer_timeout, registration.task.name


def test_pods_meet_the_restricted_security_standard(docs: list[Doc]) -> None:
    for deployment in workers(docs):
        spec = pod(deployment)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] > 0
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert spec["automountServiceAccountToken"] is False
        assert not {"hostNetwork", "hostPID", "hostIPC"} & set(spec)
        assert all("hostPath" not in v for v in spec.get("volumes", []))
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["readOnlyRootFilesystem"] is True
            assert sc.get("privileged", False) is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert not sc["capabilities"].get("add")


def test_resources_have_requests_and_limits(docs: list[Doc]) -> None:
    for deployment in workers(docs):
        resources = container(deployment)["resources"]
        assert set(resources["requests"]) == {"cpu", "memory"}
        assert set(resources["limits"]) == {"cpu", "memory"}


def test_each_group_has_a_disruption_budget_of_one(docs: list[Doc]) -> None:
    budgets = of_kind(docs, "PodDisruptionBudget")
    for deployment in workers(docs):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        mine = [b for b in budgets if matches(b["spec"]["selector"]["matchLabels"], labels)]
        assert len(mine) == 1, deployment["metadata"]["name"]
        assert mine[0]["spec"]["maxUnavailable"] == 1
        assert "minAvailable" not in mine[0]["spec"]


def test_service_account_exists_and_mounts_no_token(docs: list[Doc]) -> None:
    for deployment in workers(docs):
        account = one(docs, "ServiceAccount", pod(deployment)["serviceAccountName"])
        assert account["automountServiceAccountToken"] is False
