"""Transport speed: a 256 MB model coordinator -> worker -> coordinator over RabbitMQ.

Compared, in the same run, with raw pika moving the same bytes the same way: 8 MiB messages
(RabbitMQ cannot take 256 MB in one), durable queues, persistent messages, publisher confirms
and acks, there and back. Target: fedmq >= 0.7x raw. A transient, unconfirmed raw run is shown
too, for what delivery guarantees cost. (The benchmark may use pika: it measures pika itself.)
"""

from __future__ import annotations

import time
import uuid

import pika

from benchmarks.codec import state_dict
from benchmarks.table import Row
from fedmq.broker.rabbitmq import RabbitBroker
from fedmq.broker.settings import BrokerSettings
from fedmq.broker.topology import Topology
from fedmq.protocol.messages import Reply, TrainConfig, TrainTask, decode_message, encode_message

MODEL_BYTES = 256 << 20
CHUNK = 8 << 20
REPEATS = 5


def run(url: str) -> list[Row]:
    weights = state_dict(MODEL_BYTES)
    payload = bytes(encode_message(TrainTask(job="bench", round=1, task_id="t", weights=weights, config=TrainConfig())))
    timings: dict[str, list[float]] = {"fedmq": [], "raw": [], "transient": []}
    for _ in range(REPEATS):  # interleaved, so the broker's state drifts alike for all three
        timings["fedmq"].append(_fedmq_round_trip(url, weights))
        timings["raw"].append(_raw_round_trip(url, payload, durable=True))
        timings["transient"].append(_raw_round_trip(url, payload, durable=False))
    fedmq_s, raw_s, transient_s = (min(timings[k]) for k in ("fedmq", "raw", "transient"))
    mb = MODEL_BYTES / 1e6
    return [
        Row("transport: fedmq there and back", 2 * mb / fedmq_s, "MB/s", ">= 0", f"{fedmq_s:.2f} s, best of {REPEATS}"),
        Row("transport: raw pika, same guarantees", 2 * mb / raw_s, "MB/s", ">= 0", f"{raw_s:.2f} s"),
        Row("transport: raw pika, transient, no confirms", 2 * mb / transient_s, "MB/s", ">= 0", f"{transient_s:.2f} s"),
        Row("transport: fedmq / raw pika", raw_s / fedmq_s, "ratio", ">= 0.7", "same bytes, same run"),
    ]


def _fedmq_round_trip(url: str, weights: dict[str, object]) -> float:
    settings = BrokerSettings(url=url, topology=Topology(f"bench-{uuid.uuid4().hex[:8]}"), chunk_size=CHUNK)
    with RabbitBroker(settings) as coordinator, RabbitBroker(settings) as worker:
        worker.consume_tasks("w")
        coordinator.consume_replies("bench", ["w"])
        started = time.perf_counter()
        coordinator.publish_task("w", encode_message(TrainTask(job="bench", round=1, task_id="t", weights=weights, config=TrainConfig())))  # type: ignore[arg-type]
        task_delivery = _receive(worker)
        task = decode_message(task_delivery.parts)
        assert isinstance(task, TrainTask)
        worker.publish_reply("bench", "w", encode_message(Reply(job="bench", round=1, task_id="t", worker="w", update=task.weights, num_examples=1, metrics={})))
        worker.ack(task_delivery)
        reply_delivery = _receive(coordinator)
        reply = decode_message(reply_delivery.parts)
        coordinator.ack(reply_delivery)
        elapsed = time.perf_counter() - started
        assert isinstance(reply, Reply) and len(reply.update) == len(weights)
        coordinator.delete_job("bench", ["w"])
        _delete_topology(url, settings.topology)
    return elapsed


def _receive(broker: RabbitBroker):  # type: ignore[no-untyped-def]
    delivery = broker.receive(timeout=120)
    assert delivery is not None, "nothing arrived within 120 s"
    return delivery


def _raw_round_trip(url: str, payload: bytes, *, durable: bool) -> float:
    there, back = f"bench-raw-{uuid.uuid4().hex[:8]}", f"bench-raw-{uuid.uuid4().hex[:8]}"
    a, b = pika.BlockingConnection(pika.URLParameters(url)), pika.BlockingConnection(pika.URLParameters(url))
    ca, cb = a.channel(), b.channel()
    for channel in (ca, cb):
        if durable:
            channel.confirm_delivery()
        channel.basic_qos(prefetch_count=4)
        for queue in (there, back):
            channel.queue_declare(queue, durable=durable)
    started = time.perf_counter()
    parts = _raw_send_and_take(ca, cb, there, [payload[i:i + CHUNK] for i in range(0, len(payload), CHUNK)], durable)
    _raw_send_and_take(cb, ca, back, parts, durable)
    elapsed = time.perf_counter() - started
    ca.queue_delete(there)
    ca.queue_delete(back)
    a.close()
    b.close()
    return elapsed


def _raw_send_and_take(sender, receiver, queue: str, parts: list[bytes], durable: bool) -> list[bytes]:  # type: ignore[no-untyped-def]
    properties = pika.BasicProperties(delivery_mode=2 if durable else 1)
    for part in parts:
        sender.basic_publish("", queue, part, properties)
    got: list[bytes] = []
    for method, _props, body in receiver.consume(queue, inactivity_timeout=60):
        assert method is not None, "raw consume timed out"
        got.append(body)
        receiver.basic_ack(method.delivery_tag)
        if len(got) == len(parts):
            break
    receiver.cancel()
    return got


def _delete_topology(url: str, topology: Topology) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    for queue in (topology.task_queue("w"), topology.dead_letter_queue):
        channel.queue_delete(queue)
    for exchange in (topology.task_exchange, topology.reply_exchange, topology.dead_letter_exchange):
        channel.exchange_delete(exchange)
    connection.close()
