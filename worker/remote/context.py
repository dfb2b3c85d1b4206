"""What the ops of a batch run against: the worker's store, device, task and shard."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn

from fedmq.protocol.commands import Op
from fedmq.protocol.operands import Arg, ModuleSpec, Ref
from fedmq.worker.remote import sizing
from fedmq.worker.remote.store import Entry, ObjectStore, OpFailure, Session, Taint, derive
from fedmq.worker.task import Dataset, Task

V = TypeVar("V", torch.Tensor, nn.Module, torch.optim.Optimizer)


@dataclass(frozen=True)
class Outgoing:
    """A move's message, to be published to `target`'s task queue; then object `object_id` goes."""

    target: str
    body: bytes | memoryview
    object_id: int
    index: int = -1  # the op's place in its batch, filled in by the executor


@dataclass
class Context:
    worker: str
    store: ObjectStore
    device: torch.device
    task: Task
    shard: Dataset
    allow_get: Taint  # the most tainted value that may leave this worker

    def entry(self, session: Session, arg: Arg, kind: type[V]) -> tuple[Entry, V]:
        """The entry `arg` refers to, and its value, which must be a `kind`."""
        if not isinstance(arg, Ref):
            raise OpFailure("failed", f"expected a reference to a {kind.__name__}, got {type(arg).__name__}")
        entry = self.store.entry(session, arg.id)
        if not isinstance(entry.value, kind):
            raise OpFailure("failed", f"object #{arg.id} is a {type(entry.value).__name__}, not a {kind.__name__}")
        return entry, entry.value

    def resolve(self, session: Session, arg: Arg, taints: list[Taint],
                used: list[tuple[torch.Tensor, Taint]] | None = None) -> Any:  # noqa: ANN401 - an operand
        """`arg` with references replaced by the tensors they name, literals on the worker's device.

        Each stored tensor's taint goes to `taints`; the tensor and its taint also to `used`.
        """
        if isinstance(arg, Ref):
            entry, tensor = self.entry(session, arg, torch.Tensor)
            taints.append(entry.taint)
            if used is not None:
                used.append((tensor, entry.taint))
            return tensor
        if isinstance(arg, torch.Tensor):  # a copy: the decoded literal is a read-only view of the message
            return arg.to(self.device, copy=True)
        if isinstance(arg, (tuple, list)):
            return type(arg)(self.resolve(session, item, taints, used) for item in arg)
        if isinstance(arg, (ModuleSpec, dict)):
            raise OpFailure("failed", "modules and weights are operands of `module` and `task_model` only")
        return arg

    @property
    def policy(self) -> str:
        """This worker's --allow-get, as the flag spells it."""
        return {Taint.PUBLIC: "none", Taint.DERIVED: "derived", Taint.PRIVATE: "all"}[self.allow_get]

    def check_leaving(self, entry: Entry, object_id: int, what: str) -> None:
        """OpFailure("permission") unless this worker's --allow-get lets the entry leave;
        OpFailure("failed") when it is the stand-in of a failed op's result."""
        if entry.taint > self.allow_get:
            raise OpFailure("permission", f"{what} of object #{object_id} refused: it is {entry.taint.name.lower()} "
                                          f"data and worker {self.worker!r} runs with --allow-get {self.policy}")
        if entry.failed:
            raise OpFailure("failed", f"{what} of object #{object_id}: it holds no value, because {entry.failed} "
                                      f"(the message is withheld: it may spell out private values)")

    def stand_ins(self, error: Exception, taints: list[Taint], size: sizing.Size,
                  operands: list[torch.Tensor]) -> list[torch.Tensor]:
        """What an op that raised `error` leaves for its results, when the failure may not be told.

        Whether an op fails can depend on values (an index out of range): told, it is one bit
        about them per op, enough to find a private label by bisection. That bit is derived from
        the operands; where derived values may not leave (--allow-get none and tainted operands)
        a failure is not told: the op's results are stand-ins (sizing.stand_ins), marked failed
        (`check_leaving` says so, should one ever leave). Otherwise, or when the results' shapes
        are not known, `error` is raised again (its text withheld by the executor as needed).
        """
        if isinstance(error, OpFailure) or derive(max(taints, default=Taint.PUBLIC)) <= self.allow_get \
                or size.outputs is None:
            raise error
        return sizing.stand_ins(size, operands)


    def check_predicted(self, op: str, size: sizing.Size, results: list[torch.Tensor], taints: list[Taint]) -> None:
        """OpFailure("refused") when results' shapes are not those predicted from the operands'
        shapes and an operand may not leave: the shape may then encode its values. (Sizing
        refuses or bounds every op known to do this; this catches one that is not known.)"""
        if size.outputs is None or [t.shape for t in results] == [shape for shape, _ in size.outputs]:
            return
        if derive(max(taints, default=Taint.PUBLIC)) > self.allow_get:
            raise OpFailure("refused", f"{op}: its result's shape is not the one its operands' shapes predict, so it "
                                       f"may show values that worker {self.worker!r} keeps (--allow-get {self.policy})")


def unseen_failure(session: Session, op: Op) -> str:
    """Why the op's results will be stand-ins too: an operand is one (else "")."""
    for ref in _refs((op.args, op.kwargs)):
        entry = session.objects.get(ref.id)
        if entry is not None and entry.failed:
            return f"object #{ref.id} it was computed from holds no value ({entry.failed})"
    return ""


def _refs(operands: object) -> Iterator[Ref]:
    if isinstance(operands, Ref):
        yield operands
    elif isinstance(operands, (tuple, list)):
        for item in operands:
            yield from _refs(item)
    elif isinstance(operands, dict):
        for item in operands.values():
            yield from _refs(item)
