"""The dead-letter queue (issue 8, point 16): bounded in letters and bytes with the oldest
dropped, and closed to provisioned workers, who could otherwise flood it to push out the
evidence of others' failures."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pika
import pika.exceptions as px
import pytest

from fedmq.broker.rabbitmq import RabbitBroker
from fedmq.broker.settings import BrokerSettings
from fedmq.broker.topology import Topology
from fedmq.protocol.messages import Reply
from tests.broker.live_worker import dead_letters, live_worker, reply_of, train_task
from tests.security.conftest import Federation


@pytest.fixture
def channel_as_alice(federation: Federation) -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
    connection = pika.BlockingConnection(pika.URLParameters(federation.alice.url))
    channel = connection.channel()
    channel.confirm_delivery()
    yield channel
    connection.close()


def test_a_provisioned_worker_cannot_publish_to_the_dead_letter_exchange(
        federation: Federation, channel_as_alice: object) -> None:
    # When alice publishes straight to the dead-letter exchange
    with pytest.raises(px.ChannelClosedByBroker) as refused:
        channel_as_alice.basic_publish(f"{federation.alice.prefix}.dlx", "", b"flood")  # type: ignore[attr-defined]
    # Then the broker refuses it
    assert refused.value.reply_code == 403 and "ACCESS_REFUSED" in refused.value.reply_text


def test_a_flood_of_bad_tasks_leaves_the_newest_dead_letters_and_the_worker_serving(
        rabbit_settings: BrokerSettings) -> None:
    # Given a dead-letter queue bounded to 3 letters, and a worker serving
    topology = Topology(rabbit_settings.topology.prefix, dead_letter_max_length=3)
    settings = replace(rabbit_settings, topology=topology)
    with RabbitBroker(settings) as coordinator:
        coordinator.declare_worker("w")
        coordinator.consume_replies("job", ["w"])
        with live_worker(settings, "w") as worker:
            # When 6 undecodable tasks come, then a good one
            for index in range(6):
                coordinator.publish_task("w", b"garbage %d" % index)
            coordinator.publish_task("w", train_task("job", "t-good"))
            reply = reply_of(coordinator)
            assert worker.alive()
        # Then the good task is answered, and the dead letters hold the newest 3, oldest first
        letters = dead_letters(coordinator, 3)
    assert isinstance(reply, Reply) and reply.task_id == "t-good"
    assert [letter.body for letter in letters] == [b"garbage 3", b"garbage 4", b"garbage 5"]


def test_the_dead_letters_are_bounded_in_bytes(rabbit_settings: BrokerSettings) -> None:
    # Given a dead-letter queue bounded to 2500 bytes
    settings = replace(rabbit_settings, topology=Topology(rabbit_settings.topology.prefix,
                                                          dead_letter_max_bytes=2500))
    with RabbitBroker(settings) as broker:
        broker.consume_tasks("w")
        # When five 1000-byte tasks are dead-lettered
        for index in range(5):
            broker.publish_task("w", bytes([index]) * 1000)
            delivery = broker.receive(timeout=30)
            assert delivery is not None
            broker.dead_letter(delivery, f"bad {index}")
        # Then only the newest two remain
        letters = dead_letters(broker, 2)
    assert [letter.reason for letter in letters] == ["bad 3", "bad 4"]
