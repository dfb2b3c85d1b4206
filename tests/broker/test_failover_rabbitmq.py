"""Failover between broker addresses, against the real broker: each "node" is a TCP relay to it
(tests.broker.test_rabbitmq.Proxy) that a test can cut, as a node's death would cut it."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from fedmq.broker.rabbitmq import RabbitBroker
from fedmq.broker.settings import BrokerSettings
from fedmq.protocol.errors import BrokerError, BrokerUnreachable
from tests.broker.test_rabbitmq import Proxy, received


def _cluster_url(settings: BrokerSettings, ports: list[int]) -> str:
    """The test broker's URL with its host replaced by a list of local ports."""
    parts = urlsplit(settings.url)
    login = f"{parts.username}:{parts.password}@" if parts.username else ""
    hosts = ",".join(f"127.0.0.1:{port}" for port in ports)
    return parts._replace(netloc=f"{login}{hosts}").geturl()


@pytest.fixture
def nodes(rabbit_settings: BrokerSettings) -> Iterator[list[Proxy]]:
    parts = urlsplit(rabbit_settings.url)
    relays = [Proxy(parts.hostname or "127.0.0.1", parts.port or 5672) for _ in range(2)]
    yield relays
    for relay in relays:
        relay.cut()


def test_a_dead_first_address_is_skipped(rabbit_settings: BrokerSettings) -> None:
    # Given a list whose first address refuses connections (port 1) and whose second is live
    parts = urlsplit(rabbit_settings.url)
    url = _cluster_url(rabbit_settings, [1, parts.port or 5672])
    # When a worker connects with it; then it lands on the live one and carries a task
    with RabbitBroker(dataclasses.replace(rabbit_settings, url=url)) as alice, \
            RabbitBroker(rabbit_settings) as coordinator:
        alice.consume_tasks("alice")
        coordinator.publish_task("alice", b"task")
        assert received(alice).body() == b"task"
        assert alice.reconnects == 0


def test_a_lost_node_fails_over_to_the_next_and_the_unacked_task_comes_again(
    rabbit_settings: BrokerSettings, nodes: list[Proxy]
) -> None:
    # Given a worker connected through the first of two nodes, holding an unacknowledged task
    url = _cluster_url(rabbit_settings, [node.port for node in nodes])
    with RabbitBroker(dataclasses.replace(rabbit_settings, url=url, reconnect_for_s=20)) as alice, \
            RabbitBroker(rabbit_settings) as coordinator:
        alice.consume_tasks("alice")
        coordinator.publish_task("alice", b"first")
        first = received(alice)
        # When the first node dies for good
        nodes[0].cut()
        alice.ack(first)  # from the lost connection: a harmless no-op
        # Then the worker reconnects through the second node, re-declares, resumes consuming,
        # and the task it never acknowledged is delivered again
        again = received(alice, timeout=20)
        assert (again.body(), again.redelivered) == (b"first", True)
        alice.ack(again)
        coordinator.publish_task("alice", b"second")
        assert received(alice).body() == b"second"
        assert alice.reconnects == 1


def test_when_every_node_is_gone_the_error_names_each(
    rabbit_settings: BrokerSettings, nodes: list[Proxy]
) -> None:
    # Given a worker connected through two nodes, allowed one second to reconnect
    url = _cluster_url(rabbit_settings, [node.port for node in nodes])
    with RabbitBroker(dataclasses.replace(rabbit_settings, url=url, reconnect_for_s=1)) as alice:
        alice.consume_tasks("alice")
        # When both die
        for node in nodes:
            node.cut()
        # Then the next operation gives up in one line naming both nodes, without the password
        with pytest.raises(BrokerError, match="could not reconnect within 1s") as caught:
            alice.receive(timeout=5)
    message = str(caught.value)
    assert "\n" not in message
    assert all(f"127.0.0.1:{node.port}: connection refused" in message for node in nodes), message
    password = urlsplit(rabbit_settings.url).password
    assert password is None or f":{password}@" not in message


def test_no_address_answering_is_one_line_naming_each(rabbit_settings: BrokerSettings) -> None:
    # Given two addresses where nothing listens; when a broker is opened there
    url = _cluster_url(dataclasses.replace(rabbit_settings, url="amqp://guest:secret@x/"), [1, 2])
    with pytest.raises(BrokerUnreachable) as caught:
        RabbitBroker(dataclasses.replace(rabbit_settings, url=url))
    # Then one line names the list without the password, and what failed at each address
    message = str(caught.value)
    assert "\n" not in message and "secret" not in message
    assert "amqp://guest:***@127.0.0.1:1,127.0.0.1:2/" in message
    assert "127.0.0.1:1: connection refused; 127.0.0.1:2: connection refused" in message
