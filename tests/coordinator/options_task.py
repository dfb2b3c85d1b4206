"""Digits, with a train that reports the options its TrainConfig carried (as metrics)."""

from __future__ import annotations

from torch import nn

from fedmq.protocol.messages import TrainConfig
from fedmq.worker import training
from fedmq.worker.tasks.digits import build_model, load_shard, load_test  # noqa: F401 - the task's contract

__all__ = ["build_model", "load_shard", "load_test", "train"]


def train(model: nn.Module, dataset: object, config: TrainConfig) -> dict[str, float]:
    metrics = training.train(model, dataset, config)
    return {**metrics, **{f"option_{k}": float(v) for k, v in config.options.items()
                          if isinstance(v, (int, float))}}
