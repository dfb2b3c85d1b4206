"""Many logical workers in one process (worker.host): on the memory broker and on RabbitMQ."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from fedmq.broker.memory import MemoryBroker, MemoryHub
from fedmq.broker.settings import BrokerSettings
from fedmq.coordinator import processes
from fedmq.coordinator.cli import _parser, _worker_settings
from fedmq.coordinator.cli_workers import connection_groups, expand_ids, worker_args
from fedmq.coordinator.job import TrainingJob
from fedmq.coordinator.metrics import RoundMetrics
from fedmq.coordinator.settings import TrainSettings
from fedmq.protocol.messages import TrainConfig, TrainTask, Weights, decode_message, encode_message
from fedmq.protocol.presence import decode_presence
from fedmq.worker.host import dispatch
from fedmq.worker.pool import LocalWorkers
from fedmq.worker.service import WorkerService
from fedmq.worker.settings import ShardSpec, WorkerSettings
from fedmq.worker.task import load_task
from tests.coordinator.conftest import ROOT, broker_args, fedmq

SIXTEEN = tuple(f"h{i}" for i in range(16))


def test_ids_expand_like_a_shell() -> None:
    # When --id values with ranges, lists and padding are expanded
    # Then they name the workers bash would, in order
    assert expand_ids("w{0..3}") == ["w0", "w1", "w2", "w3"]
    assert expand_ids("w{0..10}")[-2:] == ["w9", "w10"]
    assert expand_ids("{a,b}-{1..2}") == ["a-1", "a-2", "b-1", "b-2"]
    assert expand_ids("s{08..10}") == ["s08", "s09", "s10"]
    assert expand_ids("solo") == ["solo"]


@pytest.mark.parametrize("text", ["w{0..3", "w{x}", "w{0..99999}", "{a,a}"])
def test_malformed_ids_are_refused_with_what_to_write(text: str) -> None:
    # When --id is malformed, too large or names a worker twice
    # Then it is a ValueError (a usage error), not a guess
    with pytest.raises(ValueError, match="--id"):
        expand_ids(text)


@pytest.mark.parametrize(("broker", "connections", "expected"), [
    ("amqp://guest:guest@127.0.0.1:5672/%2F", None, [7, 7, 6]),  # one per 8 workers by default
    ("amqp://guest:guest@127.0.0.1:5672/%2F", 2, [10, 10]),
    ("memory://", None, [20]),  # no confirm to wait for: one dispatcher, no GIL hand-offs
])
def test_logical_workers_without_credentials_are_split_over_connections(
        broker: str, connections: int | None, expected: list[int]) -> None:
    # Given `fedmq worker --id w{0..19}` without credentials
    argv = ["worker", "--id", "w{0..19}", "--task", "digits", "--shard", "{i}/{n}", "--broker", broker]
    each = worker_args(_parser().parse_args(argv))
    # When they are grouped by connection
    groups = connection_groups(each, _worker_settings, connections)
    # Then the groups have the expected sizes, and every worker is in exactly one
    assert [len(group.workers) for group in groups] == expected
    assert sorted(s.worker_id for g in groups for s in g.workers) == sorted(f"w{i}" for i in range(20))


def test_sixteen_logical_workers_train_digits_on_the_memory_broker() -> None:
    # Given 16 digits workers served by one dispatcher thread on one memory connection
    hub = MemoryHub()
    task = load_task("digits")
    settings = TrainSettings("digits", SIXTEEN, rounds=6, config=TrainConfig(lr=0.1, epochs=2))
    rounds: list[RoundMetrics] = []
    # When six rounds run
    with LocalWorkers(hub, task, SIXTEEN), MemoryBroker(hub) as broker:
        TrainingJob(broker, settings, task=task, on_round=rounds.append).run()
    # Then every round has all 16 replies and the model learns (chance is 0.1)
    assert [m.replies for m in rounds] == [16] * 6
    first, last = rounds[0].eval_accuracy, rounds[-1].eval_accuracy
    assert first is not None and last is not None and last > first and last >= 0.5


def test_each_logical_worker_checks_its_own_task_senders() -> None:
    # Given two logical workers on one connection: w0 takes tasks only from "coord", w1 from anyone
    hub = MemoryHub()
    task = load_task("toy")
    host = MemoryBroker(hub)
    strict = WorkerSettings("w0", "toy", ShardSpec(0, 2), task_senders=frozenset({"coord"}))
    lenient = WorkerSettings("w1", "toy", ShardSpec(1, 2))
    services = [WorkerService(host, strict, task=task), WorkerService(host, lenient, task=task)]
    for service in services:
        host.declare_worker(service.worker_id)
    stop = threading.Event()
    thread = threading.Thread(target=dispatch, args=(host, services, stop, 0.05), daemon=True)
    thread.start()
    mallory, coordinator = MemoryBroker(hub, user="mallory"), MemoryBroker(hub)
    coordinator.declare_job("j", ["w0", "w1"])
    coordinator.consume_replies("j", ["w0", "w1"])
    weights: Weights = task.build_model().state_dict()
    # When mallory sends both a task
    for worker in ("w0", "w1"):
        mallory.publish_task(worker, encode_message(TrainTask(job="j", round=1, task_id=f"t-{worker}", weights=weights, config=TrainConfig(lr=0.1))))
    reply = coordinator.receive(timeout=30)
    letter = coordinator.take_dead_letter(timeout=30)
    stop.set()
    thread.join(30)
    host.close()
    # Then w1 answers, and w0 dead-letters its task unread, naming whom it takes tasks from
    assert reply is not None and decode_message(reply.body()).worker == "w1"  # type: ignore[union-attr]
    assert letter is not None and letter.source == "w0" and "coord" in letter.reason
    assert coordinator.receive(timeout=0.2) is None


def test_one_fedmq_worker_process_hosts_sixteen_workers_over_rabbitmq(
        rabbit_settings: BrokerSettings, tmp_path: Path) -> None:
    # Given one `fedmq worker` process hosting h0..h15, shard i/16 each
    log = tmp_path / "host.log"
    host = processes.start(["worker", "--id", "h{0..15}", "--shard", "{i}/{n}", "--task", "digits",
                            *broker_args(rabbit_settings)], cwd=ROOT, log=log)
    try:
        # When the coordinator trains three rounds with all sixteen
        metrics = tmp_path / "m.jsonl"
        done = subprocess.run(fedmq("train", *broker_args(rabbit_settings), "--task", "digits", "--workers",
                                    ",".join(SIXTEEN), "--rounds", "3", "--epochs", "2", "--metrics-out",
                                    str(metrics), "--log-level", "warning"),
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
    finally:
        # And the host is sent SIGTERM
        host.send_signal(signal.SIGTERM)
        code = host.wait(timeout=60)
    # Then every round has 16 replies, and the host stops cleanly on the signal
    assert done.returncode == 0, done.stderr + log.read_text()
    assert metrics.read_text().count('"replies": 16') == 3
    assert code == 0, log.read_text()
    assert "16 logical workers stopped" in log.read_text()


def test_every_logical_worker_beats_its_own_presence() -> None:
    # Given a watcher, and three logical workers on one memory connection and one dispatcher
    hub = MemoryHub()
    watcher = MemoryBroker(hub)
    watcher.watch_presence()
    names = ("a", "b", "c")
    # When they serve for a moment
    with LocalWorkers(hub, load_task("toy"), names):
        seen: set[str] = set()
        for _ in range(50):
            seen |= {decode_presence(body).name for body in watcher.take_presence(timeout=0.2)}
            if seen >= set(names):
                break
    # Then each one's heartbeat arrived under its own name
    assert seen == set(names)


def test_sigterm_lets_every_connections_task_in_hand_finish(rabbit_settings: BrokerSettings, tmp_path: Path) -> None:
    # Given one process hosting two slow workers on two connections, both in mid-training
    log = tmp_path / "host.log"
    host = processes.start(["worker", "--id", "slow{0..1}", "--shard", "{i}/{n}", "--connections", "2",
                            "--task", "tests.coordinator.slow_task", *broker_args(rabbit_settings)], cwd=ROOT, log=log)
    train = subprocess.Popen(fedmq("train", *broker_args(rabbit_settings), "--task", "tests.coordinator.slow_task",
                                   "--workers", "slow0,slow1", "--rounds", "1", "--round-timeout", "8"),
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while log.read_text().count("training starts") < 2:
            assert train.poll() is None, "the coordinator ended before both trainings started"
            time.sleep(0.05)
        # When the host is sent SIGTERM
        host.send_signal(signal.SIGTERM)
        # Then both tasks finish, their replies complete the round, and the host exits cleanly
        assert host.wait(timeout=60) == 0, log.read_text()
        assert train.wait(timeout=60) == 0, train.stderr.read() if train.stderr else ""
    finally:
        for process in (host, train):
            if process.poll() is None:
                process.kill()
                process.wait()
    assert "stopping after the task in hand" in log.read_text()
