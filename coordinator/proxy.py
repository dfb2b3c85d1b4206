"""The coordinator's handle on one remote worker: tasks go out through the broker."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from broker.base import Broker
from protocol.errors import Unroutable
from protocol.messages import EvaluateTask, TrainConfig, TrainTask, Weights, encode_message

TaskFactory = Callable[[str], TrainTask | EvaluateTask]


class RemoteWorker:
    def __init__(self, broker: Broker, name: str) -> None:
        self.broker = broker
        self.name = name

    def train(self, job: str, round_: int, weights: Weights, config: TrainConfig,
              expires_in_s: float | None = None) -> str:
        """Send a train task; its task id. Unroutable when the worker has no queue.

        `expires_in_s`: the time left in the round; a task not taken by then expires unrun.
        """
        return self._send(lambda task_id: TrainTask(job, round_, task_id, weights, config), expires_in_s)

    def evaluate(self, job: str, round_: int, weights: Weights, expires_in_s: float | None = None) -> str:
        """Send an evaluate task; its task id. Unroutable when the worker has no queue."""
        return self._send(lambda task_id: EvaluateTask(job, round_, task_id, weights), expires_in_s)

    def _send(self, make: TaskFactory, expires_in_s: float | None) -> str:
        task_id = uuid.uuid4().hex  # unguessable, so a stale or forged reply cannot match
        try:
            self.broker.publish_task(self.name, encode_message(make(task_id)), expires_in_s)
        except Unroutable as e:
            raise Unroutable(f"worker {self.name!r} has no task queue: is `fedmq worker --id "
                             f"{self.name}` running against this broker?") from e
        return task_id

