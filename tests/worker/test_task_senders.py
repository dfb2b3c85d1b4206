"""Whose tasks a worker runs (issue 8, point 5), on the memory broker, and how the CLI builds the
list from a credentials file and --task-senders."""

from __future__ import annotations

import argparse
import json
import threading
from pathlib import Path

import pytest
import torch

from fedmq.broker.memory import MemoryBroker, MemoryHub
from fedmq.broker.provision import provision, write
from fedmq.coordinator.cli_broker import task_senders
from fedmq.protocol.messages import Reply, TrainTask, decode_message, encode_message
from fedmq.worker.service import WorkerService
from fedmq.worker.settings import WorkerSettings
from fedmq.worker.task import ShardSpec, load_task

TOY = load_task("toy")


def _task(task_id: str) -> bytes:
    torch.manual_seed(0)
    return bytes(encode_message(TrainTask(job="job", round=1, task_id=task_id, weights=dict(TOY.build_model().state_dict()))))


@pytest.mark.parametrize("senders, answered", [
    (frozenset({"coordinator"}), ["t-coordinator"]),
    (frozenset({"coordinator", "analyst"}), ["t-analyst", "t-coordinator"]),
    (None, ["t-analyst", "t-coordinator"]),
])
def test_a_worker_runs_tasks_only_from_its_senders(senders: frozenset[str] | None, answered: list[str]) -> None:
    # Given a worker that takes tasks from `senders` (None: anyone)
    hub = MemoryHub()
    coordinator, analyst = MemoryBroker(hub, user="coordinator"), MemoryBroker(hub, user="analyst")
    coordinator.declare_worker("w")
    coordinator.declare_job("job", ["w"])
    coordinator.consume_replies("job", ["w"])
    service = WorkerService(MemoryBroker(hub, user="w"),
                            WorkerSettings("w", "toy", ShardSpec(0, 1), poll_s=0.05, task_senders=senders), task=TOY)
    stop = threading.Event()
    thread = threading.Thread(target=service.serve, args=(stop,), daemon=True)
    thread.start()
    try:
        # When the analyst sends a task, then the coordinator does
        analyst.publish_task("w", _task("t-analyst"))
        coordinator.publish_task("w", _task("t-coordinator"))
        replies: list[str] = []
        while (delivery := coordinator.receive(timeout=5 if not replies else 1)) is not None:
            message = decode_message(delivery.body())
            assert isinstance(message, Reply)
            replies.append(message.task_id)
            coordinator.ack(delivery)
            if len(replies) == len(answered):
                break
        letter = coordinator.take_dead_letter(timeout=0.2)
    finally:
        stop.set()
        thread.join(10)
    # Then it answered only those it may run, and dead-lettered the other unread, saying why
    assert sorted(replies) == answered and not thread.is_alive()
    if "t-analyst" in answered:
        assert letter is None
    else:
        assert letter is not None and "from user 'analyst'" in letter.reason and "--task-senders" in letter.reason


def _args(credentials: Path | None, listed: str = "") -> argparse.Namespace:
    return argparse.Namespace(credentials=credentials, task_senders=listed)


def test_the_cli_takes_the_coordinator_from_the_credentials_file(tmp_path: Path) -> None:
    # Given provisioned credentials for worker alice, whose coordinator is "coord"
    write(tmp_path, provision(["alice"], "coord", "v", "p"))
    alice = tmp_path / "alice.json"
    # Then the worker runs tasks from coord, plus whoever --task-senders names; anyone without either
    assert task_senders(_args(alice)) == frozenset({"coord"})
    assert task_senders(_args(alice, "analyst, ops")) == frozenset({"coord", "analyst", "ops"})
    assert task_senders(_args(None)) is None
    assert task_senders(_args(None, "guest")) == frozenset({"guest"})
    # And a file from before the coordinator was written in asks for --task-senders
    data = json.loads(alice.read_text())
    del data["coordinator"]
    alice.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="--task-senders"):
        task_senders(_args(alice))
    assert task_senders(_args(alice, "coord")) == frozenset({"coord"})
