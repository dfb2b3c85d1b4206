"""The datasets fedmq's default train and evaluate accept, and the batches they yield.

A task's `load_shard` and `load_test` may return any of:
- a pair `(inputs, targets)` of tensors with one first dimension: batches are indexed by hand,
  the fastest path for data that fits in memory (a DataLoader's collation costs more than one
  step of a small model);
- a map-style `torch.utils.data.Dataset` whose items are `(input, target)` (a TensorDataset, a
  user's class): batched by a DataLoader with the task's batch size, shuffled by the round's seed;
- a `DataLoader`: used as it is, with its own batch size, sampler and workers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized

import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from fedmq.protocol.errors import TaskError

Batch = tuple[torch.Tensor, torch.Tensor]  # inputs (B, ...), targets (B, ...)
EVAL_BATCH = 1024  # rows per forward pass in evaluation: bounds activation memory, not a tuning knob


def as_pair(dataset: object) -> Batch | None:
    """`dataset` as (inputs, targets) when it is two tensors with one first dimension, else None."""
    if not isinstance(dataset, (tuple, list)) or len(dataset) != 2:
        return None
    inputs, targets = dataset
    if not isinstance(inputs, torch.Tensor) or not isinstance(targets, torch.Tensor):
        return None
    if inputs.ndim == 0 or targets.ndim == 0 or inputs.shape[0] != targets.shape[0]:
        return None
    return inputs, targets


def is_supported(dataset: object) -> bool:
    """Whether the default train and evaluate can read `dataset`."""
    return as_pair(dataset) is not None or isinstance(dataset, (DataLoader, TorchDataset))


def size(dataset: object) -> int | None:
    """How many examples `dataset` holds, or None when it cannot say (an unsized iterable)."""
    pair = as_pair(dataset)
    if pair is not None:
        return int(pair[0].shape[0])
    inner = dataset.dataset if isinstance(dataset, DataLoader) else dataset
    return len(inner) if isinstance(inner, Sized) else None


def train_batches(dataset: object, batch_size: int, shuffle: torch.Generator) -> Iterator[Batch]:
    """One epoch of shuffled batches; the order is a function of `shuffle`'s state only."""
    pair = as_pair(dataset)
    if pair is not None:
        inputs, targets = pair
        order = torch.randperm(inputs.shape[0], generator=shuffle)  # (N,)
        for start in range(0, inputs.shape[0], batch_size):
            rows = order[start:start + batch_size]  # (B,)
            yield inputs[rows], targets[rows]
        return
    yield from _checked(_loader(dataset, batch_size, shuffle))


def eval_batches(dataset: object) -> Iterator[Batch]:
    """Every example once, in order, in batches of at most EVAL_BATCH (a DataLoader's own size)."""
    pair = as_pair(dataset)
    if pair is not None:
        inputs, targets = pair
        for start in range(0, inputs.shape[0], EVAL_BATCH):
            yield inputs[start:start + EVAL_BATCH], targets[start:start + EVAL_BATCH]
        return
    yield from _checked(_loader(dataset, EVAL_BATCH, None))


def _loader(dataset: object, batch_size: int, shuffle: torch.Generator | None) -> DataLoader[object]:
    if isinstance(dataset, DataLoader):
        return dataset
    if isinstance(dataset, TorchDataset):
        # The generator is seeded per round by the caller: a resumed run shuffles the same way.
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle is not None, generator=shuffle)
    raise TaskError(f"a dataset of type {type(dataset).__name__} cannot be read by fedmq's default train and "
                    f"evaluate: return a pair (inputs, targets) of tensors, a torch Dataset of (input, target) "
                    f"items or a DataLoader, or define train() and evaluate() in the task")


def _checked(loader: DataLoader[object]) -> Iterator[Batch]:
    for batch in loader:
        if not isinstance(batch, (tuple, list)) or len(batch) != 2 \
                or not all(isinstance(part, torch.Tensor) for part in batch):
            raise TaskError(f"a dataset's items must be (input, target) pairs that collate to two tensors; "
                            f"a batch came as {type(batch).__name__}")
        yield batch[0], batch[1]
