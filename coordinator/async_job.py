"""The asynchronous driver (`fedmq train --mode async`): FedBuff and FedAsync over any broker.

Up to C tasks are out at once, each carrying the model version it was sent with. A worker whose
update is in gets a new task with the latest model at once. Accepted updates, scaled by their
staleness weight (coordinator.staleness), stream into the strategy; every K of them make the
next version: the strategy's aggregate, then a step of --server-lr (or --mix) toward it.

Exactly once: a buffered update's delivery stays unacknowledged until the aggregation that used
it is checkpointed, and only replies to recorded tasks count (coordinator.async_state has the
argument). Tasks recorded by an earlier incarnation are inherited on --resume: their answers
still count, but their workers get new tasks at once, since a task recorded just before a kill
may never have been published.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace

import torch

from fedmq.broker.base import Broker, Delivery
from fedmq.coordinator.async_barrier import AsyncBarrier, read_reply
from fedmq.coordinator.async_metrics import Buffered, Since, VersionMetrics, version_line
from fedmq.coordinator.async_settings import AsyncSettings, plan
from fedmq.coordinator.async_state import AsyncCheckpoint, Outstanding, load_state, load_tasks, save_state, save_tasks
from fedmq.coordinator.barrier import Verdict
from fedmq.coordinator.evaluation import Evaluation, Evaluator
from fedmq.coordinator.job import OnRound, round_seed
from fedmq.coordinator.metrics import MetricsLog
from fedmq.coordinator.presence import announce
from fedmq.coordinator.proxy import assign, publish_assigned, wait_for_workers
from fedmq.coordinator.rounds import MAX_REASON
from fedmq.coordinator.screening import streamed_update_error, update_error
from fedmq.coordinator.settings import TrainSettings
from fedmq.coordinator.staleness import scaled, scaled_streamed, step_toward
from fedmq.coordinator.strategies import build_strategy
from fedmq.coordinator.strategy import Strategy
from fedmq.protocol.errors import BrokerError, PublishRejected, TrainingFailed, clip
from fedmq.protocol.messages import ErrorReply, Reply, Weights
from fedmq.protocol.presence import JobState
from fedmq.protocol.stream import StreamedReply
from fedmq.worker.task import Task, load_task

log = logging.getLogger("fedmq.coordinator")
RETRY_S = 5.0  # a worker whose task could not be published is tried again after this long


class AsyncJob:
    def __init__(self, broker: Broker, settings: TrainSettings, options: AsyncSettings, *,
                 task: Task | None = None, strategy: Strategy | None = None,
                 on_version: OnRound | None = None) -> None:
        self.broker = broker
        self.settings = settings
        self.options = options
        self.plan = plan(settings, options)
        self.task = task or load_task(settings.task)
        self.strategy = strategy or build_strategy(settings.strategy, dict(settings.strategy_options))
        if self.strategy.min_replies() > self.plan.buffer:
            raise ValueError(f"strategy {settings.strategy!r} needs at least {self.strategy.min_replies()} updates "
                             f"an aggregation; raise --buffer to that")
        self.on_version = on_version
        # Evaluation on the workers would take their train replies off the queues: async mode
        # evaluates only on a test split held by the coordinator.
        self.evaluator = Evaluator(broker, self.task, settings) if self.task.has_test_split else None
        self._metrics = MetricsLog(settings.metrics_out) if settings.metrics_out else None
        self.version = 0
        self.weights: Weights = {}
        self.updates = 0
        self._tasks: dict[str, Outstanding] = {}  # sent, not answered
        self._inherited: set[str] = set()  # recorded by an earlier incarnation (--resume)
        self._buffer: list[Buffered] = []
        self._applied: set[str] = set()  # the last aggregation's task ids
        self._last_sent: dict[str, float] = {}
        self._retry_at: dict[str, float] = {}
        self._seconds_before = 0.0
        self._epoch = time.monotonic()
        self._since = Since()
        self._barrier = AsyncBarrier(settings.job, self._tasks, lambda: self.version, options.max_staleness,
                                     self._seen)

    def run(self) -> Weights:
        """Train until --versions or --updates; the final weights. TrainingFailed on a failure."""
        try:
            return self._run()
        except BaseException as e:
            if not isinstance(e, BrokerError) or isinstance(e, PublishRejected):
                self._announce(JobState.FAILED)
            raise

    def _run(self) -> Weights:
        s = self.settings
        self._starting_point()
        if self._metrics:  # lines of versions after the checkpoint's are made again: drop them first
            self._metrics.start(after_round=self.version)
        names = list(s.workers)
        self.broker.declare_job(s.job, names)
        self.broker.consume_replies(s.job, names)
        self._wait_for_workers()
        self._announce(JobState.RUNNING)
        self._epoch = time.monotonic() - self._seconds_before
        self._since = Since()
        self.strategy.begin_round(self.weights)
        while not self.plan.done(self.version, self.updates):
            self._dispatch()
            self._expire()
            delivery = self.broker.receive(timeout=self._wait_s())
            if delivery is not None:
                self._handle(delivery)
        self._announce(JobState.DONE)
        self.broker.delete_job(s.job, names)
        return self.weights

    # Starting, resuming.
    def _starting_point(self) -> None:
        s = self.settings
        checkpoint = load_state(s.checkpoint_dir) if s.resume and s.checkpoint_dir else None
        if checkpoint is None:
            torch.manual_seed(s.config.seed)
            self.weights = {k: v.detach() for k, v in self.task.build_model().state_dict().items()}
            if s.checkpoint_dir:
                save_tasks(s.checkpoint_dir, [])  # a fresh run owes nothing to an older one's tasks
            return
        if (checkpoint.task, checkpoint.seed) != (s.task, s.config.seed):
            raise TrainingFailed(f"the checkpoint in {s.checkpoint_dir} is of task {checkpoint.task!r} seed "
                                 f"{checkpoint.seed}; resume with those or use another --checkpoint-dir")
        self.strategy.load_state_dict(checkpoint.strategy_state)
        self.version, self.weights, self.updates = checkpoint.version, checkpoint.weights, checkpoint.updates
        self._seconds_before = checkpoint.seconds
        self._applied = set(checkpoint.applied)
        assert s.checkpoint_dir is not None
        for task in load_tasks(s.checkpoint_dir):
            if task.task_id not in self._applied and task.worker in s.workers:
                self._tasks[task.task_id] = task
                self._inherited.add(task.task_id)
        log.info("resuming job %s at version %d with %d task(s) outstanding", s.job, self.version, len(self._tasks))

    def _wait_for_workers(self) -> None:
        wait_for_workers(self.broker, self.settings.workers, self.settings.wait_for_workers_s)

    # Sending tasks.
    def _busy(self) -> set[str]:
        return {t.worker for i, t in self._tasks.items() if i not in self._inherited}

    def _dispatch(self) -> None:
        now = time.monotonic()
        busy = self._busy()
        buffered = {b.task.worker for b in self._buffer}
        # A worker whose reply is not buffered first, then the longest idle.
        idle = sorted((w in buffered, self._last_sent.get(w, float("-inf")), i, w)
                      for i, w in enumerate(self.settings.workers)
                      if w not in busy and self._retry_at.get(w, 0.0) <= now)
        chosen = [entry[3] for entry in idle[:max(self.plan.concurrency - len(busy), 0)]]
        if chosen:
            self._send(chosen)

    def _send(self, workers: list[str]) -> None:
        """One publish of the latest model for all of `workers` (proxy.publish_assigned), each
        task recorded before it goes out: its answer must count after a kill."""
        s = self.settings
        base = {w: replace(s.config, seed=round_seed(s.config.seed, self.version, w)) for w in workers}
        assignments = assign(self.strategy.configure_train(self.version, base))
        sent_at = time.time()
        for worker, own in assignments.items():
            self._tasks[own.task_id] = Outstanding(task_id=own.task_id, worker=worker, base=self.version,
                                                   sent_at=sent_at)
            self._last_sent[worker] = time.monotonic()
        self._save_tasks()
        sent = publish_assigned(self.broker, s.job, self.version, self.weights, assignments, s.round_timeout_s)
        for worker, reason in sent.failed.items():  # that worker's failure, not the run's
            del self._tasks[assignments[worker].task_id]
            self._retry_at[worker] = time.monotonic() + min(RETRY_S, s.round_timeout_s)
            self._since.failures[worker] = clip(f"task not published: {reason}", MAX_REASON)
        if sent.failed:
            self._save_tasks()

    def _expire(self) -> None:
        cutoff = time.time() - self.settings.round_timeout_s
        late = [t for t in self._tasks.values() if t.sent_at < cutoff]
        for task in late:
            del self._tasks[task.task_id]
            self._inherited.discard(task.task_id)
            self._since.timed_out += 1
            self._since.failures[task.worker] = "no reply within --round-timeout"
        if late:
            self._save_tasks()

    def _wait_s(self) -> float:
        if not self._tasks:
            return 0.2
        first = min(t.sent_at for t in self._tasks.values()) + self.settings.round_timeout_s
        return min(1.0, max(0.01, first - time.time()))

    def _save_tasks(self) -> None:
        if self.settings.checkpoint_dir:
            recorded = [*self._tasks.values(), *(b.task for b in self._buffer)]
            save_tasks(self.settings.checkpoint_dir, recorded)

    def _seen(self, task_id: str) -> bool:
        return task_id in self._applied or any(b.task.task_id == task_id for b in self._buffer)

    # Taking replies.
    def _handle(self, delivery: Delivery) -> None:
        message = self._message(delivery)
        if message is None:
            return
        judged = message.without_update() if isinstance(message, StreamedReply) else message
        verdict, reason = self._barrier.judge(judged, delivery.source)
        if verdict is Verdict.REJECT:
            self._dead_letter(delivery, reason)
        elif verdict is Verdict.DROP:
            log.info("dropped a reply from %s: %s", message.worker, reason)
            self._since.dropped += 1
            if self._tasks.pop(message.task_id, None) is not None:  # too stale: its worker is free
                self._inherited.discard(message.task_id)
                self._save_tasks()
            self.broker.ack(delivery)
        else:
            self._use(delivery, message)

    def _message(self, delivery: Delivery) -> Reply | ErrorReply | StreamedReply | None:
        """The delivery's reply, or None after dead-lettering what no honest worker sends. Linear
        strategies get a large update still in its parts (protocol.stream), as sync rounds do."""
        message: Reply | ErrorReply | StreamedReply | None
        message, refusal = read_reply(delivery, verify_senders=self.settings.verify_senders,
                                      streaming=self.strategy.streams)
        if message is None:
            self._dead_letter(delivery, refusal)
        return message

    def _use(self, delivery: Delivery, message: Reply | ErrorReply | StreamedReply) -> None:
        task = self._tasks.pop(message.task_id)
        self._inherited.discard(task.task_id)
        if isinstance(message, ErrorReply):
            self._since.failures[task.worker] = clip(message.reason, MAX_REASON)
            self._save_tasks()
            self.broker.ack(delivery)
            return
        staleness = self.version - task.base
        unusable = self._fold(message, self.options.staleness.weight(staleness))
        if unusable:
            self._since.rejected += 1
            self._since.failures[task.worker] = unusable
            self._save_tasks()
            self._dead_letter(delivery, f"rejected update: {unusable}")
            return
        delivery.parts = []  # only its tag is needed now; the update was folded in (or kept by the strategy)
        self._buffer.append(Buffered(delivery, task, staleness, message.num_examples, message.metrics))
        if len(self._buffer) >= self.plan.buffer:
            self._aggregate()

    def _fold(self, message: Reply | StreamedReply, weight: float) -> str | None:
        """Screen the update, then fold it in scaled by its staleness weight; why not, if unusable."""
        bound = self.settings.max_update_norm
        if isinstance(message, StreamedReply):  # screened in full before any of it is folded
            unusable = streamed_update_error(self.weights, message.update, bound)
            if unusable is None:
                self.strategy.accumulate_streamed(scaled_streamed(message, weight))
            return unusable
        unusable = update_error(self.weights, message.update, bound)
        if unusable is None:
            self.strategy.accumulate(scaled(message, weight))
        return unusable

    def _dead_letter(self, delivery: Delivery, reason: str) -> None:
        reason = clip(reason, MAX_REASON)
        log.warning("dead-lettering a reply from %s's queue: %s", delivery.source, reason)
        self._since.dead_lettered += 1
        self.broker.dead_letter(delivery, reason)

    # Aggregating.
    def _aggregate(self) -> None:
        s = self.settings
        new = step_toward(self.weights, self.strategy.end_round([]), self.options.step)
        buffer, self._buffer = self._buffer, []
        self.version += 1
        self.updates += len(buffer)
        wall_s = time.monotonic() - self._since.started
        evaluation = self._evaluate(new)
        line = self._line(buffer, wall_s, evaluation)
        if self._metrics:
            self._metrics.write(line)
        applied = tuple(b.task.task_id for b in buffer)
        if s.checkpoint_dir:
            save_state(s.checkpoint_dir, AsyncCheckpoint(
                job=s.job, task=s.task, seed=s.config.seed, version=self.version, weights=new,
                strategy_state=self.strategy.state_dict(), applied=applied, updates=self.updates,
                seconds=line.seconds))
        self.weights, self._applied = new, set(applied)
        self._save_tasks()
        for b in buffer:  # only now: the checkpoint that includes them is durable
            self.broker.ack(b.delivery)
        self.strategy.begin_round(new)
        self._since = Since()
        self._announce(JobState.RUNNING)
        if self.on_version:
            self.on_version(line)

    def _evaluate(self, weights: Weights) -> Evaluation:
        last = self.plan.done(self.version, self.updates)
        if self.evaluator is None or (self.version % self.options.eval_every and not last):
            return Evaluation(None, None, 0.0)
        return self.evaluator.evaluate(self.version, weights)

    def _line(self, buffer: Sequence[Buffered], wall_s: float, evaluation: Evaluation) -> VersionMetrics:
        stale, self._barrier.stale = self._barrier.stale, 0
        return version_line(job=self.settings.job, version=self.version, updates=self.updates, buffer=buffer,
                            since=self._since, wall_s=wall_s, seconds=time.monotonic() - self._epoch,
                            evaluation=evaluation, stale=stale, strategy=self.strategy.metrics())

    def _announce(self, state: JobState) -> None:
        s = self.settings
        announce(self.broker, s.job, s.task, self.version, self.plan.length, state)

