"""Collecting one round's replies; which of them count is the barrier's rule (coordinator.barrier).

Replies that an honest worker may send but that come too late or twice (an earlier round's,
a duplicate or redelivery, an answer to another of this round's tasks) are acknowledged and
counted as dropped, never aggregated. Replies that no honest worker sends go to the dead-letter
queue with the reason, each logged once: undecodable bytes, another message kind, another job,
a round not yet begun, a reply naming another worker than the queue it came through, and, when
senders are verified, a reply whose AMQP user_id is not its worker. An update that fails
screening (coordinator.screening) is dead-lettered too and counted as rejected. A worker's
failure is data for the round.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fedmq.broker.base import Broker, Delivery
from fedmq.coordinator.barrier import Barrier, RoundBarrier, Verdict
from fedmq.coordinator.strategy import Failure
from fedmq.protocol.errors import DecodeError, StoreError, clip
from fedmq.protocol.messages import ErrorReply, Message, Reply, decode_message
from fedmq.protocol.stream import StreamedReply, read_reply

log = logging.getLogger("fedmq.coordinator")

# Called with each accepted reply; returns why it is unusable, or None once it is used.
OnReply = Callable[[Reply], "str | None"]
# The same for a reply read by protocol.stream, its update still in the delivery's parts.
OnStream = Callable[[StreamedReply], "str | None"]
MAX_REASON = 1000  # characters: a hostile payload must not put megabytes into a header or a log
STREAM_ABOVE = 1 << 20  # bytes: smaller replies are decoded whole (read_delivery)


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
    rejected: int = 0  # accepted replies whose update failed screening (NaN, norm, shape)
    dead_lettered: int = 0  # replies no honest worker sends, rejected updates included
    silent: list[str] = field(default_factory=list)  # asked, never answered


class ReplyCollector:
    def __init__(self, broker: Broker, job: str, round_: int, asked: dict[str, str], *,
                 verify_senders: bool = False, barrier: Barrier | None = None) -> None:
        self._broker = broker
        self._pending = dict(asked)  # task id -> worker, not yet answered
        self._barrier = barrier or RoundBarrier(job, round_, asked)
        # With credentials in use, RabbitMQ vouches for each message's user_id (username ==
        # worker name), so no worker can answer for another even by routing into its queue.
        self._verify_senders = verify_senders
        self.result = Collected()

    def collect(self, deadline: float, on_reply: OnReply, on_stream: OnStream | None = None) -> Collected:
        """Take replies until every asked worker answered or `deadline` (time.monotonic) passed.

        With `on_stream`, replies are read in place (protocol.stream) and handed to it with their
        update unread, so the delivery's parts are the only copy of an update ever held.
        """
        while self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._take_one(min(remaining, 1.0), on_reply, on_stream)
        self.result.silent = sorted(self._pending.values())
        return self.result

    def _take_one(self, timeout: float, on_reply: OnReply, on_stream: OnStream | None) -> None:
        # Its own frame: a handled delivery (a streamed reply's parts) must not stay referenced
        # by a loop variable while the next one is received, or two replies are held at once.
        delivery = self._broker.receive(timeout=timeout)
        if delivery is not None:
            self._handle(delivery, on_reply, on_stream)

    def _handle(self, delivery: Delivery, on_reply: OnReply, on_stream: OnStream | None) -> None:
        forged = self._sender_error(delivery)
        if forged:  # checked before decoding: a forger's payload costs no parsing
            self._dead_letter(delivery, forged)
            return
        try:
            message = read_delivery(delivery, streaming=on_stream is not None)
        except DecodeError as e:
            self._dead_letter(delivery, f"undecodable reply: {e}")
            return
        except StoreError:  # our disk failed, not the sender: unacked, the reply survives the crash
            raise
        except Exception as e:  # noqa: BLE001 - a decoder bug must not end a run on hostile bytes
            log.exception("the decoder failed on a reply from %s", delivery.source)
            self._dead_letter(delivery, f"undecodable reply ({type(e).__name__}): {e}")
            return
        if not isinstance(message, (Reply, ErrorReply, StreamedReply)):
            self._dead_letter(delivery, f"a {type(message).__name__} on a reply queue")
            return
        judged = message.without_update() if isinstance(message, StreamedReply) else message
        verdict, reason = self._barrier.judge(judged, delivery.source)
        if verdict is Verdict.REJECT:
            self._dead_letter(delivery, reason)
            return
        if verdict is Verdict.DROP:
            log.info("dropped a reply from %s: %s", message.worker, reason)
            self.result.dropped += 1
        else:
            unusable = self._accept(message, on_reply, on_stream)
            if unusable:
                self.result.rejected += 1
                self._dead_letter(delivery, f"rejected update: {unusable}")
                return
        self._broker.ack(delivery)  # after the update is folded in: nothing is lost on a crash

    def _sender_error(self, delivery: Delivery) -> str | None:
        if not self._verify_senders or delivery.user_id == delivery.source:
            return None
        if delivery.user_id is None:
            return f"a reply on worker {delivery.source!r}'s queue without a user_id"
        return f"user {delivery.user_id!r} published into worker {delivery.source!r}'s reply queue"

    def _accept(self, message: Reply | ErrorReply | StreamedReply, on_reply: OnReply,
                on_stream: OnStream | None) -> str | None:
        """Record the answer; why its update was unusable, if it was."""
        del self._pending[message.task_id]
        self._barrier.answered(message.task_id)
        if isinstance(message, ErrorReply):
            self.result.failures.append(Failure(message.worker, message.reason))
            return None
        if isinstance(message, StreamedReply):
            assert on_stream is not None  # only read that way when there is one
            unusable = on_stream(message)
        else:
            unusable = on_reply(message)
        if unusable:
            self.result.failures.append(Failure(message.worker, unusable))
        else:
            self.result.replies.append(Answer(message.worker, message.num_examples, message.metrics))
        return unusable

    def _dead_letter(self, delivery: Delivery, reason: str) -> None:
        reason = clip(reason, MAX_REASON)
        log.warning("dead-lettering a reply from %s's queue: %s", delivery.source, reason)
        self.result.dead_lettered += 1
        self._broker.dead_letter(delivery, reason)


def read_delivery(delivery: Delivery, *, streaming: bool) -> Message | StreamedReply:
    """The delivery's message. Streamed, a reply's update stays in the parts, which stay whole
    for the dead-letter queue. Otherwise one part is decoded in place (and kept), and a chunked
    message's parts are consumed as they are decoded, so one copy of a large update is held.
    A reply of at most STREAM_ABOVE bytes is decoded whole even when streaming is asked for:
    walking it costs three times decoding it, and its copy is small."""
    if streaming and sum(len(part) for part in delivery.parts) > STREAM_ABOVE:
        return read_reply(delivery.parts)
    return decode_message(delivery.payload())
