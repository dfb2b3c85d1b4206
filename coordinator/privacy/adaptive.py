"""Adaptive clipping (Andrew, Thakkar, McMahan and Ramaswamy, "Differentially Private Learning
with Adaptive Clipping", NeurIPS 2021): the clip norm tracks a quantile of the update norms.

Each round every contributor reports one bit, b_i = 1 when its update's norm was at or below the
round's clip norm C (worker.clipping's "clipped" = 0.0). The coordinator releases the noised
share below C, b = (sum_i b_i + N(0, sigma_b^2)) / m, with m the fixed denominator, and moves C
geometrically toward the target quantile gamma:

    C <- C * exp(-eta_C * (b - gamma))

Releasing b costs privacy too. The paper keeps the total at the noise multiplier z by giving
the update sum a slightly larger one,

    z_delta = (z^-2 - (2 sigma_b)^-2)^(-1/2),

so that the two Gaussian releases together are one with multiplier z (the bit has sensitivity
1/2 once centred, hence the 2 sigma_b). It needs 2 sigma_b > z. The paper's defaults are
eta_C = 0.2 and sigma_b = m / 20.
"""

from __future__ import annotations

import math


def update_noise_multiplier(z: float, count_std: float) -> float:
    """z_delta, the multiplier left for the update sum; ValueError when 2 sigma_b <= z > 0."""
    if z == 0:
        return 0.0
    if not 2 * count_std > z:
        raise ValueError(f"adaptive clipping cannot keep noise multiplier {z:g} with clipped-count noise "
                         f"{count_std:g}: it needs 2 * sigma_b > Z (z_delta = (Z^-2 - (2 sigma_b)^-2)^-1/2); "
                         f"raise --dp-clip-count-std above {z / 2:g} (its default is the sample size / 20), or lower Z")
    return float((z ** -2 - (2 * count_std) ** -2) ** -0.5)


def next_clip(clip: float, below: float, target_quantile: float, lr: float) -> float:
    """C * exp(-eta_C * (b - gamma)), b the noised share of updates at or below C."""
    return clip * math.exp(-lr * (below - target_quantile))


def default_count_std(denominator: int) -> float:
    """sigma_b = m / 20, the paper's choice."""
    return denominator / 20
