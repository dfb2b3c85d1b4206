"""Serving remote commands from the worker's task queue, beside train and evaluate tasks.

A client's batch runs in its session and is answered on the client's reply queue, then acked:
the client waits for nothing else, so ops pipeline. Batches arrive one at a time in queue order
(prefetch 1), which is what keeps a client's ops in order per worker. A batch whose seq is not
above the last one run is a redelivery: it is acked without running again (a step must not be
taken twice). A batch another worker sent on a client's behalf (a move) gets no answer; if it
fails, the failure is told with the client's next batch here.
"""

from __future__ import annotations

import functools
import logging

import torch

from broker.base import Broker, Delivery
from protocol.commands import CommandBatch, CommandResult, OpError
from protocol.errors import Unroutable
from protocol.messages import encode_message
from protocol.operands import Value
from worker.remote.context import Context
from worker.remote.executor import Executor
from worker.remote.store import ALLOW_GET, Limits, ObjectStore, Session
from worker.settings import WorkerSettings
from worker.task import Dataset, Task

log = logging.getLogger("fedmq.worker")
MAX_REASON = 2000
_PEER_OPS = ("send", "module")  # all a move ever carries


class RemoteCommands:
    def __init__(self, broker: Broker, settings: WorkerSettings, task: Task, shard: Dataset,
                 device: torch.device) -> None:
        self._broker = broker
        self._worker = settings.worker_id
        limits = Limits(settings.max_objects, settings.max_object_bytes, settings.client_ttl_s)
        self.store = ObjectStore(self._worker, limits)
        context = Context(self._worker, self.store, device, task, shard, ALLOW_GET[settings.allow_get])
        self._executor = Executor(context)

    def handle(self, delivery: Delivery, batch: CommandBatch) -> None:
        """Run the batch, answer it (unless a worker sent it), then ack it."""
        session = self.store.session(batch.client)
        if batch.origin:
            self._receive(session, batch)
        elif batch.seq <= session.last_seq:
            log.info("client %s: batch %d was already run (redelivered); dropped", batch.client, batch.seq)
        else:
            session.last_seq = batch.seq
            values, error = self._run(session, batch)
            self._answer(batch, values, error)
        self._broker.ack(delivery)  # after the answer is confirmed: a crash before re-runs nothing twice

    def expire(self) -> None:
        """Drop the sessions of clients that went away (silent for longer than the TTL)."""
        for client in self.store.expire():
            log.info("client %s was silent for %.0fs: its objects are freed", client, self.store.limits.ttl_s)

    def _run(self, session: Session, batch: CommandBatch) -> tuple[dict[int, Value], OpError | None]:
        values: dict[int, Value] = {}
        error, session.carried = session.carried, None  # a failed move here: it came first
        start = 0
        while True:
            # Beside the connection's I/O: heartbeats go on however long the ops take.
            outcome = self._broker.run_beside_io(functools.partial(self._executor.run, session, batch.ops, start, error))
            values.update(outcome.values)
            error, move = outcome.error, outcome.outgoing
            if move is None:
                return values, error
            try:  # publishing happens here, on the connection's thread
                self._broker.publish_task(move.target, move.body)
            except Unroutable:
                error = OpError(move.index, "move", f"worker {move.target!r} has no task queue: is it running?")
            self.store.free(session, move.object_id)  # gone either way: the client's pointer left with it
            start = move.index + 1

    def _receive(self, session: Session, batch: CommandBatch) -> None:
        strange = [op.name for op in batch.ops if op.name not in _PEER_OPS]
        if strange:
            reason = f"a batch from worker {batch.origin!r} may only carry {' and '.join(_PEER_OPS)}, not {strange[0]!r}"
            error: OpError | None = OpError(-1, "move", reason, "refused")
        else:
            error = self._broker.run_beside_io(functools.partial(self._executor.run, session, batch.ops)).error
        if error is not None and session.carried is None:
            reason = f"moving an object from worker {batch.origin!r} to {self._worker!r} failed: {error.reason}"
            session.carried = OpError(-1, "move", _clip(reason), error.kind)

    def _answer(self, batch: CommandBatch, values: dict[int, Value], error: OpError | None) -> None:
        if error is not None:
            error = OpError(error.index, error.op, _clip(error.reason), error.kind)
        try:
            body = encode_message(CommandResult(batch.client, batch.seq, self._worker, values, error))
        except ValueError as e:  # a fetched value that cannot travel
            failure = OpError(-1, "get", _clip(f"a fetched value cannot travel: {e}"))
            body = encode_message(CommandResult(batch.client, batch.seq, self._worker, {}, failure))
        try:
            self._broker.publish_reply(batch.client, self._worker, body)
        except Unroutable:  # the client's reply queue is gone: so is the client
            log.info("client %s is gone (no reply queue); its objects are freed", batch.client)
            self.store.close(batch.client)


def _clip(reason: str) -> str:
    return reason if len(reason) <= MAX_REASON else reason[:MAX_REASON - 3] + "..."
