"""`fedmq train --strategy X` over a real RabbitMQ with worker processes, for every shipped X."""

from __future__ import annotations

import json
import time
from pathlib import Path

from fedmq.broker.rabbitmq import RabbitBroker
from fedmq.broker.settings import BrokerSettings
from fedmq.coordinator.cli import main
from fedmq.coordinator.strategies import STRATEGIES
from tests.coordinator.conftest import StartWorkers, broker_args

WORKERS = [f"s{i}" for i in range(7)]  # Bulyan with f=1 needs 4f + 3 = 7
OPTIONS = {"fedadam": ["eta=0.01"], "fedyogi": ["eta=0.01"], "fedprox": ["mu=0.1"]}


def test_every_strategy_trains_digits_through_rabbitmq(rabbit_settings: BrokerSettings,
                                                       start_workers: StartWorkers, tmp_path: Path) -> None:
    # Given seven digits worker processes on the broker, all serving
    start_workers("digits", WORKERS)
    with RabbitBroker(rabbit_settings) as broker:
        deadline = time.monotonic() + 180  # seven torch imports on two busy cores
        while not all(broker.has_worker(w) for w in WORKERS) and time.monotonic() < deadline:
            time.sleep(0.5)
    results = {}
    for name in STRATEGIES:
        # When the coordinator runs three rounds with the strategy
        out = tmp_path / f"{name}.jsonl"
        options = [arg for option in OPTIONS.get(name, []) for arg in ("--strategy-option", option)]
        code = main(["train", *broker_args(rabbit_settings), "--task", "digits", "--workers", ",".join(WORKERS),
                     "--rounds", "3", "--lr", "0.1", "--job", f"strategy-{name}", "--strategy", name, *options,
                     "--metrics-out", str(out)])
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        results[name] = (code, [line["eval_accuracy"] for line in lines], lines[-1]["replies"])
    # Then every run exits 0 with seven replies a round, and held-out accuracy rises past chance
    for name, (code, accuracy, replies) in results.items():
        assert code == 0 and replies == 7, (name, code)
        assert accuracy[-1] > max(0.2, accuracy[0] - 0.05), (name, accuracy)
