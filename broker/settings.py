"""Broker settings, built once at the CLI edge, and the one place a URL becomes a Broker."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from broker.base import Broker
from broker.memory import MemoryBroker, MemoryHub
from broker.topology import Topology

MEMORY_URL = "memory://"
ENV_URL = "FEDMQ_BROKER"


@dataclass(frozen=True)
class BrokerSettings:
    url: str = MEMORY_URL  # amqp://user:pass@host:port/vhost?heartbeat=30, amqps://..., memory://
    topology: Topology = field(default_factory=Topology)
    chunk_size: int = 8 << 20  # payloads above this cross RabbitMQ in chunks
    chunk_timeout_s: float = 120.0  # a partial chunked transfer older than this is dropped
    connect_timeout_s: float = 5.0
    reconnect_for_s: float = 60.0  # how long a lost connection is retried before giving up

    @staticmethod
    def url_from(flag: str | None, default: str = MEMORY_URL) -> str:
        """--broker if given, else $FEDMQ_BROKER, else `default`."""
        return flag or os.environ.get(ENV_URL) or default


def open_broker(settings: BrokerSettings, hub: MemoryHub | None = None) -> Broker:
    """A connected Broker for `settings.url`; BrokerUnreachable when nothing answers there."""
    if settings.url.startswith("memory:"):
        return MemoryBroker(hub or MemoryHub(settings.topology))
    from broker.rabbitmq import RabbitBroker  # pika loads only when RabbitMQ is used

    return RabbitBroker(settings)
