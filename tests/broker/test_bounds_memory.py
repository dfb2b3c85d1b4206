"""The memory broker keeps RabbitMQ's semantics for issue 8's bounds, so code tested on it runs
unchanged there: refused publishes (point 8), poison messages (10), bounded dead letters (16)."""

from __future__ import annotations

import pytest

from fedmq.broker.memory import MemoryBroker, MemoryHub
from fedmq.broker.topology import Topology
from fedmq.protocol.errors import PublishRejected


def test_a_full_queue_refuses_a_publish_and_takes_the_next_once_there_is_room() -> None:
    # Given a worker's task queue that holds one message at most (reject-publish)
    hub = MemoryHub()
    broker = MemoryBroker(hub)
    broker.declare_worker("w")
    hub.limit(hub.topology.task_queue("w"), 1)
    broker.publish_task("w", b"one")
    # When a second task is published
    with pytest.raises(PublishRejected, match="full"):
        broker.publish_task("w", b"two")
    # Then it was refused, and the queue takes it once the first is consumed
    broker.consume_tasks("w")
    first = broker.receive(timeout=1)
    assert first is not None and first.body() == b"one"
    broker.ack(first)
    broker.publish_task("w", b"two")
    assert hub.queues[hub.topology.task_queue("w")].messages[0].body == b"two"


def test_a_message_that_kills_its_consumer_is_dead_lettered_after_max_deliveries() -> None:
    # Given a hub that allows 2 deliveries, and a task whose consumers die holding it
    hub = MemoryHub(max_deliveries=2)
    MemoryBroker(hub).declare_worker("w")
    MemoryBroker(hub).publish_task("w", b"poison")
    for attempt in (1, 2):
        crashing = MemoryBroker(hub)
        crashing.consume_tasks("w")
        delivery = crashing.receive(timeout=1)
        assert delivery is not None and delivery.attempts == attempt
        crashing.close()  # unacknowledged: back to the queue, as on a crash
    # When a restarted worker consumes, after a good task was queued
    restarted = MemoryBroker(hub)
    restarted.publish_task("w", b"good")
    restarted.consume_tasks("w")
    delivery = restarted.receive(timeout=1)
    # Then it gets the good task, and the poison is a dead letter saying why
    assert delivery is not None and delivery.body() == b"good"
    letter = restarted.take_dead_letter(timeout=1)
    assert letter is not None and letter.body == b"poison" and "delivered 3 times" in letter.reason


def test_dead_letters_keep_the_newest_within_their_length_and_bytes() -> None:
    # Given dead letters bounded to 3 letters and 250 bytes
    hub = MemoryHub(Topology(dead_letter_max_length=3, dead_letter_max_bytes=250))
    broker = MemoryBroker(hub)
    broker.declare_worker("w")
    broker.consume_tasks("w")
    # When 5 tasks of 100 bytes are dead-lettered
    for index in range(5):
        broker.publish_task("w", bytes([index]) * 100)
        delivery = broker.receive(timeout=1)
        assert delivery is not None
        broker.dead_letter(delivery, f"bad {index}")
    # Then only the newest two remain (3 would hold 300 bytes), oldest first
    letters = [broker.take_dead_letter(timeout=0) for _ in range(3)]
    assert [letter.reason if letter else None for letter in letters] == ["bad 3", "bad 4", None]
    assert hub.dead_letter_bytes == 0
