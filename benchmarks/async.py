"""Time to accuracy, synchronous against asynchronous training (issue 11 point 7).

digits, 8 `fedmq worker` processes on label-skewed shards (`--partition label`), speeds set with
`--slowdown`: `straggler` (one worker 10x slower), `lognormal` (factors exp(N(0, 1)) drawn from
the seed, scaled so the fastest is 1) and `equal`. Per seed and scenario the eight workers start
once and each arm trains as its own job:

- sync-all: FedAvg, every round waits for all 8 (`--rounds R`, default 30);
- sync-drop: FedAvg with `--min-replies 7` and a round timeout of half sync-all's median round
  (or twice the 7th-fastest worker's share of it, if larger), at least 1 s: rounds close
  without the slowest;
- fedasync: `--buffer 1 --mix 0.5`; fedbuff-3, fedbuff-4: `--buffer 3` / `4`, server lr 1;
  async arms stop after twice the updates sync-all used (2 x R x 8), staleness polynomial:0.5.

Local training is 5 epochs (--epochs): with one epoch a digits shard trains in ~3 ms, and the
round's messaging, not the workers' speed, would decide every time.

The target accuracy of a seed is what sync-all reaches after R rounds (minus --slack, default one
point). Reported per arm: seconds and updates until the target, and the final accuracy; the
table gives the median over seeds with [min, max]. Seconds are wall-clock from the first task,
evaluation included (the `seconds` of `fedmq plot --x seconds`).

    python -m benchmarks.async [--seeds 0,1,2] [--scenarios straggler,lognormal,equal] [--rounds 30]
                               [--out runs/async] [--broker URL]

writes one JSON line per (scenario, seed, arm) to OUT/async.jsonl and each job's lines to
OUT/lines/. Targets (scenario straggler): FedBuff reaches the target >= 3x faster than sync-all,
and faster than sync-drop; in `equal`, the best async arm is no slower than sync-all.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import signal
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from benchmarks.robust import delete_topology, quiet_pika
from benchmarks.table import Row
from fedmq.broker.base import Broker
from fedmq.broker.rabbitmq import RabbitBroker
from fedmq.broker.settings import BrokerSettings
from fedmq.broker.topology import Topology
from fedmq.coordinator import processes
from fedmq.coordinator.async_job import AsyncJob
from fedmq.coordinator.async_settings import AsyncSettings
from fedmq.coordinator.job import TrainingJob
from fedmq.coordinator.metrics import read_metrics
from fedmq.coordinator.plot import XAxis, x_values
from fedmq.coordinator.settings import TrainSettings
from fedmq.protocol.errors import FedmqError
from fedmq.protocol.messages import TrainConfig

log = logging.getLogger("benchmarks.async")

WORKERS, ROUNDS, LR, EPOCHS = 8, 30, 0.1, 5
# sync-drop's round timeout, as a share of sync-all's median round (which waits for the slowest):
# half of it, or twice the 7th-fastest worker's estimated share when that is larger. Half leaves
# the 10x straggler out and gives the others 5x their time, so a busy machine fails no round.
DROP_SHARE = 0.5
UPDATE_BUDGET = 2  # async arms may use this many times sync-all's updates (R x 8)
SCENARIOS = ("straggler", "lognormal", "equal")
DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672/%2F"


@dataclass(frozen=True, kw_only=True)
class Arm:
    name: str
    buffer: int | None = None  # None: synchronous
    mix: float | None = None
    min_replies: int | None = None


ARMS = (Arm(name="sync-all"), Arm(name="sync-drop", min_replies=WORKERS - 1), Arm(name="fedasync", buffer=1, mix=0.5),
        Arm(name="fedbuff-3", buffer=3), Arm(name="fedbuff-4", buffer=4))


@dataclass(frozen=True, kw_only=True)
class Result:
    scenario: str
    seed: int
    arm: str
    target: float
    seconds_to_target: float | None  # None: not reached
    updates_to_target: int | None
    final_accuracy: float | None
    seconds: float  # the whole run
    updates: int


def slowdowns(scenario: str, seed: int, n: int = WORKERS) -> list[float]:
    if scenario == "straggler":
        return [1.0] * (n - 1) + [10.0]
    if scenario == "lognormal":
        draw = random.Random(f"fedmq-async-bench:{seed}")
        factors = [math.exp(draw.gauss(0.0, 1.0)) for _ in range(n)]
        return [min(f / min(factors), 1000.0) for f in factors]
    return [1.0] * n


def run_cell(url: str, scenario: str, seed: int, *, rounds: int, slack: float, out: Path, epochs: int = EPOCHS,
             console: Console | None = None) -> list[Result]:
    """Start the workers at this scenario's speeds, train every arm as its own job, stop them."""
    topology = Topology(f"async-{uuid.uuid4().hex[:8]}")
    names = [f"w{i}" for i in range(WORKERS)]
    factors = slowdowns(scenario, seed)
    connection = ["--broker", url, "--prefix", topology.prefix, "--partition", "label", "--log-level", "warning"]
    (out / "logs").mkdir(parents=True, exist_ok=True)
    workers = [processes.start(processes.worker_args(name, "digits", i, WORKERS, *connection, "--slowdown",
                                                     f"{factors[i]:.4g}"), log=out / "logs" / f"{scenario}-{name}.log")
               for i, name in enumerate(names)]
    jobs: list[str] = []
    results: list[Result] = []
    try:
        with RabbitBroker(BrokerSettings(url, topology)) as broker:
            base = TrainSettings("digits", tuple(names), rounds=rounds, config=TrainConfig(lr=LR, epochs=epochs, seed=seed),
                                 wait_for_workers_s=180.0, round_timeout_s=600.0)
            # Untimed: each worker's first task pays one-off start-up costs (16 s measured on a busy
            # machine), which would otherwise all land on whichever arm runs first.
            jobs.append(f"{scenario}-{seed}-warmup")
            TrainingJob(broker, replace(base, rounds=1, job=jobs[-1])).run()
            lines: dict[str, list[dict[str, object]]] = {}
            for arm in ARMS:
                job = f"{scenario}-{seed}-{arm.name}"
                jobs.append(job)
                lines[arm.name] = _train(broker, base, arm, job, out / "lines" / f"{job}.jsonl", factors, lines)
            target = (_final(lines["sync-all"]) or 0.0) - slack
            for arm in ARMS:
                results.append(_result(scenario, seed, arm.name, target, lines[arm.name]))
                if console is not None:
                    console.print(_describe(results[-1]))
    finally:
        processes.stop(workers)
        delete_topology(url, topology, names, jobs)
    return results


def _train(broker: Broker, base: TrainSettings, arm: Arm, job: str, metrics: Path, factors: Sequence[float],
           earlier: dict[str, list[dict[str, object]]]) -> list[dict[str, object]]:
    settings = replace(base, job=job, metrics_out=metrics, min_replies=arm.min_replies)
    if arm.buffer is None and arm.min_replies is not None:  # close rounds once the 7th-fastest is surely in
        rounds = earlier["sync-all"]
        median_round = statistics.median(float(str(r["wall_s"])) for r in rounds[1:] or rounds)
        ranked = sorted(factors)
        timeout = median_round * max(DROP_SHARE, 2.0 * ranked[arm.min_replies - 1] / ranked[-1])
        settings = replace(settings, round_timeout_s=max(timeout, 1.0))
    try:
        if arm.buffer is None:
            TrainingJob(broker, settings).run()
        else:
            budget = UPDATE_BUDGET * base.rounds * len(base.workers)
            AsyncJob(broker, settings, AsyncSettings(buffer=arm.buffer, mix=arm.mix, updates=budget)).run()
    except FedmqError as e:  # e.g. a sync-drop round short of replies: that arm's result, not the end
        log.warning("%s failed: %s", job, e)
    return read_metrics(metrics) if metrics.exists() else []


def _final(lines: list[dict[str, object]]) -> float | None:
    accuracies = [line["eval_accuracy"] for line in lines if isinstance(line.get("eval_accuracy"), float)]
    return float(str(accuracies[-1])) if accuracies else None


def _result(scenario: str, seed: int, arm: str, target: float, lines: list[dict[str, object]]) -> Result:
    seconds = x_values(lines, XAxis.SECONDS)
    updates = 0
    reached: tuple[float, int] | None = None
    for at, line in zip(seconds, lines, strict=True):
        updates += int(str(line.get("replies", 0)))
        accuracy = line.get("eval_accuracy")
        if reached is None and isinstance(accuracy, float) and accuracy >= target:
            reached = (at, updates)
    return Result(scenario=scenario, seed=seed, arm=arm, target=target,
                  seconds_to_target=reached[0] if reached else None, updates_to_target=reached[1] if reached else None,
                  final_accuracy=_final(lines), seconds=seconds[-1] if seconds else 0.0, updates=updates)


def _describe(r: Result) -> str:
    reached = "not reached" if r.seconds_to_target is None else \
        f"{r.seconds_to_target:.1f} s / {r.updates_to_target} updates"
    return (f"{r.scenario} seed {r.seed} {r.arm}: target {100 * r.target:.1f}% {reached}; final "
            f"{100 * (r.final_accuracy or 0):.1f}% after {r.seconds:.1f} s, {r.updates} updates")


def _spread(values: list[float], fmt: str) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):{fmt}} [{min(values):{fmt}}, {max(values):{fmt}}]"


def result_table(results: Sequence[Result]) -> Table:
    table = Table(title=escape("time to target accuracy, digits, 8 workers, label skew (median [min, max] over seeds)"))
    for column in ("scenario", "arm", "reached", "seconds to target", "updates to target", "final acc %"):
        table.add_column(column, justify="left" if column in ("scenario", "arm") else "right")
    for scenario in dict.fromkeys(r.scenario for r in results):
        for arm in dict.fromkeys(r.arm for r in results):
            cell = [r for r in results if (r.scenario, r.arm) == (scenario, arm)]
            hit = [r for r in cell if r.seconds_to_target is not None]
            table.add_row(scenario, arm, f"{len(hit)}/{len(cell)}",
                          _spread([r.seconds_to_target or 0.0 for r in hit], ".1f"),
                          _spread([float(r.updates_to_target or 0) for r in hit], ".0f"),
                          _spread([100 * (r.final_accuracy or 0.0) for r in cell], ".1f"))
    return table


def target_rows(results: Sequence[Result]) -> list[Row]:
    def median_time(scenario: str, arm: str) -> float:
        cell = [r for r in results if (r.scenario, r.arm) == (scenario, arm)]
        if not cell:
            return math.nan
        # an arm that missed the target counts as taking forever for that seed
        return statistics.median(r.seconds_to_target if r.seconds_to_target is not None else math.inf for r in cell)

    best_buff = min(median_time("straggler", "fedbuff-3"), median_time("straggler", "fedbuff-4"))
    best_async = min(median_time("equal", a) for a in ("fedasync", "fedbuff-3", "fedbuff-4"))
    return [
        Row("async: sync-all / FedBuff time to target (straggler)", median_time("straggler", "sync-all") / best_buff,
            "x", ">= 3"),
        Row("async: sync-drop / FedBuff time to target (straggler)",
            median_time("straggler", "sync-drop") / best_buff, "x", ">= 1"),
        Row("async: sync-all / best async time to target (equal speeds)",
            median_time("equal", "sync-all") / best_async, "x", ">= 1"),
    ]


def run_all(url: str, *, seeds: Sequence[int], scenarios: Sequence[str], rounds: int, slack: float, out: Path,
            epochs: int = EPOCHS, console: Console | None = None) -> list[Result]:
    out.mkdir(parents=True, exist_ok=True)
    results: list[Result] = []
    with open(out / "async.jsonl", "w") as file:
        for scenario in scenarios:
            for seed in seeds:
                for result in run_cell(url, scenario, seed, rounds=rounds, slack=slack, out=out, epochs=epochs,
                                       console=console):
                    results.append(result)
                    file.write(json.dumps(asdict(result)) + "\n")
                    file.flush()
    return results


def run(url: str) -> list[Row]:
    """The full benchmark for `python -m benchmarks` (about 11 min per scenario and seed, 1.7 h in all,
    on the busy 2-core machine)."""
    quiet_pika()
    console = Console()
    started = time.perf_counter()
    results = run_all(url, seeds=(0, 1, 2), scenarios=SCENARIOS, rounds=ROUNDS, slack=0.01,
                      out=Path("runs/async"), console=console)
    console.print(result_table(results))
    console.print(f"async benchmark: {time.perf_counter() - started:.0f} s")
    return target_rows(results)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.async", description=__doc__.split("\n")[0])
    parser.add_argument("--broker", default=DEFAULT_BROKER)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="sync rounds (async: as many updates)")
    parser.add_argument("--slack", type=float, default=0.01, help="target = sync-all's final accuracy - this")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="local epochs per task")
    parser.add_argument("--out", type=Path, default=Path("runs/async"))
    args = parser.parse_args()
    scenarios = [s for s in args.scenarios.split(",") if s]
    if set(scenarios) - set(SCENARIOS):
        parser.error(f"scenarios are {', '.join(SCENARIOS)}")
    quiet_pika()
    # SIGTERM unwinds like Ctrl-C, so the worker processes are stopped and the queues deleted.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    console = Console()
    results = run_all(args.broker, seeds=[int(s) for s in args.seeds.split(",")], scenarios=scenarios,
                      rounds=args.rounds, slack=args.slack, out=args.out, epochs=args.epochs, console=console)
    console.print(result_table(results))
    for row in target_rows(results):
        console.print(f"{row.benchmark}: {row.measured:.2f}{row.unit} (target {row.target}; "
                      f"{'met' if row.met else 'NOT met'})")


if __name__ == "__main__":
    main()
