"""A worker: takes tasks from its queue, trains or evaluates on its private shard, replies.

The shard is loaded once and stays in this process: only weight deltas, example counts and
metrics leave it. One task is in hand at a time (the broker delivers one unacknowledged task per
worker), and a task is acknowledged only after its reply is confirmed, so a worker that dies
mid-task loses nothing: the broker hands the task out again.

A task the worker cannot run (undecodable bytes, the wrong message kind, weights that do not fit
the task's model, a user `train` that raises) goes to the dead-letter queue with its reason, and
the coordinator is told through an ErrorReply whenever the task names a job. The worker goes on
serving: one bad message never ends a long-running worker. A reply the broker refuses
(PublishRejected: a full queue, an exchange this user may not write) is that task's failure: it is
dead-lettered and the worker serves on. Only a connection lost for good (BrokerError) ends
`serve`; the unacknowledged task then returns to its queue.

With `task_senders` set (credentials in use), a message is run only when its AMQP user_id, which
RabbitMQ vouches for, is one of them (the provisioned coordinator, principals the operator
lists); anything else is dead-lettered unread. A principal that may train can still learn from
the updates it receives: see the README's security section.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import torch

from fedmq.broker.base import Broker, Delivery
from fedmq.protocol.commands import CommandBatch
from fedmq.protocol.errors import BrokerError, DecodeError, PublishRejected, TaskError, Unroutable, clip
from fedmq.protocol.messages import (
    ErrorReply,
    EvaluateTask,
    Reply,
    SharedTask,
    TrainTask,
    Weights,
    decode_message,
    encode_message,
)
from fedmq.protocol.secagg import messages as secagg
from fedmq.worker.clipping import privatize
from fedmq.worker.decodes import SharedDecodes
from fedmq.worker.dedup import AnsweredTasks
from fedmq.worker.presence import Heartbeat
from fedmq.worker.remote.handler import RemoteCommands
from fedmq.worker.secagg import options as secure
from fedmq.worker.secagg.relay import answer_stage
from fedmq.worker.secagg.sessions import SecAggSessions
from fedmq.worker.settings import WorkerSettings
from fedmq.worker.task import Dataset, Task, as_pair, load_task

log = logging.getLogger("fedmq.worker")
SECAGG_REQUESTS = (secagg.AdvertiseRequest, secagg.ShareRequest, secagg.MaskedInputRequest, secagg.UnmaskRequest)
_Work = Callable[[], tuple[dict[str, float], float]]  # local work: (metrics, seconds)
# Local work runs inline, not beside the connection's I/O, while this worker's last work of the
# same kind (training, evaluation) took less than this: the hand-off to the work thread cost more
# than such work (64 digits workers in one process: 232 -> 150 ms a round). Even a hundredfold
# longer one stays far inside RabbitMQ's heartbeat timeout (two intervals: 120 s by default).
INLINE_S = 0.02


class WorkerService:
    """Serves one worker's task queue with one task definition and one shard."""

    def __init__(self, broker: Broker, settings: WorkerSettings, task: Task | None = None, *,
                 decodes: SharedDecodes | None = None) -> None:
        self._broker = broker
        self._decodes = decodes  # shared with the other logical workers of a host (worker.decodes)
        self._settings = settings
        self._task = task if task is not None else load_task(settings.task)
        self._device = resolve_device(settings.device)
        # One model for the service's life: each task loads its weights into it, so a round
        # allocates only the update it sends back.
        self._model = self._task.build_model().to(self._device)
        self._shapes = {name: tuple(t.shape) for name, t in self._model.state_dict().items()}
        shard = self._task.load_shard(settings.shard)
        self._num_examples = self._task.num_examples(shard)
        if self._num_examples < 1:
            raise TaskError(f"shard {settings.shard} of task {self._task.name!r} holds no examples: "
                            f"use fewer shards")
        self._shard = _on_device(shard, self._device)
        # Remote commands (the pointer workflow) share the queue, the task and the shard.
        self.remote = RemoteCommands(broker, settings, self._task, self._shard, self._device)
        # Updates held for secure aggregation, and the stage requests that unmask their sum.
        self.secure = SecAggSessions(settings.worker_id)
        self._warm = False  # the first training pays one-off start-up costs: --slowdown skips it
        self._last_work_s: dict[type, float] = {}  # seconds of the last work per task kind (INLINE_S)
        self._answered = AnsweredTasks()  # redelivered tasks already answered are acked, not rerun
        spec = settings.shard
        self._heartbeat = Heartbeat(broker, settings.worker_id, settings.task,
                                    f"{spec.index}/{spec.count}")

    @property
    def worker_id(self) -> str:
        return self._settings.worker_id

    @property
    def num_examples(self) -> int:
        return self._num_examples

    def serve(self, stop: threading.Event) -> None:
        """Handle tasks until `stop` is set; the task in hand finishes (replied, acked) first."""
        self.open()
        while not stop.is_set():
            self.tick()
            delivery = self._broker.receive(timeout=self._settings.poll_s)
            if delivery is not None:
                self.take(delivery)

    # serve's steps, also driven by worker.host's dispatcher for many services on one connection.
    def open(self) -> None:
        """Declare this worker's task queue and start consuming it."""
        self._broker.declare_worker(self.worker_id)
        self._broker.consume_tasks(self.worker_id)

    def tick(self) -> None:
        """Periodic upkeep: a heartbeat when due (`fedmq status`), expired remote clients freed."""
        self._heartbeat.tick()
        self.remote.expire()

    def take(self, delivery: Delivery) -> None:
        """handle(), with a publish the broker refused made this message's failure only."""
        try:
            self.handle(delivery)
        except PublishRejected as e:
            self._reject(delivery, clip(f"the broker refused a publish for it: {e}"))

    def handle(self, delivery: Delivery) -> None:
        """Run one delivered task to its end: replied and acked, or dead-lettered."""
        refusal = self._sender_refusal(delivery)
        if refusal is not None:
            self._reject(delivery, refusal)
            return
        message = self._decode(delivery)
        if message is None:
            return
        if isinstance(message, CommandBatch):
            self.remote.handle(delivery, message)
            return
        if isinstance(message, SECAGG_REQUESTS):
            answer_stage(self._broker, self.secure, self.worker_id, delivery, message)
            return
        kind = "train" if isinstance(message, TrainTask) else "evaluate"
        key = (message.job, message.round, message.task_id)
        if key in self._answered:  # its ack was lost (connection cut, consumer_timeout)
            log.info("job %s round %d: %s task %s was answered already; acked", message.job,
                     message.round, kind, message.task_id)
            self._broker.ack(delivery)
            return
        self._heartbeat.training()
        self.remote.share.training()  # remote batches now yield to training (worker.remote.handler)
        try:
            reply, seconds = self._run(message)
            body = encode_message(reply)
        except BrokerError:
            raise  # the transport is gone: nothing to reply through; the task will be redelivered
        except TaskError as e:  # the task does not fit this worker's task definition
            self._fail(delivery, message, clip(str(e)))
            return
        except Exception as e:  # the user's code failed: report it, keep serving
            log.exception("job %s round %d: %s failed", message.job, message.round, kind)
            self._fail(delivery, message, clip(f"{kind} failed: {type(e).__name__}: {e}"))
            return
        try:
            self._broker.publish_reply(message.job, self.worker_id, body)
        except Unroutable:
            # The job has no reply queue: it is over (finished, or its coordinator gave up).
            # Nothing would ever take this reply, and requeueing would only repeat the work.
            log.warning("job %s round %d: no reply queue (the job is gone); %s result dropped",
                        message.job, message.round, kind)
        except PublishRejected as e:  # a full reply queue, a refused exchange: this task's failure
            self._reject(delivery, clip(f"job {message.job} round {message.round}: the broker refused "
                                         f"the {kind} reply: {e}"))
            return
        self._answered.add(key)
        self._broker.ack(delivery)  # only now: the reply is confirmed (or has nowhere to go)
        self._heartbeat.answered(message.job, message.round)
        log.info("job %s round %d: %s on %d examples in %.3fs", message.job, message.round, kind,
                 self._num_examples, seconds)

    def _sender_refusal(self, delivery: Delivery) -> str | None:
        """Why the delivery's publisher may not send this worker anything; None when it may."""
        senders = self._settings.task_senders
        if senders is None or delivery.user_id in senders:
            return None
        who = "no user_id" if delivery.user_id is None else f"user {delivery.user_id[:100]!r}"
        return (f"refused unread: a message from {who}; worker {self.worker_id!r} takes tasks and "
                f"commands only from {', '.join(sorted(senders))} (--task-senders)")

    def _decode(self, delivery: Delivery) -> TrainTask | EvaluateTask | CommandBatch | secagg.Request | None:
        """The task in `delivery`, or None after dead-lettering what is not a task."""
        # decode_message consumes a list of parts as it reads; a dead letter still needs them.
        payload = delivery.payload()
        data = list(payload) if isinstance(payload, list) else payload
        try:
            message = decode_message(data) if self._decodes is None else self._decodes.decode(data)
        except DecodeError as e:
            self._reject(delivery, clip(f"undecodable task: {e}"))
            return None
        except Exception as e:  # noqa: BLE001 - a decoder bug must not end the worker on hostile bytes
            log.exception("the decoder failed on a task")
            self._reject(delivery, clip(f"undecodable task ({type(e).__name__}): {e}"))
            return None
        if isinstance(message, SharedTask):
            return self._own_part(delivery, message)
        if isinstance(message, (TrainTask, EvaluateTask, CommandBatch, *SECAGG_REQUESTS)):
            return message
        job = getattr(message, "job", getattr(message, "client", "?"))
        self._reject(delivery, f"unexpected message kind: a {type(message).__name__} on the task queue "
                               f"of worker {self.worker_id!r} (job {job!r})")
        return None

    def _own_part(self, delivery: Delivery, shared: SharedTask) -> TrainTask | EvaluateTask | None:
        """This worker's task in a model sent to several workers; only its own entry is read."""
        try:
            own = shared.for_worker(self.worker_id)
        except DecodeError as e:
            self._reject(delivery, clip(f"undecodable shared task: {e}"))
            return None
        if own is None:
            self._reject(delivery, f"a shared task of job {shared.job!r} with no part for worker "
                                   f"{self.worker_id!r}: not run")
        return own

    def _run(self, task: TrainTask | EvaluateTask) -> tuple[Reply, float]:
        """The reply to `task` and the seconds its local work took; TaskError if it does not fit."""
        self._load(task.weights)
        work = self._trainer(task) if isinstance(task, TrainTask) else self._evaluator()
        # Beside the connection's I/O: heartbeats (the connection's and ours) keep flowing
        # however long training takes. Short work runs inline (INLINE_S); a kind not yet run,
        # beside: a quick evaluation says nothing of how long the next training takes.
        if self._last_work_s.get(type(task), INLINE_S) < INLINE_S:
            metrics, seconds = work()
        else:
            metrics, seconds = self._broker.run_beside_io(work, between=self._heartbeat.tick)
        self._last_work_s[type(task)] = seconds
        if isinstance(task, TrainTask):
            # Clipped (and noised) here, the one place an update is made, when the strategy asks (DP).
            update, metrics = privatize(self._delta(task.weights), {**metrics, "train_seconds": seconds},
                                        task.config.options)
            if secure.wanted(task.config.options):  # sent masked, stage by stage, never in the clear
                self.secure.open(job=task.job, round_=task.round, update=update,
                                 num_examples=secure.weight(task.config.options, self._num_examples))
                update = {}
        else:
            update = {}
        reply = Reply(job=task.job, round=task.round, task_id=task.task_id, worker=self.worker_id, update=update, num_examples=self._num_examples, metrics=metrics)
        return reply, seconds

    def _trainer(self, task: TrainTask) -> _Work:
        def work() -> tuple[dict[str, float], float]:
            started = time.perf_counter()
            metrics = self._task.train(self._model, self._shard, task.config)
            if self._settings.slowdown > 1.0 and self._warm:  # a simulated slow site (WorkerSettings.slowdown)
                time.sleep((self._settings.slowdown - 1.0) * (time.perf_counter() - started))
            self._warm = True
            return metrics, time.perf_counter() - started
        return work

    def _evaluator(self) -> _Work:
        def work() -> tuple[dict[str, float], float]:
            started = time.perf_counter()
            metrics = self._task.evaluate(self._model, self._shard)
            return metrics, time.perf_counter() - started
        return work

    def _load(self, weights: Weights) -> None:
        """Load the global weights into the model; TaskError naming the first misfit."""
        misfit = self._misfit(weights)
        if misfit is not None:
            raise TaskError(f"weights do not fit task {self._task.name!r}: {misfit}")
        self._model.load_state_dict(weights)  # copies: the decoded tensors are read-only views

    def _misfit(self, weights: Weights) -> str | None:
        for name, shape in self._shapes.items():
            if name not in weights:
                return f"{name!r} is missing (the model's shape is {list(shape)})"
            if tuple(weights[name].shape) != shape:
                return f"{name!r} has shape {list(weights[name].shape)}, the model's is {list(shape)}"
        for name in weights:
            if name not in self._shapes:
                return f"{name!r} is not in the model"
        return None

    def _delta(self, start: Weights) -> Weights:
        """trained - start per state-dict entry, on the CPU, in the model's dtypes."""
        trained = self._model.state_dict()
        return {name: trained[name].detach().to("cpu") - start[name].to(trained[name].dtype) for name in trained}

    def _fail(self, delivery: Delivery, task: TrainTask | EvaluateTask, reason: str) -> None:
        """Tell the job why the task failed, then dead-letter it (which acks it)."""
        log.warning("job %s round %d: task rejected: %s", task.job, task.round, reason)
        error = ErrorReply(job=task.job, round=task.round, task_id=task.task_id, worker=self.worker_id, reason=reason)
        # The error reply goes first: if the broker fails between the two, the task is redelivered
        # and reported again (the coordinator drops duplicates) instead of vanishing unreported.
        try:
            self._broker.publish_reply(task.job, self.worker_id, encode_message(error))
        except Unroutable:
            log.warning("job %s has no reply queue (the job is gone); error reply dropped", task.job)
        except PublishRejected as e:
            log.warning("job %s: the broker refused the error reply: %s", task.job, e)
        self._broker.dead_letter(delivery, reason)

    def _reject(self, delivery: Delivery, reason: str) -> None:
        log.warning("worker %s dead-lettered a message: %s", self.worker_id, reason)
        self._broker.dead_letter(delivery, reason)



def resolve_device(name: str) -> torch.device:
    """The torch device `name` ("cpu", "cuda", "cuda:1"); TaskError when it cannot be used here."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as e:
        raise TaskError(f"unknown device {name!r}: use cpu or cuda") from e
    if device.type not in ("cpu", "cuda"):
        raise TaskError(f"device {name!r} is not supported: use cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TaskError(f"device {name!r} was asked for but CUDA is not available here "
                        f"(torch {torch.__version__}); install a CUDA build of torch or use --device cpu")
    return device


def _on_device(dataset: Dataset, device: torch.device) -> Dataset:
    """A pair dataset moved to `device` once, so training does not copy batches across."""
    pair = as_pair(dataset)
    if pair is None or device.type == "cpu":
        return dataset
    return pair[0].to(device), pair[1].to(device)

