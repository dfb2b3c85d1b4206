"""Short local work runs inline; long or not yet measured work runs beside the connection's I/O."""

import threading
import time
import types
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

from fedmq.broker.memory import MemoryBroker, MemoryHub
from fedmq.protocol.messages import EvaluateTask, Reply, TrainConfig, TrainTask, decode_message, encode_message
from fedmq.worker import service as service_module
from fedmq.worker.service import WorkerService
from fedmq.worker.settings import WorkerSettings
from fedmq.worker.task import ShardSpec, Task

T = TypeVar("T")
WAIT_S = 10.0  # an upper bound for a message to arrive, never a timing assertion


class BesideCounting(MemoryBroker):
    """The memory broker, counting the work handed to run_beside_io."""

    def __init__(self, hub: MemoryHub) -> None:
        super().__init__(hub)
        self.beside = 0

    def run_beside_io(self, work: Callable[[], T], between: Callable[[], None] | None = None) -> T:
        self.beside += 1
        return super().run_beside_io(work, between)


def _serve(task: Task, kinds: str) -> tuple[int, list[Reply]]:
    """Tasks through a worker serving `task`, one per letter of `kinds` (t: train, e: evaluate):
    (how many ran beside the I/O, the replies)."""
    hub = MemoryHub()
    coordinator = MemoryBroker(hub)
    coordinator.declare_worker("w0")
    coordinator.declare_job("job", ["w0"])
    coordinator.consume_replies("job", ["w0"])
    broker = BesideCounting(hub)
    worker = WorkerService(broker, WorkerSettings("w0", task.name, ShardSpec(0, 1), poll_s=0.05), task=task)
    stop = threading.Event()
    thread = threading.Thread(target=worker.serve, args=(stop,), daemon=True)
    thread.start()
    weights = {k: v.clone() for k, v in task.build_model().state_dict().items()}
    replies = []
    try:
        for i, kind in enumerate(kinds):
            message = (TrainTask(job="job", round=i + 1, task_id=f"t{i}", weights=weights, config=TrainConfig())
                       if kind == "t" else EvaluateTask(job="job", round=i + 1, task_id=f"t{i}", weights=weights))
            coordinator.publish_task("w0", encode_message(message))
            delivery = coordinator.receive(timeout=WAIT_S)
            assert delivery is not None, "no reply arrived"
            coordinator.ack(delivery)
            reply = decode_message(delivery.body())
            assert isinstance(reply, Reply)
            replies.append(reply)
    finally:
        stop.set()
        thread.join(WAIT_S)
    return broker.beside, replies


def _task_training_for(seconds: float) -> Task:
    """A one-weight task whose training takes `seconds` and adds 1 to every parameter, and whose
    evaluation returns at once."""
    module = types.ModuleType(f"train_{seconds:g}s")
    module.build_model = lambda: nn.Linear(2, 1)  # type: ignore[attr-defined]
    module.load_shard = lambda spec: (torch.zeros(4, 2), torch.zeros(4, 1))  # type: ignore[attr-defined]
    module.train = _train_taking(seconds)  # type: ignore[attr-defined]
    module.evaluate = lambda model, dataset: {"eval_loss": 0.5}  # type: ignore[attr-defined]
    return Task(module.__name__, module)


def _train_taking(seconds: float) -> Callable[[nn.Module, object, TrainConfig], dict[str, float]]:
    def train(model: nn.Module, dataset: object, config: TrainConfig) -> dict[str, float]:
        time.sleep(seconds)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(1.0)
        return {"train_loss": 0.25}
    return train


def test_after_one_short_training_the_next_run_inline() -> None:
    # Given a worker whose training returns at once
    task = _task_training_for(0.0)
    # When it trains three tasks
    beside, replies = _serve(task, "ttt")
    # Then only the first, whose length was unknown, went beside the connection's I/O
    assert beside == 1
    # And the inline ones answered the same way
    assert [r.task_id for r in replies] == ["t0", "t1", "t2"]
    assert all(r.metrics["train_loss"] == 0.25 for r in replies)
    assert all(torch.allclose(r.update["weight"], torch.ones(1, 2)) for r in replies)


def test_training_longer_than_the_inline_limit_always_runs_beside_the_io() -> None:
    # Given a worker whose training takes longer than the inline limit
    task = _task_training_for(2 * service_module.INLINE_S)
    # When it trains three tasks; then each went beside the connection's I/O
    beside, replies = _serve(task, "ttt")
    assert beside == 3
    assert len(replies) == 3


def test_a_quick_evaluation_never_makes_the_next_training_inline() -> None:
    # Given a worker whose training takes longer than the inline limit and whose evaluation is quick
    task = _task_training_for(2 * service_module.INLINE_S)
    # When it trains, evaluates, trains and evaluates
    beside, replies = _serve(task, "tete")
    # Then both trainings and the first evaluation went beside the I/O, the second evaluation inline
    assert beside == 3
    assert [r.metrics.get("eval_loss") for r in replies] == [None, 0.5, None, 0.5]
