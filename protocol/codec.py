"""The tensor codec: msgpack with tensors as raw bytes + dtype + shape.

This is the only module that imports msgpack. Decoding treats its input as hostile: every
msgpack container and string has a size limit, the whole message a budget of values (scalars and
containers) in proportion to its size and a nesting limit, dtypes come from an allowlist, and a
tensor's byte count must match its shape. Every failure is a DecodeError. Nothing is unpickled.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping
from operator import itemgetter
from typing import Any

import msgpack
import torch

from fedmq.protocol.errors import DecodeError

# Decoded tensors view the received (read-only) bytes, and fedmq never writes into them, so
# torch's warning about a non-writable buffer is silenced here once, by its exact text:
# catch_warnings() around each frombuffer cost 25 us a tensor, more than the decode itself.
warnings.filterwarnings("ignore", message="The given buffer is not writable", category=UserWarning)

DTYPES: dict[str, torch.dtype] = {
    "float64": torch.float64,
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
    "int16": torch.int16,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "bool": torch.bool,
}
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}  # the one dtype table, both ways
MAX_NDIM = 16
MAX_ELEMENTS = 1 << 62  # torch's int64 element counts, with room for byte sizes
MAX_STR_LEN = 1 << 20  # names, reasons, metric keys: never megabytes
MAX_CONTAINER_LEN = 1 << 20  # state dicts with a million entries are not models
PIECE_BYTES = 4 << 20  # tensors above this travel as several bins
# A value (a scalar or a container) costs CPython 24 to 184 bytes, and msgpack spends only one
# byte on an empty map: without a budget, 8 MiB of nested empty maps decoded to 580 MiB. Any
# message may hold BASE_VALUES (about 15,000 tensors, or many 500-op command batches); beyond
# that each value must come with BYTES_PER_VALUE bytes of payload, which every tensor-bearing
# message does (the smallest tensor, a named scalar, is 8 values in about 70 bytes).
BASE_VALUES = 1 << 17
BYTES_PER_VALUE = 16
MAX_DEPTH = 128  # msgpack nesting; the deepest fedmq message (a module's layers) is under 90


def tensor_to_wire(tensor: torch.Tensor) -> dict[str, Any]:
    """A tensor as a msgpack-ready map; the data are zero-copy views of the tensor's memory.

    Data above PIECE_BYTES travel as a list of bins, so a decoder never holds a whole large
    tensor twice (once in its input buffer, once as the bin it copies out).
    """
    name = DTYPE_NAMES.get(tensor.dtype)
    if name is None:
        raise ValueError(f"dtype {tensor.dtype} cannot travel; allowed: {', '.join(DTYPES)}")
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    # bfloat16 has no numpy twin, so every dtype is viewed as bytes first.
    data = flat.view(torch.uint8).numpy().data if flat.numel() else memoryview(b"")
    if len(data) > PIECE_BYTES:
        pieces = [data[i:i + PIECE_BYTES] for i in range(0, len(data), PIECE_BYTES)]
        return {"dtype": name, "shape": list(tensor.shape), "data": pieces}
    return {"dtype": name, "shape": list(tensor.shape), "data": data}


def tensor_from_wire(obj: object) -> torch.Tensor:
    """The tensor a wire map describes, after checking dtype, shape and byte count.

    A tensor sent as one bin shares memory with the received bytes (no copy): treat it as
    read-only. One sent in pieces is assembled into fresh memory, freeing pieces as it goes.
    """
    if not isinstance(obj, dict) or obj.keys() != {"dtype", "shape", "data"}:
        raise DecodeError("a tensor must be a map of exactly dtype, shape and data")
    data = obj["data"]
    pieces = data if isinstance(data, list) else [data]
    if not all(isinstance(piece, bytes) for piece in pieces):
        raise DecodeError("tensor data must be msgpack bin, or a list of bins")
    expected = sum(len(piece) for piece in pieces)
    dtype, shape = tensor_layout(obj["dtype"], obj["shape"], expected)
    if expected == 0:
        return torch.empty(shape, dtype=dtype)
    if len(pieces) == 1:
        return _view(pieces[0], dtype).reshape(shape)
    return _assemble(pieces, expected).view(dtype).reshape(shape)


def tensor_layout(dtype_name: object, shape: object, nbytes: int) -> tuple[torch.dtype, list[int]]:
    """The dtype and shape a tensor's wire fields name, for `nbytes` bytes of data; DecodeError
    unless the dtype is allowed, the shape sane and the byte count exactly the shape's."""
    dtype = DTYPES.get(dtype_name) if isinstance(dtype_name, str) else None
    if dtype is None:
        raise DecodeError(f"tensor dtype {dtype_name!r:.80} is not allowed; allowed: {', '.join(DTYPES)}")
    checked = _checked_shape(shape)
    expected = math.prod(checked) * dtype.itemsize
    if nbytes != expected:
        raise DecodeError(f"tensor of shape {checked} and dtype {dtype_name} needs {expected} bytes, got {nbytes}")
    return dtype, checked


def _view(data: bytes, dtype: torch.dtype) -> torch.Tensor:
    return torch.frombuffer(data, dtype=torch.uint8).view(dtype)


def _assemble(pieces: list[bytes], size: int) -> torch.Tensor:
    out = torch.empty(size, dtype=torch.uint8)
    offset = 0
    while pieces:
        piece = pieces.pop(0)  # let each piece go once copied
        if piece:  # an empty bin adds nothing, and torch refuses a view of no bytes
            out[offset:offset + len(piece)] = _view(piece, torch.uint8)
            offset += len(piece)
    return out


def _checked_shape(shape: object) -> list[int]:
    if not isinstance(shape, list) or len(shape) > MAX_NDIM:
        raise DecodeError(f"tensor shape must be a list of at most {MAX_NDIM} sizes")
    if not all(type(size) is int and size >= 0 for size in shape):
        raise DecodeError("tensor sizes must be non-negative integers")
    # torch counts elements in int64, even for an empty tensor: [0, 2**63] would raise TypeError
    # and [0, 2**62, 2] RuntimeError, not DecodeError (found by tests/fuzz).
    if math.prod(size for size in shape if size) >= MAX_ELEMENTS:
        raise DecodeError(f"tensor shape {shape[:MAX_NDIM]} has too many elements")
    return shape


def tensors_to_wire(tensors: Mapping[str, torch.Tensor]) -> dict[str, dict[str, Any]]:
    return {name: tensor_to_wire(tensor) for name, tensor in tensors.items()}


def tensors_from_wire(obj: object) -> dict[str, torch.Tensor]:
    if not isinstance(obj, dict) or not all(isinstance(name, str) for name in obj):
        raise DecodeError("tensors must be a map from names to tensors")
    return {name: tensor_from_wire(value) for name, value in obj.items()}


def pack(obj: Mapping[str, Any]) -> memoryview:
    """msgpack bytes of a map of plain values and wire tensors.

    A view of the packer's own buffer: copying it into a `bytes` would halve encode speed
    for large models.
    """
    packer = msgpack.Packer(use_bin_type=True, autoreset=False)
    packer.pack(obj)
    return packer.getbuffer()  # type: ignore[no-any-return]


def value_budget(size: int) -> int:
    """The values a message of `size` bytes may decode to."""
    return BASE_VALUES + size // BYTES_PER_VALUE


def unpack(data: bytes | memoryview | list[bytes], *, max_values: int | None = None) -> dict[str, Any]:
    """The map msgpack bytes hold, within size limits; a list of parts is consumed as it is read.

    At most `max_values` values (default: `value_budget` of the size) nested at most MAX_DEPTH
    deep; the decode stops as soon as either is exceeded, long before a bomb's tree is built.
    Feeding parts one at a time and dropping each once fed keeps peak memory near one copy of
    the payload, which matters to a coordinator folding in large updates.
    """
    size = len(data) if isinstance(data, (bytes, bytearray, memoryview)) else sum(len(part) for part in data)
    budget = _Budget(value_budget(size) if max_values is None else max_values)
    try:
        if isinstance(data, (bytes, bytearray, memoryview)):
            obj = msgpack.unpackb(data, **_limits(size, budget))
        else:
            obj = _unpack_parts(data, size, budget)
    except DecodeError:
        raise
    except Exception as e:  # msgpack raises many unrelated types on hostile input
        raise DecodeError(f"not valid msgpack: {type(e).__name__}: {e}") from e
    if not isinstance(obj, dict):
        raise DecodeError("a message must be a msgpack map")
    return obj


def _unpack_parts(parts: list[bytes], size: int, budget: _Budget) -> object:
    unpacker = msgpack.Unpacker(max_buffer_size=max(size, 1), **_limits(size, budget))
    found: list[object] = []
    while parts:
        unpacker.feed(parts.pop(0))
        # Parsing as parts arrive lets the unpacker reuse its buffer instead of growing it.
        found.extend(_objects_so_far(unpacker))
    if len(found) != 1:
        raise DecodeError(f"a message must be one msgpack object, found {len(found)}")
    return found[0]


def _objects_so_far(unpacker: msgpack.Unpacker) -> list[object]:
    found = []
    while True:
        try:
            found.append(unpacker.unpack())
        except msgpack.OutOfData:
            return found
        if len(found) > 1:  # a stream of top-level scalars has no container for the budget to see
            raise DecodeError("a message must be one msgpack object, found more")


class _Budget:
    """Counts the values msgpack decodes, and how deep they nest, as it builds them.

    msgpack calls a hook for each container once it is complete, children first: the count
    stops a bomb when the budget is spent, not after the whole tree exists. Nesting comes from
    a stack of the heights of containers completed but not yet claimed by a parent: a container's
    own container children are always the top entries of that stack.
    """

    def __init__(self, max_values: int) -> None:
        self.max_values = max_values
        self._left = max_values - 1  # the outermost value
        self._heights: list[int] = []

    def list_hook(self, items: list[object]) -> list[object]:
        self._built(len(items), items)
        return items

    def map_hook(self, pairs: list[tuple[str, object]]) -> dict[str, object]:
        # Pairs, not the dict: a repeated key would hide values that were built all the same.
        self._built(2 * len(pairs), map(itemgetter(1), pairs))
        items = dict(pairs)
        if len(items) != len(pairs):
            raise DecodeError("a msgpack map repeats a key; each key may appear once")
        return items

    def _built(self, values: int, children: Iterable[object]) -> None:
        self._left -= values
        if self._left < 0:
            raise DecodeError(f"the message holds more than {self.max_values} values (scalars and containers), "
                              "its limit; send fewer, larger tensors or smaller batches")
        kinds = list(map(type, children))
        nested = kinds.count(list) + kinds.count(dict)
        height = 1
        if nested:
            height += max(self._heights[-nested:])
            del self._heights[-nested:]
        if height > MAX_DEPTH:
            raise DecodeError(f"msgpack containers nest deeper than {MAX_DEPTH} levels")
        self._heights.append(height)


def _limits(size: int, budget: _Budget) -> dict[str, Any]:
    def no_ext(code: int, data: bytes) -> object:
        raise DecodeError(f"msgpack extension types are not accepted (got type {code})")

    longest = min(size, MAX_CONTAINER_LEN, budget.max_values)
    return {
        "raw": False,
        "strict_map_key": True,
        "max_bin_len": size,
        "max_str_len": min(size, MAX_STR_LEN),
        "max_array_len": longest,
        "max_map_len": longest,
        "max_ext_len": 0,
        "ext_hook": no_ext,
        "list_hook": budget.list_hook,
        "object_pairs_hook": budget.map_hook,
    }
