"""What a remote batch consumes beyond its stored objects: autograd's saved tensors, and time.

Memory: autograd keeps the tensors an op saves for backward (inputs, results, intermediates)
as long as the op's graph lives, whether or not any stored object names them. While a batch
runs, torch.autograd.graph.saved_tensors_hooks charge each saved tensor to the client's
session (numel x element size, as the caps count tensors) when it is saved, and give it back
when autograd drops it (its graph freed, or backward done). A tensor both saved and stored is
counted twice: the count errs on the side of refusing. An op whose saved tensors do not fit
fails with "capacity".

Time: every aten op of the batch passes a TorchDispatchMode first. Matrix products and
convolutions (torch.utils.flop_counter's table) are priced in FLOPs on meta tensors before they
run, at FLOPS_PER_S; an op that would take the batch past its budget is refused, and so is any
op once the batch's wall time is spent. Other ops are linear in their operands' size, which the
byte caps bound. What a batch already computed stays: its objects are stored, and its answer
names the op that ran out of time. On CUDA, ops run asynchronously and the clock sees when they
are launched: there the FLOP prices are what bound a batch (a known limit, not yet measured on a GPU).
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.autograd.graph import saved_tensors_hooks
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map_only
from torch.utils.flop_counter import flop_registry

from fedmq.worker.remote.store import ObjectStore, OpFailure, Session

FLOPS_PER_S = 5e10  # generous for one CPU core: an estimate under it lets an op through


class _Saved:
    """A tensor autograd saved, and the charge it releases when autograd drops it."""

    __slots__ = ("tensor", "_release")

    def __init__(self, tensor: torch.Tensor, release: functools.partial[None]) -> None:
        self.tensor = tensor.detach()  # no grad_fn: no reference cycle through the graph
        self._release = release

    def __del__(self) -> None:
        self._release()


@dataclass(frozen=True)
class Budget:
    seconds: float = 10.0  # wall time of one batch's ops
    flops_per_s: float = FLOPS_PER_S


class _Clock(TorchDispatchMode):  # type: ignore[no-untyped-call]  # torch leaves it unannotated
    """Refuses each aten op once the batch's time is spent, or that would spend it."""

    def __init__(self, budget: Budget) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._budget = budget
        self._deadline = 0.0  # set at the batch's first real op: torch's one-off imports are not its work

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:  # noqa: ANN401
        kwargs = kwargs or {}
        if _on_meta((args, kwargs)):  # sizing an op (worker.remote.sizing): shapes only, no work
            return func(*args, **kwargs)
        if not self._deadline:
            self._deadline = time.monotonic() + self._budget.seconds
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise OpFailure("capacity", f"the batch ran past its compute budget of {self._budget.seconds:g}s "
                                        f"(at {func}): send fewer or smaller ops per batch")
        price = flop_registry.get(func.overloadpacket)
        if price is not None:
            flops = _flops(func, price, args, kwargs)
            if flops / self._budget.flops_per_s > left:
                raise OpFailure("capacity", f"{func} needs about {flops:.3g} FLOPs, more than the "
                                            f"{left:.2f}s left of the batch's compute budget of "
                                            f"{self._budget.seconds:g}s: split the work")
        return func(*args, **kwargs)


def _flops(func: Any, price: Any, args: Any, kwargs: Any) -> float:  # noqa: ANN401
    """The op's FLOPs by torch's formula, its result shaped on meta tensors; 0 when that fails
    (the op itself will then raise its own, clearer error)."""
    meta = tree_map_only(torch.Tensor, lambda t: t.to("meta"), (args, kwargs))
    try:
        return float(price(*args, **kwargs, out_val=func(*meta[0], **meta[1])))
    except Exception:  # noqa: BLE001 - shapes that do not fit: the real op says so
        return 0.0


def _on_meta(operands: tuple[Any, dict[str, Any]]) -> bool:
    found: list[bool] = []
    tree_map_only(torch.Tensor, lambda t: found.append(t.is_meta), operands)
    device = operands[1].get("device")
    return any(found) or (device is not None and torch.device(device).type == "meta")


class Meter:
    def __init__(self, store: ObjectStore, budget: Budget) -> None:
        self._store = store
        self.budget = budget

    @contextlib.contextmanager
    def batch(self, session: Session) -> Iterator[None]:
        """Run a batch of `session` inside: its caps, its saved tensors and its time counted.

        Enter it on the thread that runs the ops: hooks and modes are per thread.
        """
        store = self._store

        def pack(tensor: torch.Tensor) -> _Saved:
            nbytes = 0 if tensor.is_meta else tensor.numel() * tensor.element_size()
            store.charge(session, nbytes, "autograd (tensors saved for backward)")
            return _Saved(tensor, functools.partial(store.release, session, nbytes))

        def unpack(saved: _Saved) -> torch.Tensor:
            return saved.tensor

        with store.serving(session), saved_tensors_hooks(pack, unpack), _Clock(self.budget):
            yield
