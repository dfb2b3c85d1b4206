"""Gaussian attacker: sends N(0, 1) noise, one independent draw per coordinate, instead of an update.

The noise is seeded by the round's per-worker seed, so a rerun sends the same noise. No training
is done and no train_loss is reported (the coordinator averages only the losses it is given).
"""

from __future__ import annotations

import torch
from torch import nn

from benchmarks.attackers import DEFAULT_LR as DEFAULT_LR
from benchmarks.attackers import build_model as build_model
from benchmarks.attackers import load_shard as load_shard
from benchmarks.attackers import load_test as load_test
from benchmarks.attackers import send_update, snapshot
from fedmq.protocol.messages import TrainConfig

STD = 1.0


def train(model: nn.Module, dataset: object, config: TrainConfig) -> dict[str, float]:
    start = snapshot(model)
    noise = torch.Generator().manual_seed(config.seed)
    send_update(model, start, {name: STD * torch.randn(value.shape, generator=noise, dtype=torch.float32)
                               for name, value in start.items()})
    return {}
