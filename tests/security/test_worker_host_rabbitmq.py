"""Logical workers with credentials of their own in one process: one connection per principal."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from fedmq.coordinator import processes
from tests.coordinator.conftest import ROOT, fedmq
from tests.security.conftest import Federation


def test_one_process_hosts_two_principals_each_with_its_own_credentials(
        federation: Federation, tmp_path: Path) -> None:
    # Given bob and alice hosted by one `fedmq worker` process, each with its own credentials file
    bob, alice = federation.bob.user, federation.alice.user
    log = tmp_path / "host.log"
    host = processes.start(["worker", "--id", f"{{{bob},{alice}}}", "--task", "toy", "--shard", "{i}/{n}",
                            "--credentials", str(federation.directory / "{id}.json")], cwd=ROOT, log=log)
    try:
        # When the coordinator trains with its own credentials (which holds replies to their user_id)
        metrics = tmp_path / "m.jsonl"
        done = subprocess.run(
            fedmq("train", "--task", "toy", "--workers", f"{bob},{alice}", "--rounds", "2", "--batch-size", "2",
                  "--credentials", str(federation.file(federation.coordinator)), "--metrics-out", str(metrics)),
            cwd=ROOT, capture_output=True, text=True, timeout=90)
    finally:
        host.send_signal(signal.SIGTERM)
        host.wait(timeout=60)
        print(log.read_text())  # shown when the test fails
    # Then both rounds count both workers' replies: each came over its own principal's connection
    assert done.returncode == 0, done.stderr + log.read_text()
    assert metrics.read_text().count('"replies": 2') == 2
    assert "2 logical workers serving on 2 connections" in log.read_text()


def test_a_shared_credentials_file_is_a_usage_error(federation: Federation) -> None:
    # When two logical workers are given bob's credentials file alike
    done = subprocess.run(fedmq("worker", "--id", f"{{{federation.bob.user},{federation.alice.user}}}",
                                "--task", "toy", "--shard", "{i}/2",
                                "--credentials", str(federation.file(federation.bob))),
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    # Then it exits 2 naming the mismatch, before connecting: a worker's user must be its name
    assert done.returncode == 2 and "is for worker" in done.stderr, done.stderr
