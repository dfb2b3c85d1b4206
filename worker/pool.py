"""Workers as threads of this process, on a memory broker: simulation, demos and tests."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from types import TracebackType

from broker.memory import MemoryBroker, MemoryHub
from worker.service import WorkerService
from worker.settings import ShardSpec, WorkerSettings
from worker.task import Task


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
