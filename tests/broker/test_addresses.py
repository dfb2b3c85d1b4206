"""Several broker addresses in one URL (broker.addresses), and how the CLI and provisioning take them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedmq.broker.addresses import broker_addresses, join_broker_urls, split_url
from fedmq.broker.provision import load_credentials, login_url, provision, write
from fedmq.broker.rabbit_connection import redact
from fedmq.broker.rabbitmq_params import connection_user
from fedmq.broker.topology import QueueType, Topology
from fedmq.coordinator.cli import _parser
from fedmq.coordinator.cli_broker import broker_settings


def test_a_url_with_several_hosts_becomes_one_url_per_host_in_order() -> None:
    # Given a cluster's three nodes in one URL, sharing login, vhost and options
    url = "amqp://alice:s3cr%40t@h1,h2:5673,[::1]:5674/fedmq?heartbeat=10"
    # When it is split into addresses
    addresses = broker_addresses(url)
    # Then each node gets the whole URL with only its host, in the order given
    assert addresses == ("amqp://alice:s3cr%40t@h1/fedmq?heartbeat=10",
                         "amqp://alice:s3cr%40t@h2:5673/fedmq?heartbeat=10",
                         "amqp://alice:s3cr%40t@[::1]:5674/fedmq?heartbeat=10")


@pytest.mark.parametrize("url", ["amqp://guest:guest@127.0.0.1:5672/", "amqp://host", "memory://"])
def test_a_url_with_one_host_is_left_as_it_is(url: str) -> None:
    assert broker_addresses(url) == (url,)


@pytest.mark.parametrize("url", ["amqp://u:p@h1,,h3/v", "amqp://u:p@h1,/v", "amqp://u:p@,h2/v"])
def test_an_empty_host_in_the_list_is_refused_without_showing_the_password(url: str) -> None:
    with pytest.raises(ValueError, match="empty host") as caught:
        broker_addresses(url)
    assert ":p@" not in str(caught.value) and "u:***@" in str(caught.value)


def test_repeated_broker_urls_join_into_one_list_without_duplicates() -> None:
    # Given --broker once per node, one of them already a list
    urls = ["amqp://u:p@h1:5672/v", "amqp://u:p@h2:5672,h1:5672/v", "amqp://u:p@h3:5672/v"]
    # When they are joined; then the hosts keep their first order and the rest is shared
    assert join_broker_urls(urls) == "amqp://u:p@h1:5672,h2:5672,h3:5672/v"


@pytest.mark.parametrize("other", ["amqp://u:OTHER@h2/v", "amqp://u:p@h2/other", "amqps://u:p@h2/v",
                                   "amqp://u:p@h2/v?heartbeat=5", "memory://"])
def test_repeated_broker_urls_must_differ_only_in_their_hosts(other: str) -> None:
    with pytest.raises(ValueError, match="must"):
        join_broker_urls(["amqp://u:p@h1/v", other])


def test_the_cli_joins_a_repeated_broker_flag() -> None:
    # Given `fedmq worker` with --broker once per node
    args = _parser().parse_args(["worker", "--id", "alice", "--task", "digits",
                                 "--broker", "amqp://u:p@h1/v", "--broker", "amqp://u:p@h2/v"])
    # When its settings are built; then they name both nodes in one URL, queues classic
    settings = broker_settings(args)
    assert settings.url == "amqp://u:p@h1,h2/v"
    assert settings.topology.queue_type is QueueType.CLASSIC


def test_the_cli_spells_queue_types_as_before() -> None:
    args = _parser().parse_args(["train", "--task", "digits", "--workers", "a", "--queue-type", "quorum"])
    assert broker_settings(args).topology.queue_type is QueueType.QUORUM
    with pytest.raises(SystemExit):
        _parser().parse_args(["train", "--task", "digits", "--workers", "a", "--queue-type", "stream"])


def test_a_topology_takes_only_a_queue_type_member() -> None:
    with pytest.raises(ValueError, match="QueueType"):
        Topology("p", "quorum")  # type: ignore[arg-type]
    assert Topology("p", QueueType.QUORUM).queue_arguments() == {"x-queue-type": "quorum"}


def test_provisioning_a_cluster_writes_every_node_and_the_queue_type_into_credentials(tmp_path: Path) -> None:
    # Given a federation provisioned for three nodes with quorum queues
    provisioned = provision(["alice"], "coordinator", "fedmq", "fedmq",
                            endpoint="amqp://n1:5672,n2:5672,n3:5672?heartbeat=10",
                            queue_type=QueueType.QUORUM)
    write(tmp_path, provisioned)
    # When alice's credentials file is read back
    alice = load_credentials(tmp_path / "alice.json")
    # Then her URL names the three nodes with her login, the vhost and the options
    assert broker_addresses(alice.url) == tuple(
        f"amqp://alice:{alice.password}@{node}:5672/fedmq?heartbeat=10" for node in ("n1", "n2", "n3"))
    assert connection_user(alice.url) == "alice"
    assert redact(alice.url) == "amqp://alice:***@n1:5672,n2:5672,n3:5672/fedmq?heartbeat=10"
    # And the file says quorum, which a client with --credentials then declares
    assert alice.queue_type is QueueType.QUORUM
    args = _parser().parse_args(["worker", "--id", "alice", "--task", "digits",
                                 "--credentials", str(tmp_path / "alice.json")])
    assert broker_settings(args).topology.queue_type is QueueType.QUORUM


def test_a_credentials_file_without_a_queue_type_means_classic(tmp_path: Path) -> None:
    # Given a credentials file written before the queue type was stored
    provisioned = provision(["alice"], "coordinator", "fedmq", "fedmq")
    data = json.loads(provisioned.credentials[0].to_json())
    del data["queue_type"]
    (tmp_path / "alice.json").write_text(json.dumps(data))
    # When it is read; then its queues are classic, as they were declared
    assert load_credentials(tmp_path / "alice.json").queue_type is QueueType.CLASSIC


def test_an_endpoint_list_with_an_empty_host_is_a_usage_error() -> None:
    with pytest.raises(ValueError, match="--endpoint"):
        login_url("amqp://n1:5672,,n3:5672", "alice", "pw", "fedmq")


def test_split_url_keeps_a_url_without_login() -> None:
    split = split_url("amqps://n1:5671,n2:5671/%2F")
    assert (split.userinfo, split.hosts, split.tail) == ("", ("n1:5671", "n2:5671"), "/%2F")
