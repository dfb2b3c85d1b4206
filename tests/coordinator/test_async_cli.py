"""`--mode async` on the command line, the staleness rules and the async settings' checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedmq.coordinator.async_settings import AsyncSettings, plan
from fedmq.coordinator.cli import main
from fedmq.coordinator.settings import TrainSettings
from fedmq.coordinator.staleness import Staleness, StalenessKind, parse_staleness


@pytest.mark.parametrize(("text", "weights"), [
    ("constant", [1.0, 1.0, 1.0]),
    ("polynomial:0.5", [1.0, 2 ** -0.5, 4 ** -0.5]),
    ("polynomial", [1.0, 2 ** -0.5, 4 ** -0.5]),
    ("hinge:10,1", [1.0, 1.0, 1 / 21]),
])
def test_each_staleness_rule_weighs_updates_0_1_and_3_versions_old(text: str, weights: list[float]) -> None:
    rule = parse_staleness(text)
    assert [rule.weight(s) for s in (0, 1, 3)] == pytest.approx(weights)


@pytest.mark.parametrize("text", ["linear", "polynomial:x", "hinge:1", "polynomial:-1", "hinge:1,-2", "constant:3"])
def test_a_bad_staleness_rule_says_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match="--staleness"):
        parse_staleness(text)


def test_the_default_rule_is_one_over_sqrt_one_plus_s() -> None:
    assert Staleness() == Staleness(kind=StalenessKind.POLYNOMIAL, a=0.5)


@pytest.mark.parametrize(("options", "match"), [
    (AsyncSettings(buffer=4), "more than the 3 workers"),
    (AsyncSettings(concurrency=5), "more than the 3 workers"),
])
def test_a_buffer_or_concurrency_beyond_the_workers_is_refused(options: AsyncSettings, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        plan(TrainSettings("toy", ("a", "b", "c")), options)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"mix": 0.5, "buffer": 2}, "--buffer 1"), ({"mix": 1.5}, "--mix"), ({"updates": 3, "versions": 2}, "not both"),
    ({"server_lr": 0.0}, "--server-lr"), ({"max_staleness": -1}, "--max-staleness"),
])
def test_contradicting_async_options_are_refused(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AsyncSettings(**kwargs)  # type: ignore[arg-type]


def test_async_options_without_mode_async_are_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--workers", "2", "--buffer", "2"]) == 2
    assert "--mode async" in capsys.readouterr().err


def test_the_demo_runs_asynchronously_on_the_memory_broker(tmp_path: Path) -> None:
    # Given the in-process demo in async mode, FedAsync on the toy task
    metrics = tmp_path / "m.jsonl"
    # When it runs 3 versions
    code = main(["demo", "--task", "toy", "--workers", "2", "--mode", "async", "--buffer", "1", "--mix", "0.5",
                 "--versions", "3", "--batch-size", "2", "--metrics-out", str(metrics)])
    # Then it succeeds and logs versions 1..3, one update each
    assert code == 0
    lines = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [(line["version"], line["replies"], line["mode"]) for line in lines] == [(1, 1, "async"), (2, 1, "async"),
                                                                                      (3, 1, "async")]
