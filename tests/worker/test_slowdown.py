"""`--slowdown FACTOR`: a worker stretches its local training to FACTOR times its wall time."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from fedmq.broker.memory import MemoryBroker, MemoryHub
from fedmq.protocol.messages import Reply, TrainConfig, TrainTask, decode_message, encode_message
from fedmq.worker.service import WorkerService
from fedmq.worker.settings import WorkerSettings
from fedmq.worker.task import ShardSpec, load_task


def test_a_slowed_worker_sleeps_factor_minus_one_times_its_training_and_reports_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a toy worker with --slowdown 4 whose sleeps are recorded (and shortened)
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(time, "sleep", sleep)
    hub = MemoryHub()
    task = load_task("toy")
    coordinator = MemoryBroker(hub)
    coordinator.declare_worker("w0")
    coordinator.declare_job("j", ["w0"])
    coordinator.consume_replies("j", ["w0"])
    worker_broker = MemoryBroker(hub)
    service = WorkerService(worker_broker, WorkerSettings("w0", "toy", ShardSpec(0, 1), poll_s=0.05, slowdown=4.0),
                            task=task)
    stop = threading.Event()
    thread = threading.Thread(target=service.serve, args=(stop,), daemon=True)
    thread.start()
    torch.manual_seed(0)
    weights = {k: v.clone() for k, v in task.build_model().state_dict().items()}
    try:
        # When it is sent two train tasks (the first, which pays start-up costs, is not stretched)
        for task_id in ("t1", "t2"):
            train = TrainTask(job="j", round=0, task_id=task_id, weights=weights, config=TrainConfig(batch_size=2))
            coordinator.publish_task("w0", encode_message(train))
            delivery = coordinator.receive(timeout=10.0)
            assert delivery is not None
            coordinator.ack(delivery)
    finally:
        stop.set()
        thread.join(10.0)
        worker_broker.close()
    # Then it answered the second after one sleep of 3x a positive training time, counted in train_seconds
    assert delivery is not None
    reply = decode_message(delivery.body())
    assert isinstance(reply, Reply)
    assert len(slept) == 1 and slept[0] > 0
    assert reply.metrics["train_seconds"] >= slept[0] / 3


@pytest.mark.parametrize("factor", [0.5, 0.0, 1e9])
def test_a_slowdown_outside_1_to_1000_is_refused(factor: float) -> None:
    with pytest.raises(ValueError, match="--slowdown"):
        WorkerSettings("w0", "toy", ShardSpec(0, 1), slowdown=factor)
