"""Federated training runs on the memory broker, with workers as threads of this process."""

import json
from pathlib import Path

import pytest
import torch

from fedmq.broker.memory import MemoryBroker, MemoryHub
from fedmq.coordinator.job import TrainingJob
from fedmq.coordinator.metrics import RoundMetrics
from fedmq.coordinator.settings import TrainSettings
from fedmq.protocol.errors import TrainingFailed
from fedmq.protocol.messages import TrainConfig, Weights
from fedmq.worker.pool import LocalWorkers
from fedmq.worker.task import load_task

FIELDS = {"round", "wall_s", "worker_train_s", "replies", "dropped", "train_loss", "eval_loss", "eval_accuracy"}


def _train(settings: TrainSettings, started: tuple[str, ...] | None = None,
           idle: tuple[str, ...] = ()) -> tuple[Weights, list[RoundMetrics]]:
    """Run `settings` with in-process workers (all of them unless `started` names some)."""
    hub = MemoryHub()
    task = load_task(settings.task)
    rounds: list[RoundMetrics] = []
    with LocalWorkers(hub, task, started or settings.workers), MemoryBroker(hub) as broker:
        for name in idle:  # a queue that exists but that no one serves: a hung worker
            broker.declare_worker(name)
        weights = TrainingJob(broker, settings, task=task, on_round=rounds.append).run()
    return weights, rounds


def test_toy_loss_falls_round_after_round() -> None:
    # Given bob and alice holding the tutorial's two halves
    settings = TrainSettings("toy", ("bob", "alice"), rounds=5, config=TrainConfig(lr=0.1, batch_size=2))
    # When five rounds run
    _, rounds = _train(settings)
    # Then the federated evaluation loss falls every round
    losses = [m.eval_loss for m in rounds]
    assert all(loss is not None for loss in losses)
    assert all(later < earlier for earlier, later in zip(losses, losses[1:])), losses  # type: ignore[operator]


def test_digits_learns_and_logs_json_lines(tmp_path: Path) -> None:
    # Given three digits workers and a metrics file
    out = tmp_path / "metrics.jsonl"
    settings = TrainSettings("digits", ("w0", "w1", "w2"), rounds=8, metrics_out=out,
                             config=TrainConfig(lr=0.1, epochs=2))
    # When eight rounds run
    _, rounds = _train(settings)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    # Then accuracy on the held-out test split passes 0.85 and each round is one JSON line
    assert rounds[-1].eval_accuracy is not None and rounds[-1].eval_accuracy >= 0.85
    assert [line["round"] for line in lines] == list(range(1, 9))
    assert FIELDS <= lines[0].keys() and lines[0]["replies"] == 3 and lines[0]["dropped"] == 0


def test_resume_ends_where_an_uninterrupted_run_ends(tmp_path: Path) -> None:
    # Given an uninterrupted four-round run
    config = TrainConfig(lr=0.1, seed=3)
    full, _ = _train(TrainSettings("digits", ("w0", "w1"), rounds=4, config=config))
    # When another run stops after two rounds and a new coordinator resumes it to four
    interrupted = TrainSettings("digits", ("w0", "w1"), rounds=2, config=config, checkpoint_dir=tmp_path)
    _train(interrupted)
    resumed_settings = TrainSettings("digits", ("w0", "w1"), rounds=4, config=config,
                                     checkpoint_dir=tmp_path, resume=True)
    resumed, rounds = _train(resumed_settings)
    # Then only rounds 3 and 4 ran, and the weights match the uninterrupted run's
    assert [m.round for m in rounds] == [3, 4]
    assert all(torch.allclose(resumed[k], full[k], atol=1e-6) for k in full)


def test_min_replies_lets_a_round_close_without_a_hung_worker() -> None:
    # Given three workers of which carol never answers, and K = 2
    settings = TrainSettings("digits", ("w0", "w1", "carol"), rounds=2, min_replies=2, round_timeout_s=0.5)
    # When the run goes on
    _, rounds = _train(settings, started=("w0", "w1"), idle=("carol",))
    # Then every round closes at its timeout with the two replies
    assert [m.replies for m in rounds] == [2, 2]


def test_too_few_replies_fail_the_run_naming_the_silent_worker() -> None:
    settings = TrainSettings("digits", ("w0", "carol"), rounds=2, round_timeout_s=0.5)
    with pytest.raises(TrainingFailed, match="silent: carol"):
        _train(settings, started=("w0",), idle=("carol",))


def test_a_worker_that_never_started_is_a_failure_of_the_round() -> None:
    # Given dave has no task queue at all
    settings = TrainSettings("digits", ("w0", "dave"), rounds=1, min_replies=1, round_timeout_s=0.5,
                             wait_for_workers_s=0.2)
    # When a round runs
    _, rounds = _train(settings, started=("w0",))
    # Then dave's task is reported as unroutable, not lost silently
    assert rounds[0].failed == 1 and "dave" in rounds[0].failures["dave"]
