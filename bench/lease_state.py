"""What recording a fired slot costs: one state write on the scheduler's lease queue.

A write is what the leader does after each slot: publish the state with a confirm,
receive it back (it is the queue's active consumer) and acknowledge the one before.
Run on the local broker, classic and quorum lease queues, 300 writes each:

    .venv/bin/python -m bench.lease_state
"""

from __future__ import annotations

import asyncio
import time
import uuid

from leveret import Settings
from leveret.amqp.connection import Connector
from leveret.amqp.lease import LeaseChannel
from leveret.amqp.types import Delivery

BODY = b'{"through":{"a":"2027-01-01T00:00:00+00:00","b":"2027-01-01T00:00:05+00:00"}}'


async def writes(queue_type: str, count: int = 300) -> list[float]:
    connector = Connector(Settings())
    connection = await connector.get()
    queue = f"bench.{uuid.uuid4().hex[:8]}.lease"
    lease = await LeaseChannel.open(connection, queue, queue_type=queue_type)
    inbox: asyncio.Queue[Delivery] = asyncio.Queue()
    await lease.consume(inbox.put)
    held: Delivery | None = None
    took = []
    try:
        for _ in range(count):
            started = time.perf_counter()
            await lease.publish(BODY, within=5)
            delivered = await inbox.get()
            if held is not None:
                await lease.ack(held)
            held = delivered
            took.append(time.perf_counter() - started)
    finally:
        channel = await connection.channel()
        await channel.queue_delete(queue)
        await lease.close()
        await connector.close()
    return sorted(took)


async def main() -> None:
    for queue_type in ("classic", "quorum"):
        took = await writes(queue_type)
        p50, p99 = took[len(took) // 2], took[int(len(took) * 0.99)]
        print(f"{queue_type:8} state write p50 {p50 * 1000:.2f} ms  p99 {p99 * 1000:.2f} ms")


if __name__ == "__main__":
    asyncio.run(main())
