"""Entry-wise helpers the strategies share: compute dtypes, applying a delta, stacking a cohort.

Every strategy aggregates the workers' deltas (update = local - global) entry by entry. Floating
entries are computed in at least float32 and cast back to their own dtype; non-floating entries
(BatchNorm's num_batches_tracked, integer or bool buffers) are computed in float64 by the same
rule and rounded half-to-even, exactly as FedAvg rounds its integer means.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from fedmq.protocol.messages import Weights


def compute_dtype(t: torch.Tensor) -> torch.dtype:
    """float16/bfloat16 entries are computed in float32 (their sums and moments would lose
    digits); wider floats keep their dtype; everything else is computed in float64."""
    if t.is_floating_point():
        return torch.promote_types(t.dtype, torch.float32)
    return torch.float64


def apply_delta(weights: Weights, delta: Weights) -> Weights:
    """weights + delta: floats cast back to each entry's dtype, other entries rounded."""
    new: Weights = {}
    for name, t in weights.items():
        d = delta[name]
        if t.is_floating_point():
            new[name] = (t.to(d.dtype) + d).to(t.dtype)
        else:
            new[name] = t + d.round().to(t.dtype)
    return new


def stack_entry(updates: Sequence[Weights], name: str, dtype: torch.dtype) -> torch.Tensor:
    """One entry of every update, stacked along a new first dimension: [n, *shape]."""
    return torch.stack([u[name].to(dtype) for u in updates])


def coordinatewise(weights: Weights, updates: Sequence[Weights],
                   rule: Callable[[torch.Tensor], torch.Tensor]) -> Weights:
    """The delta whose every coordinate is `rule` applied to that coordinate's n values.

    `rule` maps a stack [n, *shape] to [*shape]. One entry is stacked at a time, so the extra
    memory is n copies of the largest entry, on top of the n held updates.
    """
    return {name: rule(stack_entry(updates, name, compute_dtype(t))) for name, t in weights.items()}


def mean_of(weights: Weights, updates: Sequence[Weights]) -> Weights:
    """The unweighted mean delta of `updates` (a non-empty cohort)."""
    return coordinatewise(weights, updates, lambda stack: stack.mean(dim=0))


def sq_norm(tensors: Weights) -> float:
    """Sum of squares over the floating entries (the parameters, not the counters)."""
    return float(sum(float(t.double().pow(2).sum()) for t in tensors.values() if t.is_floating_point()))
