"""End to end over a real RabbitMQ: `fedmq train` and `fedmq worker` as separate processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import torch

from fedmq.broker.rabbitmq import RabbitBroker
from fedmq.broker.settings import BrokerSettings
from fedmq.coordinator.checkpoint import load_checkpoint
from fedmq.protocol.messages import TrainConfig, TrainTask, encode_message
from tests.coordinator.conftest import ROOT, StartWorkers, broker_args, fedmq


def _train(settings: BrokerSettings, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(fedmq("train", *broker_args(settings), "--log-level", "warning", *args),
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_three_digits_workers_reach_90_percent(rabbit_settings: BrokerSettings, start_workers: StartWorkers,
                                              tmp_path: Path) -> None:
    # Given three worker processes holding a third of digits each
    start_workers("digits", ["w0", "w1", "w2"])
    # When the coordinator runs ten rounds over RabbitMQ
    out = tmp_path / "digits.jsonl"
    done = _train(rabbit_settings, "--task", "digits", "--workers", "w0,w1,w2", "--rounds", "10",
                  "--epochs", "2", "--metrics-out", str(out))
    # Then it exits 0 and the held-out accuracy reaches 0.90
    assert done.returncode == 0, done.stderr
    rounds = _lines(out)
    assert len(rounds) == 10 and all(r["replies"] == 3 for r in rounds)
    assert float(rounds[-1]["eval_accuracy"]) >= 0.90  # type: ignore[arg-type]


def test_toy_loss_falls_over_rabbitmq(rabbit_settings: BrokerSettings, start_workers: StartWorkers,
                                      tmp_path: Path) -> None:
    # Given bob and alice holding the tutorial's halves
    start_workers("toy", ["bob", "alice"])
    out = tmp_path / "toy.jsonl"
    # When five rounds run
    done = _train(rabbit_settings, "--task", "toy", "--workers", "bob,alice", "--rounds", "5",
                  "--batch-size", "2", "--metrics-out", str(out))
    # Then the loss falls round after round
    assert done.returncode == 0, done.stderr
    losses = [float(r["eval_loss"]) for r in _lines(out)]  # type: ignore[arg-type]
    assert all(later < earlier for earlier, later in zip(losses, losses[1:])), losses


def test_killed_coordinator_resumes_to_the_uninterrupted_result(
        rabbit_settings: BrokerSettings, start_workers: StartWorkers, tmp_path: Path) -> None:
    # Given two workers and an uninterrupted six-round run
    start_workers("digits", ["w0", "w1"])
    common = ["--task", "digits", "--workers", "w0,w1", "--rounds", "6", "--seed", "5"]
    assert _train(rabbit_settings, *common, "--job", "straight", "--checkpoint-dir", str(tmp_path / "a")).returncode == 0
    # When another run is killed with SIGKILL after its second round and resumed
    metrics = tmp_path / "b.jsonl"
    killed = subprocess.Popen(fedmq("train", *broker_args(rabbit_settings), *common, "--job", "resumed",
                                    "--checkpoint-dir", str(tmp_path / "b"), "--metrics-out", str(metrics),
                                    "--log-level", "warning"), cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):
        assert killed.poll() is None, "the run ended before it could be killed"
        time.sleep(0.01)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    resumed = _train(rabbit_settings, *common, "--job", "resumed", "--checkpoint-dir", str(tmp_path / "b"),
                     "--resume", "--metrics-out", str(metrics))
    # Then it finishes, and its final weights equal the uninterrupted run's
    assert resumed.returncode == 0, resumed.stderr
    straight, after = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    assert straight is not None and after is not None and after.round == 6
    assert all(torch.allclose(after.weights[k], straight.weights[k], atol=1e-5) for k in straight.weights)
    assert [r["round"] for r in _lines(metrics)][-1] == 6


def test_a_malformed_task_is_dead_lettered_and_the_worker_serves_on(
        rabbit_settings: BrokerSettings, start_workers: StartWorkers) -> None:
    # Given a running worker
    start_workers("digits", ["w0"])
    with RabbitBroker(rabbit_settings) as broker:
        _wait_for(broker, "w0")
        # When it is sent garbage, then a task whose weights do not fit its model
        broker.publish_task("w0", b"\xc1 not msgpack")
        bad_weights = {"0.weight": torch.zeros(3, 3)}
        broker.publish_task("w0", encode_message(TrainTask(job="nojob", round=1, task_id="t", weights=bad_weights, config=TrainConfig())))
        letters = [broker.take_dead_letter(timeout=30) for _ in range(2)]
    # Then both land in the dead-letter queue with their reasons
    assert all(letter is not None for letter in letters)
    reasons = " | ".join(letter.reason for letter in letters if letter)
    assert "msgpack" in reasons and "0.weight" in reasons, reasons
    # And the worker still trains
    done = _train(rabbit_settings, "--task", "digits", "--workers", "w0", "--rounds", "1")
    assert done.returncode == 0, done.stderr


def test_training_longer_than_two_heartbeats_keeps_the_connection(
        rabbit_settings: BrokerSettings, start_workers: StartWorkers, tmp_path: Path) -> None:
    # Given a worker whose local training takes 3.5 s on a connection with a 1 s heartbeat
    url = rabbit_settings.url + ("&" if "?" in rabbit_settings.url else "?") + "heartbeat=1"
    start_workers("tests.coordinator.slow_task", ["slow"], url, "--log-level", "info")
    # When a round runs
    done = _train(rabbit_settings, "--task", "tests.coordinator.slow_task", "--workers", "slow", "--rounds", "2")
    # Then it succeeds and the worker never had to reconnect
    assert done.returncode == 0, done.stderr
    log = (tmp_path / "worker-slow.log").read_text()
    assert "round 2: train" in log, log
    assert "reconnect" not in log.lower(), log


def test_sigterm_lets_the_task_in_hand_finish(rabbit_settings: BrokerSettings, start_workers: StartWorkers,
                                              tmp_path: Path) -> None:
    # Given a worker in the middle of a long local training
    (worker,) = start_workers("tests.coordinator.slow_task", ["slow"], None, "--log-level", "info")
    train = subprocess.Popen(fedmq("train", *broker_args(rabbit_settings), "--task", "tests.coordinator.slow_task",
                                   "--workers", "slow", "--rounds", "1", "--round-timeout", "8"),
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "worker-slow.log"
    while "training starts" not in log.read_text():
        assert train.poll() is None, "the coordinator ended before training started"
        time.sleep(0.05)
    # When the worker is sent SIGTERM
    worker.send_signal(signal.SIGTERM)
    # Then it finishes that task, its reply completes the round, and it exits cleanly
    # (the evaluation that follows finds no worker and gives up at the round timeout)
    assert worker.wait(timeout=60) == 0
    assert train.wait(timeout=60) == 0, train.stderr.read() if train.stderr else ""
    assert "stopping after the task in hand" in log.read_text()


def _wait_for(broker: RabbitBroker, worker: str) -> None:
    deadline = time.monotonic() + 60
    while not broker.has_worker(worker):
        assert time.monotonic() < deadline, f"worker {worker} never declared its queue"
        time.sleep(0.1)


def test_status_shows_running_workers_and_a_finished_round(
        rabbit_settings: BrokerSettings, start_workers: StartWorkers) -> None:
    # Given two worker processes that have answered a one-round job
    start_workers("digits", ["w0", "w1"])
    assert _train(rabbit_settings, "--task", "digits", "--workers", "w0,w1", "--rounds", "1",
                  "--job", "seen").returncode == 0
    # When `fedmq status` listens long enough to hear a heartbeat (workers beat every 5 s)
    done = subprocess.run(fedmq("status", *broker_args(rabbit_settings), "--listen", "7", "--workers", "w0,w1"),
                          cwd=ROOT, capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"})
    # Then both workers show as online, with the job and round they last answered
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if " w0 " in line or " w1 " in line]
    assert len(rows) == 2 and all("yes" in row and "seen" in row for row in rows), done.stdout
