"""Coordinator egress: bytes the coordinator publishes to send one round's model to N workers.

The round's training tasks go out through the coordinator's own path (TrainingJob._send_train:
one shared publish, Broker.publish_shared_task) to 16 workers' queues, with a 64 MB model, on
RabbitMQ and on the memory broker. The broker connection counts the message bodies it publishes
(announcement and chunks included). Target: <= 1.1x the encoded model; publishing one task per
worker, as fedmq did before, costs N x (16x here). Nobody consumes: the queues are deleted after.
"""

from __future__ import annotations

import time
import uuid

import pika

from benchmarks.codec import state_dict
from benchmarks.table import Row
from fedmq.broker.base import Broker
from fedmq.broker.memory import MemoryBroker, MemoryHub
from fedmq.broker.rabbitmq import RabbitBroker
from fedmq.broker.settings import BrokerSettings
from fedmq.broker.topology import Topology
from fedmq.coordinator.job import TrainingJob
from fedmq.coordinator.settings import TrainSettings
from fedmq.protocol.messages import TrainConfig, TrainTask, Weights, encode_message
from fedmq.worker.task import load_task

MODEL_BYTES = 64 << 20
WORKERS = 16


def run(url: str) -> list[Row]:
    weights = state_dict(MODEL_BYTES)
    model = len(encode_message(TrainTask(job="bench", round=1, task_id="t", weights=weights, config=TrainConfig())))
    names = [f"w{i}" for i in range(WORKERS)]
    rows = []
    hub_broker = MemoryBroker(MemoryHub())
    rows.append(_row("memory broker", hub_broker, names, weights, model))
    topology = Topology(f"bench-egress-{uuid.uuid4().hex[:8]}")
    rabbit = RabbitBroker(BrokerSettings(url=url, topology=topology))
    with rabbit:
        try:
            rows.append(_row("RabbitMQ", rabbit, names, weights, model))
        finally:
            _delete_topology(url, topology, names)
    return rows


def _row(where: str, broker: MemoryBroker | RabbitBroker, names: list[str], weights: Weights,
         model: int) -> Row:
    for name in names:
        broker.declare_worker(name)
    job = TrainingJob(_as_broker(broker), TrainSettings(task="toy", workers=tuple(names), job="bench"),
                      task=load_task("toy"))
    before = broker.bytes_published
    started = time.perf_counter()
    asked, failures = job._send_train(1, weights, time.monotonic() + 60, names)
    seconds = time.perf_counter() - started
    assert len(asked) == len(names) and not failures, failures
    sent = broker.bytes_published - before
    return Row(f"egress: coordinator bytes / model, N={len(names)}, {MODEL_BYTES >> 20} MB, {where}",
               sent / model, "ratio", "<= 1.1",
               f"{sent / 1e6:.1f} MB for a {model / 1e6:.1f} MB task; one task each: {len(names)}x; {seconds:.2f} s")


def _as_broker(broker: MemoryBroker | RabbitBroker) -> Broker:
    return broker


def _delete_topology(url: str, topology: Topology, names: list[str]) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    for queue in [topology.task_queue(name) for name in names] + [topology.dead_letter_queue]:
        channel.queue_delete(queue)
    for exchange in (topology.task_exchange, topology.reply_exchange, topology.dead_letter_exchange):
        channel.exchange_delete(exchange)
    connection.close()
