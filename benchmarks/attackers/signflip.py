"""Sign-flip attacker: trains honestly, then sends its update times -5.

The weights left in the model are start - 5 * (trained - start), so the coordinator receives
-5 times the honest update: a large step against the direction the data points to.
"""

from __future__ import annotations

from torch import nn

from benchmarks.attackers import DEFAULT_LR as DEFAULT_LR
from benchmarks.attackers import build_model as build_model
from benchmarks.attackers import change, send_update, snapshot
from benchmarks.attackers import load_shard as load_shard
from benchmarks.attackers import load_test as load_test
from fedmq.protocol.messages import TrainConfig
from fedmq.worker import training

SCALE = -5.0


def train(model: nn.Module, dataset: object, config: TrainConfig) -> dict[str, float]:
    start = snapshot(model)
    metrics = training.train(model, dataset, config)
    send_update(model, start, {name: SCALE * delta for name, delta in change(model, start).items()})
    return metrics
