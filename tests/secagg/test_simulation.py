"""Whole rounds in one process, every message through its wire form: the unmasked mean is plain
FedAvg's within the quantization bound, with dropouts at every stage, and fails clearly below T.

The bound: each worker's coordinates are rounded to the nearest multiple of step = C / (2**(B-1)
- 1), so each is off by at most step / 2; the example-weighted mean of errors each at most
step / 2 is at most step / 2. Inputs are float32, hence the 1e-6 slack.
"""

from __future__ import annotations

import pytest

from fedmq.coordinator.secagg.simulate import simulate
from fedmq.protocol.secagg import keys as k
from fedmq.protocol.secagg import masking
from fedmq.protocol.secagg.errors import TooFewSurvivors
from fedmq.protocol.secagg.graph import degree
from fedmq.protocol.secagg.messages import Stage
from fedmq.protocol.secagg.params import SecAggParams, default_threshold
from tests.secagg.rig import fedavg, make_updates

SHAPES = [(3, 2), (3, 1), (5, 4), (5, 2), (10, 9), (10, 4)]  # (N, K): complete graphs and sparser ones (K=1 of 3 rounds up to the complete graph)


def _params(n: int, k_: int, threshold: int | None = None) -> SecAggParams:
    return SecAggParams(num_workers=n, threshold=threshold or default_threshold(n), neighbours=k_,
                        quant_bits=16, clip=1.0, max_examples=1000)


def _assert_fedavg(result_mean: dict, expected: dict, params: SecAggParams) -> None:  # type: ignore[type-arg]
    bound = masking.quant_step(params) / 2 + 1e-6
    for name, tensor in expected.items():
        error = float((result_mean[name].double() - tensor).abs().max())
        assert error <= bound, f"{name}: error {error} beyond the bound {bound}"


@pytest.mark.parametrize(("n", "k_"), SHAPES)
def test_the_unmasked_mean_is_fedavg_within_the_quantization_bound(n: int, k_: int) -> None:
    # Given n workers with updates and example counts, and no dropouts
    updates, params = make_updates(n), _params(n, k_)
    # When one round of secure aggregation runs
    result = simulate(params=params, updates=updates)
    # Then everyone contributed, the examples add up, and the mean is FedAvg's within step / 2
    assert result.contributors == tuple(updates)
    assert result.total_examples == sum(count for _, count in updates.values())
    _assert_fedavg(result.mean(), fedavg(updates, updates), params)


@pytest.mark.parametrize(("n", "k_"), SHAPES)
@pytest.mark.parametrize("stage", list(Stage))
def test_a_dropout_at_any_stage_still_completes_while_t_remain(n: int, k_: int, stage: Stage) -> None:
    # Given as many workers silent from `stage` on (at most two) as both the threshold and each
    # neighbourhood's threshold tolerate, wherever the graph puts them
    updates, params = make_updates(n), _params(n, k_)
    holders = degree(n, k_) + 1
    local_slack = holders - k.holder_threshold(params, holders=holders, members=n)
    gone = list(updates)[1:1 + min(2, n - params.threshold, local_slack)]
    assert gone
    # When the round runs
    result = simulate(params=params, updates=updates, silent={stage: gone})
    # Then it completes; workers gone before their masked input are out of the sum, workers gone
    # only at UNMASK are in it (their input arrived, and their self masks were rebuilt)
    contributors = list(updates) if stage is Stage.UNMASK else [w for w in updates if w not in gone]
    assert list(result.contributors) == contributors
    _assert_fedavg(result.mean(), fedavg(updates, contributors), params)


def test_one_dropout_after_every_stage_in_one_round() -> None:
    # Given 10 workers, T = 6, and one more gone at each of the four stages
    updates, params = make_updates(10), _params(10, 9, threshold=6)
    silent = {Stage.ADVERTISE: ["w0"], Stage.SHARE: ["w3"], Stage.MASKED_INPUT: ["w5"], Stage.UNMASK: ["w9"]}
    result = simulate(params=params, updates=updates, silent=silent)
    contributors = [w for w in updates if w not in ("w0", "w3", "w5")]
    assert list(result.contributors) == contributors
    _assert_fedavg(result.mean(), fedavg(updates, contributors), params)


@pytest.mark.parametrize("stage", list(Stage))
def test_fewer_than_t_at_any_stage_fails_naming_the_stage_and_the_count(stage: Stage) -> None:
    # Given 5 workers, T = 3, and three of them gone at `stage`
    updates, params = make_updates(5), _params(5, 4, threshold=3)
    # When the round runs / Then it stops at that stage, saying 2 answered of a threshold of 3
    with pytest.raises(TooFewSurvivors, match=f"stage {stage.name}: 2 worker\\(s\\) answered, the threshold is 3") as e:
        simulate(params=params, updates=updates, silent={stage: ["w0", "w2", "w4"]})
    assert "--secagg-threshold" in str(e.value) and e.value.stage == stage.name


def test_a_worker_whose_share_holders_all_left_fails_clearly_on_a_sparse_graph() -> None:
    # Given 10 workers on a ring of degree 2 (T = 6 overall, but 2 of a worker's 3 holders locally)
    updates, params, nonce = make_updates(10), _params(10, 2, threshold=6), b"g" * 32
    graph = k.graph(range(10), params=params, nonce=nonce, job="job", round_=1)
    peers = [f"w{v}" for v in sorted(graph[0])]
    # When both of w0's neighbours leave at UNMASK (8 remain, above T)
    with pytest.raises(TooFewSurvivors, match="share holders of worker 'w0'") as e:
        simulate(params=params, updates=updates, nonce=nonce, silent={Stage.UNMASK: peers})
    # Then the error names w0's self mask, with 1 holder of the 2 needed
    assert "self-mask seed" in str(e.value) and e.value.survived == 1 and e.value.threshold == 2
