"""Presence on RabbitMQ: heartbeats through the `{p}.presence` fanout exchange.

Everything here runs on side channels of the broker's connection, never on the main one: a
refused or failed presence operation closes its channel, and the main channel holds consumers
and unacknowledged tasks. Heartbeats are not confirmed and not mandatory (nobody may be
watching); a watcher reads them from an exclusive, auto-deleted, server-named queue that
RabbitMQ removes when its connection ends.
"""

from __future__ import annotations

import logging
from typing import Any

import pika
import pika.exceptions as px

from fedmq.broker.topology import Topology

log = logging.getLogger("fedmq.broker")
Channel = Any  # pika ships no type hints
NOT_FOUND = 404


def declare_presence_exchange(connection: Any, topology: Topology) -> bool:
    """Declare `{p}.presence` (durable fanout, like the definitions'); False when refused.

    A provisioned principal may not declare it but finds it in the definitions; a broker
    provisioned before presence existed lacks it, and presence is then simply off.
    """
    for passive in (False, True):
        side = connection.channel()
        try:
            side.exchange_declare(topology.presence_exchange, "fanout", durable=True, passive=passive)
            return True
        except px.ChannelClosedByBroker as e:
            if passive:
                log.warning("no presence exchange %s (%s): `fedmq status` will not see this process",
                            topology.presence_exchange, e.reply_text)
        finally:
            if side.is_open:
                side.close()
    return False


class PresenceChannel:
    """One side channel for publishing heartbeats, or watching them, on one connection."""

    def __init__(self, connection: Any, topology: Topology, user: str | None) -> None:
        self.connection = connection
        self._topology = topology
        self._user = user
        self.enabled = declare_presence_exchange(connection, topology)
        self._channel: Channel = connection.channel() if self.enabled else None
        self._queue: str | None = None

    @property
    def usable(self) -> bool:
        return self._channel is not None and bool(self._channel.is_open)

    def publish(self, body: bytes) -> None:
        if not self.usable:
            return
        properties = pika.BasicProperties(delivery_mode=1, user_id=self._user)
        self._channel.basic_publish(self._topology.presence_exchange, "", body, properties)

    def watch(self) -> None:
        if not self.usable or self._queue is not None:
            return
        declared = self._channel.queue_declare("", exclusive=True, auto_delete=True)
        self._queue = str(declared.method.queue)
        self._channel.queue_bind(self._queue, self._topology.presence_exchange)

    def drain(self) -> list[bytes]:
        """Every heartbeat already in the watch queue."""
        taken: list[bytes] = []
        while self.usable and self._queue is not None:
            method, _properties, body = self._channel.basic_get(self._queue, auto_ack=True)
            if method is None:
                break
            taken.append(bytes(body))
        return taken


def queue_depth(connection: Any, queue: str) -> int | None:
    """Messages ready in `queue` (passive declare on a throwaway channel); None if unknown."""
    side = connection.channel()
    try:
        return int(side.queue_declare(queue, passive=True).method.message_count)
    except px.ChannelClosedByBroker:
        return None  # missing (404) or not ours to see (403): status shows "?"
    finally:
        if side.is_open:
            side.close()
