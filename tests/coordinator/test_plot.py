"""`fedmq plot`: a PNG of loss and accuracy per round."""

import json
from pathlib import Path

import pytest

from coordinator.cli import main
from coordinator.plot import plot_metrics


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
