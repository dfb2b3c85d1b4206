"""Fuzz: forged senders. Random principals publish valid and hostile messages; only the right
sender's messages are ever acted on, and neither a worker nor a coordinator stops serving.

On the memory broker, whose connections play AMQP users exactly as RabbitMQ stamps them (the
single-case versions of these attacks run on RabbitMQ in tests/security).
"""

from __future__ import annotations

import random
import threading
import time

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedmq.broker.memory import MemoryBroker, MemoryHub
from fedmq.coordinator.rounds import ReplyCollector
from fedmq.protocol.messages import Reply, TrainTask, decode_message, encode_message
from tests.fuzz.payloads import payloads
from fedmq.worker.service import WorkerService
from fedmq.worker.settings import WorkerSettings
from fedmq.worker.task import ShardSpec, load_task

TOY = load_task("toy")
SENDERS = ["coordinator", "analyst", "w", "other-worker", None]  # None: a message without a user_id


def _task(task_id: str) -> bytes:
    torch.manual_seed(0)
    return bytes(encode_message(TrainTask(job="job", round=1, task_id=task_id, weights=dict(TOY.build_model().state_dict()))))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(SENDERS), st.booleans(), payloads("w")), min_size=1, max_size=12))
def test_a_worker_runs_only_its_coordinators_tasks_whoever_else_publishes(
        messages: list[tuple[str | None, bool, bytes]]) -> None:
    # Given a worker that takes tasks only from "coordinator"
    hub = MemoryHub()
    brokers = {who: MemoryBroker(hub, user=who) for who in SENDERS}
    coordinator = brokers["coordinator"]
    coordinator.declare_worker("w")
    coordinator.declare_job("job", ["w"])
    coordinator.consume_replies("job", ["w"])
    service = WorkerService(MemoryBroker(hub, user="w"), WorkerSettings(
        "w", "toy", ShardSpec(0, 1), poll_s=0.02, task_senders=frozenset({"coordinator"})), task=TOY)
    stop = threading.Event()
    thread = threading.Thread(target=service.serve, args=(stop,), daemon=True)
    thread.start()
    # When each sender publishes a runnable task (or a hostile payload) to its queue
    expected = []
    for index, (who, runnable, hostile) in enumerate(messages):
        body = _task(f"t{index}") if runnable else hostile
        brokers[who].publish_task("w", body)
        if runnable and who == "coordinator":
            expected.append(f"t{index}")
    answered = []
    try:
        while len(answered) < len(expected) and (delivery := coordinator.receive(timeout=10)) is not None:
            reply = decode_message(delivery.body())
            coordinator.ack(delivery)
            if isinstance(reply, Reply):
                answered.append(reply.task_id)
        brokers["coordinator"].publish_task("w", _task("last"))  # and then one more, to see it still serves
        last = coordinator.receive(timeout=10)
    finally:
        stop.set()
        thread.join(10)
    # Then exactly the coordinator's runnable tasks were answered, and the worker still serves
    assert answered == expected
    assert last is not None and decode_message(last.body()).task_id == "last"  # type: ignore[union-attr]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["w0", "w1", "analyst", None]), st.sampled_from(["w0", "w1"])),
                min_size=1, max_size=10), st.randoms(use_true_random=False))
def test_a_coordinator_counts_only_replies_whose_user_id_is_their_worker(
        forged: list[tuple[str | None, str]], rng: random.Random) -> None:
    # Given a round that asked w0 and w1, with senders verified
    hub = MemoryHub()
    coordinator = MemoryBroker(hub, user="coordinator")
    coordinator.declare_job("job", ["w0", "w1"])
    coordinator.consume_replies("job", ["w0", "w1"])
    asked = {"t0": "w0", "t1": "w1"}
    # When replies in every worker's name arrive from random principals, then the real ones
    update = {"w": torch.ones(1)}
    for who, name in forged + [("w0", "w0"), ("w1", "w1")]:
        task_id = "t0" if name == "w0" else "t1"
        reply = Reply(job="job", round=1, task_id=task_id, worker=name, update=update, num_examples=rng.randint(1, 9) if who != name else 5, metrics={})
        MemoryBroker(hub, user=who).publish_reply("job", name, encode_message(reply))
    used: list[Reply] = []
    collected = ReplyCollector(coordinator, "job", 1, asked, verify_senders=True).collect(
        deadline=time.monotonic() + 5, on_reply=lambda r: used.append(r) or None)
    # Then each worker's reply is used once, and it is the one its own principal sent (5 examples);
    # every forged reply ahead of its queue's first honest one was dead-lettered (later ones may be)
    sent = forged + [("w0", "w0"), ("w1", "w1")]
    ahead = sum(_forged_before_honest([who for who, n in sent if n == name], name) for name in ("w0", "w1"))
    assert sorted(r.worker for r in used) == ["w0", "w1"]
    assert all(r.num_examples == 5 for r in used)
    assert ahead <= collected.dead_lettered <= sum(1 for who, name in forged if who != name)


def _forged_before_honest(senders: list[str | None], worker: str) -> int:
    return next(i for i, who in enumerate(senders) if who == worker)
