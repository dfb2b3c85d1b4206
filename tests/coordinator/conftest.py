"""Worker processes for end-to-end tests: real `fedmq worker` subprocesses on a real broker."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fedmq.broker.settings import BrokerSettings
from fedmq.coordinator import processes
from tests.coordinator.remote_fixtures import broker_settings, fed  # noqa: F401 - fixtures: a Federation per broker

ROOT = Path(__file__).resolve().parents[2]
SERVING = " serving task "  # worker.main's line once the shard is loaded and the connection open
SERVING_WAIT_S = 120.0  # an upper bound, never a timing assertion
StartWorkers = Callable[..., list[subprocess.Popen[str]]]


def fedmq(*args: str) -> list[str]:
    """The command line of `fedmq ARGS` with this interpreter."""
    return processes.fedmq_command(*args)


def broker_args(settings: BrokerSettings) -> list[str]:
    return ["--broker", settings.url, "--prefix", settings.topology.prefix]


def _wait_serving(process: subprocess.Popen[str], log: Path) -> None:
    """Until the worker has loaded its shard and serves (or has exited): a test's first round
    must not spend its timeout on the worker's torch import on a busy machine."""
    deadline = time.monotonic() + SERVING_WAIT_S
    while process.poll() is None and time.monotonic() < deadline:
        if log.exists() and SERVING in log.read_text():
            return
        time.sleep(0.05)


@pytest.fixture
def start_workers(rabbit_settings: BrokerSettings, tmp_path: Path) -> Iterator[StartWorkers]:
    """start_workers(task, names, url=None, *extra) -> processes serving shard i/n each; stopped after."""
    started: list[subprocess.Popen[str]] = []

    def start(task: str, names: list[str], url: str | None = None, *extra: str) -> list[subprocess.Popen[str]]:
        connection = ["--broker", url or rabbit_settings.url, "--prefix", rabbit_settings.topology.prefix]
        launched = [processes.start(processes.worker_args(name, task, index, len(names), *connection, *extra),
                                    cwd=ROOT, log=tmp_path / f"worker-{name}.log")
                    for index, name in enumerate(names)]
        started.extend(launched)
        for name, process in zip(names, launched, strict=True):
            _wait_serving(process, tmp_path / f"worker-{name}.log")
        return launched

    yield start
    processes.stop(started)
