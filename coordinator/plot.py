"""`fedmq plot`: accuracy and loss from metrics JSON-lines files, as one PNG.

One file: loss (left axis) and accuracy (right axis) per job. Several files (say a synchronous
and an asynchronous run) are compared on one picture: eval accuracy and eval loss per file. The
x axis is the round (a version in asynchronous runs) or, with `--x seconds`, wall-clock seconds
since the run began: an asynchronous line's `seconds`, else the running sum of each round's
`wall_s` and `eval_s`.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import Any

from fedmq.coordinator.metrics import read_metrics

Row = dict[str, object]


class XAxis(Enum):
    ROUND = "round"
    SECONDS = "seconds"


def plot_metrics(metrics_path: Path | Sequence[Path], out: Path, x: XAxis = XAxis.ROUND) -> Path:
    """Draw the files' curves against `x`; the PNG's path. ValueError when a file holds no lines."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    paths = [metrics_path] if isinstance(metrics_path, Path) else list(metrics_path)
    runs: list[tuple[str, list[Row]]] = []
    for path in paths:
        rows = read_metrics(path)
        if not rows:
            raise ValueError(f"{path} holds no rounds yet")
        for job in dict.fromkeys(str(row.get("job", "")) for row in rows):
            label = job if len(paths) == 1 or job == path.stem else path.stem + (f" ({job})" if job else "")
            runs.append((label, [row for row in rows if str(row.get("job", "")) == job]))
    figure, loss_axis = plt.subplots(figsize=(9, 5 + 0.25 * len(runs)))
    accuracy_axis = loss_axis.twinx()
    for index, (label, rows) in enumerate(runs):
        _draw(rows, label, x, loss_axis, accuracy_axis, single=len(paths) == 1, color=f"C{index}")
    loss_axis.set_xlabel("round" if x is XAxis.ROUND else "seconds")
    loss_axis.set_ylabel("loss")
    accuracy_axis.set_ylabel("accuracy")
    accuracy_axis.set_ylim(0, 1)
    if x is XAxis.ROUND:
        loss_axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole
    figure.suptitle(f"fedmq: {paths[0].name}" if len(paths) == 1 else f"fedmq: {len(paths)} runs")
    figure.legend(loc="lower center", ncol=2 if len(paths) > 1 else 3, fontsize="small")
    legend_share = 0.04 + 0.03 * len(runs) if len(paths) > 1 else 0.12
    figure.tight_layout(rect=(0, legend_share, 1, 1))  # room for the legend below the axes
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return out


def x_values(rows: list[Row], x: XAxis) -> list[float]:
    """Each row's position on the x axis."""
    if x is XAxis.ROUND:
        return [_number(row.get("round")) for row in rows]
    total, values = 0.0, []
    for row in rows:
        if isinstance(row.get("seconds"), (int, float)):
            total = _number(row["seconds"])
        else:  # a synchronous round: its own time, evaluation included, after the rounds before
            total += _number(row.get("wall_s")) + _number(row.get("eval_s"))
        values.append(total)
    return values


def _draw(rows: list[Row], label: str, x: XAxis, loss_axis: Any, accuracy_axis: Any,  # noqa: ANN401
          *, single: bool, color: str) -> None:
    xs = x_values(rows, x)
    prefix = f"{label} " if label else ""
    styles = [("eval_loss", loss_axis, "-"), ("eval_accuracy", accuracy_axis, "--")]
    if single:
        styles.insert(0, ("train_loss", loss_axis, ":"))
    colors = {"train_loss": "tab:blue", "eval_loss": "tab:orange", "eval_accuracy": "tab:green"}
    for key, axis, style in styles:
        points = [(at, row[key]) for at, row in zip(xs, rows, strict=True) if row.get(key) is not None]
        if points:
            positions, values = zip(*points, strict=True)
            axis.plot(positions, values, style, color=colors[key] if single else color, marker=".",
                      label=f"{prefix}{key.replace('_', ' ')}")


def _number(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) else 0.0
