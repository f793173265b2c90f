"""Alerts, dashboard and scrape targets use metrics the worker and RabbitMQ really export."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import promql_parser as promql
import pytest

from leveret.amqp.topology import Names
from leveret.cli.common import load_app
from tests.deploy import contract
from tests.deploy.support import (
    DEPLOY,
    K8S,
    Doc,
    config_map,
    container,
    load_yaml,
    matches,
    of_kind,
    one,
    overlay,
    workers,
)

MONITORING = K8S / "components" / "monitoring"
DASHBOARD = MONITORING / "leveret-dashboard.json"
COMPOSE_ALERTS = DEPLOY / "compose" / "prometheus" / "alerts.yml"

# The labels RabbitMQ Cluster Operator puts on a cluster's client Service
# (internal/metadata/label.go), and that Service's metrics port name.
OPERATOR_SERVICE_LABELS = {"app.kubernetes.io/component": "rabbitmq"}
OPERATOR_METRICS_PORT = "prometheus"


@dataclass
class Query:
    """What a PromQL expression reads: metric names, label matchers, grouping labels."""

    where: str
    metrics: set[str] = field(default_factory=set)
    # (metric, label, operator, value) of each label matcher
    matchers: list[tuple[str, str, str, str]] = field(default_factory=list)
    grouping: list[tuple[set[str], set[str]]] = field(default_factory=list)  # labels, metrics


def analyse(expr: str, where: str) -> Query:
    try:
        tree = promql.parse(expr)
    except Exception as exc:  # the parser raises its own error types
        raise AssertionError(f"{where}: not valid PromQL: {exc}\n{expr}") from None
    query = Query(where)

    def visit(node: Any) -> bool:
        if isinstance(node, promql.VectorSelector):
            query.metrics.add(node.name)
            for m in node.matchers.matchers:
                query.matchers.append((node.name, m.name, str(m.op).split(".")[-1], m.value))
        if (
            isinstance(node, promql.AggregateExpr)
            and node.modifier is not None
            and node.modifier.type == promql.AggModifierType.By
        ):
            inner: set[str] = set()
            promql.walk(
                node.expr,
                lambda n: inner.add(n.name) if isinstance(n, promql.VectorSelector) else None,
            )
            query.grouping.append((set(node.modifier.labels), inner))
        return True

    promql.walk(tree, visit)
    return query


def alert_rules() -> list[Doc]:
    rule = one(overlay("prod"), "PrometheusRule")
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def dashboard() -> Doc:
    data: Doc = json.loads(DASHBOARD.read_text())
    return data


def dashboard_variables() -> dict[str, str]:
    """Each dashboard variable's value when "All" is chosen, for parsing the queries."""
    values = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}
    for var in dashboard()["templating"]["list"]:
        if var["type"] == "constant":
            values[var["name"]] = var["query"]
        elif var["type"] == "query":
            values[var["name"]] = var.get("allValue") or ".+"
        else:
            values[var["name"]] = "x"
    return values


def substitute(expr: str, values: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in values, f"dashboard variable ${name} is not defined"
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


def dashboard_targets() -> Iterator[tuple[str, str]]:
    values = dashboard_variables()
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r}", substitute(target["expr"], values)


def all_queries() -> list[Query]:
    queries = [analyse(r["expr"], f"alert {r['alert']}") for r in alert_rules()]
    queries += [analyse(expr, where) for where, expr in dashboard_targets()]
    return queries


def amqp_names() -> dict[str, list[str]]:
    docs = overlay("prod")
    data = config_map(docs, "leveret-worker-config")
    names = Names(data["LEVERET_NAMESPACE"])
    queues = sorted(load_app(data["LEVERET_APP"]).queues)
    return {
        "work": [names.work_queue(q) for q in queues],
        "dead": [names.dead_queue(q) for q in queues],
    }


def test_every_expression_parses_and_reads_known_metrics() -> None:
    series = contract.exported_series()
    external = contract.RABBITMQ_METRICS | contract.KUBE_STATE_METRICS | contract.PROMETHEUS_METRICS
    used: set[str] = set()
    for query in all_queries():
        for metric in query.metrics:
            if metric.startswith("leveret_"):
                assert metric in series, f"{query.where}: the worker exports no {metric}"
            else:
                assert metric in external, f"{query.where}: {metric} comes from nowhere known"
        used |= query.metrics
    families = {series[m].name for m in used if m in series}
    assert families == set(contract.scraped_metrics()), (
        f"metrics on no alert or panel: {set(contract.scraped_metrics()) - families}"
    )


def test_labels_used_exist_on_the_metrics() -> None:
    series = contract.exported_series()
    for query in all_queries():
        for labels, metrics in query.grouping:
            for metric in metrics & set(series):
                known = series[metric].labels
                if known is not None:
                    extra = labels - known - contract.TARGET_LABELS - {"le"}
                    assert not extra, f"{query.where}: {metric} has no label {extra}"
        for metric, label, _, value in query.matchers:
            if metric in series and series[metric].labels is not None:
                assert label in series[metric].labels | contract.TARGET_LABELS, (query.where, label)
            if label == "outcome":
                outcomes = set(value.split("|"))
                assert outcomes <= contract.DOCUMENTED_OUTCOMES, (query.where, outcomes)


def test_rabbitmq_queue_selectors_match_our_amqp_names() -> None:
    names = amqp_names()
    vhost = one(overlay("prod"), "Vhost")["spec"]["name"]
    for query in all_queries():
        for metric, label, op, value in query.matchers:
            if not metric.startswith("rabbitmq_"):
                continue
            if label == "vhost":
                assert (op, value) == ("Equal", vhost), query.where
            if label == "queue":
                assert op == "Re", query.where
                hits = {role for role, xs in names.items() for x in xs if re.fullmatch(value, x)}
                assert len(hits) == 1, f"{query.where}: {value!r} matches roles {hits}"
                role = hits.pop()
                assert all(re.fullmatch(value, x) for x in names[role]), (query.where, value)


def test_compose_prometheus_has_the_same_alerts() -> None:
    rule = one(overlay("prod"), "PrometheusRule")
    assert load_yaml(COMPOSE_ALERTS) == {"groups": rule["spec"]["groups"]}


def test_every_alert_is_labelled_and_explained() -> None:
    rules = alert_rules()
    assert {
        "LeveretDeadLetterQueueGrowing",
        "LeveretQueueWaitHigh",
        "LeveretQueueWithoutConsumers",
        "LeveretTaskFailureRateHigh",
        "LeveretWorkerRestarting",
    } <= {r["alert"] for r in rules}
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert rule["annotations"]["summary"]
        assert rule["annotations"]["description"]


def test_dashboard_is_importable() -> None:
    data = dashboard()
    assert data["uid"]
    assert data["title"]
    assert data["schemaVersion"] >= 36
    ids = [p["id"] for p in data["panels"]]
    assert len(ids) == len(set(ids))
    assert any(v["type"] == "datasource" for v in data["templating"]["list"])
    for panel in data["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], panel["title"]
    generated = one(overlay("prod"), "ConfigMap", "leveret-grafana-dashboard")
    assert json.loads(generated["data"]["leveret-dashboard.json"]) == data


@pytest.mark.parametrize("name", ["prod", "prod-hpa"])
def test_pod_monitor_scrapes_the_workers_health_port(name: str) -> None:
    docs = overlay(name)
    monitor = one(docs, "PodMonitor")["spec"]
    for deployment in workers(docs):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert matches(monitor["selector"]["matchLabels"], labels)
        ports = {p["name"] for p in container(deployment)["ports"]}
        for endpoint in monitor["podMetricsEndpoints"]:
            assert endpoint["port"] in ports
            assert endpoint["path"] == contract.METRICS_PATH
    assert contract.METRICS_PATH in contract.health_paths()


def test_service_monitor_scrapes_the_operators_rabbitmq_service() -> None:
    docs = overlay("prod")
    cluster = one(docs, "RabbitmqCluster")["metadata"]["name"]
    monitor = one(docs, "ServiceMonitor")["spec"]
    service_labels = {"app.kubernetes.io/name": cluster, **OPERATOR_SERVICE_LABELS}
    assert matches(monitor["selector"]["matchLabels"], service_labels)
    paths = {e["path"] for e in monitor["endpoints"]}
    assert paths == {"/metrics", "/metrics/detailed"}
    for endpoint in monitor["endpoints"]:
        assert endpoint["port"] == OPERATOR_METRICS_PORT
        if endpoint["path"] == "/metrics/detailed":
            assert endpoint["params"]["vhost"] == [one(docs, "Vhost")["spec"]["name"]]
            assert set(endpoint["params"]["family"]) == {
                "queue_coarse_metrics",
                "queue_consumer_count",
            }


def test_monitoring_objects_are_only_in_production() -> None:
    dev = overlay("dev")
    assert not of_kind(dev, "PodMonitor")
    assert not of_kind(dev, "PrometheusRule")
