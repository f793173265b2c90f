"""Tasks for the OpenTelemetry test, run by ``leveret worker tests.apps.otel_app:app``.

With ``OTEL_SPANS_FILE`` set, the worker's spans go to the SDK's console exporter,
one JSON object per line in that file, for the test in the producer's process.
"""

from __future__ import annotations

import json
import os
from collections import Counter

from leveret import App, Permanent, RetryPolicy, Task, TaskContext
from tests.support.models import Job

ok = Task("otel.ok", Job, queue="otel")
flaky = Task("otel.flaky", Job, queue="otel")
doomed = Task("otel.doomed", Job, queue="otel")

app = App(app_id="otel-tests")
_failures: Counter[str] = Counter()

_spans = os.environ.get("OTEL_SPANS_FILE")
if _spans:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

    from leveret.otel import OpenTelemetryMiddleware

    provider = TracerProvider()
    out = open(_spans, "a", encoding="utf-8")  # noqa: SIM115 - for the worker's life
    exporter = ConsoleSpanExporter(
        out=out, formatter=lambda span: json.dumps(json.loads(span.to_json())) + "\n"
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    OpenTelemetryMiddleware(provider).install(app)


@app.handle(ok)
async def run_ok(job: Job) -> None:
    pass


@app.handle(flaky, retry=RetryPolicy(max_attempts=5, base=0.02, jitter="none"))
async def run_flaky(job: Job, ctx: TaskContext) -> None:
    if ctx.attempt < 3:
        _failures[ctx.task_id] += 1
        raise RuntimeError(f"attempt {ctx.attempt} fails")


@app.handle(doomed)
async def run_doomed(job: Job) -> None:
    raise Permanent("never works")
