"""The operands of remote commands and the values that come back, and their msgpack form.

An argument is a literal (None, bool, int, float, str, a tensor, a dtype, a slice, `...`, a
tuple or list of arguments), a reference to an object the worker holds (`Ref`), a module as its
layer structure plus weights (`ModuleSpec`), or bare weights (a dict of tensors). msgpack knows
none of these but the scalars and lists, so every other kind travels as a map with exactly one
tag key, e.g. {"ref": 7} or {"tensor": {...}}. Decoding treats the input as hostile: unknown
tags, wrong types and nesting deeper than MAX_DEPTH are DecodeErrors; nothing is ever evaluated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import EllipsisType
from typing import Any, TypeAlias

import torch

from fedmq.protocol.codec import DTYPE_NAMES, DTYPES, tensor_from_wire, tensor_to_wire, tensors_from_wire, tensors_to_wire
from fedmq.protocol.errors import DecodeError

MAX_DEPTH = 8  # argument nesting: an index like x[(slice, [1, 2]), ...] is three deep
MAX_PLAIN_DEPTH = 64  # a module's layer structure: Sequential inside Sequential ...
MAX_ID = (1 << 53) - 1  # object ids stay exact in every msgpack implementation

Weights = dict[str, torch.Tensor]
# A layer structure: plain data only (see worker.remote.layers for its meaning).
Plain: TypeAlias = None | bool | int | float | str | list["Plain"] | dict[str, "Plain"]


@dataclass(frozen=True)
class Ref:
    """An object held by the worker, by the id its client gave it."""

    id: int


@dataclass(frozen=True, eq=False)  # tensors have no truth value to compare
class ModuleSpec:
    """A module as its allowlisted layer structure plus a state dict: never pickle."""

    layers: Plain
    weights: Weights


Arg: TypeAlias = (None | bool | int | float | str | Ref | torch.Tensor | torch.dtype | slice | EllipsisType
                  | tuple["Arg", ...] | list["Arg"] | ModuleSpec | Weights)


@dataclass(frozen=True)
class TensorMeta:
    """What a client may always learn about a remote tensor: its shape and dtype."""

    shape: tuple[int, ...]
    dtype: str
    requires_grad: bool = False


@dataclass(frozen=True)
class StoreInfo:
    """How many objects, of how many bytes, a worker holds for one client."""

    objects: int
    bytes: int


Value: TypeAlias = torch.Tensor | Weights | TensorMeta | StoreInfo


def arg_to_wire(arg: Arg) -> Any:  # noqa: ANN401 - msgpack-ready data
    if arg is None or isinstance(arg, (bool, int, float, str)):
        return arg
    if isinstance(arg, list):
        return [arg_to_wire(item) for item in arg]
    return {_tag(arg): _tagged_body(arg)}


def _tag(arg: Arg) -> str:
    for kind, tag in _TAGS:
        if isinstance(arg, kind):
            return tag
    if arg is Ellipsis:
        return "ellipsis"
    raise ValueError(f"a {type(arg).__name__} cannot be an argument of a remote op")


def _tagged_body(arg: Arg) -> Any:  # noqa: ANN401 - msgpack-ready data
    if isinstance(arg, Ref):
        return arg.id
    if isinstance(arg, torch.Tensor):
        return tensor_to_wire(arg)
    if isinstance(arg, torch.dtype):
        if arg not in DTYPE_NAMES:
            raise ValueError(f"dtype {arg} cannot travel; allowed: {', '.join(DTYPES)}")
        return DTYPE_NAMES[arg]
    if isinstance(arg, slice):
        return [_slice_part(arg.start), _slice_part(arg.stop), _slice_part(arg.step)]
    if isinstance(arg, tuple):
        return [arg_to_wire(item) for item in arg]
    if isinstance(arg, ModuleSpec):
        return {"layers": arg.layers, "weights": tensors_to_wire(arg.weights)}
    if isinstance(arg, dict):
        return tensors_to_wire(arg)
    return True  # Ellipsis


def _slice_part(part: object) -> int | None:
    if part is None or (isinstance(part, int) and not isinstance(part, bool)):
        return part
    raise ValueError(f"slice bounds must be integers or None, got {type(part).__name__}")


_TAGS: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (Ref, "ref"), (torch.Tensor, "tensor"), (torch.dtype, "dtype"), (slice, "slice"),
    (tuple, "tuple"), (ModuleSpec, "module"), (dict, "weights"),
)


def arg_from_wire(obj: object, depth: int = 0) -> Arg:
    """The argument `obj` encodes; DecodeError for anything else."""
    if depth > MAX_DEPTH:
        raise DecodeError(f"arguments nest deeper than {MAX_DEPTH} levels")
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, list):
        return [arg_from_wire(item, depth + 1) for item in obj]
    if not isinstance(obj, dict) or len(obj) != 1:
        raise DecodeError(f"an argument must be a scalar, a list or a map of one tag, got {_kind(obj)}")
    (tag, body), = obj.items()
    decode = _DECODERS.get(tag)
    if decode is None:
        raise DecodeError(f"unknown argument tag {str(tag)[:40]!r}")
    return decode(body, depth)


def _ref(body: object, depth: int) -> Ref:
    return Ref(object_id(body))


def object_id(obj: object) -> int:
    """`obj` as an object id (a positive integer that survives msgpack); DecodeError otherwise."""
    if type(obj) is not int or not 1 <= obj <= MAX_ID:
        raise DecodeError(f"an object id must be an integer from 1 to {MAX_ID}, got {str(obj)[:40]}")
    return obj


def _dtype(body: object, depth: int) -> torch.dtype:
    dtype = DTYPES.get(body) if isinstance(body, str) else None
    if dtype is None:
        raise DecodeError(f"dtype {str(body)[:40]!r} is not allowed; allowed: {', '.join(DTYPES)}")
    return dtype


def _slice(body: object, depth: int) -> slice:
    if not isinstance(body, list) or len(body) != 3:
        raise DecodeError("a slice must be [start, stop, step]")
    if not all(part is None or type(part) is int for part in body):
        raise DecodeError("slice bounds must be integers or null")
    return slice(*body)


def _tuple(body: object, depth: int) -> tuple[Arg, ...]:
    if not isinstance(body, list):
        raise DecodeError("a tuple must be a list of arguments")
    return tuple(arg_from_wire(item, depth + 1) for item in body)


def _ellipsis(body: object, depth: int) -> EllipsisType:
    if body is not True:
        raise DecodeError("an ellipsis is encoded as {\"ellipsis\": true}")
    return Ellipsis


def _module(body: object, depth: int) -> ModuleSpec:
    if not isinstance(body, dict) or body.keys() != {"layers", "weights"}:
        raise DecodeError("a module must be a map of exactly layers and weights")
    return ModuleSpec(plain(body["layers"]), tensors_from_wire(body["weights"]))


def _weights(body: object, depth: int) -> Weights:
    return tensors_from_wire(body)


_DECODERS: dict[str, Callable[[object, int], Arg]] = {"ref": _ref, "tensor": lambda body, depth: tensor_from_wire(body), "dtype": _dtype,
             "slice": _slice, "tuple": _tuple, "ellipsis": _ellipsis, "module": _module,
             "weights": _weights}


def plain(obj: object, depth: int = 0) -> Plain:
    """`obj` if it is plain data (scalars, lists, maps with string keys) nested within bounds."""
    if depth > MAX_PLAIN_DEPTH:
        raise DecodeError(f"a layer structure nests deeper than {MAX_PLAIN_DEPTH} levels")
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, list):
        return [plain(item, depth + 1) for item in obj]
    if isinstance(obj, dict):
        return {key: plain(value, depth + 1) for key, value in obj.items()}  # keys: str (strict_map_key)
    raise DecodeError(f"a layer structure holds only scalars, lists and maps, not {_kind(obj)}")


def value_to_wire(value: Value) -> dict[str, Any]:
    if isinstance(value, torch.Tensor):
        return {"tensor": tensor_to_wire(value)}
    if isinstance(value, TensorMeta):
        return {"meta": {"shape": list(value.shape), "dtype": value.dtype, "requires_grad": value.requires_grad}}
    if isinstance(value, StoreInfo):
        return {"store": {"objects": value.objects, "bytes": value.bytes}}
    return {"weights": tensors_to_wire(value)}


def value_from_wire(obj: object) -> Value:
    if not isinstance(obj, dict) or len(obj) != 1:
        raise DecodeError("a value must be a map of one tag")
    (tag, body), = obj.items()
    if tag == "tensor":
        return tensor_from_wire(body)
    if tag == "weights":
        return tensors_from_wire(body)
    if tag == "meta" and isinstance(body, dict) and body.keys() == {"shape", "dtype", "requires_grad"}:
        shape = body["shape"]
        if not isinstance(shape, list) or not all(type(size) is int and size >= 0 for size in shape):
            raise DecodeError("a tensor's shape must be a list of non-negative integers")
        if body["dtype"] not in DTYPES or not isinstance(body["requires_grad"], bool):
            raise DecodeError("a tensor's meta needs a known dtype and a boolean requires_grad")
        return TensorMeta(tuple(shape), body["dtype"], body["requires_grad"])
    if tag == "store" and isinstance(body, dict) and body.keys() == {"objects", "bytes"}:
        if not all(type(n) is int and n >= 0 for n in body.values()):
            raise DecodeError("store counts must be non-negative integers")
        return StoreInfo(body["objects"], body["bytes"])
    raise DecodeError(f"unknown or malformed value {str(tag)[:40]!r}")


def _kind(obj: object) -> str:
    return type(obj).__name__
