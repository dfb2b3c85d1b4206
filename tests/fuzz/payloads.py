"""Hostile payloads for the fuzz tests, as hypothesis strategies.

Families: random bytes; valid messages truncated or with flipped bytes; msgpack headers that
declare huge lengths; maps with wrong types, unknown kinds and unknown protocol versions;
tensors whose dtype, shape or byte count lie; NaN/Inf updates; nested-container bombs; and chunk frames (headers and
body) that are orphaned, oversized, incomplete or lie about their size.

Every message here is built on a model that no fedmq task has ("w" of shape [3]), so a payload
that happens to decode is still a task no worker can run, or a reply to a task nobody asked:
each one must end in the dead-letter queue, exactly once.
"""

from __future__ import annotations

import struct
import uuid
import zlib

import msgpack
import torch
from hypothesis import strategies as st

from fedmq.broker import chunks
from tests.fuzz.bombs import bomb_payloads
from fedmq.protocol.messages import PROTOCOL_VERSION, Reply, TrainConfig, TrainTask, encode_message

JOB = "fuzz"
NOT_A_MODEL = {"w": torch.arange(3, dtype=torch.float32)}


def valid_messages(worker: str) -> list[bytes]:
    task = TrainTask(job=JOB, round=1, task_id="t", weights=NOT_A_MODEL, config=TrainConfig())
    reply = Reply(job=JOB, round=999, task_id="t", worker=worker, update=NOT_A_MODEL, num_examples=3, metrics={"train_loss": 1.0})
    return [bytes(encode_message(task)), bytes(encode_message(reply))]


def _pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(),
                     st.text(max_size=20), st.binary(max_size=20))
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)


@st.composite
def lying_tensors(draw: st.DrawFn) -> dict[str, object]:
    dtype = draw(st.sampled_from(["float32", "float64", "int8", "bool", "complex64", "float8", "", 7]))
    edges = st.sampled_from([0, 1, 3, 2**31, 2**62, 2**63 - 1, 2**63, 2**64 - 1])
    shape = draw(st.one_of(st.lists(st.integers(-2, 2**62), max_size=20), st.lists(edges, max_size=4),
                           st.just([0, 2**64 - 1]), st.just([2**31] * 4), _values))
    data = draw(st.one_of(st.just(b""), st.binary(max_size=64), st.lists(st.binary(max_size=8), max_size=4),
                          _values))
    tensor: dict[str, object] = {"dtype": dtype, "shape": shape, "data": data}
    if draw(st.booleans()):
        tensor[draw(st.text(max_size=5))] = draw(_values)
    return tensor


@st.composite
def wrong_maps(draw: st.DrawFn) -> bytes:
    """A msgpack map shaped like a message, every field possibly of the wrong type or value."""
    field = st.one_of(_values, lying_tensors())
    message = {
        "v": draw(st.one_of(st.just(PROTOCOL_VERSION), st.integers(-5, 5), _values)),
        "kind": draw(st.one_of(st.sampled_from(["train", "evaluate", "reply", "error", "batch", "result"]),
                               _values)),
        "job": draw(st.one_of(st.just(JOB), st.text(max_size=70), _values)),
        "round": draw(st.one_of(st.integers(-3, 2**64 - 1), _values)),
        "task_id": draw(st.one_of(st.just("t"), _values)),
        "worker": draw(st.one_of(st.just("w"), _values)),
        "weights": draw(st.one_of(st.dictionaries(st.text(max_size=5), lying_tensors(), max_size=3), field)),
        "update": draw(st.one_of(st.dictionaries(st.text(max_size=5), lying_tensors(), max_size=3), field)),
        "config": draw(st.one_of(st.fixed_dictionaries({"lr": _values, "epochs": _values,
                                                        "batch_size": _values, "seed": _values}), field)),
        "num_examples": draw(field), "metrics": draw(field), "reason": draw(field),
    }
    keys = draw(st.lists(st.sampled_from(sorted(message)), unique=True))
    return _pack({key: message[key] for key in keys})


@st.composite
def lying_messages(draw: st.DrawFn, worker: str) -> bytes:
    """A well-formed task or reply whose tensors lie: the envelope passes, the tensors must not."""
    tensors = draw(st.dictionaries(st.text(max_size=5), lying_tensors(), min_size=1, max_size=3))
    head = {"v": PROTOCOL_VERSION, "job": JOB, "round": 1, "task_id": "t"}
    if draw(st.booleans()):
        config = {"lr": 0.1, "epochs": 1, "batch_size": 2, "seed": 0}
        return _pack({**head, "kind": "train", "weights": tensors, "config": config})
    return _pack({**head, "kind": "reply", "status": "ok", "worker": worker, "update": tensors,
                  "num_examples": 3, "metrics": {}})


@st.composite
def huge_headers(draw: st.DrawFn) -> bytes:
    """msgpack containers and strings that declare up to 4 GiB and hold a few bytes."""
    marker = draw(st.sampled_from([b"\xc6", b"\xdb", b"\xdd", b"\xdf", b"\xc5", b"\xda", b"\xdc", b"\xde"]))
    wide = marker in (b"\xc6", b"\xdb", b"\xdd", b"\xdf")
    length = draw(st.integers(0, 2**32 - 1 if wide else 2**16 - 1))
    head = marker + struct.pack(">I" if wide else ">H", length)
    return draw(st.sampled_from([b"", b"\x81\xa1v" + b"\x01"])) + head + draw(st.binary(max_size=32))


@st.composite
def mangled(draw: st.DrawFn, worker: str) -> bytes:
    """A valid message, truncated or with some bytes changed."""
    data = bytearray(draw(st.sampled_from(valid_messages(worker))))
    if draw(st.booleans()):
        return bytes(data[:draw(st.integers(0, len(data) - 1))])
    for _ in range(draw(st.integers(1, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@st.composite
def non_finite(draw: st.DrawFn, worker: str) -> bytes:
    bad = draw(st.sampled_from([float("nan"), float("inf"), float("-inf")]))
    update = {"w": torch.tensor([0.0, bad, 1.0])}
    kind = draw(st.sampled_from(["task", "reply"]))
    if kind == "task":
        return bytes(encode_message(TrainTask(job=JOB, round=1, task_id="t", weights=update, config=TrainConfig())))
    return bytes(encode_message(Reply(job=JOB, round=999, task_id="t", worker=worker, update=update, num_examples=3, metrics={"loss": bad})))


def payloads(worker: str = "w") -> st.SearchStrategy[bytes]:
    """Whole hostile message bodies (no chunk headers)."""
    return st.one_of(st.binary(max_size=256), wrong_maps(), lying_messages(worker), huge_headers(), mangled(worker),
                     non_finite(worker), bomb_payloads(), st.just(b""), st.just(b"\xc1"))


Frames = list[chunks.Frame]


@st.composite
def chunk_attacks(draw: st.DrawFn) -> Frames:
    """The frames of one hostile chunked message; each must cost exactly one dead letter."""
    message_id = uuid.uuid4().hex
    body = draw(st.binary(min_size=2, max_size=64))
    crc = zlib.crc32(body)
    kind = draw(st.sampled_from(["orphan", "huge", "oversized", "incomplete", "corrupt"]))
    announce = {chunks.MESSAGE_ID: message_id, chunks.CHUNK_COUNT: 2, chunks.TOTAL_SIZE: len(body)}
    chunk = {chunks.MESSAGE_ID: message_id, chunks.CHUNK_INDEX: 0, chunks.CHUNK_CRC: crc}
    if kind == "orphan":  # a chunk whose announcement never came
        return [chunks.Frame(chunk, body)]
    if kind == "huge":  # announces more than the receiver will ever hold
        return [chunks.Frame({**announce, chunks.TOTAL_SIZE: 2**40, chunks.CHUNK_COUNT: 2**20}, b"")]
    if kind == "oversized":  # a chunk larger than the whole announced message
        return [chunks.Frame({**announce, chunks.TOTAL_SIZE: 1}, b""), chunks.Frame(chunk, body)]
    if kind == "corrupt":
        return [chunks.Frame(announce, b""), chunks.Frame({**chunk, chunks.CHUNK_CRC: crc ^ 1}, body)]
    return [chunks.Frame({**announce, chunks.TOTAL_SIZE: 2 * len(body)}, b""), chunks.Frame(chunk, body)]
