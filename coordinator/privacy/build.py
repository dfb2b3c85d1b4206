"""A run's strategy wrapped in DP-FedAvg when its settings ask for differential privacy."""

from __future__ import annotations

from dataclasses import replace

from fedmq.coordinator.privacy.accountant import calibrate
from fedmq.coordinator.privacy.dp import Cohort, DPFedAvg
from fedmq.coordinator.settings import TrainSettings
from fedmq.coordinator.strategy import Strategy
from fedmq.protocol.errors import StrategyError


def private_strategy(strategy: Strategy, settings: TrainSettings) -> Strategy:
    """`strategy` as it is without settings.dp; else DP-FedAvg around it. ValueError (a usage
    error) when the combination cannot be private: no --clip, a robust strategy, a noise
    multiplier adaptive clipping cannot keep, a --target-epsilon no noise can meet."""
    dp = settings.dp
    if dp is None or isinstance(strategy, DPFedAvg):
        return strategy
    if settings.clip_norm is None:
        raise ValueError("differential privacy needs --clip C, the L2 norm each worker's update is clipped to "
                         "(e.g. --clip 1.0; or add --dp-adaptive-clip to start from C and adapt it)")
    cohort = Cohort(workers=len(settings.workers), sample=settings.asked_per_round,
                    min_contributors=settings.needed_replies)
    if dp.noise_multiplier is None:
        assert dp.target_epsilon is not None  # DPSettings checks that one of them is given
        dp = replace(dp, noise_multiplier=calibrate(cohort.rate, settings.rounds, dp.delta, dp.target_epsilon))
    try:
        return DPFedAvg(strategy, dp, clip=settings.clip_norm, cohort=cohort)
    except StrategyError as e:
        raise ValueError(str(e)) from e
