"""Helpers of the live fuzz tests: drawing payloads, publishing them raw, measuring a process."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pika
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from fedmq.broker import chunks
from fedmq.broker.settings import BrokerSettings

SCALE = int(os.environ.get("FEDMQ_FUZZ_SCALE", "1"))  # benchmarks/fuzz.py runs longer campaigns
WAIT_S = 120.0 * SCALE
FIGURES = Path(os.environ.get("FEDMQ_FUZZ_FIGURES", "")) if os.environ.get("FEDMQ_FUZZ_FIGURES") else None


def draw(strategy: st.SearchStrategy[object], count: int) -> list[object]:
    """`count` examples of `strategy`, drawn by hypothesis (generation only: nothing to shrink)."""
    drawn: list[object] = []

    @settings(max_examples=count, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(example: object) -> None:
        drawn.append(example)

    collect()
    return drawn


def publish(settings_: BrokerSettings, exchange: str, messages: list[tuple[str, list[chunks.Frame]]]) -> None:
    """Publish (routing key, frames) as a foreign client would: raw pika, confirmed, no user_id."""
    connection = pika.BlockingConnection(pika.URLParameters(settings_.url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for key, frames in messages:
            for frame in frames:
                properties = pika.BasicProperties(delivery_mode=2, headers=frame.headers or None)
                channel.basic_publish(exchange, key, bytes(frame.body), properties)
    finally:
        connection.close()


def count(settings_: BrokerSettings, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(settings_.url))
    try:
        return int(connection.channel().queue_declare(queue, passive=True).method.message_count)
    finally:
        connection.close()


def drain_reasons(settings_: BrokerSettings, queue: str) -> list[str | None]:
    """Take every message of `queue`; the reason header of each (None where it has none)."""
    connection = pika.BlockingConnection(pika.URLParameters(settings_.url))
    reasons: list[str | None] = []
    try:
        channel = connection.channel()
        while True:
            method, properties, _ = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return reasons
            headers = properties.headers or {}
            reason = headers.get("x-fedmq-reason") or headers.get("x-first-death-reason")
            reasons.append(reason.decode() if isinstance(reason, bytes) else reason)
    finally:
        connection.close()


def wait_until(condition: Callable[[], bool], what: str, wait_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + wait_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def report(name: str, **figures: object) -> None:
    """Print the figures (seen with -s) and append them to $FEDMQ_FUZZ_FIGURES when set."""
    line = json.dumps({"fuzz": name, **figures})
    print(line)
    if FIGURES is not None:
        with open(FIGURES, "a") as f:
            f.write(line + "\n")
