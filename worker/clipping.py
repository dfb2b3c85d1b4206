"""Clipping and noising a worker's update before it leaves the worker (DP-FedAvg, secure aggregation).

A strategy asks for it through TrainConfig.options:

- `clip_norm` = C > 0: the whole update, every floating entry taken as one vector, is scaled by
  min(1, C / ||update||) so its L2 norm is at most C. This bounds what one worker can move the
  aggregate by, which is what differential privacy's sensitivity (and secure aggregation's
  quantization range) rests on. Integer and bool entries (BatchNorm's num_batches_tracked) are
  zeroed: a counter's delta is the number of local batches, so it would reveal the shard's size
  outside the guarantee, and it cannot be clipped or noised meaningfully.
- `noise_std` = s >= 0: after clipping, N(0, s^2) is added to every floating entry (worker.noise,
  a fresh key per update). This is the distributed-noise mode used with secure aggregation:
  each of m workers adds its share of the noise, so no single party ever sees the un-noised sum.
- `report_clipped` = true: the reply's metrics carry "clipped" = 1.0 when the update was scaled
  down (its norm was above C), else 0.0, the one bit adaptive clipping (Andrew et al. 2021) needs.
  The norm itself is never reported.

Under `clip_norm` the reply's metrics are only these and "train_seconds": the trainer's own
metrics (train_loss, ...) are functions of the private data the guarantee does not cover, so
they stay on the worker.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from fedmq.protocol.errors import TaskError
from fedmq.protocol.messages import Option, Weights
from fedmq.worker import noise

CLIP_NORM = "clip_norm"
NOISE_STD = "noise_std"
REPORT_CLIPPED = "report_clipped"
CLIPPED = "clipped"  # the reply metric: 1.0 when the update was scaled down, else 0.0
KEPT_METRICS = ("train_seconds",)  # what a clipped reply's metrics may carry besides CLIPPED


def privatize(update: Weights, metrics: Mapping[str, float],
              options: Mapping[str, Option]) -> tuple[Weights, dict[str, float]]:
    """The update and metrics to send: unchanged without `clip_norm`; else clipped (and noised)
    as the module docstring says. TaskError when an option is malformed."""
    clip = _number(options, CLIP_NORM)
    if clip is None:
        if NOISE_STD in options or REPORT_CLIPPED in options:
            raise TaskError(f"options {NOISE_STD!r} and {REPORT_CLIPPED!r} need {CLIP_NORM!r}")
        return update, dict(metrics)
    if not clip > 0:
        raise TaskError(f"option {CLIP_NORM!r} must be positive, got {clip}")
    std = _number(options, NOISE_STD) or 0.0
    if std < 0:
        raise TaskError(f"option {NOISE_STD!r} must not be negative, got {std}")
    norm = l2_norm(update)
    if not math.isfinite(norm):  # NaN compares false with everything: it would skip the clip
        raise TaskError("local training produced a non-finite update (NaN or inf): lower the learning rate")
    scale = min(1.0, clip / norm) if norm > 0 else 1.0
    key = noise.fresh_key() if std > 0 else b""
    private: Weights = {}
    for name, t in update.items():
        if not t.is_floating_point():
            private[name] = torch.zeros_like(t)
            continue
        clipped = t.to(torch.float64) * scale
        if std > 0:
            clipped += noise.gaussian(t.shape, std, key, name)
        private[name] = clipped.to(t.dtype)
    kept = {name: metrics[name] for name in KEPT_METRICS if name in metrics}
    if options.get(REPORT_CLIPPED) is True:
        kept[CLIPPED] = 1.0 if norm > clip else 0.0
    return private, kept


def l2_norm(update: Weights) -> float:
    """The L2 norm of all floating entries as one vector, summed in float64 (no overflow)."""
    squares = sum(float(torch.linalg.vector_norm(t, dtype=torch.float64)) ** 2
                  for t in update.values() if t.is_floating_point())
    return math.sqrt(squares)


def _number(options: Mapping[str, Option], key: str) -> float | None:
    value = options.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TaskError(f"option {key!r} must be a finite number, got {str(value)[:50]!r}")
    return float(value)
