"""Payloads larger than one broker message: splitting, and reassembly that trusts nothing.

RabbitMQ caps message size (128 MiB on 3.x, 16 MiB by default on 4.x), and a model update
can be larger, so a payload above `chunk_size` crosses as one *announcement* (empty body;
headers: message id, chunk count, total size) followed by its chunks (headers: message id,
index, crc32). A payload that fits travels as one plain message with no chunk headers.

The Reassembler is fed every piece taken from a queue, in whatever order and interleaving
the queue yields them (two publishers may feed one queue). It verifies each piece and
reports, per message, either the assembled parts or why it dropped them, so one corrupt
message never costs another. This module is pure: no pika, no clock it does not inject, and
no files unless given a spill directory (broker.spill: chunks then wait on disk, not in memory).

Memory is budgeted per origin (queue) and counted in bytes actually received, never in the
size an announcement claims: an announcement costs nothing, so a sender announcing 4 GiB
cannot crowd out other origins' messages. When the caller names the sender it expects on an
origin (the worker whose reply queue it is), an announcement from anyone else is dropped at
once, and a piece from another sender never joins a message. Spilled chunks count against the
same budget, and a spill file (a file descriptor) is opened at a message's first chunk, for at
most SPILLS_PER_ORIGIN messages per origin and MAX_SPILLS in all: a sender opening many
messages at once has the others' chunks held in memory, as without a spill directory.
"""

from __future__ import annotations

import time
import uuid
import zlib
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar, cast

from fedmq.broker.spill import SpillFile
from fedmq.protocol.errors import ChunkError
from fedmq.protocol.stored import Part

MESSAGE_ID = "x-fedmq-id"
CHUNK_COUNT = "x-fedmq-chunks"
TOTAL_SIZE = "x-fedmq-size"
CHUNK_INDEX = "x-fedmq-index"
CHUNK_CRC = "x-fedmq-crc32"
# Per origin. 4 GiB: msgpack's own bin limit, so no valid fedmq message is refused for size alone.
MAX_PENDING_BYTES = 4 << 30
# Open spill files of incomplete messages (broker.spill). One sender per queue sends one message
# at a time; a second covers a message left behind by a dead publisher until it expires.
SPILLS_PER_ORIGIN = 2
MAX_SPILLS = 256

Headers = dict[str, object]
TagT = TypeVar("TagT")


@dataclass(frozen=True)
class Frame:
    """One broker message to publish: the chunk headers (none for a plain message) and body."""

    headers: Headers
    body: bytes | memoryview


def split(
    payload: bytes | memoryview, chunk_size: int, message_id: str | None = None
) -> Iterator[Frame]:
    """The messages that carry `payload`, in publishing order; chunk bodies are zero-copy views."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1 byte, got {chunk_size}")
    if len(payload) <= chunk_size:
        yield Frame({}, payload)
        return
    view = memoryview(payload).cast("B")  # byte-indexed, whatever the exporter's format
    message_id = message_id or uuid.uuid4().hex
    count = -(-len(view) // chunk_size)
    yield Frame({MESSAGE_ID: message_id, CHUNK_COUNT: count, TOTAL_SIZE: len(view)}, b"")
    for index in range(count):
        piece = view[index * chunk_size : (index + 1) * chunk_size]
        yield Frame(
            {MESSAGE_ID: message_id, CHUNK_INDEX: index, CHUNK_CRC: zlib.crc32(piece)}, piece
        )


def is_piece(headers: Mapping[str, object]) -> bool:
    """Whether a received message is an announcement or chunk (else it is a whole payload)."""
    return MESSAGE_ID in headers


@dataclass
class Assembled(Generic[TagT]):
    """A chunked message, complete and verified."""

    origin: str
    message_id: str
    parts: list[Part]  # chunk bodies in index order (on disk with a spill directory: broker.spill)
    tags: list[TagT]  # every piece's tag, announcement first: all must be acknowledged
    headers: Headers  # the announcement's headers


@dataclass
class Dropped(Generic[TagT]):
    """Pieces to acknowledge and forget: a message that failed, or late pieces of one."""

    origin: str
    message_id: str
    tags: list[TagT]
    headers: Headers
    error: ChunkError | None  # None: pieces of a message already reported; ack them quietly


@dataclass
class _Pending(Generic[TagT]):
    count: int
    size: int
    headers: Headers
    last_seen: float
    tags: list[TagT]
    sender: str | None
    spill: SpillFile | None = None  # where the chunks go, with a spill directory
    chunks: dict[int, Part] = field(default_factory=dict)
    received: int = 0


STALL_S = 1.0  # a partial message with no new chunk for this long stops blocking the others


class Reassembler(Generic[TagT]):
    """Collects chunks per (origin, message id); bounded in time, and in bytes per origin."""

    def __init__(
        self,
        timeout_s: float,
        max_pending_bytes: int = MAX_PENDING_BYTES,
        clock: Callable[[], float] = time.monotonic,
        spill_dir: Path | None = None,
    ) -> None:
        self._timeout_s = timeout_s
        self._spill_dir = spill_dir  # None: chunks are held in memory
        self._max_pending_bytes = max_pending_bytes
        self._clock = clock
        self._pending: dict[tuple[str, str], _Pending[TagT]] = {}
        # Messages dropped recently: their later pieces are discarded, not reported again.
        self._dropped: dict[tuple[str, str], float] = {}

    @property
    def pending_bytes(self) -> int:
        """Bytes held for incomplete messages (received, not announced)."""
        return sum(pending.received for pending in self._pending.values())

    def held_from(self, origin: str) -> int:
        """Bytes held for `origin`'s incomplete messages."""
        return sum(p.received for (source, _), p in self._pending.items() if source == origin)

    def waiting_origins(self) -> list[str]:
        """Origins with an incomplete message, in the order to pull their chunks.

        The message started first comes first, so one message is finished before the next is
        begun and a consumer of many queues holds one payload at a time, not one per queue.
        Messages stalled for STALL_S (their publisher died or is slow) go last.
        """
        now = self._clock()
        started_order = list(self._pending.items())  # dicts keep insertion order
        ordered = sorted(started_order, key=lambda item: now - item[1].last_seen > STALL_S)
        return list(dict.fromkeys(origin for (origin, _), _ in ordered))

    def offer(
        self, origin: str, headers: Mapping[str, object], body: bytes, tag: TagT,
        sender: str | None = None, expected: Collection[str] | None = None,
    ) -> Assembled[TagT] | Dropped[TagT] | None:
        """Take one piece; the message it completes or drops, or None while it is incomplete.

        `sender`: who published the piece (AMQP user_id); `expected`: who alone may start a
        message on this origin (None: anyone).
        """
        message_id = headers.get(MESSAGE_ID)
        key = (origin, message_id if isinstance(message_id, str) else "")
        if key in self._dropped:
            return Dropped(origin, key[1], [tag], dict(headers), None)
        pending = self._pending.get(key)
        if pending is not None and pending.sender != sender:  # a splice: refuse the piece only
            error = ChunkError(f"chunked message {key[1]}: a piece from user {sender!r} inside a "
                               f"message of {pending.sender!r}")
            return Dropped(origin, key[1], [tag], dict(headers), error)
        try:
            if not key[1]:
                raise ChunkError(f"a chunk piece from {origin} has no valid {MESSAGE_ID} header")
            if CHUNK_INDEX in headers:
                return self._add_chunk(key, headers, body, tag)
            if expected is not None and sender not in expected:
                raise ChunkError(f"chunked message {key[1]} on {origin} was announced by user "
                                 f"{sender!r}, not by {' or '.join(sorted(expected))}: dropped unread")
            self._announce(key, headers, body, tag, sender)
            return None
        except ChunkError as error:  # without its traceback, whose frames would hold the chunks
            return self._drop(key, error.with_traceback(None), [tag], headers)

    def expire(self) -> list[Dropped[TagT]]:
        """Drop messages that received no piece for `timeout_s` (a publisher that died mid-way)."""
        now = self._clock()
        self._dropped = {
            key: at for key, at in self._dropped.items() if now - at <= self._timeout_s
        }
        stale = [
            key
            for key, pending in self._pending.items()
            if now - pending.last_seen > self._timeout_s
        ]
        return [self._drop(key, self._incomplete(key), [], {}) for key in stale]

    def clear(self) -> None:
        """Forget everything (the connection that held the pieces is gone)."""
        self._pending.clear()
        self._dropped.clear()

    def _announce(
        self, key: tuple[str, str], headers: Mapping[str, object], body: bytes, tag: TagT,
        sender: str | None,
    ) -> None:
        name = f"chunked message {key[1]}"
        if key in self._pending:
            raise ChunkError(f"{name} was announced twice")
        if body:
            raise ChunkError(f"{name}: the announcement carries {len(body)} bytes, expected none")
        size = _integer(headers, TOTAL_SIZE, name)
        count = _integer(headers, CHUNK_COUNT, name)
        if not 1 <= count <= max(size, 1):
            raise ChunkError(f"{name}: {count} chunks cannot carry {size} bytes")
        if size > self._max_pending_bytes:
            raise ChunkError(
                f"{name} of {size} bytes is larger than the {self._max_pending_bytes} bytes "
                f"one origin may hold in partial messages"
            )
        # Nothing is reserved: bytes count as they arrive (_add_chunk).
        self._pending[key] = _Pending(count, size, dict(headers), self._clock(), [tag], sender)

    def _add_chunk(
        self, key: tuple[str, str], headers: Mapping[str, object], body: bytes, tag: TagT
    ) -> Assembled[TagT] | None:
        name = f"chunked message {key[1]}"
        pending = self._pending.get(key)
        if pending is None:
            raise ChunkError(f"{name}: a chunk arrived without its announcement")
        index = _integer(headers, CHUNK_INDEX, name)
        _check_chunk(name, pending, index, _integer(headers, CHUNK_CRC, name), body)
        held = self.held_from(key[0])
        if held + len(body) > self._max_pending_bytes:
            raise ChunkError(
                f"{name}: {key[0]} would hold more than {self._max_pending_bytes} bytes of "
                f"partial messages ({held} held)"
            )
        pending.chunks[index] = self._keep(key[0], name, pending, body)
        pending.received += len(body)
        pending.tags.append(tag)
        pending.last_seen = self._clock()
        if len(pending.chunks) < pending.count:
            return None
        del self._pending[key]
        parts = [pending.chunks[i] for i in range(pending.count)]
        return Assembled(key[0], key[1], parts, pending.tags, pending.headers)

    def _keep(self, origin: str, name: str, pending: _Pending[TagT], body: bytes) -> Part:
        """Where a verified chunk waits: in memory, or in its message's spill file when there is
        a spill directory and the file caps leave room for one more."""
        if pending.spill is None and (self._spill_dir is None or not self._may_spill(origin)):
            return body
        # Raised outside the handler: an error chained to the OSError would keep the file open.
        try:
            pending.spill = pending.spill or SpillFile(cast(Path, self._spill_dir))
            return pending.spill.append(body)
        except OSError as e:  # e.g. a full disk: this message fails, the next may fit
            failure = str(e)
        raise ChunkError(f"{name}: cannot spill a chunk to {self._spill_dir} ({failure}); free space "
                         "there or make it writable again, or run without --spill-dir")

    def _may_spill(self, origin: str) -> bool:
        spilling = [source for (source, _), pending in self._pending.items() if pending.spill is not None]
        return len(spilling) < MAX_SPILLS and spilling.count(origin) < SPILLS_PER_ORIGIN

    def _drop(
        self,
        key: tuple[str, str],
        error: ChunkError,
        tags: list[TagT],
        headers: Mapping[str, object],
    ) -> Dropped[TagT]:
        pending = self._pending.pop(key, None)
        if pending is not None:
            tags = pending.tags + tags
            headers = pending.headers
        if key[1]:
            self._dropped[key] = self._clock()
        return Dropped(key[0], key[1], tags, dict(headers), error)

    def _incomplete(self, key: tuple[str, str]) -> ChunkError:
        pending = self._pending[key]
        return ChunkError(
            f"chunked message {key[1]} expired: {len(pending.chunks)} of {pending.count} chunks "
            f"arrived, none in the last {self._timeout_s:g}s"
        )


def _check_chunk(name: str, pending: _Pending[TagT], index: int, crc: int, body: bytes) -> None:
    if not 0 <= index < pending.count:
        raise ChunkError(f"{name}: chunk index {index} is outside 0..{pending.count - 1}")
    if index in pending.chunks:
        raise ChunkError(f"{name}: chunk {index} arrived twice")
    actual = zlib.crc32(body)
    if actual != crc:
        raise ChunkError(
            f"{name}: chunk {index} of {pending.count} is corrupt "
            f"(crc32 {actual:#010x}, expected {crc:#010x})"
        )
    received = pending.received + len(body)
    last = len(pending.chunks) + 1 == pending.count
    if received > pending.size or (last and received != pending.size):
        raise ChunkError(f"{name}: chunks hold {received} bytes so far, announced {pending.size}")


def _integer(headers: Mapping[str, object], name: str, what: str) -> int:
    value = headers.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ChunkError(f"{what}: header {name} must be a non-negative integer, got {value!r:.40}")
    return int(value)
