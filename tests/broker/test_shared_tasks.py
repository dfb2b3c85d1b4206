"""Broker.publish_shared_task on the memory broker and on a real RabbitMQ: one publish reaches
every addressed worker's own queue (chunked or not), durable, expiring, redelivered only to its
worker; a worker without a queue is reported, not a failure of the others."""

from __future__ import annotations

import time


from fedmq.broker.memory import MemoryBroker, MemoryHub
from fedmq.protocol.errors import Unroutable
from tests.broker.test_limits import Connect, connect  # noqa: F401 - the shared fixture

WAIT_S = 10.0  # an upper bound for a message to arrive, never a timing assertion


def test_one_publish_reaches_each_worker_and_a_missing_one_is_reported(connect: Connect) -> None:  # noqa: F811
    # Given two workers with queues
    coordinator = connect()
    alice, bob = connect(), connect()
    for broker, name in ((alice, "sh-alice"), (bob, "sh-bob")):
        broker.declare_worker(name)
        broker.consume_tasks(name)
    # When one body is published to them and to workers that never started, first, between and last
    ghosts = {"sh-ghost1", "sh-ghost2", "sh-ghost3"}
    failed = coordinator.publish_shared_task(["sh-ghost1", "sh-alice", "sh-ghost2", "sh-bob", "sh-ghost3"],
                                             b"the model")
    # Then each missing worker is reported Unroutable, and each of the others gets it from its own queue
    assert set(failed) == ghosts and all(isinstance(error, Unroutable) for error in failed.values())
    for broker, name in ((alice, "sh-alice"), (bob, "sh-bob")):
        delivery = broker.receive(timeout=WAIT_S)
        assert delivery is not None and (delivery.body(), delivery.source) == (b"the model", name)
        assert "BCC" not in delivery.headers  # the recipients are not told who else got it
        broker.ack(delivery)
        assert broker.receive(timeout=0.05) is None  # exactly one copy each


def test_a_chunked_shared_body_is_reassembled_at_every_worker(connect: Connect) -> None:  # noqa: F811
    # Given two workers, and a broker that splits bodies above 1 KiB (RabbitMQ; memory never splits)
    coordinator = connect(chunk_size=1024)
    workers = {name: connect(chunk_size=1024) for name in ("sh-c0", "sh-c1")}
    for name, broker in workers.items():
        broker.declare_worker(name)
        broker.consume_tasks(name)
    body = bytes(range(256)) * 40  # 10 KiB: 10 chunks
    # When it is published once to both
    assert coordinator.publish_shared_task(list(workers), body) == {}
    # Then each worker assembles the whole body, whole and in order
    for name, broker in workers.items():
        delivery = broker.receive(timeout=WAIT_S)
        assert delivery is not None and delivery.body() == body and delivery.source == name
        broker.ack(delivery)


def test_a_copy_not_acked_returns_to_its_own_worker_only(connect: Connect) -> None:  # noqa: F811
    # Given a shared task taken by two workers; alice acks, bob dies holding it
    coordinator = connect()
    alice, bob = connect(), connect()
    for broker, name in ((alice, "sh-r-alice"), (bob, "sh-r-bob")):
        broker.declare_worker(name)
        broker.consume_tasks(name)
    assert coordinator.publish_shared_task(["sh-r-alice", "sh-r-bob"], b"round 3") == {}
    first = alice.receive(timeout=WAIT_S)
    held = bob.receive(timeout=WAIT_S)
    assert first is not None and held is not None
    alice.ack(first)
    bob.close()
    # When bob comes back; then his copy is redelivered to him, and alice gets nothing more
    again = connect()
    again.consume_tasks("sh-r-bob")
    delivery = again.receive(timeout=WAIT_S)
    assert delivery is not None and delivery.body() == b"round 3" and delivery.redelivered
    assert alice.receive(timeout=0.1) is None


def test_each_copy_expires_with_the_round_into_the_dead_letters(connect: Connect) -> None:  # noqa: F811
    # Given two workers' queues with nobody consuming
    coordinator = connect()
    coordinator.declare_worker("sh-x0")
    coordinator.declare_worker("sh-x1")
    # When a shared task expiring in 0.2 s is not taken in time
    assert coordinator.publish_shared_task(["sh-x0", "sh-x1"], b"stale", expires_in_s=0.2) == {}
    time.sleep(0.5)
    for name in ("sh-x0", "sh-x1"):
        late = connect()
        late.consume_tasks(name)
        assert late.receive(timeout=0.3) is None
    # Then both copies, one per worker, are dead-lettered as expired
    letters = [coordinator.take_dead_letter(timeout=WAIT_S) for _ in range(2)]
    assert all(letter is not None and (letter.body, letter.reason) == (b"stale", "expired") for letter in letters)


def test_the_memory_broker_stores_the_body_once() -> None:
    # Given a memory hub with three workers' queues
    hub = MemoryHub()
    coordinator = MemoryBroker(hub)
    for name in ("a", "b", "c"):
        coordinator.declare_worker(name)
    # When one body is shared among them
    coordinator.publish_shared_task(["a", "b", "c"], memoryview(b"x" * 1000))
    # Then every queue holds the same bytes object: one copy, not three
    bodies = [hub.queues[hub.topology.task_queue(name)].messages[0].body for name in ("a", "b", "c")]
    assert bodies[0] is bodies[1] is bodies[2]
