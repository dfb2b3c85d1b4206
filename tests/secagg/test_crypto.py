"""The wrappers over `cryptography`: agreement, binding of sealed shares, the mask PRG."""

from __future__ import annotations

import pytest

from fedmq.protocol.secagg import keys as k
from fedmq.protocol.secagg.crypto import (
    CryptoError,
    Purpose,
    agree,
    binding,
    derive,
    generate_private_key,
    keystream,
    open_sealed,
    public_bytes,
    seal,
)


def test_both_sides_of_an_agreement_derive_the_same_key() -> None:
    a, b = generate_private_key(), generate_private_key()
    assert agree(a, public_bytes(b)) == agree(b, public_bytes(a))
    assert k.pairwise_mask_key(a, public_bytes(b), job="j", round_=1) == \
        k.pairwise_mask_key(b, public_bytes(a), job="j", round_=1)


def test_keys_for_other_purposes_or_rounds_differ() -> None:
    secret = bytes(range(32))
    keys = {derive(secret, purpose=p, context=binding("j", r)) for p in Purpose for r in (1, 2)}
    assert len(keys) == 2 * len(Purpose)


def test_a_low_order_public_key_is_refused() -> None:
    # Given the all-zero point, whose shared secret is zero whatever the private key
    with pytest.raises(CryptoError):
        agree(generate_private_key(), bytes(32))
    with pytest.raises(CryptoError):
        agree(generate_private_key(), bytes(31))


def _sealed(**changes: object) -> tuple[bytes, dict[str, object]]:
    sender, recipient = generate_private_key(), generate_private_key()
    where: dict[str, object] = {"job": "j", "round_": 3, "sender": 1, "recipient": 2}
    sealed = k.seal_pair(sender, public_bytes(recipient), seed_share=5, key_share=7, **where)  # type: ignore[arg-type]
    where.update(changes)
    return sealed, {"private": recipient, "peer": public_bytes(sender), **where}


def test_a_sealed_share_pair_opens_for_its_recipient() -> None:
    sealed, at = _sealed()
    assert k.open_pair(at.pop("private"), at.pop("peer"), sealed, **at) == (5, 7)  # type: ignore[arg-type]


@pytest.mark.parametrize("change", [{"recipient": 0}, {"sender": 0}, {"round_": 4}, {"job": "other"}])
def test_a_sealed_share_moved_elsewhere_does_not_open(change: dict[str, object]) -> None:
    # Given shares sealed for recipient 2 of round 3 / When opened as if for another recipient,
    # sender, round or job / Then the tag does not verify
    sealed, at = _sealed(**change)
    with pytest.raises(CryptoError, match="does not authenticate"):
        k.open_pair(at.pop("private"), at.pop("peer"), sealed, **at)  # type: ignore[arg-type]


def test_a_flipped_ciphertext_bit_does_not_open() -> None:
    key = bytes(32)
    sealed = bytearray(seal(key, b"secret", associated=b"ad"))
    sealed[-1] ^= 1
    with pytest.raises(CryptoError):
        open_sealed(key, bytes(sealed), associated=b"ad")


def test_binding_is_unambiguous() -> None:
    assert binding("ab", "c") != binding("a", "bc")
    assert binding(1, "2") != binding("1", 2)


def test_the_prg_uses_every_bit_of_its_256_bit_key() -> None:
    # Given two keys equal but in their last bit (a 32-bit seed would have made them equal)
    a = bytes(31) + b"\x00"
    b = bytes(31) + b"\x01"
    # Then their streams differ, and each stream is reproducible
    assert keystream(a, 64) != keystream(b, 64)
    assert keystream(a, 64) == keystream(a, 64)
    with pytest.raises(CryptoError):
        keystream(bytes(4), 8)
