"""Linear strategies against closed forms: FedProx, FedAvgM, FedAdagrad, FedAdam, FedYogi."""

from __future__ import annotations

import math

import pytest
import torch

from fedmq.coordinator.strategies import FedAdagrad, FedAdam, FedAvgM, FedProx, FedYogi
from fedmq.coordinator.strategies.fedopt import _Adaptive
from fedmq.coordinator.strategy import Failure, FedAvg
from fedmq.protocol.errors import StrategyError
from fedmq.protocol.messages import TrainConfig
from tests.coordinator.strategy_helpers import model, reply, run_round, values


def test_fedprox_aggregates_like_fedavg_and_sends_mu_to_workers() -> None:
    # Given FedProx with mu=0.1 and FedAvg, on the same round
    replies = [reply("a", 4.0, counter=3, examples=30), reply("b", 8.0, counter=6, examples=10)]
    prox = FedProx(mu=0.1)
    # When both aggregate it
    new = run_round(prox, model(1.0), replies)
    # Then the server side is FedAvg's example-weighted mean, 1 + (4*30 + 8*10)/40 = 6, counter 10 + 3.75 -> 14
    assert values(new) == values(run_round(FedAvg(), model(1.0), replies)) == ([6.0], 14)
    # And mu travels to the workers' trainer as the option the default trainer reads
    assert prox.train_options() == {"proximal_mu": 0.1}
    assert not prox.holds_cohort


def test_fedavgm_adds_server_momentum_over_rounds_and_a_dropped_worker() -> None:
    # Given server momentum 0.5 and server lr 2 on w = [1, 1], counter 10
    strategy = FedAvgM(server_lr=2.0, momentum=0.5)
    # When round 1 has deltas [2, 0] (1 example) and [4, 2] (3 examples): d1 = [3.5, 1.5]
    w1 = run_round(strategy, model(1.0, 1.0), [reply("a", 2.0, 0.0, counter=5, examples=1),
                                               reply("b", 4.0, 2.0, counter=6, examples=3)])
    # Then v1 = d1 and w = w + 2 * v1 = [8, 4]; the counter moves by round(23/4) = 6
    assert values(w1) == ([8.0, 4.0], 16)
    # When round 2 has one reply [1, -1] and one dropped worker: v2 = 0.5 * v1 + d2 = [2.75, -0.25]
    w2 = run_round(strategy, w1, [reply("c", 1.0, -1.0, counter=3, examples=2)], [Failure("a", "crashed")])
    # Then w = [8 + 5.5, 4 - 0.5]
    assert values(w2) == ([13.5, 3.5], 19)
    assert strategy.metrics()["pseudo_gradient_norm"] == pytest.approx(math.sqrt(2.0))


def test_fedavgm_without_momentum_is_fedavg() -> None:
    replies = [reply("a", 1.0, counter=1, examples=2), reply("b", 4.0, counter=2, examples=1)]
    assert values(run_round(FedAvgM(momentum=0.0), model(0.5), replies)) == values(run_round(FedAvg(), model(0.5), replies))


def test_fedadagrad_exact_small_case() -> None:
    # Given eta=1, beta1=0.5, tau=0.75 (so v0 = 0.5625) and one delta of 1
    strategy = FedAdagrad(eta=1.0, beta1=0.5, tau=0.75)
    # When one round runs: m1 = 0.5, v1 = 0.5625 + 1 = 1.25^2
    new = run_round(strategy, model(2.0), [reply("a", 1.0, counter=4)])
    # Then w = 2 + 0.5 / (1.25 + 0.75) = 2.25; the counter is FedAvg's (no optimizer on counters)
    assert values(new) == ([2.25], 14)


def _reference(rule: str, x: list[float], rounds: list[list[float]], *, eta: float, beta1: float,
               beta2: float, tau: float) -> list[float]:
    """Reddi et al. 2021, Algorithm 2, written out per coordinate in float64."""
    m, v, x = [0.0] * len(x), [tau * tau] * len(x), list(x)
    for d in rounds:
        for j, dj in enumerate(d):
            m[j] = beta1 * m[j] + (1 - beta1) * dj
            if rule == "adagrad":
                v[j] = v[j] + dj * dj
            elif rule == "adam":
                v[j] = beta2 * v[j] + (1 - beta2) * dj * dj
            else:  # yogi
                v[j] = v[j] - (1 - beta2) * dj * dj * math.copysign(1.0, v[j] - dj * dj) * (v[j] != dj * dj)
            x[j] += eta * m[j] / (math.sqrt(v[j]) + tau)
    return x


@pytest.mark.parametrize(("cls", "rule"), [(FedAdagrad, "adagrad"), (FedAdam, "adam"), (FedYogi, "yogi")])
def test_adaptive_strategies_follow_reddi_et_al(cls: type[_Adaptive], rule: str) -> None:
    # Given three rounds whose mean deltas grow, shrink (Yogi's sign flips) and change sign
    options = {"eta": 0.05, "beta1": 0.9, "tau": 0.01} | ({} if rule == "adagrad" else {"beta2": 0.99})
    strategy = cls(**options)
    rounds = [[0.5, -0.2], [0.01, 0.3], [-0.4, 0.0]]
    weights = model(1.0, -1.0)
    for d in rounds:
        # two workers whose example-weighted mean is d: (d - 1) * 1/4 + (d + 1/3) * 3/4 = d
        weights = run_round(strategy, weights, [reply("a", *(x - 1.0 for x in d), examples=1),
                                                reply("b", *(x + 1.0 / 3 for x in d), examples=3)])
    expected = _reference(rule, [1.0, -1.0], rounds, eta=0.05, beta1=0.9, beta2=options.get("beta2", 0.0), tau=0.01)
    assert torch.allclose(weights["w"], torch.tensor(expected, dtype=torch.float32), rtol=1e-5, atol=1e-6)


def test_adaptive_strategies_keep_model_and_state_on_a_round_without_replies() -> None:
    # Given FedAdam after one round
    strategy = FedAdam()
    weights = run_round(strategy, model(1.0), [reply("a", 0.5)])
    before = {k: v.clone() for k, v in strategy.state_dict().items() if isinstance(v, torch.Tensor)}
    # When a round ends with every worker failed
    after = run_round(strategy, weights, [], [Failure("a", "timeout")])
    # Then neither the model nor the moments moved (no data, no step)
    assert torch.equal(after["w"], weights["w"])
    assert all(torch.equal(before[k], v) for k, v in strategy.state_dict().items() if isinstance(v, torch.Tensor))


def test_all_equal_updates_move_every_linear_strategy_like_that_update() -> None:
    # Given three workers sending the same delta
    replies = [reply(name, 0.25, counter=2) for name in "abc"]
    # Then FedAvgM's first step and FedProx are exactly that delta
    assert values(run_round(FedAvgM(), model(1.0), replies)) == ([1.25], 12)
    assert values(run_round(FedProx(), model(1.0), replies)) == ([1.25], 12)


def test_configure_train_adds_fedprox_mu_and_fedopt_eta_l_to_each_workers_config() -> None:
    # Given the configs the job would send: its lr, each worker's own seed, an option already set
    configs = {"a": TrainConfig(lr=0.1, seed=1), "b": TrainConfig(lr=0.1, seed=2, options={"clip": 1.0})}
    # Then FedAvg sends them unchanged, FedProx adds mu, FedYogi with eta_l sets the lr; seeds stay
    assert FedAvg().configure_train(1, configs) == configs
    prox = FedProx(mu=0.5).configure_train(1, configs)
    assert prox["a"] == TrainConfig(lr=0.1, seed=1, options={"proximal_mu": 0.5})
    assert prox["b"].options == {"clip": 1.0, "proximal_mu": 0.5}
    assert FedAdam().configure_train(1, configs) == configs  # eta_l unset: the job's lr
    yogi = FedYogi(eta_l=0.0316).configure_train(1, configs)
    assert [(c.lr, c.seed) for c in yogi.values()] == [(0.0316, 1), (0.0316, 2)]


@pytest.mark.parametrize("build", [lambda: FedAvgM(momentum=1.0), lambda: FedAdam(tau=0.0),
                                   lambda: FedYogi(beta2=1.5), lambda: FedProx(mu=-1.0),
                                   lambda: FedAdagrad(eta=-0.1)])
def test_out_of_range_hyperparameters_are_refused(build: object) -> None:
    with pytest.raises(StrategyError, match="option"):
        build()  # type: ignore[operator]


def test_weights_and_updates_are_never_modified() -> None:
    weights = model(1.0, 2.0)
    update = reply("a", 0.5, 0.5, counter=1)
    for strategy in (FedAvgM(), FedAdam(), FedYogi(), FedAdagrad(), FedProx()):
        run_round(strategy, weights, [update])
        assert values(weights) == ([1.0, 2.0], 10) and values(update.update) == ([0.5, 0.5], 1)
