"""Testing your own tasks: in memory with a virtual clock, or on a real RabbitMQ.

- ``Kit(app)``: the app bound to an in-memory model of RabbitMQ; its worker runs in
  the test (``await kit.run_until_idle()``) and time moves only when the test moves
  it (``await kit.advance(seconds)``). Retries, delays, priorities, time limits, the
  delivery limit and dead letters behave as documented for RabbitMQ.
- ``BrokerKit(app, url)``: the same interface on a real RabbitMQ, in a throwaway
  namespace deleted afterwards.
- A pytest plugin (installed with the package): the fixtures ``leveret_kit``
  (in memory), ``leveret_broker_kit`` (real broker) and ``leveret_harness`` (both: the
  test runs once on each). They test the app your ``leveret_app`` fixture returns.

This module is public; see "Testing your tasks" in the README.
"""

from leveret.testing.harness import Harness
from leveret.testing.kit import Kit, KitError, WorkerKilled
from leveret.testing.memory import Message
from leveret.testing.real import BrokerKit
from leveret.testing.record import Rejection, Run, Sent

__all__ = [
    "BrokerKit",
    "Harness",
    "Kit",
    "KitError",
    "Message",
    "Rejection",
    "Run",
    "Sent",
    "WorkerKilled",
]
