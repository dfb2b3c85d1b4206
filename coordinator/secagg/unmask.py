"""The coordinator's last step: rebuild the secrets the survivors' shares allow, strip the masks
from the sum of masked inputs, and read the example-weighted sum back out of the ring."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch

from fedmq.protocol.secagg import keys as k
from fedmq.protocol.secagg import masking
from fedmq.protocol.secagg.crypto import private_from_bytes, public_bytes
from fedmq.protocol.secagg.errors import SecAggError, TooFewSurvivors
from fedmq.protocol.secagg.messages import PublicKeys, Stage
from fedmq.protocol.secagg.shamir import ShamirError, combine_secret

log = logging.getLogger("fedmq.coordinator")


def rebuild(owner: int, shares: Mapping[int, int], *, threshold: int, holders: int, what: str,
            name: str) -> bytes:
    """The 32-byte secret of `owner` from {holder index: share}; TooFewSurvivors when fewer than
    `threshold` of its holders answered, SecAggError when the shares disagree."""
    if len(shares) < threshold:
        raise TooFewSurvivors(stage=Stage.UNMASK.name, survived=len(shares), threshold=threshold,
                              needed_for=f"share holders of worker {name!r} ({holders} in all) "
                              f"answering, to rebuild its {what}")
    try:
        return combine_secret({holder + 1: y for holder, y in shares.items()}, threshold=threshold)
    except ShamirError as e:
        secret = _without_one_corrupt(shares, threshold=threshold, what=what, name=name)
        if secret is None:
            raise SecAggError(f"cannot rebuild the {what} of worker {name!r}: {e}; a holder sent a corrupt "
                              f"share and too few others answered to tell which") from e
        return secret


def _without_one_corrupt(shares: Mapping[int, int], *, threshold: int, what: str, name: str) -> bytes | None:
    """The secret when leaving out exactly one holder's share makes the rest agree (one corrupt
    holder, told apart when at least threshold + 2 shares came); None otherwise."""
    if len(shares) < threshold + 2:
        return None
    found: dict[bytes, list[int]] = {}
    for holder in shares:
        rest = {h + 1: y for h, y in shares.items() if h != holder}
        try:
            found.setdefault(combine_secret(rest, threshold=threshold), []).append(holder)
        except ShamirError:
            continue
    if len(found) != 1:
        return None
    (secret, corrupt), = found.items()
    log.warning("the %s of worker %r was rebuilt without worker %d's share, which was corrupt", what, name,
                corrupt[0])
    return secret


def strip_self_mask(total: torch.Tensor, seed: bytes, *, job: str, round_: int, bits: int) -> None:
    """Removes a survivor's self mask from the ring sum, in place."""
    masking.add_mask_(total, k.self_mask_key(seed, job=job, round_=round_), bits=bits, sign=-1)


def strip_pairwise_masks(total: torch.Tensor, *, dropped: int, private: bytes, keys: Mapping[int, PublicKeys],
                         partners: frozenset[int], job: str, round_: int, bits: int) -> None:
    """Removes the masks survivors added towards a worker that shared keys but sent no input.

    The rebuilt key must match the public key the dropped worker advertised: else its shares were
    corrupt and the sum would be noise.
    """
    secret = private_from_bytes(private)
    if public_bytes(secret) != keys[dropped].s_public:
        raise SecAggError(f"the pairwise key rebuilt for worker {dropped} does not match its public key: "
                          "a share is corrupt")
    for survivor in sorted(partners):
        key = k.pairwise_mask_key(secret, keys[survivor].s_public, job=job, round_=round_)
        # The survivor added pairwise_sign(survivor, dropped) * PRG(key); take it back out.
        masking.add_mask_(total, key, bits=bits, sign=-k.pairwise_sign(survivor, dropped))
