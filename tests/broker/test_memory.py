"""Unit tests of the in-process memory broker: the semantics RabbitMQ must match."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fedmq.broker.memory import MemoryBroker, MemoryHub
from fedmq.protocol.errors import BrokerError, Unroutable


@pytest.fixture
def hub() -> MemoryHub:
    return MemoryHub()


@pytest.fixture
def coordinator(hub: MemoryHub) -> Iterator[MemoryBroker]:
    broker = MemoryBroker(hub)
    yield broker
    broker.close()


def worker_broker(hub: MemoryHub, name: str) -> MemoryBroker:
    broker = MemoryBroker(hub)
    broker.declare_worker(name)
    broker.consume_tasks(name)
    return broker


def test_a_task_reaches_only_its_worker(hub: MemoryHub, coordinator: MemoryBroker) -> None:
    # Given two workers consuming their tasks
    alice, bob = worker_broker(hub, "alice"), worker_broker(hub, "bob")
    # When the coordinator sends a task to bob
    coordinator.publish_task("bob", b"for bob")
    # Then bob receives it, from his own queue, and alice receives nothing
    delivery = bob.receive(timeout=1)
    assert delivery is not None
    assert delivery.body() == b"for bob"
    assert delivery.source == "bob"
    assert alice.receive(timeout=0.01) is None


def test_a_reply_reaches_the_job_with_its_worker_as_source(
    hub: MemoryHub, coordinator: MemoryBroker
) -> None:
    # Given a job with reply queues for two workers
    coordinator.declare_job("job1", ["alice", "bob"])
    coordinator.consume_replies("job1", ["alice", "bob"])
    # When alice replies
    MemoryBroker(hub).publish_reply("job1", "alice", b"update")
    # Then the coordinator receives it, knowing it came from alice
    delivery = coordinator.receive(timeout=1)
    assert delivery is not None
    assert (delivery.body(), delivery.source) == (b"update", "alice")


def test_a_task_to_a_worker_that_never_started_is_unroutable(coordinator: MemoryBroker) -> None:
    # Given no worker declared; when a task is sent to one; then it is refused, naming the worker
    with pytest.raises(Unroutable, match="ghost"):
        coordinator.publish_task("ghost", b"task")
    assert not coordinator.has_worker("ghost")


def test_a_reply_to_a_job_without_reply_queues_is_unroutable(hub: MemoryHub) -> None:
    with pytest.raises(Unroutable, match="job1"):
        MemoryBroker(hub).publish_reply("job1", "alice", b"update")


def test_a_deleted_job_takes_no_more_replies(hub: MemoryHub, coordinator: MemoryBroker) -> None:
    # Given a job that is over
    coordinator.declare_job("job1", ["alice"])
    coordinator.delete_job("job1", ["alice"])
    # When a late reply comes; then it is unroutable
    with pytest.raises(Unroutable):
        MemoryBroker(hub).publish_reply("job1", "alice", b"late")


def test_a_worker_holds_one_unacknowledged_task_at_a_time(
    hub: MemoryHub, coordinator: MemoryBroker
) -> None:
    # Given two tasks queued for one worker, the first received and not acknowledged
    worker = worker_broker(hub, "alice")
    coordinator.publish_task("alice", b"first")
    coordinator.publish_task("alice", b"second")
    first = worker.receive(timeout=1)
    assert first is not None and first.body() == b"first"
    # When the worker asks for more before acknowledging
    # Then nothing comes
    assert worker.receive(timeout=0.01) is None
    # When it acknowledges the first; then the second comes
    worker.ack(first)
    second = worker.receive(timeout=1)
    assert second is not None and second.body() == b"second"


def test_an_unacknowledged_task_returns_to_the_queue_on_close_marked_redelivered(
    hub: MemoryHub, coordinator: MemoryBroker
) -> None:
    # Given a worker that received a task and closed without acknowledging it
    worker = worker_broker(hub, "alice")
    coordinator.publish_task("alice", b"task")
    delivery = worker.receive(timeout=1)
    assert delivery is not None and not delivery.redelivered
    worker.close()
    # When the worker comes back
    again = worker_broker(hub, "alice").receive(timeout=1)
    # Then it receives the same task, marked redelivered
    assert again is not None
    assert again.body() == b"task"
    assert again.redelivered


def test_an_acknowledged_task_does_not_return(hub: MemoryHub, coordinator: MemoryBroker) -> None:
    worker = worker_broker(hub, "alice")
    coordinator.publish_task("alice", b"task")
    delivery = worker.receive(timeout=1)
    assert delivery is not None
    worker.ack(delivery)
    worker.close()
    assert worker_broker(hub, "alice").receive(timeout=0.01) is None


def test_a_dead_letter_keeps_body_reason_and_source(
    hub: MemoryHub, coordinator: MemoryBroker
) -> None:
    # Given a worker holding a task it cannot use
    worker = worker_broker(hub, "alice")
    coordinator.publish_task("alice", b"garbage")
    delivery = worker.receive(timeout=1)
    assert delivery is not None
    # When it dead-letters the task
    worker.dead_letter(delivery, "not valid msgpack")
    # Then the dead-letter queue holds it with the reason and the worker, once
    letter = coordinator.take_dead_letter(timeout=1)
    assert letter is not None
    assert (letter.body, letter.reason, letter.source) == (b"garbage", "not valid msgpack", "alice")
    assert coordinator.take_dead_letter(timeout=0.01) is None
    # And the task is acknowledged: it is not redelivered after a close
    worker.close()
    assert worker_broker(hub, "alice").receive(timeout=0.01) is None


def test_a_closed_broker_refuses_to_publish(hub: MemoryHub) -> None:
    broker = MemoryBroker(hub)
    broker.declare_worker("alice")
    broker.close()
    broker.close()  # idempotent
    with pytest.raises(BrokerError, match="closed"):
        broker.publish_task("alice", b"task")


def test_run_beside_io_returns_the_work_result(coordinator: MemoryBroker) -> None:
    assert coordinator.run_beside_io(lambda: 42) == 42
