"""Fuzzing live consumers: thousands of hostile payloads into a running `fedmq worker`'s task queue
and a running `fedmq train`'s reply queues. Each payload must end in the dead-letter queue with a
reason, the process must live on with flat memory, and training must be unaffected.

Figures (payloads, crashes, RSS before and after) are printed; run with -s to see them, or set
$FEDMQ_FUZZ_FIGURES to a file to collect them.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from fedmq.broker import chunks
from fedmq.broker.rabbitmq import RabbitBroker
from fedmq.broker.settings import BrokerSettings
from fedmq.coordinator import processes as processes_module
from fedmq.coordinator.checkpoint import load_checkpoint
from tests.coordinator.conftest import ROOT, broker_args, fedmq
from tests.fuzz import live
from tests.fuzz.payloads import chunk_attacks, payloads

WORKER_PAYLOADS, COORDINATOR_PAYLOADS = 2000 * live.SCALE, 1500 * live.SCALE
CHUNK_ATTACKS, WARM_UP = 150 * live.SCALE, 200
RSS_GROWTH_MIB = 32.0  # allocator noise; a leak of even 100 bytes a payload would pass it
SLEEPY = "tests.coordinator.sleepy_task"


def _messages(key: str, count: int, attacks: int, worker: str) -> list[tuple[str, list[chunks.Frame]]]:
    plain = [(key, [chunks.Frame({}, body)]) for body in live.draw(payloads(worker), count)]
    attacked = live.draw(chunk_attacks(), attacks) if attacks else []
    return plain + [(key, frames) for frames in attacked]  # type: ignore[misc]


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        process.terminate()
    for process in started:
        process.wait(timeout=30)


def _start(processes: list[subprocess.Popen[str]], log: Path, *args: str,
           env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    process = processes_module.start(args, cwd=ROOT, log=log, env={**os.environ, **(env or {})})
    processes.append(process)
    return process


def _flood(settings: BrokerSettings, exchange: str, messages: list[tuple[str, list[chunks.Frame]]],
           expected_letters: int) -> None:
    live.publish(settings, exchange, messages)
    live.wait_until(lambda: live.count(settings, settings.topology.dead_letter_queue) >= expected_letters,
                    f"{expected_letters} dead letters")


def test_a_live_worker_dead_letters_every_hostile_task_and_serves_on(
        rabbit_settings: BrokerSettings, processes: list[subprocess.Popen[str]], tmp_path: Path) -> None:
    # Given a running worker (chunked messages missing pieces expire after 1 s)
    log = tmp_path / "worker.log"
    worker = _start(processes, log, "worker", "--id", "fz", "--task", "toy", *broker_args(rabbit_settings),
                    "--chunk-timeout", "1", "--log-level", "warning")
    with RabbitBroker(rabbit_settings) as broker:
        live.wait_until(lambda: broker.has_worker("fz"), "the worker's queue")
    exchange, dlq = rabbit_settings.topology.task_exchange, rabbit_settings.topology.dead_letter_queue
    _flood(rabbit_settings, exchange, _messages("fz", WARM_UP, 0, "fz"), WARM_UP)
    before = live.rss_mib(worker.pid)
    # When thousands of hostile payloads and chunk attacks arrive on its task queue
    flood = _messages("fz", WORKER_PAYLOADS, CHUNK_ATTACKS, "fz")
    expected = WARM_UP + len(flood)
    _flood(rabbit_settings, exchange, flood, expected)
    after = live.rss_mib(worker.pid)
    crashes = int(worker.poll() is not None) + log.read_text().count("Traceback")
    reasons = live.drain_reasons(rabbit_settings, dlq)
    live.report("worker", payloads=expected, crashes=crashes, rss_before_mib=round(before, 1),
                rss_after_mib=round(after, 1), dead_letters=len(reasons))
    # Then each one was dead-lettered exactly once, with a reason, and the task queue is empty
    assert len(reasons) == expected and all(reasons), [r for r in reasons if not r][:3]
    assert live.count(rabbit_settings, rabbit_settings.topology.task_queue("fz")) == 0
    # And the worker lives on, without a traceback, in the memory it had
    assert crashes == 0, log.read_text()[-3000:]
    assert after - before < RSS_GROWTH_MIB, (before, after)
    # And it still trains
    done = subprocess.run(fedmq("train", "--task", "toy", "--workers", "fz", "--rounds", "1", "--batch-size", "2",
                                *broker_args(rabbit_settings)), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_a_live_coordinator_dead_letters_every_hostile_reply_and_trains_as_if_none_came(
        rabbit_settings: BrokerSettings, processes: list[subprocess.Popen[str]], tmp_path: Path) -> None:
    # Given two workers, and a clean run for reference
    def start_worker(index: int) -> subprocess.Popen[str]:
        return _start(processes, tmp_path / f"w{index}.log", "worker", "--id", f"w{index}", "--task", SLEEPY,
                      "--shard", f"{index}/2", *broker_args(rabbit_settings))

    _w0, w1 = start_worker(0), start_worker(1)
    common = ["train", "--task", SLEEPY, "--workers", "w0,w1", "--rounds", "5", "--seed", "2",
              *broker_args(rabbit_settings), "--chunk-timeout", "1"]
    clean = subprocess.run(fedmq(*common, "--job", "clean", "--checkpoint-dir", str(tmp_path / "a")),
                           cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert clean.returncode == 0, clean.stderr
    # And w1 stopped, so the next run waits in round 1 for as long as the flood takes
    w1.terminate()
    w1.wait(timeout=30)
    # And that run's reply queues already holding a first wave of hostile replies
    with RabbitBroker(rabbit_settings) as broker:
        broker.declare_job("fuzzed", ["w0", "w1"])
    exchange, dlq = rabbit_settings.topology.reply_exchange, rabbit_settings.topology.dead_letter_queue
    warm = _messages("fuzzed.w0", WARM_UP // 2, 0, "w0") + _messages("fuzzed.w1", WARM_UP // 2, 0, "w1")
    live.publish(rabbit_settings, exchange, warm)
    # When the run starts, takes the first wave, then meets thousands more hostile replies
    log = tmp_path / "train.log"
    coordinator = _start(processes, log, *common, "--job", "fuzzed", "--checkpoint-dir", str(tmp_path / "b"))
    live.wait_until(lambda: live.count(rabbit_settings, dlq) >= len(warm), "the first wave to be dead-lettered")
    before = live.rss_mib(coordinator.pid)
    flood = _messages("fuzzed.w0", COORDINATOR_PAYLOADS // 2, CHUNK_ATTACKS // 2, "w0")
    flood += _messages("fuzzed.w1", COORDINATOR_PAYLOADS // 2, CHUNK_ATTACKS // 2, "w1")
    expected = len(warm) + len(flood)
    _flood(rabbit_settings, exchange, flood, expected)
    after = live.rss_mib(coordinator.pid)
    crashes = int(coordinator.poll() is not None) + log.read_text().count("Traceback")
    reasons = live.drain_reasons(rabbit_settings, dlq)
    live.report("coordinator", payloads=expected, crashes=crashes, rss_before_mib=round(before, 1),
                rss_after_mib=round(after, 1), dead_letters=len(reasons))
    # Then each hostile reply was dead-lettered once, with a reason, by a coordinator still running
    assert len(reasons) == expected and all(reasons)
    assert crashes == 0 and after - before < RSS_GROWTH_MIB, (crashes, before, after, log.read_text()[-3000:])
    # And once w1 is back the run completes exactly where the clean run did: nothing hostile counted
    start_worker(1)
    assert coordinator.wait(timeout=180) == 0, log.read_text()[-3000:]
    reference, fuzzed = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    assert reference is not None and fuzzed is not None and fuzzed.round == 5
    # (replies are folded in as they arrive: a different order changes the last float bits)
    assert all(torch.allclose(fuzzed.weights[k], reference.weights[k], atol=1e-6) for k in reference.weights)
