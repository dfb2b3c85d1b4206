"""Fuzzing the decoder: thousands of hostile payloads, each either a message or a DecodeError.

Anything else (a crash, another exception type) is a bug: the consumers catch DecodeError only.
The chunk reassembler is fuzzed the same way: hostile frames end as Dropped, never as an
exception, and leave nothing pending.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedmq.broker import chunks
from fedmq.protocol.codec import MAX_DEPTH, tensor_from_wire, unpack
from fedmq.protocol.errors import DecodeError
from fedmq.protocol.messages import decode_message
from fedmq.protocol.presence import decode_presence
from tests.fuzz.bombs import bomb_items, count_values, nested_bombs
from tests.fuzz.live import SCALE
from tests.fuzz.payloads import Frames, chunk_attacks, payloads

EXAMPLES = 2000 * SCALE
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(payloads())
def test_hostile_bytes_decode_to_a_message_or_a_decode_error(payload: bytes) -> None:
    # When the decoder meets a hostile payload, whole or as parts
    for data in (payload, [payload[:7], payload[7:]]):
        try:
            decode_message(data)
        # Then it returns a message or raises DecodeError, and nothing else escapes
        except DecodeError:
            pass


@FUZZ
@given(st.integers(0, MAX_DEPTH + 1), bomb_items, st.data())
def test_the_value_budget_and_the_nesting_limit_are_exact(levels: int, item: object, data: st.DataObject) -> None:
    # Given any small msgpack tree, sometimes wrapped in lists up to one level past the nesting limit
    tree = {"m": item}
    for _ in range(levels):
        tree = {"m": [tree["m"]]}
    values, depth = count_values(tree)
    payload = msgpack.packb(tree, use_bin_type=True)
    cut = data.draw(st.integers(0, len(payload)))
    # When it is decoded whole, and in two parts cut anywhere
    for whole in (True, False):
        if depth > MAX_DEPTH:
            # Then a tree nested past the limit is refused for its nesting, whatever the budget
            with pytest.raises(DecodeError, match="nest"):
                unpack(payload if whole else [payload[:cut], payload[cut:]], max_values=values)
            continue
        # Then a budget of exactly its values decodes it, and one value less refuses it
        assert unpack(payload if whole else [payload[:cut], payload[cut:]], max_values=values) == tree
        with pytest.raises(DecodeError, match="values"):
            unpack(payload if whole else [payload[:cut], payload[cut:]], max_values=values - 1)


@settings(max_examples=10 * SCALE, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(nested_bombs(sizes=(256 << 10, 1 << 20)))
def test_nested_container_bombs_are_decode_errors_within_the_memory_margin(bomb: tuple[str, bytes]) -> None:
    # Given a bomb of up to 1 MiB: one small container-rich item repeated, sometimes nested deep
    wrapper, payload = bomb
    half = len(payload) // 2
    attempts: list[Callable[[], object]] = [lambda: decode_presence(payload)] if wrapper == "presence" else [
        lambda: decode_message(payload), lambda: decode_message([payload[:half], payload[half:]])]
    for attempt in attempts:
        tracemalloc.start()
        try:
            # When the decoder it targets meets it (tasks and commands whole and in parts)
            with pytest.raises(DecodeError):
                attempt()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        # Then it is a DecodeError, and the objects it built peaked within the margin of
        # tests/protocol/test_decode_budget.py (8x the payload plus 16 MiB)
        assert peak <= 8 * len(payload) + (16 << 20)


@FUZZ
@given(chunk_attacks())
def test_hostile_chunk_frames_are_dropped_with_a_reason_and_nothing_stays_pending(frames: Frames) -> None:
    # Given a reassembler whose clock we move, fed the frames of one hostile chunked message
    now = [0.0]
    reassembler = chunks.Reassembler[int](timeout_s=1.0, max_pending_bytes=1 << 20, clock=lambda: now[0])
    outcomes = [reassembler.offer("q", frame.headers, bytes(frame.body), i) for i, frame in enumerate(frames)]
    now[0] = 5.0
    outcomes += reassembler.expire()
    # Then it is dropped exactly once, with a reason, and every piece is handed back for acking
    dropped = [o for o in outcomes if isinstance(o, chunks.Dropped) and o.error is not None]
    assert len(dropped) == 1 and str(dropped[0].error)
    assert not any(isinstance(o, chunks.Assembled) for o in outcomes)
    assert reassembler.pending_bytes == 0


@pytest.mark.parametrize("shape", [[0, 2**63], [0, 2**62, 2], [0, 2**64 - 1]])
def test_an_empty_tensor_of_impossible_size_is_a_decode_error(shape: list[int]) -> None:
    # Found by the fuzzer above: torch raised TypeError / RuntimeError, which crashed consumers
    with pytest.raises(DecodeError, match="too many elements"):
        tensor_from_wire({"dtype": "float32", "shape": shape, "data": b""})
