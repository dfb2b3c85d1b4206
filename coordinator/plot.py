"""`fedmq plot`: accuracy and loss per round from a metrics JSON-lines file, as one PNG."""

from __future__ import annotations

from pathlib import Path

from coordinator.metrics import read_metrics


def plot_metrics(metrics_path: Path, out: Path) -> Path:
    """Draw loss (left axis) and accuracy (right axis) against round; the PNG's path.

    A resumed run's file repeats no rounds; a file holding several runs (different jobs) is
    drawn one line per job.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    rows = read_metrics(metrics_path)
    if not rows:
        raise ValueError(f"{metrics_path} holds no rounds yet")
    figure, loss_axis = plt.subplots(figsize=(8, 4.5))
    accuracy_axis = loss_axis.twinx()
    for job in dict.fromkeys(str(row.get("job", "")) for row in rows):
        _draw_job([row for row in rows if str(row.get("job", "")) == job], job, loss_axis, accuracy_axis)
    loss_axis.set_xlabel("round")
    loss_axis.set_ylabel("loss")
    accuracy_axis.set_ylabel("accuracy")
    accuracy_axis.set_ylim(0, 1)
    loss_axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole
    figure.suptitle(f"fedmq: {metrics_path.name}")
    figure.legend(loc="lower center", ncol=3, fontsize="small")
    figure.tight_layout(rect=(0, 0.08, 1, 1))  # room for the legend below the axes
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return out


def _draw_job(rows: list[dict[str, object]], job: str, loss_axis: object, accuracy_axis: object) -> None:
    label = f"{job} " if job else ""
    for key, axis, style, color in (("train_loss", loss_axis, ":", "tab:blue"),
                                    ("eval_loss", loss_axis, "-", "tab:orange"),
                                    ("eval_accuracy", accuracy_axis, "--", "tab:green")):
        points = [(row["round"], row[key]) for row in rows if row.get(key) is not None]
        if points:
            rounds, values = zip(*points, strict=True)
            axis.plot(rounds, values, style, color=color, marker=".",  # type: ignore[attr-defined]
                      label=f"{label}{key.replace('_', ' ')}")
