"""fedmq's default local training and evaluation, for tasks that bring no `train` / `evaluate`.

Plain minibatch SGD over a pair of tensors, indexed by hand: a DataLoader's per-batch overhead
(collation, iterator objects) costs more than one step of a small MLP. Deterministic: the same
seed and the same starting weights give the same trained weights (on the same device and build).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from protocol.messages import TrainConfig

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
EVAL_BATCH = 1024  # rows per forward pass in evaluation: bounds activation memory, not a tuning knob


def train(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, config: TrainConfig,
          loss_fn: LossFn = F.cross_entropy) -> dict[str, float]:
    """Train `model` in place; {"train_loss": mean over the last epoch's batches, weighted by size}.

    inputs: (N, ...), targets: (N, ...) on any device; batches move to the model's device.
    """
    n = inputs.shape[0]
    if n == 0:
        raise ValueError("cannot train on an empty dataset")
    device = _device_of(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr)
    shuffle = torch.Generator().manual_seed(config.seed)  # CPU generator: same order on any device
    model.train()
    total = torch.zeros((), dtype=torch.float64, device=device)
    for _ in range(config.epochs):
        total.zero_()  # only the last epoch's loss is reported: the model after training
        order = torch.randperm(n, generator=shuffle)  # (N,)
        for start in range(0, n, config.batch_size):
            batch = order[start:start + config.batch_size]  # (B,)
            x = inputs[batch].to(device)  # (B, ...)
            y = targets[batch].to(device)  # (B, ...)
            loss = loss_fn(model(x), y)  # ()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]  # torch leaves backward unannotated
            optimizer.step()
            # Accumulated on the device: one .item() at the end instead of a sync per batch.
            total += loss.detach().to(torch.float64) * len(batch)
    return {"train_loss": total.item() / n}


@torch.no_grad()
def evaluate(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
             loss_fn: LossFn = F.cross_entropy) -> dict[str, float]:
    """{"eval_loss": mean over batches weighted by size} plus "eval_accuracy" for class indices.

    Accuracy is reported when targets are 1-D integer class indices (N,) and predictions are
    scores (N, C): the prediction is the argmax.
    """
    n = inputs.shape[0]
    if n == 0:
        raise ValueError("cannot evaluate on an empty dataset")
    device = _device_of(model)
    classes = targets.ndim == 1 and not targets.dtype.is_floating_point and not targets.dtype.is_complex \
        and targets.dtype != torch.bool
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    for start in range(0, n, EVAL_BATCH):
        x = inputs[start:start + EVAL_BATCH].to(device)  # (B, ...)
        y = targets[start:start + EVAL_BATCH].to(device)  # (B, ...)
        prediction = model(x)  # (B, C) for classifiers
        total += loss_fn(prediction, y).to(torch.float64) * x.shape[0]
        if classes and prediction.ndim == 2:
            correct += (prediction.argmax(dim=1) == y).sum()  # ()
        else:
            classes = False
    metrics = {"eval_loss": total.item() / n}
    if classes:
        metrics["eval_accuracy"] = correct.item() / n
    return metrics


def _device_of(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")
