"""What stored values cost, as the object store's caps count them (worker.remote.store)."""

from __future__ import annotations

import torch
from torch import nn

from fedmq.protocol.operands import Plain

LAYER_BYTES = 4096  # what one nn.Module costs in Python objects (measured: 2-4 KiB), parameters aside


def size_of(value: object) -> int:
    """Bytes a stored value holds, as the caps count them."""
    if isinstance(value, torch.Tensor):
        own = value.numel() * value.element_size()
        grad = value.grad if value.is_leaf else None  # a non-leaf keeps no gradient (and warns when asked)
        return own if grad is None else own + size_of(grad)
    if isinstance(value, nn.Module):
        tensors = [*value.parameters(), *value.buffers()]
        grads = [t.grad for t in tensors if t.grad is not None]
        return sum(size_of(t) for t in tensors + grads) + LAYER_BYTES * sum(1 for _ in value.modules())
    if isinstance(value, torch.optim.Optimizer):
        return sum(size_of(t) for state in value.state.values() for t in state.values() if isinstance(t, torch.Tensor))
    return 0


def structure_bytes(layers: Plain) -> int:
    """What building a module from this layer structure costs beyond its weights: LAYER_BYTES a
    layer, counted on the structure before anything is built."""
    stack, count = [layers], 0
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            count += "layer" in node
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return LAYER_BYTES * count


# Tensors of optimizer state per parameter, at most (Adam: exp_avg, exp_avg_sq, max_exp_avg_sq
# with amsgrad; ASGD: ax plus scalars; SGD: momentum_buffer), plus 64 bytes for scalars (step).
STATE_PER_PARAMETER = {"SGD": 1, "Adam": 3, "AdamW": 3, "Adagrad": 1, "Adadelta": 2, "Adamax": 2,
                       "RMSprop": 3, "Rprop": 2, "NAdam": 3, "RAdam": 2, "ASGD": 2}


def optimizer_state_bound(optimizer: torch.optim.Optimizer) -> int:
    """The most bytes `optimizer`'s state can take once every parameter has stepped."""
    factor = STATE_PER_PARAMETER.get(type(optimizer).__name__, 3)
    return sum(factor * size_of(p.detach()) + 64 for group in optimizer.param_groups for p in group["params"])
