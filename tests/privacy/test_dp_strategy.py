"""DP-FedAvg's aggregation in closed form: clipping, the fixed denominator, seeded noise, the inner step."""

from __future__ import annotations

import math

import pytest
import torch

from fedmq.coordinator.privacy.dp import Cohort, DPFedAvg
from fedmq.coordinator.privacy.settings import DPSettings, NoiseMode
from fedmq.coordinator.strategies import FedAvgM, Krum
from fedmq.coordinator.strategies.state import decode_state, encode_state
from fedmq.protocol.codec import pack, unpack
from fedmq.protocol.errors import StrategyError
from fedmq.protocol.messages import TrainConfig, encode_message
from fedmq.protocol.stream import StreamedReply, read_reply
from fedmq.worker import noise
from tests.privacy.dp_helpers import KEY, dp, model, reply, run


def test_without_noise_the_step_is_the_sum_of_clipped_updates_over_the_sample_size() -> None:
    # Given C = 1, a sample of 4 and three replies (one of norm 5, clipped to 1), unequal shards
    strategy = dp(z=0.0, clip=1.0, sample=4)
    replies = [reply("a", 0.6, 0.0, examples=100), reply("b", 3.0, 4.0, examples=1), reply("c", 0.0, -0.5)]
    # When a round ends
    new = run(strategy, model(1.0, 1.0), replies)
    # Then w moves by (0.6 + 0.6 + 0, 0 + 0.8 - 0.5) / 4, unweighted by examples and divided by 4,
    # not by the 3 that answered; the counter does not move
    assert new["w"].tolist() == pytest.approx([1.0 + 1.2 / 4, 1.0 + 0.3 / 4], abs=1e-6)
    assert new["n"].item() == 10
    metrics = strategy.metrics()
    assert metrics["dp_contributors"] == 3 and metrics["dp_denominator"] == 4 and metrics["dp_epsilon"] == "inf"


def test_one_huge_update_moves_the_model_by_at_most_clip_over_denominator() -> None:
    # Given honest workers and one that skips its own clipping and sends a 1e6-norm update
    honest = [reply("a", 0.1, 0.1), reply("b", -0.1, 0.2), reply("c", 0.0, 0.1)]
    without = run(dp(clip=0.5, sample=4), model(0.0, 0.0), honest)
    with_attacker = run(dp(clip=0.5, sample=4), model(0.0, 0.0), [*honest, reply("evil", 6e5, -8e5)])
    # Then the attacker's contribution to the new model has norm at most C / m = 0.125
    moved = float(torch.linalg.vector_norm(with_attacker["w"] - without["w"]))
    assert moved == pytest.approx(0.125, rel=1e-5) and moved <= 0.125 * (1 + 1e-6)


def test_central_noise_is_the_keyed_gaussian_of_std_z_c_on_the_sum() -> None:
    # Given Z = 2, C = 1.5, a sample of 2 and a known noise key
    strategy = dp(z=2.0, clip=1.5, workers=5, sample=2)
    new = run(strategy, model(0.0, 0.0, 0.0), [reply("a", 1.0, 0.0, 0.0), reply("b", 0.0, 1.0, 0.0)])
    # Then w = (sum + N(0, (Z C)^2)) / 2 with the noise the key and round 1 give
    drawn = noise.gaussian((3,), 3.0, KEY, "update:1:w").to(torch.float32)
    expected = (torch.tensor([1.0, 1.0, 0.0]) + drawn) / 2
    assert torch.equal(new["w"], expected)
    assert strategy.metrics()["dp_noise_std"] == 3.0 and strategy.metrics()["dp_sample_rate"] == 0.4


def test_the_inner_server_optimizer_steps_on_the_noised_mean() -> None:
    # Given FedAvgM (lr 1, momentum 0.5) inside DP with Z = 0, two rounds of the same replies
    strategy = dp(z=0.0, clip=10.0, inner=FedAvgM(server_lr=1.0, momentum=0.5), sample=2)
    weights = run(strategy, model(0.0), [reply("a", 1.0), reply("b", 3.0)])
    weights = run(strategy, weights, [reply("a", 1.0), reply("b", 3.0)])
    # Then the mean delta is 2 both rounds: v1 = 2, v2 = 0.5 * 2 + 2 = 3, w = 0 + 2 + 3
    assert weights["w"].tolist() == pytest.approx([5.0])
    assert "pseudo_gradient_norm" in strategy.metrics()


def test_train_options_ask_workers_to_clip_and_in_distributed_mode_to_add_their_noise_share() -> None:
    configs = {"a": TrainConfig(lr=0.1, options={"x": 1})}
    central = dp(z=1.0, clip=2.0, sample=4, adaptive_clip=True, clip_count_std=1.0).configure_train(1, configs)
    assert central["a"].options == {"x": 1, "clip_norm": 2.0, "report_clipped": True} and central["a"].lr == 0.1
    spread = dp(z=1.0, clip=2.0, sample=4, noise=NoiseMode.DISTRIBUTED).configure_train(1, configs)
    assert spread["a"].options["noise_std"] == pytest.approx(1.0)  # Z C / sqrt(m) = 2 / 2


def test_distributed_mode_accounts_for_the_noise_shares_that_arrived() -> None:
    # Given distributed noise, Z = 1, a sample of 4 of which 2 answer
    strategy = dp(z=1.0, clip=1.0, sample=4, workers=8, noise=NoiseMode.DISTRIBUTED)
    run(strategy, model(0.0), [reply("a", 0.1), reply("b", 0.1)])
    # Then the round is accounted with the shares other than the protected worker's own:
    # z sqrt((2 - 1) / 4) = 0.5, not the planned 1
    assert strategy.accountant.rounds == [(0.5, 0.5)]
    assert strategy.metrics()["dp_noise_multiplier"] == 0.5


def test_streamed_replies_are_clipped_and_folded_like_whole_ones() -> None:
    big = reply("a", 3.0, 4.0)
    whole = run(dp(clip=1.0, sample=1), model(0.0, 0.0), [big])
    strategy = dp(clip=1.0, sample=1)
    strategy.begin_round(model(0.0, 0.0))
    assert strategy.streams
    streamed = read_reply([encode_message(big)])
    assert isinstance(streamed, StreamedReply)
    strategy.accumulate_streamed(streamed)
    assert torch.equal(strategy.end_round([])["w"], whole["w"])


def test_robust_strategies_are_refused() -> None:
    with pytest.raises(StrategyError, match="linear strategies"):
        DPFedAvg(Krum(f=1), DPSettings(noise_multiplier=1.0), clip=1.0,
                 cohort=Cohort(workers=5, sample=5, min_contributors=5))


def test_state_round_trips_key_clip_ledger_and_inner_state() -> None:
    # Given a DP FedAvgM after one noised round, its state through the checkpoint codec
    first = dp(z=1.0, clip=1.0, inner=FedAvgM(), adaptive_clip=True, clip_count_std=1.0)
    weights = run(first, model(0.0, 0.0), [reply("a", 1.0, 0.0, clipped=1.0)])
    state = decode_state(unpack(bytes(pack(encode_state(first.state_dict())))))
    # When a fresh one (another key) loads it and both run the same round
    second = DPFedAvg(FedAvgM(), first.settings, clip=1.0, cohort=first.cohort)
    second.load_state_dict(state)
    a = run(first, weights, [reply("a", 0.5, 0.5, clipped=0.0)])
    b = run(second, weights, [reply("a", 0.5, 0.5, clipped=0.0)])
    # Then weights, clip and epsilon agree exactly
    assert torch.equal(a["w"], b["w"]) and first.clip == second.clip
    assert first.accountant.epsilon() == second.accountant.epsilon() and math.isfinite(first.accountant.epsilon())


def test_a_checkpoint_of_another_strategy_is_refused() -> None:
    with pytest.raises(StrategyError, match="written by"):
        dp().load_state_dict({"kind": "fedavgm"})
