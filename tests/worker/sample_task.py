"""A user's task module, as the README describes one: a pair dataset, a custom loss, no train().

Loaded in tests by its dotted path, `tests.worker.sample_task`, the way `--task` names one.
Regression of y = 2x - 1 on 16 points; each shard takes every count-th row.
"""

import torch
from torch import nn

from fedmq.worker.task import ShardSpec

DEFAULT_LR = 0.02


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.linspace(-1, 1, 16).unsqueeze(1)  # (16, 1)
    return x, 2 * x - 1  # (16, 1), (16, 1)


def build_model() -> nn.Module:
    return nn.Linear(1, 1)


def load_shard(spec: ShardSpec) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _data()
    return x[spec.index::spec.count], y[spec.index::spec.count]


def load_test() -> tuple[torch.Tensor, torch.Tensor]:
    return _data()


def loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return nn.functional.mse_loss(prediction, target)
