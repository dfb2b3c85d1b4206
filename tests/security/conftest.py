"""A provisioned federation on the session's broker: `fedmq broker provision` applied for real.

Users are global to a RabbitMQ node, so every name carries a random suffix; the users and the
vhost are deleted after the test.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

from fedmq.broker.provision import Credentials, load_credentials
from fedmq.broker.settings import BrokerSettings
from fedmq.broker.topology import Topology
from fedmq.coordinator.cli import main

if TYPE_CHECKING:
    from tests.conftest import BrokerAdmin


@dataclass
class Federation:
    alice: Credentials
    bob: Credentials
    coordinator: Credentials
    directory: Path

    def settings(self, who: Credentials) -> BrokerSettings:
        return BrokerSettings(url=who.url, topology=Topology(who.prefix), connect_timeout_s=10)

    def file(self, who: Credentials) -> Path:
        return self.directory / f"{who.user}.json"


@pytest.fixture
def federation(rabbitmq_url: str, rabbitmq_admin: BrokerAdmin, tmp_path: Path) -> Iterator[Federation]:
    """alice-*, bob-* and coord-* provisioned on a fresh vhost, applied as an operator would."""
    suffix = uuid.uuid4().hex[:8]
    names = [f"alice-{suffix}", f"bob-{suffix}"]
    coordinator, vhost = f"coord-{suffix}", f"fedmq-test-{suffix}"
    parts = urlsplit(rabbitmq_url)
    out = tmp_path / "provisioned"
    args = ["broker", "provision", "--workers", ",".join(names), "--coordinator", coordinator,
            "--vhost", vhost, "--prefix", f"p{suffix}", "--out", str(out),
            "--endpoint", f"amqp://{parts.hostname}:{parts.port}"]
    if rabbitmq_admin.http is not None:  # the management API: exactly what an operator runs
        admin = rabbitmq_admin.http.replace("http://", f"http://{parts.username}:{parts.password}@")
        assert main([*args, "--apply", admin]) == 0
    else:  # no management plugin: the same definitions through rabbitmqctl
        assert main(args) == 0
        rabbitmq_admin.import_definitions(json.loads((out / "definitions.json").read_text()))
    try:
        yield Federation(*(load_credentials(out / f"{name}.json") for name in [*names, coordinator]), out)
    finally:
        rabbitmq_admin.delete_users_and_vhost([*names, coordinator], vhost)
