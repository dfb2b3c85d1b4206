"""`fedmq train` with DP-FedAvg over a real RabbitMQ, workers as `fedmq worker` processes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fedmq.broker.rabbitmq import RabbitBroker
from fedmq.broker.settings import BrokerSettings
from fedmq.coordinator.cli import main
from fedmq.coordinator.metrics import read_metrics
from fedmq.coordinator.privacy.accountant import epsilon_for
from tests.coordinator.conftest import StartWorkers, broker_args

WORKERS = ["dp0", "dp1", "dp2"]


def test_dp_fedavgm_with_adaptive_clipping_trains_digits_through_rabbitmq(
        rabbit_settings: BrokerSettings, start_workers: StartWorkers, tmp_path: Path) -> None:
    # Given three digits worker processes on the broker
    start_workers("digits", WORKERS)
    with RabbitBroker(rabbit_settings) as broker:
        deadline = time.monotonic() + 120
        while not all(broker.has_worker(w) for w in WORKERS) and time.monotonic() < deadline:
            time.sleep(0.5)
    # When the coordinator trains three rounds of DP FedAvgM, two workers sampled a round,
    # Z = 0.5 with adaptive clipping from C = 0.1 (count noise 0.3: with 0.5 the clip shrank
    # over two rounds in one CI run in ~500, on noise alone; with 0.3 that takes a 4.8-sigma draw)
    out = tmp_path / "dp.jsonl"
    code = main(["train", *broker_args(rabbit_settings), "--task", "digits", "--workers", ",".join(WORKERS),
                 "--rounds", "3", "--lr", "0.1", "--job", "dp-rabbitmq", "--strategy", "fedavgm",
                 "--sample", "2", "--dp-noise-multiplier", "0.5", "--clip", "0.1", "--dp-adaptive-clip",
                 "--dp-clip-count-std", "0.3", "--metrics-out", str(out)])
    # Then it exits 0; each round two workers contributed, epsilon is the accountant's for q = 2/3,
    # the clip grew (every digits update is far above 0.1), and no train_loss left a worker
    lines = read_metrics(out)
    assert code == 0 and [line["round"] for line in lines] == [1, 2, 3]
    dp = [line["strategy"] for line in lines]
    for round_, metrics in enumerate(dp, start=1):
        assert isinstance(metrics, dict) and metrics["dp_contributors"] == 2
        assert metrics["dp_epsilon"] == pytest.approx(epsilon_for(2 / 3, 0.5, round_, 1e-5), abs=1e-6)
    assert dp[2]["dp_clip"] > dp[0]["dp_clip"] == 0.1  # type: ignore[index, operator]
    assert all(line["train_loss"] is None for line in lines)
