"""Per-round metrics, appended as JSON lines."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class RoundMetrics:
    job: str
    round: int
    wall_s: float  # send to aggregated, evaluation excluded
    worker_train_s: float  # the slowest accepted reply's local training seconds
    replies: int
    failed: int
    dropped: int
    train_loss: float | None
    eval_loss: float | None
    eval_accuracy: float | None
    eval_s: float
    failures: dict[str, str] = field(default_factory=dict)  # worker -> reason
    rejected: int = 0  # updates refused before aggregation: NaN/Inf, above --max-update-norm, misfit
    dead_lettered: int = 0  # replies no honest worker sends (rejected updates included)
    asked: list[str] = field(default_factory=list)  # the workers this round's sample asked
    strategy: dict[str, object] = field(default_factory=dict)  # what the strategy reports (Krum's pick, ...)


class MetricsLog:
    """A JSON-lines file, one object per round; a fresh run truncates, a resumed one appends."""

    def __init__(self, path: Path, *, append: bool) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if not append:
            path.write_text("")

    def write(self, metrics: RoundMetrics) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(asdict(metrics)) + "\n")


def read_metrics(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
