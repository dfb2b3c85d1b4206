"""Parts kept out of memory: a received payload's bytes, read back a range at a time.

A coordinator folding a large update reads its bytes twice (screening, then folding) but never
needs them all at once. A broker that spills chunks to disk (broker.spill) hands them on as
StoredParts: the walker (protocol.walk) and the streamed update (protocol.stream) read them by
range, and `in_memory` reads them whole for decoders that need a message in memory.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TypeAlias


class StoredPart(ABC):
    """One part of a payload, kept in a store (a file) and read on demand."""

    @abstractmethod
    def __len__(self) -> int:
        """The part's size in bytes."""

    @abstractmethod
    def read(self, start: int, stop: int) -> bytes:
        """Bytes [start, stop) of this part (0 <= start <= stop <= len); StoreError if the store fails."""

    def __getitem__(self, span: slice) -> bytes:
        """part[a:b], as bytes[a:b] would be (steps other than 1 are not supported)."""
        start, stop, step = span.indices(len(self))
        if step != 1:
            raise ValueError("a stored part is read in contiguous ranges only")
        return self.read(start, max(start, stop))

    def __bytes__(self) -> bytes:
        return self.read(0, len(self))


Part: TypeAlias = bytes | memoryview | StoredPart


def in_memory(parts: Sequence[Part]) -> list[bytes]:
    """The parts as bytes, every stored one read whole: for decoders that take a message in memory."""
    return [part if isinstance(part, bytes) else bytes(part) for part in parts]
