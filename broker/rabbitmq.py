"""The RabbitMQ transport: the Broker interface over one pika BlockingConnection.

Large payloads cross in chunks (broker.chunks). A consumer delivery that announces a chunked
message is completed with basic_get from the same queue, where its chunks sit right behind
it; every piece stays unacknowledged until the caller acks the whole Delivery. A lost
connection is reopened (broker.rabbit_connection) with everything this broker declared and
consumed; deliveries from the old connection are void, and the broker redelivers them.
Only the thread that created the broker touches pika; `run_beside_io` keeps that thread
servicing the connection while the work runs on another.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any


from fedmq.broker import chunks
from fedmq.broker.base import Body, Broker, DeadLetter, Delivery, T
from fedmq.broker.poison import Redeliveries, fingerprint, poison_reason
from fedmq.broker.rabbit_connection import Channel, Link
from fedmq.broker.rabbitmq_delivery import Piece, Raw, Tag, common_user, letter, raw, tag_of
from fedmq.broker.rabbitmq_outbox import Outbox
from fedmq.broker.rabbitmq_params import connection_user
from fedmq.broker.rabbitmq_presence import PresenceChannel, queue_depth
from fedmq.broker.rabbitmq_shared import SharedPublisher
from fedmq.broker.rabbitmq_topology import declare_exchanges, declare_reply_queue, declare_task_queue
from fedmq.broker.settings import BrokerSettings
from fedmq.broker.topology import QueueType
from fedmq.protocol.errors import BrokerError
from fedmq.protocol.messages import check_name

log = logging.getLogger("fedmq.broker")
MAX_POLL_S = 0.05  # longest pause between basic_get polls while a chunked message is arriving


class RabbitBroker(Broker):
    """A connection to RabbitMQ; see broker.base for the contract."""

    def __init__(self, settings: BrokerSettings) -> None:
        self._settings = settings
        self._topology = settings.topology
        self._workers: set[str] = set()  # task queues declared here, redeclared on reconnect
        self._jobs: dict[str, set[str]] = {}  # job -> workers with a reply queue declared here
        self._consumed: dict[str, str] = {}  # queue -> its worker; restarted on reconnect
        self._consumer_tags: dict[str, str] = {}
        self._inbox: deque[Raw] = deque()  # filled by pika callbacks, drained by _settle
        self._ready: deque[Delivery] = deque()
        self._dead: deque[Delivery] = deque()
        self._reassembler = chunks.Reassembler[Piece](settings.chunk_timeout_s, spill_dir=settings.spill_dir)
        # x-delivery-count is the broker's only on quorum queues; elsewhere a publisher sets it.
        self._redeliveries = Redeliveries(trust_count=settings.topology.queue_type is QueueType.QUORUM)
        self._reply_queues: set[str] = set()  # consumed reply queues: their senders are known
        self._task_queues: set[str] = set()  # consumed task queues
        self._user = connection_user(settings.url)  # every publish carries it as user_id
        self._poll_s = 0.001
        self._closed = False
        self._presence: PresenceChannel | None = None  # side channel, remade per connection
        self._watching = False  # watch_presence was called: re-watch after a reconnect
        self._link = Link(settings, self._on_channel)
        self._out = Outbox(self._link, settings, self._user)  # publishes, acks, rejects
        self._shared = SharedPublisher(self._link, self._out, self._topology)
        self._link.connect()

    @property
    def reconnects(self) -> int:
        """How many times a lost connection was reopened."""
        return self._link.reconnects

    @property
    def bytes_published(self) -> int:
        """Message bodies this connection has published (a retried publish counts again)."""
        return self._out.bytes_published

    # Topology.
    def declare_worker(self, worker: str) -> None:
        self._link.call(lambda channel: declare_task_queue(channel, self._topology, worker))
        self._workers.add(worker)

    def has_worker(self, worker: str) -> bool:
        return self._link.queue_exists(self._topology.task_queue(worker))

    def declare_job(self, job: str, workers: Sequence[str]) -> None:
        for worker in workers:
            self._link.call(
                functools.partial(
                    declare_reply_queue, settings=self._settings, job=job, worker=worker
                )
            )
            self._jobs.setdefault(job, set()).add(worker)

    def delete_job(self, job: str, workers: Sequence[str]) -> None:
        for worker in workers:
            queue = self._topology.reply_queue(job, worker)
            self._link.call(functools.partial(self._delete_queue, queue=queue))
            self._jobs.get(job, set()).discard(worker)

    # Publishing.
    def publish_task(self, worker: str, body: Body, expires_in_s: float | None = None) -> None:
        key = check_name("worker", worker)
        # RabbitMQ's per-message TTL, in whole milliseconds; it also applies after a requeue.
        expiration = None if expires_in_s is None else str(max(1, int(expires_in_s * 1000)))
        self._out.publish(self._topology.task_exchange, key, body, {}, f"worker {worker!r}", expiration)

    def publish_shared_task(self, workers: Sequence[str], body: Body,
                            expires_in_s: float | None = None) -> dict[str, BrokerError]:
        return self._shared.publish(workers, body, expires_in_s)  # broker.rabbitmq_shared

    def publish_reply(self, job: str, worker: str, body: Body) -> None:
        key = self._topology.reply_key(job, worker)
        self._out.publish(
            self._topology.reply_exchange, key, body, {}, f"job {job!r} replies from {worker!r}"
        )

    # Consuming. Declaring the consumed queue first means a restart can never find it missing.
    def consume_tasks(self, worker: str) -> None:
        self.declare_worker(worker)
        self._task_queues.add(self._topology.task_queue(worker))
        self._consume(self._topology.task_queue(worker), worker)

    def consume_replies(self, job: str, workers: Sequence[str]) -> None:
        self.declare_job(job, workers)
        for worker in workers:
            self._reply_queues.add(self._topology.reply_queue(job, worker))
            self._consume(self._topology.reply_queue(job, worker), worker)

    def receive(self, timeout: float) -> Delivery | None:
        self._check_open()
        deadline = time.monotonic() + timeout
        served = False  # even with no time left, read what the socket already holds once
        while True:
            self._settle()
            if self._ready:
                return self._ready.popleft()
            remaining = max(deadline - time.monotonic(), 0.0)
            if served and remaining == 0:
                return None
            waiting = [
                queue for queue in self._reassembler.waiting_origins() if queue in self._consumed
            ]
            # The first origin with a chunk waiting: one stalled message at the head (a sender
            # that announced and went quiet) must not keep the others' chunks unread.
            if not any(self._pull(queue) for queue in waiting):
                self._link.serve(min(remaining, self._poll_s) if waiting else remaining)
                served = True

    def ack(self, delivery: Delivery) -> None:
        self._out.ack(tag_of(delivery))

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        tag = tag_of(delivery)
        if self._closed or tag.generation != self._link.generation:
            return  # from a closed connection: the broker redelivers it, and it fails again
        self._out.settle_failed(tag, delivery.body(), reason, delivery.source)

    def take_dead_letter(self, timeout: float) -> DeadLetter | None:
        self._check_open()
        deadline = time.monotonic() + timeout
        while True:
            pulled = self._pull(self._topology.dead_letter_queue)
            self._settle()
            if self._dead:
                delivery = self._dead.popleft()
                self._out.ack(tag_of(delivery))
                return letter(delivery)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if not pulled:
                self._link.serve(min(remaining, self._poll_s))

    # Presence (broker.rabbitmq_presence): side channels, so nothing here disturbs the tasks.
    def publish_presence(self, body: bytes) -> None:
        self._link.call(lambda channel: self._presence_on(channel).publish(body))

    def watch_presence(self) -> None:
        self._watching = True
        self._link.call(lambda channel: self._presence_on(channel).watch())

    def take_presence(self, timeout: float) -> list[bytes]:
        self._check_open()
        deadline = time.monotonic() + timeout
        while True:
            taken = self._link.call(lambda channel: self._presence_on(channel).drain())
            remaining = deadline - time.monotonic()
            if taken or remaining <= 0:
                return taken
            self._link.serve(min(remaining, MAX_POLL_S))

    def queue_depth(self, worker: str) -> int | None:
        queue = self._topology.task_queue(worker)
        return self._link.call(lambda channel: queue_depth(channel.connection, queue))

    def _presence_on(self, channel: Channel) -> PresenceChannel:
        presence = self._presence
        # Remade on a new connection, or when its channel died; not retried while the broker
        # lacks the exchange (one warning per connection, not one per heartbeat).
        if (presence is None or presence.connection is not channel.connection
                or (presence.enabled and not presence.usable)):
            presence = self._presence = PresenceChannel(channel.connection, self._topology, self._user)
            if self._watching:
                presence.watch()
        return presence

    def run_beside_io(self, work: Callable[[], T], between: Callable[[], None] | None = None) -> T:
        self._check_open()
        return self._link.run_beside(work, between)

    def close(self) -> None:
        if not self._closed:
            self._closed = self._out.closed = True
            self._link.close()  # RabbitMQ requeues what this connection left unacknowledged

    # Internals: declaring.
    def _on_channel(self, channel: Channel) -> None:
        """A new channel: (re)declare everything, restart consumers, forget void deliveries."""
        self._inbox.clear()
        self._ready.clear()
        self._dead.clear()
        self._reassembler.clear()
        self._consumer_tags.clear()
        declare_exchanges(channel, self._topology)
        for worker in self._workers:
            declare_task_queue(channel, self._topology, worker)
        for job, workers in self._jobs.items():
            for worker in workers:
                declare_reply_queue(channel, self._settings, job, worker)
        for queue, source in self._consumed.items():
            self._start_consumer(channel, queue, source)

    def _delete_queue(self, channel: Channel, queue: str) -> None:
        self._consumed.pop(queue, None)
        self._reply_queues.discard(queue)
        consumer_tag = self._consumer_tags.pop(queue, None)
        if consumer_tag is not None:
            channel.basic_cancel(consumer_tag)
        channel.queue_delete(queue)

    # Internals: consuming.
    def _consume(self, queue: str, source: str) -> None:
        if queue not in self._consumed:
            self._link.call(lambda channel: self._start_consumer(channel, queue, source))
            self._consumed[queue] = source

    def _start_consumer(self, channel: Channel, queue: str, source: str) -> None:
        callback = functools.partial(self._on_delivery, queue, source)
        self._consumer_tags[queue] = channel.basic_consume(queue, callback)

    def _on_delivery(
        self, queue: str, source: str, _channel: Channel, method: Any, properties: Any, body: bytes
    ) -> None:
        # Runs inside process_data_events: only record it; pika calls happen in _settle.
        self._inbox.append(raw(queue, source, method, properties, body))

    def _pull(self, queue: str) -> bool:
        """basic_get one message of `queue` into the inbox; False when the queue was empty."""
        method, properties, body = self._link.call(lambda channel: channel.basic_get(queue))
        if method is None:
            self._poll_s = min(self._poll_s * 2, MAX_POLL_S)  # the publisher is still sending
            return False
        self._poll_s = 0.001
        source = self._consumed.get(queue, "")
        self._inbox.append(raw(queue, source, method, properties, body))
        return True

    def _settle(self) -> None:
        """Turn raw messages into deliveries; dead-letter chunked messages that failed."""
        while self._inbox:  # a reconnect inside _accept clears the inbox, ending the loop
            self._accept(self._inbox.popleft())
        for dropped in self._reassembler.expire():
            self._drop(dropped, self._link.generation)

    def _accept(self, message: Raw) -> None:
        generation = self._link.generation  # the inbox is emptied whenever the channel changes
        piece, queue = message.piece, message.queue
        if not chunks.is_piece(message.headers):
            tag = Tag(generation, (piece,))
            attempts = self._redeliveries.attempts(queue, message.headers, piece.redelivered,
                                                   lambda: fingerprint(message.body))
            delivery = Delivery([message.body], message.source, tag, piece.redelivered,
                                message.headers, piece.user_id, attempts)
            self._deliver(queue, delivery)
            return
        # Who may start a chunked message here, checked before it costs memory: on a reply
        # queue with senders verified, its worker; on a task queue, the worker's task senders.
        expected: frozenset[str] | None = None
        if self._settings.verify_senders and queue in self._reply_queues:
            expected = frozenset({message.source})
        elif queue in self._task_queues:
            expected = self._settings.task_senders
        outcome = self._reassembler.offer(queue, message.headers, message.body, piece,
                                          piece.user_id, expected)
        if isinstance(outcome, chunks.Assembled):
            redelivered = any(piece.redelivered for piece in outcome.tags)
            tag = Tag(generation, tuple(outcome.tags))
            message_id = outcome.message_id.encode()
            attempts = self._redeliveries.attempts(queue, outcome.headers, redelivered, lambda: message_id)
            delivery = Delivery(outcome.parts, message.source, tag, redelivered, outcome.headers,
                                common_user(outcome.tags), attempts)
            self._deliver(queue, delivery)
        elif isinstance(outcome, chunks.Dropped):
            self._drop(outcome, generation)

    def _deliver(self, queue: str, delivery: Delivery) -> None:
        if queue == self._topology.dead_letter_queue:
            self._dead.append(delivery)
        elif delivery.attempts > self._settings.max_deliveries:  # it killed its consumer each time
            reason = poison_reason(delivery.attempts, self._settings.max_deliveries)
            self._out.settle_failed(tag_of(delivery), delivery.body(), reason, delivery.source)
        else:
            self._ready.append(delivery)

    def _drop(self, dropped: chunks.Dropped[Piece], generation: int) -> None:
        """A chunked message that cannot be assembled: dead-letter it (once) and ack its pieces."""
        from_dead_letters = dropped.origin == self._topology.dead_letter_queue
        if dropped.error is not None and not from_dead_letters:
            source = self._consumed.get(dropped.origin, "")
            log.warning("dead-lettering a chunked message from %s: %s", dropped.origin, dropped.error)
            self._out.settle_failed(Tag(generation, tuple(dropped.tags)), b"", str(dropped.error), source)
            return
        self._out.ack(Tag(generation, tuple(dropped.tags)))

    def _check_open(self) -> None:
        if self._closed:
            raise BrokerError("this RabbitMQ broker connection is closed")

