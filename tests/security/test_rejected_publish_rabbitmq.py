"""A 403 on a publish costs one message, not the worker (issue 8, point 8), on a provisioned broker.

RabbitMQ answers a publish to an exchange the user may not write by closing the channel it came
on. The worker publishes on a channel of its own, so its consumer and connection survive: the
task whose reply was refused is dead-lettered, and the next task is answered.
"""

from __future__ import annotations

from fedmq.broker.provision import permissions
from fedmq.broker.rabbitmq import RabbitBroker
from fedmq.broker.topology import Topology
from fedmq.protocol.messages import Reply
from tests.broker.live_worker import live_worker, reply_of, train_task
from tests.conftest import BrokerAdmin
from tests.security.conftest import Federation
from tests.security.principals import set_permissions, wait_for_depth

JOB = "job"


def test_a_403_on_the_reply_exchange_costs_one_task_and_the_worker_serves_on(
        federation: Federation, rabbitmq_admin: BrokerAdmin) -> None:
    alice = federation.alice
    topology = Topology(alice.prefix)
    granted = permissions(alice, topology)
    with RabbitBroker(federation.settings(federation.coordinator)) as coordinator:
        coordinator.consume_replies(JOB, [alice.user])
        # Given alice, serving, whose operator took away her right to write anything
        set_permissions(rabbitmq_admin, alice, "^$", "^$", granted["read"])
        with live_worker(federation.settings(alice), alice.user, frozenset({federation.coordinator.user})) as worker:
            # When a task comes, whose reply the broker refuses (403)
            coordinator.publish_task(alice.user, train_task(JOB, "t-refused"))
            # Then the task goes to the dead letters (rejected into her queue's dead-letter exchange)
            assert wait_for_depth(rabbitmq_admin, alice.vhost, topology.dead_letter_queue, 1) == 1, worker.errors
            # When her right to reply is given back and another task comes
            set_permissions(rabbitmq_admin, alice, "^$", granted["write"], granted["read"])
            coordinator.publish_task(alice.user, train_task(JOB, "t-ok"))
            reply = reply_of(coordinator)
            # Then she answers it, on the connection she started with
            assert worker.alive() and worker.broker.reconnects == 0
    assert isinstance(reply, Reply) and reply.task_id == "t-ok"
