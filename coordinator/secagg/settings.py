"""A run's secure-aggregation settings, built once at the CLI edge (`--secure-aggregation`, ...)."""

from __future__ import annotations

from dataclasses import dataclass

from fedmq.protocol.secagg.params import MAX_QUANT_BITS


@dataclass(frozen=True, kw_only=True)
class SecAggSettings:
    """threshold: T, the fewest workers that must answer every stage (None: a majority of those
    that trained, which is also the least T may be). neighbours: K, each worker's masking
    neighbours (None: every other worker up to 16, then O(log N), per protocol.secagg.params).
    quant_bits: B, bits per coordinate of the clipped update. stage_timeout_s: how long each
    stage waits for answers; a worker silent that long has dropped out of the round."""

    threshold: int | None = None
    neighbours: int | None = None
    quant_bits: int = 16
    stage_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.threshold is not None and self.threshold < 2:
            raise ValueError(f"--secagg-threshold must be at least 2, got {self.threshold}")
        if self.neighbours is not None and self.neighbours < 1:
            raise ValueError(f"--secagg-neighbours must be at least 1, got {self.neighbours}")
        if not 2 <= self.quant_bits <= MAX_QUANT_BITS:
            raise ValueError(f"--quant-bits must be 2 to {MAX_QUANT_BITS}, got {self.quant_bits}")
        if not self.stage_timeout_s > 0:
            raise ValueError(f"--secagg-timeout must be positive, got {self.stage_timeout_s}")
