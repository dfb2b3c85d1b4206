"""Shared tasks decoded once per process, for the logical workers of a host (worker.host).

A SharedTask reaches each addressed worker's queue as the same bytes, so a host serving 64
logical workers decoded the same message 64 times a round, each time unpacking all 64 workers'
entries (14% of the host's CPU with 64 digits workers). The last few decoded shared tasks are
kept, keyed by their whole body: only a body equal byte for byte gets a kept decode, so no
message can stand in for another by claiming its id. The decoded weights are read-only views
that each service copies into its own model (WorkerService._load), so the workers share nothing
they could write to.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from fedmq.protocol.messages import Message, SharedTask, decode_message

KEEP = 2  # a round's train tasks, and an evaluation's, may be in flight at once
MAX_BODY = 256 << 10  # larger bodies are hashed more slowly than they decode (their tensors are views)


class SharedDecodes:
    """decode_message, with recent SharedTask decodes reused for equal bodies; thread-safe."""

    def __init__(self, keep: int = KEEP, max_body: int = MAX_BODY) -> None:
        self._keep = keep
        self._max_body = max_body
        self._kept: OrderedDict[bytes, SharedTask] = OrderedDict()
        self._lock = threading.Lock()

    def decode(self, data: bytes | memoryview | list[bytes]) -> Message:
        """decode_message(data); DecodeError as it raises. Only a single-part body up to
        `max_body` bytes that decodes to a SharedTask is kept."""
        if not isinstance(data, bytes) or len(data) > self._max_body:
            return decode_message(data)
        with self._lock:
            kept = self._kept.get(data)
        if kept is not None:
            return kept
        message = decode_message(data)
        if isinstance(message, SharedTask):
            with self._lock:
                self._kept[data] = message
                while len(self._kept) > self._keep:
                    self._kept.popitem(last=False)
        return message
