"""The command line's asynchronous options (`--mode async` on `train` and `demo`), and running them."""

from __future__ import annotations

import argparse

from fedmq.broker.base import Broker
from fedmq.coordinator.async_job import AsyncJob
from fedmq.coordinator.async_settings import AsyncSettings, Mode, plan
from fedmq.coordinator.job import OnRound, TrainingJob
from fedmq.coordinator.settings import TrainSettings
from fedmq.coordinator.staleness import parse_staleness
from fedmq.protocol.messages import Weights
from fedmq.worker.task import Task


def add_async_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mode", choices=[m.value for m in Mode], default=Mode.SYNC.value,
                        help="sync: rounds that wait for their replies (default); async: FedBuff/FedAsync, "
                        "a new version every --buffer updates")
    group = parser.add_argument_group("asynchronous mode (--mode async)")
    group.add_argument("--buffer", type=int, metavar="K", help="aggregate every K accepted updates "
                       "(FedBuff; default min(3, workers)); K=1 with --mix is FedAsync")
    group.add_argument("--mix", type=float, metavar="ALPHA", help="FedAsync's mixing weight: "
                       "x <- (1 - a) x + a (x + update), a = ALPHA * staleness weight (needs --buffer 1)")
    group.add_argument("--concurrency", type=int, metavar="C", help="tasks outstanding at once "
                       "(default: --sample/--fraction, else every worker)")
    group.add_argument("--staleness", default="polynomial:0.5", help="staleness weight of an update "
                       "s versions old: constant, polynomial:A ((1+s)^-A) or hinge:A,B (default polynomial:0.5)")
    group.add_argument("--max-staleness", type=int, metavar="S", help="drop (and count) updates more than "
                       "S versions old (default: no bound)")
    group.add_argument("--server-lr", type=float, default=1.0, metavar="ETA", help="step toward each "
                       "aggregate (default 1)")
    group.add_argument("--updates", type=int, metavar="N", help="stop once N updates were applied")
    group.add_argument("--versions", type=int, metavar="V", help="stop at model version V "
                       "(default: --rounds)")
    group.add_argument("--eval-every", type=int, default=1, metavar="E", help="evaluate every E versions "
                       "and the last (default 1)")


def async_settings(args: argparse.Namespace) -> AsyncSettings | None:
    """The async options of `args`; None in sync mode, where giving any of them is an error."""
    if args.mode == Mode.SYNC.value:
        given = [flag for flag, value in (("--buffer", args.buffer), ("--mix", args.mix),
                                          ("--concurrency", args.concurrency), ("--updates", args.updates),
                                          ("--versions", args.versions), ("--max-staleness", args.max_staleness))
                 if value is not None]
        if given:
            raise ValueError(f"{', '.join(given)} belong to asynchronous training: add --mode async")
        return None
    return AsyncSettings(buffer=args.buffer, mix=args.mix, concurrency=args.concurrency,
                         staleness=parse_staleness(args.staleness), max_staleness=args.max_staleness,
                         server_lr=args.server_lr, updates=args.updates, versions=args.versions,
                         eval_every=args.eval_every)


def run_length(settings: TrainSettings, options: AsyncSettings | None) -> int:
    """Rounds, or versions, for the progress bar; ValueError when the async plan cannot work."""
    return settings.rounds if options is None else plan(settings, options).length


def run_job(broker: Broker, settings: TrainSettings, options: AsyncSettings | None, on_round: OnRound,
            task: Task | None = None) -> Weights:
    if options is None:
        return TrainingJob(broker, settings, task=task, on_round=on_round).run()
    return AsyncJob(broker, settings, options, task=task, on_version=on_round).run()
