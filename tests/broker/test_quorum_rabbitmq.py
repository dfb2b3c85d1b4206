"""Quorum queues: the queue type is a setting, honoured by clients and by provisioning."""

from __future__ import annotations

from dataclasses import replace

from fedmq.broker.provision import provision
from fedmq.broker.rabbitmq import RabbitBroker
from fedmq.broker.settings import BrokerSettings
from fedmq.broker.topology import QueueType, Topology
from tests.conftest import BrokerAdmin


def test_provisioned_queues_carry_the_queue_type() -> None:
    # When a federation is provisioned for a cluster
    document = provision(["alice"], "coordinator", "fedmq", "fedmq", queue_type=QueueType.QUORUM).definitions
    # Then every queue in the definitions is a quorum queue
    assert document["queues"] and all(q["arguments"]["x-queue-type"] == "quorum" for q in document["queues"])
    # And the classic default adds no argument (queues declared before the setting still match)
    assert "x-queue-type" not in Topology().task_queue_arguments()


def test_quorum_queues_carry_tasks_and_replies(rabbit_settings: BrokerSettings, rabbitmq_admin: BrokerAdmin) -> None:
    # Given a topology of quorum queues
    settings = replace(rabbit_settings, topology=Topology(rabbit_settings.topology.prefix, QueueType.QUORUM))
    with RabbitBroker(settings) as coordinator, RabbitBroker(settings) as worker:
        worker.consume_tasks("alice")
        coordinator.consume_replies("job", ["alice"])
        # When a task and its reply cross
        coordinator.publish_task("alice", b"task")
        task = worker.receive(timeout=10)
        assert task is not None and task.body() == b"task"
        worker.publish_reply("job", "alice", b"reply")
        worker.ack(task)
        reply = coordinator.receive(timeout=10)
        assert reply is not None and reply.body() == b"reply"
        coordinator.ack(reply)
        # Then the broker holds them in quorum queues
        if rabbitmq_admin.ctl is not None:
            listing = rabbitmq_admin.ctl(["-q", "list_queues", "-p", rabbitmq_admin.vhost,
                                          "--no-table-headers", "name", "type"])
            types = dict(line.split("\t")[:2] for line in listing.splitlines() if "\t" in line)
            assert types[settings.topology.task_queue("alice")] == "quorum"
            assert types[settings.topology.reply_queue("job", "alice")] == "quorum"
