"""The scenarios: each measures the engine and the raw baseline in the same run.

Each returns rows of the result table. A figure's ratio is the engine's value over
the baseline's, so > 1 is better for rates and < 1 for latencies and memory.
"""

from __future__ import annotations

import asyncio
import importlib.util
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aio_pika

from bench import apps, kit, raw, worker
from bench.harness import BenchError, Harness, Report, WorkerProc
from leveret import App


@dataclass(frozen=True)
class Sizes:
    one_by_one: int = 3000
    bulk: int = 30000
    drain: int = 30000
    end_to_end: int = 20000
    latency: int = 2000
    latency_rate: float = 200.0
    retry: int = 6000
    delays: int = 10000
    delay_max: float = 10.0
    delay_rate: float = 250.0
    scale: int = 30000
    burst: int = 1000
    dashboard: int = 100_000
    repeat: int = 3


FULL = Sizes(one_by_one=2000, bulk=20000, drain=10000, end_to_end=20000, retry=5000, scale=20000)
QUICK = Sizes(
    one_by_one=500,
    bulk=4000,
    drain=5000,
    end_to_end=3000,
    latency=300,
    retry=1000,
    delays=1000,
    delay_max=3.0,
    delay_rate=250.0,
    scale=5000,
    repeat=1,
    dashboard=10_000,
)


@dataclass
class Row:
    scenario: str
    metric: str
    unit: str
    ours: float | None
    raw: float | None
    better: str = "higher"  # or "lower"
    target: float | None = None  # ratio to reach (>= if higher, <= if lower)
    note: str = ""
    limit: float | None = None  # an absolute bound on ``ours`` where there is no baseline

    @property
    def ratio(self) -> float | None:
        if self.ours is None or not self.raw:
            return None
        return self.ours / self.raw

    @property
    def met(self) -> bool | None:
        if self.limit is not None and self.ours is not None:
            return self.ours >= self.limit if self.better == "higher" else self.ours <= self.limit
        ratio = self.ratio
        if ratio is None or self.target is None:
            return None
        return ratio >= self.target if self.better == "higher" else ratio <= self.target


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _rate(count: int, start: float, end: float) -> float:
    return count / (end - start) if end > start else float("nan")


# -- publishing (in this process) ----------------------------------------------------


async def _raw_exchange(h: Harness) -> tuple[aio_pika.abc.AbstractConnection, aio_pika.Exchange]:
    connection = await aio_pika.connect(h.url)
    channel = await connection.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(h.names.tasks_exchange, ensure=False)
    return connection, exchange  # type: ignore[return-value]


async def _timed(run: Awaitable[object]) -> float:
    """Seconds ``run`` (a coroutine, which does nothing until awaited) took."""
    started = time.perf_counter()
    await run
    return time.perf_counter() - started


async def publishing(h: Harness, s: Sizes) -> list[Row]:
    """One at a time, many concurrent sends, and bulk: ours against raw aio-pika."""
    jobs = [apps.Job(n=i) for i in range(max(s.one_by_one, s.bulk))]
    bodies = [j.model_dump_json().encode() for j in jobs]
    connection, exchange = await _raw_exchange(h)
    try:
        await raw.publish_one_by_one(exchange, "work", bodies[:10])  # warm up both
        for job in jobs[:10]:
            await h.app.send(apps.noop, job)

        async def ours_one(some: list[apps.Job]) -> None:
            for job in some:
                await h.app.send(apps.noop, job)

        async def ours_concurrent(some: list[apps.Job]) -> None:
            senders = 64
            per = len(some) // senders

            async def sender(k: int) -> None:
                for job in some[k * per : (k + 1) * per]:
                    await h.app.send(apps.noop, job)

            await asyncio.gather(*(sender(k) for k in range(senders)))

        # In alternating rounds, so that both sides see the same load on the machine.
        rounds = 4
        raw_one = our_one = raw_bulk = our_bulk = our_conc = 0.0
        one, bulk = s.one_by_one // rounds, s.bulk // rounds
        for r in range(rounds):
            one_bodies = bodies[r * one : (r + 1) * one]
            raw_one += await _timed(raw.publish_one_by_one(exchange, "work", one_bodies))
            our_one += await _timed(ours_one(jobs[r * one : (r + 1) * one]))
            bulk_bodies = bodies[r * bulk : (r + 1) * bulk]
            raw_bulk += await _timed(raw.publish_pipelined(exchange, "work", bulk_bodies))
            bulk_jobs = jobs[r * bulk : (r + 1) * bulk]
            our_bulk += await _timed(h.app.send_many(apps.noop, bulk_jobs))
            our_conc += await _timed(ours_concurrent(bulk_jobs))
            await h.purge("work")
        per = bulk // 64 * 64 * rounds
        one, bulk = one * rounds, bulk * rounds
    finally:
        await connection.close()
    return [
        Row(
            "publish, one at a time",
            "await send() in a loop",
            "tasks/s",
            one / our_one,
            one / raw_one,
            target=0.9,
        ),
        Row(
            "publish, bulk",
            "send_many (window 1000)",
            "tasks/s",
            bulk / our_bulk,
            bulk / raw_bulk,
            target=1.0,
        ),
        Row(
            "publish, concurrent",
            "64 tasks each awaiting send()",
            "tasks/s",
            per / our_conc,
            bulk / raw_bulk,
            note="vs raw pipelined",
        ),
    ]


async def sync_publishing(h: Harness, s: Sizes) -> list[Row]:
    """``app.sync.send`` one at a time from a plain thread, beside ``await send()``."""
    jobs = [apps.Job(n=i) for i in range(s.one_by_one)]

    def sync_one(some: list[apps.Job]) -> None:
        for job in some:
            h.app.sync.send(apps.noop, job)

    async def ours_one(some: list[apps.Job]) -> None:
        for job in some:
            await h.app.send(apps.noop, job)

    await asyncio.to_thread(sync_one, jobs[:10])  # warm up both: connect, declare
    await ours_one(jobs[:10])
    rounds = 4
    sync_time = async_time = 0.0
    one = s.one_by_one // rounds
    for r in range(rounds):  # alternating, so that both see the same load
        some = jobs[r * one : (r + 1) * one]
        async_time += await _timed(ours_one(some))
        sync_time += await _timed(asyncio.to_thread(sync_one, some))
        await h.purge("work")
    await asyncio.to_thread(h.app.sync.close)
    count = one * rounds
    return [
        Row(
            "publish, sync, one at a time",
            "app.sync.send() in a thread's loop",
            "tasks/s",
            count / sync_time,
            count / async_time,
            target=0.8,
            note="vs await send() one at a time",
        )
    ]


async def cold_burst(h: Harness, s: Sizes) -> list[Row]:
    """A burst from a process that has not sent yet: the first ``send_many`` connects,
    declares the shared topology and opens its channel on the way. The same App's next
    ``send_many`` shows what the burst costs once warm."""
    n = s.burst
    jobs = [apps.Job(n=i) for i in range(n)]
    bodies = [j.model_dump_json().encode() for j in jobs]
    raw_cold = our_cold = our_warm = float("inf")
    for _ in range(s.repeat):
        raw_cold = min(
            raw_cold, await _timed(raw.cold_burst(h.url, h.names.tasks_exchange, "work", bodies))
        )
        app = App(url=h.url, namespace=h.namespace, app_id="bench-cold")
        app.add(apps.noop)
        try:
            our_cold = min(our_cold, await _timed(app.send_many(apps.noop, jobs)))
            our_warm = min(our_warm, await _timed(app.send_many(apps.noop, jobs)))
        finally:
            await app.close()
        await h.purge("work")
    return [
        Row(
            "burst on a cold app",
            f"send_many({n}) on a fresh App: connect, declare, publish; best of {s.repeat}",
            "ms",
            our_cold * 1000,
            raw_cold * 1000,
            better="lower",
            note="raw: a fresh connection and confirm channel, all confirms in flight",
        ),
        Row(
            "burst on a cold app",
            f"that cold send_many({n}) against a warm one on the same App",
            "ms",
            our_cold * 1000,
            our_warm * 1000,
            better="lower",
            target=2.0,
            note="the baseline column is the warm send_many",
        ),
    ]


# -- draining (worker processes) ----------------------------------------------------


async def _drain(
    h: Harness,
    kind: str,
    queue: str,
    task: object,
    count: int,
    concurrency: int,
    workers: int = 1,
    env: dict[str, str] | None = None,
) -> tuple[float, list[Report]]:
    """Pre-publish ``count`` tasks, start the workers, open the gate: tasks/s until done."""
    h.reset_probe(gate=True)
    await h.fill(task, count)  # type: ignore[arg-type]
    procs = [h.spawn(kind, queue, concurrency, slot=i, env=env) for i in range(workers)]
    try:
        await h.wait_consumers(queue, workers, procs)
        opened = h.open_gate()
        slots = await h.wait_count(count, procs, 60 + count / 200)
        last = max(s[2] for s in slots)
    finally:
        reports = await h.stop(procs)
    left, _ = await h.depth(queue)
    if left:
        raise BenchError(f"{left} tasks left on {queue} after the drain: not all were acked")
    return _rate(count, opened, last), reports


async def drain(h: Harness, s: Sizes) -> list[Row]:
    rows: list[Row] = []
    memory: list[Row] = []
    for concurrency in (32, 256):
        # Best of two, alternating, so a burst of load elsewhere on the machine does not
        # decide the ratio.
        raw_rate = our_rate = 0.0
        for _ in range(s.repeat):
            rate, (raw_rep,) = await _drain(h, "raw", "work", apps.noop, s.drain, concurrency)
            raw_rate = max(raw_rate, rate)
            rate, (our_rep,) = await _drain(h, "leveret", "work", apps.noop, s.drain, concurrency)
            our_rate = max(our_rate, rate)
        rows.append(
            Row(
                "drain",
                f"{s.drain} no-op tasks, concurrency {concurrency}, best of {s.repeat}",
                "tasks/s",
                our_rate,
                raw_rate,
                target=1.5,
            )
        )
        rows.append(
            Row(
                "drain",
                f"worker CPU per 1000 tasks, concurrency {concurrency}",
                "ms",
                (our_rep.cpu_per_task_ms or 0) * 1000,
                (raw_rep.cpu_per_task_ms or 0) * 1000,
                better="lower",
                note="user+system, while draining",
            )
        )
        memory.append(
            Row(
                "memory",
                f"worker peak RSS, drain at concurrency {concurrency}",
                "MB",
                our_rep.rss_peak_mb,
                raw_rep.rss_peak_mb,
                better="lower",
                target=1.5 if concurrency == 256 else None,
            )
        )
    h.cache["drain-256"] = (rows[2].ours, rows[2].raw)
    return rows + memory


async def observed(h: Harness, s: Sizes) -> list[Row]:
    """Drain with metrics, JSON logs and Sentry on, against the bare engine: Sentry
    reporting errors only, and also sampling traces."""
    rates = {"errors only": 0.0, f"traces {worker.SENTRY_TRACES:g}": worker.SENTRY_TRACES}
    metrics = {
        label: f"drain at concurrency 256 with metrics, JSON logs, Sentry ({label}), "
        f"best of {s.repeat}"
        for label in rates
    }
    missing = worker.observability()
    if missing is not None:
        return [Row("observability on", metric, "tasks/s", None, None, target=0.85,
                    note=f"n/a: {missing}") for metric in metrics.values()]  # fmt: skip
    bare = raw = traced = 0.0
    otel = importlib.util.find_spec("opentelemetry.sdk") is not None
    on = dict.fromkeys(rates, 0.0)
    envelopes = dict.fromkeys(rates, 0)
    cpu: dict[str, float] = {}
    for _ in range(s.repeat):
        rate, (rep,) = await _drain(h, "raw", "work", apps.noop, s.drain, 256)
        raw = max(raw, rate)
        cpu["raw"] = min(cpu.get("raw", math.inf), rep.cpu_per_task_ms or math.inf)
        rate, _ = await _drain(h, "leveret", "work", apps.noop, s.drain, 256)
        bare = max(bare, rate)
        for label, traces in rates.items():
            env = {"BENCH_OBSERVE": "1", "BENCH_SENTRY_TRACES": str(traces)}
            sent = h.sentry.envelopes
            rate, (rep,) = await _drain(h, "leveret", "work", apps.noop, s.drain, 256, env=env)
            envelopes[label] = max(envelopes[label], h.sentry.envelopes - sent)
            on[label] = max(on[label], rate)
            cpu[label] = min(cpu.get(label, math.inf), rep.cpu_per_task_ms or math.inf)
        if otel:
            env = {"BENCH_OBSERVE": "1", "BENCH_SENTRY_TRACES": "0", "BENCH_OTEL": "1"}
            rate, _ = await _drain(h, "leveret", "work", apps.noop, s.drain, 256, env=env)
            traced = max(traced, rate)
    default = "errors only"  # what `leveret worker` runs with: Sentry has no traces rate
    rows = [
        Row(
            "observability on",
            metrics[label],
            "tasks/s",
            on[label],
            bare,
            target=0.85 if label == default else 0.7,
            note=f"the baseline column is the bare engine; Sentry was sent {envelopes[label]:,} "
            f"envelopes per drain of {s.drain:,} tasks",
        )
        for label in rates
    ]
    rows.append(
        Row(
            "observability on",
            "the same, Sentry errors only, plus OpenTelemetry (every span sampled, batch-exported)",
            "tasks/s",
            traced if otel else None,
            bare,
            note="the baseline column is the bare engine"
            + ("" if otel else "; n/a: leveret[otel] is not installed"),
        )
    )
    what = "one default-configured worker (metrics, JSON logs, Sentry errors only)"
    rows.append(
        Row(
            "moonshot",
            f"{what}, concurrency 256, {s.drain} no-op tasks",
            "tasks/s",
            on[default],
            raw,
            limit=10_000.0,
            note="baseline: raw aio-pika; 10,000/s wanted on a quiet machine",
        )
    )
    rows.append(
        Row(
            "moonshot",
            "its worker CPU per task",
            "us",
            cpu[default] * 1000,
            cpu["raw"] * 1000,
            better="lower",
            note="user+system while draining; baseline: raw aio-pika",
        )
    )
    return rows


async def event_loop(h: Harness, s: Sizes) -> list[Row]:
    """The engine's drain on uvloop against the same engine on asyncio's own loop."""
    best = {"asyncio": 0.0, "uvloop": 0.0}
    cpu = dict.fromkeys(best, 0.0)
    for _ in range(s.repeat):
        for loop in best:
            env = {"BENCH_LOOP": loop}
            rate, (rep,) = await _drain(h, "leveret", "work", apps.noop, s.drain, 256, env=env)
            if rate > best[loop]:
                best[loop], cpu[loop] = rate, (rep.cpu_per_task_ms or 0) * 1000
    note = "the baseline column is the engine on asyncio's loop"
    return [
        Row("uvloop", f"drain at concurrency 256 on uvloop, best of {s.repeat}", "tasks/s",
            best["uvloop"], best["asyncio"], note=note),
        Row("uvloop", "worker CPU per 1000 tasks, concurrency 256, on uvloop", "ms",
            cpu["uvloop"], cpu["asyncio"], better="lower", note=note),
    ]  # fmt: skip


async def scale_out(h: Harness, s: Sizes) -> list[Row]:
    """Two worker processes on one queue, each task run once; one worker is the drain's."""
    if "drain-256" not in h.cache:
        raw_one, _ = await _drain(h, "raw", "work", apps.noop, s.drain, 256)
        our_one, _ = await _drain(h, "leveret", "work", apps.noop, s.drain, 256)
        h.cache["drain-256"] = (our_one, raw_one)
    results: dict[str, float] = {}
    dupes: list[str] = []
    for kind in ("raw", "leveret"):
        rate, reports = await _drain(
            h, kind, "work", apps.noop, s.scale, 256, 2, env={"BENCH_IDS": "1"}
        )
        results[kind] = rate
        ids = [i for r in reports for i in r.ids]
        if len(ids) != s.scale or len(set(ids)) != s.scale:
            dupes.append(f"{kind}: {len(ids)} runs of {len(set(ids))} tasks")
    ours_one, raw_one = h.cache["drain-256"]
    note = "each task run once" if not dupes else "RUN TWICE: " + "; ".join(dupes)
    return [
        Row(
            "scale-out",
            "1 worker process, concurrency 256 (the drain)",
            "tasks/s",
            ours_one,
            raw_one,
        ),
        Row(
            "scale-out",
            f"2 worker processes, concurrency 256, {s.scale} tasks",
            "tasks/s",
            results["leveret"],
            results["raw"],
            note=note,
        ),
        Row(
            "scale-out",
            "2 workers over 1",
            "x",
            results["leveret"] / ours_one,
            results["raw"] / raw_one,
            note="speed-up on 2 cores shared with the broker",
        ),
    ]


async def retry_path(h: Harness, s: Sizes) -> list[Row]:
    """Tasks that fail once, go through delay level 0 (10 ms), then succeed."""
    rates = {}
    for kind in ("raw", "leveret"):
        h.reset_probe(gate=True)
        await h.fill(apps.flaky, s.retry)
        procs = [h.spawn(kind, "retry", 256)]
        try:
            await h.wait_consumers("retry", 1, procs)
            opened = h.open_gate()
            slots = await h.wait_count(2 * s.retry, procs, 60 + s.retry / 100)
        finally:
            await h.stop(procs)
        rates[kind] = _rate(s.retry, opened, slots[0][2])
    return [
        Row(
            "retry path",
            f"{s.retry} tasks failing once, retried via delay level 0",
            "tasks/s",
            rates["leveret"],
            rates["raw"],
            target=1.0,
        )
    ]


# -- producer and worker at once ----------------------------------------------------


async def _with_worker(
    h: Harness,
    kind: str,
    queue: str,
    concurrency: int,
    produce: Callable[[], Awaitable[object]],
    expect: int,
    limit: float,
) -> tuple[float, list[Report], list[tuple[int, float, float]]]:
    h.reset_probe(gate=False)
    procs: list[WorkerProc] = [h.spawn(kind, queue, concurrency)]
    try:
        await h.wait_consumers(queue, 1, procs)
        started = time.time()
        await produce()
        slots = await h.wait_count(expect, procs, limit)
    finally:
        reports = await h.stop(procs)
    return started, reports, slots


async def end_to_end(h: Harness, s: Sizes) -> list[Row]:
    n = s.end_to_end
    jobs = [apps.Job(n=i) for i in range(n)]
    bodies = [j.model_dump_json().encode() for j in jobs]
    connection, exchange = await _raw_exchange(h)
    try:
        t0, _, slots = await _with_worker(
            h,
            "raw",
            "work",
            256,
            lambda: raw.publish_pipelined(exchange, "work", bodies),
            n,
            60 + n / 200,
        )
        raw_rate = _rate(n, t0, slots[0][2])
        t0, _, slots = await _with_worker(
            h, "leveret", "work", 256, lambda: h.app.send_many(apps.noop, jobs), n, 60 + n / 200
        )
        our_rate = _rate(n, t0, slots[0][2])
    finally:
        await connection.close()
    return [
        Row(
            "end to end",
            f"{n} tasks: send_many and one worker (256) at once",
            "tasks/s",
            our_rate,
            raw_rate,
            target=1.0,
        )
    ]


async def _paced(rate: float, count: int, send: Callable[[int], Awaitable[object]]) -> None:
    """Start ``send(i)`` at ``rate`` per second without waiting for each to finish."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    pending: set[asyncio.Task[object]] = set()
    for i in range(count):
        wait = start + i / rate - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        task = asyncio.ensure_future(send(i))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.gather(*pending)


async def latency(h: Harness, s: Sizes) -> list[Row]:
    """Both workers run at once, each on its own queue, and the sends alternate between
    them: a burst of load elsewhere on the machine then hits both sides alike."""
    n, rate = s.latency, s.latency_rate
    connection, exchange = await _raw_exchange(h)
    h.reset_probe(gate=False)
    procs = [h.spawn("raw", "rawlatency", 32, slot=0), h.spawn("leveret", "latency", 32, slot=1)]
    try:
        await h.wait_consumers("rawlatency", 1, procs)
        await h.wait_consumers("latency", 1, procs)

        async def send(i: int) -> None:
            job = apps.Job(n=i // 2, at=time.time())
            if i % 2:
                await h.app.send(apps.stamped, job)
            else:
                message = raw.message("bench.stamped", job.model_dump_json().encode())
                await exchange.publish(message, "rawlatency", mandatory=True)

        await _paced(2 * rate, 2 * n, send)
        await h.wait_count(2 * n, procs, 60 + n / rate)
    finally:
        raw_rep, our_rep = await h.stop(procs)
        await connection.close()
    what = f"publish to handler start at {rate:.0f}/s each, interleaved"
    rows = []
    for label, q, target in (("p50", 0.5, 1.3), ("p99", 0.99, 1.5), ("max", 1.0, None)):
        rows.append(
            Row(
                "latency",
                f"{what}, {label}",
                "ms",
                percentile(our_rep.samples, q) * 1000,
                percentile(raw_rep.samples, q) * 1000,
                better="lower",
                target=target,
            )
        )
    return rows


async def delays(h: Harness, s: Sizes) -> list[Row]:
    """Random delays through the delay ladder: how late, and never early."""
    n, rate, top = s.delays, s.delay_rate, s.delay_max
    rng = random.Random(7)
    wanted = [rng.uniform(0, top) for _ in range(n)]

    async def send(i: int) -> None:
        due = time.time() + wanted[i]
        await h.app.send(apps.delayed, apps.Job(n=i, at=due), delay=wanted[i])

    _, (rep,), _ = await _with_worker(
        h, "leveret", "delays", 256, lambda: _paced(rate, n, send), n, 60 + top + n / rate
    )
    late = rep.samples
    early = sum(1 for x in late if x < 0)
    what = f"{n} sends at {rate:.0f}/s, delays 0-{top:.0f} s"
    note = "none early" if early == 0 else f"{early} EARLY"
    return [
        Row(
            "delays",
            f"{what}: lateness p50",
            "ms",
            percentile(late, 0.5) * 1000,
            None,
            better="lower",
            note=note,
            limit=None if early == 0 else -1.0,
        ),
        Row(
            "delays",
            f"{what}: lateness p99",
            "ms",
            percentile(late, 0.99) * 1000,
            None,
            better="lower",
            limit=100.0,
        ),
        Row("delays", f"{what}: lateness max", "ms", max(late) * 1000, None, better="lower"),
    ]


async def testing_kit(h: Harness, s: Sizes) -> list[Row]:
    memory, real, slowest = await kit.contract_scenarios(h, repeat=5 * s.repeat)
    what = f"{len(kit.SCENARIOS)} contract scenarios (leveret.testing)"
    return [
        Row(
            "testing-kit",
            f"{what}: in memory vs on RabbitMQ",
            "tests/s",
            memory,
            real,
            note="baseline: the same scenarios on RabbitMQ (BrokerKit)",
        ),
        Row(
            "testing-kit",
            f"{what}: slowest in memory",
            "ms",
            slowest * 1000,
            None,
            better="lower",
            limit=100.0,
        ),
    ]


async def outbox(h: Harness, s: Sizes) -> list[Row]:
    """The outbox relay beside send_many (bench/outbox.py; needs PostgreSQL)."""
    from bench.outbox import relay_throughput

    return await relay_throughput(h, s)


async def _dashboard(h: Harness, count: int) -> list[Row]:
    from bench.dashboard import scenario  # imports this module: only when chosen

    return await scenario(h, count)


SCENARIOS: dict[str, Callable[[Harness, Sizes], Awaitable[list[Row]]]] = {
    "publish": publishing,
    "sync-publish": sync_publishing,
    "cold-burst": cold_burst,
    "drain": drain,
    "end-to-end": end_to_end,
    "latency": latency,
    "retry": retry_path,
    "delays": delays,
    "scale-out": scale_out,
    "observability": observed,
    "testing-kit": testing_kit,
    "outbox": outbox,
    "dashboard": lambda h, s: _dashboard(h, s.dashboard),
    "uvloop": event_loop,
}

#: Run only when named (--only): ``make bench-dashboard`` (about 5 min at full size).
OPT_IN = frozenset({"dashboard"})
