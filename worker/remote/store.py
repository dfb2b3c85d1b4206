"""The objects a worker holds for its remote clients: one session per client, capped, tainted.

Caps are for the worker as a whole (all clients together): `max_objects` objects and
`max_bytes` bytes, counted as tensors' own sizes (numel x element size), modules' parameters
and buffers, and optimizers' state. Autograd graphs and gradients are not counted. A session
not heard from for `ttl_s` seconds is dropped with everything in it: its client went away.

Taint says where a value came from, and so whether it may leave the worker (`--allow-get`):
PUBLIC values are the client's own (sent by it, or computed from its objects alone); PRIVATE
values are the worker's shard or values moved, selected or cast out of it unchanged; DERIVED
values were computed from private ones (a loss, a trained model).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum

import torch
from torch import nn

from protocol.commands import OpError
from protocol.operands import Plain, StoreInfo


class Taint(IntEnum):
    PUBLIC = 0
    DERIVED = 1
    PRIVATE = 2


def combine(taints: Iterable[Taint], structural: bool) -> Taint:
    """The taint of a result: an unchanged selection keeps its inputs', a computation derives."""
    taint = max(taints, default=Taint.PUBLIC)
    return taint if structural else derive(taint)


def derive(taint: Taint) -> Taint:
    return Taint.DERIVED if taint == Taint.PRIVATE else taint


# --allow-get: the most tainted value that may leave the worker.
ALLOW_GET = {"none": Taint.PUBLIC, "derived": Taint.DERIVED, "all": Taint.PRIVATE}


class OpFailure(Exception):
    """An op could not run; `kind` is one of protocol.commands.ERROR_KINDS."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


@dataclass
class Entry:
    value: torch.Tensor | nn.Module | torch.optim.Optimizer
    taint: Taint
    nbytes: int
    layers: Plain = None  # a module's layer structure, kept so that it can move


@dataclass
class Session:
    client: str
    last_seen: float
    objects: dict[int, Entry] = field(default_factory=dict)
    last_seq: int = 0  # the last batch run: a redelivered batch is not run twice
    carried: OpError | None = None  # a failed move into this worker, told with the next batch
    lost: dict[int, str] = field(default_factory=dict)  # ids never made -> why, for clear errors


@dataclass(frozen=True)
class Limits:
    max_objects: int = 10_000
    max_bytes: int = 1 << 30
    ttl_s: float = 600.0


class ObjectStore:
    def __init__(self, worker: str, limits: Limits) -> None:
        self.worker = worker
        self.limits = limits
        self.sessions: dict[str, Session] = {}
        self.objects = 0
        self.bytes = 0

    def session(self, client: str) -> Session:
        """The client's session, opened on first use; it is seen now."""
        session = self.sessions.get(client)
        if session is None:
            session = self.sessions[client] = Session(client, time.monotonic())
        session.last_seen = time.monotonic()
        return session

    def entry(self, session: Session, object_id: int) -> Entry:
        entry = session.objects.get(object_id)
        if entry is None:
            why = session.lost.get(object_id, "it was freed, never sent, or expired with an idle client")
            raise OpFailure("failed", f"worker {self.worker!r} holds no object #{object_id}: {why}")
        return entry

    def check_room(self, count: int, nbytes: int, op: str) -> None:
        """OpFailure("capacity") unless `count` more objects of `nbytes` in all fit under the caps."""
        limits = self.limits
        if self.objects + count > limits.max_objects:
            raise OpFailure("capacity", f"{op}: worker {self.worker!r} holds {self.objects} remote objects, its cap "
                                        f"is {limits.max_objects} (max_objects): free some (del their pointers)")
        if self.bytes + nbytes > limits.max_bytes:
            raise OpFailure("capacity", f"{op}: {_size(nbytes)} more would take worker {self.worker!r} past its cap "
                                        f"of {_size(limits.max_bytes)} (max_object_bytes; {_size(self.bytes)} "
                                        f"in use): free some objects (del their pointers) or raise the cap")

    def room_left(self) -> int:
        return self.limits.max_bytes - self.bytes

    def put(self, session: Session, object_id: int, entry: Entry, op: str) -> None:
        if self.sessions.get(session.client) is not session:
            raise OpFailure("failed", f"{op}: the client's session on worker {self.worker!r} is closed")
        if object_id in session.objects:
            raise OpFailure("failed", f"{op}: object #{object_id} already exists on worker {self.worker!r}")
        self.check_room(1, entry.nbytes, op)
        session.objects[object_id] = entry
        session.lost.pop(object_id, None)
        self.objects += 1
        self.bytes += entry.nbytes

    def resize(self, entry: Entry) -> None:
        """Recount an entry whose value grew or shrank in place (an optimizer's state)."""
        nbytes = size_of(entry.value)
        self.bytes += nbytes - entry.nbytes
        entry.nbytes = nbytes

    def free(self, session: Session, object_id: int) -> Entry | None:
        session.lost.pop(object_id, None)
        entry = session.objects.pop(object_id, None)
        if entry is not None:
            self.objects -= 1
            self.bytes -= entry.nbytes
        return entry

    def close(self, client: str) -> None:
        session = self.sessions.pop(client, None)
        if session is not None:
            for object_id in list(session.objects):
                self.free(session, object_id)

    def expire(self) -> list[str]:
        """Drop the sessions idle for longer than the TTL; their clients."""
        deadline = time.monotonic() - self.limits.ttl_s
        gone = [client for client, session in self.sessions.items() if session.last_seen < deadline]
        for client in gone:
            self.close(client)
        return gone

    @staticmethod
    def info(session: Session) -> StoreInfo:
        return StoreInfo(len(session.objects), sum(entry.nbytes for entry in session.objects.values()))


def size_of(value: object) -> int:
    """Bytes a stored value holds, as the caps count them."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, nn.Module):
        return sum(size_of(t) for t in [*value.parameters(), *value.buffers()])
    if isinstance(value, torch.optim.Optimizer):
        return sum(size_of(t) for state in value.state.values() for t in state.values() if isinstance(t, torch.Tensor))
    return 0


def _size(nbytes: int) -> str:
    size = float(nbytes)
    for unit in ("B", "KiB", "MiB"):
        if abs(size) < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"
