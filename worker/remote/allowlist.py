"""What a remote client may run on a worker: every operation, layer and optimizer, by name.

This table is the only gate: an op whose name is not here is refused before anything is looked
up, so there is no path to torch.load, files, the OS, arbitrary attributes or dunders. Wire
names are `Tensor.<method>` (called on a tensor), `torch.<function>`, `F.<function>`
(torch.nn.functional), `op.<operator>` (Python operators, `r...` reversed) and the special ops of
worker.remote.executor. The client uses the same table to name what it sends.

STRUCTURAL ops (by base name, the part after the dot) move, select, reshape or cast values
without computing new ones: their result keeps its inputs' taint, so a slice of private data is
still private (worker.remote.store). Every op is first run on meta tensors (no memory) to learn
what it would allocate, intermediates included, so one op cannot allocate beyond the caps
(worker.remote.sizing).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

_ELEMENTWISE = """
    abs neg exp exp2 expm1 log log2 log10 log1p sqrt rsqrt square reciprocal sign sgn sin cos tan
    asin acos atan sinh cosh tanh sigmoid relu erf erfc floor ceil round trunc frac nan_to_num
    add sub mul div true_divide floor_divide remainder fmod pow maximum minimum fmax fmin atan2
    hypot lerp clamp clip eq ne lt le gt ge isnan isinf isfinite logical_not logical_and logical_or
    logical_xor bitwise_and bitwise_or bitwise_xor bitwise_not where masked_fill
"""
_REDUCTIONS = """
    sum mean prod std var norm logsumexp amax amin max min argmax argmin median mode kthvalue all
    any count_nonzero cumsum cumprod cummax cummin softmax log_softmax sort argsort topk
"""
_SHAPES = """
    reshape view flatten squeeze unsqueeze transpose permute t contiguous clone detach narrow
    select flip roll tril triu diagonal view_as reshape_as expand expand_as repeat index_select
    gather masked_select float double half bfloat16 long int short bool type_as
"""
_LINALG = "matmul mm bmm mv dot outer addmm"

TENSOR_METHODS = frozenset((_ELEMENTWISE + _REDUCTIONS + _SHAPES + _LINALG).split()) | {"to"}
CREATION = frozenset(["zeros", "ones", "full", "arange", "linspace", "eye", "rand", "randn", "randint"])
TORCH_FUNCTIONS = (frozenset((_ELEMENTWISE + _REDUCTIONS + _SHAPES + _LINALG).split())
                   - {"view", "view_as", "reshape_as", "expand", "expand_as", "repeat", "contiguous", "float",
                      "double", "half", "bfloat16", "long", "int", "short", "bool", "type_as"}
                   | CREATION | frozenset(["cat", "stack", "hstack", "vstack", "einsum", "zeros_like", "ones_like",
                                          "full_like", "rand_like", "randn_like", "diag", "trace"]))
_ACTIVATIONS = """
    relu relu6 leaky_relu elu selu celu gelu silu mish sigmoid tanh softplus softsign hardtanh
    hardsigmoid hardswish logsigmoid threshold softmax log_softmax dropout
"""
FUNCTIONAL = frozenset((_ACTIVATIONS + """
    linear bilinear conv1d conv2d conv3d conv_transpose1d conv_transpose2d max_pool1d max_pool2d
    avg_pool1d avg_pool2d adaptive_avg_pool1d adaptive_avg_pool2d adaptive_max_pool2d layer_norm
    group_norm normalize pad one_hot mse_loss l1_loss smooth_l1_loss huber_loss
    cross_entropy nll_loss binary_cross_entropy binary_cross_entropy_with_logits kl_div
    cosine_similarity pairwise_distance interpolate
""").split())  # not batch_norm or embedding: they update tensors passed in (running stats, max_norm)


def _reversed(fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    return lambda a, b: fn(b, a)


_BINARY = {"add": operator.add, "sub": operator.sub, "mul": operator.mul, "truediv": operator.truediv,
           "floordiv": operator.floordiv, "mod": operator.mod, "pow": operator.pow, "matmul": operator.matmul,
           "and_": operator.and_, "or_": operator.or_, "xor": operator.xor}
OPERATORS: dict[str, Callable[..., Any]] = {
    **_BINARY,
    **{f"r{name.rstrip('_')}": _reversed(fn) for name, fn in _BINARY.items()},
    "neg": operator.neg, "pos": operator.pos, "abs": operator.abs, "invert": operator.invert,
    "lt": operator.lt, "le": operator.le, "eq": operator.eq, "ne": operator.ne, "gt": operator.gt,
    "ge": operator.ge, "getitem": operator.getitem,
}

STRUCTURAL = frozenset(_SHAPES.split()) | frozenset([
    "getitem", "cat", "stack", "hstack", "vstack", "to", "where", "masked_fill", "max", "min", "amax", "amin",
    "median", "mode", "kthvalue", "sort", "topk", "cummax", "cummin", "diag",
    "one_hot"])  # a lossless re-encoding: one_hot(labels) is the labels

# Layers a module sent by a client may be built from (worker.remote.layers), by class name.
LAYERS: dict[str, type[nn.Module]] = {cls.__name__: cls for cls in (
    nn.Sequential, nn.Identity, nn.Linear, nn.Bilinear, nn.Flatten, nn.Unflatten,
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm, nn.Embedding,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU,
    nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Softsign, nn.Hardtanh,
    nn.Hardsigmoid, nn.Hardswish, nn.LogSigmoid, nn.Softmax, nn.LogSoftmax,
)}

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {cls.__name__: cls for cls in (
    torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.Adagrad, torch.optim.Adadelta,
    torch.optim.Adamax, torch.optim.RMSprop, torch.optim.Rprop, torch.optim.NAdam, torch.optim.RAdam,
    torch.optim.ASGD,
)}

# The special ops (worker.remote.executor), each with what it does.
SPECIAL = {
    "send": "store a tensor the client sent (send)",
    "module": "build a module from its allowlisted layer structure and load its weights",
    "task_model": "build the worker's own task model and load the weights sent",
    "dataset": "pointers to the worker's private shard: (inputs, targets)",
    "forward": "call a module on tensors",
    "backward": "backpropagate from a tensor",
    "grad": "a tensor's gradient",
    "optimizer": "a torch.optim optimizer over modules' or tensors' parameters",
    "zero_grad": "an optimizer's zero_grad",
    "step": "an optimizer's step",
    "mode": "a module's train() or eval()",
    "get": "fetch an object's value (subject to --allow-get)",
    "meta": "fetch a tensor's shape and dtype",
    "move": "send an object to another worker for the same client (subject to --allow-get)",
    "free": "forget objects",
    "info": "how many objects and bytes this client holds here",
    "close": "forget everything this client holds here",
}

# Keywords no op may take: they write into an argument (which may be a view of the private
# shard) or choose where memory lives, which is the worker's business.
FORBIDDEN_KWARGS = frozenset({"out", "inplace", "device", "layout", "pin_memory", "memory_format"})

NAMESPACES = {"Tensor": TENSOR_METHODS, "torch": TORCH_FUNCTIONS, "F": FUNCTIONAL, "op": frozenset(OPERATORS)}


def is_allowed(name: str) -> bool:
    """Whether the wire op `name` is on the allowlist."""
    space, _, base = name.partition(".")
    if not base:
        return name in SPECIAL
    return base in NAMESPACES.get(space, frozenset())


def function(name: str) -> Callable[..., Any]:
    """The callable of an allowlisted, non-special op; KeyError when `name` is not allowlisted."""
    space, _, base = name.partition(".")
    if base not in NAMESPACES.get(space, frozenset()):
        raise KeyError(name)
    if space == "op":
        return OPERATORS[base]
    if space == "torch":
        return getattr(torch, base)  # type: ignore[no-any-return]
    if space == "F":
        return getattr(F, base)  # type: ignore[no-any-return]
    return _method(base)


def _method(base: str) -> Callable[..., Any]:
    def call(tensor: object, *args: object, **kwargs: object) -> object:
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"Tensor.{base} needs a tensor, got {type(tensor).__name__}")
        # Tensor.to takes only a dtype: the worker, not the client, chooses devices.
        if base == "to" and (len(args) != 1 or kwargs or not isinstance(args[0], torch.dtype)):
            raise TypeError("Tensor.to takes one dtype here (the worker chooses its device)")
        return getattr(tensor, base)(*args, **kwargs)
    return call


def all_names() -> list[str]:
    """Every allowlisted wire op name, sorted (for docs and tests)."""
    return sorted(SPECIAL) + sorted(f"{space}.{base}" for space, names in NAMESPACES.items() for base in names)
