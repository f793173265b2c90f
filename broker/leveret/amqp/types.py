"""The AMQP objects that code above this layer handles, under names of this layer.

Operations such as the dead-letter tools hold a connection, read deliveries and pass
message properties around without speaking AMQP themselves. They name those objects
by these aliases rather than importing aio-pika, aiormq or pamqp, so that this layer
stays the only one that knows which client library is underneath.
"""

from __future__ import annotations

from typing import TypeAlias

from aio_pika.abc import AbstractConnection
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

#: An open connection, as ``leveret.amqp.connection.Connector.get()`` hands it out.
Connection: TypeAlias = AbstractConnection

#: One message as the broker delivered it: ``body``, ``header.properties``, ``delivery``.
Delivery: TypeAlias = DeliveredMessage

#: The basic properties of a message, headers included.
Properties: TypeAlias = Basic.Properties

__all__ = ["Connection", "Delivery", "Properties"]
