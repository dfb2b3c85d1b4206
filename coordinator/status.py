"""`fedmq status`: who is online, what each worker's queue holds, how far each job got.

It listens to the presence exchange for `--listen` seconds (workers beat every 5 s, so the
default 6 s hears each live worker at least once), keeps the latest beat per process, and adds
each worker's task-queue depth (also for `--workers` that stayed silent: those show offline).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from fedmq.broker.base import Broker
from fedmq.protocol.errors import DecodeError
from fedmq.protocol.presence import Presence, decode_presence

ONLINE_S = 15.0  # a worker heard from within this many seconds is online (3 missed beats)


@dataclass(frozen=True)
class Status:
    workers: dict[str, Presence | None]  # None: named with --workers, never heard
    depths: dict[str, int | None]
    jobs: dict[str, Presence]
    now: float


def collect(broker: Broker, listen_s: float, expected: list[str] | None = None) -> Status:
    """The latest beat of every process heard within `listen_s`, and the workers' queue depths."""
    broker.watch_presence()
    latest: dict[tuple[str, str], Presence] = {}
    deadline = time.monotonic() + listen_s
    while (remaining := deadline - time.monotonic()) > 0:
        for body in broker.take_presence(remaining):
            try:
                beat = decode_presence(body)
            except DecodeError:
                continue  # status only reads: a hostile beat is ignored, never shown
            key = (beat.role, beat.name)
            if key not in latest or beat.at >= latest[key].at:
                latest[key] = beat
    workers: dict[str, Presence | None] = {name: None for name in expected or []}
    workers.update({name: beat for (role, name), beat in latest.items() if role == "worker"})
    jobs = {name: beat for (role, name), beat in latest.items() if role == "coordinator"}
    depths = {name: broker.queue_depth(name) for name in sorted(workers)}
    return Status(dict(sorted(workers.items())), depths, dict(sorted(jobs.items())), time.time())


def render(status: Status, console: Console) -> None:
    workers = Table(title="workers")
    for column in ("worker", "online", "last seen", "task", "shard", "state", "queued", "last answered"):
        workers.add_column(column)
    for name, beat in status.workers.items():
        depth = status.depths.get(name)
        queued = "?" if depth is None else str(depth)
        if beat is None:
            workers.add_row(name, "no", "never", "", "", "", queued, "")
            continue
        age = max(status.now - beat.at, 0.0)
        answered = f"{beat.job} round {beat.round}" if beat.job else "-"
        workers.add_row(name, "yes" if age <= ONLINE_S else "no", f"{age:.0f}s ago", beat.task,
                        beat.shard, beat.state, queued, answered)
    console.print(workers)
    jobs = Table(title="jobs")
    for column in ("job", "task", "round", "state", "last seen"):
        jobs.add_column(column)
    for name, beat in status.jobs.items():
        jobs.add_row(name, beat.task, f"{beat.round}/{beat.rounds}", beat.state,
                     f"{max(status.now - beat.at, 0.0):.0f}s ago")
    if not status.jobs:
        jobs.caption = "no coordinator beat heard (jobs beat once per round)"
    console.print(jobs)
