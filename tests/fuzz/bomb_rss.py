"""Peak RSS growth while one decoder meets one nested-container bomb, in a fresh process.

    python -m tests.fuzz.bomb_rss BOMB WRAPPER SIZE [parts]

prints one JSON object: the bomb, payload bytes, the outcome (the exception type, or "decoded"),
and peak RSS growth in KiB (resource.getrusage's ru_maxrss after the decode minus before it).
A fresh process, so that nothing an earlier test allocated hides or inflates the figure.
"""

from __future__ import annotations

import contextlib
import gc
import json
import resource
import sys
from collections.abc import Callable
from pathlib import Path

from fedmq.protocol.messages import decode_message
from fedmq.protocol.presence import decode_presence
from tests.fuzz.bombs import BOMBS, WRAPPERS

DECODERS: dict[str, Callable[[bytes | list[bytes]], object]] = {
    "task": decode_message, "commands": decode_message,
    "presence": lambda data: decode_presence(data if isinstance(data, bytes) else b"".join(data)),
}


def _peak_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def measure(bomb: str, wrapper: str, size: int, parts: bool) -> dict[str, object]:
    payload = WRAPPERS[wrapper](BOMBS[bomb](size))
    data: bytes | list[bytes] = [payload[i:i + (1 << 20)] for i in range(0, len(payload), 1 << 20)] if parts else payload
    gc.collect()
    with contextlib.suppress(OSError):  # Linux: restart the high-water mark, so building the payload is not counted
        Path("/proc/self/clear_refs").write_text("5")
    before = _peak_kb()
    try:
        DECODERS[wrapper](data)
        outcome = "decoded"
    except Exception as e:  # noqa: BLE001 - the outcome is the figure reported
        outcome = type(e).__name__
    return {"bomb": bomb, "wrapper": wrapper, "parts": parts, "payload_bytes": len(payload), "outcome": outcome,
            "growth_kb": _peak_kb() - before}


if __name__ == "__main__":
    print(json.dumps(measure(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:] == ["parts"])))
