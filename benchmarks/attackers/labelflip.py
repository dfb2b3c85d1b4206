"""Label-flip attacker: trains honestly on its shard with every label y replaced by 9 - y.

Data poisoning rather than model poisoning: the update is an ordinary SGD update, of ordinary
size, towards a model that confuses each digit with its mirror (0 <-> 9, 1 <-> 8, ...).
"""

from __future__ import annotations

import torch
from torch import nn

from benchmarks.attackers import DEFAULT_LR as DEFAULT_LR
from benchmarks.attackers import build_model as build_model
from benchmarks.attackers import load_shard as load_shard
from benchmarks.attackers import load_test as load_test
from fedmq.protocol.messages import TrainConfig
from fedmq.worker import training

CLASSES = 10


def train(model: nn.Module, dataset: tuple[torch.Tensor, torch.Tensor], config: TrainConfig) -> dict[str, float]:
    inputs, targets = dataset  # (N, 64), (N,)
    return training.train(model, (inputs, CLASSES - 1 - targets), config)
