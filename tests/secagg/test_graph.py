"""The neighbour graph: symmetric, of the promised degree, drawn from the nonce."""

from __future__ import annotations

import pytest

from fedmq.protocol.secagg.graph import degree, neighbour_graph


@pytest.mark.parametrize(("n", "k"), [(10, 4), (10, 3), (33, 6), (5, 4), (7, 10)])
def test_the_graph_is_symmetric_loop_free_and_regular(n: int, k: int) -> None:
    members = list(range(0, 2 * n, 2))  # indices need not be contiguous
    graph = neighbour_graph(members, neighbours=k, nonce=b"n" * 32, context=b"c")
    assert set(graph) == set(members)
    for u, peers in graph.items():
        assert u not in peers
        assert len(peers) == degree(n, k) >= min(k, n - 1)
        assert all(u in graph[v] for v in peers)


def test_the_same_roster_and_nonce_give_the_same_graph_and_another_nonce_another() -> None:
    members = list(range(40))
    first = neighbour_graph(members, neighbours=6, nonce=b"a" * 32, context=b"c")
    assert first == neighbour_graph(list(reversed(members)), neighbours=6, nonce=b"a" * 32, context=b"c")
    assert first != neighbour_graph(members, neighbours=6, nonce=b"b" * 32, context=b"c")


def test_k_of_n_minus_one_is_the_complete_graph() -> None:
    graph = neighbour_graph(range(6), neighbours=5, nonce=b"a" * 32, context=b"c")
    assert all(peers == set(range(6)) - {u} for u, peers in graph.items())
