"""TLS end to end: a TLS-only RabbitMQ that demands client certificates, and a PKI made here."""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedmq.broker.rabbitmq import RabbitBroker
from fedmq.broker.settings import BrokerSettings
from fedmq.broker.topology import Topology
from fedmq.coordinator import processes
from fedmq.protocol.errors import BrokerError, BrokerUnreachable
from tests.coordinator.conftest import ROOT, fedmq
from tests.security.certs import Pki, make_pki
from tests.security.tls_broker import tls_broker

pytestmark = pytest.mark.rabbitmq


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Pki]]:
    with tls_broker(tmp_path_factory.mktemp("tls")) as started:
        yield started


def _tls_args(pki: Pki) -> list[str]:
    return ["--tls-ca", str(pki.ca), "--tls-cert", str(pki.client_cert), "--tls-key", str(pki.client_key)]


def _settings(url: str, pki: Pki) -> BrokerSettings:
    return BrokerSettings(url=url, topology=Topology("tls"), tls_ca=pki.ca, tls_cert=pki.client_cert,
                          tls_key=pki.client_key, connect_timeout_s=10, reconnect_for_s=5)


def test_a_federation_trains_over_amqps_with_client_certificates(tls: tuple[str, Pki], tmp_path: Path) -> None:
    # Given two workers connected over amqps://, verifying the broker and presenting a certificate
    url, pki = tls
    common = ["--broker", url, "--prefix", "tls-run", *_tls_args(pki)]
    workers = [processes.start(processes.worker_args(name, "toy", i, 2, *common), cwd=ROOT,
                               log=tmp_path / f"{name}.log")
               for i, name in enumerate(["bob", "alice"])]
    try:
        # When the coordinator runs two rounds over the same TLS listener
        done = subprocess.run(fedmq("train", "--task", "toy", "--workers", "bob,alice", "--rounds", "2",
                                    "--batch-size", "2", *common), cwd=ROOT, capture_output=True, text=True,
                              timeout=180)
    finally:
        for worker in workers:
            worker.terminate()
            worker.wait(timeout=30)
    # Then the run completes
    assert done.returncode == 0, done.stderr + (tmp_path / "bob.log").read_text()


def test_without_a_client_certificate_the_broker_refuses(tls: tuple[str, Pki]) -> None:
    url, pki = tls
    settings = dataclasses.replace(_settings(url, pki), tls_cert=None, tls_key=None)
    with pytest.raises(BrokerUnreachable):
        RabbitBroker(settings)


def test_a_broker_certificate_from_another_ca_is_refused(tls: tuple[str, Pki], tmp_path: Path) -> None:
    # Given a CA of our own that never signed the broker's certificate
    url, pki = tls
    stranger = make_pki(tmp_path / "other", ["localhost"])
    # When connecting while trusting only that CA; then the broker is not believed
    with pytest.raises(BrokerUnreachable):
        RabbitBroker(dataclasses.replace(_settings(url, pki), tls_ca=stranger.ca))


def test_with_the_right_pki_a_connection_opens_and_carries_a_message(tls: tuple[str, Pki]) -> None:
    url, pki = tls
    with RabbitBroker(_settings(url, pki)) as worker, RabbitBroker(_settings(url, pki)) as coordinator:
        worker.consume_tasks("alice")
        coordinator.publish_task("alice", b"over tls")
        delivery = worker.receive(timeout=10)
        assert delivery is not None and delivery.body() == b"over tls"


def test_tls_files_with_a_plain_amqp_url_are_a_usage_error(tmp_path: Path) -> None:
    pki = make_pki(tmp_path, ["localhost"])
    with pytest.raises(BrokerError, match="amqps://"):
        RabbitBroker(BrokerSettings(url="amqp://guest:guest@127.0.0.1:1/", tls_ca=pki.ca))
