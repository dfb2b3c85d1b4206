"""Where a round's time goes: digits rounds at N=4 and N=16, on the memory broker and RabbitMQ.

Coordinator and workers run in this process (the workers as logical workers of one dispatcher,
worker.host), each thread under its own cProfile. The printed breakdown is the inclusive time
(ms per round) of the entry points at our module boundaries, per side; entries nest (publish
includes the confirm wait, handle includes everything the worker does), so columns do not sum.
torch's one-off start-up is paid before profiling; "train" on RabbitMQ runs on a helper thread
(run_beside_io), so its row there is the connection side's wait for it.

    python -m benchmarks.profile_round [--broker URL] [--rounds R] [--workers 4,16]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from benchmarks.table import Row
from benchmarks.workers import delete_topology
from fedmq.broker.base import Broker
from fedmq.broker.memory import MemoryBroker, MemoryHub
from fedmq.broker.settings import BrokerSettings, open_broker
from fedmq.broker.topology import Topology
from fedmq.coordinator.job import TrainingJob
from fedmq.coordinator.metrics import RoundMetrics
from fedmq.coordinator.settings import TrainSettings
from fedmq.protocol.messages import TrainConfig
from fedmq.worker.host import dispatch
from fedmq.worker.service import WorkerService
from fedmq.worker.settings import ShardSpec, WorkerSettings, apply_torch_threads
from fedmq.worker.task import load_task

ROUNDS = 10
# (side, label, file path suffix, function name): inclusive time of each.
ENTRIES = [
    ("coordinator", "encode", "protocol/messages.py", "encode_message"),
    ("coordinator", "publish tasks (incl. confirm waits)", "broker/", "publish_task"),
    ("coordinator", "publish shared task", "broker/", "publish_shared_task"),
    ("coordinator", "pika basic_publish (confirm wait)", "pika/adapters/blocking_connection.py", "basic_publish"),
    ("coordinator", "receive (incl. waiting for replies)", "broker/", "receive"),
    ("coordinator", "read replies (decode)", "coordinator/rounds.py", "_read"),
    ("coordinator", "fold", "coordinator/aggregation.py", "fold_in"),
    ("coordinator", "fold (streamed)", "coordinator/aggregation.py", "fold_streamed"),
    ("coordinator", "evaluation", "coordinator/evaluation.py", "evaluate"),
    ("worker", "receive (incl. idle)", "broker/", "receive"),
    ("worker", "handle (all of a task)", "worker/service.py", "handle"),
    ("worker", "decode", "worker/service.py", "_decode"),
    ("worker", "load weights", "worker/service.py", "_load"),
    ("worker", "train", "worker/service.py", "work"),
    ("worker", "train, beside the connection's I/O (RabbitMQ)", "broker/rabbit_connection.py", "run_beside"),
    ("worker", "delta", "worker/service.py", "_delta"),
    ("worker", "encode", "protocol/messages.py", "encode_message"),
    ("worker", "publish reply (incl. confirm wait)", "broker/", "publish_reply"),
    ("worker", "ack", "broker/", "ack"),
]


@dataclass(frozen=True, kw_only=True)
class Profile:
    broker: str
    workers: int
    rounds: list[RoundMetrics]
    ms: dict[tuple[str, str], float]  # (side, label) -> ms per round

    @property
    def wall_ms(self) -> float:
        return 1000 * statistics.median(m.wall_s for m in self.rounds[1:])


def profile(url: str, workers: int, rounds: int = ROUNDS) -> Profile:
    """Run `rounds` digits rounds with `workers` logical workers and profile both sides."""
    apply_torch_threads(1)
    task = load_task("digits")
    names = tuple(f"p{i}" for i in range(workers))
    topology = Topology(f"bench-{uuid.uuid4().hex[:8]}")
    hub = MemoryHub(topology)
    settings = BrokerSettings(url, topology)

    def connect() -> Broker:
        return MemoryBroker(hub) if url.startswith("memory:") else open_broker(settings)

    worker_profile = cProfile.Profile()
    stop, ready = threading.Event(), threading.Event()

    def serve() -> None:
        broker = connect()
        services = [WorkerService(broker, WorkerSettings(name, "digits", ShardSpec(i, workers)), task=task)
                    for i, name in enumerate(names)]
        for name in names:
            broker.declare_worker(name)
        # One-off start-up (torch's lazy initialisation) is paid here, outside the profile.
        task.train(task.build_model(), task.load_shard(ShardSpec(0, workers)), TrainConfig(lr=0.1))
        ready.set()
        worker_profile.enable()  # this thread only
        try:
            dispatch(broker, services, stop, poll_s=0.1)
        finally:
            worker_profile.disable()
            broker.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(120)
    measured: list[RoundMetrics] = []
    train = TrainSettings("digits", names, rounds=rounds, config=TrainConfig(lr=0.1), job="profile")
    coordinator_profile = cProfile.Profile()
    try:
        with connect() as broker:
            job = TrainingJob(broker, train, task=task, on_round=measured.append)
            coordinator_profile.runcall(job.run)
            broker.delete_job(train.job, names)
    finally:
        stop.set()
        thread.join(60)
        if not url.startswith("memory:"):
            delete_topology(url, topology, names)
    sides = {"coordinator": coordinator_profile, "worker": worker_profile}
    ms = {(side, label): 1000 * _cumulative(sides[side], path, name) / rounds
          for side, label, path, name in ENTRIES}
    return Profile(broker="memory" if url.startswith("memory:") else "rabbitmq", workers=workers,
                   rounds=measured, ms=ms)


def _cumulative(profiler: cProfile.Profile, path: str, name: str) -> float:
    """Seconds inside functions `name` of files containing `path`, outermost calls only."""
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    total = 0.0
    for (filename, _line, function), (_cc, _nc, _tt, cumulative, _callers) in stats.items():
        if function == name and path in filename.replace("\\", "/"):
            total += cumulative
    return float(total)


def report(profiles: list[Profile]) -> str:
    """The breakdown as a text table: one column per (broker, N)."""
    heads = [f"{p.broker} N={p.workers}" for p in profiles]
    width = max(len(label) for _, label, _, _ in ENTRIES) + 14
    lines = ["ms per round".ljust(width) + "".join(h.rjust(18) for h in heads)]
    lines.append("round wall (median, rounds 2+)".ljust(width) + "".join(f"{p.wall_ms:18.1f}" for p in profiles))
    lines.append("slowest worker's training".ljust(width) + "".join(
        f"{1000 * statistics.median(m.worker_train_s for m in p.rounds[1:]):18.1f}" for p in profiles))
    for side, label, _, _ in ENTRIES:
        values = [p.ms[(side, label)] for p in profiles]
        if any(v > 0 for v in values):
            lines.append(f"{side}: {label}".ljust(width) + "".join(f"{v:18.1f}" for v in values))
    return "\n".join(lines)


def run(url: str, counts: tuple[int, ...] = (4, 16), rounds: int = ROUNDS,
        out: Callable[[str], None] = print) -> list[Row]:
    profiles = [profile(broker, n, rounds) for broker in ("memory://", url) for n in counts]
    out(report(profiles))
    return [Row(f"profiled round wall, {p.broker}, N={p.workers}", p.wall_ms, "ms", ">= 0",
                "in-process workers under cProfile (slower than unprofiled)") for p in profiles]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_round")
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--workers", default="4,16", help="comma-separated worker counts")
    args = parser.parse_args()
    run(args.broker, tuple(int(n) for n in args.workers.split(",")), args.rounds)


if __name__ == "__main__":
    main()
