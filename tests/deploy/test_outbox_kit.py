"""The optional outbox-relay component, held to `leveret outbox relay`'s own code.

The component is in no shipped overlay, so each test renders a copy of deploy/k8s with
it added to the overlays' components, as deploy/README.md ("Outbox relay") says to.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tomllib
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

from leveret import App, Settings
from leveret.cli import outbox as outbox_cli
from leveret.cli.common import load_app
from leveret.outbox import RelayMetrics
from tests.deploy import contract
from tests.deploy.support import (
    DEPLOY,
    K8S,
    OVERLAYS,
    Doc,
    budgets_of,
    config_map,
    container,
    environment,
    image_extras,
    matches,
    of_kind,
    one,
    overlay,
    render,
    validate,
    workers,
)
from tests.deploy.test_image import exec_form, stages
from tests.deploy.test_observability import analyse
from tests.deploy.test_workers import settings_from
from tests.support import ROOT

COMPONENT = K8S / "components" / "outbox-relay"
# The overlays the component is added to; prod-hpa builds on prod and gets it from there.
ADDED_TO = ("dev", "prod")
NAME = "outbox-relay"
DSN = "LEVERET_OUTBOX_DSN"


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of deploy/k8s with the component in the dev and prod overlays."""
    root = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, root)
    for name in ADDED_TO:
        path = root / "overlays" / name / "kustomization.yaml"
        kustomization = yaml.safe_load(path.read_text())
        kustomization.setdefault("components", []).append("../../components/outbox-relay")
        path.write_text(yaml.safe_dump(kustomization, sort_keys=False))
    return root


@pytest.fixture(params=OVERLAYS)
def docs(request: pytest.FixtureRequest, kit: Path) -> list[Doc]:
    return render(kit / "overlays" / request.param)


def relay(docs: list[Doc]) -> Doc:
    return one(docs, "Deployment", NAME)


def pod(docs: list[Doc]) -> Doc:
    spec: Doc = relay(docs)["spec"]["template"]["spec"]
    return spec


def init_container(docs: list[Doc]) -> Doc:
    (found,) = pod(docs)["initContainers"]
    return dict(found)


# -- what the CLI reads, from its parser ---------------------------------------------------


def verb_parser(verb: str) -> Any:
    outbox = contract.subcommands(contract.cli_parser())["outbox"]
    return contract.subcommands(outbox)[verb]


def defaults(verb: str) -> dict[str, Any]:
    """`leveret outbox VERB`'s defaults, which env_default takes from LEVERET_* variables."""
    return {a.dest: a.default for a in verb_parser(verb)._actions}


def without_leveret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("LEVERET_") or key == "RABBITMQ_URL":
            monkeypatch.delenv(key)


def reads(verb: str, name: str, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Whether `leveret outbox VERB` reads the variable: a setting of the relay's App, or a
    flag whose default changes with it."""
    setting = name.removeprefix("LEVERET_").lower()
    if verb == "relay" and name.startswith("LEVERET_") and setting in Settings.model_fields:
        return True
    with monkeypatch.context() as patch:
        without_leveret_env(patch)
        baseline = defaults(verb)
        for probe in ("0", "1"):
            patch.setenv(name, probe)
            if defaults(verb) != baseline:
                return True
    return False


def parse_with_env(
    env: dict[str, str | None], argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> Any:
    """The command line parsed as the pod's process would, Secrets standing in as x."""
    stand_in = {DSN: "postgresql://relay:x@db:5432/app"}
    with monkeypatch.context() as patch:
        without_leveret_env(patch)
        for key, value in env.items():
            patch.setenv(key, value if value is not None else stand_in.get(key, "x"))
        args = contract.parse_command(argv)
    assert args is not None
    for action in verb_parser(argv[1])._actions:
        if action.choices is not None and action.dest != "help":
            assert getattr(args, action.dest) in action.choices, action.dest
    return args


# -- tests -----------------------------------------------------------------------------------


def test_component_is_optional() -> None:
    assert yaml.safe_load((COMPONENT / "kustomization.yaml").read_text())["kind"] == "Component"
    for name in OVERLAYS:
        assert not [d for d in overlay(name) if d["metadata"]["name"] == NAME], name
    assert not [d for d in render(K8S / "base") if d["metadata"]["name"] == NAME]


def test_overlays_with_the_relay_render_valid(docs: list[Doc]) -> None:
    namespace = one(docs, "Namespace")["metadata"]["name"]
    for kind in ("Deployment", "PodDisruptionBudget"):
        found = one(docs, kind, NAME)
        validate(found)
        assert found["metadata"]["namespace"] == namespace
    images = {c["image"] for c in (*pod(docs)["containers"], *pod(docs)["initContainers"])}
    assert images == {container(workers(docs)[0])["image"]}, "the overlay's image, tag and all"


def test_two_relays_and_a_budget_that_never_blocks_a_drain(docs: list[Doc]) -> None:
    deployment = relay(docs)
    assert deployment["spec"]["replicas"] == 2
    budgets = budgets_of(docs, deployment)
    assert len(budgets) == 1
    # maxUnavailable, not minAvailable: still evictable when scaled to one relay for order.
    assert budgets[0]["spec"] == {
        "maxUnavailable": 1,
        "unhealthyPodEvictionPolicy": "AlwaysAllow",
        "selector": budgets[0]["spec"]["selector"],
    }
    for scaler in (*of_kind(docs, "ScaledObject"), *of_kind(docs, "HorizontalPodAutoscaler")):
        assert scaler["spec"]["scaleTargetRef"]["name"] != NAME, "relays are not scaled on a queue"


def test_command_is_the_console_script_running_outbox_relay(
    docs: list[Doc], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = container(relay(docs), "relay")
    assert "command" not in spec, "the image's entrypoint runs the console script"
    _, runtime = stages()
    (script,) = exec_form(runtime.last("ENTRYPOINT"))
    assert script in contract.console_scripts()
    assert spec["args"][:2] == ["outbox", "relay"]
    env = environment(docs, pod(docs), "relay")
    args = parse_with_env(env, spec["args"], monkeypatch)
    assert args.run is outbox_cli.run_relay
    app = load_app(args.app)
    assert isinstance(app, App)
    assert app.queues, "the relay declares its app's queues at start"
    assert args.dsn
    assert args.table


def test_probes_and_port_are_the_relays_own(
    docs: list[Doc], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = container(relay(docs), "relay")
    ports = {p["name"]: p["containerPort"] for p in spec["ports"]}
    with monkeypatch.context() as patch:
        without_leveret_env(patch)
        default_port = defaults("relay")["health_port"]
    env = environment(docs, pod(docs), "relay")
    configured = parse_with_env(env, spec["args"], monkeypatch).health_port
    assert configured == default_port

    class Stub:
        ready = False
        reason = "PostgreSQL unreachable"

    stub = Stub()
    routes = outbox_cli.relay_routes(cast(Any, stub), RelayMetrics())

    def status(path: str) -> int:
        assert path in routes, f"the relay serves no {path} (it has {sorted(routes)})"
        code, _, _ = asyncio.run(routes[path]())
        return code

    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = spec[probe]["httpGet"]
        assert ports[get["port"]] == configured, f"{probe} is not on the relay's health port"
    alive = spec["livenessProbe"]["httpGet"]["path"]
    assert spec["startupProbe"]["httpGet"]["path"] == alive
    ready = spec["readinessProbe"]["httpGet"]["path"]
    # Not relaying: still alive (not restarted by an outage), but not ready.
    assert (status(alive), status(ready)) == (200, 503)
    stub.ready = True
    assert (status(alive), status(ready)) == (200, 200)


def test_every_variable_is_one_the_relay_reads(
    docs: list[Doc], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = container(relay(docs), "relay")
    for var in spec["env"]:
        name = var["name"]
        if name.startswith("LEVERET_"):
            assert reads("relay", name, monkeypatch), (
                f"{name} is no `leveret outbox relay` flag and no setting"
            )
    # The workers' ConfigMap is shared so that the relay declares queues as they do; what
    # in it the relay does not read is the workers' own.
    worker_flags = contract.worker_flags()
    for source in spec["envFrom"]:
        for name in config_map(docs, source["configMapRef"]["name"]):
            if name.startswith("LEVERET_") and not reads("relay", name, monkeypatch):
                assert name.removeprefix("LEVERET_").lower() in worker_flags, name
    for var in init_container(docs)["env"]:
        assert reads("migrate", var["name"], monkeypatch), (
            f"{var['name']} is no `leveret outbox migrate` flag"
        )


def test_relay_settings_are_the_workers(docs: list[Doc]) -> None:
    """Same URL, namespace, queue types and bands: the queues it declares are theirs."""
    settings = settings_from(environment(docs, pod(docs), "relay"))
    for deployment in workers(docs):
        spec = deployment["spec"]["template"]["spec"]
        assert settings == settings_from(environment(docs, spec)), deployment["metadata"]["name"]


def test_the_database_comes_from_a_secret_only(docs: list[Doc]) -> None:
    refs = []
    for spec in (container(relay(docs), "relay"), init_container(docs)):
        env = {v["name"]: v for v in spec["env"]}
        assert "value" not in env[DSN], "never a literal DSN (it holds the password)"
        ref = env[DSN]["valueFrom"]["secretKeyRef"]
        assert not ref.get("optional", False)
        refs.append((ref["name"], ref["key"]))
        for var in spec["env"]:
            assert "postgres" not in str(var.get("value", "")), var["name"]
    assert refs[0] == refs[1], "the migration and the relay use the same database"
    name, key = refs[0]
    runbook = (DEPLOY / "README.md").read_text()
    assert f"`{name}`" in runbook, "deploy/README.md names the Secret"
    assert f"`{key}`" in runbook


def test_migration_runs_first_on_the_relays_table(
    docs: list[Doc], monkeypatch: pytest.MonkeyPatch
) -> None:
    init = init_container(docs)
    env = environment(docs, {"containers": [init]}, init["name"])
    args = parse_with_env(env, init["args"], monkeypatch)
    assert args.run is outbox_cli.run_migrate
    assert not args.print
    relayed = parse_with_env(
        environment(docs, pod(docs), "relay"),
        container(relay(docs), "relay")["args"],
        monkeypatch,
    )
    assert args.table == relayed.table


def test_locked_down_like_the_workers(docs: list[Doc]) -> None:
    spec = pod(docs)
    worker = workers(docs)[0]["spec"]["template"]["spec"]
    assert spec["securityContext"] == worker["securityContext"]
    assert spec["serviceAccountName"] == worker["serviceAccountName"]
    assert spec["automountServiceAccountToken"] is False
    for each in (*spec["containers"], *spec["initContainers"]):
        assert each["securityContext"] == container(workers(docs)[0])["securityContext"]
        assert set(each["resources"]) == {"requests", "limits"}, each["name"]


def test_the_pod_monitor_scrapes_the_relays(kit: Path) -> None:
    docs = render(kit / "overlays" / "prod")
    monitor = one(docs, "PodMonitor")["spec"]
    assert matches(
        monitor["selector"]["matchLabels"], relay(docs)["spec"]["template"]["metadata"]["labels"]
    )
    ports = {p["name"] for p in container(relay(docs), "relay")["ports"]}
    routes = outbox_cli.relay_routes(cast(Any, None), RelayMetrics())
    for endpoint in monitor["podMetricsEndpoints"]:
        assert endpoint["port"] in ports
        assert endpoint["path"] in routes


def test_outbox_alerts_use_the_relays_metrics() -> None:
    exported = contract.outbox_metrics()
    assert exported, "leveret.outbox.metrics exports no metric"
    series = {s for m in exported.values() for s in m.series}
    rule = one(overlay("prod"), "PrometheusRule")
    rules = [r for group in rule["spec"]["groups"] for r in group["rules"]]
    used: dict[str, set[str]] = {}
    for each in rules:
        metrics = analyse(each["expr"], each["alert"]).metrics
        outbox = {m for m in metrics if m.startswith("leveret_outbox_")}
        assert outbox <= series, f"{each['alert']} reads {outbox - series}, not a relay metric"
        if outbox:
            used[each["alert"]] = outbox
    oldest = RelayMetrics().oldest._name
    assert any(oldest in metrics for metrics in used.values()), "no alert on an old backlog"
    runbook = (DEPLOY / "README.md").read_text()
    for alert in used:
        assert f"`{alert}`" in runbook, f"deploy/README.md has no line for {alert}"


def test_image_carries_the_outbox_extra() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert "outbox" in image_extras()
    assert any(r.startswith("psycopg") for r in extras["outbox"]), "the relay needs psycopg"
