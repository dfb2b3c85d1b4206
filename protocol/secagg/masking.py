"""Quantization into the ring Z_{2^R} and mask expansion, on torch int64 tensors.

An update (a dict of tensors) is flattened in its layout's order, clipped to L2 norm C, and each
coordinate (then in [-C, C]) rounded to the nearest of the 2**B - 1 signed levels q * C / L with
L = 2**(B-1) - 1. Rounding is deterministic (to nearest): the error of one coordinate is at most
half a step, and so is the error of the example-weighted mean, whatever the number of workers.
The worker's input is [n_u * q, n_u] mod 2**R; R (params.ring_bits) keeps the true sum below
2**(R-1) in magnitude, so it is read back signed without wrapping. Ring elements stay in
[0, 2**R) with R <= 62, so adding two never overflows int64.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Mapping

import numpy as np
import torch

from fedmq.protocol.secagg.crypto import keystream
from fedmq.protocol.secagg.errors import SecAggError
from fedmq.protocol.secagg.params import SecAggParams

Layout = tuple[tuple[str, tuple[int, ...], torch.dtype], ...]
ELEMENT_BYTES = 8  # each ring element takes 8 keystream bytes, of which R bits are kept
_CHUNK = 1 << 16  # elements packed or unpacked at a time (a multiple of 8)

if sys.byteorder != "little":  # masks are read from keystream bytes; every party must agree
    raise ImportError("secure aggregation needs a little-endian machine")


def layout_of(update: Mapping[str, torch.Tensor]) -> Layout:
    """Names, shapes and dtypes of an update, in the order its vector follows."""
    return tuple((name, tuple(tensor.shape), tensor.dtype) for name, tensor in update.items())


def flatten(update: Mapping[str, torch.Tensor], layout: Layout) -> torch.Tensor:
    """The update as one float64 vector in `layout`'s order; SecAggError if it does not fit."""
    if [(n, tuple(t.shape)) for n, t in update.items()] != [(n, s) for n, s, _ in layout]:
        raise SecAggError("the update's tensors do not match the round's model layout")
    parts = [tensor.detach().to("cpu", torch.float64).reshape(-1) for tensor in update.values()]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)


def unflatten(vector: torch.Tensor, layout: Layout) -> dict[str, torch.Tensor]:
    """The tensors of `layout` from a float vector; integer tensors are rounded."""
    out: dict[str, torch.Tensor] = {}
    offset = 0
    for name, shape, dtype in layout:
        size = 1
        for dim in shape:
            size *= dim
        part = vector[offset:offset + size].reshape(shape)
        out[name] = (part if dtype.is_floating_point else part.round()).to(dtype)
        offset += size
    return out


def vector_length(layout: Layout) -> int:
    """Ring elements in a masked input: every coordinate, plus one for the example count."""
    total = 0
    for _, shape, _ in layout:
        size = 1
        for dim in shape:
            size *= dim
        total += size
    return total + 1


def clip_l2(vector: torch.Tensor, clip: float) -> torch.Tensor:
    """`vector` scaled down to L2 norm `clip` when longer; SecAggError for NaN or infinity."""
    if not bool(torch.isfinite(vector).all()):
        raise SecAggError("the update holds NaN or infinity; it cannot be quantized")
    norm = float(torch.linalg.vector_norm(vector))
    return vector * (clip / norm) if norm > clip else vector


def quant_step(params: SecAggParams) -> float:
    """The value of one quantization level: C / (2**(B-1) - 1)."""
    return params.clip / ((1 << (params.quant_bits - 1)) - 1)


def ring_mask(bits: int) -> int:
    return (1 << bits) - 1


def encode_input(vector: torch.Tensor, *, num_examples: int, params: SecAggParams) -> torch.Tensor:
    """[n_u * q, n_u] in the ring: the clipped, quantized, example-weighted update."""
    if not 1 <= num_examples <= params.max_examples:
        raise SecAggError(f"a worker weights its update by 1 to {params.max_examples} examples, "
                          f"got {num_examples}; raise the example cap")
    levels = (1 << (params.quant_bits - 1)) - 1
    clipped = clip_l2(vector.to(torch.float64), params.clip)
    q = torch.round(clipped / quant_step(params)).clamp_(-levels, levels).to(torch.int64)
    signed = torch.cat([q * num_examples, torch.tensor([num_examples], dtype=torch.int64)])
    return signed.bitwise_and_(ring_mask(params.ring_bits))


def expand_mask(key: bytes, length: int, bits: int) -> torch.Tensor:
    """`length` uniform ring elements from ChaCha20 keyed with the 256-bit `key`."""
    stream = keystream(key, ELEMENT_BYTES * length)
    with warnings.catch_warnings():  # a read-only buffer: the & below makes a fresh tensor
        warnings.simplefilter("ignore", UserWarning)
        raw = torch.frombuffer(stream, dtype=torch.int64) if length else torch.zeros(0, dtype=torch.int64)
    return raw.bitwise_and(ring_mask(bits))


def add_mask_(acc: torch.Tensor, key: bytes, *, bits: int, sign: int) -> None:
    """acc += sign * PRG(key) in Z_{2^bits}, in place."""
    mask = expand_mask(key, acc.numel(), bits)
    if sign > 0:
        acc.add_(mask)
    else:
        acc.sub_(mask)
    acc.bitwise_and_(ring_mask(bits))


def ring_sum(vectors: list[torch.Tensor], bits: int) -> torch.Tensor:
    """The sum of ring vectors in Z_{2^bits}."""
    total = torch.zeros_like(vectors[0])
    for vector in vectors:
        total.add_(vector).bitwise_and_(ring_mask(bits))
    return total


def decode_sum(total: torch.Tensor, *, params: SecAggParams) -> tuple[torch.Tensor, int]:
    """The example-weighted sum of updates (float64) and the total example count from the
    unmasked ring sum; SecAggError when the count is impossible (a mask was not removed)."""
    half = 1 << (params.ring_bits - 1)
    signed = torch.where(total >= half, total - (1 << params.ring_bits), total)
    examples = int(signed[-1])
    if not 1 <= examples <= params.num_workers * params.max_examples:
        raise SecAggError(f"the unmasked example count {examples} is impossible: masks did not cancel")
    return signed[:-1].to(torch.float64) * quant_step(params), examples


def packed_shape(length: int, bits: int) -> tuple[int, int]:
    """The shape of `pack_ring`'s output: one row of ceil(length / 8) bytes per bit."""
    return bits, -(-length // 8)


def pack_ring(ring: torch.Tensor, bits: int) -> torch.Tensor:
    """Ring elements as `bits` bit planes (uint8, [bits, ceil(n/8)]): exactly R bits per element
    on the wire, as Bonawitz et al. count them, padded with zero bits to a whole byte. Done in
    chunks, so the 64 bytes per element that unpacked bits take stay small."""
    rows, row = packed_shape(ring.numel(), bits)
    planes = np.zeros((rows, row), dtype=np.uint8)
    flat = ring.contiguous().numpy()
    for start in range(0, flat.size, _CHUNK):
        chunk = flat[start:start + _CHUNK].view(np.uint8).reshape(-1, 8)
        spread = np.unpackbits(chunk, axis=1, bitorder="little")[:, :bits]  # [n, bits]
        packed = np.packbits(spread.T, axis=1, bitorder="little")  # [bits, ceil(n / 8)]
        planes[:, start // 8:start // 8 + packed.shape[1]] = packed
    return torch.from_numpy(planes)


def unpack_ring(planes: torch.Tensor) -> torch.Tensor:
    """The int64 ring elements of `pack_ring`'s planes, with the padding (which must be zero:
    check it) at the end."""
    bits, row = planes.shape
    source = planes.contiguous().numpy()
    out = np.zeros(row * 8, dtype=np.int64)
    for start in range(0, row, _CHUNK // 8):
        spread = np.unpackbits(source[:, start:start + _CHUNK // 8], axis=1, bitorder="little")  # [bits, n]
        words = np.zeros((spread.shape[1], 64), dtype=np.uint8)
        words[:, :bits] = spread.T
        out[start * 8:start * 8 + spread.shape[1]] = np.packbits(words, axis=1, bitorder="little").view(np.int64)[:, 0]
    return torch.from_numpy(out)
