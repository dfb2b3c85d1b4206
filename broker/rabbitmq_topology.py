"""Declaring fedmq's exchanges and queues on RabbitMQ, with or without the right to.

On a provisioned broker (`fedmq broker provision`) a worker may configure nothing and a
coordinator only its reply queues; the definitions file already holds the exchanges, the
dead-letter queue and every worker's task queue. A declaration the user may not make is
refused (403 ACCESS_REFUSED), and a refusal closes the channel it was made on. So each
declaration runs on a throwaway channel, and a refused one is replaced by a passive check that
the entity exists: the main channel, which holds the consumers and the unacknowledged
deliveries, never sees a refusal. The guest/dev path declares everything, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pika.exceptions as px

from fedmq.broker.settings import BrokerSettings
from fedmq.broker.topology import Topology
from fedmq.protocol.errors import BrokerError

Channel = Any  # pika ships no type hints
ACCESS_REFUSED, NOT_FOUND, MISMATCH = 403, 404, 406
log = logging.getLogger("fedmq.broker")


def reply_queue_arguments(settings: BrokerSettings) -> dict[str, object]:
    """Bounded in messages and bytes: past either, the oldest replies go to the dead letters."""
    return {
        "x-dead-letter-exchange": settings.topology.dead_letter_exchange,
        "x-max-length": settings.reply_queue_max_length,
        "x-max-length-bytes": settings.reply_queue_max_bytes,
        **settings.topology.queue_arguments(),
    }


def declare_exchanges(channel: Channel, topology: Topology) -> None:
    """The exchanges and the dead-letter queue every fedmq process needs."""

    def declare(side: Channel) -> None:
        side.exchange_declare(topology.task_exchange, "direct", durable=True)
        side.exchange_declare(topology.reply_exchange, "direct", durable=True)
        side.exchange_declare(topology.dead_letter_exchange, "fanout", durable=True)

    def check(side: Channel) -> None:
        for exchange in (topology.task_exchange, topology.reply_exchange, topology.dead_letter_exchange):
            side.exchange_declare(exchange, passive=True)

    _declare(channel, f"the exchanges of prefix {topology.prefix!r}", declare, check)
    declare_dead_letter_queue(channel, topology)


def declare_dead_letter_queue(channel: Channel, topology: Topology) -> None:
    """The bounded dead-letter queue. One declared unbounded by an older fedmq is used as it is,
    with a warning: RabbitMQ refuses to change a queue's arguments (406)."""
    queue = topology.dead_letter_queue

    def declare(side: Channel) -> None:
        side.queue_declare(queue, durable=True, arguments=topology.dead_letter_queue_arguments())
        side.queue_bind(queue, topology.dead_letter_exchange)

    try:
        _declare(channel, f"dead-letter queue {queue}", declare, _exists(queue))
    except BrokerError as e:
        if not isinstance(e.__cause__, px.ChannelClosedByBroker) or e.__cause__.reply_code != MISMATCH:
            raise
        log.warning("dead-letter queue %s exists without fedmq's bounds (declared by an older "
                    "version?): it stays unbounded until it is deleted (rabbitmqctl delete_queue %s) "
                    "and redeclared", queue, queue)
        _on_side_channel(channel, _exists(queue))


def declare_task_queue(channel: Channel, topology: Topology, worker: str) -> None:
    """A worker's task queue; what it rejects or lets expire goes to the dead letters."""
    queue = topology.task_queue(worker)

    def declare(side: Channel) -> None:
        side.queue_declare(queue, durable=True, arguments=topology.task_queue_arguments())
        side.queue_bind(queue, topology.task_exchange, routing_key=worker)

    _declare(channel, f"task queue {queue}", declare, _exists(queue))


def declare_reply_queue(channel: Channel, settings: BrokerSettings, job: str, worker: str) -> None:
    """The queue of one worker's replies to one job (one publisher: chunks stay contiguous)."""
    topology = settings.topology
    queue = topology.reply_queue(job, worker)

    def declare(side: Channel) -> None:
        side.queue_declare(queue, durable=True, arguments=reply_queue_arguments(settings))
        side.queue_bind(queue, topology.reply_exchange, routing_key=topology.reply_key(job, worker))

    _declare(channel, f"reply queue {queue}", declare, _exists(queue))


def _exists(queue: str) -> Callable[[Channel], None]:
    return lambda side: side.queue_declare(queue, passive=True)


def _declare(channel: Channel, what: str, declare: Callable[[Channel], None],
             check: Callable[[Channel], None]) -> None:
    """declare(); when refused for lack of permission, check() that it was provisioned."""
    try:
        _on_side_channel(channel, declare)
        return
    except px.ChannelClosedByBroker as e:
        if e.reply_code != ACCESS_REFUSED:
            raise BrokerError(f"RabbitMQ refused to declare {what}: {e.reply_code} {e.reply_text}") from e
    try:
        _on_side_channel(channel, check)
    except px.ChannelClosedByBroker as e:
        if e.reply_code == NOT_FOUND:
            raise BrokerError(
                f"{what} does not exist and this user may not declare it: apply the definitions of "
                f"`fedmq broker provision`, or connect as a user allowed to configure it") from e
        raise BrokerError(f"RabbitMQ refused to look up {what}: {e.reply_code} {e.reply_text}") from e


def _on_side_channel(channel: Channel, op: Callable[[Channel], None]) -> None:
    side = channel.connection.channel()
    try:
        op(side)
    finally:
        if side.is_open:
            side.close()
