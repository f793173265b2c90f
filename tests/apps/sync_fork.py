"""A process that sends with ``app.sync``, forks, and sends from both sides.

Run as ``python -m tests.apps.sync_fork``, with LEVERET_URL and LEVERET_NAMESPACE set;
prints one JSON line per process (pid, the connection's local port, the ids it sent) and
never closes the App itself: interpreter exit does. The queue ``forked`` must exist.
"""

from __future__ import annotations

import json
import os
import sys
from urllib.parse import urlsplit

import psutil

from leveret import App, Settings, Task
from tests.support.models import Job

job = Task("sync.forked", Job, queue="forked")


def amqp_ports() -> list[int]:
    """This process's local ports of connections to the broker's port."""
    broker = urlsplit(Settings().urls[0]).port or 5672
    return sorted(
        c.laddr.port
        for c in psutil.Process().net_connections(kind="tcp")
        if c.raddr and c.raddr.port == broker
    )


def report(who: str, app: App, ids: list[str]) -> None:
    producer = app.sync._loop._resource  # this process's own producer (a test-only peek)
    name = producer.connector.name if producer is not None else None
    line = {"who": who, "pid": os.getpid(), "ports": amqp_ports(), "name": name, "ids": ids}
    print(json.dumps(line), flush=True)


def main() -> None:
    app = App(app_id="forker")
    before = [app.sync.send(job, Job(n=0))]  # the parent's loop and connection start here
    pid = os.fork()
    if pid == 0:
        ids = [app.sync.send(job, Job(n=n)) for n in (1, 2)]
        ids += app.sync.send_many(job, [Job(n=3), Job(n=4)])
        report("child", app, ids)
        sys.exit(0)  # a normal exit: atexit closes the child's own connection only
    _, status = os.waitpid(pid, 0)
    after = [app.sync.send(job, Job(n=5))]  # the parent's connection survived the child
    report("parent", app, before + after)
    sys.exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    main()
