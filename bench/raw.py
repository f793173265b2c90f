"""The reference: a minimal aio-pika program with the engine's guarantees.

ConfirmPublisher confirms on, ``mandatory``, persistent messages; the consumer acks each
message after its handler returned, with prefetch = concurrency; a failed task is
republished (confirmed) to the same delay level the engine would use, then acked. It
consumes the very queues the engine declares, so the broker does the same work for
both. It imports nothing of the engine, so its RSS is aio-pika's own. Run as a worker:
``python -m bench.raw QUEUE_NAME --prefetch 256 --url URL --namespace NS``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import uuid
from collections.abc import Sequence

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage

from bench.probe import probe

PERSISTENT = aio_pika.DeliveryMode.PERSISTENT
RETRY_UNITS = 1  # 10 ms, one pass through delay level 0, as bench.apps.RETRY_ONCE
LEVELS = 32


def message(name: str, body: bytes, headers: dict[str, int] | None = None) -> aio_pika.Message:
    return aio_pika.Message(
        body,
        content_type="application/json",
        delivery_mode=PERSISTENT,
        message_id=uuid.uuid4().hex,
        type=name,
        headers=dict(headers or {}),
    )


async def publish_one_by_one(exchange: AbstractExchange, key: str, bodies: Sequence[bytes]) -> None:
    """Each publish waits for its confirm before the next."""
    for body in bodies:
        await exchange.publish(message("bench.noop", body), key, mandatory=True)


async def publish_pipelined(
    exchange: AbstractExchange, key: str, bodies: Sequence[bytes], window: int = 1000
) -> None:
    """Up to ``window`` confirms in flight."""
    for start in range(0, len(bodies), window):
        await asyncio.gather(
            *(
                exchange.publish(message("bench.noop", b), key, mandatory=True)
                for b in bodies[start : start + window]
            )
        )


async def cold_burst(url: str, exchange: str, key: str, bodies: Sequence[bytes]) -> None:
    """From nothing: connect, open a confirm channel, publish with every confirm in flight."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        target = await channel.get_exchange(exchange, ensure=False)
        await publish_pipelined(target, key, bodies, window=len(bodies))
    finally:
        await connection.close()


async def work(url: str, queue: str, prefetch: int, namespace: str) -> None:
    connection = await aio_pika.connect(url)
    consume = await connection.channel(publisher_confirms=False)
    await consume.set_qos(prefetch_count=prefetch)
    confirms = await connection.channel(publisher_confirms=True)
    retry_exchange = await confirms.get_exchange(f"{namespace}.delay.0", ensure=False)
    logical = queue.rsplit(".", 1)[-1]
    # The delay ladder's routing key: the delay's bits, then the queue (leveret.delays).
    retry_key = ".".join(format(RETRY_UNITS, f"0{LEVELS}b")) + "." + logical

    async def on_message(msg: AbstractIncomingMessage) -> None:
        job = json.loads(msg.body)
        if probe.gated:
            await probe.wait_gate()
        started = probe.hit(msg.message_id or "")
        if msg.type in ("bench.stamped", "bench.delayed"):
            probe.samples.append(started - job.get("at", 0.0))
        elif msg.type == "bench.flaky" and msg.headers.get("leveret-attempt", 1) == 1:
            copy = message("bench.flaky", msg.body, {"leveret-attempt": 2})
            copy.message_id = msg.message_id
            await retry_exchange.publish(copy, retry_key, mandatory=True)
        await msg.ack()

    q = await consume.get_queue(queue, ensure=False)
    await q.consume(on_message)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.raw")
    parser.add_argument("queue", help="the AMQP name of the queue to consume")
    parser.add_argument("--prefetch", type=int, default=32)
    parser.add_argument("--url", required=True)
    parser.add_argument("--namespace", required=True)
    args = parser.parse_args()
    asyncio.run(work(args.url, args.queue, args.prefetch, args.namespace))


if __name__ == "__main__":
    main()
