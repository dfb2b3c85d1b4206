"""Credentials and permissions on a real broker: each denial shown, and a provisioned run.

Raw pika plays a hostile worker that uses its own valid credentials to reach what is not its own.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pika
import pika.exceptions as px
import pytest
import torch

from fedmq.broker.rabbitmq import RabbitBroker
from fedmq.coordinator import processes
from fedmq.coordinator.rounds import ReplyCollector
from fedmq.protocol.messages import Reply, encode_message
from tests.coordinator.conftest import ROOT, fedmq
from tests.security.conftest import Federation

JOB = "job"


@pytest.fixture
def channel_as_alice(federation: Federation) -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
    connection = pika.BlockingConnection(pika.URLParameters(federation.alice.url))
    channel = connection.channel()
    channel.confirm_delivery()
    yield channel
    connection.close()


def _reply(task_id: str, worker: str) -> bytes:
    return bytes(encode_message(Reply(job=JOB, round=1, task_id=task_id, worker=worker, update={"w": torch.ones(1)}, num_examples=5, metrics={})))


def test_alice_cannot_consume_bobs_task_queue(federation: Federation, channel_as_alice: object) -> None:
    # When alice, logged in with her own credentials, consumes bob's task queue
    bob_queue = f"{federation.bob.prefix}.tasks.{federation.bob.user}"
    with pytest.raises(px.ChannelClosedByBroker) as refused:
        channel_as_alice.basic_consume(bob_queue, lambda *args: None)  # type: ignore[attr-defined]
    # Then the broker refuses it
    assert refused.value.reply_code == 403 and "ACCESS_REFUSED" in refused.value.reply_text


def test_alice_cannot_publish_a_task(federation: Federation, channel_as_alice: object) -> None:
    # When alice publishes a task to bob through the task exchange
    with pytest.raises(px.ChannelClosedByBroker) as refused:
        channel_as_alice.basic_publish(  # type: ignore[attr-defined]
            f"{federation.alice.prefix}.tasks", federation.bob.user, b"a forged task")
    # Then the broker refuses it
    assert refused.value.reply_code == 403 and "ACCESS_REFUSED" in refused.value.reply_text


def test_a_forged_user_id_is_refused_by_the_broker(federation: Federation, channel_as_alice: object) -> None:
    # When alice publishes a reply that claims bob's user_id
    key = f"{JOB}.{federation.bob.user}"
    with pytest.raises(px.ChannelClosedByBroker) as refused:
        channel_as_alice.basic_publish(  # type: ignore[attr-defined]
            f"{federation.alice.prefix}.replies", key, _reply("t", federation.bob.user),
            pika.BasicProperties(user_id=federation.bob.user))
    # Then the broker refuses it: user_id must be the connection's own user
    assert refused.value.reply_code == 406 and "user_id" in refused.value.reply_text


def test_the_coordinator_accepts_only_replies_whose_user_id_is_their_worker(
        federation: Federation, channel_as_alice: object) -> None:
    # Given a coordinator collecting a round that asked alice (task a1) and bob (task b1)
    alice, bob = federation.alice.user, federation.bob.user
    with RabbitBroker(federation.settings(federation.coordinator)) as coordinator, \
            RabbitBroker(federation.settings(federation.bob)) as bob_broker, \
            RabbitBroker(federation.settings(federation.alice)) as alice_broker:
        coordinator.declare_job(JOB, [alice, bob])
        coordinator.consume_replies(JOB, [alice, bob])
        # When alice sends a reply without user_id, bob routes one into alice's queue in her name,
        channel_as_alice.basic_publish(  # type: ignore[attr-defined]
            f"{federation.alice.prefix}.replies", f"{JOB}.{alice}", _reply("a1", alice))
        bob_broker.publish_reply(JOB, alice, _reply("a1", alice))
        # and then each answers properly through fedmq
        alice_broker.publish_reply(JOB, alice, _reply("a1", alice))
        bob_broker.publish_reply(JOB, bob, _reply("b1", bob))
        collector = ReplyCollector(coordinator, JOB, 1, {"a1": alice, "b1": bob}, verify_senders=True)
        collected = collector.collect(time.monotonic() + 30, lambda reply: None)
    # Then only the two proper replies count, and the others were dead-lettered as unverified
    assert sorted(answer.worker for answer in collected.replies) == sorted([alice, bob])
    assert collected.dead_lettered == 2 and collected.silent == []


def test_a_provisioned_federation_trains_with_its_credentials_only(
        federation: Federation, tmp_path: Path) -> None:
    # Given alice and bob started with their credentials files (no guest, no --broker)
    workers = [processes.start(processes.worker_args(who.user, "toy", index, 2, "--credentials",
                                                     str(federation.file(who))),
                               cwd=ROOT, log=tmp_path / f"{who.user}.log")
               for index, who in enumerate([federation.bob, federation.alice])]
    try:
        # When the coordinator trains with its own credentials (which verifies user_ids)
        metrics = tmp_path / "m.jsonl"
        done = subprocess.run(
            fedmq("train", "--task", "toy", "--workers", f"{federation.bob.user},{federation.alice.user}",
                  "--rounds", "2", "--batch-size", "2", "--credentials", str(federation.file(federation.coordinator)),
                  "--metrics-out", str(metrics)),
            cwd=ROOT, capture_output=True, text=True, timeout=180)
    finally:
        for worker in workers:
            worker.terminate()
            worker.wait(timeout=30)
    # Then both rounds complete with both workers' replies
    assert done.returncode == 0, done.stderr + "".join(
        (tmp_path / f"{who.user}.log").read_text() for who in [federation.alice, federation.bob])
    assert metrics.read_text().count('"replies": 2') == 2


def test_worker_credentials_for_another_name_are_a_usage_error(federation: Federation) -> None:
    # When bob's credentials are used to start a worker named alice
    done = subprocess.run(fedmq("worker", "--id", federation.alice.user, "--task", "toy",
                                "--credentials", str(federation.file(federation.bob))),
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    # Then it exits 2 naming the mismatch, before connecting
    assert done.returncode == 2 and "is for worker" in done.stderr, done.stderr
