"""The fedmq command line: exit codes, one-line errors, the demo."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from fedmq.coordinator.cli import main
from tests.coordinator.conftest import ROOT, fedmq

UNREACHABLE = "amqp://guest:s3cret@127.0.0.1:1/"


@pytest.mark.parametrize("command", [
    ["train", "--task", "digits", "--workers", "w0", "--broker", UNREACHABLE],
    ["worker", "--id", "w0", "--task", "digits", "--broker", UNREACHABLE],
])
def test_an_unreachable_broker_is_one_line_and_exit_code_2(command: list[str]) -> None:
    # When a command starts against a port where no broker listens
    done = subprocess.run(fedmq(*command), cwd=ROOT, capture_output=True, text=True, timeout=60)
    # Then it exits 2 with one line naming the URL, not the password, and what to do; no traceback
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2
    assert len(lines) == 1 and "127.0.0.1:1" in lines[0] and "s3cret" not in lines[0], done.stderr
    assert "--broker" in lines[0] and "Traceback" not in done.stderr


@pytest.mark.parametrize("args, message", [
    (["train", "--task", "digits", "--workers", "w0,w1", "--min-replies", "3"], "--min-replies"),
    (["train", "--task", "digits", "--workers", "w0", "--resume"], "--checkpoint-dir"),
    (["worker", "--id", "w0", "--task", "digits", "--shard", "4/4"], "shard"),
    (["train", "--task", "no.such.module", "--workers", "w0"], "no.such.module"),
    (["train", "--task", "digits", "--workers", "w0", "--strategy", "krumm"], "fedavg, fedavgm, fedprox"),
    (["train", "--task", "digits", "--workers", "w0", "--strategy", "fedadam", "--strategy-option", "etaa=1"],
     "valid options: eta"),
    (["train", "--task", "digits", "--workers", "w0", "--strategy-option", "f"], "KEY=VALUE"),
    (["train", "--task", "digits", "--workers", "w0,w1,w2", "--strategy", "krum"], "needs at least 5 replies"),
    (["train", "--task", "digits", "--workers", "w0,w1", "--sample", "3"], "--sample 3 is more than"),
    (["train", "--task", "digits", "--workers", "w0,w1", "--sample", "1", "--min-replies", "2"],
     "--min-replies"),
    (["train", "--task", "digits", "--workers", "w0", "--spill-dir", "/no/such/dir"], "--spill-dir /no/such/dir"),
])
def test_usage_errors_exit_2_with_a_clear_message(args: list[str], message: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code = main(args + ["--broker", UNREACHABLE])
    assert code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("command", ["worker", "train", "demo", "plot"])
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0 and "usage: fedmq" in capsys.readouterr().out


def test_demo_runs_on_the_memory_broker_and_saves_json_lines(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    # When the demo runs three rounds with its defaults otherwise
    out = tmp_path / "demo.jsonl"
    code = main(["demo", "--rounds", "3", "--metrics-out", str(out)])
    # Then it succeeds, prints a per-round table and writes one JSON line per round
    assert code == 0
    rounds = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["round"] for r in rounds] == [1, 2, 3] and all(r["replies"] == 3 for r in rounds)
    printed = capsys.readouterr().out
    assert "fedmq demo: digits, 3 workers" in printed and f"{rounds[-1]['eval_accuracy']:.4f}" in printed
