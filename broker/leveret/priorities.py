"""Whether a queue honours message priorities, and one loud warning where it does not.

Classic queues (``x-max-priority``) run higher priorities first on every RabbitMQ
version. A quorum queue does not: 3.x ignores ``priority`` on it altogether, and 4.x
serves two classes (5 and up, and the rest) about 2:1, not strictly in order. A
quorum queue with ``priority_bands`` is one quorum queue per band, drained highest
band first by the worker, which is strict on every version.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable

from leveret.amqp.topology import QueueSpec
from leveret.settings import QueueType, Settings

log = logging.getLogger(__name__)


def default_bands(settings: Settings, queue_type: QueueType) -> tuple[int, ...]:
    """The bands a queue has unless it was given its own: quorum queues take
    ``LEVERET_PRIORITY_BANDS``, so every process of a deployment agrees on them."""
    return tuple(settings.priority_bands) if queue_type == "quorum" else ()


class PriorityIgnored(UserWarning):
    """Tasks with a priority go to a queue that will not run them in priority order."""


def unhonoured(spec: QueueSpec, priorities: Iterable[int]) -> str | None:
    """Why ``spec`` cannot honour these priorities, with the fix; None if it can."""
    used = sorted({p for p in priorities if p > 0})
    if not used or spec.strict_priorities:
        return None
    return (
        f"queue {spec.name!r} is a quorum queue without priority bands, but tasks on it "
        f"use priorities {used}: RabbitMQ 3.x ignores message priorities on quorum queues, "
        "and 4.x only serves priorities 5 and up about twice as often as the rest, not "
        f"first. For strict priorities give it bands, e.g. app.queue({spec.name!r}, "
        "type='quorum', priority_bands=(5,)), or make it a classic queue; both are new "
        "queues (README: 'Changing queue arguments')."
    )


class PriorityWatch:
    """Says once per queue and process that a queue ignores the priorities it is given."""

    def __init__(self) -> None:
        self._warned: set[str] = set()

    def check(self, spec: QueueSpec, priorities: Iterable[int]) -> None:
        if spec.name in self._warned:
            return
        problem = unhonoured(spec, priorities)
        if problem is None:
            return
        self._warned.add(spec.name)
        log.warning("%s", problem)
        warnings.warn(problem, PriorityIgnored, stacklevel=3)
