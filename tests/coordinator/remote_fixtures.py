"""A Federation on each broker: the in-process memory broker, and a real RabbitMQ.

tests/coordinator/conftest.py imports them, so a test there that takes `fed` runs on both. The RabbitMQ case asks for `rabbit_settings`
(a fresh prefix, cleaned up after) and carries the `rabbitmq` marker, so `-m "not rabbitmq"`
runs the memory case alone. Spawned workers are WorkerServices in threads, each with its own
connection: over RabbitMQ that is the real transport end to end.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fedmq.broker.settings import BrokerSettings
from fedmq.coordinator import Federation

WAIT_S = 30.0  # an upper bound for any answer, never a timing assertion


@pytest.fixture(params=["memory", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def broker_settings(request: pytest.FixtureRequest) -> BrokerSettings:
    if request.param == "memory":
        return BrokerSettings()
    settings: BrokerSettings = request.getfixturevalue("rabbit_settings")
    return settings


@pytest.fixture
def fed(broker_settings: BrokerSettings) -> Iterator[Federation]:
    with Federation(broker_settings, timeout_s=WAIT_S) as federation:
        yield federation
