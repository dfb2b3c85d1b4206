"""The worker service on the memory broker: a coordinator-side connection sends tasks to a
worker serving in a thread, and reads its replies and dead letters."""

import logging
import threading
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from fedmq.broker.memory import MemoryBroker, MemoryHub
from fedmq.protocol.errors import TaskError
from fedmq.protocol.messages import (
    ErrorReply,
    EvaluateTask,
    Message,
    Reply,
    TrainConfig,
    TrainTask,
    Weights,
    decode_message,
    encode_message,
)
from fedmq.worker.service import WorkerService, resolve_device
from fedmq.worker.settings import WorkerSettings, apply_torch_threads
from fedmq.worker.task import ShardSpec, Task, load_task

JOB = "job-1"
WORKER = "w0"
WHOLE = ShardSpec(0, 1)
WAIT_S = 10.0  # an upper bound for a message to arrive, never a timing assertion


@dataclass
class Rig:
    hub: MemoryHub
    coordinator: MemoryBroker
    worker_broker: MemoryBroker
    service: WorkerService
    stop: threading.Event
    thread: threading.Thread

    def send(self, message: Message | bytes) -> None:
        body = message if isinstance(message, bytes) else encode_message(message)
        self.coordinator.publish_task(WORKER, body)

    def reply(self) -> Reply | ErrorReply:
        delivery = self.coordinator.receive(timeout=WAIT_S)
        assert delivery is not None, "no reply arrived"
        self.coordinator.ack(delivery)
        message = decode_message(delivery.body())
        assert isinstance(message, (Reply, ErrorReply))
        return message

    def queued_tasks(self) -> list[bytes]:
        return [m.body for m in self.hub.queues[self.hub.topology.task_queue(WORKER)].messages]


@contextmanager
def serving(task: Task, shard: ShardSpec = WHOLE,
            worker_broker_type: Callable[[MemoryHub], MemoryBroker] = MemoryBroker) -> Iterator[Rig]:
    """A worker serving `task` in a thread, and a coordinator connection with the job declared."""
    hub = MemoryHub()
    coordinator = MemoryBroker(hub)
    coordinator.declare_worker(WORKER)  # so tasks are routable before the thread starts
    coordinator.declare_job(JOB, [WORKER])
    coordinator.consume_replies(JOB, [WORKER])
    worker_broker = worker_broker_type(hub)
    service = WorkerService(worker_broker, WorkerSettings(WORKER, task.name, shard, poll_s=0.05), task=task)
    stop = threading.Event()
    thread = threading.Thread(target=service.serve, args=(stop,), daemon=True)
    thread.start()
    rig = Rig(hub, coordinator, worker_broker, service, stop, thread)
    try:
        yield rig
    finally:
        stop.set()
        thread.join(WAIT_S)
        worker_broker.close()
    assert not thread.is_alive(), "serve did not return after stop was set"


def global_weights(task: Task) -> Weights:
    torch.manual_seed(0)
    return {k: v.clone() for k, v in task.build_model().state_dict().items()}


def test_train_task_gets_the_delta_of_local_training() -> None:
    # Given a digits worker holding shard 0/3, and the global model
    digits = load_task("digits")
    shard = ShardSpec(0, 3)
    weights = global_weights(digits)
    config = TrainConfig(lr=0.1, epochs=1, batch_size=32, seed=3)
    with serving(digits, shard) as rig:
        # When the coordinator sends a train task
        rig.send(TrainTask(job=JOB, round=1, task_id="t1", weights=weights, config=config))
        reply = rig.reply()
    # Then the reply carries a delta with the model's keys and shapes, the shard's size and metrics
    assert isinstance(reply, Reply)
    assert (reply.job, reply.round, reply.task_id, reply.worker) == (JOB, 1, "t1", WORKER)
    assert {k: v.shape for k, v in reply.update.items()} == {k: v.shape for k, v in weights.items()}
    assert reply.num_examples == digits.num_examples(digits.load_shard(shard)) == 479
    assert {"train_loss", "train_seconds"} <= reply.metrics.keys() and reply.metrics["train_seconds"] >= 0
    # And global + delta is what training the same model on the same shard gives locally
    local = digits.build_model()
    local.load_state_dict(weights)
    expected = digits.train(local, digits.load_shard(shard), config)
    assert reply.metrics["train_loss"] == pytest.approx(expected["train_loss"], rel=1e-5)
    for name, trained in local.state_dict().items():
        assert torch.allclose(weights[name] + reply.update[name], trained, atol=1e-6), name


def test_evaluate_task_returns_eval_metrics_and_no_update() -> None:
    # Given a digits worker
    digits = load_task("digits")
    with serving(digits, ShardSpec(1, 2)) as rig:
        # When the coordinator asks it to evaluate the global model
        rig.send(EvaluateTask(job=JOB, round=2, task_id="e1", weights=global_weights(digits)))
        reply = rig.reply()
    # Then it replies with its shard's loss and accuracy, its example count and no update
    assert isinstance(reply, Reply)
    assert reply.update == {} and reply.num_examples == 718
    assert {"eval_loss", "eval_accuracy"} <= reply.metrics.keys()
    assert 0 <= reply.metrics["eval_accuracy"] <= 1


def test_malformed_bytes_are_dead_lettered_and_serving_goes_on() -> None:
    # Given a toy worker
    toy = load_task("toy")
    garbage = b"not msgpack \xc1\xc1"
    with serving(toy) as rig:
        # When undecodable bytes arrive, then a valid task
        rig.send(garbage)
        rig.send(TrainTask(job=JOB, round=1, task_id="t2", weights=global_weights(toy)))
        reply = rig.reply()
        letter = rig.coordinator.take_dead_letter(timeout=WAIT_S)
    # Then the garbage is dead-lettered, intact, with the reason; and the valid task is answered
    assert letter is not None
    assert letter.body == garbage and letter.source == WORKER
    assert "undecodable" in letter.reason and "msgpack" in letter.reason
    assert isinstance(reply, Reply) and reply.task_id == "t2"


def test_a_reply_on_the_task_queue_is_dead_lettered_as_the_wrong_kind() -> None:
    toy = load_task("toy")
    with serving(toy) as rig:
        rig.send(Reply(job=JOB, round=1, task_id="t1", worker="other", update={}, num_examples=1, metrics={}))
        letter = rig.coordinator.take_dead_letter(timeout=WAIT_S)
    assert letter is not None and "unexpected message kind" in letter.reason


@pytest.mark.parametrize(("change", "named"), [
    (lambda w: w.update({"0.weight": torch.zeros(64, 63)}), "'0.weight' has shape [64, 63], the model's is [64, 64]"),
    (lambda w: w.pop("2.bias"), "'2.bias' is missing"),
    (lambda w: w.update({"3.weight": torch.zeros(1)}), "'3.weight' is not in the model"),
])
def test_weights_that_do_not_fit_are_dead_lettered_and_reported(change: object, named: str) -> None:
    # Given a digits worker and global weights with one entry wrong
    digits = load_task("digits")
    weights = global_weights(digits)
    change(weights)  # type: ignore[operator]
    with serving(digits, ShardSpec(0, 3)) as rig:
        # When they arrive in a train task
        rig.send(TrainTask(job=JOB, round=4, task_id="bad", weights=weights))
        reply = rig.reply()
        letter = rig.coordinator.take_dead_letter(timeout=WAIT_S)
    # Then the coordinator gets an error reply and the task a dead letter, both naming the entry
    assert isinstance(reply, ErrorReply) and (reply.round, reply.task_id, reply.worker) == (4, "bad", WORKER)
    assert named in reply.reason
    assert letter is not None and named in letter.reason


def module_task(name: str, **functions: object) -> Task:
    module = types.ModuleType(name)
    module.build_model = lambda: nn.Linear(2, 1)  # type: ignore[attr-defined]
    module.load_shard = lambda spec: (torch.zeros(4, 2), torch.zeros(4, 1))  # type: ignore[attr-defined]
    for attr, function in functions.items():
        setattr(module, attr, function)
    return Task(name, module)


def test_a_failing_user_train_is_reported_and_serving_goes_on() -> None:
    # Given a task whose train raises for seed 13 only
    def train(model: nn.Module, dataset: object, config: TrainConfig) -> dict[str, float]:
        if config.seed == 13:
            raise RuntimeError("boom in user code")
        return {"train_loss": 0.5}

    task = module_task("flaky", train=train)
    with serving(task) as rig:
        # When a task with seed 13 arrives, then one with seed 0
        rig.send(TrainTask(job=JOB, round=1, task_id="fails", weights=global_weights(task), config=TrainConfig(seed=13)))
        rig.send(TrainTask(job=JOB, round=1, task_id="works", weights=global_weights(task), config=TrainConfig(seed=0)))
        first, second = rig.reply(), rig.reply()
        letter = rig.coordinator.take_dead_letter(timeout=WAIT_S)
    # Then the first is reported and dead-lettered with the error, and the second is answered
    assert isinstance(first, ErrorReply) and "RuntimeError: boom in user code" in first.reason
    assert letter is not None and "boom in user code" in letter.reason
    assert isinstance(second, Reply) and second.task_id == "works" and second.metrics["train_loss"] == 0.5


def test_a_task_for_a_job_that_is_gone_is_acked_and_dropped() -> None:
    # Given a toy worker
    toy = load_task("toy")
    with serving(toy) as rig:
        # When a task arrives for a job with no reply queue, then one for the live job
        rig.send(TrainTask(job="gone-job", round=1, task_id="t0", weights=global_weights(toy)))
        rig.send(TrainTask(job=JOB, round=1, task_id="t1", weights=global_weights(toy)))
        reply = rig.reply()
    # Then the live job is answered, nothing is dead-lettered, and no task waits in the queue
    assert isinstance(reply, Reply) and reply.task_id == "t1"
    assert rig.coordinator.take_dead_letter(timeout=0) is None
    assert rig.queued_tasks() == []


def test_stop_finishes_the_task_in_hand_and_leaves_the_next_queued() -> None:
    # Given a worker whose training blocks until released
    started, release = threading.Event(), threading.Event()

    def train(model: nn.Module, dataset: object, config: TrainConfig) -> dict[str, float]:
        started.set()
        release.wait(WAIT_S)
        return {"train_loss": 1.0}

    task = module_task("blocking", train=train)
    with serving(task) as rig:
        second = encode_message(TrainTask(job=JOB, round=1, task_id="second", weights=global_weights(task)))
        rig.send(TrainTask(job=JOB, round=1, task_id="first", weights=global_weights(task)))
        rig.send(bytes(second))
        assert started.wait(WAIT_S)
        # When stop is set while the first task trains, and training then ends
        rig.stop.set()
        release.set()
        rig.thread.join(WAIT_S)
        # Then serve returned after replying to the first task
        assert not rig.thread.is_alive()
        reply = rig.reply()
        assert isinstance(reply, Reply) and reply.task_id == "first"
        # And the first was acked (closing requeues nothing) while the second still waits
        rig.worker_broker.close()
        assert rig.queued_tasks() == [bytes(second)]


def test_each_task_logs_one_line_with_job_and_round(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fedmq.worker")
    toy = load_task("toy")
    with serving(toy) as rig:
        rig.send(TrainTask(job=JOB, round=7, task_id="t1", weights=global_weights(toy)))
        rig.reply()
    lines = [r.getMessage() for r in caplog.records if r.name == "fedmq.worker"]
    assert len([line for line in lines if f"job {JOB} round 7" in line]) == 1, lines


def test_an_empty_shard_is_refused_at_start() -> None:
    with pytest.raises(TaskError, match="holds no examples"):
        WorkerService(MemoryBroker(MemoryHub()), WorkerSettings(WORKER, "toy", ShardSpec(5, 8)))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error where CUDA is missing")
def test_cuda_without_cuda_is_a_clear_task_error() -> None:
    settings = WorkerSettings(WORKER, "toy", ShardSpec(0, 1), device="cuda")
    with pytest.raises(TaskError, match="CUDA is not available"):
        WorkerService(MemoryBroker(MemoryHub()), settings)


def test_unknown_devices_are_task_errors() -> None:
    with pytest.raises(TaskError, match="use cpu or cuda"):
        resolve_device("tpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_settings_reject_a_bad_worker_name_and_thread_count() -> None:
    with pytest.raises(ValueError, match="worker name"):
        WorkerSettings("no spaces", "toy", ShardSpec(0, 1))
    with pytest.raises(ValueError, match="torch_threads"):
        WorkerSettings(WORKER, "toy", ShardSpec(0, 1), torch_threads=0)


def test_apply_torch_threads_sets_the_intra_op_count() -> None:
    before = torch.get_num_threads()
    try:
        apply_torch_threads(1)
        apply_torch_threads(1)  # a second call (another worker in this process) is harmless
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
