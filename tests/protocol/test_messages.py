"""Messages: every kind round trips; versions, kinds and field types are checked."""

import msgpack
import pytest
import torch

from fedmq.protocol.errors import DecodeError, UnsupportedVersion
from fedmq.protocol.messages import (
    ErrorReply,
    EvaluateTask,
    PROTOCOL_VERSION,
    Message,
    Reply,
    TrainConfig,
    TrainTask,
    check_name,
    decode_message,
    encode_message,
)

WEIGHTS = {"fc.weight": torch.randn(3, 2), "fc.bias": torch.zeros(3, dtype=torch.bfloat16)}


@pytest.mark.parametrize("message", [
    TrainTask(job="job-1", round=3, task_id="t1", weights=WEIGHTS, config=TrainConfig(lr=0.1, epochs=2, batch_size=8, seed=7)),
    EvaluateTask(job="job-1", round=3, task_id="t2", weights=WEIGHTS),
    Reply(job="job-1", round=3, task_id="t1", worker="alice", update=WEIGHTS, num_examples=40, metrics={"train_loss": 0.5, "train_seconds": 0.01}),
    ErrorReply(job="job-1", round=3, task_id="t1", worker="bob", reason="shapes do not fit"),
])
def test_each_kind_round_trips(message: Message) -> None:
    # When a message is encoded and decoded
    decoded = decode_message(encode_message(message))
    # Then every field survives: plain fields equal, tensors equal value for value
    assert type(decoded) is type(message)
    for name, value in vars(message).items():
        got = getattr(decoded, name)
        if isinstance(value, dict) and value and isinstance(next(iter(value.values())), torch.Tensor):
            assert got.keys() == value.keys()
            assert all(torch.equal(got[k], v) and got[k].dtype == v.dtype for k, v in value.items())
        else:
            assert got == value, name


def _raw(**changes: object) -> bytes:
    base = {"v": 1, "kind": "error", "job": "j", "round": 1, "task_id": "t", "worker": "w",
            "status": "error", "reason": "r"}
    base.update(changes)
    return msgpack.packb({k: v for k, v in base.items() if v is not None}, use_bin_type=True)


def test_an_unknown_version_is_rejected_clearly() -> None:
    with pytest.raises(UnsupportedVersion, match="version 99 is not supported"):
        decode_message(_raw(v=99))


@pytest.mark.parametrize("changes, message", [
    ({"kind": "shell"}, "unknown message kind"),
    ({"round": "1"}, "'round'"),
    ({"round": -1}, "negative"),
    ({"round": True}, "'round'"),
    ({"job": None}, "'job'"),
    ({"worker": "../etc"}, "not a valid name"),
])
def test_bad_fields_are_decode_errors(changes: dict[str, object], message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        decode_message(_raw(**changes))


def test_train_config_must_be_sane() -> None:
    task = TrainTask(job="j", round=1, task_id="t", weights={}, config=TrainConfig(epochs=1))
    raw = msgpack.unpackb(bytes(encode_message(task)))
    raw["config"]["batch_size"] = 0
    with pytest.raises(DecodeError, match="at least 1"):
        decode_message(msgpack.packb(raw, use_bin_type=True))


def test_names_are_checked_before_they_become_queue_names() -> None:
    assert check_name("worker", "alice-1") == "alice-1"
    with pytest.raises(ValueError, match="worker name"):
        check_name("worker", "alice.#")


def test_reasons_are_clipped_in_one_place() -> None:
    # Given a reason as long as hostile input can make it, and a short one
    from fedmq.protocol.errors import MAX_REASON, clip

    long, short = "x" * (10 * MAX_REASON), "worker w0 is gone"
    # When each is clipped, then the long one is cut to the limit and marked, the short one kept
    assert len(clip(long)) == MAX_REASON and clip(long).endswith("...")
    assert clip(short) == short and clip(long, 10) == "xxxxxxx..."


@pytest.mark.parametrize("kind", [["train"], {"k": 1}, None, 7])
def test_a_kind_that_is_not_text_is_a_decode_error(kind: object) -> None:
    # Given a message map whose kind is a list, a map, missing or a number
    body = msgpack.packb({"v": PROTOCOL_VERSION, "kind": kind, "job": "j", "round": 1, "task_id": "t"})
    # When it is decoded, Then it is refused as undecodable, not a crash of the decoder
    with pytest.raises(DecodeError, match="kind"):
        decode_message(body)
