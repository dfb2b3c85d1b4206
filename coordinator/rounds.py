"""Collecting one round's replies: the first answer of each asked worker counts, nothing else.

Replies of earlier rounds (late), second answers (duplicates, redeliveries) and answers from
workers that were not asked are acknowledged and counted as dropped, never aggregated.
Undecodable bytes go to the dead-letter queue. A worker's failure is data for the round.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from broker.base import Broker, Delivery
from coordinator.strategy import Failure
from protocol.errors import DecodeError
from protocol.messages import ErrorReply, Reply, decode_message

log = logging.getLogger("fedmq.coordinator")

# Called with each accepted reply; returns why it is unusable, or None once it is used.
OnReply = Callable[[Reply], "str | None"]


@dataclass(frozen=True)
class Answer:
    """An accepted reply without its update, which was folded in and let go."""

    worker: str
    num_examples: int
    metrics: dict[str, float]


@dataclass
class Collected:
    """What came back for one round's tasks."""

    replies: list[Answer] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    dropped: int = 0
    silent: list[str] = field(default_factory=list)  # asked, never answered


class ReplyCollector:
    def __init__(self, broker: Broker, job: str, round_: int, asked: dict[str, str]) -> None:
        self._broker = broker
        self._job = job
        self._round = round_
        self._asked = dict(asked)  # task id -> worker
        self._pending = dict(asked)
        self.result = Collected()

    def collect(self, deadline: float, on_reply: OnReply) -> Collected:
        """Take replies until every asked worker answered or `deadline` (time.monotonic) passed."""
        while self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            delivery = self._broker.receive(timeout=min(remaining, 1.0))
            if delivery is not None:
                self._handle(delivery, on_reply)
        self.result.silent = sorted(self._pending.values())
        return self.result

    def _handle(self, delivery: Delivery, on_reply: OnReply) -> None:
        # A single part is decoded in place and kept for the dead-letter queue; a chunked reply's
        # parts are consumed as they are decoded, so only one copy of a large update is ever held.
        try:
            message = decode_message(delivery.parts[0] if len(delivery.parts) == 1 else delivery.parts)
        except DecodeError as e:
            log.warning("dead-lettering an undecodable reply from %s: %s", delivery.source, e)
            self._broker.dead_letter(delivery, f"undecodable reply: {e}")
            return
        if not isinstance(message, (Reply, ErrorReply)):
            self._broker.dead_letter(delivery, f"a {type(message).__name__} on a reply queue")
            return
        reason = self._drop_reason(message, delivery.source)
        if reason:
            log.info("dropped a reply from %s: %s", message.worker, reason)
            self.result.dropped += 1
        else:
            self._accept(message, on_reply)
        self._broker.ack(delivery)  # after the update is folded in: nothing is lost on a crash

    def _drop_reason(self, message: Reply | ErrorReply, source: str) -> str | None:
        if message.job != self._job:
            return f"job {message.job!r} is not this one"
        if message.round != self._round:
            return f"round {message.round} is over (now {self._round})"
        asked_worker = self._asked.get(message.task_id)
        if asked_worker is None:
            return "no such task in this round"
        if message.worker != asked_worker or source != asked_worker:
            return f"task was asked of {asked_worker!r}, answered by {message.worker!r} via {source!r}"
        if message.task_id not in self._pending:
            return "duplicate answer"
        return None

    def _accept(self, message: Reply | ErrorReply, on_reply: OnReply) -> None:
        del self._pending[message.task_id]
        if isinstance(message, ErrorReply):
            self.result.failures.append(Failure(message.worker, message.reason))
            return
        unusable = on_reply(message)
        if unusable:
            self.result.failures.append(Failure(message.worker, unusable))
        else:
            self.result.replies.append(Answer(message.worker, message.num_examples, message.metrics))
