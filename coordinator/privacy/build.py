"""A run's strategy wrapped in DP-FedAvg when its settings ask for differential privacy."""

from __future__ import annotations

import math
from dataclasses import replace

from fedmq.coordinator.privacy.accountant import calibrate
from fedmq.coordinator.privacy.dp import Cohort, DPFedAvg
from fedmq.coordinator.privacy.settings import NoiseMode
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
                    min_contributors=_fewest_contributors(settings))
    if dp.noise_multiplier is None:
        assert dp.target_epsilon is not None  # DPSettings checks that one of them is given
        z = calibrate(cohort.rate, settings.rounds, dp.delta, dp.target_epsilon)
        if dp.noise is NoiseMode.DISTRIBUTED:  # rounds are accounted with the fewest shares (DPFedAvg._accounted)
            if cohort.min_contributors < 2:
                raise ValueError("distributed noise needs rounds of at least 2 contributors to protect anyone: "
                                 "raise --min-replies or --secagg-threshold")
            z /= math.sqrt((cohort.min_contributors - 1) / cohort.sample)
        dp = replace(dp, noise_multiplier=z)
    try:
        return DPFedAvg(strategy, dp, clip=settings.clip_norm, cohort=cohort)
    except StrategyError as e:
        raise ValueError(str(e)) from e


def _fewest_contributors(settings: TrainSettings) -> int:
    """The fewest workers whose updates a round may close with. Under secure aggregation a round
    completes while its threshold survives every stage (a majority of those that trained, or
    --secagg-threshold), which may be fewer than --min-replies: the budget stop and the choice of
    Z must plan for that many noise shares, or a round could spend more than they assumed."""
    if settings.secagg is None:
        return settings.needed_replies
    majority = settings.needed_replies // 2 + 1
    return min(settings.needed_replies, max(settings.secagg.threshold or majority, majority))
