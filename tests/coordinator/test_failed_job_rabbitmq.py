"""A `fedmq train` process that fails says so on its way out: `fedmq status` shows it failed."""

from __future__ import annotations

import subprocess

from fedmq.broker.rabbitmq import RabbitBroker
from fedmq.broker.settings import BrokerSettings
from fedmq.coordinator.status import collect
from fedmq.protocol.presence import JobState
from tests.coordinator.conftest import ROOT, broker_args, fedmq


def test_a_train_run_that_fails_is_announced_as_failed(rabbit_settings: BrokerSettings) -> None:
    # Given a watcher on the presence exchange, and a worker queue that no process serves
    with RabbitBroker(rabbit_settings) as watcher:
        watcher.declare_worker("ghost")
        watcher.watch_presence()
        # When `fedmq train` runs a round that nobody answers
        done = subprocess.run(fedmq("train", *broker_args(rabbit_settings), "--task", "toy", "--workers", "ghost",
                                    "--rounds", "2", "--round-timeout", "2", "--job", "doomed"),
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
        status = collect(watcher, listen_s=1.0)
    # Then it exits 1 (training failed), and its last beat says failed with no round completed
    assert done.returncode == 1, done.stderr
    assert "silent: ghost" in done.stderr
    beat = status.jobs["doomed"]
    assert (beat.state, beat.round, beat.rounds) == (JobState.FAILED, 0, 2)
