"""Reading msgpack where it lies: a walker over a message's parts that copies no tensor bytes.

protocol.codec decodes a whole message into Python objects, copying every bin out of its input.
A coordinator folding a large update wants the opposite: the update's bytes stay in the parts the
broker delivered, and only their places are recorded (`Run`s), to be read later as tensor views.
This walker reads a message's top-level map that way: a tensor map's data become runs, every
other value is decoded here, under the codec's limits (value budget, nesting, container, string
and bin lengths, no extension types, no repeated keys). Every failure is a DecodeError, and the
work is linear in the message's size. No msgpack import: the format is read byte by byte.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import NamedTuple

from fedmq.protocol.codec import MAX_CONTAINER_LEN, MAX_DEPTH, MAX_STR_LEN, value_budget
from fedmq.protocol.errors import DecodeError
from fedmq.protocol.stored import Part, StoredPart

_NUMBERS = {0xca: struct.Struct(">f"), 0xcb: struct.Struct(">d"), 0xcc: struct.Struct(">B"),
            0xcd: struct.Struct(">H"), 0xce: struct.Struct(">I"), 0xcf: struct.Struct(">Q"),
            0xd0: struct.Struct(">b"), 0xd1: struct.Struct(">h"), 0xd2: struct.Struct(">i"),
            0xd3: struct.Struct(">q")}
_LENGTHS = {1: struct.Struct(">B"), 2: struct.Struct(">H"), 4: struct.Struct(">I")}
# marker -> (kind, bytes of its length field); fix* kinds carry their length in the marker.
_SIZED = {0xc4: ("bin", 1), 0xc5: ("bin", 2), 0xc6: ("bin", 4), 0xd9: ("str", 1), 0xda: ("str", 2),
          0xdb: ("str", 4), 0xdc: ("array", 2), 0xdd: ("array", 4), 0xde: ("map", 2), 0xdf: ("map", 4)}
_CONSTANTS: dict[int, object] = {0xc0: None, 0xc2: False, 0xc3: True}


class Run(NamedTuple):
    """Bytes [start, stop) of part `part`: where a stretch of a bin lies in the delivered parts."""

    part: int
    start: int
    stop: int


class Cursor:
    """A read position in a message delivered as several parts (bytes-like, read only)."""

    def __init__(self, parts: Sequence[Part]) -> None:
        # A stored part is read by range where it lies (protocol.stored); the others are viewed.
        self.views: list[memoryview | StoredPart] = [
            part if isinstance(part, StoredPart) else memoryview(part).cast("B") for part in parts]
        self.size = sum(len(view) for view in self.views)
        self.left = self.size
        self._part = 0
        self._pos = 0

    def take(self, n: int) -> bytes:
        """The next n bytes, copied (headers, strings, numbers: never tensor data)."""
        return b"".join(bytes(self.views[run.part][run.start:run.stop]) for run in self.skip(n))

    def skip(self, n: int) -> list[Run]:
        """Pass over the next n bytes; where they lie."""
        if n > self.left:
            raise DecodeError(f"the message ends inside a value: {n} bytes needed, {self.left} left")
        self.left -= n
        runs = []
        while n:
            view = self.views[self._part]
            step = min(n, len(view) - self._pos)
            if step:
                runs.append(Run(self._part, self._pos, self._pos + step))
                self._pos += step
                n -= step
            if self._pos == len(view) and self._part + 1 < len(self.views):
                self._part, self._pos = self._part + 1, 0
        return runs


class Walker:
    """Decodes values from a Cursor within the codec's limits; `bins` hands tensor data back as runs."""

    def __init__(self, cursor: Cursor, max_values: int | None = None) -> None:
        self.cursor = cursor
        self.max_values = value_budget(cursor.size) if max_values is None else max_values
        self._left = self.max_values
        self._longest = min(cursor.size, MAX_CONTAINER_LEN, self.max_values)
        self._max_str = min(cursor.size, MAX_STR_LEN)

    def header(self) -> tuple[str, int, int]:
        """The next value's (kind, length, marker), its marker and length field consumed.

        Kinds: map, array, str, bin (length: entries or bytes), and scalar (length 0).
        """
        self._spend()
        marker = self.cursor.take(1)[0]
        if marker <= 0x7f or marker >= 0xe0 or marker in _NUMBERS or marker in _CONSTANTS:
            return "scalar", 0, marker
        if 0x80 <= marker <= 0x8f:
            return "map", self._checked("map", marker & 0x0f), marker
        if 0x90 <= marker <= 0x9f:
            return "array", self._checked("array", marker & 0x0f), marker
        if 0xa0 <= marker <= 0xbf:
            return "str", self._checked("str", marker & 0x1f), marker
        sized = _SIZED.get(marker)
        if sized is None:  # 0xc1 (never used) and the extension types
            raise DecodeError(f"msgpack marker {marker:#04x} is not accepted (extension types are refused)")
        kind, width = sized
        return kind, self._checked(kind, _LENGTHS[width].unpack(self.cursor.take(width))[0]), marker

    def value(self, depth: int = 1) -> object:
        """The next value, decoded; `depth`: the containers it sits in, itself included."""
        kind, length, marker = self.header()
        return self.rest(kind, length, marker, depth)

    def rest(self, kind: str, length: int, marker: int, depth: int) -> object:
        """The value whose header() was just read."""
        if kind == "scalar":
            return self._scalar(marker)
        if kind == "str":
            return self._text(length)
        if kind == "bin":
            return self.cursor.take(length)
        if depth > MAX_DEPTH:
            raise DecodeError(f"msgpack containers nest deeper than {MAX_DEPTH} levels")
        if kind == "array":
            return [self.value(depth + 1) for _ in range(length)]
        return self.mapping(length, lambda key: self.value(depth + 1))

    def mapping(self, length: int, read: Callable[[str | bytes], object]) -> dict[str | bytes, object]:
        """A map's `length` entries: keys decoded here (text or bytes), values by `read(key)`."""
        items: dict[str | bytes, object] = {}
        for _ in range(length):
            key = self.key()
            if key in items:
                raise DecodeError("a msgpack map repeats a key; each key may appear once")
            items[key] = read(key)
        return items

    def key(self) -> str | bytes:
        kind, length, marker = self.header()
        if kind not in ("str", "bin"):
            raise DecodeError("msgpack map keys must be text (or bytes)")
        return self._text(length) if kind == "str" else self.cursor.take(length)

    def bins(self, kind: str, length: int) -> list[list[Run]]:
        """Tensor data whose header() was just read: one bin, or an array of bins, as runs."""
        if kind == "bin":
            return [self.cursor.skip(length)]
        if kind != "array":
            raise DecodeError("tensor data must be msgpack bin, or a list of bins")
        found = []
        for _ in range(length):
            inner, size, _marker = self.header()
            if inner != "bin":
                raise DecodeError("tensor data must be msgpack bin, or a list of bins")
            found.append(self.cursor.skip(size))
        return found

    def _checked(self, kind: str, length: int) -> int:
        limit = self._max_str if kind == "str" else self.cursor.size if kind == "bin" else self._longest
        if length > limit:
            raise DecodeError(f"a msgpack {kind} of length {length} is above its limit {limit}")
        return length

    def _spend(self) -> None:
        self._left -= 1
        if self._left < 0:
            raise DecodeError(f"the message holds more than {self.max_values} values (scalars and containers), "
                              "its limit; send fewer, larger tensors or smaller batches")

    def _scalar(self, marker: int) -> object:
        if marker <= 0x7f:
            return marker
        if marker >= 0xe0:
            return marker - 0x100
        if marker in _CONSTANTS:
            return _CONSTANTS[marker]
        number = _NUMBERS[marker]
        return number.unpack(self.cursor.take(number.size))[0]

    def _text(self, length: int) -> str:
        try:
            return self.cursor.take(length).decode("utf-8")
        except UnicodeDecodeError as e:
            raise DecodeError(f"a msgpack string is not valid UTF-8: {e}") from e
