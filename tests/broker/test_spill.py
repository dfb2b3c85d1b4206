"""Chunks spilled to disk (broker.spill): reassembled from an unlinked file, read back by range."""

from __future__ import annotations

import contextlib
import gc
import os
import random
from pathlib import Path

import pytest

import fedmq.broker.spill
from fedmq.broker.base import Delivery
from fedmq.broker.chunks import SPILLS_PER_ORIGIN, Assembled, Dropped, Reassembler, split
from fedmq.broker.settings import BrokerSettings
from fedmq.broker.spill import SpillFile, SpilledPart
from fedmq.coordinator.async_barrier import read_reply
from fedmq.protocol.errors import StoreError
from tests.broker.test_chunks import feed


def open_files_in(directory: Path) -> int:
    """Files this process holds open in `directory` (an unlinked one reads as 'path (deleted)')."""
    found = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # the listing's own descriptor, closed since
            found += os.readlink(f"/proc/self/fd/{fd}").startswith(str(directory))
    return found


def test_spilled_chunks_reassemble_from_a_file_no_one_else_can_open(tmp_path: Path) -> None:
    # Given a reassembler that spills to a directory, and a message whose chunks arrive shuffled
    payload = random.Random(1).randbytes(1000)
    announcement, *pieces = split(payload, chunk_size=64)
    random.Random(2).shuffle(pieces)
    # When every piece is offered
    outcomes = feed(Reassembler(timeout_s=10, spill_dir=tmp_path), [announcement, *pieces])
    # Then the parts are on disk, not in memory, and read back the payload in order
    assembled = outcomes[0]
    assert isinstance(assembled, Assembled) and len(outcomes) == 1
    assert all(isinstance(part, SpilledPart) for part in assembled.parts)
    assert b"".join(bytes(part) for part in assembled.parts) == payload
    # And the file has no name in the directory, and closes with the last of its parts
    assert list(tmp_path.iterdir()) == [] and open_files_in(tmp_path) == 1
    del outcomes, assembled
    gc.collect()
    assert open_files_in(tmp_path) == 0


def test_a_spilled_part_reads_any_range_as_bytes_would(tmp_path: Path) -> None:
    # Given two parts spilled one after the other into one file
    spill = SpillFile(tmp_path)
    first, second = random.Random(3).randbytes(300), random.Random(4).randbytes(77)
    parts = [spill.append(first), spill.append(second)]
    rng = random.Random(5)
    for part, data in zip(parts, (first, second), strict=True):
        # When ranges are read, in bounds, past the end, negative and empty
        spans = [slice(rng.randint(-400, 400), rng.randint(-400, 400)) for _ in range(200)]
        # Then each is what slicing the bytes gives
        assert len(part) == len(data) and bytes(part) == data
        assert all(part[span] == data[span] for span in spans)
    with pytest.raises(ValueError, match="outside"):
        parts[1].read(0, 78)


def test_a_delivery_of_spilled_parts_gives_its_payload_in_memory(tmp_path: Path) -> None:
    # Given a delivery whose two parts were spilled
    spill = SpillFile(tmp_path)
    delivery = Delivery([spill.append(b"head-"), spill.append(b"tail")], "alice", None)
    # When a decoder asks for its payload, or a dead letter for its body
    # Then both are the bytes, in order
    assert delivery.payload() == [b"head-", b"tail"] and delivery.body() == b"head-tail"
    assert delivery.size == 9


def test_a_spill_directory_that_cannot_take_files_drops_the_message_saying_where(tmp_path: Path) -> None:
    # Given a reassembler whose spill directory is gone
    reassembler: Reassembler[int] = Reassembler(timeout_s=10, spill_dir=tmp_path / "gone")
    announcement, *pieces = split(b"x" * 100, chunk_size=40)
    # When a chunked message arrives
    outcomes = feed(reassembler, [announcement, *pieces])
    # Then it is dropped with a reason naming the directory, and the next pieces are acked quietly
    assert isinstance(outcomes[0], Dropped) and outcomes[0].error is not None
    assert "gone" in str(outcomes[0].error) and "spill" in str(outcomes[0].error)
    assert all(isinstance(o, Dropped) and o.error is None for o in outcomes[1:])


def test_settings_refuse_a_spill_directory_that_cannot_take_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--spill-dir .*gone"):
        BrokerSettings(url="amqp://localhost", spill_dir=tmp_path / "gone")
    assert BrokerSettings(url="amqp://localhost", spill_dir=tmp_path).spill_dir == tmp_path


def test_a_sender_opening_many_messages_gets_few_spill_files_and_the_rest_in_memory(tmp_path: Path) -> None:
    # Given one origin that announces 50 messages and sends the first chunk of each
    reassembler: Reassembler[int] = Reassembler(timeout_s=10, spill_dir=tmp_path)
    messages = [list(split(bytes([i]) * 100, chunk_size=60)) for i in range(50)]
    for announcement, first, _second in messages:
        assert feed(reassembler, [announcement, first]) == []
    # Then only SPILLS_PER_ORIGIN spill files are open: a file descriptor costs more than an announcement
    assert open_files_in(tmp_path) == SPILLS_PER_ORIGIN
    # And every message still assembles whole when its last chunk comes
    outcomes = [feed(reassembler, [second]) for _announcement, _first, second in messages]
    assert all(len(o) == 1 and isinstance(o[0], Assembled) for o in outcomes)
    assert [b"".join(bytes(part) for part in o[0].parts) for o in outcomes] == [bytes([i]) * 100 for i in range(50)]


def test_a_full_disk_fails_the_message_being_spilled_and_the_next_one_spills(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a spill directory whose disk is full for the first message
    reassembler: Reassembler[int] = Reassembler(timeout_s=10, spill_dir=tmp_path)

    def full(fd: int, data: object, offset: int) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fedmq.broker.spill.os, "pwrite", full)
    first = feed(reassembler, list(split(b"a" * 100, chunk_size=40)))
    monkeypatch.undo()
    # When the disk has room again and a second message arrives
    second = feed(reassembler, list(split(b"b" * 100, chunk_size=40)))
    # Then the first was dropped saying what to do, and its file closed; the second assembled
    assert isinstance(first[0], Dropped) and "free space" in str(first[0].error)
    assert isinstance(second[0], Assembled) and b"".join(bytes(p) for p in second[0].parts) == b"b" * 100
    del second
    gc.collect()
    assert open_files_in(tmp_path) == 0


def test_a_spilled_reply_that_cannot_be_read_back_is_our_failure_not_the_senders(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a reply delivery whose spilled parts cannot be read back (a failing disk)
    spill = SpillFile(tmp_path)
    delivery = Delivery([spill.append(b"\x81"), spill.append(b"\xa1v\x01")], "alice", None)

    def broken(fd: int, size: int, offset: int) -> bytes:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(fedmq.broker.spill.os, "pread", broken)
    # When the coordinator reads it, Then it raises StoreError (the run stops, the reply stays
    # unacked for the next one) instead of dead-lettering the reply as undecodable
    with pytest.raises(StoreError, match="Input/output error"):
        read_reply(delivery, verify_senders=False)
