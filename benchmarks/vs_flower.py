"""fedmq against Flower in one invocation: the same digits workload, median seconds per round.

Flower runs from its own venv through the harness in ../shared/peers/flower (README there;
`setup.sh` builds /tmp/flwr-venv): `bench/run_grpc_legacy.py` (the legacy gRPC runtime, N
long-lived client processes) against fedmq over RabbitMQ with N `fedmq worker` processes, and
`bench/run_sim.py` (the Ray simulation) against fedmq's in-process simulation (the memory broker,
worker.pool.LocalWorkers). Workload: digits MLP 64-64-10, E=1, B=32, lr 0.05, all N workers per
round. Medians cover rounds 2..R on both sides (round 1 carries start-up). Targets (issue 10):
fedmq / Flower legacy gRPC <= 0.7 at N=4 and <= 0.5 at N=16; the simulation faster than Flower's
and within 2x of the plain sequential PyTorch loop (`bench/run_plain.py`: the same training with
no framework at all) at N=16; fedmq's overhead per round over RabbitMQ (wall time minus the
slowest worker's local training) <= 10 ms at N=16 and <= 30 ms at N=64, the 64 as logical
workers of one `fedmq worker --id w{0..63}` process (worker.host). The load average is printed:
on a shared machine the figures are indicative only.

    python -m benchmarks.vs_flower [--rounds R] [--grpc 4,16] [--sim 16,100] [--hosted 64]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from benchmarks.table import Row, table
from benchmarks.workers import delete_topology, worker_processes
from fedmq.broker.memory import MemoryBroker, MemoryHub
from fedmq.broker.rabbitmq import RabbitBroker
from fedmq.broker.settings import BrokerSettings
from fedmq.broker.topology import Topology
from fedmq.coordinator import processes
from fedmq.coordinator.job import TrainingJob
from fedmq.coordinator.metrics import RoundMetrics
from fedmq.coordinator.settings import TrainSettings
from fedmq.protocol.messages import TrainConfig
from fedmq.worker.pool import LocalWorkers
from fedmq.worker.settings import ShardSpec, apply_torch_threads
from fedmq.worker.task import load_task

FLOWER = Path(__file__).resolve().parents[2] / "shared" / "peers" / "flower"
FLOWER_PYTHON = Path(os.environ.get("FLWR_VENV", "/tmp/flwr-venv")) / "bin" / "python"
CONFIG = TrainConfig(lr=0.05, epochs=1, batch_size=32)
ROUNDS = 10
FLOWER_TIMEOUT_S = 900
_ROUND = re.compile(r"round\s+(\d+)/\d+\s+round_s=\s*([0-9.]+)")


@dataclass(frozen=True, kw_only=True)
class Rounds:
    """Medians over rounds 2..R (s): the round, and its overhead beyond the slowest worker's training."""

    wall_s: float
    overhead_s: float


def fedmq_rabbitmq(url: str, workers: int, rounds: int, *, hosted: bool = False,
                   on_round: Callable[[RoundMetrics], None] | None = None) -> Rounds:
    """Rounds with `workers` `fedmq worker` processes over RabbitMQ, or with `hosted` one process
    hosting them all as logical workers (worker.host); `on_round` sees each round's metrics."""
    # One torch thread, as `fedmq train` sets: with the default two, the coordinator's evaluation
    # left OpenMP threads spinning after each round (16 instead of 4 ms of CPU a round at N=1).
    apply_torch_threads(1)
    topology = Topology(f"bench-{uuid.uuid4().hex[:8]}")
    names = tuple(f"w{i}" for i in range(workers))
    settings = TrainSettings("digits", names, rounds=rounds, config=CONFIG, job="bench-vs-flower",
                             wait_for_workers_s=300)
    measured: list[RoundMetrics] = []

    def record(metrics: RoundMetrics) -> None:
        measured.append(metrics)
        if on_round is not None:
            on_round(metrics)

    with _workers(url, topology, names, hosted), RabbitBroker(BrokerSettings(url, topology)) as broker:
        TrainingJob(broker, settings, on_round=record).run()
        broker.delete_job(settings.job, names)
    return Rounds(wall_s=statistics.median(m.wall_s for m in measured[1:]),
                  overhead_s=statistics.median(m.wall_s - m.worker_train_s for m in measured[1:]))


@contextmanager
def _workers(url: str, topology: Topology, names: tuple[str, ...], hosted: bool) -> Iterator[None]:
    if not hosted:
        with worker_processes(url, topology, "digits", names):
            yield
        return
    host = processes.start(["worker", "--id", f"w{{0..{len(names) - 1}}}", "--shard", "{i}/{n}", "--task", "digits",
                            "--broker", url, "--prefix", topology.prefix, "--log-level", "warning"])
    try:
        yield
    finally:
        processes.stop([host])
        delete_topology(url, topology, names)


def training_in_turn(workers: int, rounds: int) -> float:
    """Median seconds of the workers' local training alone, one shard after another, with no
    framework around it: the least a single process hosting them all can take per round."""
    apply_torch_threads(1)
    task = load_task("digits")
    shards = [task.load_shard(ShardSpec(i, workers)) for i in range(workers)]
    models = [task.build_model() for _ in range(workers)]
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        for model, shard in zip(models, shards, strict=True):
            task.train(model, shard, CONFIG)
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


def fedmq_simulation(workers: int, rounds: int) -> float:
    """Median round (s, rounds 2..R) with `workers` in-process workers on the memory broker."""
    apply_torch_threads(1)
    task = load_task("digits")
    names = tuple(f"w{i}" for i in range(workers))
    settings = TrainSettings("digits", names, rounds=rounds, config=CONFIG, job="bench-vs-flower")
    hub = MemoryHub()
    measured: list[RoundMetrics] = []
    with LocalWorkers(hub, task, names, dispatchers=0), MemoryBroker(hub) as broker:
        TrainingJob(broker, settings, task=task, on_round=measured.append).run()
    return statistics.median(m.wall_s for m in measured[1:])


def flower(script: str, workers: int, rounds: int, *extra: str) -> float:
    """Median round (s, rounds 2..R) of Flower's `bench/SCRIPT`, parsed from its round lines."""
    if not FLOWER_PYTHON.exists():
        raise FileNotFoundError(f"{FLOWER_PYTHON} is missing: run {FLOWER / 'setup.sh'} first")
    done = subprocess.run([str(FLOWER_PYTHON), script, "-n", str(workers), "-r", str(rounds), *extra],
                          cwd=FLOWER / "bench", capture_output=True, text=True, timeout=FLOWER_TIMEOUT_S)
    times = {int(k): float(s) for k, s in _ROUND.findall(done.stdout)}
    if done.returncode != 0 or len(times) < 2:
        raise RuntimeError(f"Flower's {script} -n {workers} failed (exit {done.returncode}): "
                           f"{done.stderr[-1500:]}")
    return statistics.median(s for k, s in times.items() if k >= 2)


def _pair(what: str, ours: float, theirs: float, target: str, note: str) -> list[Row]:
    return [Row(f"{what}: fedmq median round", 1000 * ours, "ms", ">= 0", note),
            Row(f"{what}: Flower median round", 1000 * theirs, "ms", ">= 0", note),
            Row(f"{what}: fedmq / Flower", ours / theirs, "x", target, note)]


OVERHEAD_TARGET_MS = {16: 10.0, 64: 30.0}


def run(url: str, grpc: tuple[int, ...] = (4, 16), sim: tuple[int, ...] = (16, 100),
        rounds: int = ROUNDS, hosted: tuple[int, ...] = (64,)) -> list[Row]:
    rows: list[Row] = []
    # The simulation first: the plain-loop ratio is the most sensitive to what ran just before
    # (the 16 worker processes and RabbitMQ's clean-up of their queues).
    for n in sim:
        load = os.getloadavg()[0]
        ours_s, theirs = fedmq_simulation(n, rounds), flower("run_sim.py", n, rounds)
        plain = flower("run_plain.py", n, rounds) if n <= 16 else None
        note = f"R={rounds}, load avg {max(load, os.getloadavg()[0]):.1f} on {os.cpu_count()} cores"
        rows += _pair(f"N={n} simulation (memory vs Ray)", ours_s, theirs, "<= 1", note)
        if plain is not None:
            rows += [Row(f"N={n} plain sequential PyTorch loop: median round", 1000 * plain, "ms", ">= 0", note),
                     Row(f"N={n} simulation / plain loop", ours_s / plain, "x", "<= 2", note)]
    for n in grpc:
        load = os.getloadavg()[0]
        ours, theirs = fedmq_rabbitmq(url, n, rounds), flower("run_grpc_legacy.py", n, rounds)
        note = f"R={rounds}, load avg {max(load, os.getloadavg()[0]):.1f} on {os.cpu_count()} cores"
        rows += _pair(f"N={n} RabbitMQ vs legacy gRPC", ours.wall_s, theirs, "<= 0.7" if n <= 4 else "<= 0.5", note)
        rows.append(_overhead(f"N={n} RabbitMQ, {n} processes", n, ours, note))
    for n in hosted:
        load = os.getloadavg()[0]
        ours, alone = fedmq_rabbitmq(url, n, rounds, hosted=True), training_in_turn(n, rounds)
        note = f"R={rounds}, load avg {max(load, os.getloadavg()[0]):.1f} on {os.cpu_count()} cores"
        rows += [Row(f"N={n} RabbitMQ, one host process: median round", 1000 * ours.wall_s, "ms", ">= 0", note),
                 _overhead(f"N={n} RabbitMQ, one host process", n, ours, note),
                 Row(f"N={n} the same training alone, one shard after another", 1000 * alone, "ms", ">= 0",
                     "the host's floor: it trains its workers in turn"),
                 Row(f"N={n} one host process: round - training alone", 1000 * (ours.wall_s - alone), "ms",
                     ">= 0", note)]
    return rows


def _overhead(what: str, n: int, rounds: Rounds, note: str) -> Row:
    target = OVERHEAD_TARGET_MS.get(n)
    return Row(f"{what}: overhead (wall - slowest training)", 1000 * rounds.overhead_s, "ms",
               f"<= {target:g}" if target is not None else ">= 0", note)


def worker_counts(text: str) -> tuple[int, ...]:
    """A command line's comma-separated worker counts ('' for none)."""
    return tuple(int(n) for n in text.split(",") if n)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.vs_flower")
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--grpc", default="4,16", help="worker counts against legacy gRPC ('' for none)")
    parser.add_argument("--sim", default="16,100", help="worker counts against the simulation ('' for none)")
    parser.add_argument("--hosted", default="64", help="worker counts hosted by one process ('' for none)")
    args = parser.parse_args()
    counts = [worker_counts(text) for text in (args.grpc, args.sim, args.hosted)]
    from rich.console import Console

    Console().print(table(run(args.broker, counts[0], counts[1], args.rounds, counts[2])))


if __name__ == "__main__":
    main()
