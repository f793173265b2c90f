"""A 3-node RabbitMQ cluster of our own, to kill, freeze, restart and cut off.

Two layouts, the same interface:

- ``netns`` (needs root and ``ip netns``): each node runs in its own network
  namespace on the default ports, the namespaces joined by a bridge in a fourth
  one, so a real partition is a few nftables rules that silently drop a node's
  traffic to the others. Clients outside reach a node through a unix-socket bridge
  process inside its namespace (tests/faults/bridge.py) and a ``FaultProxy``.
  Nothing in the host's own network namespace changes.
- ``loopback``: the nodes on free ports of 127.0.0.1 with their own epmd; no
  partitions, everything else works.

Each node is reached by clients through its ``FaultProxy`` (``urls``), and by the
test for inspection through a second, fault-free proxy (``admin_url``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from leveret.ops.discovery import free_port, port_open
from tests.faults.proxy import FaultProxy, Upstream
from tests.support.processes import alive

SBIN = Path(
    os.path.realpath(shutil.which("rabbitmq-server") or "/usr/lib/rabbitmq/bin/rabbitmq-server")
).parent
BRIDGE = Path(__file__).with_name("bridge.py")
LETTERS = "abc"


class ClusterError(RuntimeError):
    """The cluster could not be set up or did not do what it was told."""


def _epmd() -> str:
    found = shutil.which("epmd") or next(
        iter(Path("/usr/lib/erlang").glob("erts-*/bin/epmd")), None
    )
    if found is None:
        raise ClusterError("epmd not found (is Erlang installed?)")
    return str(found)


def _run(cmd: list[str], timeout: float = 60, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False
    )
    if done.returncode != 0:
        raise ClusterError(
            f"{' '.join(cmd[:6])}... failed: {done.stderr.strip() or done.stdout.strip()}"
        )
    return done.stdout


def netns_available() -> str | None:
    """None if network namespaces can be made here, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    probe = f"lvprobe{uuid.uuid4().hex[:6]}"
    try:
        _run(["ip", "netns", "add", probe], timeout=10)
    except (ClusterError, OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot create a network namespace: {exc}"
    _run(["ip", "netns", "del", probe], timeout=10)
    return None


def ensure_nft() -> str | None:
    """None if nftables is usable (installing it with apt-get if missing), else why not."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "nftables"]
    # Installed from the package lists there are; only if that fails, refreshed first.
    for steps in ([install], [["apt-get", "update", "-qq"], install]):
        if shutil.which("nft") is not None or shutil.which("apt-get") is None:
            break
        for step in steps:
            subprocess.run(step, env=env, capture_output=True, timeout=300, check=False)
    if shutil.which("nft") is None:
        return "nftables (`nft`) is not installed and apt-get could not install it"
    return None


@dataclass(eq=False)
class Node:
    """One member of the cluster."""

    index: int
    name: str  # the Erlang node name is name@host
    host: str
    base: Path
    amqp_port: int
    dist_port: int
    netns: str | None = None
    ip: str | None = None
    proxy: FaultProxy | None = None
    admin: FaultProxy | None = None
    process: subprocess.Popen[bytes] | None = None
    bridge: subprocess.Popen[bytes] | None = None
    epmd: subprocess.Popen[bytes] | None = None
    frozen: bool = False

    @property
    def nodename(self) -> str:
        return f"{self.name}@{self.host}"

    @property
    def letter(self) -> str:
        return LETTERS[self.index].upper()

    def beam_pid(self) -> int | None:
        try:
            return int((self.base / "beam.pid").read_text().strip())
        except (OSError, ValueError):
            return None


@dataclass
class Cluster:
    """Three nodes clustered with pause_minority; see the module docstring."""

    layout: str = "netns"  # or "loopback"
    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="lvc-")))
    nodes: list[Node] = field(default_factory=list)
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:5])
    epmd_port: int = 0
    hub: str | None = None
    epmd_process: subprocess.Popen[bytes] | None = None
    #: See _prepare_files: how soon a stalled dead-letter forward is retried.
    dlx_confirm_timeout_ms: int = 5000
    #: Why partitions cannot be cut here (None: they can).
    no_partitions: str | None = None

    # -- addresses --------------------------------------------------------------------

    @property
    def urls(self) -> list[str]:
        """What clients use: every node, each through its fault proxy."""
        return [n.proxy.url() for n in self.nodes if n.proxy is not None]

    @property
    def url(self) -> str:
        return ",".join(self.urls)

    @property
    def admin_url(self) -> str:
        """Fault-free ways to every node, comma-separated (tests/support/amqp.py
        ``admin_channel`` uses the first that answers)."""
        return ",".join(n.admin.url() for n in self.nodes if n.admin is not None)

    # -- life cycle -------------------------------------------------------------------

    def start(self) -> Cluster:
        started = time.monotonic()
        self.base.mkdir(parents=True, exist_ok=True)
        self._prepare_files()
        if self.layout == "netns":
            self._make_namespaces()
        else:
            self.epmd_port = free_port()
            self.epmd_process = subprocess.Popen(
                [_epmd(), "-port", str(self.epmd_port), "-address", "127.0.0.1"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        for index in range(3):
            self.nodes.append(self._node(index))
        for node in self.nodes:
            self._start_node(node)
        for node in self.nodes:
            self._await_node(node)
        for node in self.nodes[1:]:
            self.ctl(node.index, "stop_app")
            self.ctl(node.index, "reset")
            self.ctl(node.index, "join_cluster", self.nodes[0].nodename)
            self.ctl(node.index, "start_app")
        self.ctl(0, "await_online_nodes", "3", "--timeout", "120", timeout=150)
        for node in self.nodes:
            self._open_access(node)
        print(f"cluster ({self.layout}) up in {time.monotonic() - started:.0f} s")
        return self

    def destroy(self) -> None:
        for node in self.nodes:
            for proxy in (node.proxy, node.admin):
                if proxy is not None:
                    proxy.stop()
            pid = node.beam_pid()
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
                    os.kill(pid, signal.SIGKILL)
            for proc in (node.process, node.bridge, node.epmd):
                if proc is not None and proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=10)
        if self.epmd_process is not None:
            self.epmd_process.kill()
            self.epmd_process.wait(timeout=10)
        if self.layout == "netns":
            for ns in [n.netns for n in self.nodes if n.netns] + [self.hub]:
                if ns is None:
                    continue
                # Anything still running in our namespaces (CLI VMs...): kill by PID.
                with contextlib.suppress(ClusterError, subprocess.TimeoutExpired):
                    for pid in _run(["ip", "netns", "pids", ns], timeout=10).split():
                        with contextlib.suppress(ProcessLookupError, ValueError):
                            os.kill(int(pid), signal.SIGKILL)
                with contextlib.suppress(ClusterError, subprocess.TimeoutExpired):
                    _run(["ip", "netns", "del", ns], timeout=10)
                shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)
        shutil.rmtree(self.base, ignore_errors=True)

    # -- faults -----------------------------------------------------------------------

    def kill(self, index: int) -> None:
        """SIGKILL the node's Erlang VM and wait until it is gone."""
        node = self.nodes[index]
        pid = node.beam_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            while alive(pid):
                time.sleep(0.05)
        if node.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.process.pid, signal.SIGKILL)
            node.process.wait(timeout=10)
        node.frozen = False

    def freeze(self, index: int) -> None:
        """SIGSTOP the node: its sockets stay open, nothing answers."""
        pid = self.nodes[index].beam_pid()
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        self.nodes[index].frozen = True

    def thaw(self, index: int) -> None:
        pid = self.nodes[index].beam_pid()
        assert pid is not None
        os.kill(pid, signal.SIGCONT)
        self.nodes[index].frozen = False

    def restart(self, index: int) -> None:
        """Start a killed node again; it rejoins the cluster by itself."""
        node = self.nodes[index]
        (node.base / "beam.pid").unlink(missing_ok=True)
        self._start_node(node)
        self._await_node(node)

    def partition(self, index: int) -> None:
        """Silently drop all traffic between this node and the other two (netns only)."""
        node = self.nodes[index]
        if node.netns is None:
            raise ClusterError("partitions need the netns layout")
        others = ", ".join(n.ip for n in self.nodes if n is not node and n.ip)
        drop_in = f"ip saddr {{ {others} }} drop"
        drop_out = f"ip daddr {{ {others} }} drop"
        script = (
            "table inet leveret {\n"
            f"  chain in {{ type filter hook input priority 0; {drop_in}; }}\n"
            f"  chain out {{ type filter hook output priority 0; {drop_out}; }}\n"
            "}\n"
        )
        rules = self.base / f"partition-{node.letter}.nft"
        rules.write_text(script)
        _run(["ip", "netns", "exec", node.netns, "nft", "-f", str(rules)], timeout=20)

    def heal(self) -> None:
        for node in self.nodes:
            if node.netns is not None:
                with contextlib.suppress(ClusterError):
                    _run(
                        [
                            "ip",
                            "netns",
                            "exec",
                            node.netns,
                            "nft",
                            "delete",
                            "table",
                            "inet",
                            "leveret",
                        ],
                        timeout=20,
                    )

    # -- inspection -------------------------------------------------------------------

    def running(self, index: int) -> bool:
        pid = self.nodes[index].beam_pid()
        return pid is not None and alive(pid)

    def ctl(self, index: int, *args: str, timeout: float = 90, tool: str = "rabbitmqctl") -> str:
        node = self.nodes[index]
        cmd = [str(SBIN / tool), "-n", node.nodename, *args]
        if node.netns is not None:
            cmd = ["ip", "netns", "exec", node.netns, *cmd]
        return _run(cmd, timeout=timeout, env=self._env(node))

    def leader(self, queue: str, via: int | None = None) -> int:
        """Index of the node holding the leader of a quorum queue."""
        via = (
            via
            if via is not None
            else next(n.index for n in self.nodes if self.running(n.index) and not n.frozen)
        )
        out = self.ctl(via, "list_queues", "-q", "name", "leader", "--formatter", "json")
        for row in json.loads(out):
            if row.get("name") == queue:
                for node in self.nodes:
                    if row.get("leader") == node.nodename:
                        return node.index
        raise ClusterError(f"no leader found for {queue}: {out[:500]}")

    def wait_healthy(self, timeout: float = 120) -> None:
        """All three nodes running and clustered again."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                status = json.loads(
                    self.ctl(0, "cluster_status", "--formatter", "json", timeout=30)
                )
                running = set(status.get("running_nodes", []))
                if running == {n.nodename for n in self.nodes} and not status.get("partitions"):
                    return
                last = str(status.get("running_nodes")) + " " + str(status.get("partitions"))
            except (ClusterError, subprocess.TimeoutExpired, ValueError) as exc:
                last = str(exc)
            time.sleep(1)
        raise ClusterError(f"cluster not healthy within {timeout:.0f} s: {last}")

    # -- setting up -------------------------------------------------------------------

    def _prepare_files(self) -> None:
        home = self.base / "home"
        home.mkdir(exist_ok=True)
        cookie = home / ".erlang.cookie"
        cookie.write_text(uuid.uuid4().hex)
        cookie.chmod(0o400)
        (self.base / "rabbitmq-env.conf").write_text("")
        (self.base / "enabled_plugins").write_text("[].\n")
        # RabbitMQ 3.10's at-least-once dead-letter worker does not notice that the
        # leader of the quorum queue it forwards to has moved: its publishes stay
        # unconfirmed until this timeout (default 180 s), one prefetch batch (32
        # messages) per timeout. Measured here: retries sitting in a delay level
        # whose next level's leader died came out 3 and 6 minutes later.
        (self.base / "advanced.config").write_text(
            f"[{{rabbit, [{{dead_letter_worker_publisher_confirm_timeout, "
            f"{self.dlx_confirm_timeout_ms}}}]}}].\n"
        )
        (self.base / "rabbitmq.conf").write_text(
            "loopback_users.guest = true\n"
            "vm_memory_high_watermark.absolute = 600MB\n"
            "cluster_partition_handling = pause_minority\n"
            "log.console = false\n"
            "log.file.level = info\n"
        )

    def _make_namespaces(self) -> None:
        self.hub = f"lv{self.id}h"
        _run(["ip", "netns", "add", self.hub])
        _run(["ip", "-n", self.hub, "link", "set", "lo", "up"])
        _run(["ip", "-n", self.hub, "link", "add", "br0", "type", "bridge"])
        _run(["ip", "-n", self.hub, "link", "set", "br0", "up"])

    def _node(self, index: int) -> Node:
        base = self.base / LETTERS[index]
        (base / "log").mkdir(parents=True, exist_ok=True)
        host = f"lv{self.id}{LETTERS[index]}"
        if self.layout != "netns":
            return Node(
                index, f"lv{self.id}{LETTERS[index]}", "localhost", base, free_port(), free_port()
            )
        assert self.hub is not None
        ns, ip = f"lv{self.id}{index}", f"10.213.0.{index + 1}"
        _run(["ip", "netns", "add", ns])
        _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        _run(
            [
                "ip",
                "-n",
                self.hub,
                "link",
                "add",
                f"n{index}",
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns,
            ]
        )
        _run(["ip", "-n", self.hub, "link", "set", f"n{index}", "master", "br0", "up"])
        _run(["ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0"])
        _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        return Node(index, "rabbit", host, base, 5672, 25672, netns=ns, ip=ip)

    def _write_hosts(self) -> None:
        lines = ["127.0.0.1 localhost"] + [f"{n.ip} {n.host}" for n in self.nodes]
        for node in self.nodes:
            assert node.netns is not None
            directory = Path("/etc/netns") / node.netns
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "hosts").write_text("\n".join(lines) + "\n")

    def _env(self, node: Node) -> dict[str, str]:
        env = {
            **os.environ,
            "HOME": str(self.base / "home"),
            "RABBITMQ_CONF_ENV_FILE": str(self.base / "rabbitmq-env.conf"),
            "RABBITMQ_NODENAME": node.nodename,
            "RABBITMQ_NODE_PORT": str(node.amqp_port),
            "RABBITMQ_DIST_PORT": str(node.dist_port),
            "RABBITMQ_MNESIA_BASE": str(node.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(node.base / "log"),
            "RABBITMQ_PID_FILE": str(node.base / "beam.pid"),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.base / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
        }
        if node.netns is None:
            env.update(
                ERL_EPMD_PORT=str(self.epmd_port),
                RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
                RABBITMQ_CTL_DIST_PORT_MIN=str(node.dist_port + 1),
                RABBITMQ_CTL_DIST_PORT_MAX=str(node.dist_port + 10),
                RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
            )
        else:
            assert node.ip is not None
            octets = node.ip.replace(".", ",")
            env["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"] = (
                f"-kernel inet_dist_use_interface {{{octets}}}"
            )
        return env

    def _start_node(self, node: Node) -> None:
        if node.netns is not None and node.epmd is None:
            if node.index == 0:
                self._write_hosts()
            assert node.ip is not None
            node.epmd = subprocess.Popen(
                ["ip", "netns", "exec", node.netns, _epmd(), "-address", f"{node.ip},127.0.0.1"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            time.sleep(0.3)
        cmd = [str(SBIN / "rabbitmq-server")]
        if node.netns is not None:
            cmd = ["ip", "netns", "exec", node.netns, *cmd]
        with (node.base / "log" / "stdout.log").open("ab") as log:
            node.process = subprocess.Popen(
                cmd,
                env=self._env(node),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def _await_node(self, node: Node, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while node.beam_pid() is None:
            if node.process is not None and node.process.poll() is not None:
                raise ClusterError(f"node {node.letter} exited while starting; see {node.base}/log")
            if time.monotonic() > deadline:
                raise ClusterError(f"node {node.letter} wrote no pid file in {timeout:.0f} s")
            time.sleep(0.2)
        while True:
            try:
                self.ctl(node.index, "await_startup", "--timeout", "60", timeout=90)
                return
            except (ClusterError, subprocess.TimeoutExpired):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def _open_access(self, node: Node) -> None:
        if node.netns is not None:
            sock = self.base / f"{LETTERS[node.index]}.sock"
            node.bridge = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    node.netns,
                    sys.executable,
                    str(BRIDGE),
                    str(sock),
                    "127.0.0.1",
                    "5672",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            deadline = time.monotonic() + 20
            while not sock.exists():
                if time.monotonic() > deadline:
                    raise ClusterError("the bridge into the namespace did not start")
                time.sleep(0.05)
            upstream = Upstream(unix=str(sock))
        else:
            if not port_open("127.0.0.1", node.amqp_port):
                raise ClusterError(f"node {node.letter} does not answer on {node.amqp_port}")
            upstream = Upstream(port=node.amqp_port)
        node.proxy = FaultProxy(upstream, name=f"proxy-{node.letter}").start()
        node.admin = FaultProxy(upstream, name=f"admin-{node.letter}").start()
