"""A round's secure-aggregation settings, shared by coordinator and workers, and what follows
from them: the ring's size and the threshold inside each worker's neighbourhood."""

from __future__ import annotations

import math
from dataclasses import dataclass

MAX_WORKERS = 1 << 16  # workers in one round: indices, rosters and share maps stay bounded
# Edges of the masking graph (N x K): bounds what one hostile ADVERTISE request can make a worker
# build (the graph, the Shamir split), whatever N and K it names. The complete graph fits up to
# about 2,000 workers; beyond, SecAgg+'s O(log N) neighbours are the point anyway.
MAX_EDGES = 1 << 22
MAX_RING_BITS = 62  # int64 with room for one addition of two ring elements without overflow
MAX_QUANT_BITS = 32


def default_threshold(num_workers: int) -> int:
    """A strict majority: the least that keeps two disjoint groups from both reconstructing."""
    return num_workers // 2 + 1


def default_neighbours(num_workers: int) -> int:
    """The complete graph (Bonawitz et al.) up to 16 workers; beyond, 4 log2 N neighbours
    (Bell et al.'s O(log N)), which keeps per-worker cost logarithmic in N."""
    if num_workers <= 16:
        return num_workers - 1
    return min(num_workers - 1, 2 * math.ceil(2 * math.log2(num_workers)))


@dataclass(frozen=True, kw_only=True)
class SecAggParams:
    """Settings of one secure-aggregation round.

    num_workers: the sampled workers (U0). threshold: T, the fewest that must answer every stage.
    neighbours: K, each worker's neighbours in the masking graph (N - 1: every other worker).
    quant_bits: B, bits of each quantized coordinate (signed). clip: C, the L2 norm every update
    is clipped to, and so the range [-C, C] of each coordinate. max_examples: the largest example
    count a worker may weight its update by; it sizes the ring so the weighted sum cannot wrap.
    """

    num_workers: int
    threshold: int
    neighbours: int
    quant_bits: int = 16
    clip: float = 1.0
    max_examples: int = 1 << 16

    def __post_init__(self) -> None:
        n = self.num_workers
        if not 2 <= n <= MAX_WORKERS:
            raise ValueError(f"secure aggregation needs 2 to {MAX_WORKERS} workers, got {n}")
        if not default_threshold(n) <= self.threshold <= n:
            raise ValueError(f"--secagg-threshold must be a majority of the {n} workers "
                             f"({default_threshold(n)} to {n}), got {self.threshold}")
        if not 1 <= self.neighbours <= n - 1:
            raise ValueError(f"--secagg-neighbours must be 1 to {n - 1} for {n} workers, got {self.neighbours}")
        if n * self.neighbours > MAX_EDGES:
            raise ValueError(f"{n} workers with {self.neighbours} neighbours each make a masking graph of more "
                             f"than {MAX_EDGES} edges: lower --secagg-neighbours")
        if not 2 <= self.quant_bits <= MAX_QUANT_BITS:
            raise ValueError(f"--quant-bits must be 2 to {MAX_QUANT_BITS}, got {self.quant_bits}")
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise ValueError(f"--clip must be a positive number, got {self.clip}")
        if self.max_examples < 1:
            raise ValueError(f"max_examples must be at least 1, got {self.max_examples}")
        if self.ring_bits > MAX_RING_BITS:
            raise ValueError(f"{n} workers of up to {self.max_examples} examples at {self.quant_bits} "
                             f"bits need a {self.ring_bits}-bit ring, more than {MAX_RING_BITS}: "
                             "lower --quant-bits or the example cap")

    @property
    def ring_bits(self) -> int:
        """R: the sum of N inputs, each n_u * q with |q| <= 2**(B-1) - 1 and n_u <= max_examples,
        is below 2**(R-1) in magnitude, so it never wraps and its sign survives."""
        return self.quant_bits + (self.num_workers * self.max_examples).bit_length()

    @property
    def complete(self) -> bool:
        """Whether every worker neighbours every other (Bonawitz et al.)."""
        return self.neighbours >= self.num_workers - 1


def local_threshold(*, threshold: int, num_workers: int, holders: int, complete: bool) -> int:
    """How many of a worker's share holders (its neighbours and itself) must answer to rebuild
    its secrets.

    On the complete graph it is T itself. On a sparser graph it is T's fraction of the
    neighbourhood, rounded up, and always a strict majority of the holders: then no two
    disjoint groups of holders can each rebuild a secret, whatever the coordinator asks.
    """
    if complete:
        return min(threshold, holders)
    return min(holders, max(holders // 2 + 1, math.ceil(threshold * holders / num_workers)))
