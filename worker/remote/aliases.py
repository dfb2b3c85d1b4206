"""Taint follows storage: a tensor that shares memory with a tainted one is as tainted.

Torch's views (`detach()`, `view`, slices, a module that returns its input) share memory with
the tensor they come from, and a write into that memory (an optimizer's step, a module's
forward updating its running statistics or renormalising its embedding) changes what every
alias holds. So taint is kept per storage as well as per stored object:
- a result that shares memory with an operand is at least as tainted as that operand (`at_least`);
- whatever writes into stored tensors spreads its taint to every stored object of the session
  that shares memory with them (`spread`), whether or not the object it wrote through is still
  stored.
The shard is PRIVATE already, the highest taint, so sessions never need each other's objects.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from fedmq.worker.remote.store import Session, Taint


def storages(value: object) -> set[int]:
    """The addresses of the memory `value` holds: a tensor's, a module's weights and buffers, an
    optimizer's parameters (which its step writes)."""
    if isinstance(value, torch.Tensor):
        return _addresses([value])
    if isinstance(value, nn.Module):
        return _addresses([*value.parameters(), *value.buffers()])
    if isinstance(value, torch.optim.Optimizer):
        return _addresses(p for group in value.param_groups for p in group["params"])
    return set()


def _addresses(tensors: Iterable[torch.Tensor]) -> set[int]:
    # The storage's address: the tensor's own, less its offset into the storage (what
    # untyped_storage().data_ptr() says, without a storage object per tensor). Empty storages all
    # sit at address 0 and hold no values: nothing to share.
    found = {t.data_ptr() - int(t.storage_offset()) * t.element_size() for t in tensors if not t.is_meta}
    found.discard(0)
    return found


def at_least(taint: Taint, result: torch.Tensor, operands: Iterable[tuple[torch.Tensor, Taint]]) -> Taint:
    """`taint`, raised to the taint of every operand whose memory `result` shares."""
    mine = storages(result)
    shared = [other for tensor, other in operands if mine & storages(tensor)]
    return max([taint, *shared])


def spread(session: Session, written: set[int], taint: Taint) -> None:
    """Raise to `taint` every object of `session` that shares memory with `written`."""
    if not written or taint == Taint.PUBLIC:
        return
    for entry in session.objects.values():
        if entry.taint < taint and storages(entry.value) & written:
            entry.taint = taint
