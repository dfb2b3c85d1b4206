"""Workers as threads of this process, on a memory broker: simulation, demos and tests."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from types import TracebackType

from broker.base import Broker
from broker.memory import MemoryBroker, MemoryHub
from protocol.errors import BrokerError
from worker.service import WorkerService
from worker.settings import ShardSpec, WorkerSettings
from worker.task import Task

log = logging.getLogger("fedmq.worker")


class LocalWorkers:
    """Start one WorkerService thread per name, each holding shard i/n of `task`; stop on exit."""

    def __init__(self, hub: MemoryHub, task: Task, names: Sequence[str], *, partition: str = "iid") -> None:
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._brokers: list[MemoryBroker] = []
        for index, name in enumerate(names):
            broker = MemoryBroker(hub)
            broker.declare_worker(name)  # now, so the coordinator's first task is routable
            shard = ShardSpec(index, len(names), partition)
            service = WorkerService(broker, WorkerSettings(name, task.name, shard), task=task)
            self._brokers.append(broker)
            self._threads.append(threading.Thread(target=service.serve, args=(self._stop,), name=name, daemon=True))

    def __enter__(self) -> LocalWorkers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()

    def stop(self) -> None:
        """Let each worker finish the task in hand, then close its connection."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        for broker in self._brokers:
            broker.close()


class WorkerThread:
    """One WorkerService serving in a thread of this process, on a broker connection of its own.

    `connect` runs in the thread: a RabbitMQ connection is used only by the thread that opened it.
    """

    def __init__(self, connect: Callable[[], Broker], settings: WorkerSettings, task: Task | None = None) -> None:
        self.settings = settings
        self.service: WorkerService | None = None
        self._connect = connect
        self._task = task
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name=settings.worker_id, daemon=True)

    def start(self, timeout_s: float = 60.0) -> None:
        """Start serving; returns once the worker's queue exists. Re-raises a failed start."""
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError(f"worker {self.settings.worker_id} did not start within {timeout_s:g}s")
        if self._failure is not None:
            raise self._failure

    def stop(self, timeout_s: float = 30.0) -> None:
        """Let the worker finish what it has in hand, then close its connection."""
        self._stop.set()
        self._thread.join(timeout_s)

    def _serve(self) -> None:
        try:
            broker = self._connect()
        except BaseException as e:  # noqa: BLE001 - handed to start()
            self._failure = e
            self._ready.set()
            return
        try:
            self.service = WorkerService(broker, self.settings, task=self._task)
            broker.declare_worker(self.settings.worker_id)  # now, so the first command is routable
        except BaseException as e:  # noqa: BLE001 - handed to start()
            self._failure = e
            broker.close()
            self._ready.set()
            return
        self._ready.set()
        try:
            self.service.serve(self._stop)
        except BrokerError:
            log.exception("worker %s lost its broker", self.settings.worker_id)
        finally:
            broker.close()
