"""Limits and sender identity, on the memory broker and on a real RabbitMQ: tasks expire at their
round's deadline, reply queues are bounded, and every delivery names its publisher's user."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator

import pytest

from fedmq.broker.base import Broker
from fedmq.broker.memory import MemoryBroker, MemoryHub
from fedmq.broker.settings import BrokerSettings

Connect = Callable[..., Broker]


@pytest.fixture(params=["memory", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def connect(request: pytest.FixtureRequest) -> Iterator[Connect]:
    """connect(user=None, **settings) on the memory broker or on RabbitMQ (user: the login's)."""
    opened: list[Broker] = []
    hub = MemoryHub()

    def make(user: str | None = None, **changes: object) -> Broker:
        if request.param == "memory":
            return MemoryBroker(hub, user)
        from fedmq.broker.rabbitmq import RabbitBroker

        settings: BrokerSettings = request.getfixturevalue("rabbit_settings")
        return RabbitBroker(dataclasses.replace(settings, **changes))  # type: ignore[arg-type]

    def connect_(user: str | None = None, **changes: object) -> Broker:
        opened.append(make(user, **changes))
        return opened[-1]

    yield connect_
    for broker in opened:
        broker.close()


def test_a_task_not_taken_before_its_deadline_expires_into_the_dead_letters(connect: Connect) -> None:
    # Given a worker's queue with nobody consuming it
    coordinator = connect()
    coordinator.declare_worker("alice")
    # When a task that expires in 0.2 s is sent, and the worker starts only after that
    coordinator.publish_task("alice", b"round 1 task", expires_in_s=0.2)
    coordinator.publish_task("alice", b"round 2 task")
    time.sleep(0.5)
    alice = connect()
    alice.consume_tasks("alice")
    # Then only the unexpired task is delivered, and the stale one is dead-lettered as expired
    delivery = alice.receive(timeout=10)
    assert delivery is not None and delivery.body() == b"round 2 task"
    letter = coordinator.take_dead_letter(timeout=10)
    assert letter is not None and (letter.body, letter.reason) == (b"round 1 task", "expired")


def test_a_requeued_task_past_its_deadline_expires_instead_of_running_again(connect: Connect) -> None:
    # Given a worker that took a task expiring in 0.3 s and died holding it
    coordinator = connect()
    coordinator.declare_worker("alice")
    coordinator.publish_task("alice", b"task", expires_in_s=0.3)
    first = connect()
    first.consume_tasks("alice")
    assert first.receive(timeout=10) is not None
    time.sleep(0.5)
    first.close()  # unacknowledged: back to the queue, past its deadline
    # When the worker returns; then the task is not handed out, it is dead-lettered as expired
    again = connect()
    again.consume_tasks("alice")
    assert again.receive(timeout=0.5) is None
    letter = coordinator.take_dead_letter(timeout=10)
    assert letter is not None and letter.reason == "expired"


@pytest.mark.rabbitmq
def test_a_reply_queue_past_its_bound_dead_letters_the_oldest(rabbit_settings: BrokerSettings) -> None:
    from fedmq.broker.rabbitmq import RabbitBroker

    # Given reply queues bounded to three messages
    bounded = dataclasses.replace(rabbit_settings, reply_queue_max_length=3)
    with RabbitBroker(bounded) as coordinator, RabbitBroker(bounded) as alice:
        coordinator.declare_job("job", ["alice"])
        # When alice sends five replies before the coordinator reads any
        for i in range(5):
            alice.publish_reply("job", "alice", f"reply {i}".encode())
        coordinator.consume_replies("job", ["alice"])
        kept = []
        while (delivery := coordinator.receive(timeout=1)) is not None:
            kept.append(delivery.body())
            coordinator.ack(delivery)
        letters = [coordinator.take_dead_letter(timeout=5) for _ in range(2)]
    # Then the three newest are kept, and the two oldest overflowed to the dead letters
    assert kept == [b"reply 2", b"reply 3", b"reply 4"]
    assert [(letter.body, letter.reason) for letter in letters if letter] == [
        (b"reply 0", "maxlen"), (b"reply 1", "maxlen")]


@pytest.mark.rabbitmq
def test_every_delivery_names_the_user_that_published_it(rabbit_settings: BrokerSettings) -> None:
    from fedmq.broker.rabbitmq import RabbitBroker

    # Given the session's login (RabbitMQ holds user_id to it), and a chunked and a plain reply
    user = rabbit_settings.url.split("://", 1)[1].split(":", 1)[0]
    chunked = dataclasses.replace(rabbit_settings, chunk_size=4)
    with RabbitBroker(rabbit_settings) as coordinator, RabbitBroker(chunked) as alice:
        coordinator.declare_job("job", ["alice"])
        coordinator.consume_replies("job", ["alice"])
        alice.publish_reply("job", "alice", b"a reply in chunks")
        alice.publish_reply("job", "alice", b"tiny")
        deliveries = []
        for _ in range(2):
            deliveries.append(coordinator.receive(timeout=10))
            coordinator.ack(deliveries[-1])  # type: ignore[arg-type]
    # Then both carry it as user_id, the chunked one from all of its pieces
    assert [(d.body(), d.user_id) for d in deliveries if d] == [(b"a reply in chunks", user), (b"tiny", user)]


def test_the_memory_broker_stamps_its_connections_user() -> None:
    # Given a memory connection logged in as alice
    hub = MemoryHub()
    coordinator, alice = MemoryBroker(hub), MemoryBroker(hub, "alice")
    coordinator.declare_job("job", ["alice"])
    coordinator.consume_replies("job", ["alice"])
    # When she replies; then the delivery names her, as RabbitMQ's verified user_id would
    alice.publish_reply("job", "alice", b"r")
    delivery = coordinator.receive(timeout=10)
    assert delivery is not None and delivery.user_id == "alice"
