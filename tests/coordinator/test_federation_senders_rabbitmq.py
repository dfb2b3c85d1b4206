"""The pointer API on a provisioned RabbitMQ: forged answers, hijacked sessions, moves.

Real workers (WorkerServices in threads, each logged in with its own provisioned credentials)
and a real client (Federation.provisioned, the coordinator's credentials). Raw pika plays the
attackers, each with valid credentials of its own: a provisioned worker forging another
worker's answers, and a second client principal reusing the victim's visible client id (and
even the token a hostile worker saw).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pika
import pytest
import torch

from fedmq.broker.provision import Credentials, permissions
from fedmq.broker.rabbitmq import RabbitBroker
from fedmq.broker.topology import Topology
from fedmq.coordinator import Federation
from fedmq.protocol.commands import CommandBatch, CommandResult, Op
from fedmq.protocol.messages import encode_message
from fedmq.protocol.operands import Ref, StoreInfo
from tests.conftest import BrokerAdmin
from tests.security.conftest import Federation as Provisioned
from tests.security.conftest import federation  # noqa: F401 - the provisioned broker fixture
from fedmq.worker.service import WorkerService
from fedmq.worker.settings import WorkerSettings
from fedmq.worker.task import ShardSpec, load_task

pytestmark = pytest.mark.rabbitmq
WAIT_S = 30.0  # an upper bound for any answer, never a timing assertion


@contextmanager
def serving(provisioned: Provisioned, *workers: Credentials) -> Iterator[list[threading.Thread]]:
    """Each worker serving the toy task in a thread, logged in as itself."""
    stop, threads, brokers = threading.Event(), [], []
    toy = load_task("toy")
    for index, who in enumerate(workers):
        broker = RabbitBroker(provisioned.settings(who))
        settings = WorkerSettings(who.user, "toy", ShardSpec(index, len(workers)), poll_s=0.1)
        service = WorkerService(broker, settings, task=toy)
        broker.declare_worker(who.user)
        brokers.append(broker)
        threads.append(threading.Thread(target=service.serve, args=(stop,), daemon=True))
    for thread in threads:
        thread.start()
    try:
        yield threads
    finally:
        stop.set()
        for thread in threads:
            thread.join(WAIT_S)
        for broker in brokers:
            broker.close()


def channel(who: Credentials) -> pika.adapters.blocking_connection.BlockingChannel:
    connection = pika.BlockingConnection(pika.URLParameters(who.url))
    opened = connection.channel()
    opened.confirm_delivery()
    return opened


def test_a_worker_cannot_answer_in_another_workers_name(federation: Provisioned,  # noqa: F811
                                                        caplog: pytest.LogCaptureFixture) -> None:
    alice, bob = federation.alice, federation.bob
    with serving(federation, bob) as threads, \
            Federation.provisioned(federation.file(federation.coordinator), timeout_s=WAIT_S) as fed:
        worker = fed.worker(bob.user)
        # Given alice, a provisioned worker, who routes a forged answer into bob's reply queue
        # for this client's first batch: "your get fetched 666"
        forged = CommandResult(fed.client, 1, bob.user, {1: torch.full((2,), 666.0)})
        forger = channel(alice)
        forger.basic_publish(f"{alice.prefix}.replies", f"{fed.client}.{bob.user}",
                             bytes(encode_message(forged)), pika.BasicProperties(user_id=alice.user))
        forger.connection.close()
        # When the client's first batch (send, get) runs on bob
        with caplog.at_level(logging.WARNING, logger="fedmq.federation"):
            value = worker.send(torch.ones(2)).get()
        # Then the forged answer, first in the queue, was dead-lettered for its user_id,
        # and the value is bob's
        assert torch.equal(value, torch.ones(2))
        assert f"user {alice.user!r} published into worker {bob.user!r}'s reply queue" in caplog.text
        assert all(thread.is_alive() for thread in threads)


def test_another_client_cannot_take_over_a_session_by_its_visible_id(  # noqa: PLR0913
        federation: Provisioned, rabbitmq_admin: BrokerAdmin, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    bob = federation.bob
    carol = _second_client(federation, rabbitmq_admin)
    try:
        with serving(federation, bob) as threads, \
                Federation.provisioned(federation.file(federation.coordinator), timeout_s=WAIT_S) as fed:
            worker = fed.worker(bob.user)
            # Given a victim client holding x on bob
            x = worker.send(torch.arange(3.0))
            worker.sync()
            token = fed._token(bob.user)  # noqa: SLF001 - what hostile bob sees in every batch
            # When the same principal, without the secret, reuses the client id with its own
            # token and a far seq; and carol, another principal, even with bob's leaked token
            hijacks = [(federation.coordinator, "ab" * 32), (carol, token)]
            with caplog.at_level(logging.WARNING, logger="fedmq.worker"):
                for who, guess in hijacks:
                    attacker = channel(who)
                    batch = CommandBatch(fed.client, 1000, (Op("op.mul", (Ref(x.id), 0), {}, (99,)),
                                                            Op("free", (x.id,))), guess)
                    attacker.basic_publish(f"{who.prefix}.tasks", bob.user, bytes(encode_message(batch)),
                                           pika.BasicProperties(user_id=who.user))
                    attacker.connection.close()
                # Then the victim's object is intact, its seq undisturbed (its next batch runs),
                assert torch.equal((x + 1).get(), torch.arange(3.0) + 1)
                assert worker.objects() == StoreInfo(1, 12)
            # and both hijacks were dead-lettered, refused, while bob kept serving
            refusals = [r for r in caplog.records if r.name == "fedmq.worker" and "another sender" in r.getMessage()]
            assert len(refusals) == 2
            assert all(thread.is_alive() for thread in threads)
    finally:
        assert rabbitmq_admin.ctl is not None
        rabbitmq_admin.ctl(["delete_user", carol.user])


def test_a_move_between_provisioned_workers_goes_through_the_client(federation: Provisioned) -> None:  # noqa: F811
    alice, bob = federation.alice, federation.bob
    with serving(federation, bob, alice) as threads, \
            Federation.provisioned(federation.file(federation.coordinator), timeout_s=WAIT_S) as fed:
        on_bob, on_alice = fed.worker(bob.user), fed.worker(alice.user)
        # Given a tensor and a model on bob, where workers may not publish tasks
        x = on_bob.send(torch.arange(4.0, requires_grad=True))
        model = on_bob.send(torch.nn.Linear(4, 1))
        # When both move to alice
        x.move(on_alice)
        model.move(on_alice)
        # Then they work there, bob holds nothing, and both workers keep serving
        out = model(x)
        out.backward()
        assert x.grad.get().shape == (4,)
        assert torch.equal((x * 2).get(), torch.arange(4.0) * 2)
        assert on_bob.objects() == StoreInfo(0, 0)
        assert all(thread.is_alive() for thread in threads)


def _second_client(provisioned: Provisioned, admin: BrokerAdmin) -> Credentials:
    """carol: another principal with a client's (the coordinator role's) permissions."""
    coordinator = provisioned.coordinator
    name, password = f"carol-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    assert admin.ctl is not None, "these tests add a user with rabbitmqctl"
    admin.ctl(["add_user", name, password])
    granted = permissions(coordinator, Topology(coordinator.prefix))
    admin.ctl(["set_permissions", "-p", coordinator.vhost, name, granted["configure"], granted["write"],
               granted["read"]])
    url = coordinator.url.replace(f"{coordinator.user}:{coordinator.password}@", f"{name}:{password}@")
    return Credentials(name, password, "coordinator", coordinator.vhost, coordinator.prefix, url)
