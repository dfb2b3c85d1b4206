"""Shamir secret sharing of 256-bit secrets over the prime field GF(2**256 + 297).

2**256 + 297 is the smallest prime above 2**256, so any 32-byte secret is one field element and
each share is one element too (33 bytes on the wire). A share's x is its holder's worker index
plus one (never 0, where the secret lives). Coefficients come from `secrets`. Reconstruction is
Lagrange interpolation at 0 from exactly `threshold` shares; any further shares are checked to lie
on the same polynomial, so a corrupted share is an error, not a silently wrong mask.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence

from fedmq.protocol.secagg.errors import SecAggError

PRIME = 2**256 + 297
SECRET_BYTES = 32
SHARE_BYTES = 33  # one element of GF(PRIME), big-endian


class ShamirError(SecAggError, ValueError):
    """Shares that cannot give the secret: too few, duplicated, out of the field, inconsistent."""


def split(secret: bytes, *, threshold: int, xs: Sequence[int]) -> dict[int, int]:
    """Shares of a 32-byte `secret` for the holders at `xs`, any `threshold` of which give it
    back and fewer of which say nothing about it."""
    if len(secret) != SECRET_BYTES:
        raise ShamirError(f"a secret is {SECRET_BYTES} bytes, got {len(secret)}")
    coefficients = [int.from_bytes(secret, "big")] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    return split_with(coefficients, xs=xs)


def split_with(coefficients: Sequence[int], *, xs: Sequence[int], prime: int = PRIME) -> dict[int, int]:
    """Shares from a given polynomial (constant term first): the deterministic core of `split`,
    public so that known vectors can be checked."""
    threshold = len(coefficients)
    _check_xs(xs, prime)
    if not 1 <= threshold <= len(xs):
        raise ShamirError(f"threshold {threshold} must be between 1 and the {len(xs)} holders")
    return {x: evaluate(coefficients, x, prime) for x in xs}


def evaluate(coefficients: Sequence[int], x: int, prime: int = PRIME) -> int:
    """The polynomial at x (Horner's rule), mod `prime`."""
    result = 0
    for coefficient in reversed(coefficients):
        result = (result * x + coefficient) % prime
    return result


def combine(shares: Mapping[int, int], *, threshold: int, prime: int = PRIME) -> int:
    """The secret (as a field element) from at least `threshold` shares {x: y}.

    Fewer shares than the threshold: ShamirError (they hold no information about the secret).
    Shares beyond the threshold must agree with the polynomial the first `threshold` define.
    """
    if threshold < 1 or len(shares) < threshold:
        raise ShamirError(f"{len(shares)} share(s) cannot reconstruct a secret of threshold {threshold}")
    _check_xs(list(shares), prime)
    if not all(0 <= y < prime for y in shares.values()):
        raise ShamirError("a share lies outside the field")
    points = sorted(shares.items())
    base, extra = points[:threshold], points[threshold:]
    for x, y in extra:
        if _interpolate(base, x, prime) != y:
            raise ShamirError(f"the share at x={x} disagrees with the others: a share is corrupt")
    return _interpolate(base, 0, prime)


def combine_secret(shares: Mapping[int, int], *, threshold: int) -> bytes:
    """The 32-byte secret the shares hold; ShamirError when the result cannot be one."""
    value = combine(shares, threshold=threshold)
    if value >= 1 << (8 * SECRET_BYTES):
        raise ShamirError("the shares give no 32-byte secret: a share is corrupt")
    return value.to_bytes(SECRET_BYTES, "big")


def share_to_bytes(y: int) -> bytes:
    return y.to_bytes(SHARE_BYTES, "big")


def share_from_bytes(data: bytes) -> int:
    """A share's y from its wire bytes; ShamirError unless it is one field element."""
    if len(data) != SHARE_BYTES:
        raise ShamirError(f"a share is {SHARE_BYTES} bytes, got {len(data)}")
    y = int.from_bytes(data, "big")
    if y >= PRIME:
        raise ShamirError("a share lies outside the field")
    return y


def _interpolate(points: Sequence[tuple[int, int]], at: int, prime: int) -> int:
    """Lagrange interpolation of `points` evaluated at `at`, mod `prime`."""
    total = 0
    for i, (xi, yi) in enumerate(points):
        numerator, denominator = 1, 1
        for j, (xj, _) in enumerate(points):
            if i != j:
                numerator = numerator * (at - xj) % prime
                denominator = denominator * (xi - xj) % prime
        total = (total + yi * numerator * pow(denominator, -1, prime)) % prime
    return total


def _check_xs(xs: Sequence[int], prime: int) -> None:
    if len(set(xs)) != len(xs):
        raise ShamirError("two shares have the same x")
    if not all(0 < x < prime for x in xs):
        raise ShamirError("a share's x must be a nonzero field element")
