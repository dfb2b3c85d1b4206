"""Every strategy inside today's round loop: the memory broker, workers as threads of this process."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from fedmq.broker.memory import MemoryBroker, MemoryHub
from fedmq.coordinator.job import TrainingJob
from fedmq.coordinator.metrics import RoundMetrics
from fedmq.coordinator.settings import TrainSettings
from fedmq.coordinator.strategies import STRATEGIES, build_strategy
from fedmq.protocol.messages import TrainConfig, Weights
from fedmq.worker.pool import LocalWorkers
from fedmq.worker.task import load_task

WORKERS = tuple(f"w{i}" for i in range(7))  # Bulyan with f=1 needs 4f + 3 = 7


def _train(settings: TrainSettings, strategy: str) -> tuple[Weights, list[RoundMetrics]]:
    hub = MemoryHub()
    task = load_task(settings.task)
    rounds: list[RoundMetrics] = []
    with LocalWorkers(hub, task, settings.workers), MemoryBroker(hub) as broker:
        job = TrainingJob(broker, settings, task=task, strategy=build_strategy(strategy, {}), on_round=rounds.append)
        weights = job.run()
    return weights, rounds


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_strategy_trains_digits_in_the_round_loop(name: str) -> None:
    # Given seven digits workers and the strategy with its defaults
    settings = TrainSettings("digits", WORKERS, rounds=3, config=TrainConfig(lr=0.1, seed=1))
    # When three rounds run
    _, rounds = _train(settings, name)
    # Then every round aggregated all seven replies into a model that evaluates to a finite loss
    assert [m.replies for m in rounds] == [7, 7, 7]
    assert all(m.eval_loss is not None and math.isfinite(m.eval_loss) for m in rounds)
    assert rounds[-1].eval_accuracy is not None and rounds[-1].eval_accuracy > 0.3


@pytest.mark.parametrize("name", ["fedadam", "fedavgm", "bulyan"])
def test_resume_with_a_stateful_or_cohort_strategy_ends_where_an_uninterrupted_run_ends(
        name: str, tmp_path: Path) -> None:
    # Given an uninterrupted four-round run
    config = TrainConfig(lr=0.1, seed=3)
    full, _ = _train(TrainSettings("digits", WORKERS, rounds=4, config=config), name)
    # When another run stops after two rounds (its checkpoint holds the strategy's state) and resumes
    _train(TrainSettings("digits", WORKERS, rounds=2, config=config, checkpoint_dir=tmp_path), name)
    resumed, rounds = _train(TrainSettings("digits", WORKERS, rounds=4, config=config,
                                           checkpoint_dir=tmp_path, resume=True), name)
    # Then only rounds 3 and 4 ran, and the weights match the uninterrupted run's
    assert [m.round for m in rounds] == [3, 4]
    assert all(torch.allclose(resumed[k], full[k], atol=1e-6) for k in full)
