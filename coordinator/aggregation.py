"""Aggregation math: plain functions over state dicts, with no broker or I/O in sight.

Aggregation streams: each reply is folded into one running sum as it arrives and then
dropped, so a round needs memory for one model's worth of sums, not one per worker.
"""

from __future__ import annotations

import math

import torch

from protocol.messages import Weights


def zeros_like(weights: Weights) -> Weights:
    """An accumulator for `weights`: floating entries keep their dtype, others sum in float64."""
    return {name: torch.zeros_like(t, dtype=t.dtype if t.is_floating_point() else torch.float64)
            for name, t in weights.items()}


def fold_in(total: Weights, update: Weights, weight: float) -> None:
    """total += weight * update, entry by entry, in place (the one mutating step of a round)."""
    for name, acc in total.items():
        acc.add_(update[name].to(acc.dtype), alpha=weight)


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
    if update.keys() != weights.keys():
        missing = sorted(weights.keys() - update.keys())[:3]
        extra = sorted(update.keys() - weights.keys())[:3]
        return f"update keys differ from the model's (missing {missing}, unexpected {extra})"
    for name, t in weights.items():
        if update[name].shape != t.shape:
            return f"update {name!r} has shape {list(update[name].shape)}, the model's is {list(t.shape)}"
    return None


def weighted_mean(values: list[tuple[float, float]]) -> float | None:
    """Mean of (value, weight) pairs, or None when there is nothing to average."""
    total = sum(weight for _, weight in values)
    if not values or total <= 0:
        return None
    mean = sum(value * weight for value, weight in values) / total
    return mean if math.isfinite(mean) else None
