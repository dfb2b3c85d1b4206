"""A host decodes each shared task once for all its logical workers, and only for equal bytes."""

import pytest
import torch

from fedmq.protocol.errors import DecodeError
from fedmq.protocol.messages import (
    Assignment,
    SharedTask,
    TrainConfig,
    TrainTask,
    decode_message,
    encode_message,
)
from fedmq.worker.decodes import SharedDecodes


def _shared(share_id: str = "s1", value: float = 0.0) -> bytes:
    weights = {"w": torch.full((2, 3), value)}
    assignments = {f"w{i}": Assignment(task_id=f"task-{i}", config=TrainConfig(seed=i)) for i in range(3)}
    message = SharedTask(job="job", round=1, share_id=share_id, weights=weights, assignments=assignments)
    return bytes(encode_message(message))


def test_equal_bodies_share_one_decode_and_each_worker_reads_its_own_task() -> None:
    # Given a host's decodes and one shared task, arriving on two workers' queues as two bytes objects
    decodes = SharedDecodes()
    body = _shared()
    first, second = decodes.decode(body), decodes.decode(bytes(bytearray(body)))
    # Then the second is the first decode, kept
    assert isinstance(first, SharedTask) and second is first
    # And each worker still gets its own task from it
    own = [first.for_worker(f"w{i}") for i in range(3)]
    assert all(isinstance(task, TrainTask) for task in own)
    assert [task.task_id for task in own if task is not None] == ["task-0", "task-1", "task-2"]


def test_a_body_differing_in_one_byte_is_decoded_on_its_own() -> None:
    # Given a kept decode of a shared task
    decodes = SharedDecodes()
    body = _shared(value=0.0)
    kept = decodes.decode(body)
    # When a body with other weights but the same share id arrives (a forgery, say)
    forged = _shared(value=1.0)
    assert len(forged) == len(body)
    other = decodes.decode(forged)
    # Then it is decoded from its own bytes, not served the kept one
    assert other is not kept
    assert isinstance(other, SharedTask) and torch.equal(other.weights["w"], torch.ones(2, 3))
    assert isinstance(kept, SharedTask) and torch.equal(kept.weights["w"], torch.zeros(2, 3))


def test_only_the_last_few_small_shared_tasks_are_kept() -> None:
    # Given decodes that keep two bodies of up to 4 KiB
    decodes = SharedDecodes(keep=2, max_body=4096)
    bodies = [_shared(share_id=f"s{i}") for i in range(3)]
    decoded = [decodes.decode(body) for body in bodies]
    # Then the two newest are kept and the oldest was let go
    assert decodes.decode(bodies[2]) is decoded[2] and decodes.decode(bodies[1]) is decoded[1]
    assert decodes.decode(bodies[0]) is not decoded[0]
    # And a body over the size limit, or a message of another kind, is never kept
    large = bytes(encode_message(SharedTask(job="job", round=1, share_id="big", weights={"w": torch.zeros(2048)},
                                            assignments={"w0": Assignment(task_id="t")})))
    assert len(large) > 4096 and decodes.decode(large) is not decodes.decode(large)
    task = bytes(encode_message(TrainTask(job="job", round=1, task_id="t", weights={"w": torch.zeros(1)})))
    assert decodes.decode(task) is not decodes.decode(task)
    assert isinstance(decodes.decode(task), TrainTask)


def test_malformed_bodies_raise_every_time() -> None:
    # Given decodes and bytes that are no message; then each decode raises as decode_message does
    decodes = SharedDecodes()
    for _ in range(2):
        with pytest.raises(DecodeError):
            decodes.decode(b"\xc1 not msgpack")
    with pytest.raises(DecodeError):
        decode_message(b"\xc1 not msgpack")
