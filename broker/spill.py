"""Chunks kept on disk until handled, so that a received update never sits whole in memory.

With `--spill-dir`, each chunked message being received gets one temporary file in that
directory, unlinked from the start (no other process can open it by name). Its chunks are
written there as they arrive and handed on as SpilledParts (protocol.stored), read back a range
at a time; the file goes when the last of its parts is dropped. A coordinator folding updates
from their parts (protocol.stream) then holds one piece of each, not the whole update: the price
is a write and two reads (screen, fold) through the page cache per update.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from fedmq.protocol.stored import StoredPart


class SpillFile:
    """One chunked message's chunks, appended as they arrive."""

    def __init__(self, directory: Path) -> None:
        self._file = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115  # closed with its parts
        self._size = 0

    def append(self, body: bytes) -> SpilledPart:
        """Write `body` at the end of the file; the part that reads it back. OSError: disk full."""
        view, offset = memoryview(body), self._size
        written = 0
        while written < len(view):
            written += os.pwrite(self._file.fileno(), view[written:], offset + written)
        self._size += len(view)
        return SpilledPart(self, offset, len(view))

    def read(self, offset: int, size: int) -> bytes:
        chunks = []
        while size:
            chunk = os.pread(self._file.fileno(), size, offset)
            if not chunk:
                raise OSError(f"spill file {self._file.name}: {size} bytes missing at offset {offset}")
            chunks.append(chunk)
            offset, size = offset + len(chunk), size - len(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class SpilledPart(StoredPart):
    """Bytes [offset, offset + size) of a SpillFile."""

    def __init__(self, file: SpillFile, offset: int, size: int) -> None:
        self._file, self._offset, self._size = file, offset, size

    def __len__(self) -> int:
        return self._size

    def read(self, start: int, stop: int) -> bytes:
        if not 0 <= start <= stop <= self._size:
            raise ValueError(f"bytes {start}:{stop} are outside this {self._size}-byte part")
        return self._file.read(self._offset + start, stop - start) if stop > start else b""


def check_spill_dir(directory: Path) -> None:
    """ValueError naming what to fix when `directory` cannot hold spill files."""
    try:
        SpillFile(directory).append(b"probe")
    except OSError as e:
        raise ValueError(f"--spill-dir {directory}: cannot write a temporary file there ({e}); "
                         "give a writable directory on a local disk") from e
