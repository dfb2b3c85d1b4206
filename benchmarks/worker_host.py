"""Many workers in one process for the benchmarks: `fedmq worker --id NAME{...}`'s host.

Kept for benchmarks.memory's command line (`--broker --prefix --task NAMES...`); the workers
share one connection and one dispatcher thread (worker.host), as `fedmq worker --id w{0..N}` does.
"""

from __future__ import annotations

import argparse
import functools

from fedmq.broker.settings import BrokerSettings, open_broker
from fedmq.broker.topology import Topology
from fedmq.worker.host import Group
from fedmq.worker.main import run_workers
from fedmq.worker.settings import ShardSpec, WorkerSettings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--broker", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--task", required=True)
    parser.add_argument("names", nargs="+")
    args = parser.parse_args()
    workers = tuple(WorkerSettings(name, args.task, ShardSpec(i, len(args.names)))
                    for i, name in enumerate(args.names))
    connect = functools.partial(open_broker, BrokerSettings(args.broker, Topology(args.prefix)))
    run_workers([Group(connect=connect, workers=workers, label=f"{len(workers)} workers")])


if __name__ == "__main__":
    main()
