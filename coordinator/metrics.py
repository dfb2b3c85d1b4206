"""Per-round metrics, appended as JSON lines."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fedmq.coordinator.durable import replace_atomically

log = logging.getLogger("fedmq.coordinator")


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
    """A JSON-lines file, one object per round, that agrees with the checkpoint after any kill.

    Each line is fsynced before its round's checkpoint is written. A run starts by keeping only
    the lines of rounds up to the one it starts after (none for a fresh run, the checkpoint's
    round on --resume), rewritten atomically: a coordinator killed between a line and its
    checkpoint reruns that round and logs it once, and a line torn by a kill mid-write is dropped.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def start(self, *, after_round: int) -> None:
        """Drop the lines of rounds after `after_round`, and any torn line."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = self.path.read_text() if self.path.exists() else None
        lines = (text or "").splitlines() if after_round else []
        kept = [line for line in lines if _round_of(line) in range(1, after_round + 1)]
        if len(kept) < len(lines):
            log.info("%s: dropped %d line(s) after round %d, which this run writes again",
                     self.path, len(lines) - len(kept), after_round)
        new_text = "".join(line + "\n" for line in kept)
        if new_text != text:  # unchanged files are left alone; a line without its newline is not
            replace_atomically(self.path, new_text.encode())

    def write(self, metrics: RoundMetrics) -> None:
        self._append(asdict(metrics))

    def write_stop(self, *, job: str, after_round: int, reason: str) -> None:
        """The last line of a run that ended before its planned rounds (DP's budget), and why. It has
        no "round": a --resume drops it (start) and decides again whether to go on."""
        self._append({"job": job, "stopped": reason, "after_round": after_round})

    def _append(self, line: dict[str, object]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(line) + "\n")
            f.flush()
            os.fsync(f.fileno())


def _round_of(line: str) -> int | None:
    try:
        obj = json.loads(line)
    except ValueError:
        return None  # torn by a kill mid-write
    value = obj.get("round") if isinstance(obj, dict) else None
    return value if type(value) is int else None


def read_metrics(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
