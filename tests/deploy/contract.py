"""What deploy/ relies on from the worker, read from the code wherever the code has it.

Each function prefers the real module and falls back to the documented contract only
while that module does not exist yet. The fallbacks are the worker's documented
interface; when a module lands, its real values replace them here and the tests
check the manifests against those.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import inspect
import tomllib
from dataclasses import dataclass
from types import ModuleType

from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from tests.support import ROOT

# -- health endpoint (broker/health.py) ----------------------------------------------

HEALTH_PORT = 8000
LIVENESS_PATH = "/livez"
READINESS_PATH = "/readyz"
METRICS_PATH = "/metrics"
HEALTH_PATHS = (LIVENESS_PATH, READINESS_PATH, METRICS_PATH)

# -- command line (broker/cli) ---------------------------------------------------------

# Worker flags and commands the deployment uses that the CLI on this branch may not
# have yet. Once the parser has them, the parser's own definition is what is checked.
DOCUMENTED_WORKER_FLAGS = frozenset(
    {
        "queues",
        "concurrency",
        "shutdown_timeout",
        "health_port",
        "processes",
        "log_format",
        "sentry_dsn",
    }
)
DOCUMENTED_COMMANDS = frozenset({"worker", "send", "declare", "schema", "check", "dlq"})

# -- metrics (broker/metrics.py) ---------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """One metric family as exported: its name (without _total), type and labels."""

    name: str
    type: str
    labels: frozenset[str] | None  # None: not known (read from a registry without samples)

    @property
    def series(self) -> frozenset[str]:
        """The sample names Prometheus stores for this family."""
        suffixes = {
            "counter": ("_total", "_created"),
            "histogram": ("_bucket", "_count", "_sum", "_created"),
            "summary": ("", "_count", "_sum", "_created"),
            "info": ("_info",),
        }.get(self.type, ("",))
        return frozenset(self.name + suffix for suffix in suffixes)


# Must match broker/metrics.py: used only until that module exists on this branch.
DOCUMENTED_METRICS = (
    Metric("leveret_tasks_published", "counter", frozenset({"task", "queue"})),
    Metric("leveret_tasks_processed", "counter", frozenset({"task", "queue", "outcome"})),
    Metric("leveret_messages_rejected", "counter", frozenset({"queue", "reason"})),
    Metric("leveret_task_duration_seconds", "histogram", frozenset({"task", "queue"})),
    Metric("leveret_task_queue_wait_seconds", "histogram", frozenset({"task", "queue"})),
    Metric("leveret_tasks_in_progress", "gauge", frozenset({"queue"})),
    Metric("leveret_reconnects", "counter", frozenset()),
    Metric("leveret_publish_confirm_seconds", "histogram", frozenset()),
    Metric("leveret_worker_ready", "gauge", frozenset()),
    Metric("leveret_returned_deliveries", "counter", frozenset({"queue", "action"})),
)
DOCUMENTED_OUTCOMES = frozenset(
    {"succeeded", "retried", "dead-lettered", "failed-permanently", "abandoned"}
)

# Metrics the alerts and the dashboard use from elsewhere.
# rabbitmq_prometheus, /metrics/detailed?family=queue_coarse_metrics&family=
# queue_consumer_count; test_rabbitmq_node reads them off a real node.
RABBITMQ_METRICS = frozenset(
    {
        "rabbitmq_detailed_queue_messages",
        "rabbitmq_detailed_queue_messages_ready",
        "rabbitmq_detailed_queue_messages_unacked",
        "rabbitmq_detailed_queue_consumers",
    }
)
KUBE_STATE_METRICS = frozenset({"kube_pod_container_status_restarts_total"})
PROMETHEUS_METRICS = frozenset({"up"})
# Labels Prometheus adds to every scraped series (targets, pods).
TARGET_LABELS = frozenset({"job", "instance", "pod", "namespace", "container"})


def optional_module(name: str) -> ModuleType | None:
    """The module if it exists on this branch; an import error inside it still fails."""
    if importlib.util.find_spec(name) is None:
        return None
    return importlib.import_module(name)


def worker_metrics() -> dict[str, Metric]:
    """The metric families the worker exports: broker/metrics.py's, else the documented."""
    module = optional_module("leveret.ops.metrics")
    if module is None:
        return {m.name: m for m in DOCUMENTED_METRICS}
    found = _metrics_of(module)
    assert found, (
        "broker/metrics.py defines no metric this test can find: keep them as module-level "
        "prometheus_client metrics, a module-level CollectorRegistry, or a class whose "
        "constructor takes registry="
    )
    return found


def _metrics_of(module: ModuleType) -> dict[str, Metric]:
    found: dict[str, Metric] = {}

    def add_wrapper(metric: MetricWrapperBase) -> None:
        name, kind = metric._name, metric._type
        found[name] = Metric(name, kind, frozenset(metric._labelnames))

    def add_registry(registry: CollectorRegistry) -> None:
        for family in registry.collect():
            if family.name.startswith("leveret_") and family.name not in found:
                labels = {k for s in family.samples for k in s.labels} - {"le", "quantile"}
                found[family.name] = Metric(
                    family.name, family.type, frozenset(labels) if family.samples else None
                )

    for value in vars(module).values():
        if isinstance(value, MetricWrapperBase):
            add_wrapper(value)
        elif isinstance(value, CollectorRegistry):
            add_registry(value)
    for value in vars(module).values():
        if not (inspect.isclass(value) and value.__module__ == module.__name__):
            continue
        try:
            parameters = inspect.signature(value).parameters
        except (TypeError, ValueError):
            continue
        if "registry" not in parameters:
            continue
        registry = CollectorRegistry()
        instance = value(registry=registry)
        install = getattr(instance, "install", None)
        if callable(install):  # scrape-time collectors register when installed on an app
            from leveret import App

            install(App())
        for attr in vars(instance).values():
            if isinstance(attr, MetricWrapperBase):
                add_wrapper(attr)
        add_registry(registry)
    return found


def outbox_metrics() -> dict[str, Metric]:
    """The metric families an outbox relay (``leveret outbox relay``) exports."""
    module = optional_module("leveret.outbox.metrics")
    return {} if module is None else _metrics_of(module)


def scheduler_metrics() -> dict[str, Metric]:
    """The metric families a ``leveret scheduler`` replica exports."""
    module = optional_module("leveret.scheduler.metrics")
    return {} if module is None else _metrics_of(module)


def exported_metrics() -> dict[str, Metric]:
    """Every family a leveret process exports: workers', outbox relays', schedulers'."""
    return {**worker_metrics(), **outbox_metrics(), **scheduler_metrics()}


def exported_series() -> dict[str, Metric]:
    """Every series name a leveret process can export, mapped to its family."""
    return {s: m for m in exported_metrics().values() for s in m.series}


# -- console script (pyproject.toml) ---------------------------------------------------


def console_scripts() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    scripts: dict[str, str] = project.get("scripts", {})
    return scripts


# -- the command line, as the code defines it ----------------------------------------


def cli_parser() -> argparse.ArgumentParser:
    from leveret.cli import parser

    return parser()


def subcommands(root: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in root._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def worker_flags() -> frozenset[str]:
    """Destinations of `leveret worker`'s options (``shutdown_timeout``, ...)."""
    worker = subcommands(cli_parser())["worker"]
    return frozenset(a.dest for a in worker._actions if a.option_strings)


def known_worker_flags() -> frozenset[str]:
    """The worker's flags: the parser's, plus documented ones it does not have yet."""
    return worker_flags() | DOCUMENTED_WORKER_FLAGS


def parse_command(argv: list[str]) -> argparse.Namespace | None:
    """Parse a `leveret` command line as the CLI would; None if its command is not here yet.

    A command the CLI has must parse, flags and arguments as the code defines them,
    except worker flags the interface documents that the parser does not have yet. A
    command the CLI does not have yet must be one the interface documents.
    """
    assert argv, "empty leveret command"
    root = cli_parser()
    command = argv[0]
    if command not in subcommands(root):
        assert command in DOCUMENTED_COMMANDS, f"`leveret {command}` is not a leveret command"
        return None
    try:
        args, rest = root.parse_known_args(argv)
    except SystemExit as exc:
        raise AssertionError(
            f"`leveret {' '.join(argv)}` does not parse (exit {exc.code})"
        ) from None
    pending = DOCUMENTED_WORKER_FLAGS - worker_flags() if command == "worker" else set()
    flag_before = False
    for token in rest:
        if token.startswith("--"):
            name = token[2:].split("=", 1)[0].replace("-", "_")
            assert name in pending, f"`leveret {command}` has no flag {token}"
            flag_before = "=" not in token
        else:
            assert flag_before, f"`leveret {' '.join(argv)}`: unexpected {token!r}"
            flag_before = False
    return args


def health_paths() -> tuple[str, ...]:
    """The health server's paths: literals in broker/leveret/ops/health.py once it exists."""
    path = ROOT / "broker" / "leveret" / "ops" / "health.py"
    if not path.exists():
        return HEALTH_PATHS
    literals = {
        node.value
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }
    return tuple(p for p in HEALTH_PATHS if p in literals)
