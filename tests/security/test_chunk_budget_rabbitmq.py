"""A provisioned worker cannot starve the coordinator's chunk reassembly (issue 8, point 14).

alice announces 4 GiB chunked replies, in her own reply queue and in bob's, and sends nothing
more. The coordinator, which verifies senders, drops the one in bob's queue at its first piece
(announced by alice, not bob), reserves nothing for hers, and takes bob's chunked reply whole,
even when bob's transfer pauses too (two stalled messages: alice's must not be the only one read).
"""

from __future__ import annotations

import time
from dataclasses import replace

import pika

from fedmq.broker.chunks import CHUNK_COUNT, MESSAGE_ID, STALL_S, TOTAL_SIZE, Frame, split
from fedmq.broker.provision import Credentials
from fedmq.broker.rabbitmq import RabbitBroker
from tests.broker.live_worker import WAIT_S
from tests.security.conftest import Federation

JOB = "job"
GIB = 1 << 30


def _publish_as(who: Credentials, worker: str, frames: list[Frame]) -> None:
    """Publish frames into `worker`'s reply queue with raw pika, as `who` (its own user_id)."""
    connection = pika.BlockingConnection(pika.URLParameters(who.url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for frame in frames:
            channel.basic_publish(f"{who.prefix}.replies", f"{JOB}.{worker}", bytes(frame.body),
                                  pika.BasicProperties(headers=frame.headers, user_id=who.user))
    finally:
        connection.close()


def _bomb(worker: str) -> list[Frame]:
    return [Frame({MESSAGE_ID: f"bomb-{worker}", CHUNK_COUNT: 4, TOTAL_SIZE: 4 * GIB}, b"")]


def test_a_worker_announcing_4_gib_does_not_starve_another_workers_chunked_reply(
        federation: Federation) -> None:
    alice, bob = federation.alice.user, federation.bob.user
    coordinator_settings = replace(federation.settings(federation.coordinator), verify_senders=True,
                                   chunk_size=1000)
    with RabbitBroker(coordinator_settings) as coordinator:
        coordinator.consume_replies(JOB, [alice, bob])
        # Given alice's 4 GiB announcements in her reply queue and in bob's
        _publish_as(federation.alice, alice, _bomb(alice))
        _publish_as(federation.alice, bob, _bomb(bob))
        # When bob announces a 50 kB reply and, after a pause longer than a stall, sends its 50 chunks
        payload = bytes(range(250)) * 200
        frames = list(split(payload, 1000))
        _publish_as(federation.bob, bob, frames[:1])
        assert coordinator.receive(timeout=2 * STALL_S) is None
        _publish_as(federation.bob, bob, frames[1:])
        # Then the coordinator takes it whole, from bob
        deadline = time.monotonic() + WAIT_S
        delivery = None
        while delivery is None and time.monotonic() < deadline:
            delivery = coordinator.receive(timeout=1.0)
        assert delivery is not None, "bob's chunked reply never came through"
        coordinator.ack(delivery)
    assert delivery.source == bob and delivery.user_id == bob and delivery.body() == payload
