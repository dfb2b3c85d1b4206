"""Remote ops: 1,000 small ops ending in one .get(), pipelined against one round trip per op.

One `fedmq worker` process on RabbitMQ; the client runs `x = x + 1` a thousand times on it.
Pipelined, the ops go out in batches as they are issued and only the final `.get()` waits;
blocking, every op is followed by `sync()`, one round trip each. Target: pipelined >= 10x the
blocking rate.
"""

from __future__ import annotations

import statistics
import time
import uuid

import torch

from benchmarks.table import Row
from benchmarks.workers import worker_processes
from fedmq.broker.settings import BrokerSettings
from fedmq.broker.topology import Topology
from fedmq.coordinator import Federation, RemoteTensor, RemoteWorkerHandle

OPS = 1000
REPEATS = 3
WORKER = "bench-remote"


def _loop(worker: RemoteWorkerHandle, ops: int, blocking: bool) -> float:
    """Seconds for `ops` remote additions and the final get."""
    started = time.perf_counter()
    x: RemoteTensor = worker.send(torch.zeros(4))
    for _ in range(ops):
        x = x + 1
        if blocking:
            worker.sync()
    value = x.get()
    seconds = time.perf_counter() - started
    if not torch.equal(value, torch.full((4,), float(ops))):
        raise AssertionError(f"the remote loop computed {value}, not {ops}")
    return seconds


def run(url: str) -> list[Row]:
    topology = Topology(f"bench-{uuid.uuid4().hex[:8]}")
    with worker_processes(url, topology, "toy", [WORKER]), Federation(BrokerSettings(url, topology)) as fed:
        worker = fed.worker(WORKER, wait_s=60)
        _loop(worker, OPS, blocking=False)  # warm-up: torch's first calls, connections, queues
        _loop(worker, 50, blocking=True)
        pipelined = statistics.median(_loop(worker, OPS, blocking=False) for _ in range(REPEATS))
        blocking = statistics.median(_loop(worker, OPS, blocking=True) for _ in range(REPEATS))
    return [
        Row("remote ops, pipelined", OPS / pipelined, "ops/s", ">= 0",
            f"{OPS} x = x + 1 and one get, 1 worker process"),
        Row("remote ops, one round trip each", OPS / blocking, "ops/s", ">= 0", "sync() after every op"),
        Row("remote ops, pipelined / blocking", blocking / pipelined, "x", ">= 10", f"median of {REPEATS}"),
    ]


if __name__ == "__main__":
    from rich.console import Console

    from benchmarks.table import table

    Console().print(table(run("amqp://guest:guest@127.0.0.1:5672/%2F")))
