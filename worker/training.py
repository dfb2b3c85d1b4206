"""fedmq's default local training and evaluation, for tasks that bring no `train` / `evaluate`.

Plain minibatch SGD over any dataset `worker.data` reads (a pair of tensors, a torch Dataset,
a DataLoader). Deterministic: the same seed and the same starting weights give the same trained
weights (on the same device and build). The round's `config.options` may ask for a FedProx
proximal term (`proximal_mu`, Li et al. 2020), which keeps local weights near the global ones.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from fedmq.protocol.messages import TrainConfig
from fedmq.worker import data

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
PROXIMAL_MU = "proximal_mu"  # the TrainConfig option FedProx sends


def train(model: nn.Module, dataset: object, config: TrainConfig,
          loss_fn: LossFn = F.cross_entropy) -> dict[str, float]:
    """Train `model` in place; {"train_loss": mean over the last epoch's examples}.

    Batches move to the model's device. With option `proximal_mu` = mu > 0 the loss minimised is
    loss + mu/2 * ||w - w_start||^2 (FedProx); the reported train_loss is the task's loss alone.
    """
    device = _device_of(model)
    step = _Sgd(model, config.lr)
    shuffle = torch.Generator().manual_seed(config.seed)  # CPU generator: same order on any device
    proximal = _proximal(model, float(config.options.get(PROXIMAL_MU, 0.0)))
    model.train()
    losses: list[torch.Tensor] = []
    sizes: list[int] = []
    for _ in range(config.epochs):
        losses, sizes = [], []  # only the last epoch's loss is reported: the model after training
        for inputs, targets in data.train_batches(dataset, config.batch_size, shuffle):
            x, y = inputs.to(device), targets.to(device)  # (B, ...), (B, ...)
            loss = loss_fn(model(x), y)  # ()
            step.zero_grad()
            (loss + proximal() if proximal else loss).backward()  # type: ignore[no-untyped-call]
            step()
            losses.append(loss.detach())  # kept on the device: one transfer at the end, not a sync per batch
            sizes.append(x.shape[0])
    if not sizes:
        raise ValueError("cannot train on an empty dataset")
    total = 0.0
    values = torch.stack(losses).reshape(len(losses)).to(torch.float64).tolist()  # one-element losses of any shape
    for value, size in zip(values, sizes, strict=True):
        total += value * size  # in batch order, in float64, as a running sum on the device would
    return {"train_loss": total / sum(sizes)}


@torch.no_grad()
def evaluate(model: nn.Module, dataset: object, loss_fn: LossFn = F.cross_entropy) -> dict[str, float]:
    """{"eval_loss": mean over examples} plus "eval_accuracy" for class indices.

    Accuracy is reported when targets are 1-D integer class indices (B,) and predictions are
    scores (B, C): the prediction is the argmax.
    """
    device = _device_of(model)
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    classes, seen = True, 0
    for inputs, targets in data.eval_batches(dataset):
        x, y = inputs.to(device), targets.to(device)  # (B, ...), (B, ...)
        prediction = model(x)  # (B, C) for classifiers
        total += loss_fn(prediction, y).to(torch.float64) * x.shape[0]
        classes = classes and _class_indices(y) and prediction.ndim == 2
        if classes:
            correct += (prediction.argmax(dim=1) == y).sum()  # ()
        seen += x.shape[0]
    if seen == 0:
        raise ValueError("cannot evaluate on an empty dataset")
    metrics = {"eval_loss": total.item() / seen}
    if classes:
        metrics["eval_accuracy"] = correct.item() / seen
    return metrics


class _Sgd:
    """Plain SGD, bit for bit torch.optim.SGD(params, lr) (no momentum, no weight decay).

    torch.optim wraps every step and zero_grad in a profiler range and a dynamo guard, which
    for small models cost more than the update itself (a third of a digits worker's training).
    The update is the one torch.optim.SGD makes: _foreach_add_ is its path on CUDA, and on the
    CPU it falls back to the per-tensor add_ that torch.optim.SGD calls there (as it does for
    sparse gradients, which foreach kernels refuse).
    """

    def __init__(self, model: nn.Module, lr: float) -> None:
        self._params: list[torch.Tensor] = [p for p in model.parameters() if p.requires_grad]
        self._lr = lr

    def zero_grad(self) -> None:
        for p in self._params:
            p.grad = None

    @torch.no_grad()
    def __call__(self) -> None:
        stepped = [p for p in self._params if p.grad is not None]  # unused parameters stay put
        grads = [p.grad for p in stepped if p.grad is not None]
        if not grads:  # nothing to step (foreach kernels refuse empty lists; SGD steps nothing)
            return
        if any(g.is_sparse for g in grads):  # foreach kernels take no sparse tensors; neither does SGD
            for p, g in zip(stepped, grads, strict=True):
                p.add_(g, alpha=-self._lr)
        else:
            torch._foreach_add_(stepped, grads, alpha=-self._lr)


def _proximal(model: nn.Module, mu: float) -> Callable[[], torch.Tensor] | None:
    """mu/2 * ||w - w_start||^2 over the trainable parameters, or None when mu is 0."""
    if mu < 0:
        raise ValueError(f"{PROXIMAL_MU} must not be negative, got {mu}")
    if mu == 0:
        return None
    params = [p for p in model.parameters() if p.requires_grad]
    start = [p.detach().clone() for p in params]

    def term() -> torch.Tensor:
        return (mu / 2) * sum(((p - s) ** 2).sum() for p, s in zip(params, start, strict=True))  # type: ignore[return-value]
    return term


def _class_indices(targets: torch.Tensor) -> bool:
    dtype = targets.dtype
    return targets.ndim == 1 and not dtype.is_floating_point and not dtype.is_complex and dtype != torch.bool


def _device_of(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")
