"""Secure aggregation's cost and quality (issue 12 point 3): per-round time and the coordinator's
bytes in and out, plain FedAvg against SecAgg+, at N = 4, 16 and 64 workers; digits accuracy
after 20 rounds, plain against secure; and the per-worker byte expansion at Bonawitz et al.'s
scale (2^10 users, 2^20 values of 16 bits: they report 1.73x).

digits, IID shards, lr 0.1, batch 16, seed 0; secure runs clip at C = 10 (above any digits update
here, so only the 16-bit quantization separates the two) with the default threshold (a majority)
and neighbours (all others up to 16 workers, 4 log2 N beyond: 24 at N = 64). Workers are
in-process (worker.pool.LocalWorkers: one dispatcher thread serves them all, one task at a
time, so a round's time is the sum of every worker's work plus the coordinator's) on the
memory broker by default, or a `fedmq worker` host process (one connection for all the workers,
as `fedmq worker --id w{0..63}` runs them) on RabbitMQ with --broker amqp://...

Bytes are message bodies on the coordinator's own connection: published (out: the model, stage
requests, announcements) and received (in: train answers, stage replies). Per-round figures are
medians over the rounds after the first (which declares queues and warms up).

    python -m benchmarks.secagg [--workers 4,16,64] [--rounds 6] [--accuracy-rounds 20]
                                [--accuracy-workers 4] [--broker memory://]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table

from benchmarks.table import Row
from benchmarks.workers import delete_topology
from fedmq.broker.base import Delivery
from fedmq.broker.memory import MemoryBroker, MemoryHub
from fedmq.broker.rabbitmq import RabbitBroker
from fedmq.broker.settings import BrokerSettings
from fedmq.broker.topology import Topology
from fedmq.coordinator.job import TrainingJob
from fedmq.coordinator.metrics import RoundMetrics
from fedmq.coordinator.secagg.cost import wire_cost
from fedmq.coordinator.secagg.settings import SecAggSettings
from fedmq.coordinator.settings import TrainSettings
from fedmq.protocol.messages import TrainConfig
from fedmq.protocol.secagg.params import SecAggParams, default_neighbours
from fedmq.worker.pool import LocalWorkers
from fedmq.worker.task import load_task

WORKERS = (4, 16, 64)
ROUNDS = 6  # the first is warm-up
ACCURACY_ROUNDS = 20
ACCURACY_WORKERS = 4
CLIP = 10.0
QUANT_BITS = 16
TARGET_POINTS = 0.5  # secure accuracy within this many points of plain FedAvg's
BONAWITZ = 1.73  # their expansion at 2^10 users, 2^20 16-bit values


class CountingMemory(MemoryBroker):
    """The coordinator's memory-broker connection, counting what it receives."""

    bytes_received = 0

    def receive(self, timeout: float) -> Delivery | None:
        delivery = super().receive(timeout)
        self.bytes_received += delivery.size if delivery is not None else 0
        return delivery


class CountingRabbit(RabbitBroker):
    """The coordinator's RabbitMQ connection, counting what it receives."""

    bytes_received = 0

    def receive(self, timeout: float) -> Delivery | None:
        delivery = super().receive(timeout)
        self.bytes_received += delivery.size if delivery is not None else 0
        return delivery


@dataclass(kw_only=True)
class Run:
    workers: int
    secure: bool
    rounds: list[RoundMetrics] = field(default_factory=list)
    bytes_in: list[int] = field(default_factory=list)  # per round
    bytes_out: list[int] = field(default_factory=list)

    def median(self, values: Sequence[float]) -> float:
        return statistics.median(values[1:] if len(values) > 1 else values)

    @property
    def round_s(self) -> float:
        return self.median([r.wall_s for r in self.rounds])

    @property
    def accuracy(self) -> float:
        return self.rounds[-1].eval_accuracy or 0.0


def _settings(workers: int, secure: bool, rounds: int) -> TrainSettings:
    names = tuple(f"w{i}" for i in range(workers))
    return TrainSettings("digits", names, rounds=rounds, config=TrainConfig(lr=0.1, batch_size=16, seed=0),
                         job=f"bench-secagg-{uuid.uuid4().hex[:6]}", round_timeout_s=1800,
                         wait_for_workers_s=300, clip_norm=CLIP if secure else None,
                         secagg=SecAggSettings(quant_bits=QUANT_BITS, stage_timeout_s=600) if secure else None)


def train(workers: int, secure: bool, rounds: int, url: str) -> Run:
    settings = _settings(workers, secure, rounds)
    run = Run(workers=workers, secure=secure)
    with _coordinator(url, settings.workers) as broker:
        counted = [0, 0]

        def on_round(metrics: RoundMetrics) -> None:
            received, published = broker.bytes_received, broker.bytes_published
            run.bytes_in.append(received - counted[0])
            run.bytes_out.append(published - counted[1])
            counted[:] = [received, published]
            run.rounds.append(metrics)

        TrainingJob(broker, settings, task=load_task("digits"), on_round=on_round).run()
    return run


@contextmanager
def _coordinator(url: str, names: Sequence[str]) -> Iterator[CountingMemory | CountingRabbit]:
    if url.startswith("memory://"):
        hub = MemoryHub()
        memory = CountingMemory(hub)
        with LocalWorkers(hub, load_task("digits"), names), memory:
            yield memory
        return
    topology = Topology(f"bench-secagg-{uuid.uuid4().hex[:8]}")
    host = subprocess.Popen([sys.executable, "-m", "benchmarks.worker_host", "--broker", url, "--prefix",
                             topology.prefix, "--task", "digits", *names])
    try:
        rabbit = CountingRabbit(BrokerSettings(url=url, topology=topology))
        with rabbit:
            yield rabbit
    finally:
        host.terminate()
        host.wait(60)
        delete_topology(url, topology, names)


def bonawitz_expansion(neighbours: int = (1 << 10) - 1) -> float:
    """Our bytes per worker per round over 16-bit values in the clear, at their scale: on their
    complete graph by default, or with SecAgg+'s `neighbours`."""
    params = SecAggParams(num_workers=1 << 10, threshold=(1 << 9) + 1, neighbours=neighbours,
                          quant_bits=16, max_examples=1)
    return wire_cost(num_params=1 << 20, params=params).vs_bits


@dataclass(frozen=True, kw_only=True)
class Results:
    cost: list[tuple[Run, Run]]  # (plain, secure) per N
    accuracy: tuple[Run, Run]
    bonawitz: float  # the complete graph, as they ran it
    sparse: float  # SecAgg+'s default neighbourhood at 2^10 workers (40)
    load: float


def results(workers: Sequence[int] = WORKERS, rounds: int = ROUNDS, accuracy_rounds: int = ACCURACY_ROUNDS,
            accuracy_workers: int = ACCURACY_WORKERS, url: str = "memory://") -> Results:
    load = os.getloadavg()[0]
    cost = [(train(n, False, rounds, url), train(n, True, rounds, url)) for n in workers]
    accuracy = (train(accuracy_workers, False, accuracy_rounds, url),
                train(accuracy_workers, True, accuracy_rounds, url))
    return Results(cost=cost, accuracy=accuracy, bonawitz=bonawitz_expansion(),
                   sparse=bonawitz_expansion(default_neighbours(1 << 10)), load=max(load, os.getloadavg()[0]))


def _kb_in(run: Run) -> float:
    return run.median(run.bytes_in) / 1e3


def _kb_out(run: Run) -> float:
    return run.median(run.bytes_out) / 1e3


def _round_s(run: Run) -> float:
    return run.round_s


COLUMNS: tuple[Callable[[Run], float], ...] = (_round_s, _kb_in, _kb_out)  # each: plain, secure, ratio


def render(found: Results, url: str) -> Table:
    where = "memory broker, in-process workers" if url.startswith("memory://") else "RabbitMQ, one worker host"
    table = Table(title=f"secure aggregation vs plain FedAvg: digits, {where}, C={CLIP:g}, B={QUANT_BITS} "
                        f"(load average {found.load:.1f})")
    for column in ("N", "ring R", "round s plain", "round s secure", "x", "in KB plain", "in KB secure", "x",
                   "out KB plain", "out KB secure", "x"):
        table.add_column(column, justify="right")
    for plain, secure in found.cost:
        ring = secure.rounds[-1].strategy.get("secagg_ring_bits", "-")
        cells = [str(plain.workers), str(ring)]
        for pick in COLUMNS:
            a, b = pick(plain), pick(secure)
            cells += [f"{a:.3g}", f"{b:.3g}", f"{b / a:.2f}"]
        table.add_row(*cells)
    plain, secure = found.accuracy
    table.caption = (f"digits accuracy after {len(plain.rounds)} rounds, N={plain.workers}: plain {plain.accuracy:.4f}, "
                     f"secure {secure.accuracy:.4f} ({100 * (secure.accuracy - plain.accuracy):+.2f} points). "
                     f"Bytes per worker at 2^10 users, 2^20 16-bit values: {found.bonawitz:.3f}x the values in the "
                     f"clear on the complete graph (Bonawitz et al.: {BONAWITZ}x), {found.sparse:.3f}x with "
                     f"K={default_neighbours(1 << 10)} neighbours")
    return table


def run(url: str = "memory://") -> list[Row]:
    """For `python -m benchmarks`: the accuracy gap, and the expansions at N = 16 and at their scale."""
    found = results(workers=(16,), url="memory://")  # the broker does not change the bytes or the accuracy
    plain, secure = found.accuracy
    (p16, s16), = found.cost
    return [Row(f"secagg: digits accuracy gap after {ACCURACY_ROUNDS} rounds, points", 100 * abs(secure.accuracy - plain.accuracy),
                "points", f"<= {TARGET_POINTS}", f"plain {plain.accuracy:.4f}, secure {secure.accuracy:.4f}"),
            Row("secagg: coordinator bytes in, secure / plain, N=16", s16.median(s16.bytes_in) / p16.median(p16.bytes_in),
                "ratio", "<= 2.0", f"round time {s16.round_s / p16.round_s:.2f}x"),
            Row("secagg: bytes per worker vs 16-bit values, 2^10 users, 2^20 values", found.bonawitz, "ratio",
                f"<= {BONAWITZ}", "Bonawitz et al. report 1.73x")]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.secagg")
    parser.add_argument("--workers", default=",".join(map(str, WORKERS)), help="N values, comma-separated")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="rounds per cost run; the first is warm-up")
    parser.add_argument("--accuracy-rounds", type=int, default=ACCURACY_ROUNDS)
    parser.add_argument("--accuracy-workers", type=int, default=ACCURACY_WORKERS)
    parser.add_argument("--broker", default="memory://", help="memory:// (default) or an amqp:// URL")
    args = parser.parse_args()
    found = results(tuple(int(n) for n in args.workers.split(",")), args.rounds, args.accuracy_rounds,
                    args.accuracy_workers, args.broker)
    Console(width=160).print(render(found, args.broker))


if __name__ == "__main__":
    main()
