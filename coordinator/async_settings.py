"""Settings of an asynchronous run (`fedmq train --mode async`), beside the run's TrainSettings.

FedBuff (Nguyen et al., AISTATS 2022): aggregate every `buffer` accepted updates, each scaled by
its staleness weight, then step the model by `server_lr` times the aggregate's move. FedAsync
(Xie et al. 2019) is `buffer=1` with `mix=ALPHA`: x <- (1 - a) x + a (x + d), a = ALPHA w(s),
i.e. the update applied to the current model and mixed in with weight a.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from fedmq.coordinator.settings import TrainSettings
from fedmq.coordinator.staleness import Staleness


class Mode(Enum):
    SYNC = "sync"
    ASYNC = "async"


@dataclass(frozen=True, kw_only=True)
class AsyncSettings:
    buffer: int | None = None  # K; None: min(3, workers)
    mix: float | None = None  # FedAsync's alpha; needs buffer 1
    concurrency: int | None = None  # tasks outstanding at once; None: --sample/--fraction, else all workers
    staleness: Staleness = Staleness()
    max_staleness: int | None = None  # older updates are dropped and counted; None: no bound
    server_lr: float = 1.0
    updates: int | None = None  # stop after this many updates were applied
    versions: int | None = None  # stop at this model version; neither: TrainSettings.rounds versions
    eval_every: int = 1

    def __post_init__(self) -> None:
        if self.buffer is not None and self.buffer < 1:
            raise ValueError(f"--buffer must be at least 1, got {self.buffer}")
        if self.mix is not None:
            if not 0 < self.mix <= 1:
                raise ValueError(f"--mix must be in (0, 1], got {self.mix}")
            if self.buffer not in (None, 1):
                raise ValueError("--mix is FedAsync's mixing weight: it needs --buffer 1")
            if self.server_lr != 1.0:
                raise ValueError("give --mix (FedAsync) or --server-lr, not both: --mix is the step size")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError(f"--concurrency must be at least 1, got {self.concurrency}")
        if self.max_staleness is not None and self.max_staleness < 0:
            raise ValueError(f"--max-staleness must not be negative, got {self.max_staleness}")
        if not self.server_lr > 0:
            raise ValueError(f"--server-lr must be positive, got {self.server_lr}")
        if self.updates is not None and self.versions is not None:
            raise ValueError("give --updates N or --versions V, not both")
        if (self.updates is not None and self.updates < 1) or (self.versions is not None and self.versions < 1):
            raise ValueError("--updates and --versions must be at least 1")
        if self.eval_every < 1:
            raise ValueError(f"--eval-every must be at least 1, got {self.eval_every}")

    @property
    def step(self) -> float:
        """How far the model moves toward each aggregate: --mix for FedAsync, else --server-lr."""
        return self.mix if self.mix is not None else self.server_lr


@dataclass(frozen=True, kw_only=True)
class AsyncPlan:
    """AsyncSettings resolved against a run's workers: every number fixed."""

    buffer: int
    concurrency: int
    versions: int | None  # stop at this version ...
    updates: int | None  # ... or once this many updates were applied

    def done(self, version: int, applied: int) -> bool:
        if self.updates is not None:
            return applied >= self.updates
        return self.versions is not None and version >= self.versions

    @property
    def length(self) -> int:
        """The run's length for a progress bar: versions, or the updates' worth of them."""
        return self.versions if self.versions is not None else -(-(self.updates or 0) // self.buffer)


def plan(settings: TrainSettings, options: AsyncSettings) -> AsyncPlan:
    """Fix K, C and the run's length for `settings`' workers; ValueError when they cannot work.

    K may not exceed the workers: on RabbitMQ each reply queue hands the coordinator one
    unacknowledged reply at a time, and a buffered reply stays unacknowledged until its
    aggregation is checkpointed, so each worker can fill at most one slot of a buffer.
    """
    workers = len(settings.workers)
    buffer = options.buffer if options.buffer is not None else min(3, workers)
    if buffer > workers:
        raise ValueError(f"--buffer {buffer} is more than the {workers} workers: each worker holds at most one "
                         f"place in a buffer (its reply stays unacknowledged until the aggregation is "
                         f"checkpointed); lower --buffer or add workers")
    concurrency = options.concurrency if options.concurrency is not None else settings.asked_per_round
    if concurrency > workers:
        raise ValueError(f"--concurrency {concurrency} is more than the {workers} workers (one task each at a time)")
    versions = options.versions if options.versions is not None or options.updates is not None else settings.rounds
    return AsyncPlan(buffer=buffer, concurrency=concurrency, versions=versions, updates=options.updates)
