"""Serving remote commands from the worker's task queue, beside train and evaluate tasks.

A client's batch runs in its session and is answered on the client's reply queue, then acked:
the client waits for nothing else, so ops pipeline. Batches arrive one at a time in queue order
(prefetch 1), which is what keeps a client's ops in order per worker. A batch whose seq is not
above the last one run is a redelivery: it is acked without running again (a step must not be
taken twice).

A batch is run only for its session's owner (worker.remote.store.Owner): one whose token or
AMQP user_id differs from the session's is dead-lettered untouched, so a client id seen by
others opens nothing. Each batch runs under a compute budget (worker.remote.meter); while this
worker has training work (a train or evaluate task within the last SHARE_WINDOW_S seconds),
remote batches may take at most `remote_share` of its time, and are answered "capacity" at once
beyond it, so a queue full of remote work cannot starve the tasks behind it. An answer the
broker refuses (PublishRejected) fails that batch alone: the worker logs it and goes on.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import deque

import torch

from fedmq.broker.base import Broker, Delivery
from fedmq.protocol.commands import CommandBatch, CommandResult, Op, OpError
from fedmq.protocol.errors import PublishRejected, Unroutable, clip
from fedmq.protocol.messages import encode_message
from fedmq.protocol.operands import Value
from fedmq.worker.remote.context import Context
from fedmq.worker.remote.executor import Executor, Outcome
from fedmq.worker.remote.meter import Budget, Meter
from fedmq.worker.remote.store import ALLOW_GET, Limits, ObjectStore, Owner, Session, SessionRefused
from fedmq.worker.settings import WorkerSettings
from fedmq.worker.task import Dataset, Task

log = logging.getLogger("fedmq.worker")
SHARE_WINDOW_S = 60.0
_RECOUNT = frozenset({"backward", "step", "zero_grad"})  # ops that grow or drop gradients and state


class Share:
    """Remote work's share of the worker's time over the last window, while training is active."""

    def __init__(self, share: float, window_s: float = SHARE_WINDOW_S) -> None:
        self.share = share
        self.window_s = window_s
        self._trained_at = -float("inf")
        self._spent: deque[tuple[float, float]] = deque()  # (ended at, seconds)

    def training(self) -> None:
        self._trained_at = time.monotonic()

    def spend(self, seconds: float) -> None:
        self._spent.append((time.monotonic(), seconds))

    def exhausted(self) -> bool:
        now = time.monotonic()
        while self._spent and self._spent[0][0] < now - self.window_s:
            self._spent.popleft()
        if now - self._trained_at > self.window_s:
            return False  # no training to starve
        return sum(seconds for _, seconds in self._spent) > self.share * self.window_s


class RemoteCommands:
    def __init__(self, broker: Broker, settings: WorkerSettings, task: Task, shard: Dataset,
                 device: torch.device) -> None:
        self._broker = broker
        self._worker = settings.worker_id
        limits = Limits(settings.max_objects, settings.max_object_bytes, settings.client_ttl_s,
                        settings.max_client_objects, settings.max_client_bytes, settings.max_clients)
        self.store = ObjectStore(self._worker, limits)
        context = Context(self._worker, self.store, device, task, shard, ALLOW_GET[settings.allow_get])
        self._executor = Executor(context)
        self._meter = Meter(self.store, Budget(settings.remote_batch_seconds))
        self.share = Share(settings.remote_share)

    def handle(self, delivery: Delivery, batch: CommandBatch) -> None:
        """Run the batch (for its session's owner), answer it, then ack it."""
        try:
            session = self.store.open(batch.client, Owner(batch.token, delivery.user_id))
        except SessionRefused as e:
            log.warning("client %s: batch %d refused: %s", batch.client, batch.seq, e)
            self._broker.dead_letter(delivery, clip(str(e)))
            return
        if batch.seq <= session.last_seq:
            log.info("client %s: batch %d was already run (redelivered); dropped", batch.client, batch.seq)
        elif self.share.exhausted():
            session.last_seq = batch.seq
            reason = (f"worker {self._worker!r} has given remote commands {self.share.share:.0%} of its time "
                      f"over the last {self.share.window_s:g}s while it trains: try again later")
            for op in batch.ops:  # later ops that use these results say why they are missing
                for out in op.outs:
                    session.lost[out] = "its batch was refused: the worker was busy training"
            self._answer(session, batch, {}, OpError(0, batch.ops[0].name if batch.ops else "batch", reason,
                                                     "capacity"))
        else:
            session.last_seq = batch.seq
            outcome = self._run(session, batch.ops)
            self._answer(session, batch, outcome.values, outcome.error)
        self._broker.ack(delivery)  # after the answer is confirmed: a crash before re-runs nothing twice

    def expire(self) -> None:
        """Drop the sessions of clients that went away (silent for longer than the TTL)."""
        for client in self.store.expire():
            log.info("client %s was silent for %.0fs: its objects are freed", client, self.store.limits.ttl_s)

    def _run(self, session: Session, ops: tuple[Op, ...]) -> Outcome:
        started = time.monotonic()
        # Beside the connection's I/O: heartbeats go on however long the ops take.
        outcome = self._broker.run_beside_io(functools.partial(self._metered, session, ops))
        self.share.spend(time.monotonic() - started)
        if any(op.name in _RECOUNT for op in ops):
            self.store.recount(session)  # gradients and optimizer state, grown in place
        return outcome

    def _metered(self, session: Session, ops: tuple[Op, ...]) -> Outcome:
        with self._meter.batch(session):  # on this thread: where the ops run
            return self._executor.run(session, ops)

    def _answer(self, session: Session, batch: CommandBatch, values: dict[int, Value],
                error: OpError | None) -> None:
        if error is not None:
            error = OpError(error.index, error.op, clip(error.reason), error.kind)
        try:
            body = encode_message(CommandResult(batch.client, batch.seq, self._worker, values, error))
        except ValueError as e:  # a fetched value that cannot travel
            failure = OpError(-1, "get", clip(f"a fetched value cannot travel: {e}"))
            body = encode_message(CommandResult(batch.client, batch.seq, self._worker, {}, failure))
        finally:
            self.store.release_fetched(session)
        try:
            self._broker.publish_reply(batch.client, self._worker, body)
        except Unroutable:  # the client's reply queue is gone: so is the client
            log.info("client %s is gone (no reply queue); its objects are freed", batch.client)
            self.store.close(batch.client)
        except PublishRejected as e:  # that answer's failure, not the worker's: the client will time out
            log.warning("client %s: the broker refused the answer to batch %d: %s", batch.client, batch.seq, e)

