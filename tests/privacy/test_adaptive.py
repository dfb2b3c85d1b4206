"""Adaptive clipping (Andrew et al. 2021): the geometric clip update and the noise multiplier split."""

from __future__ import annotations

import math

import pytest

from fedmq.coordinator.privacy.adaptive import next_clip, update_noise_multiplier
from fedmq.worker import noise
from tests.privacy.dp_helpers import KEY, dp, model, reply, run


def test_the_clip_moves_geometrically_toward_the_target_quantile() -> None:
    # Given no noise at all (Z = 0, sigma_b = 0), C = 1, gamma = 0.5, eta_C = 0.2, a sample of 4
    strategy = dp(z=0.0, clip=1.0, adaptive_clip=True, clip_count_std=0.0, target_quantile=0.5, clip_lr=0.2)
    # When 3 of 4 updates were at or below C
    run(strategy, model(0.0), [reply("a", 0.1, clipped=0.0), reply("b", 0.1, clipped=0.0),
                               reply("c", 0.1, clipped=0.0), reply("d", 0.1, clipped=1.0)])
    # Then b = 3/4 and C becomes exp(-0.2 * (0.75 - 0.5)): most updates fit, so C shrinks
    assert strategy.clip == pytest.approx(math.exp(-0.05), rel=1e-12)
    assert strategy.metrics()["dp_below_clip"] == 0.75 and strategy.metrics()["dp_clip"] == 1.0


def test_the_clipped_count_is_noised_with_sigma_b_and_a_missing_report_counts_as_clipped() -> None:
    strategy = dp(z=1.0, clip=2.0, adaptive_clip=True, clip_count_std=1.5, target_quantile=0.3, clip_lr=0.5)
    run(strategy, model(0.0), [reply("a", 0.1, clipped=0.0), reply("b", 0.1), reply("c", 0.1, clipped=7.0)])
    drawn = float(noise.gaussian((1,), 1.5, KEY, "count:1")[0])
    below = (1 + drawn) / 4
    assert strategy.clip == pytest.approx(2.0 * math.exp(-0.5 * (below - 0.3)), rel=1e-12)


def test_the_update_noise_multiplier_keeps_the_total_at_z() -> None:
    # z_delta = (z^-2 - (2 sigma_b)^-2)^-1/2, and the two releases together are worth z again
    z_delta = update_noise_multiplier(1.0, 1.0)
    assert z_delta == pytest.approx((1 - 0.25) ** -0.5)
    assert (z_delta ** -2 + 2.0 ** -2) ** -0.5 == pytest.approx(1.0)
    assert update_noise_multiplier(0.0, 0.0) == 0.0
    with pytest.raises(ValueError, match="--dp-clip-count-std"):
        update_noise_multiplier(1.0, 0.5)
    assert next_clip(2.0, 0.5, 0.5, 0.2) == 2.0


def test_the_update_sum_gets_z_delta_times_the_round_clip() -> None:
    strategy = dp(z=1.0, clip=2.0, adaptive_clip=True, clip_count_std=1.0)
    run(strategy, model(0.0), [reply("a", 0.1, clipped=0.0)])
    assert strategy.metrics()["dp_noise_std"] == pytest.approx(2.0 * (1 - 0.25) ** -0.5)
    assert strategy.metrics()["dp_noise_multiplier"] == 1.0  # accounted with the total z
