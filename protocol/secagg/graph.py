"""The masking graph: which workers exchange shares and pairwise masks (Bell et al. 2020).

A Harary graph over a random permutation of the roster: place the workers on a ring in an order
drawn from the round's nonce, and join each to the ceil(K/2) nearest on either side. Degree is
K rounded up to even (or N - 1: the complete graph of Bonawitz et al.). Coordinator and workers
compute it alike from the roster and the nonce, so it never travels.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from fedmq.protocol.secagg.crypto import Purpose, binding, derive, keystream

_DRAW_BYTES = 8


def neighbour_graph(members: Sequence[int], *, neighbours: int, nonce: bytes,
                    context: bytes) -> dict[int, frozenset[int]]:
    """Each member's neighbours (never itself); symmetric."""
    ordered = sorted(set(members))
    n = len(ordered)
    half = -(-neighbours // 2)
    if 2 * half >= n - 1:
        return {u: frozenset(ordered) - {u} for u in ordered}
    ring = _permute(ordered, nonce=nonce, context=context)
    graph: dict[int, frozenset[int]] = {}
    for position, u in enumerate(ring):
        graph[u] = frozenset(ring[(position + step) % n] for step in range(-half, half + 1) if step)
    return graph


def degree(num_members: int, neighbours: int) -> int:
    """The number of neighbours each of `num_members` has in `neighbour_graph`."""
    half = -(-neighbours // 2)
    return num_members - 1 if 2 * half >= num_members - 1 else 2 * half


def _permute(ordered: list[int], *, nonce: bytes, context: bytes) -> list[int]:
    """Fisher-Yates driven by ChaCha20 keyed from the nonce and the roster; unbiased draws by
    rejection sampling."""
    key = derive(nonce, purpose=Purpose.NEIGHBOUR_GRAPH, context=context + binding(*ordered))
    # Rejection discards less than one draw in 2**47 for N <= 2**16: twice the need is ample.
    stream = keystream(key, 2 * _DRAW_BYTES * len(ordered) + 64 * _DRAW_BYTES)
    draws = (int.from_bytes(stream[i:i + _DRAW_BYTES], "big")
             for i in range(0, len(stream), _DRAW_BYTES))
    out = list(ordered)
    for i in range(len(out) - 1, 0, -1):
        j = _below(i + 1, draws)
        out[i], out[j] = out[j], out[i]
    return out


def _below(bound: int, draws: Iterator[int]) -> int:
    limit = (1 << (8 * _DRAW_BYTES)) - (1 << (8 * _DRAW_BYTES)) % bound
    for value in draws:
        if value < limit:
            return int(value % bound)
    raise RuntimeError("the graph's keystream ran out")  # probability below 2**-1000
