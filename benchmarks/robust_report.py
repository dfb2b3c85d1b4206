"""The robustness benchmark's results: one cell per (attack, f, strategy), the table, the target.

Kept apart from benchmarks/robust.py, which starts the workers and trains; this part only reads
results, so the judgement (met / NOT met, against the f=0 reference and the honest-only ceiling)
is tested without a broker.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from rich.table import Table

from benchmarks.table import Row
from fedmq.protocol.messages import TrainConfig

TARGET_POINTS = 3.0
HONEST_LABEL = "fedavg over honest workers only"  # the reference row: FedAvg without the attackers


@dataclass(frozen=True, kw_only=True)
class Result:
    attack: str
    f: int
    strategy: str  # the arm's label
    options: dict[str, str] = field(default_factory=dict)
    accuracy: float | None = None  # the test accuracy after the last round; None: n/a or failed
    rounds: int = 0  # rounds completed
    note: str = ""  # why there is no accuracy
    seconds: float = 0.0


def describe(config: TrainConfig, rounds: int) -> str:
    return f"{rounds} rounds, lr {config.lr:g}, {config.epochs} epoch(s), batch {config.batch_size}, seed {config.seed}"


def result_table(results: Sequence[Result], subtitle: str = "") -> Table:
    """Strategies down, (attack, f) across; final test accuracy in percent."""
    columns = list(dict.fromkeys((r.attack, r.f) for r in results))
    table = Table(title="final test accuracy (%), digits, 10 workers, label skew", caption=subtitle or None)
    table.add_column("strategy")
    for attack, f in columns:
        table.add_column(f"{attack} f={f}", justify="right")
    for strategy in dict.fromkeys(r.strategy for r in results):
        cells = {(r.attack, r.f): r for r in results if r.strategy == strategy}
        table.add_row(strategy, *[_cell(cells.get(column)) for column in columns])
    return table


def target_row(results: Sequence[Result], shipped: Collection[str]) -> Row:
    """Best robust accuracy under f=3 sign-flip minus f=0 FedAvg's, in points; the note also
    gives the honest-only ceiling, so a miss shows whether the rule or the lost data is to blame."""
    baseline = next((r.accuracy for r in results if r.f == 0 and r.strategy == "fedavg"), None)
    ceiling = next((r.accuracy for r in results if (r.attack, r.f) == ("signflip", 3)
                    and r.strategy == HONEST_LABEL), None)
    attacked = [r for r in results if (r.attack, r.f) == ("signflip", 3) and r.strategy in shipped
                and r.accuracy is not None]
    if baseline is None or not attacked:
        return Row("robust: f=3 sign-flip vs f=0 FedAvg", float("nan"), "points", f">= -{TARGET_POINTS:g}",
                   "not measured")
    best = max(attacked, key=lambda r: r.accuracy or 0.0)
    return Row("robust: best strategy under f=3 sign-flip minus f=0 FedAvg", 100 * ((best.accuracy or 0) - baseline),
               "points", f">= -{TARGET_POINTS:g}",
               f"{best.strategy} {100 * (best.accuracy or 0):.1f}% vs f=0 FedAvg {100 * baseline:.1f}%; "
               f"honest-only FedAvg ceiling {_percent(ceiling)}")


def _percent(accuracy: float | None) -> str:
    return "not measured" if accuracy is None else f"{100 * accuracy:.1f}%"


def _cell(result: Result | None) -> str:
    if result is None:
        return ""
    if result.accuracy is None:
        return "n/a" if result.note.startswith("n/a") else "failed"
    return f"{100 * result.accuracy:.1f}"


def progress_line(result: Result) -> str:
    accuracy = "-" if result.accuracy is None else f"{100 * result.accuracy:.1f}%"
    return (f"{result.attack} f={result.f} {result.strategy} {result.options or ''}: {accuracy} "
            f"after {result.rounds} rounds, {result.seconds:.0f} s {result.note}")
