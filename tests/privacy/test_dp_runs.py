"""DP training runs end to end on the memory broker: the CLI's refusals, the budget stop, resume."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from fedmq.broker.memory import MemoryBroker, MemoryHub
from fedmq.coordinator.cli import main
from fedmq.coordinator.job import TrainingJob
from fedmq.coordinator.metrics import RoundMetrics, read_metrics
from fedmq.coordinator.privacy.accountant import epsilon_for
from fedmq.coordinator.privacy.dp import Cohort, DPFedAvg
from fedmq.coordinator.privacy.settings import DPSettings
from fedmq.coordinator.settings import TrainSettings
from fedmq.coordinator.strategies import FedAvgM
from fedmq.protocol.messages import TrainConfig, Weights
from fedmq.worker.pool import LocalWorkers
from fedmq.worker.task import load_task

TRAIN = ["train", "--task", "digits", "--workers", "a,b,c", "--broker", "memory://"]


@pytest.mark.parametrize("flags, says", [
    (["--dp-noise-multiplier", "1"], "needs --clip"),
    (["--dp-noise-multiplier", "1", "--clip", "1", "--strategy", "krum"], "linear strategies"),
    (["--dp-noise-multiplier", "1", "--clip", "1", "--strategy", "fedmedian"], "linear strategies"),
    (["--clip", "1"], "add --dp-noise-multiplier"),
    (["--dp-delta", "1e-6"], "add --dp-noise-multiplier"),
    (["--dp-noise-multiplier", "1", "--clip", "1", "--target-quantile", "0.3"], "add --dp-adaptive-clip"),
    (["--dp-noise-multiplier", "-1", "--clip", "1"], "--dp-noise-multiplier must be"),
    (["--dp-noise-multiplier", "1", "--clip", "0"], "--clip must be a positive"),
    (["--dp-noise-multiplier", "1", "--clip", "1", "--dp-delta", "2"], "--dp-delta must lie"),
    (["--dp-noise-multiplier", "1", "--clip", "1", "--mode", "async"], "drop --mode async"),
    (["--dp-noise-multiplier", "2", "--clip", "1", "--dp-adaptive-clip"], "--dp-clip-count-std"),
])
def test_wrong_dp_combinations_exit_2_saying_what_to_do(flags: list[str], says: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    # When `fedmq train` gets a combination that cannot be private, Then it exits 2 before any round
    assert main([*TRAIN, *flags]) == 2
    assert says in capsys.readouterr().err


def test_a_dp_demo_logs_epsilon_each_round_and_stops_cleanly_at_the_target(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Given a DP demo of 4 workers, 2 sampled a round, Z = 1.5, C = 1, a budget of epsilon 4 (3 rounds)
    out = tmp_path / "dp.jsonl"
    with caplog.at_level(logging.WARNING, logger="fedmq.coordinator"):
        code = main(["demo", "--workers", "4", "--sample", "2", "--rounds", "30", "--lr", "0.1",
                     "--dp-noise-multiplier", "1.5", "--clip", "1", "--target-epsilon", "4", "--metrics-out", str(out)])
    # Then it exits 0 before round 30, every round line carries the accountant's epsilon for that
    # many rounds at q = 1/2, within the target, and a last line says why it stopped
    lines = read_metrics(out)
    rounds, stop = lines[:-1], lines[-1]
    assert code == 0 and len(rounds) == 3
    for line in rounds:
        dp = line["strategy"]
        assert isinstance(dp, dict) and dp["dp_contributors"] == 2 and dp["dp_denominator"] == 2
        assert dp["dp_epsilon"] == pytest.approx(epsilon_for(0.5, 1.5, int(line["round"]), 1e-5), abs=1e-6)  # type: ignore[arg-type]
        assert dp["dp_epsilon"] <= 4 and line["train_loss"] is None  # the trainer's loss stays home
    assert stop["after_round"] == len(rounds) and "--target-epsilon 4" in str(stop["stopped"])
    assert "round" not in stop
    assert any("stops after round" in r.getMessage() and "privacy budget" in r.getMessage() for r in caplog.records)


def test_adaptive_clipping_moves_the_clip_and_training_still_learns(tmp_path: Path) -> None:
    # Given three workers, a tiny clip C = 0.05 that every update exceeds, adaptive clipping
    # toward the median and negligible noise (Z = 0.01, sigma_b = 0.01)
    out = tmp_path / "adaptive.jsonl"
    code = main(["demo", "--workers", "3", "--rounds", "4", "--lr", "0.1", "--dp-noise-multiplier", "0.01",
                 "--clip", "0.05", "--dp-adaptive-clip", "--dp-clip-count-std", "0.01", "--metrics-out", str(out)])
    clips = [line["strategy"]["dp_clip"] for line in read_metrics(out)]  # type: ignore[index]
    # Then C grows each round by about exp(0.2 * 0.5): none of the updates fits under it yet
    assert code == 0 and all(b > a for a, b in zip(clips, clips[1:], strict=False))
    assert clips[1] / clips[0] == pytest.approx(1.105, rel=0.02)


def _run(settings: TrainSettings, strategy: DPFedAvg) -> tuple[Weights, list[RoundMetrics]]:
    hub, task, rounds = MemoryHub(), load_task("digits"), []
    with LocalWorkers(hub, task, settings.workers), MemoryBroker(hub) as broker:
        weights = TrainingJob(broker, settings, task=task, strategy=strategy, on_round=rounds.append).run()
    return weights, rounds


def test_resume_gives_the_same_weights_and_epsilon_as_an_uninterrupted_run(tmp_path: Path) -> None:
    workers = ("w0", "w1", "w2")
    dp = DPSettings(noise_multiplier=0.8, adaptive_clip=True, clip_count_std=1.0)
    config = TrainConfig(lr=0.1, seed=3)

    def settings(rounds: int, **extra: object) -> TrainSettings:
        return TrainSettings("digits", workers, rounds=rounds, config=config, clip_norm=0.5, dp=dp, **extra)  # type: ignore[arg-type]

    def strategy(key: bytes) -> DPFedAvg:
        return DPFedAvg(FedAvgM(), dp, clip=0.5, cohort=Cohort(workers=3, sample=3, min_contributors=3), noise_key=key)

    # Given an uninterrupted 4-round DP FedAvgM run with adaptive clipping
    full, full_rounds = _run(settings(4), strategy(bytes(32)))
    # When another run with the same key stops after 2 rounds and a coordinator whose own key
    # differs resumes it to 4 from the checkpoint
    _run(settings(2, checkpoint_dir=tmp_path), strategy(bytes(32)))
    resumed, resumed_rounds = _run(settings(4, checkpoint_dir=tmp_path, resume=True), strategy(b"\1" * 32))
    # Then epsilon, clip and noise of rounds 3 and 4 are exactly the uninterrupted run's, and the
    # weights agree to float32 rounding (as every strategy's resume does: tests/coordinator)
    assert [_dp(r) for r in resumed_rounds] == [_dp(r) for r in full_rounds[2:]]
    assert all(torch.allclose(resumed[k], full[k], atol=1e-6) for k in full)


def _dp(metrics: RoundMetrics) -> str:
    return json.dumps({key: value for key, value in metrics.strategy.items() if key.startswith("dp_")})
