"""A publish the broker refuses is one message's failure (issue 8, point 8), on the real RabbitMQ.

A queue with `x-max-length 0` and `x-overflow reject-publish` nacks every message sent to it: a
worker whose reply is refused dead-letters that task and answers the next one on the same
connection; `fedmq train` counts a refused task as that worker's failure and trains on.
"""

from __future__ import annotations

import pytest

from fedmq.broker.rabbitmq import RabbitBroker
from fedmq.broker.settings import BrokerSettings
from fedmq.coordinator.job import TrainingJob
from fedmq.coordinator.metrics import RoundMetrics
from fedmq.coordinator.settings import TrainSettings
from fedmq.protocol.errors import BrokerError
from fedmq.protocol.messages import Reply, TrainTask, decode_message
from tests.broker.live_worker import dead_letters, declare_raw, live_worker, reply_of, train_task

REFUSE_ALL = {"x-max-length": 0, "x-overflow": "reject-publish"}


def test_a_refused_reply_dead_letters_its_task_and_the_worker_answers_the_next(
        rabbit_settings: BrokerSettings) -> None:
    topology = rabbit_settings.topology
    with RabbitBroker(rabbit_settings) as coordinator:
        # Given job "full", whose reply queue refuses every message, and job "ok", a normal one
        coordinator.declare_worker("w")
        declare_raw(rabbit_settings.url, topology.reply_queue("full", "w"), topology.reply_exchange,
                    topology.reply_key("full", "w"), REFUSE_ALL)
        coordinator.consume_replies("ok", ["w"])
        with live_worker(rabbit_settings, "w") as worker:
            # When a worker gets a task of each job, the refused one first
            coordinator.publish_task("w", train_task("full", "t-full"))
            coordinator.publish_task("w", train_task("ok", "t-ok"))
            reply = reply_of(coordinator)
            letters = dead_letters(coordinator, 1)
            # Then it is still serving, on the connection it started with
            assert worker.alive() and worker.broker.reconnects == 0
    # And the good task was answered, the refused one dead-lettered whole with the broker's reason
    assert isinstance(reply, Reply) and reply.task_id == "t-ok"
    assert len(letters) == 1 and "refused" in letters[0].reason, letters
    refused = decode_message(letters[0].body)
    assert isinstance(refused, TrainTask) and refused.task_id == "t-full"


def test_fedmq_train_counts_a_refused_task_as_that_workers_failure(rabbit_settings: BrokerSettings) -> None:
    topology = rabbit_settings.topology
    # Given worker "full", whose task queue refuses every message, and a serving worker "w"
    with RabbitBroker(rabbit_settings) as coordinator:
        coordinator.declare_worker("w")
        declare_raw(rabbit_settings.url, topology.task_queue("full"), topology.task_exchange, "full", REFUSE_ALL)
        rounds: list[RoundMetrics] = []
        settings = TrainSettings(task="toy", workers=("full", "w"), rounds=2, min_replies=1,
                                 round_timeout_s=60, wait_for_workers_s=1, job="refused")
        with live_worker(rabbit_settings, "w") as worker:
            # When a two-round run sends both their tasks
            TrainingJob(coordinator, settings, on_round=rounds.append).run()
            assert worker.alive()
    # Then both rounds complete on w's replies, each naming full's refusal as its failure
    assert [(m.round, m.replies, m.failed) for m in rounds] == [(1, 1, 1), (2, 1, 1)]
    assert all("refused" in m.failures["full"] for m in rounds), rounds[0].failures


def test_a_refusal_on_a_side_channel_keeps_the_delivery_in_hand(rabbit_settings: BrokerSettings) -> None:
    # Given a worker connection holding a task, unacknowledged
    worker = RabbitBroker(rabbit_settings)
    with RabbitBroker(rabbit_settings) as coordinator, worker:
        worker.consume_tasks("w")
        coordinator.publish_task("w", b"task")
        delivery = worker.receive(timeout=30)
        assert delivery is not None
        # When a request on a side channel is refused (403: a queue name RabbitMQ reserves), as a
        # heartbeat to a presence exchange the user may not write is
        with pytest.raises(BrokerError, match="403"):
            worker._link.call(lambda channel: channel.connection.channel().queue_declare("amq.refused"))
        # Then the task in hand can still be acked on its channel: once the connection is gone,
        # no other consumer gets it again
        worker.ack(delivery)
    with RabbitBroker(rabbit_settings) as after:
        after.consume_tasks("w")
        assert after.receive(timeout=1.0) is None
