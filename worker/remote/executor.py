"""Running a batch of remote ops for one client's session: allowlisted, sized, tainted.

Ops run in order. The first op that fails stops the batch: the ops after it are skipped and
their results marked lost (so a later op that uses one says why it is missing), except `free`
and `close`, which always run so that a failure never leaks objects. A `move` pauses the batch:
its message must be published from the connection's thread (worker.remote.handler), after
which the batch goes on from the next op.

Each tensor op is sized on meta tensors before it runs (worker.remote.sizing) and refused when it
cannot be sized or does not fit. A result that shares memory with an operand keeps at least that
operand's taint (worker.remote.aliases). A result whose shape depends on values (a mask's count)
is refused where values derived from them may not leave the worker. When an op fails on operands
more private than --allow-get lets out, torch's message (which can spell out values) is replaced
by its type; where even the failure may not be told, the results are stand-ins (Context.stand_ins).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from fedmq.protocol.commands import Op, OpError
from fedmq.protocol.operands import Ref, Value
from fedmq.worker.remote import aliases, allowlist, sizing
from fedmq.worker.remote.context import Context, Outgoing, unseen_failure
from fedmq.worker.remote.specials import SPECIALS
from fedmq.worker.remote.store import Entry, OpFailure, Session, Taint, combine, derive, size_of

ALWAYS_RUN = ("free", "close")  # even after a failure: they only release memory


@dataclass
class Outcome:
    """How far a batch got: what it fetched, the op that failed, a move waiting to be published."""

    values: dict[int, Value] = field(default_factory=dict)
    error: OpError | None = None
    outgoing: Outgoing | None = None


class Executor:
    def __init__(self, context: Context) -> None:
        self.context = context

    def run(self, session: Session, ops: Sequence[Op], start: int = 0, failed: OpError | None = None) -> Outcome:
        """Run `ops[start:]` (only the always-run ones if `failed` is set) until the end or a move."""
        outcome = Outcome(error=failed)
        for index in range(start, len(ops)):
            op = ops[index]
            if outcome.error is not None:
                self._skip(session, op, outcome.error)
                continue
            try:
                result = self._run_op(session, op)
            except OpFailure as e:
                outcome.error = OpError(index, op.name, e.reason, e.kind)
            except Exception as e:  # torch's own complaints: shapes, dtypes, autograd
                outcome.error = OpError(index, op.name, self._complaint(session, op, e))
            else:
                if isinstance(result, Outgoing):
                    outcome.outgoing = dataclasses.replace(result, index=index)
                    return outcome
                if result is not None:
                    outcome.values[index] = result
            if outcome.error is not None:
                self._lose(session, op, outcome.error)
        return outcome

    def _run_op(self, session: Session, op: Op) -> Value | Outgoing | None:
        special = SPECIALS.get(op.name)
        if special is not None:
            return special(self.context, session, op)
        if not allowlist.is_allowed(op.name):
            raise OpFailure("refused", f"op {op.name!r} is not allowed on worker {self.context.worker!r} "
                                       f"(see The allowlist in the README)")
        self._generic(session, op)
        return None

    def _skip(self, session: Session, op: Op, error: OpError) -> None:
        if op.name not in ALWAYS_RUN:
            self._lose(session, op, error)
            return
        with contextlib.suppress(OpFailure):  # malformed: the batch already reports a failure
            SPECIALS[op.name](self.context, session, op)

    def _complaint(self, session: Session, op: Op, error: Exception) -> str:
        """Torch's text, unless an operand is more private than may leave: its text can spell out
        values ("Target 8 is out of bounds"), so then only the exception's type is told."""
        taint = max((entry.taint for entry in _entries(session, (op.args, op.kwargs))), default=Taint.PUBLIC)
        if taint <= self.context.allow_get:
            return f"{type(error).__name__}: {error}"
        return (f"{type(error).__name__} (torch's message is withheld: an operand is {taint.name.lower()} data and "
                f"worker {self.context.worker!r} runs with --allow-get {self.context.policy})")

    @staticmethod
    def _lose(session: Session, op: Op, error: OpError) -> None:
        because = f"op {error.op!r} failed before it" if error.index >= 0 else error.reason
        for out in op.outs:
            session.lost[out] = f"its op {op.name!r} did not run ({because})"

    # Tensor ops from the allowlist.
    def _generic(self, session: Session, op: Op) -> None:
        context = self.context
        # torch's functions pass these along as None or False by default: harmless, so dropped.
        given = {key: arg for key, arg in op.kwargs.items()
                 if not (key in allowlist.FORBIDDEN_KWARGS and (arg is None or arg is False))}
        forbidden = allowlist.FORBIDDEN_KWARGS & given.keys()
        if forbidden:
            raise OpFailure("refused", f"{op.name}: keyword {sorted(forbidden)[0]!r} is not allowed here")
        space, _, base = op.name.partition(".")
        if base == "one_hot" and _class_count(op) < 0:  # else its size would follow the data's largest value
            raise OpFailure("refused", "F.one_hot needs num_classes here")
        fn = allowlist.function(op.name)
        taints: list[Taint] = []
        used: list[tuple[torch.Tensor, Taint]] = []
        args = tuple(context.resolve(session, arg, taints, used) for arg in op.args)
        kwargs = {key: context.resolve(session, arg, taints, used) for key, arg in given.items()}
        if space == "torch" and base in allowlist.CREATION | {"zeros_like", "ones_like", "full_like"}:
            kwargs["device"] = context.device  # the worker, not the client, chooses devices
        size = sizing.size_call(op.name, fn, args, kwargs)  # before anything is allocated
        self._check_shape_deciders(op, size, used)
        context.store.check_room(0, size.nbytes, op.name)
        failed = unseen_failure(session, op)
        try:
            results = _as_tensors(op, fn(*args, **kwargs))
        except Exception as e:
            results = context.stand_ins(e, taints, size, [tensor for tensor, _ in used])
            failed = f"{op.name} failed ({type(e).__name__})"
        else:
            context.check_predicted(op.name, size, results, taints)
        taint = combine(taints, structural=base in allowlist.STRUCTURAL)
        context.store.check_room(len(results), sum(size_of(t) for t in results), op.name)
        for out, tensor in zip(op.outs, results, strict=True):
            kept = aliases.at_least(taint, tensor, used)  # a view of an operand is as tainted as it
            context.store.put(session, out, Entry(tensor, kept, size_of(tensor), failed=failed), op.name)

    def _check_shape_deciders(self, op: Op, size: sizing.Size, used: list[tuple[torch.Tensor, Taint]]) -> None:
        """OpFailure("permission") when the shape of the op's result would show values that may not
        leave: a mask's count of selected elements is as telling as the mask."""
        taint = max((t for tensor, t in used if any(tensor is d for d in size.deciders)), default=Taint.PUBLIC)
        if derive(taint) > self.context.allow_get:  # a count is computed: derived from what it counts
            raise OpFailure("permission", f"{op.name}: the shape of its result would depend on the values of "
                                          f"{taint.name.lower()} data (its mask), and worker {self.context.worker!r} "
                                          f"runs with --allow-get {self.context.policy}: keep shapes fixed (multiply "
                                          f"by the mask, or use where) instead of selecting")


def _class_count(op: Op) -> int:
    given = op.kwargs.get("num_classes", op.args[1] if len(op.args) > 1 else -1)
    return given if isinstance(given, int) and not isinstance(given, bool) else -1


def _as_tensors(op: Op, result: object) -> list[torch.Tensor]:
    items = list(result) if isinstance(result, tuple) else [result]
    if len(items) != len(op.outs):
        raise OpFailure("failed", f"{op.name} gives {len(items)} result(s); the client sent {len(op.outs)} id(s)")
    for item in items:
        if not isinstance(item, torch.Tensor):
            raise OpFailure("failed", f"{op.name} gave a {type(item).__name__}; only tensors are kept "
                                      f"(fetch the tensor and convert it here)")
    return items  # type: ignore[return-value]


def _entries(session: Session, operands: object) -> Iterator[Entry]:
    """The stored objects `operands` refer to (nested in tuples, lists and maps), those that exist."""
    if isinstance(operands, Ref):
        entry = session.objects.get(operands.id)
        if entry is not None:
            yield entry
    elif isinstance(operands, (tuple, list)):
        for item in operands:
            yield from _entries(session, item)
    elif isinstance(operands, dict):
        for item in operands.values():
            yield from _entries(session, item)
