"""The JSON line of one asynchronous aggregation, and what the driver gathers for it."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from fedmq.broker.base import Delivery
from fedmq.coordinator.aggregation import weighted_mean
from fedmq.coordinator.async_state import Outstanding
from fedmq.coordinator.evaluation import Evaluation
from fedmq.coordinator.metrics import RoundMetrics
from fedmq.coordinator.strategy import StrategyMetrics


@dataclass(frozen=True)
class VersionMetrics(RoundMetrics):
    """One aggregation's JSON line. `round` is the new version, so every reader of round lines
    (MetricsLog's resume, `fedmq plot`, the console table) reads version lines too; `replies` is
    the updates it used and `wall_s` the seconds since the previous version."""

    version: int = 0
    seconds: float = 0.0  # wall-clock seconds since the run began (across restarts), evaluation included
    updates: int = 0  # updates applied since the run began
    staleness_mean: float = 0.0
    staleness_max: int = 0
    stale: int = 0  # updates dropped for --max-staleness since the previous version
    timed_out: int = 0  # tasks that passed --round-timeout unanswered since the previous version
    mode: str = "async"



@dataclass
class Buffered:
    """An accepted update, folded into the strategy, waiting for its aggregation."""

    delivery: Delivery  # unacknowledged until the aggregation that uses it is checkpointed
    task: Outstanding
    staleness: int
    num_examples: int
    metrics: dict[str, float]


@dataclass
class Since:
    """What happened since the previous version, for its JSON line."""

    started: float = field(default_factory=time.monotonic)
    dropped: int = 0
    rejected: int = 0
    dead_lettered: int = 0
    timed_out: int = 0
    failures: dict[str, str] = field(default_factory=dict)


def version_line(*, job: str, version: int, updates: int, buffer: Sequence[Buffered], since: Since, wall_s: float,
                 seconds: float, evaluation: Evaluation, stale: int, strategy: StrategyMetrics) -> VersionMetrics:
    stalenesses = [b.staleness for b in buffer]
    return VersionMetrics(
        job=job, round=version, wall_s=wall_s,
        worker_train_s=max((b.metrics.get("train_seconds", 0.0) for b in buffer), default=0.0),
        replies=len(buffer), failed=len(since.failures), dropped=since.dropped,
        train_loss=weighted_mean([(b.metrics["train_loss"], b.num_examples) for b in buffer if "train_loss" in b.metrics]),
        eval_loss=evaluation.loss, eval_accuracy=evaluation.accuracy, eval_s=evaluation.seconds,
        failures=dict(since.failures), rejected=since.rejected, dead_lettered=since.dead_lettered,
        asked=[b.task.worker for b in buffer], strategy=dict(strategy),
        version=version, seconds=seconds, updates=updates,
        staleness_mean=sum(stalenesses) / len(stalenesses), staleness_max=max(stalenesses),
        stale=stale, timed_out=since.timed_out)
