"""Faults survived, end to end over a real RabbitMQ with `fedmq worker` and `fedmq train` processes:
a worker killed mid-training, a straggler, a broker restarted, connections cut by the broker, and
a channel closed by RabbitMQ's consumer_timeout while local training runs long."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch

from fedmq.broker.rabbitmq import RabbitBroker
from fedmq.broker.settings import BrokerSettings
from fedmq.coordinator.checkpoint import load_checkpoint
from fedmq.protocol.messages import SharedTask, TrainTask, decode_message
from tests.coordinator.conftest import ROOT, StartWorkers, broker_args, fedmq
from tests.coordinator.sleepy_task import PAUSE_ENV, SLEEP_ENV, STARTED

if TYPE_CHECKING:
    from tests.conftest import BrokerAdmin

TASK = "tests.coordinator.sleepy_task"
WAIT_S = 120.0  # an upper bound for something to happen, never a timing assertion


def _run_train(settings: BrokerSettings, log: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(fedmq("train", *broker_args(settings), "--task", TASK, *args), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"), text=True)


def _finished(process: subprocess.Popen[str], log: Path) -> None:
    assert process.wait(timeout=WAIT_S) == 0, log.read_text()


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _log_has(path: Path, text: str) -> Callable[[], bool]:
    return lambda: path.exists() and text in path.read_text()


def _sleepy(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Workers started from now on sleep `seconds` before training (the coordinator never trains)."""
    monkeypatch.setenv(SLEEP_ENV, str(seconds))


def test_a_worker_killed_mid_training_rejoins_and_its_task_expires_unrun(
        rabbit_settings: BrokerSettings, start_workers: StartWorkers, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Given w0 and w1, and a victim whose training would take a minute
    start_workers(TASK, ["w0", "w1"])
    _sleepy(monkeypatch, 60)
    victim = start_workers(TASK, ["victim"])[0]
    monkeypatch.delenv(SLEEP_ENV)
    metrics, log = tmp_path / "m.jsonl", tmp_path / "train.log"
    train = _run_train(rabbit_settings, log, "--workers", "w0,w1,victim", "--rounds", "4",
                       "--min-replies", "2", "--round-timeout", "6", "--metrics-out", str(metrics))
    # When the victim is killed with SIGKILL while training round 1, and restarted once it is over
    _wait_until(_log_has(tmp_path / "worker-victim.log", STARTED), "the victim to start training")
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    _wait_until(lambda: len(_lines(metrics)) >= 1, "round 1 to end")
    start_workers(TASK, ["victim"])
    _finished(train, log)
    # Then round 1 closed at its timeout with the two others, and the victim is back by the last
    rounds = _lines(metrics)
    assert [r["round"] for r in rounds] == [1, 2, 3, 4]
    assert rounds[0]["replies"] == 2 and rounds[-1]["replies"] == 3, rounds
    # And the task it held was not lost: requeued, it expired with its round, unrun
    with RabbitBroker(rabbit_settings) as broker:
        letters = []
        while (letter := broker.take_dead_letter(timeout=1)) is not None:
            letters.append(letter)
    stale = [decode_message(letter.body) for letter in letters if letter.reason == "expired"]
    assert any(isinstance(task, (TrainTask, SharedTask)) and task.round == 1 for task in stale), letters


def test_a_stragglers_late_replies_are_dropped_and_counted_never_aggregated(
        rabbit_settings: BrokerSettings, start_workers: StartWorkers, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Given w0 and w1, and a straggler that always answers 1.5 rounds late
    start_workers(TASK, ["w0", "w1"])
    _sleepy(monkeypatch, 4.5)
    start_workers(TASK, ["straggler"])
    monkeypatch.delenv(SLEEP_ENV)
    metrics, log = tmp_path / "m.jsonl", tmp_path / "train.log"
    # When three rounds of 3 s run, closing with two replies
    train = _run_train(rabbit_settings, log, "--workers", "w0,w1,straggler", "--rounds", "3",
                       "--min-replies", "2", "--round-timeout", "3", "--metrics-out", str(metrics),
                       "--log-level", "info")
    _finished(train, log)
    # Then no round aggregated the straggler, and its round-1 reply was dropped as late
    rounds = _lines(metrics)
    assert all(r["replies"] == 2 for r in rounds), rounds
    assert sum(int(r["dropped"]) for r in rounds) >= 1, rounds  # type: ignore[call-overload]
    assert "dropped a reply from straggler: round 1 is over" in log.read_text()


@pytest.fixture
def pause(start_workers: StartWorkers, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Starts w0 and w1, which hold their training while the returned file exists."""
    monkeypatch.setenv(PAUSE_ENV, str(tmp_path / "pause"))
    start_workers(TASK, ["w0", "w1"])
    monkeypatch.delenv(PAUSE_ENV)
    return tmp_path / "pause"


def _restart_broker(admin: BrokerAdmin, prefix: str) -> None:
    assert admin.ctl is not None, "restarting the broker needs rabbitmqctl"
    admin.ctl(["stop_app"])
    time.sleep(2)  # both sides find no broker for a while and keep retrying
    admin.ctl(["start_app"])


def _cut_connections(admin: BrokerAdmin, prefix: str) -> None:
    assert admin.close_connections(f"fedmq {prefix} ") >= 3  # the coordinator and both workers


@pytest.mark.parametrize("fault", [_restart_broker, _cut_connections], ids=["broker-restart", "connections-cut"])
def test_a_run_survives_the_fault_and_ends_where_an_uninterrupted_one_does(
        fault: Callable[[BrokerAdmin, str], None], rabbit_settings: BrokerSettings,
        rabbitmq_admin: BrokerAdmin, pause: Path, tmp_path: Path) -> None:
    # Given an uninterrupted run of eight rounds
    common = ["--workers", "w0,w1", "--rounds", "8", "--seed", "3"]
    straight_log, faulty_log, metrics = tmp_path / "a.log", tmp_path / "b.log", tmp_path / "b.jsonl"
    _finished(_run_train(rabbit_settings, straight_log, *common, "--job", "straight",
                         "--checkpoint-dir", str(tmp_path / "a")), straight_log)
    # When the same run meets the fault after its second round, its workers held mid-training
    faulty = _run_train(rabbit_settings, faulty_log, *common, "--job", "faulty", "--checkpoint-dir",
                        str(tmp_path / "b"), "--metrics-out", str(metrics))
    _wait_until(lambda: len(_lines(metrics)) >= 2, "round 2 to end")
    pause.touch()
    fault(rabbitmq_admin, rabbit_settings.topology.prefix)
    pause.unlink()
    # Then it completes, having reconnected, with every round's replies counted once
    _finished(faulty, faulty_log)
    assert "reconnected to RabbitMQ" in faulty_log.read_text()
    assert [r["replies"] for r in _lines(metrics)] == [2] * 8
    # And its final weights equal the uninterrupted run's: no update was lost or counted twice
    straight, after = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    assert straight is not None and after is not None and after.round == 8
    assert all(torch.allclose(after.weights[k], straight.weights[k], atol=1e-6) for k in straight.weights)


@pytest.fixture
def short_consumer_timeout(rabbitmq_admin: BrokerAdmin) -> Iterator[None]:
    """RabbitMQ's consumer_timeout at 1.5 s, checked every 0.5 s, for channels opened meanwhile."""
    ctl = rabbitmq_admin.ctl
    assert ctl is not None, "changing consumer_timeout needs rabbitmqctl"
    before = {key: ctl(["eval", f"application:get_env(rabbit, {key})."]).strip()
              for key in ("consumer_timeout", "channel_tick_interval")}
    ctl(["eval", "application:set_env(rabbit, channel_tick_interval, 500), "
                 "application:set_env(rabbit, consumer_timeout, 1500)."])
    yield
    for key, value in before.items():
        if value.startswith("{ok,"):
            ctl(["eval", f"application:set_env(rabbit, {key}, {value[4:-1]})."])
        else:
            ctl(["eval", f"application:unset_env(rabbit, {key})."])


def test_training_past_consumer_timeout_is_answered_once(
        rabbit_settings: BrokerSettings, start_workers: StartWorkers, tmp_path: Path,
        short_consumer_timeout: None, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a worker whose training (3 s) outlasts the broker's consumer_timeout (1.5 s)
    _sleepy(monkeypatch, 3)
    start_workers(TASK, ["slow"])
    monkeypatch.delenv(SLEEP_ENV)
    metrics, log = tmp_path / "m.jsonl", tmp_path / "train.log"
    # When two rounds run
    _finished(_run_train(rabbit_settings, log, "--workers", "slow", "--rounds", "2",
                         "--metrics-out", str(metrics)), log)
    # Then both rounds got the worker's reply, though RabbitMQ took the task back mid-training
    assert [r["replies"] for r in _lines(metrics)] == [1, 1]
    worker_log = (tmp_path / "worker-slow.log").read_text()
    assert "closed the channel" in worker_log, worker_log
    # And the task it handed out again was acknowledged as answered, not trained a second time
    assert "was answered already; acked" in worker_log, worker_log
    assert worker_log.count(STARTED) == 2, worker_log
