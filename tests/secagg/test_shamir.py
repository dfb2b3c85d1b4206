"""Shamir secret sharing: known vectors, every t-subset reconstructs, fewer than t do not."""

from __future__ import annotations

import itertools
import os
import random

import pytest

from fedmq.protocol.secagg.shamir import (
    PRIME,
    ShamirError,
    combine,
    combine_secret,
    share_from_bytes,
    share_to_bytes,
    split,
    split_with,
)


def _probably_prime(n: int, rounds: int = 40) -> bool:
    """Miller-Rabin with random bases: a composite passes with probability below 4**-rounds."""
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    rng = random.Random(12)
    for _ in range(rounds):
        x = pow(rng.randrange(2, n - 1), d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def test_the_field_is_the_smallest_prime_above_2_to_256() -> None:
    # Given the field's modulus / When it is tested / Then it is prime, and no odd number
    # between 2**256 and it is
    assert _probably_prime(PRIME)
    assert not any(_probably_prime(2**256 + i) for i in range(1, 297, 2))


def test_known_vector_from_the_textbook_example() -> None:
    # Given f(x) = 1234 + 166x + 94x^2 over GF(1613) (Shamir's scheme's standard worked example)
    shares = split_with([1234, 166, 94], xs=[1, 2, 3, 4, 5, 6], prime=1613)
    # Then the shares are the published ones, and any three give 1234 back
    assert shares == {1: 1494, 2: 329, 3: 965, 4: 176, 5: 1188, 6: 775}
    assert combine({2: 329, 4: 176, 5: 1188}, threshold=3, prime=1613) == 1234


def test_known_vector_in_the_256_bit_field_wraps_modulo_the_prime() -> None:
    # Given f(x) = (p - 1) + (p - 1) x: f(1) = 2p - 2 = p - 2 and f(2) = 3p - 3 = p - 3 mod p
    shares = split_with([PRIME - 1, PRIME - 1], xs=[1, 2])
    assert shares == {1: PRIME - 2, 2: PRIME - 3}
    assert combine(shares, threshold=2) == PRIME - 1


def test_every_threshold_subset_rebuilds_a_random_secret_and_fewer_do_not() -> None:
    # Given a random 32-byte secret shared 4-of-7
    secret = os.urandom(32)
    shares = split(secret, threshold=4, xs=range(1, 8))
    # When every subset of 4 or more shares is combined / Then each gives the secret
    for size in range(4, 8):
        for subset in itertools.combinations(sorted(shares.items()), size):
            assert combine_secret(dict(subset), threshold=4) == secret
    # And every subset of 3 is refused, and read as 3-of-n gives some other value
    for subset in itertools.combinations(sorted(shares.items()), 3):
        with pytest.raises(ShamirError, match="cannot reconstruct"):
            combine(dict(subset), threshold=4)
        assert combine(dict(subset), threshold=3) != int.from_bytes(secret, "big")


def test_a_corrupt_share_beyond_the_threshold_is_detected() -> None:
    # Given 5 shares of a 3-of-5 sharing, one altered
    shares = split(os.urandom(32), threshold=3, xs=range(1, 6))
    shares[5] = (shares[5] + 1) % PRIME
    # Then combining all of them fails instead of giving a wrong secret
    with pytest.raises(ShamirError, match="corrupt"):
        combine(shares, threshold=3)


@pytest.mark.parametrize("xs", [[1, 1, 2], [0, 1, 2], [1, 2, PRIME]])
def test_repeated_zero_or_out_of_field_xs_are_refused(xs: list[int]) -> None:
    with pytest.raises(ShamirError):
        split_with([1, 2], xs=xs)


def test_share_bytes_round_trip_and_bounds() -> None:
    assert share_from_bytes(share_to_bytes(PRIME - 1)) == PRIME - 1
    with pytest.raises(ShamirError):
        share_from_bytes(PRIME.to_bytes(33, "big"))
    with pytest.raises(ShamirError):
        share_from_bytes(b"\x00" * 32)
    with pytest.raises(ShamirError):
        split(b"short", threshold=1, xs=[1])
