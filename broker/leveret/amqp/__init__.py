"""The AMQP layer: the only code that touches aiormq, aio-pika and pamqp.

The task runtime above meets it here:

- ``Connector`` hands out a live connection (``Connection``);
- ``ConfirmPublisher`` publishes with confirms and ``Properties``;
- ``QueueConsumer`` hands each ``Delivery`` to a callback that answers with a
  ``Settle``, and acknowledges only then;
- ``Topology`` declares what the runtime's names need.

A transport that is not RabbitMQ (an in-memory one, for tests) plugs in at these
names: the runtime uses nothing else of the layer.
"""

from __future__ import annotations

from aiormq.exceptions import AMQPChannelError as ChannelError
from aiormq.exceptions import AMQPError
from aiormq.exceptions import ChannelAccessRefused as ChannelAccessRefused

from leveret.amqp.types import Connection, Delivery, Properties

__all__ = [
    "AMQPError",
    "ChannelAccessRefused",
    "ChannelError",
    "Connection",
    "Delivery",
    "Properties",
]
