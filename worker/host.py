"""Many logical workers in one process: one dispatcher per broker connection.

A site holding many small data owners, or a simulation over RabbitMQ, runs `fedmq worker --id
w{0..63} --shard {i}/64` as one process: torch is imported once, and the workers share one
connection per principal (RabbitMQ checks each publish's user_id against its connection's user,
so workers with credentials of their own get a connection each; without credentials they all
share one). Each logical worker keeps its own task queue, shard, model, heartbeat, answered-task
memory and task senders: it is a WorkerService like any other.

On each connection one dispatcher thread receives from all its workers' queues and hands each
delivery to the service it came for (Delivery.source names it). Nothing waits on an idle queue
in a thread of its own, so no thread wakes for another's message and training never queues
behind idle threads for the GIL. Every worker guarantee holds as in `serve`: a task is acked only
after its reply is confirmed, one unacknowledged task per worker queue (per-consumer prefetch),
dead letters and poison counts are the broker's, and a stop lets the task in hand finish first.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fedmq.broker.base import Broker
from fedmq.protocol.errors import BrokerError
from fedmq.worker.decodes import SharedDecodes
from fedmq.worker.service import WorkerService
from fedmq.worker.settings import WorkerSettings
from fedmq.worker.task import Task, load_task

log = logging.getLogger("fedmq.worker")
TICK_S = 0.05  # how often the dispatcher sweeps its services' upkeep (heartbeats are every 5 s)


class Dispatcher:
    """Hands each delivery on one connection to the service whose queue it came from."""

    def __init__(self, broker: Broker, services: Sequence[WorkerService]) -> None:
        self.broker = broker
        self._services = list(services)
        self._by_name = {service.worker_id: service for service in services}
        if len(self._by_name) != len(services):
            raise ValueError("two logical workers share a name: each needs a queue of its own")
        self._next_tick = 0.0

    def open(self) -> None:
        """Declare and consume every service's queue."""
        for service in self._services:
            service.open()

    def step(self, timeout: float) -> bool:
        """Upkeep when due, then one delivery handled if one comes within `timeout`; whether one came."""
        if time.monotonic() >= self._next_tick:
            for service in self._services:
                service.tick()
            self._next_tick = time.monotonic() + TICK_S
        delivery = self.broker.receive(timeout=timeout)
        if delivery is None:
            return False
        target = self._by_name.get(delivery.source)
        if target is None:  # only consumed queues deliver: a broker bug, not a sender's doing
            self.broker.dead_letter(delivery, f"no logical worker {delivery.source[:100]!r} in this process")
        else:
            target.take(delivery)
        return True


def dispatch(broker: Broker, services: Sequence[WorkerService], stop: threading.Event,
             poll_s: float = 0.5) -> None:
    """Serve every service's queue over `broker` until `stop` is set; the task in hand finishes.

    The services must all hold `broker`. A BrokerError (the connection lost for good) ends it,
    and the unacknowledged task returns to its queue.
    """
    dispatcher = Dispatcher(broker, services)
    dispatcher.open()
    while not stop.is_set():
        dispatcher.step(poll_s)


@dataclass(frozen=True, kw_only=True)
class Group:
    """Logical workers that share one connection (one principal, one broker)."""

    connect: Callable[[], Broker]  # called in the group's own thread
    workers: tuple[WorkerSettings, ...]
    label: str  # for logs: which principal or broker


class WorkerHost:
    """Groups of logical workers, one dispatcher thread and one connection per group."""

    def __init__(self, groups: Sequence[Group], tasks: dict[str, Task] | None = None) -> None:
        names = [settings.worker_id for group in groups for settings in group.workers]
        if len(set(names)) != len(names):
            raise ValueError("a worker name appears twice: each logical worker needs its own --id")
        self._tasks = dict(tasks or {})
        for group in groups:  # one task definition per name for the whole process: one load
            for settings in group.workers:
                if settings.task not in self._tasks:
                    self._tasks[settings.task] = load_task(settings.task)
        self._groups = list(groups)
        self._threads: list[threading.Thread] = []
        self._ready = threading.Semaphore(0)
        self._failures: list[BaseException] = []
        self._lost: list[str] = []  # groups whose connection was lost for good
        self._decodes = SharedDecodes()  # one decode of each shared task for all the groups

    def start(self, stop: threading.Event, timeout_s: float = 120.0) -> None:
        """Start every group; returns once all their queues exist. Re-raises a failed start."""
        for group in self._groups:
            thread = threading.Thread(target=self._run, args=(group, stop), name=f"host:{group.label}",
                                      daemon=True)
            self._threads.append(thread)
            thread.start()
        deadline = time.monotonic() + timeout_s
        for _ in self._groups:
            if not self._ready.acquire(timeout=max(deadline - time.monotonic(), 0.0)):
                stop.set()
                raise TimeoutError(f"the logical workers did not start within {timeout_s:g}s")
        if self._failures:
            stop.set()
            raise self._failures[0]

    def join(self, timeout_s: float | None = None) -> None:
        """Wait for every dispatcher to end (after `stop` is set, once its task in hand is done)."""
        for thread in self._threads:
            thread.join(timeout_s)

    def serve(self, stop: threading.Event) -> None:
        """Serve until `stop` is set; BrokerError once any connection is lost for good.

        One lost connection stops the whole process (the others finish their task in hand), as a
        lost connection ends a single worker: whoever supervises it restarts it.
        """
        while not stop.is_set() and all(thread.is_alive() for thread in self._threads):
            stop.wait(0.5)
        stop.set()
        self.join()
        if self._lost:
            raise BrokerError(f"connection {self._lost[0]} was lost: its logical workers stopped")

    def _run(self, group: Group, stop: threading.Event) -> None:
        try:
            broker = group.connect()
        except BaseException as e:  # noqa: BLE001 - handed to start()
            self._failed(e)
            return
        try:
            try:
                services = [WorkerService(broker, settings, task=self._tasks[settings.task],
                                          decodes=self._decodes) for settings in group.workers]
                for settings in group.workers:  # now, so the coordinator's first task is routable
                    broker.declare_worker(settings.worker_id)
            except BaseException as e:  # noqa: BLE001 - handed to start()
                self._failed(e)
                return
            self._ready.release()
            poll_s = min(settings.poll_s for settings in group.workers)
            log.info("%d logical workers serving on connection %s", len(services), group.label)
            dispatch(broker, services, stop, poll_s)
        except BrokerError:
            log.exception("the connection %s was lost: its %d workers stop", group.label, len(group.workers))
            self._lost.append(group.label)
        finally:
            broker.close()

    def _failed(self, error: BaseException) -> None:
        self._failures.append(error)
        self._ready.release()
