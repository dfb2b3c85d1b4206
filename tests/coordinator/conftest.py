"""Worker processes for end-to-end tests: real `fedmq worker` subprocesses on a real broker."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from broker.settings import BrokerSettings
from tests.coordinator.remote_fixtures import broker_settings, fed  # noqa: F401 - fixtures: a Federation per broker

ROOT = Path(__file__).resolve().parents[2]
StartWorkers = Callable[..., list[subprocess.Popen[str]]]


def fedmq(*args: str) -> list[str]:
    """The command line of `fedmq ARGS` with this interpreter."""
    return [sys.executable, "-m", "coordinator.cli", *args]


def broker_args(settings: BrokerSettings) -> list[str]:
    return ["--broker", settings.url, "--prefix", settings.topology.prefix]


@pytest.fixture
def start_workers(rabbit_settings: BrokerSettings, tmp_path: Path) -> Iterator[StartWorkers]:
    """start_workers(task, names, url=None) -> processes serving shard i/n each; stopped after the test."""
    started: list[subprocess.Popen[str]] = []

    def start(task: str, names: list[str], url: str | None = None, *extra: str) -> list[subprocess.Popen[str]]:
        processes = []
        for index, name in enumerate(names):
            log = open(tmp_path / f"worker-{name}.log", "w")
            settings_args = ["--broker", url or rabbit_settings.url, "--prefix", rabbit_settings.topology.prefix]
            processes.append(subprocess.Popen(
                fedmq("worker", "--id", name, "--task", task, "--shard", f"{index}/{len(names)}",
                      *settings_args, *extra),
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True))
        started.extend(processes)
        return processes

    yield start
    for process in started:
        process.terminate()
    for process in started:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
