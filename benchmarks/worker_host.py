"""Many workers in one process, one thread and one RabbitMQ connection each (benchmarks only)."""

from __future__ import annotations

import argparse
import signal
import threading

from broker.settings import BrokerSettings, open_broker
from broker.topology import Topology
from worker.service import WorkerService
from worker.settings import ShardSpec, WorkerSettings, apply_torch_threads
from worker.task import load_task


def serve(name: str, index: int, count: int, args: argparse.Namespace, stop: threading.Event) -> None:
    task = load_task(args.task)
    with open_broker(BrokerSettings(args.broker, Topology(args.prefix))) as broker:
        WorkerService(broker, WorkerSettings(name, args.task, ShardSpec(index, count)), task=task).serve(stop)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--broker", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--task", required=True)
    parser.add_argument("names", nargs="+")
    args = parser.parse_args()
    apply_torch_threads(1)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threads = [threading.Thread(target=serve, args=(name, i, len(args.names), args, stop))
               for i, name in enumerate(args.names)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    main()
