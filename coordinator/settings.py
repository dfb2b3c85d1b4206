"""Settings of a training run, built once at the CLI edge."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from fedmq.coordinator.privacy.settings import DPSettings, NoiseMode
from fedmq.coordinator.sampling import Sampling
from fedmq.coordinator.secagg.settings import SecAggSettings
from fedmq.protocol.messages import TrainConfig, check_name


@dataclass(frozen=True)
class TrainSettings:
    task: str
    workers: tuple[str, ...]
    rounds: int = 20
    config: TrainConfig = TrainConfig()
    min_replies: int | None = None  # None: every worker must answer
    round_timeout_s: float = 300.0
    wait_for_workers_s: float = 30.0  # before round 1, how long workers may take to come up
    checkpoint_dir: Path | None = None
    resume: bool = False
    metrics_out: Path | None = None
    job: str = "fedmq"
    max_update_norm: float | None = None  # updates with a larger L2 norm are rejected
    verify_senders: bool = False  # accept a reply only if its AMQP user_id is its worker's name
    strategy: str = "fedavg"  # a registry name or module.path:ClassName
    strategy_options: tuple[tuple[str, str], ...] = ()  # KEY=VALUE pairs, parsed by the registry
    sampling: Sampling = Sampling()  # how many workers each round asks
    clip_norm: float | None = None  # --clip: the L2 bound workers clip their updates to (DP, secure aggregation)
    dp: DPSettings | None = None  # differential privacy (coordinator.privacy), None: off
    secagg: SecAggSettings | None = None  # secure aggregation (coordinator.secagg), None: off

    def __post_init__(self) -> None:
        check_name("job", self.job)
        if not self.workers:
            raise ValueError("name at least one worker (--workers alice,bob)")
        for worker in self.workers:
            check_name("worker", worker)
        if len(set(self.workers)) != len(self.workers):
            raise ValueError("worker names must be distinct")
        if self.rounds < 1:
            raise ValueError("--rounds must be at least 1")
        asked = self.sampling.size(len(self.workers))
        if self.min_replies is not None and not 1 <= self.min_replies <= asked:
            raise ValueError(f"--min-replies must be between 1 and the number of workers a round asks ({asked})")
        if self.resume and self.checkpoint_dir is None:
            raise ValueError("--resume needs --checkpoint-dir")
        if self.max_update_norm is not None and not self.max_update_norm > 0:
            raise ValueError("--max-update-norm must be positive")
        if self.clip_norm is not None and not 0 < self.clip_norm < float("inf"):
            raise ValueError(f"--clip must be a positive number, got {self.clip_norm}")
        if self.secagg is not None and self.clip_norm is None:
            raise ValueError("secure aggregation needs --clip C: each worker clips its update to L2 norm C, "
                             "which is also each coordinate's quantization range (e.g. --clip 1.0)")
        if self.secagg is not None and self.max_update_norm is not None:
            raise ValueError("--max-update-norm screens individual updates, which secure aggregation hides: "
                             "drop it (--clip bounds every update instead)")
        if self.dp is not None and self.dp.noise is NoiseMode.DISTRIBUTED and self.secagg is None:
            raise ValueError("distributed DP noise is for secure aggregation, where no one sees the un-noised sum; "
                             "without it the coordinator would see each update with a fraction of the noise: "
                             "use central noise or add secure aggregation")
        if self.dp is not None and self.clip_norm is None:
            raise ValueError("differential privacy needs --clip C, the L2 norm each worker's update is "
                             "clipped to (e.g. --clip 1.0)")

    @property
    def asked_per_round(self) -> int:
        return self.sampling.size(len(self.workers))

    @property
    def needed_replies(self) -> int:
        """Usable replies a round needs, counted within the round's sample."""
        return self.min_replies if self.min_replies is not None else self.asked_per_round


def default_job_name(task: str) -> str:
    """A job name derived from the task: queue-safe, stable across restarts (for --resume)."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", task)[:64]
