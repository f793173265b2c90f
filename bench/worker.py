"""The engine's worker for the bench: ``python -m bench.worker QUEUE --concurrency N``.

Like ``leveret worker bench.apps:app --queues QUEUE``, minus what the command adds
around the worker (health server, default middleware), so that every figure measures
the engine itself. ``--observe`` adds the metrics, JSON logs and Sentry (traces
sampled, envelopes to the harness's stand-in for Sentry) that a production worker runs with.
It runs on asyncio's own loop unless ``BENCH_LOOP`` names another (``uvloop``), so that
every other figure compares like with like across revisions.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
from typing import Any

from bench.apps import app
from leveret import Worker
from leveret.ops import loops

#: Where Sentry sends envelopes when the harness gives no sink: a closed port here.
SENTRY_DSN = "http://bench@127.0.0.1:9/1"
#: Traces sample rate with ``--observe`` (``BENCH_SENTRY_TRACES`` overrides it).
SENTRY_TRACES = 0.01


def observability() -> str | None:
    """Why metrics, JSON logs and Sentry cannot be switched on here, or None if they can."""
    needs = {
        "leveret.ops.metrics": ("Metrics",),
        "leveret.ops.logs": ("configure", "TaskLog"),
        "leveret.ops.sentry": ("setup", "SentryMiddleware"),
    }
    for name, attributes in needs.items():
        try:
            module = importlib.import_module(name)
        except ImportError:
            return f"{name} is not on this revision"
        missing = [a for a in attributes if not hasattr(module, a)]
        if missing:
            return f"{name} has no {', '.join(missing)}"
    return None


def observe(worker: Worker) -> None:
    """Switch on what a production worker runs with, as ``leveret worker`` does."""
    logs: Any = importlib.import_module("leveret.ops.logs")
    metrics: Any = importlib.import_module("leveret.ops.metrics")
    sentry: Any = importlib.import_module("leveret.ops.sentry")
    logs.configure("INFO", "json")
    traces = float(os.environ.get("BENCH_SENTRY_TRACES", SENTRY_TRACES))
    dsn = os.environ.get("BENCH_SENTRY_DSN", SENTRY_DSN)
    if sentry.setup(dsn, traces_sample_rate=traces):
        worker.app.middleware.append(sentry.SentryMiddleware())
    worker.app.middleware.append(logs.TaskLog())
    installed = metrics.Metrics().install(worker.app)
    if hasattr(installed, "watch"):
        installed.watch(worker)
    if os.environ.get("BENCH_OTEL") == "1":
        traced(worker)


def traced(worker: Worker) -> None:
    """OpenTelemetry on every task: an SDK provider, every span sampled, batch-exported
    to an exporter that drops them (the SDK's cost, not a collector's)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Dropped(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Dropped()))
    otel: Any = importlib.import_module("leveret.otel")
    otel.OpenTelemetryMiddleware(provider).install(worker.app)


async def serve(worker: Worker) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.request_stop)
    try:
        await worker.run()
    finally:
        await worker.app.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.worker")
    parser.add_argument("queue")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--observe", action="store_true")
    args = parser.parse_args()
    worker = Worker(app, queues=[args.queue], concurrency=args.concurrency)
    if args.observe:
        observe(worker)
    else:
        logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s %(message)s")
    loops.run(serve(worker), os.environ.get("BENCH_LOOP", "asyncio"))


if __name__ == "__main__":
    main()
