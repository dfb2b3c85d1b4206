"""Inline workers (LocalWorkers with dispatchers=0): the simulation runs on the waiting thread."""

from __future__ import annotations

import threading

from fedmq.broker.memory import MemoryBroker, MemoryHub
from fedmq.coordinator.job import TrainingJob
from fedmq.coordinator.metrics import RoundMetrics
from fedmq.coordinator.settings import TrainSettings
from fedmq.protocol.messages import TrainConfig
from fedmq.worker.pool import LocalWorkers
from fedmq.worker.task import load_task

EIGHT = tuple(f"w{i}" for i in range(8))


def test_inline_workers_train_every_round_without_a_thread_of_their_own() -> None:
    # Given eight inline digits workers and the threads alive before
    hub = MemoryHub()
    task = load_task("digits")
    settings = TrainSettings("digits", EIGHT, rounds=4, config=TrainConfig(lr=0.1, epochs=2))
    rounds: list[RoundMetrics] = []
    before = set(threading.enumerate())
    # When four rounds run, watching the threads at each round's end
    seen: set[threading.Thread] = set()

    def on_round(metrics: RoundMetrics) -> None:
        rounds.append(metrics)
        seen.update(threading.enumerate())

    with LocalWorkers(hub, task, EIGHT, dispatchers=0), MemoryBroker(hub) as broker:
        TrainingJob(broker, settings, task=task, on_round=on_round).run()
    # Then every round has all eight replies, the model learns, and no thread was started
    assert [m.replies for m in rounds] == [8] * 4
    assert rounds[-1].eval_accuracy is not None and rounds[-1].eval_accuracy > 0.5
    assert seen <= before


def test_a_hostile_task_to_an_inline_worker_is_dead_lettered_while_the_coordinator_waits() -> None:
    # Given an inline worker and a coordinator connection waiting on a reply queue
    hub = MemoryHub()
    with LocalWorkers(hub, load_task("toy"), ("alice",), dispatchers=0), MemoryBroker(hub) as coordinator:
        coordinator.declare_job("job1", ["alice"])
        coordinator.consume_replies("job1", ["alice"])
        # When garbage is published to the worker and the coordinator waits for a reply
        coordinator.publish_task("alice", b"\xc1 not msgpack")
        reply = coordinator.receive(timeout=0.5)
        letter = coordinator.take_dead_letter(timeout=0.5)
    # Then no reply came, and the garbage was dead-lettered by the worker, run on this thread
    assert reply is None
    assert letter is not None and letter.source == "alice" and "undecodable task" in letter.reason


def test_after_stop_a_waiting_connection_no_longer_runs_the_workers() -> None:
    # Given inline workers that were stopped
    hub = MemoryHub()
    workers = LocalWorkers(hub, load_task("toy"), ("alice",), dispatchers=0)
    with workers, MemoryBroker(hub) as coordinator:
        pass
    with MemoryBroker(hub) as coordinator:
        coordinator.declare_job("job1", ["alice"])
        coordinator.consume_replies("job1", ["alice"])
        # When a task is published and the coordinator waits
        coordinator.publish_task("alice", b"\xc1 not msgpack")
        coordinator.receive(timeout=0.2)
        # Then it stays queued: nothing ran it
        assert coordinator.queue_depth("alice") == 1
