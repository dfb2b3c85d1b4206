"""scikit-learn's 8x8 digits: an MLP 64-64-10 on 1,797 images, a realistic small federated task.

Pixels are scaled from 0..16 to [0, 1]. A stratified 80/20 split (random_state 0) holds out the
test part, which the coordinator keeps (`load_test`). Workers cut the training 80% into
`spec.count` shards:

- "iid" (default): a fixed permutation (seed 0), then contiguous near-equal parts.
- "label": the FedAvg paper's pathological non-IID cut: sort by label, cut into 2 * count
  shards, give each worker two of them, assigned by a fixed permutation (seed 0). Each worker
  then sees only a few digits.

Every cut is a deterministic function of the spec, so workers on different machines agree on
which rows are whose without talking to each other.
"""

from __future__ import annotations

import functools

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from fedmq.protocol.errors import TaskError
from fedmq.worker.task import Partition, ShardSpec

DEFAULT_LR = 0.1
SEED = 0

Split = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


@functools.lru_cache(maxsize=1)
def _split() -> Split:
    """(x_train, y_train, x_test, y_test), loaded once per process: in-process workers share it.

    x: (N, 64) float32 in [0, 1]; y: (N,) int64. Callers index or clone, never write into these.
    """
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, stratify=y, random_state=SEED)

    def features(a: object) -> torch.Tensor:
        return torch.tensor(a, dtype=torch.float32) / 16.0

    def labels(a: object) -> torch.Tensor:
        return torch.tensor(a, dtype=torch.int64)

    return features(x_train), labels(y_train), features(x_test), labels(y_test)


def build_model() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def load_shard(spec: ShardSpec) -> tuple[torch.Tensor, torch.Tensor]:
    x, y, _, _ = _split()
    rows = shard_rows(y, spec)
    return x[rows], y[rows]  # advanced indexing copies: the cached arrays stay untouched


def load_test() -> tuple[torch.Tensor, torch.Tensor]:
    _, _, x, y = _split()
    return x.clone(), y.clone()


def shard_rows(labels: torch.Tensor, spec: ShardSpec) -> torch.Tensor:
    """The training rows (indices into `labels`, (M,)) that shard `spec` holds."""
    n = labels.shape[0]
    seeded = torch.Generator().manual_seed(SEED)
    if spec.partition is Partition.IID:
        return torch.randperm(n, generator=seeded).tensor_split(spec.count)[spec.index]
    pieces = 2 * spec.count
    if pieces > n:
        raise TaskError(f"{spec.count} label shards need {pieces} pieces but there are only {n} rows")
    by_label = torch.argsort(labels, stable=True).tensor_split(pieces)  # each piece: one or two labels
    assignment = torch.randperm(pieces, generator=seeded)  # (2 * count,)
    mine = assignment[2 * spec.index:2 * spec.index + 2].tolist()
    return torch.cat([by_label[i] for i in mine])
