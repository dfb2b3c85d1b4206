"""Cohort strategies against closed forms: FedMedian, FedTrimmedAvg, Krum, MultiKrum, Bulyan."""

from __future__ import annotations

import pytest
import torch

from fedmq.coordinator.strategies import Bulyan, FedMedian, FedTrimmedAvg, Krum, MultiKrum
from fedmq.coordinator.strategies import robust_math
from fedmq.coordinator.strategy import Failure, Strategy
from fedmq.protocol.errors import StrategyError, TrainingFailed
from fedmq.protocol.messages import Reply
from tests.coordinator.strategy_helpers import model, reply, run_round, values


def test_median_is_coordinatewise_and_rounds_counters() -> None:
    # Given three workers, one of them far off in coordinate 1
    replies = [reply("a", 1.0, -2.0, counter=1), reply("b", 5.0, 100.0, counter=2), reply("c", 3.0, 0.0, counter=9)]
    # When the median aggregates them
    new = run_round(FedMedian(), model(0.0, 0.0), replies)
    # Then each coordinate moves by its own median, [3, 0]; the counter by median(1, 2, 9) = 2
    assert values(new) == ([3.0, 0.0], 12)


def test_median_of_an_even_count_averages_the_middle_pair_and_rounds_half_to_even() -> None:
    replies = [reply(w, x, counter=c) for w, x, c in [("a", 1.0, 1), ("b", 2.0, 2), ("c", 3.0, 3), ("d", 10.0, 4)]]
    # median(1, 2, 3, 10) = 2.5; median of counters 2.5 rounds half-to-even to 2
    assert values(run_round(FedMedian(), model(0.0), replies)) == ([2.5], 12)


def test_median_with_one_dropped_worker_uses_the_replies_it_got() -> None:
    replies = [reply("a", 1.0), reply("b", 7.0), reply("c", 4.0)]
    new = run_round(FedMedian(), model(0.0), replies, [Failure("d", "timed out")])
    assert values(new) == ([4.0], 10)


def test_trimmed_mean_drops_beta_n_from_each_side() -> None:
    # Given beta 0.2 and five values: floor(0.2 * 5) = 1 trimmed per side
    replies = [reply(w, x, counter=c) for w, x, c in [("a", -50.0, 1), ("b", 1.0, 2), ("c", 2.0, 3),
                                                      ("d", 3.0, 4), ("e", 100.0, 50)]]
    strategy = FedTrimmedAvg(beta=0.2)
    # Then the mean of 1, 2, 3 is 2 and the counter's of 2, 3, 4 is 3
    assert values(run_round(strategy, model(0.0), replies)) == ([2.0], 13)
    assert strategy.metrics() == {"trimmed_per_side": 1}


def test_trimmed_mean_with_ties_and_beta_zero() -> None:
    ties = [reply(w, x) for w, x in [("a", 1.0), ("b", 1.0), ("c", 1.0), ("d", 5.0)]]
    assert values(run_round(FedTrimmedAvg(beta=0.25), model(0.0), ties)) == ([1.0], 10)
    # beta 0 trims nothing: the plain (unweighted) mean, 8 / 4
    assert values(run_round(FedTrimmedAvg(beta=0.0), model(0.0), ties)) == ([2.0], 10)


def test_trimmed_mean_refuses_beta_of_one_half() -> None:
    with pytest.raises(StrategyError, match=r"\[0, 0.5\)"):
        FedTrimmedAvg(beta=0.5)


def _five() -> list[Reply]:
    """Four honest workers near each other and an attacker at 100; b and c tie for the best score."""
    return [reply(w, x, counter=c) for w, x, c in [("a", 0.0, 5), ("b", 1.0, 7), ("c", 2.0, 5),
                                                   ("d", 3.0, 5), ("e", 100.0, 5)]]


def test_krum_picks_the_lowest_score_and_breaks_ties_by_worker_name() -> None:
    # Given f=1, n=5: each score sums the n - f - 2 = 2 nearest squared distances:
    # a: 1 + 4 = 5, b: 1 + 1 = 2, c: 1 + 1 = 2, d: 1 + 4 = 5, e: 97^2 + 98^2
    strategy = Krum(f=1)
    # When the replies arrive in reverse order
    new = run_round(strategy, model(0.0), list(reversed(_five())))
    # Then b (tied with c, first by name) is the model's whole move, its counter included
    assert values(new) == ([1.0], 17)
    assert strategy.metrics() == {"selected": ["b"]}


def test_krum_ignores_integer_counters_when_measuring_distances() -> None:
    # Given the same round where honest worker a reports an enormous counter
    replies = _five()
    replies[0] = reply("a", 0.0, counter=10**6)
    strategy = Krum(f=1)
    run_round(strategy, model(0.0), replies)
    # Then the selection is unchanged
    assert strategy.metrics() == {"selected": ["b"]}


def test_multikrum_averages_the_m_best() -> None:
    # m=3 keeps b, c and then a (tied with d at 5): mean(0, 1, 2) = 1, counters mean(5, 7, 5) -> 6
    strategy = MultiKrum(f=1, m=3)
    assert values(run_round(strategy, model(0.0), _five())) == ([1.0], 16)
    assert strategy.metrics() == {"selected": ["a", "b", "c"]}
    # The default m = n - f = 4 keeps a, b, c, d: mean 1.5
    assert values(run_round(MultiKrum(f=1), model(0.0), _five()))[0] == [1.5]


def test_krum_with_all_equal_updates_takes_that_update() -> None:
    same = [reply(w, 0.5, -0.5) for w in "abcde"]
    strategy = Krum(f=1)
    assert values(run_round(strategy, model(1.0, 1.0), same)) == ([1.5, 0.5], 10)
    assert strategy.metrics() == {"selected": ["a"]}


def test_krum_at_its_limit_with_a_dropped_worker_and_beyond() -> None:
    # Given f=1 (n >= 5) and six asked workers, one of which failed: five replies still suffice
    replies = _five()
    assert values(run_round(Krum(f=1), model(0.0), replies, [Failure("z", "crashed")]))[0] == [1.0]
    # When a second worker drops, four replies are below the limit: a clear error, not a guess
    with pytest.raises(TrainingFailed, match=r"krum with f=1 \(n >= 2f \+ 3\) needs at least 5 replies, this round has 4 \(failed: 2 of the workers asked\)"):
        run_round(Krum(f=1), model(0.0), replies[:4], [Failure("z", "crashed"), Failure("e", "crashed")])
    assert Krum(f=2).min_replies() == 7 and MultiKrum(f=1, m=5).min_replies() == 6


def test_krum_refuses_negative_f_and_m_below_one() -> None:
    with pytest.raises(StrategyError, match="f=-1"):
        Krum(f=-1)
    with pytest.raises(StrategyError, match="m=0"):
        MultiKrum(m=0)


def _seven() -> list[Reply]:
    return [reply(w, x, counter=c) for w, x, c in [("a", 0.0, 5), ("b", 1.0, 5), ("c", 2.0, 5), ("d", 3.0, 6),
                                                   ("e", 4.0, 7), ("f", 5.0, 5), ("g", 100.0, 0)]]


def test_bulyan_picks_theta_by_repeated_krum_then_averages_the_beta_closest_to_the_median() -> None:
    # Given f=1, n=7: theta = 5 picks; repeated Krum picks c (tie with d), d, b (tie with e), e, a
    # (tie with f); each coordinate then averages the beta = 3 of {0, 1, 2, 3, 4} nearest the median 2
    strategy = Bulyan(f=1)
    new = run_round(strategy, model(0.0), list(reversed(_seven())))
    # Then w moves by mean(1, 2, 3) = 2; the counter by mean of the three nearest median(5,5,5,6,7)=5: 5
    assert values(new) == ([2.0], 15)
    assert strategy.metrics() == {"selected": ["a", "b", "c", "d", "e"]}


def test_bulyan_at_its_limit_and_beyond() -> None:
    assert Bulyan(f=1).min_replies() == 7
    with pytest.raises(TrainingFailed, match="at least 7 replies, this round has 6"):
        run_round(Bulyan(f=1), model(0.0), _seven()[:6])
    # f = 0 keeps everything: theta = beta = n, the plain mean
    assert values(run_round(Bulyan(f=0), model(0.0), [reply("a", 0.0), reply("b", 3.0), reply("c", 6.0)]))[0] == [3.0]


def test_bulyan_with_all_equal_updates_and_a_dropped_worker() -> None:
    same = [reply(w, 2.0, counter=3) for w in "abcdefg"]
    assert values(run_round(Bulyan(f=1), model(1.0), same, [Failure("h", "timed out")])) == ([3.0], 13)


def test_mean_closest_to_median_breaks_equal_distances_by_order() -> None:
    # median(0, 2, 4) = 2; 0 and 4 are equally close, so the earlier (0) joins 2: mean 1
    stack = torch.tensor([[0.0], [2.0], [4.0]])
    assert robust_math.mean_closest_to_median(stack, 2).tolist() == [1.0]
    assert robust_math.mean_closest_to_median(torch.tensor([[0.0], [1.0], [2.0], [10.0], [11.0]]), 3).tolist() == [1.0]


def test_pairwise_distances_are_exactly_zero_between_equal_updates() -> None:
    weights = {"w": torch.zeros(3)}
    update = {"w": torch.tensor([0.1, 0.2, 0.3])}
    distances = robust_math.pairwise_sq_distances(weights, [update, dict(update), {"w": torch.zeros(3)}])
    assert distances[0, 1] == 0.0 and distances[0, 2] == pytest.approx(0.14)
    assert torch.equal(distances, distances.T)


@pytest.mark.parametrize("strategy", [FedMedian(), FedTrimmedAvg(), Krum(), MultiKrum(), Bulyan()])
def test_cohort_strategies_say_so_and_leave_their_inputs_alone(strategy: Strategy) -> None:
    assert strategy.holds_cohort
    weights = model(1.0)
    replies = _seven()
    run_round(strategy, weights, replies)
    assert values(weights) == ([1.0], 10) and values(replies[6].update) == ([100.0], 0)
