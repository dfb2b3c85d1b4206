"""A provisioned worker cannot starve the coordinator's chunk reassembly (issue 8, point 14).

alice announces 4 GiB chunked replies, in her own reply queue and in bob's, and sends nothing
more. The coordinator, which verifies senders, drops the one in bob's queue at its first piece
(announced by alice, not bob), reserves nothing for hers, and takes bob's chunked reply whole.
"""

from __future__ import annotations

import time
from dataclasses import replace

import pika

from broker.chunks import CHUNK_COUNT, MESSAGE_ID, TOTAL_SIZE
from broker.rabbitmq import RabbitBroker
from tests.broker.live_worker import WAIT_S
from tests.security.conftest import Federation

JOB = "job"
GIB = 1 << 30


def _announce_4_gib(federation: Federation, worker: str) -> None:
    alice = federation.alice
    connection = pika.BlockingConnection(pika.URLParameters(alice.url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        headers = {MESSAGE_ID: f"bomb-{worker}", CHUNK_COUNT: 4, TOTAL_SIZE: 4 * GIB}
        channel.basic_publish(f"{alice.prefix}.replies", f"{JOB}.{worker}", b"",
                              pika.BasicProperties(headers=headers, user_id=alice.user))
    finally:
        connection.close()


def test_a_worker_announcing_4_gib_does_not_starve_another_workers_chunked_reply(
        federation: Federation) -> None:
    alice, bob = federation.alice.user, federation.bob.user
    coordinator_settings = replace(federation.settings(federation.coordinator), verify_senders=True,
                                   chunk_size=1000)
    with RabbitBroker(coordinator_settings) as coordinator, \
            RabbitBroker(replace(federation.settings(federation.bob), chunk_size=1000)) as bob_broker:
        coordinator.consume_replies(JOB, [alice, bob])
        # Given alice's 4 GiB announcements in her reply queue and in bob's
        _announce_4_gib(federation, alice)
        _announce_4_gib(federation, bob)
        # When bob sends a 50 kB reply, in 50 chunks
        payload = bytes(range(250)) * 200
        bob_broker.publish_reply(JOB, bob, payload)
        # Then the coordinator takes it whole, from bob
        deadline = time.monotonic() + WAIT_S
        delivery = None
        while delivery is None and time.monotonic() < deadline:
            delivery = coordinator.receive(timeout=1.0)
        assert delivery is not None, "bob's chunked reply never came through"
        coordinator.ack(delivery)
    assert delivery.source == bob and delivery.user_id == bob and delivery.body() == payload
