"""Client sampling: which workers a round asks, drawn from the run's seed.

The draw is a pure function of (seed, round, worker list), so a resumed run asks the same
workers as an uninterrupted one, and the round's JSON line can record who was asked.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Sampling:
    """How many workers each round asks: `count` of them, or a `fraction`; neither: all."""

    count: int | None = None
    fraction: float | None = None

    def __post_init__(self) -> None:
        if self.count is not None and self.fraction is not None:
            raise ValueError("give --sample K or --fraction F, not both")
        if self.count is not None and self.count < 1:
            raise ValueError(f"--sample must be at least 1, got {self.count}")
        if self.fraction is not None and not 0 < self.fraction <= 1:
            raise ValueError(f"--fraction must be in (0, 1], got {self.fraction}")

    def size(self, workers: int) -> int:
        """How many of `workers` a round asks (at least one, at most all)."""
        if self.count is not None:
            if self.count > workers:
                raise ValueError(f"--sample {self.count} is more than the {workers} workers named")
            return self.count
        if self.fraction is not None:
            return max(1, math.ceil(self.fraction * workers))
        return workers


def sample(workers: Sequence[str], size: int, *, seed: int, round_: int) -> list[str]:
    """`size` of `workers` for round `round_`, in the order the workers were named."""
    if size >= len(workers):
        return list(workers)
    chosen = set(random.Random(f"fedmq-sample:{seed}:{round_}").sample(range(len(workers)), size))
    return [worker for i, worker in enumerate(workers) if i in chosen]
