"""Evaluating the global model: on the task's test split when it has one, else on the workers.

A task's test split stays with the coordinator. A task without one (the toy) is evaluated
federatedly: each worker scores the global model on its own shard and only the scores return.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from fedmq.broker.base import Broker
from fedmq.coordinator.aggregation import weighted_mean
from fedmq.coordinator.proxy import send_shared
from fedmq.coordinator.rounds import Collected, ReplyCollector
from fedmq.coordinator.settings import TrainSettings
from fedmq.protocol.messages import Reply, Weights
from fedmq.worker.task import Task


@dataclass(frozen=True)
class Evaluation:
    loss: float | None
    accuracy: float | None
    seconds: float


class Evaluator:
    def __init__(self, broker: Broker, task: Task, settings: TrainSettings) -> None:
        self._broker = broker
        self._task = task
        self._settings = settings
        self._model = task.build_model() if task.has_test_split else None
        self._test = task.load_test() if task.has_test_split else None

    def evaluate(self, round_: int, weights: Weights) -> Evaluation:
        started = time.perf_counter()
        if self._model is not None:
            self._model.load_state_dict(weights)
            metrics = self._task.evaluate(self._model, self._test)
            loss, accuracy = metrics.get("eval_loss"), metrics.get("eval_accuracy")
        else:
            loss, accuracy = self._federated(round_, weights)
        return Evaluation(loss, accuracy, time.perf_counter() - started)

    def _federated(self, round_: int, weights: Weights) -> tuple[float | None, float | None]:
        # Evaluation is best effort (training already succeeded): a worker that cannot get the
        # model is left out.
        sent = send_shared(self._broker, self._settings.job, round_, weights,
                           dict.fromkeys(self._settings.workers), self._settings.round_timeout_s)
        asked = sent.asked
        collector = ReplyCollector(self._broker, self._settings.job, round_, asked,
                                   verify_senders=self._settings.verify_senders)
        collected = collector.collect(time.monotonic() + self._settings.round_timeout_s, _keep)
        return _mean_of(collected, "eval_loss"), _mean_of(collected, "eval_accuracy")


def _keep(reply: Reply) -> str | None:
    return None


def _mean_of(collected: Collected, key: str) -> float | None:
    return weighted_mean([(r.metrics[key], r.num_examples) for r in collected.replies if key in r.metrics])
