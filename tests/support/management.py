"""A RabbitMQ with its management HTTP API, found as the suite finds a broker, and
writes to that API for seeding problems (policies, users) the doctor must report.

Order: ``LEVERET_MANAGEMENT_URL`` (for the broker the suite uses); the API on
127.0.0.1:15672 when the suite's broker is the local one on 5672; a throwaway node of
our own with the management plugin, from a local ``rabbitmq-server`` install.
"""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from leveret.ops.discovery import LocalNode, _rabbitmq_sbin, free_port, port_open

HOW_TO_GET_ONE = (
    "No RabbitMQ management API found: set LEVERET_MANAGEMENT_URL=http://guest:guest@"
    "127.0.0.1:15672/ for the broker in RABBITMQ_URL, enable it on the local broker "
    "(`rabbitmq-plugins enable rabbitmq_management`), or install rabbitmq-server so a "
    "throwaway node with the plugin can be started."
)


@dataclass
class WithManagement:
    amqp_url: str
    management_url: str
    node: LocalNode | None = None

    def close(self) -> None:
        if self.node is not None:
            self.node.destroy()
            self.node = None

    def call(self, method: str, path: str, body: Any = None) -> int:
        """``method`` on ``/api/<path>``; the HTTP status (4xx included, not raised)."""
        request = urllib.request.Request(
            self.management_url.rstrip("/") + "/api/" + path,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={
                "Content-Type": "application/json",
                "Authorization": "Basic " + base64.b64encode(b"guest:guest").decode(),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def vhost_path(self, *segments: str) -> str:
        return "/".join(urllib.parse.quote(s, safe="") for s in ("/", *segments))


def find_management(amqp_url: str) -> WithManagement | None:
    """A broker with its management API, in the order the module docstring gives."""
    url = os.environ.get("LEVERET_MANAGEMENT_URL")
    if url:
        return WithManagement(amqp_url, url)
    local = urllib.parse.urlsplit(amqp_url)
    shared = local.hostname in ("localhost", "127.0.0.1") and (local.port or 5672) == 5672
    if shared and port_open("127.0.0.1", 15672):
        return WithManagement(amqp_url, "http://127.0.0.1:15672/")
    if _rabbitmq_sbin() is None:
        return None
    port = free_port()
    config = {
        "management.tcp.port": str(port),
        "management.tcp.ip": "127.0.0.1",
        # Figures refreshed every second rather than every 5, so tests that wait for
        # them wait less; nothing depends on the interval.
        "collect_statistics_interval": "1000",
    }
    node = LocalNode(name="leveret-mgmt", plugins=("rabbitmq_management",), config=config)
    node.start()
    for _ in range(300):  # the plugin starts just after the AMQP listener
        if port_open("127.0.0.1", port):
            break
        time.sleep(0.2)
    return WithManagement(node.url, f"http://127.0.0.1:{port}/", node)
