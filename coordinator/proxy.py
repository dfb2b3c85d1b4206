"""The coordinator's handles on remote workers: tasks go out through the broker.

`send_shared` sends one round's model to many workers in one publish (Broker.publish_shared_task):
the coordinator encodes and publishes the model once, whatever the number of workers, and each
worker finds its own task id and config in the message. RemoteWorker sends one worker its own
copy (a worker that joins late, asynchronous training's single dispatches).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from fedmq.broker.base import Broker
from fedmq.protocol.errors import BrokerError, Unroutable
from fedmq.protocol.messages import (
    Assignment,
    EvaluateTask,
    SharedTask,
    TrainConfig,
    TrainTask,
    Weights,
    encode_message,
)

TaskFactory = Callable[[str], TrainTask | EvaluateTask]


@dataclass(frozen=True, kw_only=True)
class Sent:
    """What send_shared did: task id -> worker for those that got it, why for those that did not."""

    asked: dict[str, str]
    failed: dict[str, str]


def send_shared(broker: Broker, job: str, round_: int, weights: Weights,
                configs: Mapping[str, TrainConfig | None], expires_in_s: float | None = None) -> Sent:
    """Send `weights` once to every worker in `configs`: to train with its config, or to evaluate
    (None). Each worker gets its own unguessable task id, so a stale or forged reply cannot match."""
    return publish_assigned(broker, job, round_, weights, assign(configs), expires_in_s)


def assign(configs: Mapping[str, TrainConfig | None]) -> dict[str, Assignment]:
    """Each worker's task: a fresh unguessable task id and its config (None: evaluate)."""
    return {worker: Assignment(task_id=uuid.uuid4().hex, config=config) for worker, config in configs.items()}


def publish_assigned(broker: Broker, job: str, round_: int, weights: Weights,
                     assignments: dict[str, Assignment], expires_in_s: float | None = None) -> Sent:
    """send_shared for tasks made beforehand (`assign`), e.g. recorded durably before they go out."""
    if not assignments:
        return Sent(asked={}, failed={})
    shared = SharedTask(job=job, round=round_, share_id=uuid.uuid4().hex, weights=weights,
                        assignments=assignments)
    errors = broker.publish_shared_task(list(assignments), encode_message(shared), expires_in_s)
    return Sent(asked={own.task_id: worker for worker, own in assignments.items() if worker not in errors},
                failed={worker: _explain(worker, error) for worker, error in errors.items()})


def _explain(worker: str, error: BrokerError) -> str:
    if isinstance(error, Unroutable):
        return (f"worker {worker!r} has no task queue: is `fedmq worker --id {worker}` running against "
                f"this broker?")
    return str(error)


class RemoteWorker:
    def __init__(self, broker: Broker, name: str) -> None:
        self.broker = broker
        self.name = name

    def train(self, job: str, round_: int, weights: Weights, config: TrainConfig,
              expires_in_s: float | None = None) -> str:
        """Send a train task; its task id. Unroutable when the worker has no queue.

        `expires_in_s`: the time left in the round; a task not taken by then expires unrun.
        """
        return self._send(lambda task_id: TrainTask(job=job, round=round_, task_id=task_id, weights=weights, config=config), expires_in_s)

    def evaluate(self, job: str, round_: int, weights: Weights, expires_in_s: float | None = None) -> str:
        """Send an evaluate task; its task id. Unroutable when the worker has no queue."""
        return self._send(lambda task_id: EvaluateTask(job=job, round=round_, task_id=task_id, weights=weights), expires_in_s)

    def _send(self, make: TaskFactory, expires_in_s: float | None) -> str:
        task_id = uuid.uuid4().hex  # unguessable, so a stale or forged reply cannot match
        try:
            self.broker.publish_task(self.name, encode_message(make(task_id)), expires_in_s)
        except Unroutable as e:
            raise Unroutable(f"worker {self.name!r} has no task queue: is `fedmq worker --id "
                             f"{self.name}` running against this broker?") from e
        return task_id


def wait_for_workers(broker: Broker, workers: Sequence[str], seconds: float) -> None:
    """Wait up to `seconds` for every worker's task queue to exist; log the ones still missing."""
    deadline = time.monotonic() + seconds
    missing = [w for w in workers if not broker.has_worker(w)]
    while missing and time.monotonic() < deadline:
        time.sleep(0.2)
        missing = [w for w in missing if not broker.has_worker(w)]
    if missing:
        logging.getLogger("fedmq.coordinator").warning("workers not up after %.0fs: %s", seconds, ", ".join(missing))
