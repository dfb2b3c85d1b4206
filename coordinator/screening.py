"""Screening an update before it is folded in: shape, finiteness and (optionally) its norm.

A buggy or hostile worker can send NaN or Inf, or an update so large that one reply decides the
round. One NaN folded in poisons the global model for good, so every value is checked, in the
dtype it will be added in (a float64 1e300 is finite, and Inf once cast to float32). The norm
bound (`--max-update-norm`) is the L2 norm over the floating-point entries: integer buffers
such as BatchNorm's step counters grow with the number of batches and are not weights.
Work is done in slices, so screening never holds a second copy of a large tensor; an update
still in its received parts (protocol.stream) is screened piece by piece, before any of it is
folded in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import torch

from fedmq.coordinator.aggregation import shape_error
from fedmq.protocol.messages import Weights
from fedmq.protocol.stream import StreamedUpdate

SLICE = 1 << 18  # elements per step: bounds the temporaries of the cast, isfinite and the norm


def update_error(weights: Weights, update: Weights, max_norm: float | None = None) -> str | None:
    """Why `update` must not be aggregated into `weights`' model, or None when it may be."""
    misfit = shape_error(weights, {name: t.shape for name, t in update.items()})
    if misfit is not None:
        return misfit
    return _values_error(weights, {name: _slices(update[name]) for name in weights}, max_norm)


def streamed_update_error(weights: Weights, update: StreamedUpdate, max_norm: float | None = None) -> str | None:
    """update_error of an update still in its received parts, read one piece at a time."""
    misfit = shape_error(weights, update.shapes())
    if misfit is not None:
        return misfit
    return _values_error(weights, {name: (piece for _, piece in update.pieces(name, SLICE)) for name in weights},
                         max_norm)


def _values_error(weights: Weights, pieces: dict[str, Iterable[torch.Tensor]], max_norm: float | None) -> str | None:
    squares = 0.0
    for name, t in weights.items():
        dtype = t.dtype if t.is_floating_point() else torch.float64
        for piece in pieces[name]:
            square = _finite_square(piece.to(dtype))
            if square is None:
                return f"update {name!r} holds NaN or Inf"
            if t.is_floating_point():
                squares += square
    if max_norm is not None:
        norm = math.sqrt(squares)
        if not norm <= max_norm:  # an overflowing norm (inf) is above any bound
            return f"update norm {norm:.4g} is above the bound {max_norm:g} (--max-update-norm)"
    return None


def _finite_square(value: torch.Tensor) -> float | None:
    """The squared L2 norm of `value`, summed in float64; None when it holds NaN or Inf.

    One reduction does both: squares of float32 (or narrower) entries cannot overflow float64, so
    the norm is finite exactly when every entry is (and it is twice as fast as isfinite().all()).
    Only float64 entries above ~1e154 can overflow it; those get the elementwise check.
    """
    norm = float(torch.linalg.vector_norm(value, dtype=torch.float64))
    if math.isfinite(norm):
        return norm * norm
    if value.dtype == torch.float64 and bool(torch.isfinite(value).all()):
        return math.inf  # finite, yet too large to square: above any norm bound
    return None


def _slices(t: torch.Tensor) -> Iterator[torch.Tensor]:
    flat = t.reshape(-1)
    return (flat[i:i + SLICE] for i in range(0, flat.numel(), SLICE))
