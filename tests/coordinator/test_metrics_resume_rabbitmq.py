"""The metrics file agrees with the checkpoint after a real SIGKILL anywhere in a round (RabbitMQ).

`fedmq train` runs as a process that kills itself with SIGKILL at a kill point of round 2
(tests/coordinator/killable_train.py), with `fedmq worker` processes as its workers; a plain
`fedmq train --resume` then finishes the run. Each round must be in the file exactly once, and
the file must end as an uninterrupted run's file ends.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fedmq.broker.settings import BrokerSettings
from fedmq.coordinator.checkpoint import load_checkpoint
from tests.coordinator.conftest import ROOT, StartWorkers, broker_args, fedmq

POINTS = ("sent", "line", "torn line", "checkpoint cut", "checkpointed")
SAME = ("round", "replies", "failed", "train_loss", "eval_loss", "eval_accuracy", "asked")


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


def _essence(path: Path) -> list[tuple[object, ...]]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return [tuple(pytest.approx(line[key]) if isinstance(line[key], float) else line[key] for key in SAME)
            for line in lines]


def test_a_coordinator_killed_anywhere_in_a_round_logs_each_round_once_after_resume(
        rabbit_settings: BrokerSettings, start_workers: StartWorkers, tmp_path: Path) -> None:
    # Given bob and alice as worker processes, and the file of an uninterrupted three-round run
    start_workers("toy", ["bob", "alice"])
    common = ["--task", "toy", "--workers", "bob,alice", "--rounds", "3", "--batch-size", "2", "--seed", "4",
              "--log-level", "warning", *broker_args(rabbit_settings)]
    straight = tmp_path / "straight.jsonl"
    done = _run(fedmq("train", *common, "--job", "straight", "--metrics-out", str(straight)))
    assert done.returncode == 0, done.stderr
    for index, point in enumerate(POINTS):
        job = f"killed-{index}"
        metrics, checkpoints = tmp_path / f"{job}.jsonl", tmp_path / job
        args = [*common, "--job", job, "--metrics-out", str(metrics), "--checkpoint-dir", str(checkpoints)]
        # When the coordinator process is killed with SIGKILL at that point of round 2
        killed = _run([sys.executable, "-m", "tests.coordinator.killable_train", point, "2", *args])
        assert killed.returncode == -signal.SIGKILL, (point, killed.returncode, killed.stderr)
        # And a new coordinator resumes the run
        resumed = _run(fedmq("train", *args, "--resume"))
        # Then it finishes, the file holds rounds 1, 2 and 3 once each, as the uninterrupted file does
        assert resumed.returncode == 0, (point, resumed.stderr)
        assert [line[0] for line in _essence(metrics)] == [1, 2, 3], (point, metrics.read_text())
        assert _essence(metrics) == _essence(straight), point
        checkpoint = load_checkpoint(checkpoints)
        assert checkpoint is not None and checkpoint.round == 3, point
