"""The eight messages of a secure-aggregation round: a request and a reply per stage.

Each stage's request from the coordinator carries what the previous stage produced; each reply
carries the worker's index (its position in the round's roster) as `sender`, which the
coordinator checks against the identity the transport authenticated. Workers are named by index
inside the protocol: Shamir shares are evaluated at index + 1. Their wire form is in
protocol.secagg.wire.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar

import torch

from fedmq.protocol.secagg.crypto import NONCE_BYTES, TAG_BYTES
from fedmq.protocol.secagg.params import SecAggParams
from fedmq.protocol.secagg.shamir import SHARE_BYTES

ROUND_NONCE_BYTES = 32
# A sealed share pair: the AES-GCM nonce, the self-mask share and the key share, the tag.
SEALED_BYTES = NONCE_BYTES + 2 * SHARE_BYTES + TAG_BYTES


class Stage(enum.IntEnum):
    """The four stages, in order. A request of stage S starts it; its reply ends it."""

    ADVERTISE = 1
    SHARE = 2
    MASKED_INPUT = 3
    UNMASK = 4


@dataclass(frozen=True, kw_only=True)
class PublicKeys:
    """A worker's two X25519 public keys for one round: `c` to encrypt shares to it, `s` for
    its pairwise masks."""

    c_public: bytes
    s_public: bytes


@dataclass(frozen=True, kw_only=True)
class AdvertiseRequest:
    """Starts the round: the settings, the nonce the neighbour graph is drawn from, and the
    sampled workers U0 (a worker's index is its position here)."""

    stage: ClassVar[Stage] = Stage.ADVERTISE
    job: str
    round: int
    params: SecAggParams
    nonce: bytes
    roster: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class AdvertiseReply:
    stage: ClassVar[Stage] = Stage.ADVERTISE
    job: str
    round: int
    sender: int
    keys: PublicKeys


@dataclass(frozen=True, kw_only=True)
class ShareRequest:
    """The public keys of every worker that advertised (U1), by index."""

    stage: ClassVar[Stage] = Stage.SHARE
    job: str
    round: int
    keys: dict[int, PublicKeys]


@dataclass(frozen=True, kw_only=True)
class ShareReply:
    """The sender's share pairs, each sealed to one neighbour: recipient index -> ciphertext."""

    stage: ClassVar[Stage] = Stage.SHARE
    job: str
    round: int
    sender: int
    sealed: dict[int, bytes]


@dataclass(frozen=True, kw_only=True)
class MaskedInputRequest:
    """To one worker: who shared (U2), and the share pairs its neighbours sealed to it, by
    sender index."""

    stage: ClassVar[Stage] = Stage.MASKED_INPUT
    job: str
    round: int
    recipient: int
    shared: tuple[int, ...]
    sealed: dict[int, bytes]


@dataclass(frozen=True, kw_only=True, eq=False)  # tensors have no truth value to compare
class MaskedInputReply:
    """The masked, quantized, weighted update: its ring elements as R bit planes
    (masking.pack_ring), R bits per element."""

    stage: ClassVar[Stage] = Stage.MASKED_INPUT
    job: str
    round: int
    sender: int
    masked: torch.Tensor


@dataclass(frozen=True, kw_only=True)
class UnmaskRequest:
    """Who sent a masked input (U3) and who shared but did not (U2 minus U3)."""

    stage: ClassVar[Stage] = Stage.UNMASK
    job: str
    round: int
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]


@dataclass(frozen=True, kw_only=True)
class UnmaskReply:
    """Shares the sender holds, by owner index: of the self-mask seed for survivors, of the
    pairwise-mask key for dropped workers; never both for one owner."""

    stage: ClassVar[Stage] = Stage.UNMASK
    job: str
    round: int
    sender: int
    seed_shares: dict[int, int]
    key_shares: dict[int, int]


Request = AdvertiseRequest | ShareRequest | MaskedInputRequest | UnmaskRequest
Reply = AdvertiseReply | ShareReply | MaskedInputReply | UnmaskReply
SecAggMessage = Request | Reply
