"""Kill points: stop a coordinator at a named point of one round, as a kill there would.

`install(point, round_, kill)` wraps the coordinator's own functions so that `kill()` runs at that
point of round `round_`. In-process (memory broker) `kill` raises Killed; in a subprocess
(`python -m tests.coordinator.killable_train`) it is a real SIGKILL of the coordinator.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, NoReturn

import fedmq.coordinator.checkpoint as checkpoint_module
import fedmq.coordinator.job as job_module
from fedmq.coordinator.checkpoint import save_checkpoint as save_checkpoint_of_job
from fedmq.coordinator.durable import replace_atomically as durable_replace
from fedmq.coordinator.evaluation import Evaluator
from fedmq.coordinator.metrics import MetricsLog, RoundMetrics
from fedmq.coordinator.rounds import ReplyCollector

Patch = Callable[[Any, str, Any], None]
Kill = Callable[[], NoReturn]


class Killed(BaseException):
    """The in-process stand-in for SIGKILL: no fedmq code handles it."""


def _sent(at: int, kill: Kill, patch: Patch) -> None:
    """Tasks sent, no reply collected."""
    class Collector(ReplyCollector):
        def __init__(self, broker: Any, job: str, round_: int, *args: Any, **kwargs: Any) -> None:  # noqa: ANN401
            super().__init__(broker, job, round_, *args, **kwargs)
            self.kill_now = round_ == at

        def collect(self, *args: Any, **kwargs: Any) -> Any:  # noqa: ANN401
            if self.kill_now:
                kill()
            return super().collect(*args, **kwargs)

    patch(job_module, "ReplyCollector", Collector)


def _evaluating(at: int, kill: Kill, patch: Patch) -> None:
    """Aggregated, not yet evaluated: nothing of the round written."""
    original = Evaluator.evaluate

    def evaluate(self: Evaluator, round_: int, weights: Any) -> Any:  # noqa: ANN401
        if round_ == at:
            kill()
        return original(self, round_, weights)

    patch(Evaluator, "evaluate", evaluate)


def _line(at: int, kill: Kill, patch: Patch) -> None:
    """The round's metrics line written, its checkpoint not."""
    original = MetricsLog.write

    def write(self: MetricsLog, metrics: RoundMetrics) -> None:
        original(self, metrics)
        if metrics.round == at:
            kill()

    patch(MetricsLog, "write", write)


def _torn_line(at: int, kill: Kill, patch: Patch) -> None:
    """Half of the round's metrics line written."""
    original = MetricsLog.write

    def write(self: MetricsLog, metrics: RoundMetrics) -> None:
        if metrics.round == at:
            line = json.dumps(asdict(metrics)) + "\n"
            with open(self.path, "a") as f:
                f.write(line[: len(line) // 2])
            kill()
        original(self, metrics)

    patch(MetricsLog, "write", write)


def _checkpoint_cut(at: int, kill: Kill, patch: Patch) -> None:
    """The line written, and half of the checkpoint's temporary file."""
    original = durable_replace
    saved = [0]

    def replace_atomically(path: Path, data: bytes | memoryview) -> None:
        saved[0] += 1  # one checkpoint a round, from round 1: killed runs are fresh runs
        if saved[0] == at:
            path.with_name(path.name + ".tmp").write_bytes(bytes(data)[: len(data) // 2])
            kill()
        original(path, data)

    patch(checkpoint_module, "replace_atomically", replace_atomically)


def _checkpointed(at: int, kill: Kill, patch: Patch) -> None:
    """The line and the checkpoint durable, the round not yet announced."""
    original = save_checkpoint_of_job

    def save_checkpoint(directory: Path, checkpoint: Any) -> Path:  # noqa: ANN401
        path = original(directory, checkpoint)
        if checkpoint.round == at:
            kill()
        return path

    patch(job_module, "save_checkpoint", save_checkpoint)


POINTS: dict[str, Callable[[int, Kill, Patch], None]] = {
    "sent": _sent, "evaluating": _evaluating, "line": _line, "torn line": _torn_line,
    "checkpoint cut": _checkpoint_cut, "checkpointed": _checkpointed,
}


def install(point: str, round_: int, kill: Kill, patch: Patch = setattr) -> None:
    POINTS[point](round_, kill, patch)
