"""Unit tests of chunk splitting and reassembly (pure: no broker)."""

from __future__ import annotations

import random
import zlib

import pytest

from fedmq.broker.chunks import (
    CHUNK_COUNT,
    CHUNK_CRC,
    CHUNK_INDEX,
    MESSAGE_ID,
    TOTAL_SIZE,
    Assembled,
    Dropped,
    Frame,
    Reassembler,
    is_piece,
    split,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def feed(
    reassembler: Reassembler[int], frames: list[Frame], origin: str = "q", first_tag: int = 0
) -> list[object]:
    """Offer every frame; the non-None outcomes."""
    outcomes: list[object] = []
    for tag, frame in enumerate(frames, start=first_tag):
        outcome = reassembler.offer(origin, frame.headers, bytes(frame.body), tag)
        if outcome is not None:
            outcomes.append(outcome)
    return outcomes


def with_header(frame: Frame, **changes: object) -> Frame:
    return Frame({**frame.headers, **{f"x-fedmq-{k}": v for k, v in changes.items()}}, frame.body)


def test_a_payload_that_fits_travels_as_one_plain_message() -> None:
    # Given a payload no larger than the chunk size
    payload = b"x" * 100
    # When it is split
    frames = list(split(payload, chunk_size=100))
    # Then it is one frame with no chunk headers, the payload itself (no copy)
    assert len(frames) == 1
    assert frames[0].headers == {}
    assert frames[0].body is payload
    assert not is_piece(frames[0].headers)


def test_a_large_payload_becomes_an_announcement_then_zero_copy_chunks() -> None:
    # Given a payload of 2.5 chunks
    payload = bytes(range(250))
    # When it is split
    announcement, *pieces = split(memoryview(payload), chunk_size=100, message_id="m1")
    # Then the announcement names the message, its chunk count and size, and has no body
    assert announcement.headers == {MESSAGE_ID: "m1", CHUNK_COUNT: 3, TOTAL_SIZE: 250}
    assert len(announcement.body) == 0
    # And the chunks are views of the payload with their index and crc32
    assert [bytes(p.body) for p in pieces] == [payload[:100], payload[100:200], payload[200:]]
    assert all(isinstance(p.body, memoryview) and p.body.obj is payload for p in pieces)
    assert [p.headers[CHUNK_INDEX] for p in pieces] == [0, 1, 2]
    assert [p.headers[CHUNK_CRC] for p in pieces] == [zlib.crc32(bytes(p.body)) for p in pieces]
    assert all(is_piece(frame.headers) for frame in (announcement, *pieces))


def test_split_refuses_a_chunk_size_below_one_byte() -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        list(split(b"abc", chunk_size=0))


def test_chunks_in_any_order_reassemble_byte_identical() -> None:
    # Given a message whose chunks arrive shuffled after the announcement
    payload = random.Random(1).randbytes(1000)
    announcement, *pieces = split(payload, chunk_size=64)
    random.Random(2).shuffle(pieces)
    # When every piece is offered
    outcomes = feed(Reassembler(timeout_s=10), [announcement, *pieces])
    # Then exactly one message is assembled, its parts in index order, every tag to ack
    assert len(outcomes) == 1
    assembled = outcomes[0]
    assert isinstance(assembled, Assembled)
    assert b"".join(assembled.parts) == payload
    assert sorted(assembled.tags) == list(range(len(pieces) + 1))
    assert assembled.headers[TOTAL_SIZE] == 1000


def test_interleaved_messages_from_two_publishers_both_assemble() -> None:
    # Given two chunked messages whose pieces interleave in one queue
    a = list(split(b"a" * 300, chunk_size=100))
    b = list(split(b"b" * 250, chunk_size=100))
    interleaved = [frame for pair in zip(a, b) for frame in pair]
    # When offered in that order
    outcomes = feed(Reassembler(timeout_s=10), interleaved)
    # Then both arrive whole
    assert sorted(b"".join(o.parts) for o in outcomes if isinstance(o, Assembled)) == [
        b"a" * 300,
        b"b" * 250,
    ]


def test_a_corrupt_chunk_drops_only_its_message_and_names_the_chunk() -> None:
    # Given message A with a bad crc on chunk 1, interleaved with a good message B
    a = list(split(b"a" * 300, chunk_size=100, message_id="A"))
    a[2] = with_header(a[2], crc32=(a[2].headers[CHUNK_CRC] + 1) % 2**32)  # type: ignore[operator]
    b = list(split(b"b" * 300, chunk_size=100, message_id="B"))
    reassembler: Reassembler[int] = Reassembler(timeout_s=10)
    # When all pieces are offered
    outcomes = feed(reassembler, [frame for pair in zip(a, b) for frame in pair])
    # Then A is dropped once, naming chunk 1, with the tags of its pieces so far to ack
    reported = [o for o in outcomes if isinstance(o, Dropped) and o.error is not None]
    assert len(reported) == 1
    assert reported[0].message_id == "A"
    assert "chunk 1 of 3 is corrupt" in str(reported[0].error)
    assert reported[0].tags == [0, 2, 4]  # announcement, chunk 0, the bad chunk 1
    # And A's late chunk 2 is handed back to ack quietly
    quiet = [o for o in outcomes if isinstance(o, Dropped) and o.error is None]
    assert [o.tags for o in quiet] == [[6]]
    # And B still assembles
    assert [b"".join(o.parts) for o in outcomes if isinstance(o, Assembled)] == [b"b" * 300]
    assert reassembler.pending_bytes == 0


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        (lambda f: f.__setitem__(1, with_header(f[1], index=7)), "chunk index 7 is outside 0..1"),
        (lambda f: f.__setitem__(2, with_header(f[2], index=0)), "chunk 0 arrived twice"),
        (lambda f: f.__setitem__(0, with_header(f[0], size=150)), "announced 150"),
        (lambda f: f.__setitem__(0, with_header(f[0], chunks=0)), "0 chunks cannot carry 20 bytes"),
        (lambda f: f.__setitem__(0, Frame(f[0].headers, b"oops")), "announcement carries 4 bytes"),
        (
            lambda f: f.__setitem__(1, with_header(f[1], crc32="abc")),
            "x-fedmq-crc32 must be a non-negative integer",
        ),
        (lambda f: f.pop(0), "without its announcement"),
    ],
)
def test_a_malformed_chunk_stream_is_dropped_with_what_is_wrong(
    tamper: object, expected: str
) -> None:
    # Given a two-chunk message tampered with in one way
    frames = list(split(b"0123456789" * 2, chunk_size=10))
    tamper(frames)  # type: ignore[operator]
    # When offered
    outcomes = feed(Reassembler(timeout_s=10), frames)
    # Then it is dropped, and the error says what is wrong
    errors = [str(o.error) for o in outcomes if isinstance(o, Dropped) and o.error is not None]
    assert len(errors) == 1
    assert expected in errors[0]
    assert not any(isinstance(o, Assembled) for o in outcomes)


def test_an_idle_partial_message_expires_and_progress_keeps_it_alive() -> None:
    # Given a message of three chunks of which two arrived, with time passing between them
    clock = Clock()
    reassembler: Reassembler[int] = Reassembler(timeout_s=5, clock=clock)
    frames = list(split(b"x" * 30, chunk_size=10, message_id="slow"))
    feed(reassembler, frames[:2])
    clock.now = 4
    feed(reassembler, frames[2:3], first_tag=2)
    # When time passes less than the timeout since the last chunk
    clock.now = 8
    # Then nothing expires
    assert reassembler.expire() == []
    assert reassembler.waiting_origins() == ["q"]
    # When the timeout passes without a chunk
    clock.now = 9.5
    expired = reassembler.expire()
    # Then the message expires, naming how far it got, with every tag to ack
    assert [d.message_id for d in expired] == ["slow"]
    assert "2 of 3 chunks arrived" in str(expired[0].error)
    assert expired[0].tags == [0, 1, 2]
    assert reassembler.waiting_origins() == []


def test_pending_bytes_are_bounded_by_what_arrived() -> None:
    # Given a reassembler that may hold 100 bytes of partial messages per origin, and two 80-byte
    # messages announced on it (an announcement reserves nothing)
    reassembler: Reassembler[int] = Reassembler(timeout_s=10, max_pending_bytes=100)
    first = list(split(b"1" * 80, chunk_size=40, message_id="first"))
    second = list(split(b"2" * 80, chunk_size=40, message_id="second"))
    assert feed(reassembler, first[:2]) == [] and feed(reassembler, second[:2], first_tag=10) == []
    assert reassembler.pending_bytes == 80
    # When the first's last chunk would make 120 bytes held
    outcomes = feed(reassembler, first[2:], first_tag=2)
    # Then the first is dropped for the memory bound, and the second still completes
    assert len(outcomes) == 1 and isinstance(outcomes[0], Dropped)
    assert "more than 100 bytes" in str(outcomes[0].error)
    done = feed(reassembler, second[2:], first_tag=12)
    assert [b"".join(o.parts) for o in done if isinstance(o, Assembled)] == [b"2" * 80]


def test_the_same_message_id_on_two_origins_is_two_messages() -> None:
    # Given the same message id arriving on two queues
    frames = list(split(b"z" * 20, chunk_size=10, message_id="same"))
    reassembler: Reassembler[int] = Reassembler(timeout_s=10)
    # When both streams are offered
    one = feed(reassembler, frames, origin="q1")
    two = feed(reassembler, frames, origin="q2", first_tag=10)
    # Then each assembles on its own
    assert [o.origin for o in one + two if isinstance(o, Assembled)] == ["q1", "q2"]


def test_clear_forgets_partial_messages() -> None:
    reassembler: Reassembler[int] = Reassembler(timeout_s=10)
    feed(reassembler, list(split(b"z" * 20, chunk_size=10))[:2])
    assert reassembler.pending_bytes == 10
    reassembler.clear()
    assert reassembler.pending_bytes == 0
    assert reassembler.waiting_origins() == []
