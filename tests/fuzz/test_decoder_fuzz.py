"""Fuzzing the decoder: thousands of hostile payloads, each either a message or a DecodeError.

Anything else (a crash, another exception type) is a bug: the consumers catch DecodeError only.
The chunk reassembler is fuzzed the same way: hostile frames end as Dropped, never as an
exception, and leave nothing pending.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from broker import chunks
from protocol.codec import tensor_from_wire
from protocol.errors import DecodeError
from protocol.messages import decode_message
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
