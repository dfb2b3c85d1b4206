"""--resume across modes: a synchronous run pointed at an asynchronous run's checkpoint directory
(and the reverse) fails with a message naming the right mode, instead of silently starting over."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedmq.broker.memory import MemoryBroker, MemoryHub
from fedmq.coordinator.async_job import AsyncJob
from fedmq.coordinator.async_settings import AsyncSettings
from fedmq.coordinator.async_state import STATE_FILE
from fedmq.coordinator.checkpoint import FILE_NAME, load_checkpoint
from fedmq.coordinator.job import TrainingJob
from fedmq.coordinator.metrics import RoundMetrics
from fedmq.coordinator.settings import TrainSettings
from fedmq.protocol.errors import FedmqError
from fedmq.protocol.messages import TrainConfig
from fedmq.worker.pool import LocalWorkers
from fedmq.worker.task import load_task

WORKERS = ("w0", "w1")


def _settings(directory: Path, *, rounds: int, resume: bool) -> TrainSettings:
    return TrainSettings("digits", WORKERS, rounds=rounds, config=TrainConfig(lr=0.1, seed=3),
                         checkpoint_dir=directory, resume=resume, round_timeout_s=30.0)


def _run_sync(settings: TrainSettings) -> list[RoundMetrics]:
    hub, task, rounds = MemoryHub(), load_task("digits"), []
    with LocalWorkers(hub, task, WORKERS), MemoryBroker(hub) as broker:
        TrainingJob(broker, settings, task=task, on_round=rounds.append).run()
    return rounds


def _run_async(settings: TrainSettings) -> None:
    hub, task = MemoryHub(), load_task("digits")
    with LocalWorkers(hub, task, WORKERS), MemoryBroker(hub) as broker:
        AsyncJob(broker, settings, AsyncSettings(buffer=2), task=task).run()


def test_a_sync_resume_on_an_async_checkpoint_fails_and_names_mode_async(tmp_path: Path) -> None:
    # Given a directory an asynchronous run checkpointed (two versions)
    _run_async(_settings(tmp_path, rounds=2, resume=False))
    assert (tmp_path / STATE_FILE).exists() and not (tmp_path / FILE_NAME).exists()
    # When a synchronous run resumes from it
    with pytest.raises(FedmqError, match="asynchronous run's checkpoint.*--mode async") as failed:
        _run_sync(_settings(tmp_path, rounds=4, resume=True))
    # Then it fails naming the directory, before training a round or writing a checkpoint of its own
    assert str(tmp_path) in str(failed.value)
    assert not (tmp_path / FILE_NAME).exists()


def test_an_async_resume_on_a_sync_checkpoint_fails_and_says_to_drop_mode_async(tmp_path: Path) -> None:
    # Given a directory a synchronous run checkpointed after two rounds
    assert [m.round for m in _run_sync(_settings(tmp_path, rounds=2, resume=False))] == [1, 2]
    # When an asynchronous run resumes from it
    with pytest.raises(FedmqError, match="synchronous run's checkpoint; resume it without --mode async"):
        _run_async(_settings(tmp_path, rounds=4, resume=True))
    # Then nothing of an asynchronous run was written there
    assert not (tmp_path / STATE_FILE).exists()


def test_a_sync_resume_reads_its_own_checkpoint_and_an_empty_directory_is_a_fresh_start(tmp_path: Path) -> None:
    # Given an empty directory, Then there is no checkpoint to resume (a fresh start, no error)
    assert load_checkpoint(tmp_path) is None
    # Given a synchronous checkpoint after round 1, and an async state file beside it
    _run_sync(_settings(tmp_path, rounds=1, resume=False))
    (tmp_path / STATE_FILE).write_bytes(b"not read by a synchronous resume")
    # When a synchronous run resumes to round 2, Then it continues from its own checkpoint
    assert [m.round for m in _run_sync(_settings(tmp_path, rounds=2, resume=True))] == [2]
    checkpoint = load_checkpoint(tmp_path)
    assert checkpoint is not None and checkpoint.round == 2
