"""Aggregation math: plain functions over state dicts, with no broker or I/O in sight.

Aggregation streams: each reply is folded into one running sum as it arrives and then
dropped, so a round needs memory for one model's worth of sums, not one per worker.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from fedmq.protocol.messages import Weights
from fedmq.protocol.stream import StreamedUpdate

FOLD_SLICE = 1 << 16  # elements added at a time: a 256 KiB temporary for float32


def zeros_like(weights: Weights) -> Weights:
    """An accumulator for `weights`: floating entries keep their dtype, others sum in float64."""
    return {name: torch.zeros_like(t, dtype=t.dtype if t.is_floating_point() else torch.float64)
            for name, t in weights.items()}


def fold_in(total: Weights, update: Weights, weight: float) -> None:
    """total += weight * update, entry by entry, in place (the one mutating step of a round)."""
    for name, acc in total.items():
        flat, values = acc.view(-1), update[name].reshape(-1)
        for start in range(0, flat.numel(), FOLD_SLICE):  # slices: temporaries stay small
            add_scaled(flat[start:start + FOLD_SLICE], values[start:start + FOLD_SLICE], weight)


def fold_streamed(total: Weights, update: StreamedUpdate, weight: float) -> None:
    """fold_in of an update still in its received parts, piece by piece: the same sums, bit for bit."""
    for name, acc in total.items():
        flat = acc.view(-1)
        for offset, piece in update.pieces(name, FOLD_SLICE):
            add_scaled(flat[offset:offset + piece.numel()], piece, weight)


def add_scaled(acc: torch.Tensor, values: torch.Tensor, weight: float) -> None:
    """acc += weight * values, as a product rounded once and then a sum rounded once.

    Two elementwise IEEE steps give the same bits however a tensor is cut into slices; torch's
    fused `add_(alpha=)` does not for float16 and bfloat16, whose vector and scalar loops round
    differently. Half-precision sums are computed in float32 and rounded back.
    """
    work = torch.float32 if acc.dtype in (torch.float16, torch.bfloat16) else acc.dtype
    scaled = values.to(work) * weight  # a new tensor: `values` may be a read-only view
    if work == acc.dtype:
        acc.add_(scaled)
    else:
        acc.copy_(scaled.add_(acc.to(work)))


def mean_into(total: Weights, weights: Weights, total_weight: float) -> Weights:
    """weights + total / total_weight: the new global model after a round of summed deltas.

    Floating entries are computed in `total`'s own memory, which is consumed: a round then
    never holds a third model-sized buffer.
    """
    if total_weight <= 0:
        return {name: t.clone() for name, t in weights.items()}
    new: Weights = {}
    for name, t in weights.items():
        if t.is_floating_point():  # total[name] has t's dtype (zeros_like)
            new[name] = total[name].div_(total_weight).add_(t)
        else:
            new[name] = t + (total[name] / total_weight).round().to(t.dtype)
    return new


def fit_error(weights: Weights, update: Weights) -> str | None:
    """Why `update` cannot be folded into a model shaped like `weights`, or None when it fits."""
    return shape_error(weights, {name: t.shape for name, t in update.items()})


def shape_error(weights: Weights, shapes: Mapping[str, torch.Size]) -> str | None:
    """Why an update of these tensor shapes cannot be folded into `weights`' model, or None."""
    if shapes.keys() != weights.keys():
        missing = sorted(weights.keys() - shapes.keys())[:3]
        extra = sorted(shapes.keys() - weights.keys())[:3]
        return f"update keys differ from the model's (missing {missing}, unexpected {extra})"
    for name, t in weights.items():
        if shapes[name] != t.shape:
            return f"update {name!r} has shape {list(shapes[name])}, the model's is {list(t.shape)}"
    return None


def weighted_mean(values: list[tuple[float, float]]) -> float | None:
    """Mean of (value, weight) pairs, or None when there is nothing to average."""
    total = sum(weight for _, weight in values)
    if not values or total <= 0:
        return None
    mean = sum(value * weight for value, weight in values) / total
    return mean if math.isfinite(mean) else None
