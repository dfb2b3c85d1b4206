"""Workers as threads of this process, on a memory broker: simulation, demos and tests."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Sequence
from types import TracebackType

from fedmq.broker.base import Broker
from fedmq.broker.memory import MemoryBroker, MemoryHub
from fedmq.protocol.errors import BrokerError
from fedmq.worker.decodes import SharedDecodes
from fedmq.worker.host import Dispatcher, dispatch
from fedmq.worker.service import WorkerService
from fedmq.worker.settings import ShardSpec, WorkerSettings
from fedmq.worker.task import Partition, Task

log = logging.getLogger("fedmq.worker")


class LocalWorkers:
    """Serve one WorkerService per name, each holding shard i/n of `task`; stop on exit.

    With `dispatchers` >= 1 (default one) the workers share that many memory-broker connections,
    each driven by one thread (worker.host.dispatch): a message wakes only the thread whose
    connection consumes its queue, and training runs one task at a time per dispatcher instead
    of N threads contending for the GIL. More dispatchers let a worker that blocks (a test's hung
    `train`) leave the others serving.

    With `dispatchers=0` (simulation: `fedmq demo`) no thread is started: the workers run inline,
    on the thread that waits for their messages (the coordinator's, in MemoryBroker.receive), one
    delivery per look. A round is then the same work done one step after another, as a plain
    training loop would, without two threads handing the GIL back and forth at every tensor op.
    """

    def __init__(self, hub: MemoryHub, task: Task, names: Sequence[str], *, partition: Partition = Partition.IID,
                 dispatchers: int = 1) -> None:
        if dispatchers < 0:
            raise ValueError(f"dispatchers must be 0 (inline) or more, got {dispatchers}")
        self._hub = hub
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        groups: list[list[WorkerService]] = [[] for _ in range(min(max(dispatchers, 1), max(len(names), 1)))]
        self._brokers = [MemoryBroker(hub) for _ in groups]
        decodes = SharedDecodes()  # one decode of each shared task for all (worker.decodes)
        for index, name in enumerate(names):
            broker = self._brokers[index % len(groups)]
            broker.declare_worker(name)  # now, so the coordinator's first task is routable
            shard = ShardSpec(index, len(names), partition)
            service = WorkerService(broker, WorkerSettings(name, task.name, shard), task=task, decodes=decodes)
            groups[index % len(groups)].append(service)
        self._inline: list[tuple[object, Callable[[], bool]]] = []
        for broker, services in zip(self._brokers, groups, strict=True):
            if dispatchers == 0:
                dispatcher = Dispatcher(broker, services)
                dispatcher.open()
                self._inline.append((broker, functools.partial(dispatcher.step, 0.0)))
            else:
                thread = threading.Thread(target=dispatch, args=(broker, services, self._stop), daemon=True)
                self._threads.append(thread)

    def __enter__(self) -> LocalWorkers:
        with self._hub.lock:
            self._hub.helpers.extend(self._inline)
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()

    def stop(self) -> None:
        """Let each worker finish the task in hand, then close its connection."""
        self._stop.set()
        with self._hub.lock:
            self._hub.helpers[:] = [h for h in self._hub.helpers if h not in self._inline]
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
