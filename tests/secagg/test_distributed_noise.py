"""Secure aggregation with distributed DP noise, on the memory broker: the noise the workers add
reaches the model whole (the masked ring must not clip the noised update again)."""

from __future__ import annotations


import pytest
import torch

from fedmq.broker.memory import MemoryBroker, MemoryHub
from fedmq.coordinator.job import TrainingJob
from fedmq.coordinator.metrics import RoundMetrics
from fedmq.coordinator.privacy.settings import DPSettings, NoiseMode
from fedmq.coordinator.secagg.settings import SecAggSettings
from fedmq.coordinator.settings import TrainSettings
from fedmq.protocol.messages import TrainConfig
from fedmq.worker.pool import LocalWorkers
from fedmq.worker.task import load_task

WORKERS = ("n0", "n1", "n2")
SEED = 4


def test_the_workers_noise_shares_reach_the_model_whole() -> None:
    # Given three digits workers, DP-FedAvg with Z = 1 at C = 0.1 and secure aggregation
    z, clip, m = 1.0, 0.1, len(WORKERS)
    settings = TrainSettings("digits", WORKERS, rounds=1, config=TrainConfig(lr=0.1, batch_size=16, seed=SEED),
                             clip_norm=clip, dp=DPSettings(noise_multiplier=z, noise=NoiseMode.DISTRIBUTED),
                             secagg=SecAggSettings(stage_timeout_s=10.0))
    task, hub, rounds = load_task("digits"), MemoryHub(), []
    torch.manual_seed(SEED)
    initial = task.build_model().state_dict()
    # When one round runs
    with LocalWorkers(hub, task, WORKERS), MemoryBroker(hub) as broker:
        final = TrainingJob(broker, settings, task=task, on_round=rounds.append).run()
    # Then the model moved by the noised mean: N(0, (Z C / m)^2) per coordinate, all of it from
    # the workers' shares (the coordinator adds none), next to which the clipped mean (L2 norm at
    # most C over 4,810 coordinates) is small
    moved = torch.cat([(final[n] - t).reshape(-1).double() for n, t in initial.items() if t.is_floating_point()])
    expected = z * clip / m
    rms = float(moved.pow(2).mean().sqrt())
    assert expected * 0.9 < rms < expected * 1.1, (rms, expected)
    metrics: RoundMetrics = rounds[0]
    assert metrics.strategy["secagg_contributors"] == m and metrics.strategy["dp_noise_std"] == pytest.approx(z * clip)
