"""Differential-privacy settings of a run, built once at the CLI edge (`--dp-*`, `--target-epsilon`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum


class NoiseMode(Enum):
    """Where the Gaussian noise is added."""

    CENTRAL = "central"  # by the coordinator, on the sum of clipped updates (DP-FedAvg)
    DISTRIBUTED = "distributed"  # each worker adds its share, for secure aggregation


@dataclass(frozen=True, kw_only=True)
class DPSettings:
    """DP-FedAvg's parameters. The clip norm C itself is TrainSettings.clip_norm (--clip), shared
    with secure aggregation; with adaptive clipping it is the first round's C.

    noise_multiplier: Z, the noise std on the sum over the clip norm; None: chosen so that the
    planned rounds spend `target_epsilon` (coordinator.privacy.build).
    """

    noise_multiplier: float | None = None
    delta: float = 1e-5
    target_epsilon: float | None = None  # stop before a round would spend more
    adaptive_clip: bool = False
    target_quantile: float = 0.5  # gamma: the share of updates meant to be at or below C
    clip_lr: float = 0.2  # eta_C of the geometric update (Andrew et al.'s default)
    clip_count_std: float | None = None  # sigma_b, the noise on the count below C; None: sample / 20
    noise: NoiseMode = NoiseMode.CENTRAL

    def __post_init__(self) -> None:
        z = self.noise_multiplier
        if z is None and self.target_epsilon is None:
            raise ValueError("differential privacy needs --dp-noise-multiplier Z, or --target-epsilon E "
                             "to choose Z for the planned rounds")
        if z is not None and not (math.isfinite(z) and z >= 0):
            raise ValueError(f"--dp-noise-multiplier must be a finite number >= 0, got {z}")
        if not 0 < self.delta < 1:
            raise ValueError(f"--dp-delta must lie in (0, 1), got {self.delta}; 1e-5 is usual, "
                             "below 1/(number of workers)")
        if self.target_epsilon is not None and not self.target_epsilon > 0:
            raise ValueError(f"--target-epsilon must be positive, got {self.target_epsilon}")
        if not 0 < self.target_quantile < 1:
            raise ValueError(f"--target-quantile must lie in (0, 1), got {self.target_quantile}")
        if not self.clip_lr > 0:
            raise ValueError(f"--dp-clip-lr must be positive, got {self.clip_lr}")
        if self.clip_count_std is not None and not self.clip_count_std >= 0:
            raise ValueError(f"--dp-clip-count-std must not be negative, got {self.clip_count_std}")
        if self.adaptive_clip and self.noise is NoiseMode.DISTRIBUTED:
            raise ValueError("adaptive clipping needs central noise for now: with distributed noise the "
                             "clipped-count bits would have to be aggregated securely too")
