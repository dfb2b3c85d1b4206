"""Broker settings, built once at the CLI edge, and the one place a URL becomes a Broker."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from fedmq.broker.base import Broker
from fedmq.broker.memory import MemoryBroker, MemoryHub
from fedmq.broker.spill import check_spill_dir
from fedmq.broker.topology import Topology

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
    tls_ca: Path | None = None  # amqps://: the CA that signed the broker's certificate
    tls_cert: Path | None = None  # amqps://: this client's certificate (PEM), when the broker asks
    tls_key: Path | None = None  # its private key (PEM), unless tls_cert holds it too
    # A reply queue past either bound dead-letters its oldest messages (x-overflow drop-head):
    # a flood, or a coordinator gone for days, cannot fill the broker's memory or disk.
    reply_queue_max_length: int = 10_000
    reply_queue_max_bytes: int = 2 << 30
    # A message delivered this many times without being acked is dead-lettered on its next
    # delivery (broker.poison): a message that kills its consumer is not retried forever.
    max_deliveries: int = 5
    # Chunked messages on a job's reply queue must be announced by that queue's worker (AMQP
    # user_id): set with credentials in use, it drops another's announcement before it costs.
    verify_senders: bool = False
    # A worker's: the users who may send it tasks (None: anyone). A chunked task announced by
    # anyone else is dropped at its first piece (the worker checks whole messages itself).
    task_senders: frozenset[str] | None = None
    # Chunked messages wait for their last chunk in unlinked files here, not in memory
    # (broker.spill; RabbitMQ only: the memory broker never chunks).
    spill_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.tls_key is not None and self.tls_cert is None:
            raise ValueError("--tls-key needs --tls-cert")
        if self.reply_queue_max_length < 1 or self.reply_queue_max_bytes < 1:
            raise ValueError("reply queue bounds must be positive")
        if self.max_deliveries < 1:
            raise ValueError(f"max_deliveries must be at least 1, got {self.max_deliveries}")
        if self.spill_dir is not None:
            check_spill_dir(self.spill_dir)

    @property
    def uses_tls_files(self) -> bool:
        return any(path is not None for path in (self.tls_ca, self.tls_cert, self.tls_key))

    @staticmethod
    def url_from(flag: str | None, default: str = MEMORY_URL) -> str:
        """--broker if given, else $FEDMQ_BROKER, else `default`."""
        return flag or os.environ.get(ENV_URL) or default


def open_broker(settings: BrokerSettings, hub: MemoryHub | None = None) -> Broker:
    """A connected Broker for `settings.url`; BrokerUnreachable when nothing answers there."""
    if settings.url.startswith("memory:"):
        return MemoryBroker(hub or MemoryHub(settings.topology, settings.max_deliveries))
    from fedmq.broker.rabbitmq import RabbitBroker  # pika loads only when RabbitMQ is used

    return RabbitBroker(settings)
