"""Server optimizers on a model with BatchNorm: parameters take the server step, running
statistics move by FedAvg's plain example-weighted mean (issue 9: FedOpt stepped the buffers)."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch
from torch import nn

from fedmq.coordinator.strategies import FedAdam, FedAvgM, FedYogi
from fedmq.coordinator.strategies.fedopt import BUFFER_NAMES
from fedmq.coordinator.strategies.state import decode_state, encode_state
from fedmq.coordinator.strategy import FedAvg, Strategy
from fedmq.protocol.codec import pack, unpack
from fedmq.protocol.errors import StrategyError
from fedmq.protocol.messages import Reply, Weights

BUFFERS = ("1.running_mean", "1.running_var", "1.num_batches_tracked")


def bn_model() -> Weights:
    """A real torch model's state dict: Linear(3, 2) then BatchNorm1d(2)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


def update(weights: Weights, param: float, mean: float, var: float, batches: int) -> Weights:
    """A delta shaped like `weights`: `param` on every parameter, the given moves on the buffers."""
    moves = {"1.running_mean": mean, "1.running_var": var}
    delta = {name: torch.full_like(t, moves.get(name, param)) for name, t in weights.items() if t.is_floating_point()}
    delta["1.num_batches_tracked"] = torch.tensor(batches)
    return delta


def reply(worker: str, delta: Weights, examples: int) -> Reply:
    return Reply(job="job", round=1, task_id=f"t-{worker}", worker=worker, update=delta, num_examples=examples,
                 metrics={})


def run_round(strategy: Strategy, weights: Weights, replies: list[Reply]) -> Weights:
    strategy.begin_round(weights)
    for r in replies:
        strategy.accumulate(r)
    return strategy.end_round([])


def two_replies(weights: Weights) -> list[Reply]:
    # weighted means (1:3): param (1*2 + 3*(-2))/4 = -1, mean (4 + 0)/4 = 1, var (-2 - 6)/4 = -2,
    # batches (1*3 + 3*5)/4 = 4.5 -> 4 (half to even)
    return [reply("a", update(weights, 2.0, 4.0, -2.0, 3), 1), reply("b", update(weights, -2.0, 0.0, -2.0, 5), 3)]


@pytest.mark.parametrize("strategy", [FedAdam(eta=0.1), FedYogi(eta=0.5), FedAvgM(server_lr=2.0, momentum=0.9)])
def test_buffers_move_by_the_weighted_mean_and_parameters_by_the_server_step(strategy: Strategy) -> None:
    # Given a BatchNorm model (running_var = 1) and a round whose running_var mean delta is -2
    weights = bn_model()
    weights["1.running_var"] = torch.full((2,), 3.0)
    # When a server optimizer and FedAvg aggregate the same round
    new = run_round(strategy, weights, two_replies(weights))
    fedavg = run_round(FedAvg(), weights, two_replies(weights))
    # Then every buffer is exactly FedAvg's: mean + 1, var 3 - 2 = 1, batches 0 + 4
    for name in BUFFERS:
        assert torch.equal(new[name], fedavg[name]), name
    assert new["1.running_mean"].tolist() == [1.0, 1.0]
    assert new["1.running_var"].tolist() == [1.0, 1.0]
    assert int(new["1.num_batches_tracked"]) == 4
    # And every parameter took the server step, not FedAvg's (mean delta -1 everywhere)
    for name in ("0.weight", "0.bias", "1.weight", "1.bias"):
        assert not torch.allclose(new[name], fedavg[name]), name


def test_fedadam_parameters_follow_reddi_et_al_on_a_batchnorm_model() -> None:
    # Given FedAdam's defaults but eta=0.1, tau=1e-3 on the BatchNorm model
    weights = bn_model()
    new = run_round(FedAdam(eta=0.1), weights, two_replies(weights))
    # Then each parameter moves by eta * m / (sqrt(v) + tau), m = 0.1 d, v = 0.99 tau^2 + 0.01 d^2, d = -1
    m, v = 0.1 * -1.0, 0.99 * 1e-6 + 0.01
    step = 0.1 * m / (v ** 0.5 + 1e-3)
    for name in ("0.weight", "1.bias"):
        assert torch.allclose(new[name], weights[name] + step), name


def test_fedavgm_momentum_never_carries_a_running_variance_below_zero() -> None:
    # Given FedAvgM (momentum 0.9) and running_var 1.0; round 1 moves it to 0.1, round 2 leaves it there
    strategy = FedAvgM(momentum=0.9)
    weights = bn_model()
    weights["1.running_var"] = torch.ones(2)
    w1 = run_round(strategy, weights, [reply("a", update(weights, 0.0, 0.0, -0.9, 1), 1)])
    w2 = run_round(strategy, w1, [reply("a", update(w1, 0.0, 0.0, 0.0, 1), 1)])
    # Then the variance is where the workers put it: momentum would have made it 0.1 - 0.81 < 0
    assert w1["1.running_var"].tolist() == pytest.approx([0.1, 0.1])
    assert w2["1.running_var"].tolist() == pytest.approx([0.1, 0.1])


def test_optimizer_state_and_norm_cover_parameters_only_and_a_resume_continues_exactly() -> None:
    # Given FedAdam after one round on the BatchNorm model
    weights = bn_model()
    first = FedAdam()
    w1 = run_round(first, weights, two_replies(weights))
    # Then its moments hold the four parameters and no buffer
    state = first.state_dict()
    assert {key.partition("/")[2] for key in state if key.startswith("m/")} == {"0.weight", "0.bias", "1.weight",
                                                                                  "1.bias"}
    assert not any(key.endswith(tuple(BUFFER_NAMES)) for key in state)
    # And the pseudo-gradient norm is over the 2*3 + 2 + 2 + 2 = 12 parameter entries of delta -1 only
    assert first.metrics()["pseudo_gradient_norm"] == pytest.approx(12 ** 0.5)
    # When a fresh FedAdam restores that state through the codec and both run round 2
    resumed = FedAdam()
    resumed.load_state_dict(decode_state(unpack(bytes(pack({"s": encode_state(state)})))["s"]))
    a, b = run_round(first, w1, two_replies(w1)), run_round(resumed, w1, two_replies(w1))
    # Then both end at the same weights
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_state_with_moments_for_buffers_does_not_fit() -> None:
    # Given a checkpointed FedAvgM state that also holds a velocity for a running mean
    weights = bn_model()
    params = {name: torch.zeros_like(t) for name, t in weights.items()
              if t.is_floating_point() and not name.endswith(("running_mean", "running_var"))}
    strategy = FedAvgM()
    strategy.load_state_dict({"kind": "fedavgm", **{f"velocity/{n}": t for n, t in params.items()},
                              "velocity/1.running_mean": torch.zeros(2)})
    # When it steps a round, Then it refuses the state, naming the unexpected entry
    with pytest.raises(StrategyError, match="running_mean"):
        run_round(strategy, weights, two_replies(weights))


class _ScaleBufferAdam(FedAdam):
    buffer_names: ClassVar[frozenset[str]] = BUFFER_NAMES | {"scale"}


def test_a_subclass_names_its_own_float_buffers() -> None:
    # Given a model with a custom float buffer "scale", and FedAdam told about it
    weights = {"w": torch.zeros(2), "norm.scale": torch.ones(2)}
    replies = [reply("a", {"w": torch.ones(2), "norm.scale": torch.full((2,), 0.5)}, 1)]
    # When FedAdam and the subclass aggregate
    plain = run_round(FedAdam(), weights, replies)
    told = run_round(_ScaleBufferAdam(), weights, replies)
    # Then only the subclass moves "scale" by the mean (1.5); plain FedAdam steps it like a parameter
    assert told["norm.scale"].tolist() == [1.5, 1.5]
    assert plain["norm.scale"].tolist() != [1.5, 1.5]
    assert torch.equal(told["w"], plain["w"])
