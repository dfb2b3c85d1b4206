"""Asynchronous training through the real RabbitMQ with `fedmq worker` processes.

The kill test SIGKILLs `fedmq train --mode async` at chosen and at random steps, resumes it with
`--resume`, and reads from the tagged task's final weights (tests/coordinator/tagged_task.py)
that each update was applied exactly once, none that a worker did not produce, and that the
metrics file holds each version exactly once.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fedmq.broker.settings import BrokerSettings
from fedmq.coordinator.async_state import load_state
from tests.coordinator import tagged_task
from tests.coordinator.conftest import ROOT, StartWorkers, broker_args, fedmq

WORKERS = ["aw0", "aw1", "aw2"]
K, VERSIONS = 2, 8


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_fedbuff_trains_through_rabbitmq_with_a_slowed_worker(
        rabbit_settings: BrokerSettings, start_workers: StartWorkers, tmp_path: Path) -> None:
    # Given three toy worker processes, one of them 3x slower (--slowdown)
    start_workers("toy", WORKERS[:2])
    start_workers("toy", WORKERS[2:], None, "--slowdown", "3")
    metrics = tmp_path / "m.jsonl"
    # When an async run with K=2 makes 4 versions
    done = _run(fedmq("train", "--task", "toy", "--workers", ",".join(WORKERS), "--mode", "async",
                      "--buffer", "2", "--versions", "4", "--batch-size", "2", "--metrics-out", str(metrics),
                      "--job", "async-toy", *broker_args(rabbit_settings)))
    # Then it succeeds with versions 1..4, two updates each, their staleness recorded
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [(line["version"], line["replies"], line["updates"]) for line in lines] == [
        (v, 2, 2 * v) for v in range(1, 5)]
    assert all(0 <= line["staleness_mean"] <= line["staleness_max"] for line in lines)


@pytest.mark.parametrize("seed", [11])
def test_a_coordinator_killed_at_random_steps_applies_each_update_exactly_once(
        seed: int, rabbit_settings: BrokerSettings, start_workers: StartWorkers, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Given three tagged worker processes that log every update they produce
    tags = tmp_path / "tags"
    tags.mkdir()
    monkeypatch.setenv(tagged_task.TAG_ENV, str(tags))
    start_workers("tests.coordinator.tagged_task", WORKERS)
    checkpoint, metrics = tmp_path / "checkpoint", tmp_path / "m.jsonl"
    args = ["--task", "tests.coordinator.tagged_task", "--workers", ",".join(WORKERS), "--mode", "async",
            "--buffer", str(K), "--server-lr", str(K), "--staleness", "constant", "--versions", str(VERSIONS),
            "--round-timeout", "20", "--job", f"async-kill-{seed}", "--checkpoint-dir", str(checkpoint),
            "--metrics-out", str(metrics), "--log-level", "warning", *broker_args(rabbit_settings)]
    # When the coordinator is SIGKILLed after version 2's line, and then twice at random steps,
    # each time resumed with --resume
    draw = random.Random(seed)
    kills = ["line:2", f"any:{draw.randint(1, 25)}", f"any:{draw.randint(1, 25)}"]
    for index, spec in enumerate(kills):
        resume = ["--resume"] if index else []
        killed = _run([sys.executable, "-m", "tests.coordinator.killable_async", spec, *args, *resume])
        assert killed.returncode in (-9, 0), f"{spec}: {killed.stderr}"
    done = _run(fedmq("train", *args, "--resume"))
    assert done.returncode == 0, f"kills {kills}: {done.stderr}"
    # Then the file holds each version once, and the weights hold each applied update exactly once
    lines = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [line["version"] for line in lines] == list(range(1, VERSIONS + 1)), kills
    state = load_state(checkpoint)
    assert state is not None and state.version == VERSIONS and state.updates == K * VERSIONS
    slots = state.weights["slots"]
    assert set(slots.tolist()) <= {0.0, 1.0}, f"an update applied twice after kills {kills}"
    applied = {int(i) for i in torch.nonzero(slots).flatten().tolist()}
    assert len(applied) == K * VERSIONS, f"an update lost after kills {kills}"
    assert applied <= set(tagged_task.produced(tags))
