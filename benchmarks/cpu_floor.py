"""The CPU floor of a round over RabbitMQ: what each process spends on a round, from /proc.

When every process shares a few cores, a round cannot take less than the CPU all of them spend
on it divided by the cores. For N `fedmq worker` processes and for N logical workers hosted by
one process, this prints the CPU time one round costs RabbitMQ (when its server runs on this
machine), the coordinator (this process, one torch thread as `fedmq train` runs it) and the
workers (their training included), next to the same training alone, one shard after another,
and the elapsed time per round (evaluation included). Counted from the end of round SKIP (past
start-up) to the end of the last round; run it with nothing else on the machine: every
`fedmq worker` process here is counted.

    python -m benchmarks.cpu_floor [--broker URL] [--rounds R] [--processes 4,16] [--hosted 64]
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.table import Row, table
from benchmarks.vs_flower import fedmq_rabbitmq, training_in_turn, worker_counts
from fedmq.coordinator.metrics import RoundMetrics

ROUNDS = 200
SKIP = 10  # rounds of start-up: the workers' first imports, RabbitMQ's first queues
TICK_S = 1 / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Mark:
    """CPU seconds so far of each side, at the end of one round."""

    at: float
    rabbitmq: float
    coordinator: float
    workers: float


def run(url: str, processes: tuple[int, ...] = (4, 16), hosted: tuple[int, ...] = (64,),
        rounds: int = ROUNDS) -> list[Row]:
    rows: list[Row] = []
    for n, one_host in [(n, False) for n in processes] + [(n, True) for n in hosted]:
        rows += _floor(url, n, rounds, one_host)
    return rows


def _floor(url: str, workers: int, rounds: int, one_host: bool) -> list[Row]:
    marks: list[Mark] = []

    def on_round(metrics: RoundMetrics) -> None:
        if metrics.round in (SKIP, rounds):
            marks.append(_mark())

    ran = fedmq_rabbitmq(url, workers, rounds, hosted=one_host, on_round=on_round)
    alone = training_in_turn(workers, 20)
    if len(marks) != 2:
        raise RuntimeError(f"the job ended before round {rounds}: see its log; CPU was not measured")
    first, last = marks
    per_round = 1000 / (rounds - SKIP)  # ms of each figure per round
    rabbitmq, coordinator, workers_ms = ((getattr(last, side) - getattr(first, side)) * per_round
                                         for side in ("rabbitmq", "coordinator", "workers"))
    total = rabbitmq + coordinator + workers_ms
    what = f"N={workers} " + ("logical workers, one process" if one_host else "worker processes")
    note = f"rounds {SKIP + 1}..{rounds}, {os.cpu_count()} cores"
    return [
        Row(f"{what}: elapsed per round (evaluation included)", (last.at - first.at) * per_round, "ms", ">= 0", note),
        Row(f"{what}: CPU of all processes / cores", total / (os.cpu_count() or 1), "ms", ">= 0", note),
        Row(f"{what}: CPU, training alone (one shard after another)", 1000 * alone, "ms", ">= 0",
            "no framework; the workers' row includes it"),
        Row(f"{what}: CPU, RabbitMQ", rabbitmq, "ms", ">= 0",
            note if pids_with(b"beam.smp") else "no RabbitMQ server on this machine: not counted"),
        Row(f"{what}: CPU, coordinator", coordinator, "ms", ">= 0", note),
        Row(f"{what}: CPU, workers (training included)", workers_ms, "ms", ">= 0",
            f"median round {1000 * ran.wall_s:.1f} ms (evaluation excluded)"),
    ]


def _mark() -> Mark:
    return Mark(at=time.monotonic(), rabbitmq=cpu_seconds(pids_with(b"beam.smp")), coordinator=cpu_seconds([os.getpid()]),
                workers=cpu_seconds(pids_with(b"fedmq\x00worker\x00")))


def pids_with(marker: bytes) -> list[int]:
    """Processes whose command line holds `marker` (arguments are NUL-separated there)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:  # gone meanwhile
                continue
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU seconds of these processes, all their threads."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total * TICK_S


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cpu_floor")
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--processes", default="4,16", help="worker process counts ('' for none)")
    parser.add_argument("--hosted", default="64", help="logical worker counts in one process ('' for none)")
    args = parser.parse_args()
    if args.rounds <= SKIP:
        parser.error(f"--rounds must be above {SKIP} (the start-up rounds left out)")
    from rich.console import Console

    Console().print(table(run(args.broker, worker_counts(args.processes), worker_counts(args.hosted), args.rounds)))


if __name__ == "__main__":
    main()
