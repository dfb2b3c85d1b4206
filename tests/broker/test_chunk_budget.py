"""Chunk reassembly's memory budget (issue 8, point 14): per origin, counted in bytes received,
never reserved by an announcement; and a sender checked on its first piece."""

from __future__ import annotations

from dataclasses import replace

import pika

from fedmq.broker.chunks import CHUNK_COUNT, MESSAGE_ID, TOTAL_SIZE, Assembled, Dropped, Reassembler, split
from fedmq.broker.rabbitmq import RabbitBroker
from fedmq.broker.settings import BrokerSettings
from fedmq.protocol.messages import Reply
from tests.broker.live_worker import dead_letters, live_worker, reply_of, train_task

GIB = 1 << 30
ALICE = frozenset({"alice"})


def _offer_all(reassembler: Reassembler[int], origin: str, payload: bytes, message_id: str,
               sender: str | None = None, expected: str | None = None) -> list[object]:
    outcomes: list[object] = []
    for tag, frame in enumerate(split(payload, 100, message_id)):
        outcome = reassembler.offer(origin, frame.headers, bytes(frame.body), tag, sender, expected)
        if outcome is not None:
            outcomes.append(outcome)
    return outcomes


def test_an_announcement_of_4_gib_reserves_nothing_and_other_origins_complete() -> None:
    # Given one origin that announced 4 GiB (the most a message may be) and sent nothing more
    reassembler: Reassembler[int] = Reassembler(timeout_s=60)
    bomb = {MESSAGE_ID: "bomb", CHUNK_COUNT: 4, TOTAL_SIZE: 4 * GIB}
    assert reassembler.offer("mallory", bomb, b"", 0) is None
    assert reassembler.pending_bytes == 0
    # When three other origins each send a chunked message
    done = [_offer_all(reassembler, f"w{i}", bytes([i]) * 1000, f"m{i}") for i in range(3)]
    # Then each completes, whole
    assert [[b"".join(o.parts) for o in outcomes if isinstance(o, Assembled)] for outcomes in done] == [
        [bytes([i]) * 1000] for i in range(3)]


def test_another_senders_announcement_is_dropped_at_once_and_a_splice_costs_only_its_piece() -> None:
    reassembler: Reassembler[int] = Reassembler(timeout_s=60)
    # When mallory announces a message on alice's origin
    mallory = {MESSAGE_ID: "m", CHUNK_COUNT: 4, TOTAL_SIZE: 4 * GIB}
    dropped = reassembler.offer("alice-queue", mallory, b"", 0, "mallory", ALICE)
    # Then it is dropped at once, naming who announced it, and nothing is pending
    assert isinstance(dropped, Dropped) and "announced by user 'mallory'" in str(dropped.error)
    assert reassembler.waiting_origins() == []
    # When alice's own message is half in and mallory slips a forged piece into it
    frames = list(split(b"a" * 300, 100, "real"))
    for tag, frame in enumerate(frames[:2]):
        assert reassembler.offer("alice-queue", frame.headers, bytes(frame.body), tag, "alice", ALICE) is None
    spliced = reassembler.offer("alice-queue", frames[2].headers, b"x" * 100, 9, "mallory", ALICE)
    # Then only the forged piece is dropped, and alice's message completes
    assert isinstance(spliced, Dropped) and spliced.tags == [9]
    outcomes = [reassembler.offer("alice-queue", f.headers, bytes(f.body), 10 + i, "alice", ALICE)
                for i, f in enumerate(frames[2:])]
    assert [b"".join(o.parts) for o in outcomes if isinstance(o, Assembled)] == [b"a" * 300]


def test_an_origin_past_its_budget_loses_its_own_message_only() -> None:
    # Given origins that may each hold 500 bytes of partial messages, and one that has two
    # 400-byte messages 300 bytes in (announcing them reserved nothing)
    reassembler: Reassembler[int] = Reassembler(timeout_s=60, max_pending_bytes=500)
    first = list(split(b"1" * 400, 100, "first"))
    second = list(split(b"2" * 400, 100, "second"))
    outcomes = [reassembler.offer("greedy", f.headers, bytes(f.body), t) for t, f in enumerate(first[:4])]
    outcomes += [reassembler.offer("greedy", f.headers, bytes(f.body), t) for t, f in enumerate(second[:4], 10)]
    # Then the piece that would make it hold more than 500 bytes drops that message
    dropped = [o for o in outcomes if o is not None]
    assert len(dropped) == 1 and isinstance(dropped[0], Dropped) and dropped[0].message_id == "second"
    assert "more than 500 bytes" in str(dropped[0].error) and reassembler.held_from("greedy") == 300
    # And another origin still completes a 500-byte message beside it
    done = _offer_all(reassembler, "honest", b"h" * 500, "h")
    assert [b"".join(o.parts) for o in done if isinstance(o, Assembled)] == [b"h" * 500]
    # And an announcement above the budget is refused at once
    refused = reassembler.offer("greedy", {MESSAGE_ID: "big", CHUNK_COUNT: 10, TOTAL_SIZE: 1000}, b"", 20)
    assert isinstance(refused, Dropped) and "larger than the 500 bytes" in str(refused.error)


def test_a_chunked_task_from_anyone_but_the_task_senders_is_dropped_at_its_first_piece(
        rabbit_settings: BrokerSettings) -> None:
    # Given a worker that takes tasks from guest only, and chunks above 100 bytes (a task: 221)
    settings = replace(rabbit_settings, task_senders=frozenset({"guest"}), chunk_size=100)
    topology = settings.topology
    with RabbitBroker(settings) as coordinator:
        coordinator.declare_worker("w")
        coordinator.consume_replies("job", ["w"])
        with live_worker(settings, "w", task_senders=frozenset({"guest"})) as worker:
            # When a publisher without a user_id announces a 4 GiB task, then guest sends a chunked one
            connection = pika.BlockingConnection(pika.URLParameters(settings.url))
            try:
                connection.channel().basic_publish(topology.task_exchange, "w", b"", pika.BasicProperties(
                    headers={MESSAGE_ID: "bomb", CHUNK_COUNT: 4, TOTAL_SIZE: 4 * GIB}))
            finally:
                connection.close()
            coordinator.publish_task("w", train_task("job", "t-good"))
            reply = reply_of(coordinator)
            assert worker.alive()
        letters = dead_letters(coordinator, 1)
    # Then the good task is answered, and the announcement was dropped before any chunk, saying who
    assert isinstance(reply, Reply) and reply.task_id == "t-good"
    assert len(letters) == 1 and "announced by user None" in letters[0].reason, letters
