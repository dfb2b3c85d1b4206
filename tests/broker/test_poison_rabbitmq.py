"""Poison messages (issue 8, point 10), on the real RabbitMQ: a message that kills its consumer
each time it is handled is dead-lettered after `max_deliveries`, instead of being retried forever;
the next good message is delivered as usual.

Quorum queues count deliveries on the broker, across consumers that crash and restart; classic
queues are counted by the consuming process, across lost connections.
"""

from __future__ import annotations

from dataclasses import replace

from fedmq.broker.poison import DELIVERY_COUNT, Redeliveries
from fedmq.broker.rabbitmq import RabbitBroker
from fedmq.broker.settings import BrokerSettings
from fedmq.broker.topology import QueueType, Topology
from tests.broker.live_worker import WAIT_S
from tests.conftest import BrokerAdmin

LIMIT = 2


def test_a_task_that_crashes_its_workers_is_dead_lettered_on_a_quorum_queue(
        rabbit_settings: BrokerSettings) -> None:
    settings = replace(rabbit_settings, topology=Topology(rabbit_settings.topology.prefix, QueueType.QUORUM),
                       max_deliveries=LIMIT)
    with RabbitBroker(settings) as coordinator:
        coordinator.declare_worker("w")
        coordinator.publish_task("w", b"poison")
        # Given a task that kills each worker that takes it (it closes without acking), LIMIT times
        for attempt in range(1, LIMIT + 1):
            with RabbitBroker(settings) as crashing:
                crashing.consume_tasks("w")
                delivery = crashing.receive(timeout=WAIT_S)
                assert delivery is not None and delivery.body() == b"poison"
                assert delivery.attempts == attempt
        # When a restarted worker consumes again, and a good task follows
        coordinator.publish_task("w", b"good")
        with RabbitBroker(settings) as restarted:
            restarted.consume_tasks("w")
            delivery = restarted.receive(timeout=WAIT_S)
            # Then it gets the good task only
            assert delivery is not None and delivery.body() == b"good"
            restarted.ack(delivery)
        # And the poison is in the dead letters, whole, saying why
        letter = coordinator.take_dead_letter(timeout=WAIT_S)
    assert letter is not None and letter.body == b"poison"
    assert f"delivered {LIMIT + 1} times" in letter.reason


def test_a_task_whose_handling_keeps_losing_the_connection_is_dead_lettered_on_a_classic_queue(
        rabbit_settings: BrokerSettings, rabbitmq_admin: BrokerAdmin) -> None:
    settings = replace(rabbit_settings, max_deliveries=LIMIT)
    worker = RabbitBroker(settings)
    with RabbitBroker(settings) as coordinator, worker:
        worker.consume_tasks("w")
        coordinator.publish_task("w", b"poison")
        # Given a task during whose handling the connection is lost, each time (LIMIT times)
        for attempt in range(1, LIMIT + 1):
            delivery = worker.receive(timeout=WAIT_S)
            assert delivery is not None and delivery.body() == b"poison"
            assert delivery.attempts == attempt
            assert rabbitmq_admin.close_connections(settings.topology.prefix) >= 1
        # When the worker, reconnected, takes the next delivery, a good task published after
        coordinator.publish_task("w", b"good")
        delivery = worker.receive(timeout=WAIT_S)
        # Then it is the good task, and the poison went to the dead letters
        assert delivery is not None and delivery.body() == b"good"
        worker.ack(delivery)
        letter = coordinator.take_dead_letter(timeout=WAIT_S)
        assert worker.reconnects == LIMIT
    assert letter is not None and letter.body == b"poison" and "poison message" in letter.reason


def test_a_forged_delivery_count_does_not_hide_redeliveries_on_a_classic_queue() -> None:
    # Given a publisher that sets x-delivery-count: 0 on its message, which keeps coming back
    classic, quorum = Redeliveries(trust_count=False), Redeliveries(trust_count=True)
    forged = {DELIVERY_COUNT: 0}
    # Then a classic queue's consumer counts the redeliveries itself, ignoring the header
    assert [classic.attempts("q", forged, True, lambda: b"m") for _ in range(3)] == [2, 3, 4]
    # And on a quorum queue, where the broker sets it, the header is the count
    assert quorum.attempts("q", {DELIVERY_COUNT: 4}, True, lambda: b"m") == 5
