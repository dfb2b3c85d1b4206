"""Strategy state through the checkpoint codec: a restored strategy continues exactly."""

from __future__ import annotations

import pytest
import torch

from fedmq.coordinator.strategies import STRATEGIES, FedAdam, FedAvgM, build_strategy, decode_state, encode_state
from fedmq.coordinator.strategy import Failure, Strategy
from fedmq.protocol.codec import pack, unpack
from fedmq.protocol.errors import DecodeError, StrategyError
from fedmq.protocol.messages import Reply, Weights
from tests.coordinator.strategy_helpers import run_round


def _round(round_: int) -> list[Reply]:
    """Eight workers' deltas for a round: a conv-like float entry, a bias and a counter."""
    generator = torch.Generator().manual_seed(round_)
    return [Reply(job="job", round=round_, task_id=f"t{i}", worker=f"w{i}", update={
        "conv": torch.randn(2, 3, generator=generator), "bias": torch.randn(3, generator=generator) * (i + 1),
        "num_batches_tracked": torch.tensor(10 + i)}, num_examples=5 + i, metrics={}) for i in range(8)]


def _start() -> Weights:
    return {"conv": torch.ones(2, 3), "bias": torch.zeros(3), "num_batches_tracked": torch.tensor(0)}


def _through_checkpoint(strategy: Strategy) -> dict[str, object]:
    """The state as a checkpoint file would hold it and give it back."""
    data = bytes(pack({"strategy": encode_state(strategy.state_dict())}))
    return decode_state(unpack(data)["strategy"])


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_a_restored_strategy_ends_where_an_uninterrupted_one_ends(name: str) -> None:
    # Given a strategy run for two rounds, with a dropped worker in round 2, and its state then
    uninterrupted = build_strategy(name, {})
    weights = run_round(uninterrupted, _start(), _round(1))
    weights = run_round(uninterrupted, weights, _round(2)[:7], [Failure("w7", "timed out")])
    saved = _through_checkpoint(uninterrupted)
    assert all(isinstance(v, (torch.Tensor, int, float, str)) for v in saved.values())
    # When a fresh strategy of the same kind is restored from it and both play rounds 3 and 4
    resumed = build_strategy(name, {})
    resumed.load_state_dict(saved)
    resumed_weights = expected = weights
    for round_ in (3, 4):
        expected = run_round(uninterrupted, expected, _round(round_))
        resumed_weights = run_round(resumed, resumed_weights, _round(round_))
    # Then they agree bit for bit
    assert all(torch.equal(expected[k], resumed_weights[k]) for k in expected)


def test_stateful_strategies_record_their_kind_and_refuse_another_ones_state() -> None:
    adam = FedAdam()
    run_round(adam, _start(), _round(1))
    state = adam.state_dict()
    assert state["kind"] == "fedadam" and {"m/conv", "v/conv", "m/bias", "v/bias"} <= state.keys()
    assert "m/num_batches_tracked" not in state  # counters have no moments
    yogi = build_strategy("fedyogi", {})
    with pytest.raises(StrategyError, match="written by 'fedadam'.*--strategy fedadam"):
        yogi.load_state_dict(state)
    with pytest.raises(StrategyError, match="names no strategy"):
        yogi.load_state_dict({"m/conv": torch.zeros(2, 3)})


def test_a_state_that_does_not_fit_the_model_is_refused_at_the_first_round() -> None:
    momentum = FedAvgM()
    momentum.load_state_dict({"kind": "fedavgm", "velocity/conv": torch.zeros(3, 2), "velocity/bias": torch.zeros(3)})
    with pytest.raises(StrategyError, match="'conv' has shape \\[3, 2\\], the model's is \\[2, 3\\]"):
        run_round(momentum, _start(), _round(1))
    momentum.load_state_dict({"kind": "fedavgm", "velocity/conv": torch.zeros(2, 3)})
    with pytest.raises(StrategyError, match="missing \\['bias'\\]"):
        run_round(momentum, _start(), _round(1))


def test_an_empty_state_starts_fresh() -> None:
    fresh, restored = FedAdam(), FedAdam()
    restored.load_state_dict({})
    a, b = run_round(fresh, _start(), _round(1)), run_round(restored, _start(), _round(1))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("junk", [[1, 2], {"m/conv": [1, 2]}, {"m/conv": {"dtype": "float32", "shape": [2], "data": b"x"}},
                                  {3: 1}])
def test_decode_state_refuses_what_encode_state_never_writes(junk: object) -> None:
    with pytest.raises(DecodeError):
        decode_state(junk)


def test_encode_state_refuses_values_the_codec_cannot_hold() -> None:
    with pytest.raises(StrategyError, match="a list"):
        encode_state({"history": [1, 2]})
