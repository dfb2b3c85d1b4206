"""Secure aggregation wired into training rounds, on the memory broker: the coordinator's
receive() is instrumented to see exactly what reaches it.

A "dropout" here is a stage reply that never reaches the coordinator (the instrumented broker
loses it), which is what the coordinator sees when a worker dies after sending nothing more.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from fedmq.broker.base import Delivery
from fedmq.broker.memory import MemoryBroker, MemoryHub
from fedmq.coordinator.job import TrainingJob
from fedmq.coordinator.metrics import RoundMetrics
from fedmq.coordinator.secagg.settings import SecAggSettings
from fedmq.coordinator.settings import TrainSettings
from fedmq.protocol.errors import TrainingFailed
from fedmq.protocol.messages import Message, Reply, TrainConfig, Weights, decode_message, encode_message
from fedmq.protocol.secagg import messages as m
from fedmq.protocol.secagg.params import SecAggParams
from fedmq.worker.pool import LocalWorkers
from fedmq.worker.task import load_task

WORKERS = ("w0", "w1", "w2", "w3")
Lose = Callable[[str, Message], bool]  # (worker, message) -> lose it before the coordinator sees it


class SeeingBroker(MemoryBroker):
    """The coordinator's broker: records every message it receives, and loses those `lose` picks."""

    def __init__(self, hub: MemoryHub, lose: Lose | None = None) -> None:
        super().__init__(hub)
        self.seen: list[tuple[str, Message]] = []
        self.attack: Callable[[SeeingBroker, Message], None] | None = None
        self._lose = lose

    def receive(self, timeout: float) -> Delivery | None:
        while True:
            delivery = super().receive(timeout)
            if delivery is None:
                return None
            message = decode_message(b"".join(bytes(p) for p in delivery.parts))
            self.seen.append((delivery.source, message))
            if self.attack is not None:
                self.attack(self, message)
            if self._lose is None or not self._lose(delivery.source, message):
                return delivery
            self.ack(delivery)  # gone: as if the worker had died before sending it


def _settings(tmp_path: Path, *, secure: bool, rounds: int = 2, **extra: object) -> TrainSettings:
    return TrainSettings("digits", WORKERS, rounds=rounds, config=TrainConfig(lr=0.1, batch_size=16, seed=4),
                         metrics_out=tmp_path / f"{'secure' if secure else 'plain'}.jsonl",
                         clip_norm=10.0 if secure else None,
                         secagg=SecAggSettings(stage_timeout_s=5.0) if secure else None, **extra)  # type: ignore[arg-type]


def _train(settings: TrainSettings, lose: Lose | None = None,
           attack: Callable[[SeeingBroker, Message], None] | None = None) -> tuple[Weights, list[RoundMetrics], SeeingBroker]:
    hub = MemoryHub()
    task = load_task(settings.task)
    rounds: list[RoundMetrics] = []
    with LocalWorkers(hub, task, settings.workers), SeeingBroker(hub, lose) as broker:
        broker.attack = attack
        weights = TrainingJob(broker, settings, task=task, on_round=rounds.append).run()
    return weights, rounds, broker


def test_a_secure_run_ends_where_plain_fedavg_ends_and_the_coordinator_sees_no_update(tmp_path: Path) -> None:
    # Given four digits workers whose updates fit well inside the clip norm
    # When the same two rounds run plainly and with secure aggregation
    plain, _, _ = _train(_settings(tmp_path, secure=False))
    secure, rounds, broker = _train(_settings(tmp_path, secure=True))
    # Then the models agree within the quantization error of two rounds
    step = 10.0 / (2 ** 15 - 1)  # clip / levels: one quantization step of one coordinate
    for name, tensor in plain.items():
        if tensor.is_floating_point():
            torch.testing.assert_close(secure[name], tensor, atol=4 * step, rtol=0)
    # And every update reached the coordinator masked, none in the clear
    updates = [msg for _, msg in broker.seen if isinstance(msg, Reply)]
    masked = [msg for _, msg in broker.seen if isinstance(msg, m.MaskedInputReply)]
    assert len(updates) == 8 and all(not reply.update for reply in updates)
    assert len(masked) == 8
    assert [r.strategy["secagg_contributors"] for r in rounds] == [4, 4]


def test_a_worker_lost_after_sharing_keys_drops_out_and_the_round_still_completes(tmp_path: Path) -> None:
    # Given four workers, the threshold a majority (3)
    def lose(worker: str, message: Message) -> bool:
        return worker == "w3" and isinstance(message, m.MaskedInputReply)
    # When w3's masked input never reaches the coordinator
    weights, rounds, _ = _train(_settings(tmp_path, secure=True, rounds=1), lose=lose)
    # Then the round completes with the other three, and w3's failure names the stage it left at
    assert rounds[0].strategy["secagg_contributors"] == 3 and rounds[0].replies == 3
    assert "MASKED_INPUT" in rounds[0].failures["w3"]
    assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())


def test_below_the_threshold_the_round_fails_saying_which_stage(tmp_path: Path) -> None:
    # Given four workers, the threshold a majority (3)
    def lose(worker: str, message: Message) -> bool:
        return worker in ("w2", "w3") and isinstance(message, m.ShareReply)
    # When two of them never deliver their shares
    # Then the run fails at stage SHARE, saying how many answered and what to do
    with pytest.raises(TrainingFailed, match=r"stage SHARE: 2 worker\(s\) answered, the threshold is 3"):
        _train(_settings(tmp_path, secure=True, rounds=1), lose=lose)


def test_a_replayed_stage_reply_from_an_earlier_round_is_dead_lettered(tmp_path: Path) -> None:
    # Given an attacker who recorded w0's advertised keys in round 1
    recorded: list[m.AdvertiseReply] = []

    def attack(broker: SeeingBroker, message: Message) -> None:
        if isinstance(message, m.AdvertiseReply) and message.sender == 0:
            if message.round == 1:
                recorded.append(message)
            elif message.round == 2 and len(recorded) == 1:  # When it replays them in round 2
                broker.publish_reply("train", "w0", encode_message(recorded.pop()))
    settings = _settings(tmp_path, secure=True, rounds=2, job="train")
    _, rounds, broker = _train(settings, attack=attack)
    # Then the replay is dead-lettered and round 2 completes with all four workers
    assert rounds[1].dead_lettered == 1 and rounds[1].strategy["secagg_contributors"] == 4
    letter = broker.take_dead_letter(timeout=1.0)
    assert letter is not None and "replay" in letter.reason


@pytest.mark.parametrize("flags, message", [
    ({"strategy": "fedmedian"}, "FedMedian needs each worker's update"),
    ({"max_update_norm": 5.0}, "--max-update-norm screens individual updates"),
])
def test_combinations_that_would_see_individual_updates_are_refused(tmp_path: Path, flags: dict[str, object],
                                                                    message: str) -> None:
    # Given secure aggregation with a rule or a screen that needs each worker's update
    # When the job is set up, Then it refuses before round 1, saying why
    with pytest.raises(ValueError, match=message):
        _train(_settings(tmp_path, secure=True, **flags))


def test_the_ring_is_sized_by_the_counts_workers_report() -> None:
    # Given four workers of at most 450 examples at 16 bits
    params = SecAggParams(num_workers=4, threshold=3, neighbours=3, quant_bits=16, clip=1.0, max_examples=450)
    # Then the ring holds the weighted sum without wrapping, in fewer bits than a float32
    assert params.ring_bits == 16 + (4 * 450).bit_length() and params.ring_bits < 32
