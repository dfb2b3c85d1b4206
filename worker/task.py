"""Tasks: a model and its data, defined by a Python module that fedmq imports by name.

The contract a task module meets (the coordinator and every worker import the same module):

Required:
    build_model() -> nn.Module
        A fresh model. The coordinator seeds torch before calling it for the initial weights;
        workers call it once and then only load weights into it, so its state-dict keys, shapes
        and dtypes must not depend on anything but the code.
    load_shard(spec: ShardSpec) -> dataset
        This worker's private data: part `spec.index` of `spec.count`, cut by `spec.partition`
        ("iid" or "label"; a task may ignore the partition). Raw data never leaves the worker.

Optional:
    load_test() -> dataset
        A test split kept by the coordinator. Without it the workers evaluate on their shards.
    train(model, dataset, config: TrainConfig) -> dict[str, float]
        Local training, in place on `model` (fedmq sends back the change of its state dict).
        `config.lr`, `.epochs`, `.batch_size`, `.seed`, and `.options` (a strategy's settings,
        e.g. FedProx's "proximal_mu"). Returns metrics, e.g. "train_loss".
    evaluate(model, dataset) -> dict[str, float]
        "eval_loss" and, where meaningful, "eval_accuracy".
    loss(prediction, target) -> Tensor
        A scalar loss used by fedmq's default train and evaluate (default: cross-entropy).
    DEFAULT_LR: float
        The learning rate when none is given (else TrainConfig's default).

Without `train` (or `evaluate`), fedmq's defaults in `worker.training` run; the dataset is then a
pair `(inputs, targets)` of tensors with one first dimension, a map-style torch Dataset of
`(input, target)` items, or a DataLoader (see `worker.data`).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import nn

from fedmq.protocol.errors import TaskError
from fedmq.protocol.messages import TrainConfig
from fedmq.worker import data, training
from fedmq.worker.data import as_pair as as_pair  # re-exported: it lived here first

BUILTIN = {"toy": "fedmq.worker.tasks.toy", "digits": "fedmq.worker.tasks.digits"}


class Partition(StrEnum):
    """How a task cuts its training data into shards (a task may ignore it)."""

    IID = "iid"  # shuffled
    LABEL = "label"  # sorted by label: a few labels per worker
REQUIRED = ("build_model", "load_shard")
OPTIONAL = ("load_test", "train", "evaluate", "loss")
_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")

# A task's dataset is whatever its load_shard returns; only the defaults look inside it.
Dataset = object
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ShardSpec:
    """Which part of a task's training data a worker holds: `index` of `count`, cut by `partition`."""

    index: int
    count: int
    partition: Partition = Partition.IID

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"shard count must be at least 1, got {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard index {self.index} is out of range for {self.count} shard(s): "
                             f"use 0 to {self.count - 1}")
        if self.partition not in Partition.__members__.values():
            raise ValueError(f"partition {self.partition!r} is not one of {', '.join(Partition)}")
        object.__setattr__(self, "partition", Partition(self.partition))  # "label" -> Partition.LABEL

    @classmethod
    def parse(cls, text: str, partition: Partition = Partition.IID) -> ShardSpec:
        """The shard `i/n` names (e.g. "0/4": the first of four); ValueError saying what is wrong."""
        match = _SHARD.match(text)
        if match is None:
            raise ValueError(f"a shard is written i/n, the i-th of n parts counting from 0 (e.g. 0/4); got {text!r}")
        return cls(int(match.group(1)), int(match.group(2)), partition)

    def __str__(self) -> str:
        return f"{self.index}/{self.count} ({self.partition})"


class Task:
    """A task module behind one interface, with fedmq's defaults filled in where it has none."""

    def __init__(self, name: str, module: ModuleType) -> None:
        missing = [attr for attr in REQUIRED if not callable(getattr(module, attr, None))]
        if missing:
            raise TaskError(f"task module {module.__name__!r} must define {' and '.join(missing)}() "
                            f"(the contract: build_model() -> nn.Module, load_shard(spec) -> dataset)")
        not_callable = [attr for attr in OPTIONAL if hasattr(module, attr) and not callable(getattr(module, attr))]
        if not_callable:
            raise TaskError(f"task module {module.__name__!r}: {', '.join(not_callable)} must be functions")
        self.name = name
        self.module = module

    @property
    def default_lr(self) -> float:
        """The module's DEFAULT_LR, else TrainConfig's default learning rate."""
        lr = getattr(self.module, "DEFAULT_LR", TrainConfig.lr)
        if not isinstance(lr, (int, float)) or isinstance(lr, bool) or lr <= 0:
            raise TaskError(f"task {self.name!r}: DEFAULT_LR must be a positive number, got {lr!r}")
        return float(lr)

    @property
    def has_test_split(self) -> bool:
        return callable(getattr(self.module, "load_test", None))

    @property
    def loss(self) -> LossFn:
        custom: LossFn | None = getattr(self.module, "loss", None)
        return custom if custom is not None else F.cross_entropy

    def build_model(self) -> nn.Module:
        model = self.module.build_model()
        if not isinstance(model, nn.Module):
            raise TaskError(f"task {self.name!r}: build_model() returned {type(model).__name__}, not an nn.Module")
        return model

    def load_shard(self, spec: ShardSpec) -> Dataset:
        return self.module.load_shard(spec)

    def load_test(self) -> Dataset:
        if not self.has_test_split:
            raise TaskError(f"task {self.name!r} has no test split (no load_test())")
        return self.module.load_test()

    def train(self, model: nn.Module, dataset: Dataset, config: TrainConfig) -> dict[str, float]:
        custom = getattr(self.module, "train", None)
        if custom is not None:
            return _metrics(self.name, "train", custom(model, dataset, config))
        return training.train(model, self._readable(dataset, "train"), config, self.loss)

    def evaluate(self, model: nn.Module, dataset: Dataset) -> dict[str, float]:
        custom = getattr(self.module, "evaluate", None)
        if custom is not None:
            return _metrics(self.name, "evaluate", custom(model, dataset))
        return training.evaluate(model, self._readable(dataset, "evaluate"), self.loss)

    def num_examples(self, dataset: Dataset) -> int:
        """How many examples `dataset` holds: a pair's first dimension, else its len()."""
        count = data.size(dataset)
        if count is None:
            try:
                count = len(dataset)  # type: ignore[arg-type]
            except TypeError as e:
                raise TaskError(f"task {self.name!r}: a dataset of type {type(dataset).__name__} has no len(); "
                                f"return a pair (inputs, targets), a sized Dataset or a DataLoader over one "
                                f"from load_shard") from e
        return count

    def _readable(self, dataset: Dataset, what: str) -> Dataset:
        if not data.is_supported(dataset):
            raise TaskError(f"task {self.name!r} defines no {what}(), so its dataset must be a pair (inputs, "
                            f"targets) of tensors with the same first dimension, a torch Dataset of (input, "
                            f"target) items or a DataLoader; got {_describe(dataset)}")
        return dataset

    def __repr__(self) -> str:
        return f"Task({self.name!r}, module={self.module.__name__!r})"


def load_task(name: str) -> Task:
    """The task `name`: "toy", "digits", or the dotted path of an importable module (my.tasks.iris).

    TaskError when the module cannot be imported or breaks the contract (see this module's doc).
    """
    path = BUILTIN.get(name, name)
    try:
        module = importlib.import_module(path)
    except ModuleNotFoundError as e:
        if e.name is not None and (path == e.name or path.startswith(e.name + ".")):
            raise TaskError(f"no task {name!r}: built-in tasks are {', '.join(BUILTIN)}; anything else must "
                            f"be an importable module (is {path!r} on PYTHONPATH here?)") from e
        raise TaskError(f"task module {path!r} could not be imported: {e}") from e
    except Exception as e:  # a user's module may raise anything while importing
        raise TaskError(f"task module {path!r} could not be imported: {type(e).__name__}: {e}") from e
    return Task(name, module)


def _metrics(task: str, what: str, result: object) -> dict[str, float]:
    """A user function's metrics as plain floats (they travel in msgpack); TaskError otherwise."""
    if not isinstance(result, Mapping):
        raise TaskError(f"task {task!r}: {what}() must return a dict of metric names to numbers, "
                        f"got {type(result).__name__}")
    metrics: dict[str, float] = {}
    for key, value in result.items():
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        scalar = isinstance(value, torch.Tensor) and value.numel() == 1 and value.dtype != torch.bool
        if not isinstance(key, str) or not (number or scalar):
            raise TaskError(f"task {task!r}: {what}() metric {key!r} must be a name mapped to a number, "
                            f"got {type(value).__name__}")
        metrics[key] = float(value)
    return metrics


def _describe(dataset: Dataset) -> str:
    if isinstance(dataset, (tuple, list)):
        parts = ", ".join(f"tensor{list(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
                          for x in dataset[:3])
        return f"a {type(dataset).__name__} of {len(dataset)} ({parts}{', ...' if len(dataset) > 3 else ''})"
    return type(dataset).__name__
