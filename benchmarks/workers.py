"""Worker subprocesses for the benchmarks, and cleanup of what they declared."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pika

from fedmq.broker.topology import Topology
from fedmq.coordinator import processes


@contextmanager
def worker_processes(url: str, topology: Topology, task: str, names: Sequence[str],
                     threads: int = 1) -> Iterator[None]:
    """`fedmq worker` subprocesses, one per name, each with shard i/n; stopped and cleaned up after."""
    try:
        with processes.worker_processes(names, task, "--broker", url, "--prefix", topology.prefix,
                                        "--threads", str(threads), "--log-level", "warning"):
            yield
    finally:
        delete_topology(url, topology, names)


def delete_topology(url: str, topology: Topology, workers: Sequence[str]) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    for queue in [topology.task_queue(w) for w in workers] + [topology.dead_letter_queue]:
        channel.queue_delete(queue)
    for exchange in (topology.task_exchange, topology.reply_exchange, topology.dead_letter_exchange):
        channel.exchange_delete(exchange)
    connection.close()
