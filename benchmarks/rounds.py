"""Round overhead: digits, 4 worker processes, RabbitMQ on loopback.

Overhead is what a round costs beyond the slowest worker's local training: sending the model,
collecting and folding in the replies. Target: median(wall_s - worker_train_s) <= 20 ms.
"""

from __future__ import annotations

import statistics
import uuid

from benchmarks.table import Row
from benchmarks.workers import worker_processes
from fedmq.broker.rabbitmq import RabbitBroker
from fedmq.broker.settings import BrokerSettings
from fedmq.broker.topology import Topology
from fedmq.coordinator.job import TrainingJob
from fedmq.coordinator.metrics import RoundMetrics
from fedmq.coordinator.settings import TrainSettings
from fedmq.protocol.messages import TrainConfig
from fedmq.worker.settings import apply_torch_threads

WORKERS = 4
ROUNDS = 30


def run(url: str) -> list[Row]:
    apply_torch_threads(1)  # as `fedmq train` does: idle OpenMP threads would spin on the shared cores
    topology = Topology(f"bench-{uuid.uuid4().hex[:8]}")
    names = tuple(f"w{i}" for i in range(WORKERS))
    settings = TrainSettings("digits", names, rounds=ROUNDS, config=TrainConfig(lr=0.1), job="bench-rounds")
    rounds: list[RoundMetrics] = []
    with worker_processes(url, topology, "digits", names), RabbitBroker(BrokerSettings(url, topology)) as broker:
        TrainingJob(broker, settings, on_round=rounds.append).run()
        broker.delete_job(settings.job, names)
    measured = rounds[1:]  # round 1 includes the workers' first-task warm-up
    overhead_ms = statistics.median(1000 * (m.wall_s - m.worker_train_s) for m in measured)
    return [
        Row("round overhead (median wall - worker train)", overhead_ms, "ms", "<= 20",
            f"digits, {WORKERS} worker processes, rounds 2-{ROUNDS}"),
        Row("round wall time (median)", 1000 * statistics.median(m.wall_s for m in measured), "ms", ">= 0", ""),
        Row("worker local training (median of slowest)", 1000 * statistics.median(m.worker_train_s for m in measured),
            "ms", ">= 0", f"final accuracy {measured[-1].eval_accuracy:.3f}"),
    ]
