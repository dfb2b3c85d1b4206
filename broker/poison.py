"""Poison messages: a delivery that keeps coming back unsettled is dead-lettered, not retried
forever.

A consumer that dies or loses its connection while handling a message leaves it unacknowledged,
and RabbitMQ hands it out again. When handling it is what kills the consumer (a crash, an
out-of-memory kill, a task that outlasts consumer_timeout), that loop never ends by itself. So
each delivery carries `attempts`, how many times it has been delivered, this time included, and
a broker dead-letters a delivery past `BrokerSettings.max_deliveries` instead of handing it over.

Where the count comes from:
- quorum queues count deliveries on the broker (the `x-delivery-count` header): exact, across
  consumer crashes and restarts;
- classic queues only flag a redelivery; this process counts the redeliveries it sees of each
  message (by content), which covers lost connections and channel timeouts in a running process,
  not a crash-restart loop (use `--queue-type quorum` for that; train and evaluate tasks also
  expire at their round's deadline, requeued or not). The header is ignored there: on a classic
  queue it is whatever the publisher wrote, and `x-delivery-count: 0` would hide every retry;
- the memory broker counts every delivery on its hub, as a quorum queue does.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Mapping

DELIVERY_COUNT = "x-delivery-count"  # set by quorum queues: earlier deliveries of this message
MAX_TRACKED = 4096  # redelivered messages remembered per process (oldest forgotten first)


class Redeliveries:
    """How many times each message has been delivered, as far as this consumer can tell."""

    def __init__(self, trust_count: bool, max_tracked: int = MAX_TRACKED) -> None:
        self._trust_count = trust_count  # whether x-delivery-count comes from the broker
        self._max_tracked = max_tracked
        self._seen: OrderedDict[tuple[str, bytes], int] = OrderedDict()

    def attempts(self, queue: str, headers: Mapping[str, object], redelivered: bool,
                 identity: Callable[[], bytes]) -> int:
        """This delivery's number: 1 for a first delivery; `identity` names the message."""
        count = headers.get(DELIVERY_COUNT) if self._trust_count else None
        if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
            return count + 1
        if not redelivered:
            return 1
        key = (queue, identity())
        attempts = self._seen.pop(key, 1) + 1
        self._seen[key] = attempts
        while len(self._seen) > self._max_tracked:
            self._seen.popitem(last=False)
        return attempts


def fingerprint(data: bytes) -> bytes:
    """A short digest naming a message by its content."""
    return hashlib.blake2b(data, digest_size=16).digest()


def poison_reason(attempts: int, limit: int) -> str:
    return (f"poison message: delivered {attempts} times without being settled (limit {limit}); "
            f"its consumer died or lost its connection while handling it each time")
