"""Screening an update before it is folded in: shape, finiteness and (optionally) its norm.

A buggy or hostile worker can send NaN or Inf, or an update so large that one reply decides the
round. One NaN folded in poisons the global model for good, so every value is checked, in the
dtype it will be added in (a float64 1e300 is finite, and Inf once cast to float32). The norm
bound (`--max-update-norm`) is the L2 norm over the floating-point entries: integer buffers
such as BatchNorm's step counters grow with the number of batches and are not weights.
Work is done in slices, so screening never holds a second copy of a large tensor.
"""

from __future__ import annotations

import math

import torch

from coordinator.aggregation import fit_error
from protocol.messages import Weights

SLICE = 1 << 20  # elements per step: bounds the temporaries of isfinite and the norm


def update_error(weights: Weights, update: Weights, max_norm: float | None = None) -> str | None:
    """Why `update` must not be aggregated into `weights`' model, or None when it may be."""
    misfit = fit_error(weights, update)
    if misfit is not None:
        return misfit
    squares = 0.0
    for name, t in weights.items():
        value = update[name].to(t.dtype if t.is_floating_point() else torch.float64)
        if not _finite(value):
            return f"update {name!r} holds NaN or Inf"
        if max_norm is not None and t.is_floating_point():
            squares += _squared_norm(value)
    if max_norm is not None:
        norm = math.sqrt(squares)
        if not norm <= max_norm:  # an overflowing norm (inf) is above any bound
            return f"update norm {norm:.4g} is above the bound {max_norm:g} (--max-update-norm)"
    return None


def _slices(t: torch.Tensor) -> list[torch.Tensor]:
    flat = t.reshape(-1)
    return [flat[i:i + SLICE] for i in range(0, flat.numel(), SLICE)]


def _finite(t: torch.Tensor) -> bool:
    return all(bool(torch.isfinite(part).all()) for part in _slices(t))


def _squared_norm(t: torch.Tensor) -> float:
    # float64 per slice: float32 squares overflow above ~1.8e19, and the bound must still hold.
    return sum(float(torch.linalg.vector_norm(part, dtype=torch.float64)) ** 2 for part in _slices(t))
