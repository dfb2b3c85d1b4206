"""Chunks kept on disk until handled, so that a received update never sits whole in memory.

With `--spill-dir`, a chunked message being received gets a temporary file in that directory
at its first chunk, unlinked from the start (no other process can open it by name). Its chunks
are written there as they arrive and handed on as SpilledParts (StoredParts, protocol.stored),
read back a range at a time; the file is closed when the last of its parts is dropped. A
coordinator folding updates from their parts (protocol.stream) then holds one piece of each, not
the whole update: the price is a write and two reads (screen, fold) through the page cache per
update. On tmpfs the page cache is memory again: use a directory on a disk.
"""

from __future__ import annotations

import os
import tempfile
import weakref
from pathlib import Path

from fedmq.protocol.errors import StoreError
from fedmq.protocol.stored import StoredPart


class SpillFile:
    """One chunked message's chunks, appended as they arrive. OSError if it cannot be created."""

    def __init__(self, directory: Path) -> None:
        file = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115  # closed by the finalizer
        self._fd, self._directory, self._size = file.fileno(), directory, 0
        weakref.finalize(self, file.close)  # with the last part: no fd outlives its message

    def append(self, body: bytes | memoryview) -> SpilledPart:
        """Write `body` at the end of the file; the part that reads it back. OSError: disk full."""
        view = memoryview(body).cast("B")
        offset, written = self._size, 0
        while written < view.nbytes:
            written += os.pwrite(self._fd, view[written:], offset + written)
        self._size += view.nbytes
        return SpilledPart(self, offset, view.nbytes)

    def read(self, offset: int, size: int) -> bytes:
        """`size` bytes at `offset`; StoreError when the file cannot give them back."""
        chunks = []
        try:
            while size:
                chunk = os.pread(self._fd, size, offset)
                if not chunk:
                    raise OSError(f"{size} bytes missing at offset {offset}")
                chunks.append(chunk)
                offset, size = offset + len(chunk), size - len(chunk)
        except OSError as e:
            raise StoreError(f"could not read a spilled chunk back from {self._directory}: {e}") from None
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
                         "give a writable directory on a local disk") from None
