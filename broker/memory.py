"""The in-process memory broker: RabbitMQ's semantics without a server.

The embedded default of `fedmq demo` and of single-machine simulation. A MemoryHub plays the
server (queues and dead letters); each MemoryBroker is one connection to it. Routing, mandatory
publishes, one unacknowledged task per worker, dead-lettering and requeue-on-close behave as
they do on RabbitMQ, so code tested here runs unchanged there. So do the bounds: a queue given a
max length refuses publishes past it (PublishRejected, RabbitMQ's `x-overflow: reject-publish`),
the dead letters keep the newest within the topology's bounds, and a message delivered more than
`max_deliveries` times is dead-lettered as poison (a quorum queue's delivery count).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from fedmq.broker.base import Body, Broker, DeadLetter, Delivery, T
from fedmq.broker.topology import Topology
from fedmq.broker.poison import poison_reason
from fedmq.protocol.errors import BrokerError, PublishRejected, Unroutable


@dataclass
class _Message:
    body: bytes
    source: str
    redelivered: bool = False
    user_id: str | None = None
    expires_at: float | None = None  # time.monotonic(); RabbitMQ's per-message TTL
    deliveries: int = 0  # how many times it was handed to a consumer

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now


@dataclass
class _Queue:
    source: str  # the worker the queue belongs to
    messages: deque[_Message] = field(default_factory=deque)
    max_length: int | None = None  # past it, publishes are refused (reject-publish)


class MemoryHub:
    """The server side: named queues guarded by one lock.

    `changed` (on that lock) wakes those waiting for dead letters and heartbeats. A queue's new
    message wakes only the connections consuming that queue, each waiting on a condition of its
    own (on the same lock): with many in-process workers a message no longer wakes them all.
    """

    def __init__(self, topology: Topology | None = None, max_deliveries: int = 5) -> None:
        self.topology = topology or Topology()
        self.max_deliveries = max_deliveries
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.consumers: dict[str, set[threading.Condition]] = {}  # queue -> its consumers' wake-ups
        self.queues: dict[str, _Queue] = {}
        self.dead_letters: deque[DeadLetter] = deque()
        self.dead_letter_bytes = 0
        self.presence_watchers: list[deque[bytes]] = []  # one inbox per watching connection
        # Inline workers (worker.pool): (their connection, a step running one of their deliveries).
        self.helpers: list[tuple[object, Callable[[], bool]]] = []
        self._helping = threading.Lock()  # one step at a time, and never a step inside a step

    def help(self, caller: object) -> bool:
        """Run one delivery of an inline worker's (other than `caller`'s own) on this thread;
        False when none had one, or a step is already running."""
        if not self.helpers or not self._helping.acquire(blocking=False):
            return False
        try:
            return any(step() for owner, step in list(self.helpers) if owner is not caller)
        finally:
            self._helping.release()

    def declare(self, name: str, source: str) -> None:
        with self.changed:
            self.queues.setdefault(name, _Queue(source))

    def limit(self, name: str, max_length: int) -> None:
        """Refuse publishes to queue `name` once it holds `max_length` messages (0: every one)."""
        with self.changed:
            self.queues[name].max_length = max_length

    def delete(self, name: str) -> None:
        with self.changed:
            self.queues.pop(name, None)

    def put(self, name: str, body: Body, what: str, user_id: str | None = None,
            expires_in_s: float | None = None) -> None:
        with self.changed:
            queue = self.queues.get(name)
            if queue is None:
                raise Unroutable(f"no queue for {what}: is it running?")
            if queue.max_length is not None and len(queue.messages) >= queue.max_length:
                raise PublishRejected(f"the broker refused a message for {what} (its queue is full)")
            expires_at = None if expires_in_s is None else time.monotonic() + expires_in_s
            queue.messages.append(_Message(bytes(body), queue.source, False, user_id, expires_at))
            self.wake(name)

    def wake(self, name: str) -> None:
        """Wake the connections consuming queue `name` (and `changed`'s waiters); hold the lock."""
        for consumer in self.consumers.get(name, ()):
            consumer.notify_all()  # one thread per connection waits on it (a Broker is single-threaded)
        self.changed.notify_all()

    def drop_expired(self, queue: _Queue) -> None:
        """Dead-letter expired messages at the head of `queue`, as RabbitMQ does."""
        now = time.monotonic()
        while queue.messages and queue.messages[0].expired(now):
            message = queue.messages.popleft()
            self.dead_letter(DeadLetter(message.body, "expired", message.source))

    def requeue(self, name: str, message: _Message) -> None:
        with self.changed:
            if name in self.queues:
                message.redelivered = True
                self.queues[name].messages.appendleft(message)
                self.wake(name)

    def dead_letter(self, letter: DeadLetter) -> None:
        """Keep `letter`, dropping the oldest letters past the topology's bounds (drop-head)."""
        with self.changed:
            self.dead_letters.append(letter)
            self.dead_letter_bytes += len(letter.body)
            while (len(self.dead_letters) > self.topology.dead_letter_max_length
                   or self.dead_letter_bytes > self.topology.dead_letter_max_bytes):
                self.dead_letter_bytes -= len(self.dead_letters.popleft().body)
            self.changed.notify_all()

    def take_dead_letter(self) -> DeadLetter | None:
        """The oldest letter, removed; the caller holds `changed`."""
        if not self.dead_letters:
            return None
        letter = self.dead_letters.popleft()
        self.dead_letter_bytes -= len(letter.body)
        return letter


class MemoryBroker(Broker):
    """One connection to a MemoryHub; `user` plays the AMQP user its replies carry as user_id."""

    def __init__(self, hub: MemoryHub, user: str | None = None) -> None:
        self._hub = hub
        self._user = user
        self._topology = hub.topology
        self._consumed: dict[str, int] = {}  # queue -> max unacknowledged (0: unlimited)
        self._unacked: dict[int, tuple[str, _Message]] = {}
        self._tags = itertools.count(1)
        self._wake = threading.Condition(hub.lock)  # notified when a consumed queue gets a message
        self._turn = 0  # where the next receive starts looking: consumed queues take turns
        self._closed = False
        self._presence: deque[bytes] | None = None  # heartbeats, once watch_presence is called
        self.bytes_published = 0  # bodies published on this connection, a shared one once (benchmarks)

    def declare_worker(self, worker: str) -> None:
        self._hub.declare(self._topology.task_queue(worker), worker)

    def has_worker(self, worker: str) -> bool:
        return self._topology.task_queue(worker) in self._hub.queues

    def declare_job(self, job: str, workers: Sequence[str]) -> None:
        for worker in workers:
            self._hub.declare(self._topology.reply_queue(job, worker), worker)

    def delete_job(self, job: str, workers: Sequence[str]) -> None:
        for worker in workers:
            self._hub.delete(self._topology.reply_queue(job, worker))

    def publish_task(self, worker: str, body: Body, expires_in_s: float | None = None) -> None:
        self._check_open()
        self._hub.put(self._topology.task_queue(worker), body, f"worker {worker!r}", self._user, expires_in_s)
        self.bytes_published += len(body)

    def publish_shared_task(self, workers: Sequence[str], body: Body,
                            expires_in_s: float | None = None) -> dict[str, BrokerError]:
        self._check_open()
        data = bytes(body)  # one copy, held by every queue it goes to (RabbitMQ stores it once too)
        self.bytes_published += len(data)
        failed: dict[str, BrokerError] = {}
        for worker in dict.fromkeys(workers):
            try:
                self._hub.put(self._topology.task_queue(worker), data, f"worker {worker!r}", self._user,
                              expires_in_s)
            except (Unroutable, PublishRejected) as e:
                failed[worker] = e
        return failed

    def publish_reply(self, job: str, worker: str, body: Body) -> None:
        self._check_open()
        self._hub.put(self._topology.reply_queue(job, worker), body, f"job {job!r} replies from {worker!r}",
                      self._user)

    def consume_tasks(self, worker: str) -> None:
        self._consume(self._topology.task_queue(worker), 1)

    def consume_replies(self, job: str, workers: Sequence[str]) -> None:
        for worker in workers:
            self._consume(self._topology.reply_queue(job, worker), 0)

    def _consume(self, name: str, limit: int) -> None:
        with self._hub.lock:
            self._consumed[name] = limit
            self._hub.consumers.setdefault(name, set()).add(self._wake)

    def receive(self, timeout: float) -> Delivery | None:
        """The next delivery within `timeout`. While none is ready, a hub with inline workers
        (worker.pool) has this thread run their deliveries, one per look, in place of waiting."""
        self._check_open()
        deadline = time.monotonic() + timeout
        while True:
            with self._hub.lock:
                taken = self._take_ready()
                if taken is not None:
                    return taken
            if self._hub.help(self):
                continue
            with self._hub.lock:
                taken = self._take_ready()
                remaining = deadline - time.monotonic()
                if taken is not None or remaining <= 0:
                    return taken
                # Inline workers' tasks wake this thread too: it is the one that runs them.
                (self._hub.changed if self._hub.helpers else self._wake).wait(remaining)

    def _take_ready(self) -> Delivery | None:
        names = list(self._consumed.items())
        # Round robin, as RabbitMQ serves its consumers: a busy queue cannot starve the others.
        self._turn = (self._turn + 1) % max(len(names), 1)
        for name, limit in names[self._turn:] + names[:self._turn]:
            queue = self._hub.queues.get(name)
            if queue is not None:
                self._hub.drop_expired(queue)
            in_hand = sum(1 for queue_name, _ in self._unacked.values() if queue_name == name)
            if queue is None or not queue.messages or (limit and in_hand >= limit):
                continue
            message = queue.messages.popleft()
            message.deliveries += 1
            if message.deliveries > self._hub.max_deliveries:  # it killed its consumer each time
                reason = poison_reason(message.deliveries, self._hub.max_deliveries)
                self._hub.dead_letter(DeadLetter(message.body, reason, message.source))
                return self._take_ready()
            tag = next(self._tags)
            self._unacked[tag] = (name, message)
            return Delivery([message.body], message.source, tag, message.redelivered, user_id=message.user_id,
                            attempts=message.deliveries)
        return None

    def ack(self, delivery: Delivery) -> None:
        with self._hub.changed:
            self._unacked.pop(delivery.tag, None)  # type: ignore[call-overload]
            self._wake.notify()  # a receive on another thread may wait for this queue's next task
            self._hub.changed.notify_all()

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        self._hub.dead_letter(DeadLetter(delivery.body(), reason, delivery.source))
        self.ack(delivery)

    def take_dead_letter(self, timeout: float) -> DeadLetter | None:
        with self._hub.changed:
            self._hub.changed.wait_for(lambda: bool(self._hub.dead_letters), timeout)
            return self._hub.take_dead_letter()

    def publish_presence(self, body: bytes) -> None:
        with self._hub.changed:
            for inbox in self._hub.presence_watchers:
                inbox.append(bytes(body))
            self._hub.changed.notify_all()

    def watch_presence(self) -> None:
        with self._hub.changed:
            if self._presence is None:
                self._presence = deque()
                self._hub.presence_watchers.append(self._presence)

    def take_presence(self, timeout: float) -> list[bytes]:
        inbox = self._presence
        if inbox is None:
            raise BrokerError("take_presence before watch_presence")
        with self._hub.changed:
            self._hub.changed.wait_for(lambda: bool(inbox), timeout)
            taken = list(inbox)
            inbox.clear()
            return taken

    def queue_depth(self, worker: str) -> int | None:
        with self._hub.changed:
            queue = self._hub.queues.get(self._topology.task_queue(worker))
            return None if queue is None else len(queue.messages)

    def run_beside_io(self, work: Callable[[], T], between: Callable[[], None] | None = None) -> T:
        return work()  # no connection to keep alive, so nothing to do between

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._hub.changed:  # like an exclusive queue: a closed watcher's inbox goes away
            self._hub.presence_watchers = [w for w in self._hub.presence_watchers if w is not self._presence]
            for consumers in self._hub.consumers.values():
                consumers.discard(self._wake)
        for name, message in self._unacked.values():
            self._hub.requeue(name, message)
        self._unacked.clear()

    def _check_open(self) -> None:
        if self._closed:
            raise BrokerError("this memory broker connection is closed")
