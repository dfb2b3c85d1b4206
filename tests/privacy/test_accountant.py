"""The accountant against dp_accounting's own RDP computation, the stopping rule, calibration."""

from __future__ import annotations

import itertools

import pytest
from dp_accounting.rdp import RdpAccountant

from fedmq.coordinator.privacy.accountant import Accountant, calibrate, epsilon_for, round_event
from tests.privacy.dp_helpers import dp, model, reply, run

GRID = list(itertools.product([0.5, 1.1, 3.0], [0.05, 0.3, 1.0], [1, 40], [1e-5, 1e-3]))


@pytest.mark.parametrize("z, q, rounds, delta", GRID)
def test_epsilon_equals_the_library_composing_the_same_rounds(z: float, q: float, rounds: int, delta: float) -> None:
    # Given our accountant composing `rounds` rounds one at a time, as a run does
    ours = Accountant(delta)
    for _ in range(rounds):
        ours.compose(q, z)
    # When dp_accounting composes the same event `rounds` times itself
    library = RdpAccountant()
    library.compose(round_event(q, z), rounds)
    # Then the two epsilons agree to 1e-6
    assert ours.epsilon() == pytest.approx(library.get_epsilon(delta), abs=1e-6, rel=1e-9)


def test_mixed_rounds_and_a_replayed_ledger_agree_exactly() -> None:
    a = Accountant(1e-5)
    for q, z in [(0.2, 1.0), (0.2, 0.8), (0.4, 1.0), (0.2, 1.0)]:
        a.compose(q, z)
    b = Accountant(1e-5)
    state = a.state()
    b.load(state["q"], state["z"])
    assert b.epsilon() == a.epsilon() and b.rounds == a.rounds
    assert a.epsilon_if(0.2, 1.0) > a.epsilon() > 0


def test_calibration_finds_the_smallest_noise_within_the_target() -> None:
    z = calibrate(0.5, 20, 1e-5, 8.0)
    assert epsilon_for(0.5, z, 20, 1e-5) <= 8.0 < epsilon_for(0.5, z / 1.002, 20, 1e-5)
    with pytest.raises(ValueError, match="cannot be met"):
        calibrate(1.0, 10_000, 1e-5, 1e-3)


def test_the_stopping_rule_refuses_the_round_that_would_exceed_the_target() -> None:
    # Given Z = 1, q = 1 (every worker each round) and a target of 5.5 at delta 1e-5
    strategy = dp(z=1.0, clip=1.0, sample=2, workers=2, target_epsilon=5.5)
    rounds = 0
    while (reason := strategy.stop_reason(rounds + 1)) is None:
        run(strategy, model(0.0), [reply("a", 0.1), reply("b", 0.1)])
        rounds += 1
    # Then the spent epsilon is within the target and one more round would not be
    assert strategy.accountant.epsilon() <= 5.5 < strategy.accountant.epsilon_if(1.0, 1.0)
    assert rounds == 1 and "--target-epsilon 5.5" in reason
