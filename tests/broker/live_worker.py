"""A toy WorkerService serving on the real RabbitMQ in a thread, for the fault and attack tests:
they break one message and then check that the next good task is still answered."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pika
import torch

from fedmq.broker.base import Broker, DeadLetter
from fedmq.broker.rabbitmq import RabbitBroker
from fedmq.broker.settings import BrokerSettings
from fedmq.protocol.messages import ErrorReply, Reply, TrainTask, Weights, decode_message, encode_message
from fedmq.worker.service import WorkerService
from fedmq.worker.settings import WorkerSettings
from fedmq.worker.task import ShardSpec, load_task

WAIT_S = 60.0  # an upper bound for a message to arrive, never a timing assertion
TOY = load_task("toy")


def toy_weights() -> Weights:
    torch.manual_seed(0)
    return {k: v.clone() for k, v in TOY.build_model().state_dict().items()}


def train_task(job: str, task_id: str | None = None) -> bytes:
    return bytes(encode_message(TrainTask(job=job, round=1, task_id=task_id or uuid.uuid4().hex, weights=toy_weights())))


@dataclass
class LiveWorker:
    name: str
    broker: RabbitBroker
    service: WorkerService
    thread: threading.Thread
    errors: list[BaseException]

    def alive(self) -> bool:
        return self.thread.is_alive() and not self.errors


@contextmanager
def live_worker(settings: BrokerSettings, name: str, task_senders: frozenset[str] | None = None
                ) -> Iterator[LiveWorker]:
    """A toy worker `name` serving in a thread until the block ends; asserts it ended cleanly."""
    broker = RabbitBroker(settings)
    worker_settings = WorkerSettings(name, "toy", ShardSpec(0, 1), poll_s=0.05, task_senders=task_senders)
    service = WorkerService(broker, worker_settings, task=TOY)
    broker.declare_worker(name)
    stop = threading.Event()
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            service.serve(stop)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    live = LiveWorker(name, broker, service, thread, errors)
    try:
        yield live
    finally:
        stop.set()
        thread.join(WAIT_S)
        broker.close()
    assert not errors, f"the worker's serve loop ended: {errors[0]!r}"


def reply_of(coordinator: Broker) -> Reply | ErrorReply:
    delivery = coordinator.receive(timeout=WAIT_S)
    assert delivery is not None, "no reply arrived"
    coordinator.ack(delivery)
    message = decode_message(delivery.body())
    assert isinstance(message, (Reply, ErrorReply))
    return message


def dead_letters(broker: Broker, expected: int) -> list[DeadLetter]:
    """Take `expected` dead letters (waiting for each), then whatever else is there at once."""
    letters: list[DeadLetter] = []
    for _ in range(expected):
        letter = broker.take_dead_letter(timeout=WAIT_S)
        assert letter is not None, f"{len(letters)} dead letters arrived, {expected} expected"
        letters.append(letter)
    while (extra := broker.take_dead_letter(timeout=0.5)) is not None:
        letters.append(extra)
    return letters


def declare_raw(url: str, queue: str, exchange: str, key: str, arguments: dict[str, object]) -> None:
    """Declare and bind a queue with raw pika, as an operator (or an attacker) could."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.queue_declare(queue, durable=True, arguments=arguments)
        channel.queue_bind(queue, exchange, routing_key=key)
    finally:
        connection.close()
