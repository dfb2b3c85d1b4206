"""Presence and `fedmq status` on the memory broker: beats in, a table out."""

from __future__ import annotations

import time

import pytest
from rich.console import Console

from fedmq.broker.memory import MemoryBroker, MemoryHub
from fedmq.coordinator.job import TrainingJob
from fedmq.coordinator.metrics import RoundMetrics
from fedmq.coordinator.presence import announce
from fedmq.coordinator.settings import TrainSettings
from fedmq.coordinator.status import collect, render
from fedmq.protocol.errors import DecodeError, TrainingFailed
from fedmq.protocol.messages import TrainConfig
from fedmq.protocol.presence import JobState, Presence, decode_presence, encode_presence
from fedmq.worker.pool import LocalWorkers
from fedmq.worker.presence import Heartbeat
from fedmq.worker.task import load_task


def test_status_lists_beating_workers_their_queues_and_the_jobs_progress() -> None:
    # Given a hub where alice beats after answering round 2, bob is declared but silent,
    # two tasks wait in bob's queue and a coordinator reports round 2 of 5
    hub = MemoryHub()
    watcher, alice, coordinator = MemoryBroker(hub), MemoryBroker(hub), MemoryBroker(hub)
    for name in ("alice", "bob"):
        coordinator.declare_worker(name)
    coordinator.publish_task("bob", b"t1")
    coordinator.publish_task("bob", b"t2")
    watcher.watch_presence()  # subscribed before the beats, as a listening `fedmq status` is
    Heartbeat(alice, "alice", "digits", "0/2").answered("job1", 2)
    announce(coordinator, "job1", "digits", 2, 5, JobState.RUNNING)
    # When status collects for a moment and renders
    status = collect(watcher, listen_s=0.2, expected=["alice", "bob"])
    console = Console(record=True, width=200)
    render(status, console)
    text = console.export_text()
    # Then alice is online with what she answered, bob offline with 2 queued, the job at 2/5
    alice_beat = status.workers["alice"]
    assert alice_beat is not None and (alice_beat.job, alice_beat.round, alice_beat.shard) == ("job1", 2, "0/2")
    assert status.workers["bob"] is None
    assert status.depths == {"alice": 0, "bob": 2}
    assert status.jobs["job1"].round == 2 and status.jobs["job1"].rounds == 5
    assert "2/5" in text and "never" in text and "job1 round 2" in text


def test_a_run_that_fails_shows_as_failed_after_the_rounds_it_completed() -> None:
    # Given a watching `fedmq status` and a run of three rounds whose second round fails:
    # carol answers round 1, then stops serving
    hub = MemoryHub()
    watcher = MemoryBroker(hub)
    watcher.watch_presence()
    settings = TrainSettings("toy", ("carol",), rounds=3, round_timeout_s=5, job="doomed",
                             config=TrainConfig(batch_size=2))
    task = load_task("toy")
    completed: list[int] = []
    with LocalWorkers(hub, task, ("carol",)) as workers, MemoryBroker(hub) as broker:
        def stop_carol(metrics: RoundMetrics) -> None:
            completed.append(metrics.round)
            workers.stop()

        job = TrainingJob(broker, settings, task=task, on_round=stop_carol)
        # When the run raises TrainingFailed in round 2
        with pytest.raises(TrainingFailed, match="silent: carol"):
            job.run()
    status = collect(watcher, listen_s=0.1)
    # Then its last beat says failed, after round 1 of 3, instead of leaving it shown as running
    beat = status.jobs["doomed"]
    assert (beat.state, beat.round, beat.rounds) == (JobState.FAILED, 1, 3)
    assert completed == [1]


def test_a_hostile_beat_is_ignored_by_status() -> None:
    # Given a watcher that receives garbage and one valid beat
    hub = MemoryHub()
    watcher, sender = MemoryBroker(hub), MemoryBroker(hub)
    watcher.watch_presence()
    sender.publish_presence(b"\xc1not msgpack")
    sender.publish_presence(encode_presence(Presence("worker", "carol", "idle", time.time())))
    # When status collects
    status = collect(watcher, listen_s=0.1)
    # Then only the valid worker is listed
    assert list(status.workers) == ["carol"]


@pytest.mark.parametrize("body", [
    {"kind": "presence", "role": "admin", "name": "x", "state": "", "at": 1.0},
    {"kind": "presence", "role": "worker", "name": "x", "state": "", "at": "now"},
    {"kind": "presence", "role": "worker", "name": "x" * 1000, "state": "", "at": 1.0},
    {"kind": "presence", "role": "worker", "name": "x", "state": "", "at": 1.0, "round": -1},
    {"kind": "train", "role": "worker", "name": "x", "state": "", "at": 1.0},
])
def test_malformed_presence_is_a_decode_error(body: dict[str, object]) -> None:
    from fedmq.protocol.codec import pack

    # Given a presence-like map with one field wrong; When decoded; Then DecodeError
    with pytest.raises(DecodeError):
        decode_presence(bytes(pack(body)))
