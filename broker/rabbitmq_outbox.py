"""What the RabbitMQ transport sends: confirmed publishes (chunked when large), dead letters,
and the acks and rejects that settle deliveries.

Publishes go out on the Link's publish channel, so a refused one (PublishRejected) never costs
the consumers. A dead letter is published to the dead-letter exchange with fedmq's reason
header; a user that may not write that exchange (a provisioned worker) rejects the delivery
instead, and its queue's own dead-lettering moves it there (RabbitMQ's reason "rejected").

A quorum queue nacks a publish while it has no leader: for the seconds of an election after a
node's loss, or for as long as a majority of its replicas is down. fedmq's queues never refuse
a message for being full (drop-head), so on quorum queues a nack is retried, with the reconnect
backoff, within the reconnect window; on classic queues it is a refusal, raised at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

import pika
import pika.exceptions as px

from fedmq.broker import chunks
from fedmq.broker.base import Body
from fedmq.broker.rabbit_connection import Channel, Link
from fedmq.broker.rabbitmq_delivery import REASON, SOURCE, Tag
from fedmq.broker.settings import BrokerSettings
from fedmq.broker.topology import QueueType
from fedmq.protocol.errors import PublishRejected, Unroutable, clip

log = logging.getLogger("fedmq.broker")
MAX_REASON = 4000  # characters of a dead letter's reason header


class Outbox:
    def __init__(self, link: Link, settings: BrokerSettings, user: str | None) -> None:
        self._link = link
        self._settings = settings
        self._user = user  # every publish carries it as user_id
        self._dead_letters_writable = True  # until the dead-letter exchange refuses this user
        self.closed = False  # set by the broker's close: nothing is settled after it
        self.bytes_published = 0  # message bodies this connection's publishes carried (benchmarks)

    def publish(
        self, exchange: str, key: str, body: Body, headers: Mapping[str, object], what: str,
        expiration: str | None = None,
    ) -> None:
        """Publish `body`, confirmed; Unroutable without a queue, PublishRejected when refused."""

        def send(channel: Channel) -> None:
            for frame in chunks.split(body, self._settings.chunk_size):  # fresh id on a retry
                # user_id: RabbitMQ refuses it unless it is this connection's user, so the
                # receiver knows who sent each message (the coordinator checks replies by it).
                properties = pika.BasicProperties(
                    delivery_mode=2, headers={**headers, **frame.headers},
                    expiration=expiration, user_id=self._user,
                )
                # pika accepts only bytes: one copy per frame, never of the whole payload.
                data = frame.body if isinstance(frame.body, bytes) else bytes(frame.body)
                try:
                    channel.basic_publish(exchange, key, data, properties, mandatory=True)
                    self.bytes_published += len(data)
                except px.UnroutableError as e:
                    raise Unroutable(f"no queue for {what}: is it running?") from e
                except px.NackError as e:  # a full queue with x-overflow reject-publish, ...
                    raise PublishRejected(f"RabbitMQ refused a message for {what} (nack: a full "
                                          "queue, or one that takes none)") from e

        self._publish_retrying_nacks(send, what)

    def _publish_retrying_nacks(self, send: Callable[[Channel], None], what: str) -> None:
        """send() on the publish channel; on quorum queues a nack is retried (module doc)."""
        window = self._settings.reconnect_for_s
        deadline: float | None = None
        delay = 0.05
        while True:
            try:
                self._link.call(send, publishing=True)
                return
            except PublishRejected as e:
                if (self._settings.topology.queue_type is not QueueType.QUORUM
                        or not isinstance(e.__cause__, px.NackError)):
                    raise
                now = time.monotonic()
                if deadline is None:
                    deadline = now + window
                    log.warning("a quorum queue refused a message for %s (no leader: a node lost?); "
                                "retrying for up to %gs", what, window)
                elif now >= deadline:
                    raise PublishRejected(f"RabbitMQ refused a message for {what} for {window:g}s: its "
                                          "quorum queue has no leader (a majority of its nodes down?)") from e
            self._link.drop_publisher()
            self._link.serve(min(delay, max(deadline - time.monotonic(), 0.0)))
            delay = min(delay * 2, 2.0)

    def dead_letter(self, body: Body, reason: str, source: str) -> None:
        # Headers must fit one AMQP frame: a reason quoting hostile input is cut short.
        headers = {REASON: clip(reason, MAX_REASON), SOURCE: source}
        self.publish(self._settings.topology.dead_letter_exchange, "", body, headers, "dead letters")

    def settle_failed(self, tag: Tag, body: Body, reason: str, source: str) -> None:
        """Dead-letter a delivery: publish the letter with its reason and ack the pieces; when
        the dead-letter exchange refuses this user, reject the pieces into it instead."""
        if self._dead_letters_writable:
            try:
                self.dead_letter(body, reason, source)
                self.ack(tag)
                return
            except PublishRejected as e:
                refused = isinstance(e.__cause__, px.ChannelClosedByBroker)
                self._dead_letters_writable = not refused  # a 403 stays: not asked again
                log.info("dead letters go through queue rejection: %s", e)
        log.warning("dead-lettering a message from %s: %s", source or "?", clip(reason, MAX_REASON))
        self.reject(tag)

    def reject(self, tag: Tag) -> None:
        """Reject every piece without requeueing: the queue dead-letters them itself."""

        def reject(channel: Channel) -> None:
            if tag.generation == self._link.generation:
                for piece in tag.pieces:
                    channel.basic_nack(piece.tag, requeue=False)

        if not self.closed:
            self._link.call(reject)

    def ack(self, tag: Tag) -> None:
        def ack(channel: Channel) -> None:
            if tag.generation != self._link.generation:
                return  # its channel is gone: RabbitMQ redelivers it (handlers are idempotent)
            for piece in tag.pieces:  # one by one: `multiple` would ack other consumers' too
                # On pika's underlying channel the ack is queued and leaves with the connection's
                # next I/O (the next receive), instead of spinning pika's poll loop once per ack:
                # that loop was the coordinator's largest cost per reply with 64 workers. The
                # work is done either way; an ack lost with the connection means a redelivery,
                # which both sides recognise as a duplicate.
                channel._impl.basic_ack(piece.tag)

        if not self.closed:
            self._link.call(ack)
