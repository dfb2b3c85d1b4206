"""The streaming fold (issue 10 point 5): updates folded straight from their received parts.

A linear strategy folds a reply read in place (protocol.stream) into its running sum. The sum
must be the whole-reply sum bit for bit, a rejected update must leave it untouched, and the
reply is acknowledged only once folded in.
"""

import time
from pathlib import Path

import pytest
import torch

from fedmq.broker.chunks import split
from fedmq.broker.memory import MemoryBroker, MemoryHub
from fedmq.broker.spill import SpillFile
from fedmq.coordinator.rounds import ReplyCollector
from fedmq.coordinator.screening import streamed_update_error, update_error
from fedmq.coordinator.staleness import scaled, scaled_streamed
from fedmq.coordinator.strategies.fedopt import FedAdam, FedAvgM, FedProx
from fedmq.coordinator.strategy import FedAvg, Strategy
from fedmq.protocol.messages import Reply, Weights, decode_message, encode_message
from fedmq.protocol.stream import StreamedReply, read_reply

JOB = "job"
# Chunk sizes: one part, the transport's default, and sizes that split elements between parts.
CHUNKS = [1 << 30, 8 << 20, 4097, 1001]


def _parts(reply: Reply, chunk_size: int) -> list[bytes]:
    return [bytes(frame.body) for frame in split(encode_message(reply), chunk_size) if frame.body]


def _model(dtype: torch.dtype) -> Weights:
    generator = torch.Generator().manual_seed(1)
    return {"w": torch.randn(700, 1500, generator=generator).to(dtype),  # > 4 MiB as float32: pieces
            "b": torch.randn(13, generator=generator).to(dtype),
            "steps": torch.tensor(7), "empty": torch.zeros(0, 4, dtype=dtype)}


def _reply(worker: str, weights: Weights, seed: int, examples: int, update_dtype: torch.dtype | None = None) -> Reply:
    generator = torch.Generator().manual_seed(seed)
    update = {name: (torch.randn(t.shape, generator=generator) * 3).to(update_dtype or t.dtype)
              if t.is_floating_point() else torch.tensor(seed) for name, t in weights.items()}
    return Reply(job=JOB, round=1, task_id=f"t-{worker}", worker=worker, update=update, num_examples=examples, metrics={"train_loss": 0.5})


def _streamed(reply: Reply, chunk_size: int) -> StreamedReply:
    message = read_reply(_parts(reply, chunk_size))
    assert isinstance(message, StreamedReply)
    return message


@pytest.mark.parametrize("dtype, update_dtype", [(torch.float32, None), (torch.float64, None), (torch.float16, None),
                                                 (torch.bfloat16, None), (torch.float32, torch.float16)])
@pytest.mark.parametrize("chunk_size", CHUNKS)
def test_the_streamed_sum_is_the_whole_reply_sum_bit_for_bit(dtype: torch.dtype, update_dtype: torch.dtype | None,
                                                               chunk_size: int) -> None:
    # Given a model and three replies, sent in chunks of `chunk_size` bytes
    weights = _model(dtype)
    replies = [_reply(f"w{i}", weights, seed=i, examples=10 + 7 * i, update_dtype=update_dtype) for i in range(3)]
    whole, streamed = FedAvg(), FedAvg()
    whole.begin_round(weights)
    streamed.begin_round(weights)
    # When one strategy folds them decoded whole and the other straight from their parts
    for reply in replies:
        parts = _parts(reply, chunk_size)
        decoded = decode_message(list(parts))
        assert isinstance(decoded, Reply)
        whole.accumulate(decoded)
        streamed.accumulate_streamed(_streamed(reply, chunk_size))
    # Then the new models are equal, bit for bit, integer counters included
    a, b = whole.end_round([]), streamed.end_round([])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)
    assert not torch.equal(a["w"], weights["w"])  # the round did move the model


@pytest.mark.parametrize("strategy", [FedProx(), FedAvgM(), FedAdam()], ids=["fedprox", "fedavgm", "fedadam"])
def test_server_optimizers_stream_to_the_same_model(strategy: Strategy) -> None:
    # Given a linear strategy of each family and its twin fed whole replies
    weights = _model(torch.float32)
    twin = type(strategy)()
    assert strategy.streams and twin.streams
    strategy.begin_round(weights)
    twin.begin_round(weights)
    # When the same two replies are folded both ways
    for i in range(2):
        reply = _reply(f"w{i}", weights, seed=i, examples=5 + i)
        strategy.accumulate_streamed(_streamed(reply, 4097))
        twin.accumulate(reply)
    # Then both end the round at the same weights
    a, b = strategy.end_round([]), twin.end_round([])
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_streamed_screening_agrees_with_whole_screening() -> None:
    # Given updates that are fine, hold a NaN in their last piece, overflow float16, or misfit
    weights = _model(torch.float32)
    good = _reply("w0", weights, seed=0, examples=1).update
    nan = {**good, "w": good["w"].clone()}
    nan["w"][-1, -1] = float("nan")
    wide = {**good, "b": torch.full((13,), 1e300, dtype=torch.float64)}  # Inf once cast to float32
    misfit = {**good, "b": torch.zeros(14)}
    for update, bound in [(good, None), (good, 1.0), (good, 1e9), (nan, None), (wide, None), (misfit, None)]:
        reply = Reply(job=JOB, round=1, task_id="t", worker="w0", update=update, num_examples=1, metrics={})
        # When each is screened whole and in place
        whole = update_error(weights, update, bound)
        streamed = streamed_update_error(weights, _streamed(reply, 1001).update, bound)
        # Then both reach the same verdict, for the same reason
        assert (whole is None) == (streamed is None)
        assert whole is None or streamed is not None and whole.split(" ")[:2] == streamed.split(" ")[:2]
    assert streamed_update_error(weights, _streamed(Reply(job=JOB, round=1, task_id="t", worker="w0", update=nan, num_examples=1, metrics={}), 1001).update) is not None


def test_a_rejected_update_leaves_the_sum_untouched_and_is_dead_lettered_whole() -> None:
    # Given a round that asked alice and bob; bob's update holds one NaN in its very last element,
    # after megabytes of finite values
    weights = _model(torch.float32)
    hub = MemoryHub()
    coordinator, worker = MemoryBroker(hub), MemoryBroker(hub)
    coordinator.declare_job(JOB, ["alice", "bob"])
    coordinator.consume_replies(JOB, ["alice", "bob"])
    alice, bob = _reply("alice", weights, seed=1, examples=3), _reply("bob", weights, seed=2, examples=5)
    bob.update["w"][-1, -1] = float("nan")
    for reply in (alice, bob):
        worker.publish_reply(JOB, reply.worker, encode_message(reply))
    strategy, alone = FedAvg(), FedAvg()
    strategy.begin_round(weights)
    alone.begin_round(weights)
    alone.accumulate(alice)

    def fold(reply: StreamedReply) -> str | None:
        error = streamed_update_error(weights, reply.update)
        if error is None:
            strategy.accumulate_streamed(reply)
        return error

    # When the replies are collected with the streaming fold
    collector = ReplyCollector(coordinator, JOB, 1, {"t-alice": "alice", "t-bob": "bob"})
    collected = collector.collect(time.monotonic() + 5.0, lambda reply: "not streamed", fold)
    # Then alice's update is the whole sum, bob's was rejected without touching it, and bob's
    # reply reached the dead-letter queue with all its bytes
    assert [answer.worker for answer in collected.replies] == ["alice"] and collected.rejected == 1
    a, b = strategy.end_round([]), alone.end_round([])
    assert all(torch.equal(a[k], b[k]) for k in a)
    letter = coordinator.take_dead_letter(timeout=1.0)
    assert letter is not None and "NaN" in letter.reason
    assert bytes(letter.body) == bytes(encode_message(bob))


@pytest.mark.parametrize("chunk_size", [8 << 20, 4097, 1001])
def test_updates_spilled_to_disk_fold_and_screen_as_those_in_memory(chunk_size: int, tmp_path: Path) -> None:
    # Given two replies, and a third holding a NaN in its last element, each also spilled to disk
    weights = _model(torch.float32)
    replies = [_reply(f"w{i}", weights, seed=i, examples=3 + i) for i in range(3)]
    replies[2].update["w"][-1, -1] = float("nan")
    in_memory, on_disk = FedAvg(), FedAvg()
    in_memory.begin_round(weights)
    on_disk.begin_round(weights)
    verdicts = []
    for reply in replies:
        spill = SpillFile(tmp_path)
        spilled = read_reply([spill.append(part) for part in _parts(reply, chunk_size)])
        assert isinstance(spilled, StreamedReply)
        # When each is screened and folded from memory and from disk
        verdict = (streamed_update_error(weights, _streamed(reply, chunk_size).update),
                   streamed_update_error(weights, spilled.update))
        verdicts.append(verdict)
        if verdict == (None, None):
            in_memory.accumulate_streamed(_streamed(reply, chunk_size))
            on_disk.accumulate_streamed(spilled)
    # Then both reach the same verdicts, and the same new model bit for bit
    assert verdicts[:2] == [(None, None)] * 2
    assert all(error is not None and "NaN" in error for error in verdicts[2])
    a, b = in_memory.end_round([]), on_disk.end_round([])
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("chunk_size", [4097, 1001])
def test_a_staleness_weighted_update_streams_to_the_whole_sum_bit_for_bit(dtype: torch.dtype, chunk_size: int) -> None:
    # Given replies scaled by an awkward staleness weight, whole and still in their parts
    weights = _model(dtype)
    replies = [_reply(f"w{i}", weights, seed=i, examples=4 + i) for i in range(2)]
    whole, streamed = FedAvg(), FedAvg()
    whole.begin_round(weights)
    streamed.begin_round(weights)
    for reply in replies:
        # When one strategy folds them scaled whole and the other scaled piece by piece
        whole.accumulate(scaled(reply, 0.37))
        streamed.accumulate_streamed(scaled_streamed(_streamed(reply, chunk_size), 0.37))
    # Then the new models are equal bit for bit, counters unscaled; and the scaled tensors agree
    a, b = whole.end_round([]), streamed.end_round([])
    assert all(torch.equal(a[k], b[k]) for k in a)
    read = scaled_streamed(_streamed(replies[0], chunk_size), 0.37).update.tensors()
    expected = scaled(replies[0], 0.37).update
    assert all(torch.equal(read[k], expected[k]) for k in expected)
    assert torch.equal(read["steps"], replies[0].update["steps"])


def test_subclasses_that_fold_whole_replies_their_own_way_do_not_stream() -> None:
    # Given a FedAvg subclass that redefines accumulate only, and one that redefines both
    class Recording(FedAvg):
        def accumulate(self, reply: Reply) -> None:
            super().accumulate(reply)

    class RecordingBoth(Recording):
        def accumulate_streamed(self, reply: StreamedReply) -> None:
            super().accumulate_streamed(reply)

    # Then the first gets whole replies (its accumulate is never bypassed) and the second streams
    assert FedAvg().streams and not Recording().streams and RecordingBoth().streams
