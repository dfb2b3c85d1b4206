"""Reply collection: only the first answer of an asked worker in this round counts.

Each test runs on the memory broker and on a real RabbitMQ.
"""

import time
from collections.abc import Callable, Iterator

import pytest
import torch

from fedmq.broker.base import Broker, DeadLetter
from fedmq.broker.memory import MemoryBroker, MemoryHub
from fedmq.coordinator.rounds import ReplyCollector
from fedmq.protocol.messages import ErrorReply, Reply, encode_message

JOB, WORKERS = "job", ["alice", "bob"]
Connect = Callable[[], Broker]


@pytest.fixture(params=["memory", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def connect(request: pytest.FixtureRequest) -> Iterator[Connect]:
    """A factory of connections to one broker: the memory broker, or RabbitMQ."""
    opened: list[Broker] = []
    if request.param == "memory":
        hub = MemoryHub()

        def make() -> Broker:
            return MemoryBroker(hub)
    else:
        from fedmq.broker.rabbitmq import RabbitBroker

        settings = request.getfixturevalue("rabbit_settings")

        def make() -> Broker:
            return RabbitBroker(settings)

    def connect_() -> Broker:
        opened.append(make())
        return opened[-1]

    yield connect_
    for broker in opened:
        broker.close()


def _setup(connect: Connect) -> tuple[Broker, dict[str, Broker]]:
    coordinator = connect()
    coordinator.declare_job(JOB, WORKERS)
    coordinator.consume_replies(JOB, WORKERS)
    return coordinator, {name: connect() for name in WORKERS}


def _reply(task_id: str, worker: str, *, round_: int = 2, job: str = JOB) -> bytes:
    return bytes(encode_message(Reply(job=job, round=round_, task_id=task_id, worker=worker, update={"w": torch.ones(1)}, num_examples=5, metrics={"train_loss": 1.0})))


def _collect(coordinator: Broker, asked: dict[str, str]) -> tuple[list[str], object]:
    used: list[str] = []

    def on_reply(reply: Reply) -> str | None:
        used.append(reply.worker)
        return None

    collected = ReplyCollector(coordinator, JOB, 2, asked).collect(time.monotonic() + 1.0, on_reply)
    return used, collected


def test_late_duplicate_and_unasked_replies_are_dropped_forged_ones_dead_lettered(connect: Connect) -> None:
    # Given a round that asked alice (task a1) and bob (task b1)
    coordinator, workers = _setup(connect)
    alice, bob = workers["alice"], workers["bob"]
    # When the queues hold: a late reply of round 1, alice's answer, its duplicate, a reply to a
    # task nobody asked, another job's reply, bob claiming alice's task, then bob's answer
    alice.publish_reply(JOB, "alice", _reply("a0", "alice", round_=1))
    alice.publish_reply(JOB, "alice", _reply("a1", "alice"))
    alice.publish_reply(JOB, "alice", _reply("a1", "alice"))
    alice.publish_reply(JOB, "alice", _reply("zz", "alice"))
    alice.publish_reply(JOB, "alice", _reply("a1", "alice", job="other"))
    bob.publish_reply(JOB, "bob", _reply("a1", "alice"))  # forged: arrives on bob's queue
    bob.publish_reply(JOB, "bob", _reply("b1", "bob"))
    used, collected = _collect(coordinator, {"a1": "alice", "b1": "bob"})
    # (the round closes once both answered; whatever it left unread, the next round drops)
    leftovers = ReplyCollector(coordinator, JOB, 3, {"c1": "carol"}).collect(time.monotonic() + 1.0, lambda r: None)
    # Then exactly one reply per worker is used; the late, duplicate and unasked ones are dropped
    assert sorted(used) == ["alice", "bob"]
    assert sorted(answer.worker for answer in collected.replies) == ["alice", "bob"]
    assert collected.dropped + leftovers.dropped == 3 and collected.silent == []
    # And the other job's reply and bob's forgery, which no honest worker sends, are dead-lettered
    assert collected.dead_lettered + leftovers.dead_lettered == 2
    reasons = sorted(letter.reason for letter in _dead_letters(coordinator))
    assert len(reasons) == 2 and "job 'other'" in reasons[0] and "naming worker 'alice'" in reasons[1], reasons


def _dead_letters(broker: Broker) -> list[DeadLetter]:
    letters = []
    while (letter := broker.take_dead_letter(timeout=2)) is not None:
        letters.append(letter)
    return letters


def test_silent_workers_are_named_at_the_deadline(connect: Connect) -> None:
    coordinator, workers = _setup(connect)
    workers["alice"].publish_reply(JOB, "alice", _reply("a1", "alice"))
    used, collected = _collect(coordinator, {"a1": "alice", "b1": "bob"})
    assert used == ["alice"] and collected.silent == ["bob"]


def test_error_replies_and_unusable_updates_are_failures_not_exceptions(connect: Connect) -> None:
    # Given bob reports an error and alice's update is unusable
    coordinator, workers = _setup(connect)
    workers["bob"].publish_reply(JOB, "bob", bytes(encode_message(ErrorReply(job=JOB, round=2, task_id="b1", worker="bob", reason="out of memory"))))
    workers["alice"].publish_reply(JOB, "alice", _reply("a1", "alice"))
    collector = ReplyCollector(coordinator, JOB, 2, {"a1": "alice", "b1": "bob"})
    # When the round is collected with a fold that rejects alice's update
    collected = collector.collect(time.monotonic() + 1.0, lambda reply: "wrong shape")
    # Then both are failures carrying their reasons, and nothing was raised
    assert sorted((f.worker, f.reason) for f in collected.failures) == [("alice", "wrong shape"), ("bob", "out of memory")]
    assert collected.replies == []


def test_undecodable_replies_are_dead_lettered(connect: Connect) -> None:
    coordinator, workers = _setup(connect)
    workers["alice"].publish_reply(JOB, "alice", b"\x93garbage")
    workers["alice"].publish_reply(JOB, "alice", _reply("a1", "alice"))
    used, collected = _collect(coordinator, {"a1": "alice"})
    letter = coordinator.take_dead_letter(timeout=5)
    assert used == ["alice"]
    assert letter is not None and "undecodable" in letter.reason and letter.source == "alice"
