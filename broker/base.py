"""The Broker interface: what coordinator and workers need from a transport.

One Broker is one connection, used from one thread. Messages are opaque bytes here; the
protocol package gives them meaning. Every publish is confirmed before it returns, tasks are
routed only to a worker's existing queue (else Unroutable), and a delivery stays unacknowledged
until its consumer calls `ack` or `dead_letter`, so work in hand survives a crash.

Both brokers keep the same bounds: a publish the broker refuses (a full queue, an exchange the
user may not write) raises PublishRejected and leaves the connection and the delivery in hand
usable; a message delivered `max_deliveries` times without being acked is dead-lettered as
poison on its next delivery (Delivery.attempts counts); the dead letters keep the newest within
the topology's bounds.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar, cast

from fedmq.protocol.errors import BrokerError
from fedmq.protocol.stored import Part, in_memory

T = TypeVar("T")
Body = bytes | memoryview


@dataclass
class Delivery:
    """One message taken from a queue and not yet acknowledged."""

    # The payload in order; several when it crossed the broker in chunks, on disk when they were
    # spilled (protocol.stored): read them with `payload`, or by range where they lie.
    parts: list[Part]
    source: str  # the worker whose task queue or reply queue it came from
    tag: object  # the transport's handle for ack / dead_letter
    redelivered: bool = False
    headers: dict[str, object] = field(default_factory=dict)
    # The publisher's AMQP user_id, which RabbitMQ checks against the publishing connection's
    # user; None when the publisher set none. The coordinator matches it to the worker.
    user_id: str | None = None
    # How many times this message has been delivered, this time included (broker.poison).
    attempts: int = 1

    @property
    def size(self) -> int:
        return sum(len(part) for part in self.parts)

    def payload(self) -> bytes | list[bytes]:
        """The payload in memory, as the decoders take it: its one part, or its parts in order
        (this delivery's own list unless some were on disk: decode_message empties it as it reads)."""
        in_place = all(isinstance(part, bytes) for part in self.parts)
        parts = cast(list[bytes], self.parts) if in_place else in_memory(self.parts)
        return parts[0] if len(parts) == 1 else parts

    def body(self) -> bytes:
        payload = self.payload()
        return b"".join(payload) if isinstance(payload, list) else payload


@dataclass(frozen=True)
class DeadLetter:
    body: bytes
    reason: str
    source: str


class Broker(ABC):
    """A connection to a message broker (RabbitMQ, or the in-process memory broker)."""

    # Topology: idempotent, so whichever side starts first declares it.
    @abstractmethod
    def declare_worker(self, worker: str) -> None:
        """Declare the worker's durable task queue."""

    @abstractmethod
    def has_worker(self, worker: str) -> bool:
        """Whether the worker's task queue exists (the worker has started at least once)."""

    @abstractmethod
    def declare_job(self, job: str, workers: Sequence[str]) -> None:
        """Declare the job's durable reply queue for each worker."""

    @abstractmethod
    def delete_job(self, job: str, workers: Sequence[str]) -> None:
        """Delete the job's reply queues (the job is over)."""

    # Publishing: confirmed by the broker before returning.
    @abstractmethod
    def publish_task(self, worker: str, body: Body, expires_in_s: float | None = None) -> None:
        """Send a task to a worker's queue; Unroutable if the worker never declared one,
        PublishRejected if the broker refuses it (that task's failure, not the connection's).

        With `expires_in_s`, a task still queued (or requeued) after that long is dead-lettered
        as expired instead of being run: its round is over.
        """

    @abstractmethod
    def publish_shared_task(self, workers: Sequence[str], body: Body,
                            expires_in_s: float | None = None) -> dict[str, BrokerError]:
        """Send one task body to several workers' queues, published once and its bytes stored
        once by the broker (the global model of a round: N workers cost one model, not N).

        Each addressed worker gets its own durable copy in its own queue, confirmed before
        this returns, expiring after `expires_in_s` as publish_task's do, and redelivered
        only to that worker. The result maps each worker that did not get it to why:
        Unroutable (no task queue) or PublishRejected (refused); an empty map when all did.
        The body is the same for all: a SharedTask tells each worker its own part, a secure-
        aggregation stage request says the same to every worker.
        """

    @abstractmethod
    def publish_reply(self, job: str, worker: str, body: Body) -> None:
        """Send a worker's reply to the job; Unroutable if the job has no reply queue for it,
        PublishRejected if the broker refuses it."""

    # Consuming.
    @abstractmethod
    def consume_tasks(self, worker: str) -> None:
        """Start receiving the worker's tasks, one unacknowledged at a time."""

    @abstractmethod
    def consume_replies(self, job: str, workers: Sequence[str]) -> None:
        """Start receiving the job's replies from these workers."""

    @abstractmethod
    def receive(self, timeout: float) -> Delivery | None:
        """The next delivery from the consumed queues, or None after `timeout` seconds."""

    @abstractmethod
    def ack(self, delivery: Delivery) -> None:
        """The delivery's work is done; the broker may forget it."""

    @abstractmethod
    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move the delivery to the dead-letter queue with `reason`, and ack it."""

    @abstractmethod
    def take_dead_letter(self, timeout: float) -> DeadLetter | None:
        """The oldest dead letter, removed from its queue, or None after `timeout` seconds."""

    # Presence (`fedmq status`): best effort, unconfirmed, never routed to a durable queue.
    @abstractmethod
    def publish_presence(self, body: bytes) -> None:
        """Send a heartbeat to whoever watches; it is lost, not an error, when nobody does."""

    @abstractmethod
    def watch_presence(self) -> None:
        """Start receiving every heartbeat published from now on (see take_presence)."""

    @abstractmethod
    def take_presence(self, timeout: float) -> list[bytes]:
        """The heartbeats received since the last call, waiting up to `timeout` for the first."""

    @abstractmethod
    def queue_depth(self, worker: str) -> int | None:
        """Tasks waiting in the worker's queue; None when it does not exist or may not be read."""

    @abstractmethod
    def run_beside_io(self, work: Callable[[], T], between: Callable[[], None] | None = None) -> T:
        """Run long `work` (local training) while the connection stays serviced (heartbeats);
        a connection that waits for the work calls `between` now and then meanwhile, on the
        caller's thread (fedmq's own presence beats)."""

    @abstractmethod
    def close(self) -> None:
        """Close the connection; unacknowledged deliveries return to their queues."""

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
