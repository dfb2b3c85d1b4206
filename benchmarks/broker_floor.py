"""The broker's own floor: what one small message costs RabbitMQ here, with no fedmq around it.

Raw pika on one connection, a 20 KB body (a digits update): the median time to publish one
message and have its confirm back, persistent into a durable queue (fedmq's guarantee: the
broker wrote it to disk) and transient into a non-durable one; and the time for a consumer to
get a message that is already queued and ack it. A round over RabbitMQ pays the first twice per
worker on its critical path (the task's publish, the reply's publish), so these figures bound
from below what any rounds benchmark here can show. Where RabbitMQ runs on this machine, the
CPU it spends per message is printed too: on 2 cores, that is the part of a round's CPU that no
change to fedmq can take away, and persistence is most of it.

    python -m benchmarks.broker_floor [--broker URL]
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable

import pika
from rich.console import Console

from benchmarks.cpu_floor import cpu_seconds, pids_with
from benchmarks.table import Row, table

BODY = b"x" * 20_000
REPEATS = 300


def run(url: str) -> list[Row]:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        rows = []
        for durable in (True, False):
            (publish, publish_cpu), (take, take_cpu) = _measure(channel, durable)
            kind = "persistent, durable queue" if durable else "transient"
            rows += [Row(f"RabbitMQ publish + confirm, 20 KB, {kind}", 1000 * publish, "ms", ">= 0",
                         f"raw pika, median of {REPEATS}; {_cpu_note(publish_cpu)}"),
                     Row(f"RabbitMQ get + ack of a queued message, {kind}", 1000 * take, "ms", ">= 0",
                         f"raw pika, median of {REPEATS}; {_cpu_note(take_cpu)}")]
        return rows
    finally:
        connection.close()


Measured = tuple[float, float | None]  # median seconds of a step; RabbitMQ's mean CPU seconds for it


def _measure(channel: pika.adapters.blocking_connection.BlockingChannel,
             durable: bool) -> tuple[Measured, Measured]:
    """(publish + confirm, get + ack) on a fresh queue, deleted after."""
    queue = f"bench-floor-{uuid.uuid4().hex[:8]}"
    channel.queue_declare(queue, durable=durable)
    properties = pika.BasicProperties(delivery_mode=2 if durable else 1)
    try:
        publish = _median(lambda: channel.basic_publish("", queue, BODY, properties, mandatory=True))
        take = _median(lambda: _get_and_ack(channel, queue))
    finally:
        channel.queue_delete(queue)
    return publish, take


def _get_and_ack(channel: pika.adapters.blocking_connection.BlockingChannel, queue: str) -> None:
    method, _properties, _body = channel.basic_get(queue)
    if method is None:
        raise RuntimeError(f"{queue} was empty: the publishes above did not land")
    channel.basic_ack(method.delivery_tag)


def _median(step: Callable[[], object]) -> Measured:
    broker = pids_with(b"beam.smp")  # RabbitMQ's Erlang VM, when it runs here
    cpu_before = cpu_seconds(broker)
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times), (cpu_seconds(broker) - cpu_before) / REPEATS if broker else None


def _cpu_note(cpu_s: float | None) -> str:
    return "RabbitMQ not on this machine" if cpu_s is None else f"RabbitMQ CPU {1000 * cpu_s:.2f} ms each"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.broker_floor")
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    Console().print(table(run(parser.parse_args().broker)))


if __name__ == "__main__":
    main()
