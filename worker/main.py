"""Running a worker process: connect, serve until SIGINT/SIGTERM, shut down gracefully.

The first signal lets the task in hand finish (its reply is published and the task acked)
and then stops; a second one stops at once, and the unacknowledged task goes back to its queue.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Sequence
from types import FrameType

from fedmq.broker.settings import BrokerSettings, open_broker
from fedmq.worker.host import Group, WorkerHost
from fedmq.worker.service import WorkerService
from fedmq.worker.settings import WorkerSettings, apply_torch_threads, release_large_buffers

log = logging.getLogger("fedmq.worker")


def run_worker(settings: WorkerSettings, broker_settings: BrokerSettings) -> None:
    """Serve tasks until a signal; raises BrokerUnreachable when the broker does not answer."""
    apply_torch_threads(settings.torch_threads)
    release_large_buffers()
    stop = threading.Event()
    _stop_on_signals(stop)
    with open_broker(broker_settings) as broker:
        service = WorkerService(broker, settings)
        log.info("worker %s serving task %s shard %d/%d", settings.worker_id, settings.task,
                 settings.shard.index, settings.shard.count)
        service.serve(stop)
    log.info("worker %s stopped", settings.worker_id)


def _stop_on_signals(stop: threading.Event) -> None:
    def handle(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt  # second signal: leave now, the broker requeues the task
        log.info("stopping after the task in hand (signal %d again to stop now)", signum)
        stop.set()

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)


def run_workers(groups: Sequence[Group], torch_threads: int = 1) -> None:
    """Serve many logical workers (worker.host) until a signal, as run_worker serves one.

    The first signal lets each connection's task in hand finish; a second stops at once.
    Raises BrokerUnreachable when the broker does not answer, BrokerError when a connection is
    lost for good.
    """
    apply_torch_threads(torch_threads)
    release_large_buffers()
    stop = threading.Event()
    _stop_on_signals(stop)
    host = WorkerHost(groups)
    host.start(stop)
    count = sum(len(group.workers) for group in groups)
    log.info("%d logical workers serving on %d connections", count, len(groups))
    host.serve(stop)
    log.info("%d logical workers stopped", count)
