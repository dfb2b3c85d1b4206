"""A task whose every update is one-hot in a slot of its own, so the final weights tell exactly
which updates were applied, and how often.

Shard i's k-th training adds 1 at slot i * SLOTS_PER_WORKER + k (k counts from 0 in each worker
process). Each worker appends its slots to $FEDMQ_TEST_TAG_DIR/worker-i.tags (fsynced) before
replying, so a test knows every update any worker produced. With constant staleness, equal
shards and --server-lr K, an aggregation adds the K one-hots exactly (K a power of two).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from fedmq.protocol.messages import TrainConfig
from fedmq.worker.task import ShardSpec

TAG_ENV = "FEDMQ_TEST_TAG_DIR"
WORKERS_MAX = 8
SLOTS_PER_WORKER = 512
_trained: dict[int, int] = {}  # shard index -> trainings so far in this process


class Tagged(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.slots = nn.Parameter(torch.zeros(WORKERS_MAX * SLOTS_PER_WORKER))


def build_model() -> nn.Module:
    return Tagged()


def load_shard(spec: ShardSpec) -> list[int]:
    return [spec.index]  # one "example": every update weighs the same


def train(model: nn.Module, dataset: list[int], config: TrainConfig) -> dict[str, float]:
    index = dataset[0]
    count = _trained.get(index, 0)
    _trained[index] = count + 1
    slot = index * SLOTS_PER_WORKER + count
    slots = model.get_parameter("slots")
    with torch.no_grad():
        slots[slot] += 1.0
    directory = os.environ.get(TAG_ENV)
    if directory:
        with open(Path(directory) / f"worker-{index}.tags", "a") as f:
            f.write(f"{slot}\n")
            f.flush()
            os.fsync(f.fileno())
    return {"slot": float(slot)}


def evaluate(model: nn.Module, dataset: list[int]) -> dict[str, float]:
    return {"eval_loss": 0.0}


def produced(directory: Path) -> list[int]:
    """Every slot any worker trained, from the tag files."""
    return [int(line) for path in sorted(directory.glob("worker-*.tags")) for line in path.read_text().split()]
