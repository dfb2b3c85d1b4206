"""A benchmark result row and the table that prints them."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from rich.table import Table


@dataclass(frozen=True)
class Row:
    benchmark: str
    measured: float
    unit: str
    target: str  # e.g. ">= 1.0", "<= 20"
    note: str = ""

    @property
    def met(self) -> bool:
        op, bound = self.target.split()
        return self.measured >= float(bound) if op == ">=" else self.measured <= float(bound)


def table(rows: list[Row]) -> Table:
    out = Table(title="fedmq benchmarks")
    for column in ("benchmark", "measured", "unit", "target", "met", "note"):
        out.add_column(column, justify="right" if column in ("measured", "target") else "left")
    for row in rows:
        out.add_row(row.benchmark, f"{row.measured:.3f}", row.unit, row.target,
                    "yes" if row.met else "NO", row.note)
    return out


def median_seconds(run: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall seconds of `run` after `warmup` unmeasured calls."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)
