"""Files that survive a kill at any instant: whole and durable, or not replaced at all.

A file is written to a temporary name, flushed to disk, renamed over the old one, and the
directory entry is flushed too (the rename itself is durable only then).
"""

from __future__ import annotations

import os
from pathlib import Path


def replace_atomically(path: Path, data: bytes | memoryview) -> None:
    """`path` now holds `data`; a kill at any point leaves either the old file or the new one."""
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)
    fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
