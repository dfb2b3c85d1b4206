"""Updates are screened before aggregation: NaN/Inf and updates above --max-update-norm are
rejected, dead-lettered and counted in the round's metrics; the round goes on without them."""

from __future__ import annotations

import threading

import pytest
import torch

from fedmq.broker.memory import MemoryBroker, MemoryHub
from fedmq.coordinator.job import TrainingJob
from fedmq.coordinator.metrics import RoundMetrics
from fedmq.coordinator.screening import update_error
from fedmq.coordinator.settings import TrainSettings
from fedmq.protocol.messages import Reply, SharedTask, TrainConfig, TrainTask, decode_message, encode_message
from fedmq.worker.pool import LocalWorkers
from fedmq.worker.task import load_task

W = {"w": torch.zeros(3), "b": torch.zeros(1), "steps": torch.zeros((), dtype=torch.int64)}


def _update(w: list[float], b: float = 0.0, steps: int = 5) -> dict[str, torch.Tensor]:
    return {"w": torch.tensor(w), "b": torch.tensor([b]), "steps": torch.tensor(steps)}


@pytest.mark.parametrize("update, bound, reason", [
    (_update([1.0, float("nan"), 0.0]), None, "'w' holds NaN or Inf"),
    (_update([1.0, 0.0, 0.0], b=float("-inf")), None, "'b' holds NaN or Inf"),
    ({**_update([0.0] * 3), "w": torch.tensor([1e300, 0.0, 0.0], dtype=torch.float64)}, None, "NaN or Inf"),
    (_update([3.0, 4.0, 0.0]), 4.9, "norm 5 is above the bound 4.9"),
    (_update([3e30, 4e30, 0.0]), 1.0, "above the bound"),
    ({"w": torch.zeros(2), "b": torch.zeros(1), "steps": torch.tensor(1)}, None, "shape"),
    ({**_update([0.0] * 3), "steps": torch.tensor(float("nan"))}, None, "'steps' holds NaN or Inf"),
])
def test_unusable_updates_are_named(update: dict[str, torch.Tensor], bound: float | None, reason: str) -> None:
    assert reason in (update_error(W, update, bound) or "")


def test_a_finite_update_within_the_bound_passes_and_integer_buffers_do_not_count() -> None:
    # Given an update of norm 5 whose integer step counter moved by 1000
    update = _update([3.0, 4.0, 0.0], steps=1000)
    # Then it passes a bound of 5, the counter being no weight
    assert update_error(W, update, 5.0) is None and update_error(W, update, None) is None


def test_float64_updates_too_large_to_square_are_finite_yet_above_any_bound() -> None:
    # Given a float64 model and an update of finite entries whose squares overflow float64
    weights = {"w": torch.zeros(2, dtype=torch.float64)}
    huge = {"w": torch.tensor([1e300, -1e300], dtype=torch.float64)}
    # Then it holds no NaN or Inf, passes without a bound, and is above any bound
    assert update_error(weights, huge, None) is None
    assert "above the bound" in (update_error(weights, huge, 1e308) or "")
    # And an Inf among such entries is still named
    assert "NaN or Inf" in (update_error(weights, {"w": torch.tensor([1e300, float("inf")],
                                                                     dtype=torch.float64)}) or "")


def test_a_nan_update_is_rejected_dead_lettered_and_counted_while_the_round_goes_on() -> None:
    # Given two honest digits workers and a hostile one that answers every task with NaN
    hub = MemoryHub()
    task = load_task("digits")
    settings = TrainSettings("digits", ("bob", "alice", "mallory"), rounds=2, min_replies=2,
                             config=TrainConfig(lr=0.1), round_timeout_s=30)
    rounds: list[RoundMetrics] = []
    with LocalWorkers(hub, task, ("bob", "alice")), MemoryBroker(hub) as broker, _nan_worker(hub, "mallory"):
        # When two rounds run
        weights = TrainingJob(broker, settings, task=task, on_round=rounds.append).run()
        letters = [broker.take_dead_letter(timeout=1) for _ in range(2)]
    # Then each round aggregated the two honest replies and rejected mallory's, saying why
    assert [(m.replies, m.rejected, m.failed) for m in rounds] == [(2, 1, 1), (2, 1, 1)]
    assert "NaN or Inf" in rounds[0].failures["mallory"]
    assert all(letter is not None and "rejected update" in letter.reason for letter in letters)
    # And the global model stayed finite
    assert all(bool(torch.isfinite(t).all()) for t in weights.values())


class _nan_worker:
    """A worker thread that replies to each train task with an update full of NaN."""

    def __init__(self, hub: MemoryHub, name: str) -> None:
        self._broker = MemoryBroker(hub)
        self._broker.declare_worker(name)
        self._broker.consume_tasks(name)
        self._name = name
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> None:
        self._thread.start()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self._broker.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            delivery = self._broker.receive(timeout=0.05)
            if delivery is None:
                continue
            message = decode_message(delivery.body())
            task = message.for_worker(self._name) if isinstance(message, SharedTask) else message
            assert isinstance(task, TrainTask)
            update = {k: torch.full_like(v, float("nan")) for k, v in task.weights.items()}
            reply = Reply(job=task.job, round=task.round, task_id=task.task_id, worker=self._name, update=update, num_examples=2, metrics={"train_loss": 0.0})
            self._broker.publish_reply(task.job, self._name, encode_message(reply))
            self._broker.ack(delivery)
