"""The objects a worker holds for its remote clients: one session per client, capped, tainted.

Caps hold for the worker as a whole (`max_objects`, `max_bytes`) and for each client
(`max_client_objects`, `max_client_bytes`), so one client cannot starve another. Bytes count
tensors' own sizes (numel x element size); modules' parameters, buffers and gradients plus
LAYER_BYTES per layer (a layer without parameters still costs Python objects); optimizers'
state; the tensors autograd saves for backward while their graph lives (worker.remote.meter);
and the copies a batch's `get`s hold until it is answered. A session not heard from for `ttl_s`
seconds is dropped with everything in it: its client went away.

A session belongs to its owner: the client's token for this worker and, where the broker
vouches for it, the AMQP user_id of the first batch. A batch from anyone else is refused
before it touches the session (worker.remote.handler).

Taint says where a value came from, and so whether it may leave the worker (`--allow-get`):
PUBLIC values are the client's own (sent by it, or computed from its objects alone); PRIVATE
values are the worker's shard or values moved, selected or cast out of it unchanged; DERIVED
values were computed from private ones (a loss, a trained model).
"""

from __future__ import annotations

import contextlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import IntEnum

import torch
from torch import nn

from fedmq.protocol.operands import Plain, StoreInfo
from fedmq.worker.remote.costs import LAYER_BYTES as LAYER_BYTES  # re-exported: what the caps count
from fedmq.worker.remote.costs import optimizer_state_bound as optimizer_state_bound
from fedmq.worker.remote.costs import size_of as size_of
from fedmq.worker.remote.costs import structure_bytes as structure_bytes


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
    failed: str = ""  # set on a stand-in for the result of an op that failed unseen (worker.remote.sizing)


MAX_LOST = 1024  # remembered reasons for missing ids, per session: only for clearer errors
MAX_LOST_REASON = 300


class LostIds(OrderedDict[int, str]):
    """Ids whose op did not run -> why; the oldest are forgotten past MAX_LOST."""

    def __setitem__(self, key: int, value: str) -> None:
        super().__setitem__(key, value[:MAX_LOST_REASON])
        if len(self) > MAX_LOST:
            self.popitem(last=False)


@dataclass(frozen=True)
class Owner:
    """Who a session belongs to: the client's token for this worker and its AMQP user_id."""

    token: str
    user: str | None  # None when the broker does not vouch for a user (no credentials)

    def matches(self, other: Owner) -> bool:
        return hmac.compare_digest(self.token, other.token) and self.user == other.user


@dataclass
class Session:
    client: str
    owner: Owner
    last_seen: float
    objects: dict[int, Entry] = field(default_factory=dict)
    last_seq: int = 0  # the last batch run: a redelivered batch is not run twice
    lost: LostIds = field(default_factory=LostIds)  # ids never made -> why, for clear errors
    bytes: int = 0  # everything charged to this client: objects, saved activations, fetched copies
    extra: int = 0  # the part of `bytes` that is not objects (saved activations, fetched copies)
    fetched: int = 0  # the part of `extra` held for this batch's answer


class SessionRefused(Exception):
    """A batch for a client id whose session belongs to someone else, or one client too many."""


@dataclass(frozen=True)
class Limits:
    max_objects: int = 10_000
    max_bytes: int = 1 << 30
    ttl_s: float = 600.0
    max_client_objects: int = 10_000
    max_client_bytes: int = 1 << 30
    max_clients: int = 64


class ObjectStore:
    def __init__(self, worker: str, limits: Limits) -> None:
        self.worker = worker
        self.limits = limits
        self.sessions: dict[str, Session] = {}
        self.objects = 0
        self.bytes = 0
        self.active: Session | None = None  # the session whose batch runs now: its caps apply too

    def open(self, client: str, owner: Owner) -> Session:
        """The client's session, opened on first use and bound to `owner`; it is seen now.

        SessionRefused when the session belongs to another owner, or when a new one would pass
        max_clients; nothing about the session changes then.
        """
        session = self.sessions.get(client)
        if session is None:
            if len(self.sessions) >= self.limits.max_clients:
                raise SessionRefused(f"worker {self.worker!r} serves {len(self.sessions)} clients, its cap "
                                     f"(max_clients): try again when one has closed or expired")
            session = self.sessions[client] = Session(client, owner, time.monotonic())
        elif not session.owner.matches(owner):
            raise SessionRefused(f"client {client!r} has a session on worker {self.worker!r} that belongs to "
                                 f"another sender (token or user_id differ): refused")
        session.last_seen = time.monotonic()
        return session

    def session(self, client: str) -> Session:
        """The client's session for in-process callers (tests, tools), bound to no token."""
        return self.open(client, Owner("", None))

    @contextlib.contextmanager
    def serving(self, session: Session) -> Iterator[None]:
        """While a batch of `session` runs: its per-client caps apply to check_room."""
        self.active = session
        try:
            yield
        finally:
            self.active = None

    def entry(self, session: Session, object_id: int) -> Entry:
        entry = session.objects.get(object_id)
        if entry is None:
            why = session.lost.get(object_id, "it was freed, never sent, or expired with an idle client")
            raise OpFailure("failed", f"worker {self.worker!r} holds no object #{object_id}: {why}")
        return entry

    def check_room(self, count: int, nbytes: int, op: str, session: Session | None = None) -> None:
        """OpFailure("capacity") unless `count` more objects of `nbytes` in all fit under the caps
        of the worker and of `session` (by default the one whose batch runs now)."""
        limits = self.limits
        if self.objects + count > limits.max_objects:
            raise OpFailure("capacity", f"{op}: worker {self.worker!r} holds {self.objects} remote objects, its cap "
                                        f"is {limits.max_objects} (max_objects): free some (del their pointers)")
        if self.bytes + nbytes > limits.max_bytes:
            raise OpFailure("capacity", f"{op}: {_size(nbytes)} more would take worker {self.worker!r} past its cap "
                                        f"of {_size(limits.max_bytes)} (max_object_bytes; {_size(self.bytes)} "
                                        f"in use): free some objects (del their pointers) or raise the cap")
        session = session or self.active
        if session is not None:
            self._check_client(session, count, nbytes, op)

    def _check_client(self, session: Session, count: int, nbytes: int, op: str) -> None:
        limits = self.limits
        if len(session.objects) + count > limits.max_client_objects:
            raise OpFailure("capacity", f"{op}: this client holds {len(session.objects)} objects on worker "
                                        f"{self.worker!r}, its cap per client is {limits.max_client_objects} "
                                        f"(max_client_objects): free some (del their pointers)")
        if session.bytes + nbytes > limits.max_client_bytes:
            raise OpFailure("capacity", f"{op}: {_size(nbytes)} more would take this client past its cap of "
                                        f"{_size(limits.max_client_bytes)} on worker {self.worker!r} "
                                        f"(max_client_bytes; {_size(session.bytes)} in use, autograd graphs "
                                        f"and fetched copies included): free some objects or backward() first")

    def room_left(self) -> int:
        room = self.limits.max_bytes - self.bytes
        if self.active is not None:
            room = min(room, self.limits.max_client_bytes - self.active.bytes)
        return room

    def put(self, session: Session, object_id: int, entry: Entry, op: str) -> None:
        if self.sessions.get(session.client) is not session:
            raise OpFailure("failed", f"{op}: the client's session on worker {self.worker!r} is closed")
        if object_id in session.objects:
            raise OpFailure("failed", f"{op}: object #{object_id} already exists on worker {self.worker!r}")
        self.check_room(1, entry.nbytes, op, session)
        session.objects[object_id] = entry
        session.lost.pop(object_id, None)
        self.objects += 1
        self._add(session, entry.nbytes)

    def resize(self, entry: Entry, session: Session | None = None) -> None:
        """Recount an entry whose value grew or shrank in place (an optimizer's state, gradients)."""
        nbytes = size_of(entry.value)
        self._add(session or self.active, nbytes - entry.nbytes)
        entry.nbytes = nbytes

    def recount(self, session: Session) -> None:
        """Recount what backward or step may grow in place: modules and optimizers, and leaf
        tensors that take gradients. (Shard pointers count nothing, and never take gradients.)"""
        for entry in session.objects.values():
            value = entry.value
            if not isinstance(value, torch.Tensor) or (value.requires_grad and value.is_leaf):
                self.resize(entry, session)

    def charge(self, session: Session, nbytes: int, op: str, *, fetched: bool = False) -> None:
        """Count `nbytes` that are not an object (saved activations, a fetched copy) against the
        caps; OpFailure("capacity") when they do not fit. `release` gives them back."""
        self.check_room(0, nbytes, op, session)
        session.extra += nbytes
        if fetched:
            session.fetched += nbytes
        self._add(session, nbytes)

    def release(self, session: Session, nbytes: int) -> None:
        session.extra -= nbytes
        self._add(session, -nbytes)

    def release_fetched(self, session: Session) -> None:
        """The batch was answered: the copies its gets held are gone."""
        fetched, session.fetched = session.fetched, 0
        self.release(session, fetched)

    def _add(self, session: Session | None, nbytes: int) -> None:
        self.bytes += nbytes
        if session is not None:
            session.bytes += nbytes

    def free(self, session: Session, object_id: int) -> Entry | None:
        session.lost.pop(object_id, None)
        entry = session.objects.pop(object_id, None)
        if entry is not None:
            self.objects -= 1
            self._add(session, -entry.nbytes)
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


def _size(nbytes: int) -> str:
    size = float(nbytes)
    for unit in ("B", "KiB", "MiB"):
        if abs(size) < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"
