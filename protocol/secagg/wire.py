"""The msgpack form of secure-aggregation messages, decoded as hostile input.

Every message is a map {"v", "kind", "job", "round", ...}. Maps keyed by worker index travel as
lists of [index, ...] rows (msgpack map keys must be text here); every index is below
MAX_WORKERS and appears once, every key, nonce, ciphertext and share has its exact byte length,
and every count is bounded, so decoding does work in proportion to the bytes received. Any
malformed field is a DecodeError naming it.
"""

from __future__ import annotations

import enum
import math
from typing import Any

import torch

from fedmq.protocol.codec import pack, tensor_from_wire, tensor_to_wire, unpack
from fedmq.protocol.errors import DecodeError, UnsupportedVersion
from fedmq.protocol.names import NAME_PATTERN
from fedmq.protocol.secagg import messages as m
from fedmq.protocol.secagg.crypto import KEY_BYTES
from fedmq.protocol.secagg.params import MAX_RING_BITS, MAX_WORKERS, SecAggParams
from fedmq.protocol.secagg.shamir import PRIME, SHARE_BYTES

PROTOCOL_VERSION = 1  # the envelope's `v`, as protocol.messages.PROTOCOL_VERSION (a test checks)
MAX_ROUND = (1 << 63) - 1


class Kind(str, enum.Enum):
    ADVERTISE_REQUEST = "secagg.advertise"
    ADVERTISE_REPLY = "secagg.keys"
    SHARE_REQUEST = "secagg.roster"
    SHARE_REPLY = "secagg.shares"
    MASKED_INPUT_REQUEST = "secagg.routed"
    MASKED_INPUT_REPLY = "secagg.masked"
    UNMASK_REQUEST = "secagg.unmask"
    UNMASK_REPLY = "secagg.reveal"


SECAGG_KINDS = frozenset(kind.value for kind in Kind)


def encode(message: m.SecAggMessage) -> memoryview:
    return pack({"v": PROTOCOL_VERSION} | to_wire(message))


def decode(data: bytes | memoryview | list[bytes]) -> m.SecAggMessage:
    """The secure-aggregation message in untrusted bytes; DecodeError otherwise."""
    obj = unpack(data)
    if obj.get("v") != PROTOCOL_VERSION:
        raise UnsupportedVersion(f"protocol version {obj.get('v')!r:.40} is not supported; this build speaks {PROTOCOL_VERSION}")
    return from_wire(obj)


def to_wire(message: m.SecAggMessage) -> dict[str, Any]:
    """The message as a msgpack-ready map, without the envelope's version."""
    head: dict[str, Any] = {"job": message.job, "round": message.round}
    if isinstance(message, m.AdvertiseRequest):
        p = message.params
        params = {"num_workers": p.num_workers, "threshold": p.threshold, "neighbours": p.neighbours,
                  "quant_bits": p.quant_bits, "clip": float(p.clip), "max_examples": p.max_examples}
        return head | {"kind": Kind.ADVERTISE_REQUEST.value, "params": params, "nonce": message.nonce,
                       "roster": list(message.roster)}
    if isinstance(message, m.AdvertiseReply):
        return head | {"kind": Kind.ADVERTISE_REPLY.value, "sender": message.sender,
                       "c": message.keys.c_public, "s": message.keys.s_public}
    if isinstance(message, m.ShareRequest):
        rows = [[i, k.c_public, k.s_public] for i, k in sorted(message.keys.items())]
        return head | {"kind": Kind.SHARE_REQUEST.value, "keys": rows}
    if isinstance(message, m.ShareReply):
        return head | {"kind": Kind.SHARE_REPLY.value, "sender": message.sender,
                       "sealed": _byte_rows(message.sealed)}
    if isinstance(message, m.MaskedInputRequest):
        return head | {"kind": Kind.MASKED_INPUT_REQUEST.value, "recipient": message.recipient,
                       "shared": list(message.shared), "sealed": _byte_rows(message.sealed)}
    if isinstance(message, m.MaskedInputReply):
        return head | {"kind": Kind.MASKED_INPUT_REPLY.value, "sender": message.sender,
                       "masked": tensor_to_wire(message.masked)}
    if isinstance(message, m.UnmaskRequest):
        return head | {"kind": Kind.UNMASK_REQUEST.value, "survivors": list(message.survivors),
                       "dropped": list(message.dropped)}
    return head | {"kind": Kind.UNMASK_REPLY.value, "sender": message.sender,
                   "seed": _share_rows(message.seed_shares), "key": _share_rows(message.key_shares)}


def from_wire(obj: dict[str, Any]) -> m.SecAggMessage:
    """The message a decoded map describes (its version already checked)."""
    f = _Fields(obj)
    kind, job, round_ = obj.get("kind"), f.name("job"), f.round()
    if kind == Kind.ADVERTISE_REQUEST:
        return m.AdvertiseRequest(job=job, round=round_, params=_params(f.map("params")),
                                  nonce=f.bytes_("nonce", m.ROUND_NONCE_BYTES), roster=f.roster())
    if kind == Kind.ADVERTISE_REPLY:
        keys = m.PublicKeys(c_public=f.bytes_("c", KEY_BYTES), s_public=f.bytes_("s", KEY_BYTES))
        return m.AdvertiseReply(job=job, round=round_, sender=f.index("sender"), keys=keys)
    if kind == Kind.SHARE_REQUEST:
        rows = f.rows("keys", (KEY_BYTES, KEY_BYTES))
        return m.ShareRequest(job=job, round=round_, keys={
            i: m.PublicKeys(c_public=c, s_public=s) for i, (c, s) in rows.items()})
    if kind == Kind.SHARE_REPLY:
        sealed = {i: c for i, (c,) in f.rows("sealed", (m.SEALED_BYTES,)).items()}
        return m.ShareReply(job=job, round=round_, sender=f.index("sender"), sealed=sealed)
    if kind == Kind.MASKED_INPUT_REQUEST:
        sealed = {i: c for i, (c,) in f.rows("sealed", (m.SEALED_BYTES,)).items()}
        return m.MaskedInputRequest(job=job, round=round_, recipient=f.index("recipient"),
                                    shared=f.indices("shared"), sealed=sealed)
    if kind == Kind.MASKED_INPUT_REPLY:
        return m.MaskedInputReply(job=job, round=round_, sender=f.index("sender"), masked=f.ring("masked"))
    if kind == Kind.UNMASK_REQUEST:
        return m.UnmaskRequest(job=job, round=round_, survivors=f.indices("survivors"),
                               dropped=f.indices("dropped"))
    if kind == Kind.UNMASK_REPLY:
        return m.UnmaskReply(job=job, round=round_, sender=f.index("sender"),
                             seed_shares=f.shares("seed"), key_shares=f.shares("key"))
    raise DecodeError(f"unknown secure-aggregation message kind {kind!r:.80}")


def _byte_rows(by_index: dict[int, bytes]) -> list[list[Any]]:
    return [[i, data] for i, data in sorted(by_index.items())]


def _share_rows(by_index: dict[int, int]) -> list[list[Any]]:
    return [[i, y.to_bytes(SHARE_BYTES, "big")] for i, y in sorted(by_index.items())]


def _params(raw: dict[str, Any]) -> SecAggParams:
    f = _Fields(raw)
    clip = raw.get("clip")
    if not isinstance(clip, float) or not math.isfinite(clip):
        raise DecodeError("field 'clip' must be a finite float")
    try:
        return SecAggParams(num_workers=f.int_("num_workers", MAX_WORKERS), threshold=f.int_("threshold", MAX_WORKERS),
                            neighbours=f.int_("neighbours", MAX_WORKERS), quant_bits=f.int_("quant_bits", 64),
                            clip=clip, max_examples=f.int_("max_examples", 1 << 62))
    except ValueError as e:
        raise DecodeError(f"secure-aggregation settings are invalid: {e}") from e


class _Fields:
    """Typed, bounded access to a decoded map; anything else is a DecodeError."""

    def __init__(self, obj: dict[str, Any]) -> None:
        self._obj = obj

    def _get(self, key: str, kind: type) -> Any:  # noqa: ANN401
        value = self._obj.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise DecodeError(f"field {key!r} is missing or not {kind.__name__}")
        return value

    def int_(self, key: str, limit: int) -> int:
        value: int = self._get(key, int)
        if not 0 <= value <= limit:
            raise DecodeError(f"field {key!r} must be 0 to {limit}")
        return value

    def name(self, key: str) -> str:
        value: str = self._get(key, str)
        if not NAME_PATTERN.match(value):
            raise DecodeError(f"field {key!r} is not a valid name: {value[:80]!r}")
        return value

    def round(self) -> int:
        return self.int_("round", MAX_ROUND)

    def index(self, key: str) -> int:
        return self.int_(key, MAX_WORKERS - 1)

    def map(self, key: str) -> dict[str, Any]:
        value: dict[str, Any] = self._get(key, dict)
        return value

    def bytes_(self, key: str, size: int) -> bytes:
        value: bytes = self._get(key, bytes)
        if len(value) != size:
            raise DecodeError(f"field {key!r} must be {size} bytes, got {len(value)}")
        return value

    def _list(self, key: str) -> list[Any]:
        value: list[Any] = self._get(key, list)
        if len(value) > MAX_WORKERS:
            raise DecodeError(f"field {key!r} lists more than {MAX_WORKERS} workers")
        return value

    def roster(self) -> tuple[str, ...]:
        names = self._list("roster")
        if not all(isinstance(n, str) and NAME_PATTERN.match(n) for n in names) or len(set(names)) != len(names):
            raise DecodeError("field 'roster' must list distinct valid worker names")
        return tuple(names)

    def indices(self, key: str) -> tuple[int, ...]:
        values = self._list(key)
        if not all(type(i) is int and 0 <= i < MAX_WORKERS for i in values) or len(set(values)) != len(values):
            raise DecodeError(f"field {key!r} must list distinct worker indices below {MAX_WORKERS}")
        return tuple(values)

    def rows(self, key: str, sizes: tuple[int, ...]) -> dict[int, tuple[bytes, ...]]:
        """[[index, bytes, ...], ...] with distinct indices and exact byte lengths."""
        out: dict[int, tuple[bytes, ...]] = {}
        for row in self._list(key):
            if not (isinstance(row, list) and len(row) == 1 + len(sizes) and type(row[0]) is int
                    and 0 <= row[0] < MAX_WORKERS and row[0] not in out):
                raise DecodeError(f"field {key!r} must hold [index, ...] rows with distinct indices")
            if not all(isinstance(b, bytes) and len(b) == n for b, n in zip(row[1:], sizes, strict=True)):
                raise DecodeError(f"field {key!r}: a row's bytes must be {sizes} long")
            out[row[0]] = tuple(row[1:])
        return out

    def shares(self, key: str) -> dict[int, int]:
        out = {i: int.from_bytes(y, "big") for i, (y,) in self.rows(key, (SHARE_BYTES,)).items()}
        if any(y >= PRIME for y in out.values()):
            raise DecodeError(f"field {key!r}: a share lies outside the field")
        return out

    def ring(self, key: str) -> torch.Tensor:
        tensor = tensor_from_wire(self._obj.get(key))
        if (tensor.dtype != torch.uint8 or tensor.dim() != 2 or not 1 <= tensor.shape[0] <= MAX_RING_BITS
                or tensor.shape[1] < 1):
            raise DecodeError(f"field {key!r} must be ring elements: 1 to {MAX_RING_BITS} uint8 bit planes")
        return tensor
