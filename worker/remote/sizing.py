"""Sizing an op before it runs: every tensor it would allocate, found on meta tensors.

The op (a torch function, or a module's forward) runs first on meta tensors, which have shapes
and dtypes but no memory, under a dispatch mode that adds up the bytes of every tensor each aten
op creates: the results and the intermediates (a loss over broadcast shapes builds the broadcast
difference before reducing it; a module's forward builds each layer's output). Views and
in-place results are not counted again. The sum bounds the op's peak memory from above, and the
op runs for real only if it fits.

An op whose meta run fails cannot be sized, and is refused: nothing about it is known in advance
(`torch.zeros(t)` with a tensor as the size, say, whose value a meta tensor does not hold). The
exceptions are the ops in DATA_DEPENDENT, whose result's shape depends on the values of some of
their operands (a mask): they have an upper bound from their operands' shapes, and the executor
is told which operands decide the shape, so that it can keep private values from showing in it.
"""

from __future__ import annotations

import math
import operator
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from fedmq.worker.remote.store import OpFailure

_NONZERO_BYTES = 8  # an int64 index per dimension of each selected element: how masks are applied


@dataclass(kw_only=True)
class Size:
    """What running an op takes: `nbytes` at most; `deciders` are the operands whose values decide
    the shape of its results (empty unless the op is in DATA_DEPENDENT)."""

    nbytes: int
    deciders: list[torch.Tensor] = field(default_factory=list)
    outputs: list[tuple[torch.Size, torch.dtype]] | None = None  # the results' shapes, where known


def stand_ins(size: Size, operands: list[torch.Tensor]) -> list[torch.Tensor]:
    """Zeros shaped as the op's results would have been, joined to the operands that need
    gradients with weight zero: what follows (a loss, backward, a step) runs as it would have,
    with zero gradients, so nothing downstream tells that the op failed."""
    assert size.outputs is not None
    graph = [t.sum() * 0 for t in operands if t.requires_grad and t.is_floating_point()]
    made = []
    for shape, dtype in size.outputs:
        zeros = torch.zeros(shape, dtype=dtype, device=operands[0].device if operands else None)
        made.append(sum(graph, zeros) if graph and dtype.is_floating_point else zeros)
    return made


class _Tally(TorchDispatchMode):  # type: ignore[no-untyped-call]  # torch leaves it unannotated
    """Adds up the bytes of every tensor the aten ops under it create (not views, not in place)."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.nbytes = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (),  # noqa: ANN401
                           kwargs: Any = None) -> Any:  # noqa: ANN401
        out = func(*args, **(kwargs or {}))
        fresh = _fresh_bytes(func, out)
        if fresh or not _is_view(func):
            # A kernel whose inputs broadcast to more than it gives builds the broadcast inside (a
            # loss of (N, 1) against (1, N) makes N x N differences before their mean).
            inputs = [*tensors_in(args), *tensors_in(kwargs)]
            self.nbytes += fresh + max(0, _broadcast_bytes(inputs) - fresh, _expanded_bytes(inputs) - fresh)
        return out


def _returns(func: Any) -> list[Any] | None:  # noqa: ANN401
    """The return specs of an aten overload's schema (their alias_info), None for anything else."""
    returns = getattr(getattr(func, "_schema", None), "returns", None)
    return None if returns is None else list(returns)


def _is_view(func: Any) -> bool:  # noqa: ANN401
    returns = _returns(func)
    return bool(returns) and all(spec.alias_info is not None for spec in returns or ())


def _fresh_bytes(func: Any, out: Any) -> int:  # noqa: ANN401
    """Bytes of the tensors an aten op returned that are new: not views of, or writes into, inputs."""
    returns = _returns(func)
    if returns is None:  # not an aten overload: count everything it gave
        return sum(_nbytes(t) for t in tensors_in(out))
    values = out if isinstance(out, (tuple, list)) and len(returns) > 1 else (out,)
    return sum(_nbytes(t) for spec, value in zip(returns, values, strict=False)
               if spec.alias_info is None for t in tensors_in(value))


def _expanded_bytes(tensors: list[torch.Tensor]) -> int:
    """Bytes of the largest input that is an expanded view (a stride of 0 repeats its elements)."""
    expanded = [t for t in tensors if any(stride == 0 and size > 1 for stride, size in zip(t.stride(), t.shape,
                                                                                         strict=True))]
    return max((_nbytes(t) for t in expanded), default=0)


def _broadcast_bytes(tensors: list[torch.Tensor]) -> int:
    """Bytes of the inputs broadcast together, when that is larger than each; else 0."""
    if len(tensors) < 2:
        return 0
    try:
        shape = torch.broadcast_shapes(*(t.shape for t in tensors))  # type: ignore[no-untyped-call]
    except RuntimeError:  # shapes that do not broadcast (matmul, convolution): nothing to count
        return 0
    count = int(math.prod(shape))
    if all(count <= t.numel() for t in tensors):
        return 0
    return count * max(t.element_size() for t in tensors)


# Ops that are elementwise whatever their arguments (no overload reduces, selects or returns
# more than one tensor; no intermediates beyond the result): sized from the broadcast shape, with
# the result's dtype from a one-element probe, far quicker than a meta run (meta kernels are
# Python: about 0.5 ms an op, when `x + 1` itself takes 10 us).
_ELEMENTWISE = """
    abs neg exp exp2 expm1 log log2 log10 log1p sqrt rsqrt square reciprocal sign sgn sin cos tan
    asin acos atan sinh cosh tanh sigmoid relu erf erfc floor ceil round trunc frac nan_to_num add sub
    mul div true_divide floor_divide remainder fmod pow maximum minimum fmax fmin atan2 hypot lerp
    clamp clip eq ne lt le gt ge isnan isinf isfinite logical_not logical_and logical_or logical_xor
    bitwise_and bitwise_or bitwise_xor bitwise_not
"""
_OPERATORS = """
    add sub mul truediv floordiv mod pow and_ or_ xor radd rsub rmul rtruediv rfloordiv rmod rpow
    rand ror rxor neg pos abs invert lt le eq ne gt ge
"""
ELEMENTWISE = frozenset([f"{space}.{base}" for space in ("Tensor", "torch") for base in _ELEMENTWISE.split()]
                        + [f"op.{base}" for base in _OPERATORS.split()] + ["F.relu", "F.sigmoid", "F.tanh"])


def size_call(name: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Size:
    """How much calling `fn(*args, **kwargs)` (op `name`) takes; OpFailure if it cannot be sized."""
    if name in ELEMENTWISE:
        quick = _elementwise(fn, args, kwargs)
        if quick is not None:
            return quick
    meta_kwargs = {key: to_meta(value) for key, value in kwargs.items()}
    if "device" in meta_kwargs:
        meta_kwargs["device"] = "meta"
    try:
        return _tally(lambda: fn(*to_meta(args), **meta_kwargs))
    except Exception as e:  # no meta kernel, or a shape that depends on values
        bound = DATA_DEPENDENT.get(name.partition(".")[2])
        size = bound(args, kwargs) if bound is not None else None
        if size is None:
            raise _unsizable(name, e) from e
        return size


def _elementwise(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Size | None:
    """The size of an elementwise op on tensors and plain values; None to size it on meta instead."""
    operands = [*args, *kwargs.values()]
    tensors = [item for item in operands if isinstance(item, torch.Tensor)]
    if not tensors or any(isinstance(item, (tuple, list, dict)) for item in operands):
        return None

    def probe(item: Any) -> Any:  # noqa: ANN401 - same dtype and kind (0-d or not): same promotion
        return item.new_ones(() if item.ndim == 0 else (1,)) if isinstance(item, torch.Tensor) else item
    size = _broadcast([t.shape for t in tensors])
    if size is None:
        return None  # the meta run will say why
    try:  # probes never need gradients: no graph is built
        result = fn(*map(probe, args), **{key: probe(value) for key, value in kwargs.items()})
    except Exception:  # noqa: BLE001 - the meta run will tell
        return None
    if not isinstance(result, torch.Tensor):
        return None
    return Size(nbytes=size.numel() * result.element_size(), outputs=[(size, result.dtype)])


def _broadcast(shapes: list[torch.Size]) -> torch.Size | None:
    """The shapes broadcast together (torch's rule), None when they do not broadcast."""
    if all(shape == shapes[0] for shape in shapes):
        return shapes[0]
    ndim = max(len(shape) for shape in shapes)
    out = [1] * ndim
    for shape in shapes:
        for i, size in enumerate(shape, ndim - len(shape)):
            if size != 1 and out[i] not in (1, size):
                return None
            out[i] = size if size != 1 else out[i]
    return torch.Size(out)


def size_forward(net: nn.Module, args: list[Any], kwargs: dict[str, Any]) -> Size:
    """How much calling module `net` takes, found with meta copies of its weights and buffers."""
    state = {name: to_meta(t) for name, t in [*net.named_parameters(), *net.named_buffers()]}
    meta_args, meta_kwargs = to_meta(args), {key: to_meta(value) for key, value in kwargs.items()}

    def call() -> Any:  # noqa: ANN401
        with torch.device("meta"):  # tensors the forward makes itself are meta too
            return torch.func.functional_call(net, state, tuple(meta_args), meta_kwargs)
    try:
        return _tally(call)
    except Exception as e:
        raise _unsizable("forward", e) from e


def _tally(call: Callable[[], Any]) -> Size:
    tally = _Tally()
    with torch.no_grad(), tally, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the real run warns, if it runs
        result = call()
    return Size(nbytes=tally.nbytes, outputs=[(t.shape, t.dtype) for t in tensors_in(result)])


def _unsizable(name: str, error: Exception) -> OpFailure:
    # Meta tensors hold no values, so torch's text here names shapes and dtypes only.
    if isinstance(error, NotImplementedError) or "meta tensors" in str(error):
        return OpFailure("refused", f"{name}: its memory cannot be worked out before running it, so it does not "
                                    f"run here (sizes must be plain numbers, not tensors; results whose shape "
                                    f"depends on values are refused): {type(error).__name__}: {str(error)[:200]}")
    return OpFailure("failed", f"{type(error).__name__}: {error}")  # shapes that do not fit: torch's words


def to_meta(obj: Any) -> Any:  # noqa: ANN401 - an operand
    """`obj` with every tensor in it replaced by a meta tensor of the same shape, strides and dtype."""
    if isinstance(obj, torch.Tensor):
        return torch.empty_strided(obj.shape, obj.stride(), dtype=obj.dtype, device="meta")
    if isinstance(obj, (tuple, list)):
        return type(obj)(to_meta(item) for item in obj)
    return obj


def tensors_in(obj: object) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            yield from tensors_in(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from tensors_in(item)


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


# Ops whose result's shape depends on values: an upper bound from shapes, and the deciding operands.
def _masked_select(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Size | None:
    given = [*args, *kwargs.values()]
    if len(given) != 2 or not all(isinstance(t, torch.Tensor) for t in given):
        return None
    source, mask = given
    try:
        shape = torch.broadcast_shapes(source.shape, mask.shape)  # type: ignore[no-untyped-call]
    except RuntimeError:
        return None
    count = shape.numel()
    return Size(nbytes=count * (source.element_size() + _NONZERO_BYTES * len(shape)), deciders=[mask])


def _getitem(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Size | None:
    """x[mask]: a bool mask of k dimensions selects like k index vectors, at most one per element."""
    if len(args) != 2 or kwargs or not isinstance(args[0], torch.Tensor):
        return None
    source, key = args
    items = list(key) if isinstance(key, tuple) else [key]
    masks = [item for item in items if isinstance(item, torch.Tensor) and item.dtype == torch.bool]
    if not masks:
        return None
    stand_ins = [_stand_ins(item) for item in items]
    flat = tuple(index for group in stand_ins for index in group)
    try:
        nbytes = _tally(lambda: operator.getitem(to_meta(source), flat)).nbytes
    except Exception:  # noqa: BLE001 - a key the stand-ins cannot take: not sizable
        return None
    index_bytes = sum(_NONZERO_BYTES * mask.ndim * mask.numel() for mask in masks)
    # Plus the source once: a 0-d mask copies all of it, where its stand-in (a new axis) is a view.
    return Size(nbytes=nbytes + index_bytes + _nbytes(source), deciders=masks)


def _stand_ins(item: object) -> list[Any]:
    """Index vectors as long as the mask has elements (all selected): the largest it could select."""
    if not (isinstance(item, torch.Tensor) and item.dtype == torch.bool):
        return [to_meta(item)]
    if item.ndim == 0:
        return [None]
    return [torch.empty(item.numel(), dtype=torch.long, device="meta")] * item.ndim


DATA_DEPENDENT: dict[str, Callable[[tuple[Any, ...], dict[str, Any]], Size | None]] = {
    "masked_select": _masked_select, "getitem": _getitem,
}
