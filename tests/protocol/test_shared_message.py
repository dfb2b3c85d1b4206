"""SharedTask: one model for several workers, each reading only its own part."""

from __future__ import annotations

import msgpack
import pytest
import torch

from fedmq.protocol.errors import DecodeError
from fedmq.protocol.messages import (
    MAX_ASSIGNMENTS,
    PROTOCOL_VERSION,
    Assignment,
    EvaluateTask,
    SharedTask,
    TrainConfig,
    TrainTask,
    decode_message,
    encode_message,
)


def test_each_worker_gets_its_own_task_from_the_round_trip() -> None:
    # Given a model shared by a trainer with options and an evaluator
    weights = {"w": torch.arange(6.0).reshape(2, 3)}
    config = TrainConfig(lr=0.2, epochs=2, batch_size=4, seed=7, options={"proximal_mu": 0.1})
    shared = SharedTask(job="j", round=3, share_id="s", weights=weights, assignments={
        "a": Assignment(task_id="ta", config=config), "b": Assignment(task_id="tb")})
    # When it is encoded and decoded
    decoded = decode_message(encode_message(shared))
    assert isinstance(decoded, SharedTask)
    # Then a gets its train task, b its evaluation, and a stranger nothing
    mine = decoded.for_worker("a")
    assert isinstance(mine, TrainTask) and (mine.task_id, mine.config, mine.round) == ("ta", config, 3)
    assert torch.equal(mine.weights["w"], weights["w"])
    theirs = decoded.for_worker("b")
    assert isinstance(theirs, EvaluateTask) and theirs.task_id == "tb"
    assert decoded.for_worker("c") is None


def test_too_many_assignments_are_refused() -> None:
    # Given a shared task naming more workers than any may address; when decoded; then refused
    raw = {"v": PROTOCOL_VERSION, "kind": "shared", "job": "j", "round": 1, "task_id": "s", "weights": {},
           "assignments": {f"w{i}": b"\x80" for i in range(MAX_ASSIGNMENTS + 1)}}
    with pytest.raises(DecodeError):
        decode_message(msgpack.packb(raw, use_bin_type=True))


@pytest.mark.parametrize("entry", [
    7, {"task_id": "t"}, b"\xc1", msgpack.packb({"task_id": 5}), msgpack.packb({"task_id": "t", "config": {"lr": "fast"}}),
    msgpack.packb({"task_id": "t", "config": {"lr": 0.1, "epochs": 0, "batch_size": 1, "seed": 0}})])
def test_a_malformed_own_entry_is_a_decode_error_for_that_worker_only(entry: object) -> None:
    # Given a shared task whose entry for "a" is malformed and for "b" is fine
    raw = {"v": PROTOCOL_VERSION, "kind": "shared", "job": "j", "round": 1, "task_id": "s", "weights": {},
           "assignments": {"a": entry, "b": msgpack.packb({"task_id": "tb"})}}
    decoded = decode_message(msgpack.packb(raw, use_bin_type=True))
    assert isinstance(decoded, SharedTask)
    # When each worker reads its part; then only "a" fails, with a DecodeError
    with pytest.raises(DecodeError):
        decoded.for_worker("a")
    assert isinstance(decoded.for_worker("b"), EvaluateTask)
