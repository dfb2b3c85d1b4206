"""A task with a 64 MB model whose local training is one cheap step: for memory benchmarks."""

from __future__ import annotations

import torch
from torch import nn

from fedmq.protocol.messages import TrainConfig
from fedmq.worker.task import ShardSpec

FEATURES = 4096  # 4096 x 4096 float32 weights = 64 MiB


def build_model() -> nn.Module:
    return nn.Linear(FEATURES, FEATURES)


def load_shard(spec: ShardSpec) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(spec.index)
    return torch.randn(8, FEATURES, generator=generator), torch.randn(8, FEATURES, generator=generator)


def load_test() -> tuple[torch.Tensor, torch.Tensor]:
    return load_shard(ShardSpec(0, 1))


def train(model: nn.Module, dataset: tuple[torch.Tensor, torch.Tensor], config: TrainConfig) -> dict[str, float]:
    with torch.no_grad():  # a stand-in for training: every weight moves a little
        for parameter in model.parameters():
            parameter.add_(config.lr * 1e-3)
    return {"train_loss": 0.0}


def evaluate(model: nn.Module, dataset: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
    inputs, targets = dataset
    with torch.no_grad():
        return {"eval_loss": float(((model(inputs) - targets) ** 2).mean())}
