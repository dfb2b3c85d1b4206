"""Short local work runs inline; long or not yet measured work runs beside the connection's I/O."""

import time
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

from fedmq.broker.memory import MemoryBroker, MemoryHub
from fedmq.protocol.messages import EvaluateTask, Reply, TrainConfig, TrainTask
from fedmq.worker import service as service_module
from fedmq.worker.task import Task
from tests.worker.test_service import JOB, global_weights, module_task, serving

T = TypeVar("T")


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
    replies = []
    with serving(task, worker_broker_type=BesideCounting) as rig:
        weights = global_weights(task)
        for i, kind in enumerate(kinds):
            rig.send(TrainTask(job=JOB, round=i + 1, task_id=f"t{i}", weights=weights, config=TrainConfig())
                     if kind == "t" else EvaluateTask(job=JOB, round=i + 1, task_id=f"t{i}", weights=weights))
            reply = rig.reply()
            assert isinstance(reply, Reply)
            replies.append(reply)
        assert isinstance(rig.worker_broker, BesideCounting)
        return rig.worker_broker.beside, replies


def _task_training_for(seconds: float) -> Task:
    """A one-weight task whose training takes `seconds` and adds 1 to every parameter, and whose
    evaluation returns at once."""
    return module_task(f"train_{seconds:g}s", train=_train_taking(seconds),
                       evaluate=lambda model, dataset: {"eval_loss": 0.5})


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
