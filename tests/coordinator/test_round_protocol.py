"""The open round protocol: sampled workers, strategy settings sent to them, strategy metrics logged."""

import json
from pathlib import Path

import torch

from fedmq.broker.memory import MemoryBroker, MemoryHub
from fedmq.coordinator.job import TrainingJob
from fedmq.coordinator.metrics import RoundMetrics
from fedmq.coordinator.sampling import Sampling
from fedmq.coordinator.settings import TrainSettings
from fedmq.coordinator.strategies import FedProx
from fedmq.protocol.messages import Reply, TrainConfig, Weights
from fedmq.worker.pool import LocalWorkers
from fedmq.worker.task import load_task

WORKERS = tuple(f"w{i}" for i in range(5))


def _run(settings: TrainSettings) -> tuple[Weights, list[RoundMetrics]]:
    hub = MemoryHub()
    task = load_task(settings.task)
    rounds: list[RoundMetrics] = []
    with LocalWorkers(hub, task, settings.workers), MemoryBroker(hub) as broker:
        return TrainingJob(broker, settings, task=task, on_round=rounds.append).run(), rounds


def test_a_sampled_round_asks_k_workers_and_a_resume_asks_the_same(tmp_path: Path) -> None:
    # Given five workers, two asked per round, and a run resumed after round 2
    out, resumed_out = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    common = {"rounds": 4, "sampling": Sampling(count=2), "config": TrainConfig(lr=0.1, seed=3)}
    whole, _ = _run(TrainSettings("digits", WORKERS, metrics_out=out, **common))  # type: ignore[arg-type]
    ckpt = tmp_path / "ckpt"
    _run(TrainSettings("digits", WORKERS, metrics_out=resumed_out, checkpoint_dir=ckpt,
                       **{**common, "rounds": 2}))  # type: ignore[arg-type]
    resumed, _ = _run(TrainSettings("digits", WORKERS, metrics_out=resumed_out, checkpoint_dir=ckpt,
                                    resume=True, **common))  # type: ignore[arg-type]
    # When the JSON lines are read
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    again = [json.loads(line) for line in resumed_out.read_text().splitlines()]
    # Then each round asked two distinct workers, only they replied, the draws vary by round,
    # and the resumed run asked the same workers and ended at the same weights (up to the order
    # in which two replies were summed)
    assert all(len(set(line["asked"])) == 2 and line["replies"] == 2 for line in lines)
    assert len({tuple(line["asked"]) for line in lines}) > 1
    assert [line["asked"] for line in again] == [line["asked"] for line in lines]
    assert all(torch.allclose(whole[k], resumed[k], atol=1e-6) for k in whole)


class RecordingProx(FedProx):
    """FedProx that keeps each reply's metrics, to see what the workers' train was given."""

    def __init__(self, **options: float) -> None:
        super().__init__(**options)
        self.seen: list[dict[str, float]] = []

    def accumulate(self, reply: Reply) -> None:
        self.seen.append(reply.metrics)
        super().accumulate(reply)


def test_fedprox_mu_reaches_each_workers_train() -> None:
    # Given a task whose train reports the options it was given, and FedProx with mu 0.5
    settings = TrainSettings("tests.coordinator.options_task", WORKERS[:3], rounds=2)
    strategy = RecordingProx(mu=0.5)
    hub = MemoryHub()
    task = load_task(settings.task)
    # When two rounds run
    with LocalWorkers(hub, task, settings.workers), MemoryBroker(hub) as broker:
        TrainingJob(broker, settings, task=task, strategy=strategy).run()
    # Then all six trainings ran with proximal_mu 0.5
    assert [m.get("option_proximal_mu") for m in strategy.seen] == [0.5] * 6


def test_strategy_metrics_reach_the_json_line(tmp_path: Path) -> None:
    # Given Krum with f=1 over five workers
    out = tmp_path / "k.jsonl"
    # When one round runs
    _run(TrainSettings("digits", WORKERS, rounds=1, metrics_out=out, strategy="krum",
                       strategy_options=(("f", "1"),)))
    # Then the line names the one worker Krum selected
    line = json.loads(out.read_text())
    assert line["strategy"]["selected"] in [[w] for w in WORKERS]
