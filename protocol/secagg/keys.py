"""Derivations both sides compute alike: share encryption, mask keys, the graph, thresholds.

Keeping them in one place is what makes the masks cancel: a worker and the coordinator derive a
pairwise key from the same X25519 secret, the same purpose and the same job and round.
"""

from __future__ import annotations

from collections.abc import Collection

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedmq.protocol.secagg.crypto import Purpose, agree, binding, derive, open_sealed, seal
from fedmq.protocol.secagg.graph import neighbour_graph
from fedmq.protocol.secagg.messages import Stage
from fedmq.protocol.secagg.params import SecAggParams, local_threshold
from fedmq.protocol.secagg.shamir import SHARE_BYTES, share_from_bytes, share_to_bytes


def context(job: str, round_: int) -> bytes:
    return binding(job, round_)


def share_binding(*, job: str, round_: int, sender: int, recipient: int) -> bytes:
    """Associated data of a sealed share pair: a ciphertext moved to another recipient, sender,
    round, job or stage no longer authenticates."""
    return binding("secagg-share", job, round_, sender, recipient, int(Stage.SHARE))


def seal_pair(private: X25519PrivateKey, peer_public: bytes, *, job: str, round_: int, sender: int,
              recipient: int, seed_share: int, key_share: int) -> bytes:
    """The sender's two shares for one recipient, sealed to the recipient."""
    key = derive(agree(private, peer_public), purpose=Purpose.SHARE_ENCRYPTION, context=context(job, round_))
    plaintext = share_to_bytes(seed_share) + share_to_bytes(key_share)
    return seal(key, plaintext, associated=share_binding(job=job, round_=round_, sender=sender, recipient=recipient))


def open_pair(private: X25519PrivateKey, peer_public: bytes, sealed: bytes, *, job: str, round_: int,
              sender: int, recipient: int) -> tuple[int, int]:
    """(seed share, key share) from `seal_pair`'s output; CryptoError or ShamirError if forged."""
    key = derive(agree(private, peer_public), purpose=Purpose.SHARE_ENCRYPTION, context=context(job, round_))
    plaintext = open_sealed(key, sealed, associated=share_binding(job=job, round_=round_, sender=sender,
                                                                   recipient=recipient))
    return share_from_bytes(plaintext[:SHARE_BYTES]), share_from_bytes(plaintext[SHARE_BYTES:])


def self_mask_key(seed: bytes, *, job: str, round_: int) -> bytes:
    return derive(seed, purpose=Purpose.SELF_MASK, context=context(job, round_))


def pairwise_mask_key(private: X25519PrivateKey, peer_public: bytes, *, job: str, round_: int) -> bytes:
    """The mask key two neighbours share: the full X25519 secret through HKDF."""
    return derive(agree(private, peer_public), purpose=Purpose.PAIRWISE_MASK, context=context(job, round_))


def pairwise_sign(owner: int, peer: int) -> int:
    """+1 when the lower index adds the pairwise mask, -1 for the higher: the two cancel."""
    return 1 if owner < peer else -1


def graph(members: Collection[int], *, params: SecAggParams, nonce: bytes, job: str,
          round_: int) -> dict[int, frozenset[int]]:
    """The round's neighbour graph over the workers that advertised keys (U1)."""
    return neighbour_graph(sorted(members), neighbours=params.neighbours, nonce=nonce,
                           context=context(job, round_))


def holder_threshold(params: SecAggParams, *, holders: int, members: int) -> int:
    """How many of a worker's `holders` (neighbours and itself) rebuild its secrets."""
    return local_threshold(threshold=params.threshold, num_workers=params.num_workers,
                           holders=holders, complete=holders >= members)
