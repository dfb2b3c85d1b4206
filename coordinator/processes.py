"""`fedmq` subprocesses: the one way the demo, the benchmarks and the tests start workers.

Each process runs this interpreter's `fedmq` (`python -m fedmq`), so it imports the
same code as its parent, and stops gracefully: SIGTERM lets the task in hand finish first; a
process still running after the grace period is killed.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

GRACE_S = 30.0  # after SIGTERM: a worker finishes the task in hand, then exits


def fedmq_command(*args: str) -> list[str]:
    """The command line of `fedmq ARGS` with this interpreter."""
    return [sys.executable, "-m", "fedmq", *args]


def worker_args(name: str, task: str, index: int, count: int, *extra: str) -> list[str]:
    """`fedmq worker` arguments for worker `name` holding shard index/count of `task`."""
    return ["worker", "--id", name, "--task", task, "--shard", f"{index}/{count}", *extra]


def start(args: Sequence[str], *, log: Path | None = None, cwd: Path | None = None,
          env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`fedmq ARGS` in the background; its output goes to `log`, else to this process's own."""
    if log is None:
        return subprocess.Popen(fedmq_command(*args), cwd=cwd, text=True, env=env)
    with open(log, "w") as output:  # the child holds its own descriptor
        return subprocess.Popen(fedmq_command(*args), cwd=cwd, stdout=output, stderr=subprocess.STDOUT,
                                text=True, env=env)


def stop(processes: Sequence[subprocess.Popen[str]], grace_s: float = GRACE_S) -> None:
    """SIGTERM every process, then wait; kill what outlives `grace_s`."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def worker_processes(names: Sequence[str], task: str, *extra: str, log_dir: Path | None = None,
                     cwd: Path | None = None) -> Iterator[list[subprocess.Popen[str]]]:
    """One `fedmq worker` per name, shard i/n each, with `extra` arguments; stopped on exit."""
    processes = [start(worker_args(name, task, index, len(names), *extra), cwd=cwd,
                       log=log_dir / f"worker-{name}.log" if log_dir is not None else None)
                 for index, name in enumerate(names)]
    try:
        yield processes
    finally:
        stop(processes)
