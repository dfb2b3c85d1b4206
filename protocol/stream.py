"""Replies read where they lie: the update stays in the delivered parts, read piece by piece.

`read_reply` checks a reply exactly as `decode_message` does (the same fields, the same tensor
rules, the same budget), but records where each update tensor's bytes lie instead of copying
them out. A coordinator then screens the update in one pass over its pieces and folds it into
its running sum in a second, so a reply costs the memory of its parts and nothing more, and the
parts stay whole for a dead letter. Pieces are read-only views of the parts: never write to them.
Parts a broker kept on disk (protocol.stored) are read back one piece at a time: a reply then
costs one piece of memory.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from fedmq.protocol.codec import pack, tensor_layout
from fedmq.protocol.errors import DecodeError, UnsupportedVersion
from fedmq.protocol.messages import PROTOCOL_VERSION, Message, Reply, Weights, decode_message
from fedmq.protocol.stored import Part, StoredPart, in_memory
from fedmq.protocol.walk import Cursor, Run, Walker

PIECE_ELEMENTS = 1 << 18  # the most elements one piece holds: bounds the temporaries of its users


@dataclass(frozen=True)
class TensorPlace:
    """One update tensor: its dtype and shape, and the runs of the parts its bytes fill, in order."""

    dtype: torch.dtype
    shape: torch.Size
    runs: tuple[Run, ...]


class StreamedUpdate:
    """An update whose tensors are still the bytes of the delivered parts."""

    def __init__(self, views: list[memoryview | StoredPart], places: dict[str, TensorPlace],
                 scale: float = 1.0) -> None:
        self._views = views
        self.places = places
        self._scale = scale  # floating entries read times this (an async update's staleness weight)

    def shapes(self) -> dict[str, torch.Size]:
        return {name: place.shape for name, place in self.places.items()}

    def scaled(self, weight: float) -> StreamedUpdate:
        """This update with its floating entries times `weight` (counters stay), computed piece by
        piece as they are read: the values coordinator.staleness.scaled gives a whole update."""
        return StreamedUpdate(self._views, self.places, self._scale * weight)

    def pieces(self, name: str, limit: int = PIECE_ELEMENTS) -> Iterator[tuple[int, torch.Tensor]]:
        """(element offset, 1-d read-only view) of tensor `name`, in order, each at most `limit`
        elements (a scaled update's pieces are fresh products). An element split between two
        parts comes as a one-element copy."""
        place = self.places[name]
        scale = self._scale if place.dtype.is_floating_point else 1.0
        for offset, piece in self._read(place, limit):
            yield offset, piece if scale == 1.0 else piece * scale

    def _read(self, place: TensorPlace, limit: int) -> Iterator[tuple[int, torch.Tensor]]:
        size = place.dtype.itemsize
        offset = 0
        carry = b""  # the head of an element whose tail is in the next run
        for part, start, stop in place.runs:
            view = self._views[part]
            if carry:
                take = min(size - len(carry), stop - start)
                carry, start = carry + bytes(view[start:start + take]), start + take
                if len(carry) < size:
                    continue
                yield offset, _tensor(carry, 0, 1, place.dtype)
                offset, carry = offset + 1, b""
            whole = (stop - start) // size
            for first in range(0, whole, limit):
                count = min(limit, whole - first)
                yield offset, _tensor(view, start + first * size, count, place.dtype)
                offset += count
            carry = bytes(view[start + whole * size:stop])

    def tensors(self) -> Weights:
        """The update as fresh tensors (copies): for strategies that keep whole updates."""
        out: Weights = {}
        for name, place in self.places.items():
            flat = torch.empty(place.shape.numel(), dtype=place.dtype)
            for offset, piece in self.pieces(name):
                flat[offset:offset + piece.numel()] = piece
            out[name] = flat.reshape(place.shape)
        return out


@dataclass(frozen=True, eq=False)
class StreamedReply:
    """A worker's successful answer, its update still in the parts it arrived in."""

    job: str
    round: int
    task_id: str
    worker: str
    update: StreamedUpdate
    num_examples: int
    metrics: dict[str, float]

    def without_update(self) -> Reply:
        """The same reply's fields as a Reply with an empty update (for rules that judge replies)."""
        return Reply(job=self.job, round=self.round, task_id=self.task_id, worker=self.worker, update={}, num_examples=self.num_examples, metrics=self.metrics)


def read_reply(parts: Sequence[Part]) -> Message | StreamedReply:
    """The reply in untrusted parts, its update unread; any other message, decoded whole.

    DecodeError (UnsupportedVersion for a foreign `v`) as decode_message raises it.
    """
    cursor = Cursor(parts)
    walker = Walker(cursor)
    kind, length, _marker = walker.header()
    if kind != "map":
        raise DecodeError("a message must be a msgpack map")
    places: dict[str, TensorPlace] | None = None

    def field(key: str | bytes) -> object:
        nonlocal places
        if key != "update":
            return walker.value(2)
        places = _update(walker)
        return {}

    fields = walker.mapping(length, field)
    if cursor.left:
        raise DecodeError("a message must be one msgpack object, found more")
    if fields.get("v") != PROTOCOL_VERSION:
        raise UnsupportedVersion(f"protocol version {fields.get('v')!r} is not supported; "
                                 f"this build speaks {PROTOCOL_VERSION}")
    if fields.get("kind") != "reply":
        loaded = in_memory(parts)
        return decode_message(loaded if len(loaded) > 1 else loaded[0])
    if places is None:
        raise DecodeError("field 'update' is missing or not dict")
    # The other fields are few and small: decode_message checks them, on a message without tensors.
    head = decode_message(pack(fields))  # type: ignore[arg-type]  # keys: text (or bytes, refused there)
    if not isinstance(head, Reply):
        raise DecodeError("a reply must decode to a reply")
    return StreamedReply(head.job, head.round, head.task_id, head.worker, StreamedUpdate(cursor.views, places),
                         head.num_examples, head.metrics)


def _update(walker: Walker) -> dict[str, TensorPlace]:
    kind, length, _marker = walker.header()
    if kind != "map":
        raise DecodeError("tensors must be a map from names to tensors")
    places = walker.mapping(length, lambda name: _tensor_place(walker))
    if not all(isinstance(name, str) for name in places):
        raise DecodeError("tensors must be a map from names to tensors")
    return places  # type: ignore[return-value]


def _tensor_place(walker: Walker) -> TensorPlace:
    kind, length, _marker = walker.header()
    if kind != "map" or length != 3:
        raise DecodeError("a tensor must be a map of exactly dtype, shape and data")

    def read(key: str | bytes) -> object:
        if key == "data":
            return walker.bins(*walker.header()[:2])
        if key in ("dtype", "shape"):
            return walker.value(4)
        raise DecodeError("a tensor must be a map of exactly dtype, shape and data")

    wire = walker.mapping(3, read)
    runs = [run for bin_runs in wire["data"] for run in bin_runs]  # type: ignore[attr-defined]
    dtype, shape = tensor_layout(wire["dtype"], wire["shape"], sum(run.stop - run.start for run in runs))
    return TensorPlace(dtype, torch.Size(shape), tuple(runs))


def _tensor(buffer: bytes | memoryview | StoredPart, offset: int, count: int, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(buffer, StoredPart):  # read just this piece (at most PIECE_ELEMENTS) back
        buffer, offset = buffer.read(offset, offset + count * dtype.itemsize), 0
    with warnings.catch_warnings():  # read-only buffer: pieces are only ever read
        warnings.simplefilter("ignore", UserWarning)
        return torch.frombuffer(buffer, dtype=dtype, count=count, offset=offset)
