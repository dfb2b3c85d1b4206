"""`fedmq broker provision` without the management plugin (issue 8, point 21): the definitions
file it writes is imported as is by `rabbitmqctl import_definitions`, which reads it as the
broker's user, while the credentials files stay readable by their owner only."""

from __future__ import annotations

import shutil
import stat
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from fedmq.broker.provision import load_credentials
from fedmq.broker.rabbitmq import RabbitBroker
from fedmq.broker.settings import BrokerSettings
from fedmq.broker.topology import Topology
from fedmq.coordinator.cli import main
from tests.conftest import BrokerAdmin


def test_rabbitmqctl_imports_the_definitions_file_as_written(rabbitmq_url: str, rabbitmq_admin: BrokerAdmin) -> None:
    if rabbitmq_admin.ctl is None or urlsplit(rabbitmq_url).hostname not in ("127.0.0.1", "localhost") \
            or not shutil.which("rabbitmqctl"):
        pytest.skip("needs rabbitmqctl on the broker's machine (this one)")
    suffix = uuid.uuid4().hex[:8]
    alice, coordinator, vhost = f"alice-{suffix}", f"coord-{suffix}", f"fedmq-import-{suffix}"
    base = Path(tempfile.mkdtemp(prefix="fedmq-import-"))
    base.chmod(0o755)  # like a home directory others may enter
    out = base / "creds"
    try:
        # Given definitions written by provision, without --apply
        parts = urlsplit(rabbitmq_url)
        assert main(["broker", "provision", "--workers", alice, "--coordinator", coordinator, "--vhost", vhost,
                     "--prefix", f"p{suffix}", "--out", str(out),
                     "--endpoint", f"amqp://{parts.hostname}:{parts.port}"]) == 0
        # When the operator imports that very file with rabbitmqctl (it runs as the broker's user)
        rabbitmq_admin.ctl(["import_definitions", str(out / "definitions.json")])
        for _ in range(100):  # rabbitmqctl imports asynchronously
            if vhost in rabbitmq_admin.ctl(["-q", "list_vhosts", "--no-table-headers"]).split():
                break
            time.sleep(0.1)
        # Then alice logs in with her credentials file and finds her task queue
        credentials = load_credentials(out / f"{alice}.json")
        settings = BrokerSettings(url=credentials.url, topology=Topology(credentials.prefix))
        with RabbitBroker(settings) as broker:
            assert broker.has_worker(alice)
        # And her credentials file stays hers alone
        assert stat.S_IMODE((out / f"{alice}.json").stat().st_mode) == 0o600
    finally:
        for listing, name, delete in [("list_users", alice, "delete_user"), ("list_users", coordinator, "delete_user"),
                                      ("list_vhosts", vhost, "delete_vhost")]:
            if _exists(rabbitmq_admin, listing, name):
                rabbitmq_admin.ctl([delete, name])
        shutil.rmtree(base)


def _exists(admin: BrokerAdmin, listing: str, name: str) -> bool:
    assert admin.ctl is not None
    return name in admin.ctl(["-q", listing, "--no-table-headers"]).split()
