"""One task body to many workers' queues in one publish: RabbitMQ's sender-selected distribution.

The first worker is the routing key and the others ride in the BCC header, which RabbitMQ adds
to the routing keys and strips before delivery, so no worker learns who else got the message.
A persistent message routed to several queues is stored once. Every frame of a chunked body
(broker.chunks: the announcement, then the chunks) carries the same header, so each queue holds
the whole sequence and its consumer reassembles it as from a single publish.

RabbitMQ confirms a message routed to at least one queue, so `mandatory` cannot tell which of
several workers has no queue; their queues are looked up first, in one round trip when they
all exist (`_existing`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pika.exceptions as px

from fedmq.broker.base import Body
from fedmq.broker.rabbit_connection import Channel, Link, describe
from fedmq.broker.rabbitmq_outbox import Outbox
from fedmq.broker.topology import Topology
from fedmq.protocol.errors import BrokerError, PublishRejected, Unroutable
from fedmq.protocol.names import check_name

# Workers one publish names in its BCC header: 64-character names keep the header (with the
# chunk headers) well inside one AMQP frame (128 KiB).
MAX_BCC = 500


class SharedPublisher:
    def __init__(self, link: Link, out: Outbox, topology: Topology) -> None:
        self._link = link
        self._out = out
        self._topology = topology
        self._probe: Channel = None  # side channel for the passive declares, kept per connection

    def publish(self, workers: Sequence[str], body: Body, expires_in_s: float | None) -> dict[str, BrokerError]:
        """Broker.publish_shared_task."""
        names = list(dict.fromkeys(check_name("worker", worker) for worker in workers))
        queues = {name: self._topology.task_queue(name) for name in names}
        present = self._existing(list(queues.values()))
        failed: dict[str, BrokerError] = {
            name: Unroutable(f"no queue for worker {name!r}: is it running?")
            for name in names if queues[name] not in present}
        targets = [name for name in names if name not in failed]
        # RabbitMQ's per-message TTL, in whole milliseconds, applies in every queue it reaches.
        expiration = None if expires_in_s is None else str(max(1, int(expires_in_s * 1000)))
        for start in range(0, len(targets), MAX_BCC + 1):
            batch = targets[start:start + MAX_BCC + 1]
            headers = {"BCC": batch[1:]} if len(batch) > 1 else {}
            what = "workers " + ", ".join(repr(name) for name in batch[:3]) + (", ..." if len(batch) > 3 else "")
            try:
                self._out.publish(self._topology.task_exchange, batch[0], body, headers, what, expiration)
            except Unroutable as e:  # every queue of the batch went away since it was looked up
                failed.update(dict.fromkeys(batch, e))
            except PublishRejected as e:
                failed.update(self._one_by_one(batch, body, expiration) if len(batch) > 1 else {batch[0]: e})
        return failed

    def _one_by_one(self, batch: list[str], body: Body, expiration: str | None) -> dict[str, BrokerError]:
        """After a nack, which cannot say which queue refused: each worker is sent its own copy.
        Those whose queues took the shared one hold it twice; a worker acks the second unrun
        (worker.dedup), and the coordinator drops a duplicate reply. Only a refusal costs this."""
        failed: dict[str, BrokerError] = {}
        for name in batch:
            try:
                self._out.publish(self._topology.task_exchange, name, body, {}, f"worker {name!r}", expiration)
            except (Unroutable, PublishRejected) as e:
                failed[name] = e
        return failed

    def _existing(self, queues: list[str]) -> set[str]:
        """Which of `queues` exist, asked in one round trip when they all do.

        Passive declares on a side channel (a missing queue closes the channel it is asked on:
        never the consumers' one), all but the last without waiting for an answer (nowait;
        pika's BlockingChannel offers none, so they go through its underlying channel). The
        last one's answer comes after theirs, as RabbitMQ handles a channel's methods in order.
        A missing queue closes the channel with a 404 naming it: the queues before it exist,
        and the rest are asked again on a new channel.
        """
        return self._link.call(lambda channel: self._ask(channel.connection, queues))

    def _ask(self, connection: Any, queues: list[str]) -> set[str]:  # noqa: ANN401 - pika's
        found: set[str] = set()
        rest = list(queues)
        while rest:
            if self._probe is None or not self._probe.is_open or self._probe.connection is not connection:
                self._probe = connection.channel()
            try:
                for queue in rest[:-1]:
                    self._probe._impl.queue_declare(queue, passive=True)  # no callback: nowait
                self._probe.queue_declare(rest[-1], passive=True)
                found.update(rest)
                rest = []
            except px.ChannelClosedByBroker as e:
                self._probe = None
                missing = [queue for queue in rest if f"'{queue}'" in str(e.reply_text)]
                if e.reply_code != 404 or not missing:
                    raise BrokerError(f"RabbitMQ refused to look up task queues: {describe(e)}") from e
                index = rest.index(missing[0])
                found.update(rest[:index])
                rest = rest[index + 1:]
        return found
