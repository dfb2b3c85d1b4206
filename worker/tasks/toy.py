"""The PySyft tutorial's toy task: four points, a linear model, summed squared error.

Shard `0/2` is bob's half (the first two rows), `1/2` alice's (the last two); in general the
rows are split into contiguous, near-equal parts. That split is already by label (bob holds the
zeros, alice the ones), so the partition is ignored. There is no test split: the workers
evaluate the global model on their own halves.
"""

from __future__ import annotations

import torch
from torch import nn

from fedmq.worker.task import ShardSpec

DEFAULT_LR = 0.1  # the tutorial's learning rate


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    inputs = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])  # (4, 2)
    targets = torch.tensor([[0.0], [0.0], [1.0], [1.0]])  # (4, 1)
    return inputs, targets


def build_model() -> nn.Module:
    return nn.Linear(2, 1)


def load_shard(spec: ShardSpec) -> tuple[torch.Tensor, torch.Tensor]:
    inputs, targets = _data()
    rows = torch.arange(inputs.shape[0]).tensor_split(spec.count)[spec.index]  # contiguous part
    return inputs[rows], targets[rows]


def loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The tutorial's summed (not mean) squared error."""
    return ((prediction - target) ** 2).sum()
