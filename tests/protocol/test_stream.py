"""Reading a reply in place (protocol.stream): hostile parts are DecodeErrors, honest ones agree
with decode_message."""

import random
import struct

import pytest
import torch

from fedmq.broker.chunks import split
from fedmq.protocol.codec import BASE_VALUES, MAX_DEPTH, pack, tensors_to_wire
from fedmq.protocol.errors import DecodeError, UnsupportedVersion
from fedmq.protocol.messages import ErrorReply, Reply, decode_message, encode_message
from fedmq.protocol.stream import StreamedReply, read_reply


def _reply(**update: torch.Tensor) -> Reply:
    return Reply(job="job", round=3, task_id="task", worker="alice", update=update or {"w": torch.arange(6.0).reshape(2, 3)}, num_examples=12, metrics={"loss": 0.25})


def _wire(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {"v": 1, "kind": "reply", "status": "ok", "job": "job", "round": 3, "task_id": "task",
                               "worker": "alice", "update": tensors_to_wire({"w": torch.ones(3)}),
                               "num_examples": 12, "metrics": {"loss": 0.25}}
    base.update(changes)
    return base


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [bytes(frame.body) for frame in split(data, size) if frame.body]


def test_a_reply_reads_as_its_fields_and_its_tensors_whatever_the_chunking() -> None:
    # Given a reply with a multi-piece float32 tensor, a bfloat16 one, a scalar counter and an empty one
    update = {"big": torch.randn(1_200_000), "half": torch.randn(5).bfloat16(), "steps": torch.tensor(9),
              "none": torch.zeros(0, 2)}
    small = {"w": torch.randn(7), "steps": torch.tensor(2)}
    for size, sent in [(None, update), (1 << 20, update), (4097, update), (3, small), (1, small)]:
        data = bytes(encode_message(_reply(**sent)))
        # When it is read in place from chunks of `size` bytes
        read = read_reply(_chunks(data, size or len(data)))
        # Then its fields and tensors are those sent, and its parts were not consumed
        assert isinstance(read, StreamedReply)
        assert (read.job, read.round, read.task_id, read.worker, read.num_examples, read.metrics) == \
            ("job", 3, "task", "alice", 12, {"loss": 0.25})
        tensors = read.update.tensors()
        assert all(torch.equal(tensors[k], sent[k]) and tensors[k].dtype == sent[k].dtype for k in sent)
        assert read.without_update().update == {}


def test_other_messages_are_decoded_whole() -> None:
    # Given an error reply
    message = ErrorReply(job="job", round=3, task_id="task", worker="alice", reason="out of memory")
    # When it is read in place, Then it is the ErrorReply
    assert read_reply([bytes(encode_message(message))]) == message


BAD = [
    (b"", "ends inside"),
    (pack(_wire())[:-1], "ends inside"),
    (bytes(pack(_wire())) + b"\x00", "one msgpack object"),
    (pack({"v": 2, "kind": "reply"}), "version"),
    (b"\x93\x01\x02\x03", "must be a msgpack map"),
    (pack(_wire(update=[1, 2])), "map from names to tensors"),
    (pack(_wire(update={"w": {"dtype": "float32", "shape": [3]}})), "exactly dtype, shape and data"),
    (pack(_wire(update={"w": {"dtype": "float32", "shape": [3], "data": b"\x00" * 12, "x": 1}})), "exactly"),
    (pack(_wire(update={"w": {"dtype": "float32", "shape": [3], "data": "text"}})), "must be msgpack bin"),
    (pack(_wire(update={"w": {"dtype": "float32", "shape": [3], "data": [b"\x00" * 8, 4]}})), "must be msgpack bin"),
    (pack(_wire(update={"w": {"dtype": "float32", "shape": [3], "data": b"\x00" * 11}})), "needs 12 bytes"),
    (pack(_wire(update={"w": {"dtype": "complex64", "shape": [1], "data": b"\x00" * 8}})), "not allowed"),
    (pack(_wire(update={"w": {"dtype": "float32", "shape": [2**62, 2**62], "data": b""}})), "too many elements"),
    (pack(_wire(update={"w": {"dtype": "float32", "shape": [-1], "data": b""}})), "non-negative"),
    (pack(_wire(worker="../etc")), "not a valid name"),
    (pack(_wire(metrics={"loss": "low"})), "names to numbers"),
    (pack({k: v for k, v in _wire().items() if k != "update"}), "'update'"),
    (b"\x81\xa1v\xc7\x01\x05\x00", "extension"),
    (b"\x81\xa1v\xc1", "not accepted"),
    (b"\x82\xa1v\x01\xa1v\x01", "repeats a key"),
    (b"\x81\x01\x01", "keys must be text"),
    (b"\x81\xa2\xff\xfe\x01", "UTF-8"),
    (b"\x81\xa1v\xdd\xff\xff\xff\xff", "above its limit"),
    (b"\x81\xa1v" + b"\x91" * (MAX_DEPTH + 2) + b"\x01", "nest deeper"),
]


@pytest.mark.parametrize("data, reason", BAD)
def test_hostile_parts_are_decode_errors(data: bytes, reason: str) -> None:
    # Given hostile bytes, whole or cut into 7-byte parts
    for parts in ([bytes(data)], _chunks(bytes(data), 7)):
        # When they are read in place, Then the read fails with a DecodeError that says why
        with pytest.raises(DecodeError, match=reason):
            read_reply(parts)


def test_a_value_bomb_stops_at_the_budget() -> None:
    # Given a reply whose metrics are 65535 arrays of 15 nils: a million values in a megabyte
    bomb = b"\x81\xa1m\xdc" + struct.pack(">H", 65535) + (b"\x9f" + b"\xc0" * 15) * 65535
    # When it is read, Then it fails on the budget, as the whole decoder does
    with pytest.raises(DecodeError, match="more than"):
        read_reply([bomb])
    with pytest.raises(DecodeError, match="more than"):
        decode_message(bomb)
    assert BASE_VALUES + len(bomb) // 16 < 65535 * 16  # the bomb is indeed past the budget


def test_corrupted_replies_read_in_place_agree_with_decode_message() -> None:
    # Given a valid reply, chunked, and many copies with random bytes overwritten
    data = bytes(encode_message(_reply(w=torch.randn(40), n=torch.tensor(3), h=torch.randn(3).half())))
    rng = random.Random(7)
    for _ in range(3000):
        corrupt = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            corrupt[rng.randrange(len(corrupt))] = rng.randrange(256)
        corrupt = corrupt[:rng.choice([len(corrupt), rng.randrange(len(corrupt) + 1)])]
        # When both readers read it
        try:
            whole: object = decode_message(bytes(corrupt))
        except UnsupportedVersion:
            whole = UnsupportedVersion
        except DecodeError:
            whole = DecodeError
        try:
            streamed: object = read_reply(_chunks(bytes(corrupt), rng.randint(1, 64)))
        except UnsupportedVersion:
            streamed = UnsupportedVersion
        except DecodeError:
            streamed = DecodeError
        # Then the in-place reader never raises anything else, and accepts what decode_message accepts
        if isinstance(whole, Reply):
            assert isinstance(streamed, StreamedReply), bytes(corrupt)
            tensors = streamed.update.tensors()
            assert tensors.keys() == whole.update.keys()
            assert all(torch.equal(tensors[k].reshape(-1).view(torch.uint8), whole.update[k].reshape(-1).view(torch.uint8))
                       for k in tensors)
            head = streamed.without_update()
            assert (head.job, head.round, head.task_id, head.worker, head.num_examples, head.metrics) == \
                (whole.job, whole.round, whole.task_id, whole.worker, whole.num_examples, whole.metrics)
        elif whole is UnsupportedVersion:
            assert streamed in (UnsupportedVersion, DecodeError)
        elif whole is DecodeError:
            assert streamed is DecodeError or not isinstance(streamed, StreamedReply), bytes(corrupt)
        else:
            assert type(streamed) is type(whole)
