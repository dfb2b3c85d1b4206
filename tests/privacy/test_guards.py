"""Guards from a hostile review: a NaN update is not sent unclipped; distributed noise needs
secure aggregation; an impossible example count is one worker's failure in a secure round; the
budget stop plans for the fewest shares a secure round may close with."""

from __future__ import annotations

import pytest
import torch

from fedmq.coordinator.privacy.build import private_strategy
from fedmq.coordinator.privacy.dp import DPFedAvg
from fedmq.coordinator.privacy.settings import DPSettings, NoiseMode
from fedmq.coordinator.secagg.aggregate import MAX_EXAMPLES, SecureAggregation
from fedmq.coordinator.secagg.settings import SecAggSettings
from fedmq.coordinator.settings import TrainSettings
from fedmq.coordinator.strategy import FedAvg
from fedmq.protocol.errors import TaskError
from fedmq.protocol.messages import Reply
from fedmq.worker.clipping import privatize

WORKERS = tuple(f"w{i}" for i in range(8))


def test_a_non_finite_update_is_refused_not_sent_unclipped() -> None:
    # Given an update with one NaN beside large values
    update = {"a": torch.tensor([float("nan")]), "b": torch.tensor([1000.0, 2000.0])}
    # When the worker privatizes it with a clip norm, Then it refuses instead of skipping the clip
    with pytest.raises(TaskError, match="non-finite"):
        privatize(update, {}, {"clip_norm": 1.0})


def test_distributed_noise_without_secure_aggregation_is_refused() -> None:
    # Given DP with each worker adding only its share of the noise, and no secure aggregation
    dp = DPSettings(noise_multiplier=1.0, noise=NoiseMode.DISTRIBUTED)
    # Then the settings refuse: the coordinator would see each update with a fraction of the noise
    with pytest.raises(ValueError, match="distributed DP noise is for secure aggregation"):
        TrainSettings("digits", WORKERS, clip_norm=1.0, dp=dp)


@pytest.mark.parametrize("count", [0, MAX_EXAMPLES + 1])
def test_a_secure_round_refuses_an_impossible_example_count(count: int) -> None:
    # Given a train answer with an empty update and an example count the ring cannot be sized by
    reply = Reply(job="j", round=1, task_id="t", worker="w0", update={}, num_examples=count, metrics={})
    # Then it is that worker's failure, with the reason
    reason = SecureAggregation.held(reply)
    assert reason is not None and "example count" in reason


def test_the_budget_stop_plans_for_the_fewest_shares_a_secure_round_closes_with() -> None:
    # Given 8 workers, all asked, secure aggregation (a majority, 5, completes a round) and
    # distributed noise with a target epsilon
    dp = DPSettings(noise_multiplier=1.0, target_epsilon=20.0, noise=NoiseMode.DISTRIBUTED)
    settings = TrainSettings("digits", WORKERS, rounds=20, clip_norm=1.0, dp=dp, secagg=SecAggSettings())
    # When the strategy is wrapped
    strategy = private_strategy(FedAvg(), settings)
    # Then its cohort's fewest contributors is the threshold, not the 8 asked
    assert isinstance(strategy, DPFedAvg) and strategy.cohort.min_contributors == 5
