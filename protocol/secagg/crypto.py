"""Thin wrappers over `cryptography` for secure aggregation: nothing here is home-made.

- X25519 key agreement (two key pairs per worker per round: `c` to encrypt shares, `s` for the
  pairwise masks); an all-zero shared secret (a low-order peer key) is refused by the library.
- HKDF-SHA256 turns a shared secret or a seed into a 256-bit key for one purpose, with the job
  and round in `info`, so a key never serves two purposes or two rounds.
- AES-256-GCM seals the shares, with a random 96-bit nonce sent in front of the ciphertext and
  associated data that binds job, round, sender, recipient and stage.
- ChaCha20 (256-bit key, the full secret; never a 32-bit seed, cf. adap/flower#7522) expands a
  key into mask bits. Each PRG key is derived for one use only, so its fixed nonce is never reused.
"""

from __future__ import annotations

import enum
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedmq.protocol.secagg.errors import SecAggError

KEY_BYTES = 32  # X25519 keys, derived keys and seeds
NONCE_BYTES = 12  # AES-GCM
TAG_BYTES = 16  # AES-GCM
_PRG_NONCE = bytes(16)  # ChaCha20's counter and nonce: every PRG key is used for one stream only
_RAW = serialization.Encoding.Raw


class CryptoError(SecAggError):
    """A key, ciphertext or shared secret that the cryptography refuses."""


class Purpose(enum.Enum):
    """What a derived key is for; each purpose is its own HKDF `info` label."""

    SHARE_ENCRYPTION = b"fedmq/secagg/v1/share-encryption"
    PAIRWISE_MASK = b"fedmq/secagg/v1/pairwise-mask"
    SELF_MASK = b"fedmq/secagg/v1/self-mask"
    NEIGHBOUR_GRAPH = b"fedmq/secagg/v1/neighbour-graph"


def binding(*parts: str | int | bytes) -> bytes:
    """An unambiguous byte string of `parts` (each length-prefixed and typed), for HKDF `info`
    and AEAD associated data: ("ab", "c") and ("a", "bc") never collide."""
    out = bytearray()
    for part in parts:
        if isinstance(part, bytes):
            tag, raw = b"b", part
        elif isinstance(part, str):
            tag, raw = b"s", part.encode()
        else:
            tag, raw = b"i", str(int(part)).encode()
        out += tag + len(raw).to_bytes(4, "big") + raw
    return bytes(out)


def generate_private_key() -> X25519PrivateKey:
    return X25519PrivateKey.generate()


def public_bytes(private: X25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw)


def private_bytes(private: X25519PrivateKey) -> bytes:
    return private.private_bytes(_RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption())


def private_from_bytes(raw: bytes) -> X25519PrivateKey:
    if len(raw) != KEY_BYTES:
        raise CryptoError(f"an X25519 private key is {KEY_BYTES} bytes, got {len(raw)}")
    return X25519PrivateKey.from_private_bytes(raw)


def agree(private: X25519PrivateKey, peer_public: bytes) -> bytes:
    """The X25519 shared secret with a peer's raw public key; CryptoError for a bad key."""
    if len(peer_public) != KEY_BYTES:
        raise CryptoError(f"an X25519 public key is {KEY_BYTES} bytes, got {len(peer_public)}")
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as e:  # a low-order point gives an all-zero secret, which the library refuses
        raise CryptoError(f"key agreement failed: {e}") from e


def derive(secret: bytes, *, purpose: Purpose, context: bytes) -> bytes:
    """A 256-bit key for `purpose` in `context` (job and round) from a secret or seed."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=purpose.value + context)
    return hkdf.derive(secret)


def seal(key: bytes, plaintext: bytes, *, associated: bytes) -> bytes:
    """nonce || AES-GCM(plaintext), authenticating `associated` too."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated)


def open_sealed(key: bytes, sealed: bytes, *, associated: bytes) -> bytes:
    """The plaintext of `seal`'s output; CryptoError when the key, the associated data or a
    byte of the ciphertext differ (a ciphertext moved to another recipient, round or stage)."""
    if len(sealed) < NONCE_BYTES + TAG_BYTES:
        raise CryptoError("a sealed share is shorter than its nonce and tag")
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated)
    except InvalidTag as e:
        raise CryptoError("a sealed share does not authenticate: wrong key, binding or bytes") from e


def keystream(key: bytes, nbytes: int) -> bytes:
    """`nbytes` pseudo-random bytes from ChaCha20 keyed with the full 256-bit `key`."""
    if len(key) != KEY_BYTES:
        raise CryptoError(f"a PRG key is {KEY_BYTES} bytes, got {len(key)}")
    encryptor = Cipher(algorithms.ChaCha20(key, _PRG_NONCE), mode=None).encryptor()
    return encryptor.update(bytes(nbytes))
