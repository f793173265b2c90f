"""``leveret worker --processes N``: N worker processes under one parent.

The parent runs no tasks. It starts each worker as ``python -m leveret worker ...`` in
its own session (so a terminal's Ctrl-C reaches only the parent, which forwards it
once), forwards SIGTERM and SIGINT, and restarts a worker that dies, with a backoff
when one keeps dying. It serves the health port itself, from the answers of its
workers: ``/livez`` fails if a running worker's loop stops answering, ``/readyz`` is
ready when every worker is, ``/metrics`` adds up the workers' metrics. Each worker
serves its own endpoints on a socket the parent opened (127.0.0.1, an ephemeral
port), so no port is ever raced for.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field

from leveret.ops.health import TEXT, HealthServer, Response, Route, probe
from leveret.ops.metrics import CONTENT_TYPE, merge

log = logging.getLogger(__name__)

PROBE_SECONDS = 2.0
#: A worker that lived this long before dying is restarted at once.
STABLE_SECONDS = 60.0
MAX_BACKOFF = 30.0


@dataclass
class Slot:
    """One worker process position: restarted in place when its process dies."""

    index: int
    sock: socket.socket | None
    proc: asyncio.subprocess.Process | None = None
    started: float = 0.0
    answered: bool = False
    restarts: int = 0
    codes: list[int] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    @property
    def port(self) -> int | None:
        return None if self.sock is None else int(self.sock.getsockname()[1])


class Supervisor:
    """Starts, watches, restarts and stops N worker processes."""

    def __init__(
        self,
        argv: list[str],
        processes: int,
        *,
        shutdown_timeout: float,
        health_host: str = "0.0.0.0",
        health_port: int = 8000,
        env: dict[str, str] | None = None,
    ) -> None:
        self.argv = argv
        self.processes = processes
        self.shutdown_timeout = shutdown_timeout
        self.health_host = health_host
        self.health_port = health_port
        self.env = env or {}
        self.slots: list[Slot] = []
        self._stop = asyncio.Event()
        self._signals = 0

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Supervisor:
        """The children's command line: the parent's, for one process each."""
        argv = [sys.executable, "-m", "leveret", "--log-level", args.log_level, "worker", args.app]
        argv += ["--processes", "1", "--concurrency", str(args.concurrency)]
        argv += ["--shutdown-timeout", str(args.shutdown_timeout), "--log-format", args.log_format]
        argv += ["--loop", args.loop]
        argv += ["--health-port", "0"]
        if args.queues:
            argv += ["--queues", args.queues]
        argv += ["--sentry-traces-sample-rate", str(args.sentry_traces_sample_rate)]
        if args.sentry_report_retries:
            argv.append("--sentry-report-retries")
        env = {"LEVERET_SENTRY_DSN": args.sentry_dsn} if args.sentry_dsn else {}
        return cls(
            argv,
            args.processes,
            shutdown_timeout=args.shutdown_timeout,
            health_host=args.health_host,
            health_port=args.health_port,
            env=env,
        )

    def run(self) -> int:
        return asyncio.run(self.main())

    async def main(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        self.slots = [
            Slot(i, _listening_socket() if self.health_port else None)
            for i in range(self.processes)
        ]
        server = await self._serve_health()
        log.info("starting %d worker processes", self.processes)
        keepers = [loop.create_task(self._keep(slot)) for slot in self.slots]
        try:
            await self._stop.wait()
            limit = self.shutdown_timeout + 10.0
            _, pending = await asyncio.wait(keepers, timeout=limit)
            if pending:
                log.warning("worker processes still running %.0f s after SIGTERM: killing", limit)
                for slot in self.slots:
                    if slot.running and slot.proc is not None:
                        with contextlib.suppress(ProcessLookupError):
                            slot.proc.kill()
                await asyncio.wait(keepers, timeout=10)
        finally:
            if server is not None:
                await server.close()
            for slot in self.slots:
                if slot.sock is not None:
                    slot.sock.close()
        failed = [slot.codes[-1] for slot in self.slots if slot.codes and slot.codes[-1] != 0]
        if failed:
            log.warning("worker processes exited with %s", ", ".join(map(str, failed)))
            return 1
        log.info("all worker processes stopped")
        return 0

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        if self._signals > 1 and sig == signal.SIGINT:
            self._forward(signal.SIGINT)
            log.warning("second interrupt: exiting now; unfinished tasks will be redelivered")
            logging.shutdown()
            os._exit(130)
        log.info("%s received: stopping %d worker processes", sig.name, self.processes)
        self._stop.set()
        self._forward(sig)

    def _forward(self, sig: signal.Signals) -> None:
        for slot in self.slots:
            if slot.running and slot.proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    slot.proc.send_signal(sig)

    async def _keep(self, slot: Slot) -> None:
        """Run the slot's process; start it again whenever it dies unasked."""
        backoff = 1.0
        while not self._stop.is_set():
            await self._spawn(slot)
            assert slot.proc is not None
            code = await slot.proc.wait()
            slot.codes.append(code)
            if self._stop.is_set():
                return
            lived = time.monotonic() - slot.started
            if lived > STABLE_SECONDS:
                backoff = 1.0
            log.warning(
                "worker process %d (pid %d) exited with %d after %.0f s; restarting in %.0f s",
                slot.index,
                slot.proc.pid,
                code,
                lived,
                backoff,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)
            slot.restarts += 1

    async def _spawn(self, slot: Slot) -> None:
        env = {**os.environ, **self.env, "LEVERET_SUPERVISOR_PID": str(os.getpid())}
        fds: tuple[int, ...] = ()
        if slot.sock is not None:
            env["LEVERET_HEALTH_FD"] = str(slot.sock.fileno())
            fds = (slot.sock.fileno(),)
        slot.proc = await asyncio.create_subprocess_exec(
            *self.argv, env=env, pass_fds=fds, start_new_session=True
        )
        slot.started = time.monotonic()
        slot.answered = False
        log.info("worker process %d started (pid %d)", slot.index, slot.proc.pid)

    # -- health ---------------------------------------------------------------------

    async def _serve_health(self) -> HealthServer | None:
        if not self.health_port:
            return None
        routes: dict[str, Route] = {
            "/livez": self._livez,
            "/readyz": self._readyz,
            "/metrics": self._metrics,
        }
        server = HealthServer(routes, host=self.health_host, port=self.health_port)
        try:
            await server.start()
        except OSError as exc:
            log.warning("health endpoints disabled: port %d: %s", self.health_port, exc)
            return None
        log.info("health endpoints on port %d: /livez /readyz /metrics", server.port)
        return server

    async def _ask(self, slot: Slot, path: str) -> tuple[int, bytes] | None:
        """A running worker's answer, or None if it gave none in time."""
        port = slot.port
        if port is None or not slot.running:
            return None
        try:
            answer = await probe("127.0.0.1", port, path, PROBE_SECONDS)
        except (OSError, TimeoutError):
            return None
        slot.answered = True
        return answer

    async def _livez(self) -> Response:
        answers = await asyncio.gather(*(self._ask(s, "/livez") for s in self.slots))
        # A process that never answered yet is starting (or being restarted): the
        # parent looks after it. One that answered before and no longer does is stuck.
        stuck = [
            f"worker process {s.index} (pid {s.proc.pid if s.proc else '-'}) does not answer"
            for s, a in zip(self.slots, answers, strict=True)
            if s.running and s.answered and (a is None or a[0] != 200)
        ]
        if stuck:
            return 503, TEXT, ("\n".join(stuck) + "\n").encode()
        return 200, TEXT, b"ok\n"

    async def _readyz(self) -> Response:
        answers = await asyncio.gather(*(self._ask(s, "/readyz") for s in self.slots))
        lines = []
        for slot, answer in zip(self.slots, answers, strict=True):
            if answer is None:
                lines.append(f"worker process {slot.index}: not running or not answering")
            elif answer[0] != 200:
                lines.append(f"worker process {slot.index}: {answer[1].decode().strip()}")
        if lines:
            return 503, TEXT, ("\n".join(lines) + "\n").encode()
        return 200, TEXT, b"ready\n"

    async def _metrics(self) -> Response:
        answers = await asyncio.gather(*(self._ask(s, "/metrics") for s in self.slots))
        texts = [a[1].decode() for a in answers if a is not None and a[0] == 200]
        if len(texts) < len(self.slots):
            texts.append("# TYPE leveret_worker_ready gauge\nleveret_worker_ready 0\n")
        return 200, CONTENT_TYPE, merge(texts)


def _listening_socket() -> socket.socket:
    """A socket a worker process inherits and serves its endpoints on."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.set_inheritable(True)
    return sock
