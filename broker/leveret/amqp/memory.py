"""What an in-memory transport needs of this layer: messages as the wire leaves them.

The testing kit (``leveret.testing``) models RabbitMQ in memory. For the runtime to
see there exactly what it sees from a broker, each message's properties go through
the AMQP codec and back (a float header stays a 32- or 64-bit float, bytes come back
as a bytearray), and each delivery is built the way aiormq builds one.
"""

from __future__ import annotations

from typing import cast

from pamqp.commands import Basic
from pamqp.header import ContentHeader

from leveret.amqp.types import Connection, Delivery, Properties

#: What an in-memory connector hands out: the runtime only passes it back to its transport.
NO_CONNECTION = cast(Connection, None)


def through_wire(properties: Properties, body_size: int) -> Properties:
    """The properties as a consumer decodes them after they crossed the wire."""
    frame = ContentHeader(0, body_size, properties).marshal()
    decoded = ContentHeader()
    decoded.unmarshal(frame)
    return decoded.properties


def delivery(
    body: bytes,
    properties: Properties,
    *,
    exchange: str,
    routing_key: str,
    redelivered: bool,
    tag: int,
) -> Delivery:
    """A delivery as a consumer receives it (with no channel behind it)."""
    deliver = Basic.Deliver(
        consumer_tag="leveret-memory",
        delivery_tag=tag,
        redelivered=redelivered,
        exchange=exchange,
        routing_key=routing_key,
    )
    header = ContentHeader(0, len(body), properties)
    return Delivery(delivery=deliver, header=header, body=body, channel=cast("object", None))  # type: ignore[arg-type]
