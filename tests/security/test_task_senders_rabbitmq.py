"""Who may make a worker train (issue 8, point 5), on a provisioned broker.

A principal the operator allowed to publish tasks (here mallory) is not thereby allowed to make a
worker train: trap weights plus one full-batch step would reveal examples through the returned
delta. With credentials in use a worker runs tasks and commands only from the provisioned
coordinator and the principals it is told to trust; anything else is dead-lettered unread.
"""

from __future__ import annotations

import logging
import re
import uuid

import pytest

from fedmq.broker.rabbitmq import RabbitBroker
from fedmq.protocol.messages import Reply, TrainTask, decode_message
from tests.broker.live_worker import dead_letters, live_worker, reply_of, train_task
from tests.conftest import BrokerAdmin
from tests.security.conftest import Federation
from tests.security.principals import extra_principal

JOB = "job"


def test_a_worker_runs_no_task_from_a_principal_that_is_not_its_coordinator(
        federation: Federation, rabbitmq_admin: BrokerAdmin, caplog: pytest.LogCaptureFixture) -> None:
    alice, coordinator_user = federation.alice.user, federation.coordinator.user
    p = re.escape(federation.alice.prefix)
    suffix = uuid.uuid4().hex[:8]
    # Given mallory, whom the broker lets publish tasks, and an auditor who reads the dead letters
    with extra_principal(rabbitmq_admin, federation.alice, f"mallory-{suffix}", rf"^{p}\.tasks$", "^$") as mallory, \
            extra_principal(rabbitmq_admin, federation.alice, f"audit-{suffix}", "^$",
                            rf"^{p}\.dead-letters$") as auditor, \
            RabbitBroker(federation.settings(federation.coordinator)) as coordinator, \
            RabbitBroker(federation.settings(mallory)) as attacker, \
            RabbitBroker(federation.settings(auditor)) as audit:
        coordinator.consume_replies(JOB, [alice])
        caplog.set_level(logging.WARNING, logger="fedmq.worker")
        with live_worker(federation.settings(federation.alice), alice, frozenset({coordinator_user})) as worker:
            # When mallory sends alice a train task in the coordinator's job, then the coordinator does
            attacker.publish_task(alice, train_task(JOB, "t-mallory"))
            coordinator.publish_task(alice, train_task(JOB, "t-coordinator"))
            reply = reply_of(coordinator)
            letters = dead_letters(audit, 1)
            # Then alice answered the coordinator only, and serves on
            assert worker.alive()
            assert coordinator.receive(timeout=1.0) is None, "alice answered mallory's task"
    assert isinstance(reply, Reply) and reply.task_id == "t-coordinator"
    # And mallory's task is in the dead letters, unrun, with alice's reason in her log
    assert len(letters) == 1
    refused = decode_message(letters[0].body)
    assert isinstance(refused, TrainTask) and refused.task_id == "t-mallory"
    assert f"a message from user {mallory.user!r}" in caplog.text and "refused unread" in caplog.text
