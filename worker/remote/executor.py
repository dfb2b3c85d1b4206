"""Running a batch of remote ops for one client's session: allowlisted, sized, tainted.

Ops run in order. The first op that fails stops the batch: the ops after it are skipped and
their results marked lost (so a later op that uses one says why it is missing), except `free`
and `close`, which always run so that a failure never leaks objects. A `move` pauses the batch:
its message must be published from the connection's thread (worker.remote.handler), after
which the batch goes on from the next op.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from protocol.commands import Op, OpError
from protocol.operands import Value
from worker.remote import allowlist
from worker.remote.context import Context, Outgoing
from worker.remote.specials import SPECIALS
from worker.remote.store import Entry, OpFailure, Session, Taint, combine, size_of

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
                outcome.error = OpError(index, op.name, f"{type(e).__name__}: {e}")
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
        args = tuple(context.resolve(session, arg, taints) for arg in op.args)
        kwargs = {key: context.resolve(session, arg, taints) for key, arg in given.items()}
        if space == "torch" and base in allowlist.CREATION | {"zeros_like", "ones_like", "full_like"}:
            kwargs["device"] = context.device  # the worker, not the client, chooses devices
        self._check_size(op, base, fn, args, kwargs)
        results = _as_tensors(op, fn(*args, **kwargs))
        taint = combine(taints, structural=base in allowlist.STRUCTURAL)
        context.store.check_room(len(results), sum(size_of(t) for t in results), op.name)
        for out, tensor in zip(op.outs, results, strict=True):
            context.store.put(session, out, Entry(tensor, taint, size_of(tensor)), op.name)

    def _check_size(self, op: Op, base: str, fn: Callable[..., Any], args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> None:
        """OpFailure("capacity") when the op's result cannot fit, found before allocating it."""
        if base in allowlist.BOUNDED:
            return  # no larger than an input, which is already held
        tensors = list(_tensors_in((args, kwargs)))
        if base in allowlist.POINTWISE:
            shape = torch.broadcast_shapes(*(t.shape for t in tensors)) if tensors else torch.Size()  # type: ignore[no-untyped-call]
            need = math.prod(shape) * max((t.element_size() for t in tensors), default=8)
        else:
            need = _meta_bytes(fn, args, kwargs)
        if need > self.context.store.room_left():
            self.context.store.check_room(0, need, op.name)


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


def _tensors_in(obj: object) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            yield from _tensors_in(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors_in(item)


def _meta_bytes(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """Bytes of the op's results, computed on meta tensors: shapes only, no memory."""
    def meta(obj: Any) -> Any:  # noqa: ANN401
        if isinstance(obj, torch.Tensor):
            return torch.empty_strided(obj.shape, obj.stride(), dtype=obj.dtype, device="meta")
        if isinstance(obj, (tuple, list)):
            return type(obj)(meta(item) for item in obj)
        return obj

    meta_kwargs = {key: meta(value) for key, value in kwargs.items()}
    if "device" in meta_kwargs:
        meta_kwargs["device"] = "meta"
    try:
        result = fn(*meta(args), **meta_kwargs)
    except Exception:  # no meta kernel, or a data-dependent shape: the real run will tell, then the cap
        return 0
    return sum(t.numel() * t.element_size() for t in _tensors_in(result))
