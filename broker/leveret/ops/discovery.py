"""Finding a RabbitMQ for the demo and the tests, in a fixed order.

1. ``RABBITMQ_URL`` (or ``LEVERET_URL``) if set;
2. a broker answering on localhost:5672;
3. a throwaway node started from a local ``rabbitmq-server`` install, on free ports in
   a temporary directory (removed when stopped);
4. a container through testcontainers, where a Docker engine runs.

None found: ``BrokerUnavailable`` with one message saying how to get one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leveret.errors import BrokerUnavailable

DEFAULT_LOCAL = "amqp://guest:guest@localhost:5672/"

HOW_TO_GET_ONE = (
    "No RabbitMQ found. Either set RABBITMQ_URL=amqp://user:pass@host:5672/, start one "
    "locally (Debian/Ubuntu: `apt-get install rabbitmq-server && rabbitmq-server -detached`; "
    "macOS: `brew install rabbitmq && brew services start rabbitmq`), or run Docker so a "
    "container can be started (`docker run -d -p 5672:5672 rabbitmq:3.13`)."
)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rabbitmq_sbin() -> Path | None:
    server = shutil.which("rabbitmq-server") or "/usr/lib/rabbitmq/bin/rabbitmq-server"
    if not Path(server).exists():
        return None
    return Path(os.path.realpath(server)).parent


@dataclass
class LocalNode:
    """A RabbitMQ node of our own: own ports, cookie, epmd and data, on 127.0.0.1.

    Used when no broker answers, and by fault tests that must stop, kill or restart
    a broker without touching the shared one on 5672.
    """

    port: int = field(default_factory=free_port)
    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="leveret-rmq-")))
    name: str = "leveret"
    config: dict[str, str] = field(default_factory=dict)
    plugins: tuple[str, ...] = ()
    dist_port: int = field(default_factory=free_port)
    epmd_port: int = field(default_factory=free_port)
    _process: subprocess.Popen[bytes] | None = None
    _epmd: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def nodename(self) -> str:
        return f"{self.name}@localhost"

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        home = self.base / "home"
        env.update(
            HOME=str(home),
            ERL_EPMD_PORT=str(self.epmd_port),
            RABBITMQ_CONF_ENV_FILE=str(self.base / "rabbitmq-env.conf"),
            RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.base / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.base / "log"),
            RABBITMQ_PID_FILE=str(self.base / "node.pid"),
            RABBITMQ_CONFIG_FILE=str(self.base / "rabbitmq.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.base / "enabled_plugins"),
            RABBITMQ_CTL_DIST_PORT_MIN=str(self.dist_port + 1),
            RABBITMQ_CTL_DIST_PORT_MAX=str(self.dist_port + 10),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )
        return env

    def _prepare(self) -> None:
        home = self.base / "home"
        home.mkdir(parents=True, exist_ok=True)
        (self.base / "log").mkdir(exist_ok=True)
        cookie = home / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(os.urandom(12).hex())
            cookie.chmod(0o400)
        (self.base / "rabbitmq-env.conf").write_text("")
        (self.base / "enabled_plugins").write_text(f"[{','.join(self.plugins)}].\n")
        lines = {
            "loopback_users.guest": "true",
            "vm_memory_high_watermark.absolute": "512MB",
            "log.console": "false",
            **self.config,
        }
        (self.base / "rabbitmq.conf").write_text("".join(f"{k} = {v}\n" for k, v in lines.items()))

    def start(self, timeout: float = 90.0) -> LocalNode:
        """Start the node and wait until it accepts AMQP connections."""
        sbin = _rabbitmq_sbin()
        if sbin is None:
            raise BrokerUnavailable("rabbitmq-server is not installed here. " + HOW_TO_GET_ONE)
        self._prepare()
        env = self._env()
        if self._epmd is None or self._epmd.poll() is not None:
            epmd = shutil.which("epmd") or next(Path("/usr/lib/erlang").glob("erts-*/bin/epmd"))
            self._epmd = subprocess.Popen(
                [str(epmd), "-port", str(self.epmd_port), "-address", "127.0.0.1"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        with (self.base / "log" / "stdout.log").open("ab") as log:
            self._process = subprocess.Popen(
                [str(sbin / "rabbitmq-server")],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise BrokerUnavailable(f"RabbitMQ node exited while starting; see {self.base}/log")
            if port_open("127.0.0.1", self.port):
                return self
            time.sleep(0.2)
        self.stop()
        raise BrokerUnavailable(f"RabbitMQ node did not start within {timeout:.0f} s")

    def beam_pid(self) -> int | None:
        try:
            return int((self.base / "node.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send a signal to the node's Erlang VM (SIGKILL: crash; SIGSTOP: freeze)."""
        pid = self.beam_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        if sig == signal.SIGKILL and self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait(timeout=10)

    def ctl(self, *args: str, timeout: float = 60) -> str:
        sbin = _rabbitmq_sbin()
        assert sbin is not None
        done = subprocess.run(
            [str(sbin / "rabbitmqctl"), "-n", self.nodename, *args],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )
        return done.stdout

    def stop(self) -> None:
        """Stop the node (and its epmd) but keep its data, so it can start again."""
        if self._process is not None and self._process.poll() is None:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self.ctl("shutdown", timeout=30)
            if self._process.poll() is None:
                self.kill(signal.SIGKILL)
        self._process = None
        while port_open("127.0.0.1", self.port, timeout=0.2):
            time.sleep(0.1)

    def destroy(self) -> None:
        """Stop the node and epmd and remove its directory."""
        self.stop()
        if self._epmd is not None and self._epmd.poll() is None:
            self._epmd.terminate()
            self._epmd.wait(timeout=10)
        shutil.rmtree(self.base, ignore_errors=True)


@dataclass
class Found:
    """A broker to use, and how to let it go when done."""

    url: str
    how: str
    _cleanup: Any = None

    def close(self) -> None:
        if self._cleanup is not None:
            self._cleanup()
            self._cleanup = None


def find_broker(*, allow_start: bool = True) -> Found:
    """A RabbitMQ to use, in the order this module's docstring gives."""
    url = os.environ.get("RABBITMQ_URL") or os.environ.get("LEVERET_URL")
    if url:
        return Found(url, "RABBITMQ_URL")
    if port_open("localhost", 5672):
        return Found(DEFAULT_LOCAL, "localhost:5672")
    if allow_start and _rabbitmq_sbin() is not None:
        node = LocalNode().start()
        return Found(node.url, f"throwaway node on port {node.port}", node.destroy)
    if allow_start:
        with contextlib.suppress(Exception):
            from testcontainers.rabbitmq import RabbitMqContainer

            container = RabbitMqContainer("rabbitmq:3.13").start()
            host = container.get_container_host_ip()
            port = container.get_exposed_port(5672)
            return Found(f"amqp://guest:guest@{host}:{port}/", "testcontainers", container.stop)
    raise BrokerUnavailable(HOW_TO_GET_ONE)
