"""Asynchronous training on the memory broker: FedBuff and FedAsync runs, their JSON lines, and
exactly-once aggregation when the coordinator is killed at each step of an aggregation and resumed.

The tagged task (tests/coordinator/tagged_task.py) makes every update a one-hot of its own slot,
so the final weights say which updates were applied and how often.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

import pytest
import torch

import fedmq.coordinator.async_job as async_job
import fedmq.coordinator.metrics as metrics_module
import fedmq.coordinator.rounds as rounds
from fedmq.broker.memory import MemoryBroker, MemoryHub
from fedmq.coordinator.async_job import AsyncJob
from fedmq.coordinator.async_settings import AsyncSettings
from fedmq.coordinator.async_state import load_state
from fedmq.coordinator.metrics import read_metrics
from fedmq.coordinator.settings import TrainSettings
from fedmq.coordinator.staleness import Staleness, StalenessKind
from fedmq.coordinator.strategy import FedAvg
from fedmq.protocol.messages import TrainConfig
from fedmq.protocol.stream import StreamedReply
from tests.coordinator import tagged_task
from tests.coordinator.kill_points import Killed
from fedmq.worker.pool import LocalWorkers
from fedmq.worker.task import load_task

WORKERS = ("w0", "w1", "w2")
TAGGED = "tests.coordinator.tagged_task"
K, VERSIONS = 2, 6
EXACT = AsyncSettings(buffer=K, server_lr=float(K), staleness=Staleness(kind=StalenessKind.CONSTANT),
                      versions=VERSIONS)


def _settings(tmp: Path, task: str = TAGGED, **extra: Any) -> TrainSettings:  # noqa: ANN401
    return TrainSettings(task, WORKERS, config=TrainConfig(lr=0.1, batch_size=8, seed=3),
                         checkpoint_dir=tmp / "checkpoint", metrics_out=tmp / "metrics.jsonl",
                         round_timeout_s=30.0, **extra)


def _number(value: object) -> float:
    assert isinstance(value, (int, float))
    return float(value)


def _applied(weights: dict[str, torch.Tensor]) -> torch.Tensor:
    return weights["slots"]


def _assert_exactly_once(slots: torch.Tensor, produced: list[int], versions: int) -> None:
    # Every slot holds 0 or 1: no update applied twice; K per version: none lost from a buffer.
    assert set(slots.tolist()) <= {0.0, 1.0}
    applied = {int(i) for i in torch.nonzero(slots).flatten().tolist()}
    assert len(applied) == K * versions
    assert applied <= set(produced)  # nothing applied that no worker produced


def test_fedbuff_on_digits_makes_each_version_once_with_its_staleness(tmp_path: Path) -> None:
    # Given three digits workers on the memory broker
    settings = _settings(tmp_path, "digits", rounds=4)
    task = load_task("digits")
    hub = MemoryHub()
    # When an async run with K=2 makes 4 versions
    with LocalWorkers(hub, task, WORKERS), MemoryBroker(hub) as broker:
        AsyncJob(broker, settings, AsyncSettings(buffer=2), task=task).run()
    # Then the file holds versions 1..4 once each, 2 updates each, and the final one is evaluated
    assert settings.metrics_out is not None and settings.checkpoint_dir is not None
    lines = read_metrics(settings.metrics_out)
    assert [line["version"] for line in lines] == [1, 2, 3, 4]
    assert [line["updates"] for line in lines] == [2, 4, 6, 8]
    assert all(line["replies"] == 2 and _number(line["staleness_max"]) >= 0 for line in lines)
    assert _number(lines[-1]["eval_accuracy"]) > 0.2
    assert all(_number(line["seconds"]) > 0 for line in lines)
    checkpoint = load_state(settings.checkpoint_dir)
    assert checkpoint is not None and checkpoint.version == 4


def test_fedasync_mixes_each_update_in(tmp_path: Path) -> None:
    # Given the tagged task and FedAsync (K=1) with mixing weight 0.5 and constant staleness
    settings = _settings(tmp_path)
    options = AsyncSettings(buffer=1, mix=0.5, staleness=Staleness(kind=StalenessKind.CONSTANT), updates=4)
    hub = MemoryHub()
    task = load_task(TAGGED)
    # When it applies 4 updates
    with LocalWorkers(hub, task, WORKERS), MemoryBroker(hub) as broker:
        weights = AsyncJob(broker, settings, options, task=task).run()
    # Then each applied update moved its slot by exactly alpha
    assert set(weights["slots"].tolist()) == {0.0, 0.5}
    assert int((weights["slots"] == 0.5).sum()) == 4


Kill = Callable[[], NoReturn]


def _kill() -> NoReturn:
    raise Killed


def _after(module: Any, name: str, when: Callable[..., bool]) -> Callable[[pytest.MonkeyPatch], None]:  # noqa: ANN401
    """A kill point: right after `module.name` returns, on the call `when(args)` picks."""
    def install(patches: pytest.MonkeyPatch) -> None:
        original = getattr(module, name)

        def wrapped(*args: Any, **kwargs: Any) -> Any:  # noqa: ANN401
            result = original(*args, **kwargs)
            if when(*args):
                _kill()
            return result
        patches.setattr(module, name, wrapped)
    return install


def _nth(n: int) -> Callable[..., bool]:
    calls = [0]

    def when(*args: Any) -> bool:  # noqa: ANN401
        calls[0] += 1
        return calls[0] == n
    return when


POINTS = {
    # a task recorded, not yet published
    "recorded": lambda: _after(async_job, "save_tasks", _nth(7)),
    # the checkpoint of version 3 durable, its updates not yet acknowledged
    "checkpointed": lambda: _after(async_job, "save_state", lambda _d, c: c.version == 3),
    # version 3's line written, its checkpoint not
    "line": lambda: _after(metrics_module.MetricsLog, "write", lambda _self, m: m.round == 3),
    # one update of version 4 buffered (unacknowledged), the aggregation not reached
    "buffered": lambda: _after(async_job, "scaled", _nth(7)),
}


@pytest.fixture
def tags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    directory = tmp_path / "tags"
    directory.mkdir()
    monkeypatch.setenv(tagged_task.TAG_ENV, str(directory))
    tagged_task._trained.clear()
    yield directory


@pytest.mark.parametrize("point", sorted(POINTS))
def test_a_coordinator_killed_anywhere_applies_each_update_exactly_once_after_resume(
        point: str, tmp_path: Path, tags: Path) -> None:
    # Given a FedBuff run of the tagged task whose coordinator is killed at `point`
    settings = _settings(tmp_path)
    hub = MemoryHub()
    task = load_task(TAGGED)
    with LocalWorkers(hub, task, WORKERS):
        with pytest.MonkeyPatch.context() as patches:
            POINTS[point]()(patches)
            with MemoryBroker(hub) as broker, pytest.raises(Killed):
                AsyncJob(broker, settings, EXACT, task=task).run()
        # When a new coordinator resumes it
        with MemoryBroker(hub) as broker:
            weights = AsyncJob(broker, replace(settings, resume=True), EXACT, task=task).run()
    # Then every version is in the file once, and each applied update was applied exactly once
    assert settings.metrics_out is not None
    lines = read_metrics(settings.metrics_out)
    assert [line["round"] for line in lines] == list(range(1, VERSIONS + 1))
    assert lines[-1]["updates"] == K * VERSIONS
    _assert_exactly_once(_applied(weights), tagged_task.produced(tags), VERSIONS)


@pytest.mark.parametrize(("strategy", "options"), [("fedmedian", ()), ("fedavgm", (("momentum", "0.5"),))])
def test_strategies_aggregate_the_buffer(strategy: str, options: tuple[tuple[str, str], ...], tmp_path: Path) -> None:
    # Given toy workers and a robust or server-optimizer strategy
    settings = replace(_settings(tmp_path, "toy", rounds=3), strategy=strategy, strategy_options=options,
                       config=TrainConfig(lr=0.1, batch_size=2, seed=3))
    hub = MemoryHub()
    task = load_task("toy")
    # When an async run aggregates buffers of 3 with it
    with LocalWorkers(hub, task, WORKERS), MemoryBroker(hub) as broker:
        weights = AsyncJob(broker, settings, AsyncSettings(buffer=3), task=task).run()
    # Then it makes its versions, and the model moved and stayed finite
    assert settings.metrics_out is not None
    assert [line["version"] for line in read_metrics(settings.metrics_out)] == [1, 2, 3]
    assert all(bool(torch.isfinite(t).all()) for t in weights.values())


def test_max_staleness_zero_applies_only_fresh_updates(tmp_path: Path) -> None:
    # Given FedAsync-style K=1 with three tasks out and --max-staleness 0
    settings = _settings(tmp_path, "toy", rounds=4)
    hub = MemoryHub()
    task = load_task("toy")
    # When it runs 4 versions
    with LocalWorkers(hub, task, WORKERS), MemoryBroker(hub) as broker:
        AsyncJob(broker, settings, AsyncSettings(buffer=1, max_staleness=0), task=task).run()
    # Then no applied update was stale, and every drop was a stale one
    assert settings.metrics_out is not None
    lines = read_metrics(settings.metrics_out)
    assert all(line["staleness_max"] == 0 for line in lines)
    assert sum(_number(line["stale"]) for line in lines) == sum(_number(line["dropped"]) for line in lines)


class _CountingBroker(MemoryBroker):
    """A memory broker that records every task publish: how many bodies, for how many workers."""

    def __init__(self, hub: MemoryHub) -> None:
        super().__init__(hub)
        self.publishes: list[int] = []  # workers addressed by each publish

    def publish_task(self, worker: str, body: Any, expires_in_s: float | None = None) -> None:  # noqa: ANN401
        self.publishes.append(1)
        super().publish_task(worker, body, expires_in_s)

    def publish_shared_task(self, workers: Any, body: Any,  # noqa: ANN401
                            expires_in_s: float | None = None) -> Any:  # noqa: ANN401
        self.publishes.append(len(workers))
        return super().publish_shared_task(workers, body, expires_in_s)


def test_idle_workers_get_the_latest_model_in_one_publish(tmp_path: Path) -> None:
    # Given three digits workers, all idle when an async run starts
    settings = _settings(tmp_path, "digits")
    task = load_task("digits")
    hub = MemoryHub()
    # When FedBuff with K=3 (every aggregation frees all three at once) makes 3 versions
    with LocalWorkers(hub, task, WORKERS), _CountingBroker(hub) as broker:
        AsyncJob(broker, settings, AsyncSettings(buffer=3, versions=3), task=task).run()
    # Then the first dispatch sent the model once for all three workers, and later dispatches
    # too addressed several workers with one publish
    assert broker.publishes[0] == 3
    assert sum(broker.publishes) >= 9 and len(broker.publishes) < sum(broker.publishes)


def test_linear_strategies_take_large_updates_streamed_and_still_apply_each_once(
        tmp_path: Path, tags: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a FedBuff run of the tagged task whose every reply counts as large (read in place)
    class Counting(FedAvg):
        streamed = 0

        def accumulate_streamed(self, reply: StreamedReply) -> None:
            Counting.streamed += 1
            super().accumulate_streamed(reply)

    monkeypatch.setattr(rounds, "STREAM_ABOVE", 0)
    settings = _settings(tmp_path)
    hub = MemoryHub()
    task = load_task(TAGGED)
    # When it makes its versions
    with LocalWorkers(hub, task, WORKERS), MemoryBroker(hub) as broker:
        weights = AsyncJob(broker, settings, EXACT, task=task, strategy=Counting()).run()
    # Then every update was folded from its parts, and each applied exactly once
    assert Counting.streamed >= K * VERSIONS
    _assert_exactly_once(_applied(weights), tagged_task.produced(tags), VERSIONS)
