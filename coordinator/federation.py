"""The pointer workflow of PySyft's tutorial, over the broker: a Federation and its workers.

    fed = Federation()                      # an in-process memory broker
    bob = fed.spawn("bob")                  # a worker in a thread of this process
    x = bob.send(torch.ones(2, 2))          # a RemoteTensor: the data is on bob now
    y = (x * 2).sum() + 1                   # runs on bob; nothing waits
    y.get()                                 # waits: tensor(9.)

Over RabbitMQ, `Federation("amqp://...")` and `fed.worker("bob")` for a running
`fedmq worker --id bob`; on a provisioned broker, `Federation.provisioned("coordinator.json")`.
The federation is one client: a client id names its session on every worker and the reply
queues the workers answer it on (a job named by that id). The id is seen by every worker the
client uses, so it is not what guards the client's objects: a secret that never leaves this
process is. Each batch to worker w carries HMAC(secret, w), and w binds the client's session to
the first token (and AMQP user_id) it sees (worker.remote.store.Owner). With `verify_senders`
(on for provisioned credentials) an answer is taken only when its AMQP user_id, which RabbitMQ
vouches for, is the worker whose queue it came in, as the training coordinator checks replies.
It is used from one thread; pointers freed by the garbage collector on any thread only queue a
`free` (coordinator.pipeline).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import itertools
import logging
import secrets
import time
import uuid
from pathlib import Path
from types import TracebackType

from fedmq.broker.base import Broker, Delivery
from fedmq.broker.memory import MemoryBroker, MemoryHub
from fedmq.broker.provision import COORDINATOR, load_credentials
from fedmq.broker.settings import BrokerSettings, open_broker
from fedmq.broker.topology import Topology
from fedmq.coordinator.handle import RemoteWorkerHandle
from fedmq.coordinator.pipeline import WorkerLink
from fedmq.protocol.commands import CommandResult, Op
from fedmq.protocol.errors import DecodeError, FedmqError, RemoteError
from fedmq.protocol.messages import check_name, decode_message
from fedmq.worker.pool import WorkerThread
from fedmq.worker.settings import ShardSpec, WorkerSettings
from fedmq.worker.task import load_task

log = logging.getLogger("fedmq.federation")
CLOSE_WAIT_S = 10.0  # how long close() waits for each worker to drop this client's objects


class Federation:
    """One client of the workers on one broker; see the module doc."""

    def __init__(self, broker: str | BrokerSettings | None = None, *, prefix: str = "fedmq",
                 timeout_s: float = 60.0, verify_senders: bool = False) -> None:
        """`broker`: None for an in-process memory broker, an amqp:// URL, or BrokerSettings.

        `timeout_s` bounds every wait for a worker's answer. `verify_senders` (or the settings'
        own): take an answer only when its AMQP user_id is its worker's name (workers with
        provisioned credentials), a chunked one only when its first piece is.
        """
        if broker is None or isinstance(broker, str):
            broker = BrokerSettings(url=broker or "memory://", topology=Topology(prefix))
        if verify_senders and not broker.verify_senders:  # chunked answers too: first piece checked
            broker = dataclasses.replace(broker, verify_senders=True)
        self.settings = broker
        self.timeout_s = timeout_s
        self.verify_senders = broker.verify_senders
        self.client = f"c-{uuid.uuid4().hex}"
        self._secret = secrets.token_bytes(32)  # never sent: workers see only tokens derived from it
        self._hub = MemoryHub(broker.topology) if broker.url.startswith("memory:") else None
        self._broker: Broker = open_broker(broker, hub=self._hub)
        self._links: dict[str, WorkerLink] = {}
        self._handles: dict[str, RemoteWorkerHandle] = {}
        self._threads: list[WorkerThread] = []
        self._ids = itertools.count(1)
        self._closed = False

    @classmethod
    def provisioned(cls, credentials: Path | str, *, timeout_s: float = 60.0) -> Federation:
        """A client with a coordinator's credentials file (`fedmq broker provision`); answers'
        senders are verified."""
        login = load_credentials(Path(credentials))
        if login.role != COORDINATOR:
            raise ValueError(f"{credentials} holds {login.role} credentials: a client needs the coordinator's")
        settings = BrokerSettings(url=login.url, topology=Topology(login.prefix), verify_senders=True)
        return cls(settings, timeout_s=timeout_s)

    def spawn(self, name: str, *, task: str = "toy", shard: str | ShardSpec = "0/1",
              **settings: object) -> RemoteWorkerHandle:
        """A worker serving in a thread of this process (the tutorial's VirtualWorker).

        `settings` are WorkerSettings fields: allow_get, max_objects, max_object_bytes, ...
        """
        self._check_open()
        if name in self._handles:  # two services on one queue would split the client's ops between them
            raise ValueError(f"worker {name!r} is already part of this federation")
        if self.verify_senders and self._hub is None:  # its answers would carry this client's user_id
            raise ValueError(f"a spawned worker would log in as this client, whose answers are verified: "
                             f"start `fedmq worker --id {name} --credentials {name}.json` and use worker({name!r})")
        spec = shard if isinstance(shard, ShardSpec) else ShardSpec.parse(shard)
        worker_settings = WorkerSettings(name, task, spec, poll_s=0.1, **settings)  # type: ignore[arg-type]
        hub = self._hub
        # On the memory broker the worker's connection plays its own user, as a provisioned login would.
        connect = (lambda: MemoryBroker(hub, user=name)) if hub is not None else (lambda: open_broker(self.settings))
        thread = WorkerThread(connect, worker_settings, load_task(task))
        thread.start()
        self._threads.append(thread)
        return self.worker(name)

    def worker(self, name: str, *, wait_s: float = 10.0) -> RemoteWorkerHandle:
        """The worker `name` (a running `fedmq worker --id NAME`); RemoteError if none appears."""
        self._check_open()
        if name in self._handles:
            return self._handles[name]
        check_name("worker", name)
        deadline = time.monotonic() + wait_s
        while not self._broker.has_worker(name):
            if time.monotonic() >= deadline:
                raise RemoteError(f"no worker {name!r} on {self.settings.url.split('@')[-1]} "
                                  f"(prefix {self.settings.topology.prefix!r}): start `fedmq worker --id {name}`")
            time.sleep(0.1)
        self._broker.declare_job(self.client, [name])
        self._broker.consume_replies(self.client, [name])
        link = WorkerLink(self._broker, self.client, name, self.wait, self._token(name))
        self._links[name] = link
        self._handles[name] = RemoteWorkerHandle(self, link)
        return self._handles[name]

    @property
    def connection(self) -> Broker:
        """This client's broker connection (to declare queues, say)."""
        return self._broker

    def new_id(self) -> int:
        """A fresh object id: ids are the client's, unique across its workers."""
        return next(self._ids)

    def flush(self) -> None:
        """Send every worker's buffered ops, without waiting for them."""
        for link in self._links.values():
            link.flush()

    def sync(self) -> None:
        """Send everything and wait until every worker ran it; raise the first failure."""
        self._check_open()
        for link in self._links.values():
            link.wait(link.flush())

    def wait(self, link: WorkerLink, seq: int) -> None:
        """Read answers (for any worker) until `link` has answered batch `seq`."""
        deadline = time.monotonic() + self.timeout_s
        while link.answered < seq:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RemoteError(f"worker {link.worker!r} did not answer batch {seq} within {self.timeout_s:g}s: "
                                  f"is `fedmq worker --id {link.worker}` running against this broker? (a batch "
                                  f"it cannot decode goes to the dead-letter queue)")
            delivery = self._broker.receive(timeout=min(remaining, 1.0))
            if delivery is not None:
                self._take(delivery)

    def _token(self, worker: str) -> str:
        """This client's token for `worker`: useless at any other worker, and no clue to the secret."""
        return hmac.new(self._secret, worker.encode(), hashlib.sha256).hexdigest()

    def _take(self, delivery: Delivery) -> None:
        forged = self._sender_error(delivery)
        if forged:  # checked before decoding, as coordinator.rounds does: a forger's payload costs no parsing
            log.warning("dead-lettering an answer from %s's queue: %s", delivery.source, forged)
            self._broker.dead_letter(delivery, forged)
            return
        # A single part is decoded in place and kept for the dead letter (a list of parts is consumed).
        try:
            message = decode_message(delivery.payload())
        except DecodeError as e:
            log.warning("dead-lettering an undecodable answer from %s: %s", delivery.source, e)
            self._broker.dead_letter(delivery, f"undecodable answer: {e}")
            return
        except Exception as e:  # noqa: BLE001 - a decoder bug must not end the client on hostile bytes
            log.exception("the decoder failed on an answer from %s", delivery.source)
            self._broker.dead_letter(delivery, f"undecodable answer ({type(e).__name__}): {e}")
            return
        link = self._links.get(delivery.source)
        if (isinstance(message, CommandResult) and link is not None and message.client == self.client
                and message.worker == delivery.source):
            link.accept(message)
        else:
            log.warning("dropped an unexpected %s on %s's reply queue", type(message).__name__, delivery.source)
        self._broker.ack(delivery)

    def _sender_error(self, delivery: Delivery) -> str | None:
        if not self.verify_senders or delivery.user_id == delivery.source:
            return None
        if delivery.user_id is None:
            return f"an answer on worker {delivery.source!r}'s queue without a user_id"
        return f"user {delivery.user_id!r} published into worker {delivery.source!r}'s reply queue"

    def close(self) -> None:
        """Free everything this client holds on its workers, stop spawned workers, disconnect."""
        if self._closed:
            return
        try:
            self._release_all()
        finally:
            self._closed = True
            for thread in self._threads:
                thread.stop()
            self._broker.close()

    def _release_all(self) -> None:
        self.timeout_s = min(self.timeout_s, CLOSE_WAIT_S)
        for link in self._links.values():
            link.add(Op("close"))
            try:
                seq = link.flush()
                link.wait(seq)
            except FedmqError as e:
                if link.answered < link.sent:  # the worker keeps our objects until they expire
                    log.warning("closing: worker %s did not confirm dropping this client's objects: %s",
                                link.worker, e)
        self._broker.delete_job(self.client, list(self._links))

    def _check_open(self) -> None:
        if self._closed:
            raise RemoteError("this federation is closed")

    def __enter__(self) -> Federation:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()
