"""Integration tests of the RabbitMQ transport against a real broker (see tests/conftest.py)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pika
import pytest

from fedmq.broker import chunks
from fedmq.broker.base import Delivery
from fedmq.broker.rabbit_connection import redact
from fedmq.broker.rabbitmq import RabbitBroker
from fedmq.broker.settings import BrokerSettings
from fedmq.protocol.errors import BrokerError, BrokerUnreachable, Unroutable

if TYPE_CHECKING:
    from tests.conftest import BrokerAdmin

Connect = Callable[..., RabbitBroker]


@pytest.fixture
def connect(rabbit_settings: BrokerSettings) -> Iterator[Connect]:
    """Opens brokers on the test's topology (settings overridable); closes them all after."""
    opened: list[RabbitBroker] = []

    def open_broker(**changes: object) -> RabbitBroker:
        broker = RabbitBroker(dataclasses.replace(rabbit_settings, **changes))  # type: ignore[arg-type]
        opened.append(broker)
        return broker

    yield open_broker
    for broker in opened:
        broker.close()


def worker(connect: Connect, name: str = "alice", **changes: object) -> RabbitBroker:
    broker = connect(**changes)
    broker.consume_tasks(name)
    return broker


def received(broker: RabbitBroker, timeout: float = 10) -> Delivery:
    delivery = broker.receive(timeout)
    assert delivery is not None, f"nothing arrived within {timeout}s"
    return delivery


def publish_raw(settings: BrokerSettings, routing_key: str, frames: list[chunks.Frame]) -> None:
    """Publish hand-made messages to the task exchange with plain pika, as a foreign client would."""
    connection = pika.BlockingConnection(pika.URLParameters(settings.url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for frame in frames:
            properties = pika.BasicProperties(delivery_mode=2, headers=frame.headers or None)
            channel.basic_publish(
                settings.topology.task_exchange,
                routing_key,
                bytes(frame.body),
                properties,
                mandatory=True,
            )
    finally:
        connection.close()


def with_query(url: str, query: str) -> str:
    parts = urlsplit(url)
    return parts._replace(query=f"{parts.query}&{query}" if parts.query else query).geturl()


def test_a_task_and_its_reply_make_the_round_trip(connect: Connect) -> None:
    # Given a worker consuming its tasks and a coordinator consuming the job's replies
    alice = worker(connect)
    coordinator = connect()
    coordinator.declare_job("job1", ["alice"])
    coordinator.consume_replies("job1", ["alice"])
    # When the coordinator sends a task
    coordinator.publish_task("alice", memoryview(b"train please"))
    # Then the worker receives it from its own queue
    task = received(alice)
    assert (task.body(), task.source, task.redelivered) == (b"train please", "alice", False)
    alice.ack(task)
    # When the worker replies
    alice.publish_reply("job1", "alice", b"my update")
    # Then the coordinator receives the reply, knowing it came from alice
    reply = received(coordinator)
    assert (reply.body(), reply.source) == (b"my update", "alice")
    coordinator.ack(reply)
    assert coordinator.reconnects == 0 and alice.reconnects == 0


def test_a_task_to_a_worker_that_never_started_is_unroutable(connect: Connect) -> None:
    # Given a coordinator and no worker named ghost
    coordinator = connect()
    assert not coordinator.has_worker("ghost")
    # When a task is sent to ghost; then it is refused, naming the worker
    with pytest.raises(Unroutable, match="ghost"):
        coordinator.publish_task("ghost", b"task")
    # And the connection stays usable: once ghost starts, the task goes through
    ghost = worker(connect, "ghost")
    assert coordinator.has_worker("ghost")
    coordinator.publish_task("ghost", b"task")
    assert received(ghost).body() == b"task"


def test_a_reply_after_the_job_was_deleted_is_unroutable(connect: Connect) -> None:
    coordinator = connect()
    coordinator.declare_job("job1", ["alice"])
    coordinator.consume_replies("job1", ["alice"])
    coordinator.delete_job("job1", ["alice"])
    with pytest.raises(Unroutable, match="job1"):
        connect().publish_reply("job1", "alice", b"late")


def test_a_64_mb_payload_crosses_in_1_mib_chunks_byte_identical(connect: Connect) -> None:
    # Given brokers that chunk above 1 MiB, and a 64 MB payload
    alice = worker(connect, chunk_size=1 << 20)
    coordinator = connect(chunk_size=1 << 20)
    payload = os.urandom(64 << 20)
    # When it is sent as a task
    coordinator.publish_task("alice", memoryview(payload))
    # Then it arrives as 64 parts that join to the same bytes
    delivery = received(alice, timeout=60)
    assert len(delivery.parts) == 64
    assert delivery.size == len(payload)
    assert delivery.body() == payload
    # And acknowledging it acks every piece: nothing comes back after a reconnect
    alice.ack(delivery)
    alice.close()
    assert worker(connect).receive(timeout=0.3) is None


def test_a_corrupt_chunk_fails_only_its_message(
    connect: Connect, rabbit_settings: BrokerSettings
) -> None:
    # Given a worker, and a chunked task whose chunk 1 has a wrong crc, followed by a good task
    alice = worker(connect)
    frames = list(chunks.split(b"0123456789" * 3, chunk_size=10, message_id="bad-one"))
    frames[2] = chunks.Frame({**frames[2].headers, chunks.CHUNK_CRC: 12345}, frames[2].body)
    publish_raw(rabbit_settings, "alice", [*frames, chunks.Frame({}, b"good task")])
    # When the worker receives; then the good task arrives
    assert received(alice).body() == b"good task"
    # And the corrupt message is dead-lettered with a reason naming the chunk, from alice
    letter = alice.take_dead_letter(timeout=10)
    assert letter is not None
    assert "chunk 1 of 3 is corrupt" in letter.reason
    assert letter.source == "alice"
    # And its pieces were acknowledged: nothing else is waiting
    assert alice.receive(timeout=0.3) is None
    assert alice.take_dead_letter(timeout=0.1) is None


def test_an_incomplete_chunked_message_expires_into_the_dead_letters(
    connect: Connect, rabbit_settings: BrokerSettings
) -> None:
    # Given a worker with a short chunk timeout, and a task whose last chunk never comes
    alice = worker(connect, chunk_timeout_s=0.3)
    frames = list(chunks.split(b"x" * 30, chunk_size=10, message_id="cut-short"))
    publish_raw(rabbit_settings, "alice", frames[:3])
    # When the worker waits; then nothing is delivered
    assert alice.receive(timeout=0.5) is None
    # And the partial message is dead-lettered as expired
    letter = alice.take_dead_letter(timeout=10)
    assert letter is not None
    assert "expired: 2 of 3 chunks arrived" in letter.reason


def test_interleaved_chunked_tasks_from_two_coordinators_both_arrive(
    connect: Connect, rabbit_settings: BrokerSettings
) -> None:
    # Given two chunked tasks whose pieces interleave in one worker's queue
    alice = worker(connect)
    a = list(chunks.split(b"a" * 40, chunk_size=10))
    b = list(chunks.split(b"b" * 30, chunk_size=10))
    publish_raw(rabbit_settings, "alice", [a[0], b[0], a[1], b[1], a[2], b[2], a[3], b[3], a[4]])
    # When the worker receives twice, acknowledging each
    bodies = []
    for _ in range(2):
        delivery = received(alice)
        bodies.append(delivery.body())
        alice.ack(delivery)
    # Then both arrive whole
    assert sorted(bodies) == [b"a" * 40, b"b" * 30]


def test_dead_letter_records_the_reason_and_the_source(connect: Connect) -> None:
    # Given a worker holding a task it cannot use
    alice = worker(connect)
    coordinator = connect()
    coordinator.publish_task("alice", b"garbage")
    delivery = received(alice)
    # When it dead-letters the task
    alice.dead_letter(delivery, "not valid msgpack")
    # Then the dead letter keeps body, reason and source
    letter = coordinator.take_dead_letter(timeout=10)
    assert letter is not None
    assert (letter.body, letter.reason, letter.source) == (b"garbage", "not valid msgpack", "alice")
    # And the task was acknowledged: it does not come back
    alice.close()
    assert worker(connect).receive(timeout=0.3) is None


def test_an_unacknowledged_delivery_returns_to_the_queue_after_close(connect: Connect) -> None:
    # Given a worker that received a task and closed without acknowledging it
    alice = worker(connect)
    connect().publish_task("alice", b"task")
    assert not received(alice).redelivered
    alice.close()
    alice.close()  # idempotent
    # When the worker comes back; then the task is delivered again, marked redelivered
    again = received(worker(connect))
    assert again.body() == b"task"
    assert again.redelivered


def test_an_ack_followed_by_nothing_but_close_still_settles_the_delivery(connect: Connect) -> None:
    # Given a worker that received a task and acked it (the ack waits for the connection's next I/O)
    alice = worker(connect)
    connect().publish_task("alice", b"task")
    alice.ack(received(alice))
    # When it closes without any other I/O, and a new worker consumes the queue
    alice.close()
    # Then the close carried the ack out first: nothing comes back
    assert worker(connect).receive(timeout=0.5) is None


def test_an_ack_then_a_receive_lets_the_next_task_through(connect: Connect) -> None:
    # Given a worker (prefetch 1) holding its first of two tasks
    alice = worker(connect)
    coordinator = connect()
    coordinator.publish_task("alice", b"first")
    coordinator.publish_task("alice", b"second")
    first = received(alice)
    # When it acks the first and waits for more
    alice.ack(first)
    # Then the second arrives (the broker saw the ack), and the first never returns
    assert received(alice).body() == b"second"
    assert alice.receive(timeout=0.3) is None


def test_run_beside_io_keeps_the_connection_alive_past_two_heartbeats(
    connect: Connect, rabbit_settings: BrokerSettings
) -> None:
    # Given two brokers whose connections must heartbeat every second: alice, and a control
    # connection that nothing services meanwhile (RabbitMQ drops it after ~3 silent seconds)
    heartbeat_url = with_query(rabbit_settings.url, "heartbeat=1")
    alice = worker(connect, url=heartbeat_url)
    control = worker(connect, "bob", url=heartbeat_url)

    # When alice runs work for four heartbeat intervals
    def train() -> str:
        time.sleep(4)
        return "trained"

    between: list[str] = []
    result = alice.run_beside_io(train, between=lambda: between.append(threading.current_thread().name))
    # Then the work's result comes back and alice's connection was never lost
    assert result == "trained"
    # And `between` ran meanwhile, on the connection's own thread
    assert between and set(between) == {threading.current_thread().name}
    assert alice.reconnects == 0
    # And it is still usable
    coordinator = connect()
    coordinator.publish_task("alice", b"next task")
    assert received(alice).body() == b"next task"
    assert alice.reconnects == 0
    # While the unserviced control connection was dropped, and recovered on its next use
    coordinator.publish_task("bob", b"task")
    assert received(control).body() == b"task"
    assert control.reconnects == 1


def test_run_beside_io_reraises_the_work_error_and_serves_on(connect: Connect) -> None:
    # Given a connection whose first work fails
    def fail() -> None:
        raise ValueError("bad shard")

    alice = connect()
    with pytest.raises(ValueError, match="bad shard"):
        alice.run_beside_io(fail)
    # When it runs more work; then that runs, on one work thread that is not the caller's
    names = {alice.run_beside_io(lambda: threading.current_thread().name) for _ in range(3)}
    assert len(names) == 1 and threading.current_thread().name not in names


def test_an_unreachable_broker_is_named_in_one_line_without_the_password(
    rabbit_settings: BrokerSettings,
) -> None:
    # Given a URL where nothing listens; when a broker is opened there
    settings = dataclasses.replace(rabbit_settings, url="amqp://guest:secret@127.0.0.1:1/")
    with pytest.raises(BrokerUnreachable) as caught:
        RabbitBroker(settings)
    # Then the message is one line, names the URL without the password, and says what to do
    message = str(caught.value)
    assert "\n" not in message
    assert "amqp://guest:***@127.0.0.1:1/" in message
    assert "secret" not in message
    assert "connection refused" in message
    assert "FEDMQ_BROKER" in message


def test_bad_credentials_are_reported_as_access_refused(rabbit_settings: BrokerSettings) -> None:
    parts = urlsplit(rabbit_settings.url)
    url = parts._replace(netloc=f"guest:wrong-password@{parts.hostname}:{parts.port}").geturl()
    with pytest.raises(
        BrokerUnreachable, match="access refused: check the user and password"
    ) as caught:
        RabbitBroker(dataclasses.replace(rabbit_settings, url=url))
    assert "wrong-password" not in str(caught.value)


def test_the_broker_reconnects_after_the_server_closes_the_connection(
    connect: Connect, rabbit_settings: BrokerSettings, rabbitmq_admin: BrokerAdmin
) -> None:
    # Given a worker holding an unacknowledged task
    alice = worker(connect)
    coordinator = connect()
    coordinator.publish_task("alice", b"first")
    first = received(alice)
    # When the server closes the worker's connection
    closed = rabbitmq_admin.close_connections(f"fedmq {rabbit_settings.topology.prefix} ")
    if closed == 0:  # no server-side admin here: drop the socket under pika instead
        alice._link._connection._impl._transport._sock.shutdown(socket.SHUT_RDWR)
    # Then acknowledging the task from the lost connection is a harmless no-op
    alice.ack(first)
    # And after the reconnect the task comes again (it was never acknowledged), then new work
    again = received(alice)
    assert (again.body(), again.redelivered) == (b"first", True)
    alice.ack(again)
    coordinator.publish_task("alice", b"second")
    assert received(alice).body() == b"second"
    assert alice.reconnects == 1


def test_receive_with_no_time_left_still_returns_a_waiting_message(connect: Connect) -> None:
    # Given a task already published to a consuming worker
    alice = worker(connect)
    connect().publish_task("alice", b"ready")
    time.sleep(0.2)  # let it reach alice's socket
    # When the worker receives without waiting; then the task is there
    delivery = alice.receive(timeout=0)
    assert delivery is not None and delivery.body() == b"ready"


def test_a_large_dead_letter_crosses_in_chunks_and_comes_back_whole(connect: Connect) -> None:
    # Given a worker with 1 KiB chunks holding a 10 KiB task it cannot use
    alice = worker(connect, chunk_size=1024)
    payload = os.urandom(10 * 1024)
    connect(chunk_size=1024).publish_task("alice", payload)
    delivery = received(alice)
    assert len(delivery.parts) == 10
    # When it dead-letters it; then the dead letter holds the whole body
    alice.dead_letter(delivery, "undecodable")
    letter = alice.take_dead_letter(timeout=10)
    assert letter is not None
    assert (letter.body, letter.reason, letter.source) == (payload, "undecodable", "alice")


class Proxy:
    """A TCP relay to the broker that a test can cut, as a failed network would."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        """Drop every connection and refuse new ones."""
        for sock in [self._listener, *self._sockets]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self._listener.accept()
                server = socket.create_connection(self._target)
                self._sockets += [client, server]
                for a, b in ((client, server), (server, client)):
                    threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def test_the_broker_gives_up_after_the_reconnect_window(
    connect: Connect, rabbit_settings: BrokerSettings
) -> None:
    # Given a worker connected through a relay, allowed half a second to reconnect
    parts = urlsplit(rabbit_settings.url)
    proxy = Proxy(parts.hostname or "127.0.0.1", parts.port or 5672)
    url = parts._replace(
        netloc=f"{parts.username}:{parts.password}@127.0.0.1:{proxy.port}"
    ).geturl()
    alice = worker(connect, url=url, reconnect_for_s=0.5)
    # When the network fails for good
    proxy.cut()
    # Then the next operation gives up with a BrokerError naming the broker, password hidden
    with pytest.raises(BrokerError, match="could not reconnect within 0.5s") as caught:
        alice.receive(timeout=5)
    assert f"127.0.0.1:{proxy.port}" in str(caught.value)
    assert parts.password is None or f":{parts.password}@" not in str(caught.value)


def test_a_url_that_is_not_amqp_is_refused_before_connecting() -> None:
    with pytest.raises(BrokerError, match="not a RabbitMQ URL"):
        RabbitBroker(BrokerSettings(url="http://user:secret@example.com/"))


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("amqp://guest:guest@127.0.0.1:5672/", "amqp://guest:***@127.0.0.1:5672/"),
        ("amqps://me:p%40ss@host/vh?heartbeat=2", "amqps://me:***@host/vh?heartbeat=2"),
        ("amqp://host:5672/", "amqp://host:5672/"),
    ],
)
def test_urls_are_shown_without_their_password(url: str, shown: str) -> None:
    assert redact(url) == shown
