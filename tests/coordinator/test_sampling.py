"""Client sampling draws from the run's seed: the same rounds ask the same workers, every time."""

import pytest

from fedmq.coordinator.sampling import Sampling, sample

WORKERS = [f"w{i}" for i in range(10)]


def test_a_draw_is_a_function_of_seed_and_round() -> None:
    # Given ten workers and a sample of three
    # When rounds 1..20 are drawn twice with seed 7, and once with seed 8
    first = [sample(WORKERS, 3, seed=7, round_=r) for r in range(1, 21)]
    again = [sample(WORKERS, 3, seed=7, round_=r) for r in range(1, 21)]
    other = [sample(WORKERS, 3, seed=8, round_=r) for r in range(1, 21)]
    # Then the seed-7 draws repeat exactly, each round asks 3 distinct workers in named order,
    # rounds differ from each other, and another seed draws differently
    assert first == again
    assert all(len(set(s)) == 3 and s == sorted(s, key=WORKERS.index) for s in first)
    assert len({tuple(s) for s in first}) > 10
    assert first != other


def test_over_many_rounds_every_worker_is_asked_about_equally() -> None:
    # Given 500 rounds sampling 2 of 10 workers
    counts = dict.fromkeys(WORKERS, 0)
    for r in range(500):
        for w in sample(WORKERS, 2, seed=0, round_=r):
            counts[w] += 1
    # Then each worker is asked roughly 100 times (a uniform draw), never 0
    assert all(60 < c < 140 for c in counts.values()), counts


@pytest.mark.parametrize(("sampling", "size"), [
    (Sampling(), 10), (Sampling(count=4), 4), (Sampling(fraction=0.25), 3), (Sampling(fraction=0.01), 1),
])
def test_sizes(sampling: Sampling, size: int) -> None:
    assert sampling.size(10) == size


def test_impossible_samples_are_refused_with_the_flag_named() -> None:
    with pytest.raises(ValueError, match="--sample 11 is more than the 10"):
        Sampling(count=11).size(10)
    with pytest.raises(ValueError, match="not both"):
        Sampling(count=2, fraction=0.5)
    with pytest.raises(ValueError, match="--fraction"):
        Sampling(fraction=1.5)
