"""Progress and per-round tables for the terminal."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedmq.coordinator.metrics import RoundMetrics


class RoundReporter:
    """A progress bar over rounds while training runs, then a table of every round."""

    def __init__(self, total_rounds: int, title: str, console: Console | None = None) -> None:
        self.console = console or Console()
        self.rows: list[RoundMetrics] = []
        self._title = title
        self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                                  console=self.console, transient=True)
        self._bar = self._progress.add_task(title, total=total_rounds, status="")

    def __enter__(self) -> RoundReporter:
        self._progress.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._progress.stop()
        if self.rows:
            self.console.print(round_table(self.rows, self._title))

    def __call__(self, metrics: RoundMetrics) -> None:
        self.rows.append(metrics)
        self._progress.update(self._bar, completed=len(self.rows) + self._skipped(metrics),
                              status=f"loss {_fmt(metrics.eval_loss)} acc {_fmt(metrics.eval_accuracy)}")

    def _skipped(self, metrics: RoundMetrics) -> int:
        return metrics.round - len(self.rows)  # rounds done before a --resume


def round_table(rows: list[RoundMetrics], title: str) -> Table:
    table = Table(title=title)
    private = any("dp_epsilon" in m.strategy for m in rows)  # a DP run: epsilon spent after each round
    # Short headers: the table must fit an 80-column terminal.
    for column in ("round", "ok", "dropped", "failed", "train loss", "eval loss", "acc",
                   "wall s", "train s") + (("eps",) if private else ()):
        table.add_column(column, justify="right")
    for m in rows:
        epsilon = [_epsilon(m.strategy.get("dp_epsilon"))] if private else []
        table.add_row(str(m.round), str(m.replies), str(m.dropped), str(m.failed), _fmt(m.train_loss),
                      _fmt(m.eval_loss), _fmt(m.eval_accuracy), f"{m.wall_s:.3f}", f"{m.worker_train_s:.3f}",
                      *epsilon)
    return table


def _epsilon(value: object) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value or "-")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
