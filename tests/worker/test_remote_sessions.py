"""Sessions and refused publishes on the memory broker (issue 8, points 7 and 9).

A real Federation drives real workers (threads on the memory broker); the attacker publishes
raw batches to a worker's task queue, as anyone who can reach it may. The RabbitMQ versions,
with provisioned credentials, are in tests/coordinator/test_federation_senders_rabbitmq.py.
"""

from __future__ import annotations

import pytest
import torch

from fedmq.broker.memory import MemoryBroker
from fedmq.coordinator import Federation
from fedmq.protocol.commands import CommandBatch, CommandResult, Op
from fedmq.protocol.errors import RemoteError
from fedmq.protocol.messages import encode_message
from fedmq.protocol.operands import StoreInfo

WAIT_S = 30.0  # an upper bound for any answer, never a timing assertion


def test_a_client_id_without_the_token_opens_nothing() -> None:
    with Federation(timeout_s=WAIT_S) as fed:
        bob = fed.spawn("bob")
        # Given a client holding x on bob
        x = bob.send(torch.arange(3.0))
        bob.sync()
        # When another connection reuses the client's id with tokens of its own: one that frees x,
        # and one far ahead in sequence numbers
        attacker = MemoryBroker(fed._hub)  # type: ignore[arg-type]  # noqa: SLF001 - the same server
        for token, seq in (("ab" * 32, 2), ("cd" * 32, 10**6)):
            attacker.publish_task("bob", encode_message(CommandBatch(fed.client, seq, (Op("free", (x.id,)),), token)))
        # Then x is intact and the client's next batches run (its sequence numbers undisturbed)
        assert torch.equal((x * 2).get(), torch.arange(3.0) * 2)
        assert bob.objects() == StoreInfo(1, 12)
        # And both were dead-lettered with the reason, unread by the session
        letters = [attacker.take_dead_letter(timeout=WAIT_S) for _ in range(2)]
        assert all(letter is not None and "belongs to another sender" in letter.reason for letter in letters)


def test_a_batch_the_broker_refuses_is_that_batchs_failure() -> None:
    with Federation(timeout_s=WAIT_S) as fed:
        bob = fed.spawn("bob")
        x = bob.send(torch.ones(2))
        bob.sync()
        # Given bob's task queue refusing every publish (a full queue with reject-publish)
        hub = fed._hub  # noqa: SLF001
        assert hub is not None
        queue = hub.topology.task_queue("bob")
        hub.limit(queue, 0)
        # When the client sends a batch
        y = x + 1
        with pytest.raises(RemoteError, match="the broker refused a batch of 1 op"):
            bob.flush()
        # Then once the queue takes messages again, the client goes on (y's op never ran)
        hub.queues[queue].max_length = None
        assert torch.equal((x * 3).get(), torch.full((2,), 3.0))
        with pytest.raises(RemoteError, match="holds no object"):
            y.get()


def test_an_answer_the_broker_refuses_costs_that_answer_only() -> None:
    with Federation(timeout_s=2.0) as fed:
        bob = fed.spawn("bob")
        x = bob.send(torch.ones(2))
        bob.sync()
        # Given the client's reply queue refusing every publish
        hub = fed._hub  # noqa: SLF001
        assert hub is not None
        replies = hub.topology.reply_queue(fed.client, "bob")
        hub.limit(replies, 0)
        # When bob answers a batch
        with pytest.raises(RemoteError, match="did not answer batch"):
            (x + 1).get()
        # Then bob serves on: once the queue takes messages again, the next batch is answered
        # (the lost answer is named once)
        hub.queues[replies].max_length = None
        with pytest.raises(RemoteError, match="was never answered"):
            (x * 5).get()
        assert torch.equal((x * 4).get(), torch.full((2,), 4.0))


def test_a_pointer_moves_through_the_client_and_the_source_lets_go() -> None:
    with Federation(timeout_s=WAIT_S) as fed:
        bob, alice = fed.spawn("bob"), fed.spawn("alice")
        # Given a tensor with requires_grad and a task model on bob
        w = bob.send(torch.ones(3, requires_grad=True))
        model = bob.task_model(torch.nn.Linear(2, 1))  # the toy task's model
        # When both move to alice
        w.move(alice)
        model.move(alice)
        # Then alice holds them (w still a leaf that trains), and bob holds nothing
        (w * 2).sum().backward()
        assert torch.equal(w.grad.get(), torch.full((3,), 2.0))
        assert isinstance(model.get(), torch.nn.Linear)
        assert bob.objects() == StoreInfo(0, 0)
        # And an optimizer is refused up front: it stays where its parameters are
        opt = alice.optimizer(torch.optim.SGD, w, lr=0.1)
        with pytest.raises(ValueError, match="optimizers stay on their worker"):
            opt.move(bob)


def test_clients_past_max_clients_are_refused_and_the_first_keeps_its_session() -> None:
    with Federation(timeout_s=WAIT_S) as fed:
        bob = fed.spawn("bob", max_clients=1)
        x = bob.send(torch.ones(1))
        bob.sync()
        # When a second client id sends bob a batch
        other = MemoryBroker(fed._hub)  # type: ignore[arg-type]  # noqa: SLF001 - the same server
        other.publish_task("bob", encode_message(CommandBatch("c-other", 1, (Op("info"),), "ef" * 32)))
        # Then it is dead-lettered naming the cap, and the first client is served as before
        letter = other.take_dead_letter(timeout=WAIT_S)
        assert letter is not None and "(max_clients)" in letter.reason
        assert torch.equal((x + 1).get(), torch.full((1,), 2.0))


def test_a_verifying_client_takes_only_answers_in_their_workers_name() -> None:
    with Federation(timeout_s=2.0, verify_senders=True) as fed:
        bob = fed.spawn("bob")  # its connection plays user "bob", as its credentials would
        x = bob.send(torch.ones(2))
        assert torch.equal((x + 1).get(), torch.full((2,), 2.0))
        # Given a forged answer for the next batch, published into bob's reply queue by "mallory"
        hub = fed._hub  # noqa: SLF001
        assert hub is not None
        forger = MemoryBroker(hub, user="mallory")
        forger.publish_reply(fed.client, "bob", encode_message(CommandResult(fed.client, 2, "bob", {1: torch.zeros(2)})))
        # When the client's next batch (a get) is answered
        value = (x * 3).get()
        # Then the real answer counts and the forgery is dead-lettered naming its user
        assert torch.equal(value, torch.full((2,), 3.0))
        letter = forger.take_dead_letter(timeout=WAIT_S)
        assert letter is not None and "user 'mallory' published into worker 'bob'" in letter.reason


def test_an_undecodable_answer_is_dead_lettered_whole_and_the_client_goes_on() -> None:
    with Federation(timeout_s=WAIT_S) as fed:
        bob = fed.spawn("bob")
        x = bob.send(torch.ones(2))
        bob.sync()
        # Given garbage published into bob's reply queue for this client
        hub = fed._hub  # noqa: SLF001
        assert hub is not None
        MemoryBroker(hub).publish_reply(fed.client, "bob", b"\xc1 not msgpack")
        # When the client waits for its next answer
        assert torch.equal((x + 2).get(), torch.full((2,), 3.0))
        # Then the garbage is in the dead letters, bytes intact, with the reason
        letter = MemoryBroker(hub).take_dead_letter(timeout=WAIT_S)
        assert letter is not None and letter.body == b"\xc1 not msgpack" and "undecodable answer" in letter.reason
