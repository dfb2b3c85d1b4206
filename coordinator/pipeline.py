"""A client's pipe to one worker: ops are buffered, sent in batches, answered in order.

Issuing an op only appends it to the buffer; the buffer goes out as one CommandBatch when
something needs a value (a wait), when it grows past MAX_BATCH_OPS ops or MAX_BATCH_BYTES of
literal tensors, or on an explicit flush. The worker answers every batch, in order, on the
client's reply queue; the answers are read only while waiting, so the client never blocks on
ops it does not need the result of. The first failure an answer reports is raised at the next
wait on this worker, and forgotten once raised: later ops work again.

Pointers freed by the garbage collector only queue their ids here (`release`, thread-safe, no
I/O): the ids go out as a `free` op at the end of the next batch, after every op that could
still use them, since an op can only be issued while its operands' pointers are alive.

A move travels through the client: the source worker answers its `move` op with the object's
value, and the target's link holds an `Incoming` in its buffer, in the move's place, which
becomes the op that puts the object there once the source has answered. Workers of a
provisioned broker may not publish tasks, and a worker runs only its clients' batches, so this
is the one route a move has.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from fedmq.broker.base import Broker
from fedmq.protocol.commands import CommandBatch, CommandResult, Op, OpError
from fedmq.protocol.errors import (
    OpNotAllowed,
    PublishRejected,
    RemoteError,
    RemotePermissionError,
    StoreFull,
    Unroutable,
)
from fedmq.protocol.messages import encode_message
from fedmq.protocol.operands import Value

MAX_BATCH_OPS = 500
MAX_BATCH_BYTES = 4 << 20
_ERRORS: dict[str, type[RemoteError]] = {"refused": OpNotAllowed, "permission": RemotePermissionError,
                                         "capacity": StoreFull, "failed": RemoteError}


@dataclass(frozen=True)
class Ticket:
    """Where an op went: its batch and its place in it."""

    seq: int
    index: int


# Reads answers until `link` has answered batch `seq` (Federation.wait).
Waiter = Callable[["WorkerLink", int], None]


@dataclass(frozen=True)
class Incoming:
    """An object moving here: `source` answers `value` (and `meta`) with it; `arrive` puts it here."""

    source: WorkerLink
    value: Ticket
    meta: Ticket | None
    arrive: Callable[[Value, Value | None], Op]

    def resolve(self) -> Op:
        self.source.wait(self.value.seq)  # a refused move is raised here, where it matters
        meta = self.source.take(self.meta) if self.meta is not None else None
        return self.arrive(self.source.take(self.value), meta)


class WorkerLink:
    def __init__(self, broker: Broker, client: str, worker: str, wait: Waiter, token: str) -> None:
        self.worker = worker
        self._broker = broker
        self._client = client
        self._token = token  # this client's token for this worker: the key to its session there
        self._wait = wait
        self._ops: list[Op | Incoming] = []
        self._bytes = 0
        self._frees: deque[int] = deque()  # appended from any thread (GC); drained at flush
        self.sent = 0  # the last batch sent
        self.answered = 0  # the last batch answered
        self._values: dict[tuple[int, int], Value] = {}
        self._error: tuple[int, OpError] | None = None  # the first failure not raised yet

    def add(self, op: Op | Incoming, literal_bytes: int = 0) -> Ticket:
        """Buffer `op`; where it will go. Sends the buffer when it is full."""
        self._ops.append(op)
        self._bytes += literal_bytes
        ticket = Ticket(self.sent + 1, len(self._ops) - 1)
        if len(self._ops) >= MAX_BATCH_OPS or self._bytes >= MAX_BATCH_BYTES:
            self.flush()
        return ticket

    def release(self, object_id: int) -> None:
        """Free `object_id` with the next batch. Safe from any thread and from __del__."""
        self._frees.append(object_id)

    def flush(self) -> int:
        """Send the buffered ops (and pending frees) as one batch; the last batch sent."""
        self._resolve_incoming()
        frees = [self._frees.popleft() for _ in range(len(self._frees))]
        if frees:
            self._ops.append(Op("free", tuple(frees)))
        if not self._ops:
            return self.sent
        ops = tuple(op for op in self._ops if isinstance(op, Op))
        batch = CommandBatch(self._client, self.sent + 1, ops, self._token)
        self._ops, self._bytes = [], 0
        try:
            self._broker.publish_task(self.worker, encode_message(batch))
        except Unroutable as e:
            raise RemoteError(f"worker {self.worker!r} has no task queue: is `fedmq worker --id {self.worker}` "
                              f"running against this broker?") from e
        except PublishRejected as e:  # this batch's failure: its ops never ran, later ones may
            raise RemoteError(f"the broker refused a batch of {len(ops)} op(s) for worker {self.worker!r}: {e}") from e
        self.sent = batch.seq
        return self.sent

    def _resolve_incoming(self) -> None:
        """Turn each moving object into the op that puts it here, in its place (waits for its source)."""
        for index, item in enumerate(self._ops):
            if isinstance(item, Incoming):
                try:
                    self._ops[index] = item.resolve()
                except BaseException:
                    del self._ops[index]  # never sent: ops that use the object will say it is missing
                    raise

    def take(self, ticket: Ticket) -> Value:
        """The value the op at `ticket` fetched (it must have been answered)."""
        value = self._values.pop((ticket.seq, ticket.index), None)
        if value is None:
            raise RemoteError(f"worker {self.worker!r} answered batch {ticket.seq} without the value of op "
                              f"{ticket.index}")
        return value

    def fetch(self, op: Op) -> Value:
        """Run `op` and everything before it; the value it fetched. RemoteError if any failed."""
        ticket = self.add(op)
        self.flush()
        self.wait(ticket.seq)
        return self.take(ticket)

    def wait(self, seq: int) -> None:
        """Block until batch `seq` is answered; raise the first failure up to it."""
        self._wait(self, seq)
        if self._error is not None and self._error[0] <= seq:
            (_, error), self._error = self._error, None
            for key in [key for key in self._values if key[0] <= seq]:
                del self._values[key]  # answers to ops after the failure: never asked for now
            raise _ERRORS.get(error.kind, RemoteError)(describe(self.worker, error))

    def accept(self, result: CommandResult) -> None:
        """Take in an answer (they arrive in order; a repeated one is ignored)."""
        if result.seq <= self.answered:
            return
        if result.seq > self.answered + 1 and self._error is None:  # the worker dead-letters what it cannot read
            reason = f"batch {self.answered + 1} was never answered: the worker could not decode it (see its dead letters)"
            self._error = (self.answered + 1, OpError(-1, "batch", reason))
        self.answered = result.seq
        for index, value in result.values.items():
            self._values[(result.seq, index)] = value
        if result.error is not None and self._error is None:
            self._error = (result.seq, result.error)


def describe(worker: str, error: OpError) -> str:
    return f"op {error.op!r} failed on worker {worker!r}: {error.reason}"
