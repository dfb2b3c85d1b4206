"""Presence beats: state changes are told at once, but never more than one beat per gap."""

from __future__ import annotations

import pytest

from fedmq.broker.memory import MemoryBroker, MemoryHub
from fedmq.protocol.presence import WorkerState, decode_presence
from fedmq.worker import presence
from fedmq.worker.presence import Heartbeat


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(presence.time, "monotonic", fake)
    return fake


def watched() -> tuple[MemoryBroker, MemoryBroker]:
    hub = MemoryHub()
    watcher, worker = MemoryBroker(hub), MemoryBroker(hub)
    watcher.watch_presence()
    return watcher, worker


def test_a_state_change_after_a_quiet_spell_beats_at_once(clock: Clock) -> None:
    # Given a worker that last beat two gaps ago
    watcher, worker = watched()
    beat = Heartbeat(worker, "alice", "digits", "0/2", min_gap_s=1.0)
    beat.tick()
    clock.now += 2.0
    # When it starts training
    beat.training()
    # Then both beats went out, the second saying "training"
    beats = [decode_presence(b) for b in watcher.take_presence(timeout=0.1)]
    assert [b.state for b in beats] == [WorkerState.IDLE, WorkerState.TRAINING]


def test_many_short_tasks_beat_once_per_gap_and_the_last_state_follows_on_a_tick(clock: Clock) -> None:
    # Given a worker that just beat
    watcher, worker = watched()
    beat = Heartbeat(worker, "alice", "digits", "0/2", min_gap_s=1.0)
    beat.tick()
    # When it trains and answers three tasks within the gap
    for round_ in (1, 2, 3):
        clock.now += 0.1
        beat.training()
        beat.answered("job1", round_)
    held = watcher.take_presence(timeout=0.05)
    # Then nothing more went out; once the gap has passed, one tick tells the latest state
    clock.now += 1.0
    beat.tick()
    beats = [decode_presence(b) for b in watcher.take_presence(timeout=0.1)]
    assert len(held) == 1
    assert [(b.state, b.job, b.round) for b in beats] == [(WorkerState.IDLE, "job1", 3)]


def test_without_changes_a_tick_beats_only_every_interval(clock: Clock) -> None:
    # Given a worker that just beat, with a 5 s interval
    watcher, worker = watched()
    beat = Heartbeat(worker, "alice", "digits", "0/2", interval_s=5.0, min_gap_s=1.0)
    beat.tick()
    # When it ticks after 2 s and after 6 s
    clock.now += 2.0
    beat.tick()
    early = watcher.take_presence(timeout=0.05)
    clock.now += 4.0
    beat.tick()
    # Then only the tick past the interval beat
    assert len(early) == 1  # the first beat only
    assert len(watcher.take_presence(timeout=0.1)) == 1
