"""The robustness benchmark's attackers (benchmarks/attackers) and its cell rules, in process."""

from __future__ import annotations

import pytest
import torch

from benchmarks import robust
from benchmarks.attackers import ATTACKERS_ENV, alie
from fedmq.protocol.messages import TrainConfig
from fedmq.worker import training
from fedmq.worker.task import ShardSpec, load_task

SPEC = ShardSpec(5, 10, "label")
CONFIG = TrainConfig(lr=0.1, seed=3)


def _update(task_name: str) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """The change one round of `task_name`'s train makes to a fresh digits model, and its metrics."""
    task = load_task(task_name)
    torch.manual_seed(0)
    model = task.build_model()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    metrics = task.train(model, task.load_shard(SPEC), CONFIG)
    return {k: model.state_dict()[k] - start[k] for k in start}, metrics


def test_signflip_sends_minus_five_times_the_honest_update() -> None:
    # Given the honest digits update and the sign-flip attacker's, from the same start and seed
    honest, _ = _update("digits")
    flipped, _ = _update("benchmarks.attackers.signflip")
    # Then the attacker's is -5 times the honest one
    for name in honest:
        torch.testing.assert_close(flipped[name], -5 * honest[name], rtol=1e-4, atol=1e-5)


def test_gaussian_sends_unit_noise_and_labelflip_an_ordinary_step() -> None:
    # When the gaussian and label-flip attackers train
    noise, noise_metrics = _update("benchmarks.attackers.gaussian")
    flipped, _ = _update("benchmarks.attackers.labelflip")
    honest, _ = _update("digits")
    # Then the noise has standard deviation about 1 and reports no loss
    values = torch.cat([v.flatten() for v in noise.values()])  # (4810,)
    assert 0.9 < values.std().item() < 1.1 and noise_metrics == {}
    # And label flipping moves the model differently from honest training, by a step of similar size
    norm = {name: torch.cat([v.flatten() for v in u.values()]).norm().item()
            for name, u in (("flip", flipped), ("honest", honest))}
    assert not all(torch.equal(flipped[k], honest[k]) for k in honest)
    assert 0.2 < norm["flip"] / norm["honest"] < 5


def test_alie_z_follows_the_paper() -> None:
    # Given n=10: s = 6 - f supporters, z = Phi^-1((n - s) / n)
    assert alie.z_max(10, 1) == pytest.approx(0.0)
    assert alie.z_max(10, 3) == pytest.approx(0.5244, abs=1e-4)  # Phi^-1(0.7)
    assert alie.z_max(50, 12) == pytest.approx(0.5828, abs=1e-4)  # Phi^-1(0.72)


def test_colluding_alie_attackers_send_the_same_vector(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given three colluding attackers on shards 5, 6, 8
    monkeypatch.setenv(ATTACKERS_ENV, "5,6,8")
    updates = []
    for index in (5, 8):
        task = load_task("benchmarks.attackers.alie")
        torch.manual_seed(0)
        model = task.build_model()
        start = {k: v.clone() for k, v in model.state_dict().items()}
        metrics = task.train(model, task.load_shard(ShardSpec(index, 10, "label")), CONFIG)
        updates.append({k: model.state_dict()[k] - start[k] for k in start})
    # Then both send one vector, made with the paper's z for f=3
    assert metrics == {"alie_z": pytest.approx(0.5244, abs=1e-4)}
    for name in updates[0]:
        torch.testing.assert_close(updates[0][name], updates[1][name])
    # And it is not any single honest update of theirs
    torch.manual_seed(0)
    model = load_task("digits").build_model()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    training.train(model, load_task("digits").load_shard(SPEC), CONFIG)
    assert not torch.allclose(model.state_dict()["0.weight"] - start["0.weight"], updates[0]["0.weight"])


def test_bulyan_with_three_attackers_of_ten_is_reported_not_applicable() -> None:
    # Given n=10: Bulyan needs n >= 4f + 3, Krum n >= 2f + 3
    reason = robust.not_applicable("bulyan", robust.strategy_options("bulyan", 3))
    # Then f=3 Bulyan is n/a with the rule, f=1 Bulyan and f=3 Krum run
    assert reason is not None and "needs 15 workers" in reason and "4f + 3" in reason
    assert robust.not_applicable("bulyan", robust.strategy_options("bulyan", 1)) is None
    assert robust.not_applicable("krum", robust.strategy_options("krum", 3)) is None
    # And trimmed mean is told f through beta = f / n
    assert robust.strategy_options("fedtrimmedavg", 3) == {"beta": "0.3"}


def _result(attack: str, f: int, strategy: str, accuracy: float) -> robust.Result:
    return robust.Result(attack=attack, f=f, strategy=strategy, accuracy=accuracy)


HONEST = robust.Arm(strategy="fedavg", honest_only=True).label


@pytest.mark.parametrize(("multikrum", "met"), [(0.885, True), (0.85, False)])
def test_the_target_compares_the_best_shipped_rule_with_f0_fedavg_and_reports_the_ceiling(
        multikrum: float, met: bool) -> None:
    # Given f=0 FedAvg at 90%, and under f=3 sign-flip: FedAvg 10%, the honest-only reference 95%
    # (not a shipped rule, so it must not count), median 40%, Multi-Krum at `multikrum`
    results = [_result("none", 0, "fedavg", 0.90), _result("signflip", 3, "fedavg", 0.10),
               _result("signflip", 3, HONEST, 0.95), _result("signflip", 3, "fedmedian", 0.40),
               _result("signflip", 3, "multikrum", multikrum)]
    # When the target row is judged
    row = robust.target_row(results)
    # Then it measures Multi-Krum minus f=0 FedAvg, met only within 3 points, and names the ceiling
    assert row.measured == pytest.approx(100 * (multikrum - 0.90))
    assert row.met is met
    assert "multikrum" in row.note and "f=0 FedAvg 90.0%" in row.note and "ceiling 95.0%" in row.note


def test_without_an_f0_fedavg_cell_the_target_is_not_measured_and_not_met() -> None:
    row = robust.target_row([_result("signflip", 3, "multikrum", 0.9)])
    assert row.note == "not measured" and not row.met


def test_the_default_workload_is_lr_half_five_epochs_and_the_first_one_stays_reachable() -> None:
    # Given the benchmark's default workload and the one of the first table, by flags
    default, first = robust.workload(), robust.workload(lr=0.1, epochs=1)
    # Then they differ only in lr and epochs; batch 32 and seed 0 stay
    assert (default.lr, default.epochs, default.batch_size, default.seed) == (0.5, 5, 32, 0)
    assert (first.lr, first.epochs, first.batch_size, first.seed) == (0.1, 1, 32, 0)
    assert "lr 0.1, 1 epoch(s)" in robust.describe(first, 30)
