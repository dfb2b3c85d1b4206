"""The metrics file agrees with the checkpoint after a kill anywhere in a round (memory broker).

A coordinator is stopped at each kill point of round 2 (tests/coordinator/kill_points.py) and a
new one resumes from the checkpoint: the file must hold each round exactly once and end as an
uninterrupted run's file ends. The RabbitMQ twin, with real SIGKILLs, is
test_metrics_resume_rabbitmq.py.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import NoReturn

import pytest

from fedmq.broker.memory import MemoryBroker, MemoryHub
from fedmq.coordinator.checkpoint import load_checkpoint
from fedmq.coordinator.job import TrainingJob
from fedmq.coordinator.metrics import MetricsLog, read_metrics
from fedmq.coordinator.settings import TrainSettings
from fedmq.protocol.messages import TrainConfig
from tests.coordinator import kill_points
from tests.coordinator.kill_points import Killed
from fedmq.worker.pool import LocalWorkers
from fedmq.worker.task import load_task

WORKERS = ("bob", "alice")
ROUNDS = 3
KILLED_IN = 2
# What a round computes, given the seed: the same whether or not the run was killed and resumed.
SAME = ("round", "replies", "failed", "train_loss", "eval_loss", "eval_accuracy", "asked")


def _settings(tmp: Path, **extra: object) -> TrainSettings:
    return TrainSettings("toy", WORKERS, rounds=ROUNDS, config=TrainConfig(lr=0.1, batch_size=2, seed=4),
                         checkpoint_dir=tmp / "checkpoint", metrics_out=tmp / "metrics.jsonl", **extra)  # type: ignore[arg-type]


def _kill() -> NoReturn:
    raise Killed


def _essence(lines: list[dict[str, object]]) -> list[tuple[object, ...]]:
    return [tuple(pytest.approx(line[key]) if isinstance(line[key], float) else line[key] for key in SAME)
            for line in lines]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, object]]:
    settings = _settings(tmp_path_factory.mktemp("uninterrupted"))
    hub = MemoryHub()
    task = load_task("toy")
    with LocalWorkers(hub, task, WORKERS), MemoryBroker(hub) as broker:
        TrainingJob(broker, settings, task=task).run()
    assert settings.metrics_out is not None
    return read_metrics(settings.metrics_out)


@pytest.mark.parametrize("point", sorted(kill_points.POINTS))
def test_a_run_killed_anywhere_in_a_round_logs_each_round_once_after_resume(
        point: str, tmp_path: Path, uninterrupted: list[dict[str, object]]) -> None:
    # Given a three-round run whose coordinator is killed at `point` of round 2
    settings = _settings(tmp_path)
    hub = MemoryHub()
    task = load_task("toy")
    with LocalWorkers(hub, task, WORKERS):
        with pytest.MonkeyPatch.context() as patches:
            kill_points.install(point, KILLED_IN, _kill, patches.setattr)
            with MemoryBroker(hub) as broker, pytest.raises(Killed):
                TrainingJob(broker, settings, task=task).run()
        # When a new coordinator resumes it from the checkpoint
        with MemoryBroker(hub) as broker:
            TrainingJob(broker, replace(settings, resume=True), task=task).run()
    # Then the file holds each round exactly once, as the uninterrupted run's file does
    assert settings.metrics_out is not None and settings.checkpoint_dir is not None
    lines = read_metrics(settings.metrics_out)
    assert [line["round"] for line in lines] == list(range(1, ROUNDS + 1))
    assert _essence(lines) == _essence(uninterrupted)
    checkpoint = load_checkpoint(settings.checkpoint_dir)
    assert checkpoint is not None and checkpoint.round == ROUNDS


def test_a_fresh_run_empties_the_file_and_a_resume_keeps_what_the_checkpoint_covers(tmp_path: Path) -> None:
    # Given a metrics file with rounds 1 to 3 and a torn fourth line
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(f'{{"job": "j", "round": {r}}}\n' for r in (1, 2, 3)) + '{"job": "j", "rou')
    log = MetricsLog(path)
    # When a run resumes after round 2
    log.start(after_round=2)
    # Then rounds 1 and 2 stay, each on its own line
    assert [line["round"] for line in read_metrics(path)] == [1, 2]
    assert path.read_text().endswith("}\n")
    # And when a fresh run starts, the file is emptied
    log.start(after_round=0)
    assert path.read_text() == ""


def test_a_line_missing_only_its_newline_is_kept_and_ended(tmp_path: Path) -> None:
    # Given a kill that left round 2's line whole but without its newline
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"round": 1}\n{"round": 2}')
    # When a run resumes after round 2
    MetricsLog(path).start(after_round=2)
    # Then round 3's line will start on a line of its own
    assert path.read_text() == '{"round": 1}\n{"round": 2}\n'
