"""Aggregation math: FedAvg is the example-weighted mean of the updates."""

import torch

from fedmq.coordinator.aggregation import fit_error, fold_in, mean_into, weighted_mean, zeros_like
from fedmq.coordinator.strategy import FedAvg
from fedmq.protocol.messages import Reply


def _reply(worker: str, delta: float, examples: int) -> Reply:
    return Reply(job="j", round=1, task_id=worker, worker=worker, update={"w": torch.full((2,), delta), "n": torch.tensor(delta).long()},
                 num_examples=examples, metrics={})


def test_fedavg_is_the_example_weighted_mean_of_deltas() -> None:
    # Given global weights and two replies, one with three times the examples
    weights = {"w": torch.ones(2), "n": torch.tensor(10)}
    strategy = FedAvg()
    strategy.begin_round(weights)
    # When both are folded in, in either order
    strategy.accumulate(_reply("a", 4.0, 30))
    strategy.accumulate(_reply("b", 8.0, 10))
    new = strategy.end_round([])
    # Then the new weights moved by (4*30 + 8*10) / 40 = 5; integer buffers stay integers
    assert torch.allclose(new["w"], torch.full((2,), 6.0))
    assert new["n"].dtype == torch.int64 and new["n"].item() == 15
    # And the global weights themselves were not modified
    assert torch.equal(weights["w"], torch.ones(2))


def test_a_round_without_replies_keeps_the_model() -> None:
    weights = {"w": torch.ones(2)}
    strategy = FedAvg()
    strategy.begin_round(weights)
    assert torch.equal(strategy.end_round([])["w"], weights["w"])
    assert torch.equal(mean_into(zeros_like(weights), weights, 0.0)["w"], weights["w"])


def test_fold_in_accumulates_in_place() -> None:
    total = zeros_like({"w": torch.zeros(3)})
    fold_in(total, {"w": torch.ones(3)}, 2.0)
    fold_in(total, {"w": torch.ones(3)}, 3.0)
    assert torch.equal(total["w"], torch.full((3,), 5.0))


def test_fit_error_names_the_mismatch() -> None:
    weights = {"fc.weight": torch.zeros(3, 2), "fc.bias": torch.zeros(3)}
    assert fit_error(weights, {"fc.weight": torch.zeros(3, 2), "fc.bias": torch.zeros(3)}) is None
    assert "fc.bias" in (fit_error(weights, {"fc.weight": torch.zeros(3, 2), "fc.bias": torch.zeros(4)}) or "")
    assert "missing ['fc.bias']" in (fit_error(weights, {"fc.weight": torch.zeros(3, 2)}) or "")


def test_weighted_mean() -> None:
    assert weighted_mean([(1.0, 1), (3.0, 3)]) == 2.5
    assert weighted_mean([]) is None
