"""A coordinator that spills chunked replies to disk (--spill-dir), over a real RabbitMQ."""

from __future__ import annotations

import dataclasses
import gc
import time
from pathlib import Path

import torch

from fedmq.broker.rabbitmq import RabbitBroker
from fedmq.broker.settings import BrokerSettings
from fedmq.coordinator.rounds import ReplyCollector
from fedmq.coordinator.screening import streamed_update_error
from fedmq.coordinator.strategy import FedAvg
from fedmq.protocol.messages import encode_message
from fedmq.protocol.stream import StreamedReply
from tests.broker.test_spill import open_files_in
from tests.coordinator.test_streaming_fold import JOB, _model, _reply


def test_spilled_replies_fold_to_the_in_memory_sum_and_a_nan_one_is_dead_lettered_whole(
        rabbit_settings: BrokerSettings, tmp_path: Path) -> None:
    # Given a coordinator spilling chunked replies to a directory, and alice and bob replying in
    # 1 MiB chunks; bob's update holds one NaN in its very last element
    weights = _model(torch.float32)
    alice, bob = _reply("alice", weights, seed=1, examples=3), _reply("bob", weights, seed=2, examples=5)
    bob.update["w"][-1, -1] = float("nan")
    alone = FedAvg()
    alone.begin_round(weights)
    alone.accumulate(alice)
    strategy = FedAvg()
    strategy.begin_round(weights)

    spilled = []

    def fold(reply: StreamedReply) -> str | None:
        spilled.append(open_files_in(tmp_path))  # the reply in hand is read from its spill file
        error = streamed_update_error(weights, reply.update)
        if error is None:
            strategy.accumulate_streamed(reply)
        return error

    spilling = dataclasses.replace(rabbit_settings, spill_dir=tmp_path)
    chunked = dataclasses.replace(rabbit_settings, chunk_size=1 << 20)
    with RabbitBroker(spilling) as coordinator, RabbitBroker(chunked) as worker:
        coordinator.consume_replies(JOB, ["alice", "bob"])
        for reply in (alice, bob):
            worker.publish_reply(JOB, reply.worker, encode_message(reply))
        # When the round collects them with the streaming fold
        collector = ReplyCollector(coordinator, JOB, 1, {"t-alice": "alice", "t-bob": "bob"})
        collected = collector.collect(time.monotonic() + 30.0, lambda reply: "not streamed", fold)
        letter = coordinator.take_dead_letter(timeout=10.0)
    # Then alice's update is the sum, bit for bit, and bob's was rejected without touching it
    assert [answer.worker for answer in collected.replies] == ["alice"] and collected.rejected == 1
    a, b = strategy.end_round([]), alone.end_round([])
    assert all(torch.equal(a[k], b[k]) for k in a)
    # And both were read from spill files, closed once handled
    assert len(spilled) == 2 and all(count >= 1 for count in spilled)
    del collected
    gc.collect()
    assert open_files_in(tmp_path) == 0
    # And bob's reply reached the dead-letter queue with all its bytes
    assert letter is not None and "NaN" in letter.reason
    assert bytes(letter.body) == bytes(encode_message(bob))
