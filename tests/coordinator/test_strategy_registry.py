"""The strategy registry: names and import paths to classes, KEY=VALUE text to typed options."""

from __future__ import annotations

import pytest

from fedmq.coordinator.strategies import (
    STRATEGIES,
    FedAdam,
    Krum,
    MultiKrum,
    build_strategy,
    describe_strategies,
)
from fedmq.coordinator.strategy import FedAvg
from fedmq.protocol.errors import StrategyError
from tests.coordinator.custom_strategy import KeepModel

ALL = ["fedavg", "fedavgm", "fedprox", "fedadam", "fedyogi", "fedadagrad", "fedmedian",
       "fedtrimmedavg", "krum", "multikrum", "bulyan"]


def test_every_issue_strategy_is_registered_and_builds_with_its_defaults() -> None:
    assert list(STRATEGIES) == ALL
    for name in ALL:
        assert isinstance(build_strategy(name, {}), STRATEGIES[name])


def test_options_are_parsed_to_the_constructor_types() -> None:
    # Given text options as a command line gives them
    adam = build_strategy("fedadam", {"eta": "0.01", "tau": "1e-4", "eta_l": "none"})
    krum = build_strategy("krum", {"f": "2"})
    multikrum = build_strategy("multikrum", {"f": "1", "m": "3"})
    # Then they arrive as numbers of the right type
    assert isinstance(adam, FedAdam) and (adam.eta, adam.tau, adam.eta_l) == (0.01, 1e-4, None)
    assert isinstance(krum, Krum) and krum.f == 2 and type(krum.f) is int
    assert isinstance(multikrum, MultiKrum) and (multikrum.f, multikrum.m) == (1, 3)
    # And names are case-insensitive
    assert isinstance(build_strategy("FedAvg"), FedAvg)


def test_an_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(StrategyError) as caught:
        build_strategy("fedsgd", {})
    assert "unknown strategy 'fedsgd'" in str(caught.value)
    assert all(name in str(caught.value) for name in ALL)
    assert "module.path:ClassName" in str(caught.value)


def test_an_unknown_option_lists_the_valid_ones_with_types_and_defaults() -> None:
    with pytest.raises(StrategyError) as caught:
        build_strategy("fedadam", {"lr": "0.1"})
    message = str(caught.value)
    assert "has no option lr" in message
    assert "eta (a finite number, default 0.1)" in message and "eta_l (a finite number or none, default None)" in message
    with pytest.raises(StrategyError, match="valid options: none"):
        build_strategy("fedavg", {"f": "1"})


@pytest.mark.parametrize(("name", "options", "expected"), [
    ("krum", {"f": "1.5"}, "f='1.5' of strategy 'krum' must be an integer"),
    ("fedadam", {"eta": "fast"}, "must be a finite number"),
    ("fedadam", {"eta": "nan"}, "must be a finite number"),
    ("fedadam", {"eta": "none"}, "must be a finite number"),
    ("fedtrimmedavg", {"beta": "0.7"}, r"beta=0.7 must lie in \[0, 0.5\)"),
    ("bulyan", {"f": "-1"}, "f=-1 must be a non-negative count"),
])
def test_a_bad_value_says_what_is_expected(name: str, options: dict[str, str], expected: str) -> None:
    with pytest.raises(StrategyError, match=expected):
        build_strategy(name, options)


def test_a_users_strategy_loads_by_import_path_with_typed_options() -> None:
    strategy = build_strategy("tests.coordinator.custom_strategy:KeepModel",
                              {"rounds_seen": "2", "label": "mine", "scale": "0.5", "verbose": "yes"})
    assert isinstance(strategy, KeepModel)
    assert (strategy.rounds_seen, strategy.label, strategy.scale, strategy.verbose) == (2, "mine", 0.5, True)


@pytest.mark.parametrize(("path", "expected"), [
    ("no_such_package_xyz.mod:Thing", "cannot import 'no_such_package_xyz.mod'.*PYTHONPATH"),
    ("tests.coordinator.custom_strategy:Missing", "names nothing, not a subclass"),
    ("tests.coordinator.custom_strategy:NOT_A_CLASS", "names 3, not a subclass"),
    ("tests.coordinator.custom_strategy:Unfinished", "is abstract"),
    ("tests.coordinator.custom_strategy:", "must read module.path:ClassName"),
])
def test_a_bad_import_path_says_why(path: str, expected: str) -> None:
    with pytest.raises(StrategyError, match=expected):
        build_strategy(path, {})


def test_describe_lists_every_strategy_with_its_options() -> None:
    text = describe_strategies()
    assert [line.split(":")[0] for line in text.splitlines()] == ALL
    assert "krum: Krum (Blanchard et al. 2017)" in text and "f (an integer, default 1)" in text
    lines = dict(line.split(": ", 1) for line in text.splitlines())
    assert "Holds every update" in lines["bulyan"] and "Holds every update" not in lines["fedadam"]
