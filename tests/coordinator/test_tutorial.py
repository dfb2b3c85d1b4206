"""examples/tutorial_part2.py: its losses are the same loops' run locally, on both brokers,
and it runs against real `fedmq worker` processes over RabbitMQ."""

from __future__ import annotations

import subprocess
import sys

from fedmq.broker.settings import BrokerSettings
from fedmq.coordinator import Federation
from examples import tutorial_part2
from tests.coordinator.conftest import ROOT, StartWorkers


def test_the_tutorials_losses_equal_the_local_loops(fed: Federation) -> None:
    # Given bob and alice as the tutorial's virtual workers
    workers = [fed.spawn("bob", shard="0/2"), fed.spawn("alice", shard="1/2")]
    lines: list[str] = []
    # When the tutorial runs all three parts
    differences = tutorial_part2.run(fed, workers, iterations=4, log=lines.append)
    # Then its federated losses are the local loops' within 1e-6, and it printed each step
    assert max(differences.values()) <= tutorial_part2.TOLERANCE, differences
    assert sum("bob: loss" in line for line in lines) == 2 * 4
    assert sum("alice: loss" in line for line in lines) == 2 * 4


def test_the_tutorial_runs_against_fedmq_worker_processes(rabbit_settings: BrokerSettings,
                                                          start_workers: StartWorkers) -> None:
    # Given bob and alice as `fedmq worker` processes
    start_workers("toy", ["bob", "alice"])
    # When the example runs with --broker
    done = subprocess.run([sys.executable, "examples/tutorial_part2.py", "--broker", rabbit_settings.url,
                           "--prefix", rabbit_settings.topology.prefix, "--iterations", "3"],
                          cwd=ROOT, capture_output=True, text=True, timeout=180)
    # Then it ends well, its losses matching the local loops'
    assert done.returncode == 0, done.stderr
    assert "largest difference from the same loops run here" in done.stdout
    assert done.stdout.count("alice: loss") == 6
