"""`fedmq plot`: a PNG of loss and accuracy per round."""

import json
from pathlib import Path

import pytest

from fedmq.coordinator.cli import main
from fedmq.coordinator.plot import plot_metrics


def _write(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_a_metrics_file_becomes_a_png(tmp_path: Path) -> None:
    # Given three rounds of one job, the toy's without accuracy (null)
    metrics = _write(tmp_path / "m.jsonl", [
        {"job": "toy", "round": r, "train_loss": 1.0 / r, "eval_loss": 0.9 / r, "eval_accuracy": None}
        for r in (1, 2, 3)])
    # When it is plotted through the CLI
    assert main(["plot", str(metrics), "-o", str(tmp_path / "out" / "curve.png")]) == 0
    # Then a PNG exists
    assert (tmp_path / "out" / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_empty_or_missing_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="no rounds"):
        plot_metrics(_write(tmp_path / "empty.jsonl", []), tmp_path / "x.png")
    assert main(["plot", str(tmp_path / "missing.jsonl")]) == 2
    assert "--metrics-out" in capsys.readouterr().err


def test_a_sync_and_an_async_run_share_one_picture_against_seconds(tmp_path: Path) -> None:
    # Given a synchronous file (rounds with wall_s and eval_s) and an asynchronous one (seconds)
    sync = _write(tmp_path / "sync.jsonl", [
        {"job": "s", "round": r, "wall_s": 2.0, "eval_s": 0.5, "eval_loss": 1.0 / r, "eval_accuracy": 0.3 * r}
        for r in (1, 2, 3)])
    fast = _write(tmp_path / "async.jsonl", [
        {"job": "a", "round": v, "version": v, "seconds": 0.4 * v, "wall_s": 0.4, "eval_s": 0.0,
         "eval_loss": 1.0 / v, "eval_accuracy": 0.1 * v} for v in range(1, 8)])
    # When both are plotted against seconds through the CLI
    out = tmp_path / "both.png"
    assert main(["plot", str(sync), str(fast), "--x", "seconds", "-o", str(out)]) == 0
    # Then one PNG holds them, and the sync run's x is the running sum of its rounds' times
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from fedmq.coordinator.metrics import read_metrics
    from fedmq.coordinator.plot import XAxis, x_values
    assert x_values(read_metrics(sync), XAxis.SECONDS) == [2.5, 5.0, 7.5]
    assert x_values(read_metrics(fast), XAxis.SECONDS) == pytest.approx([0.4 * v for v in range(1, 8)])
