"""The `fedmq` command: worker, train, demo.

Settings are built here, once, from the arguments; nothing below reads the environment.
Exit codes: 0 done, 1 training failed (a broker failure mid-run included), 2 usage error or
broker unreachable.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from fedmq.broker.settings import MEMORY_URL, BrokerSettings
from fedmq.coordinator.cli_async import add_async_options, async_settings, run_job, run_length
from fedmq.coordinator.cli_privacy import add_privacy_options, privacy_settings
from fedmq.coordinator.cli_secagg import add_secagg_options, secagg_settings
from fedmq.coordinator.cli_broker import (
    add_broker_command,
    add_connection_options,
    add_worker_security_options,
    broker_settings,
    check_worker_credentials,
    task_senders,
    verify_senders,
)
from fedmq.coordinator.cli_workers import connection_groups, worker_args
from fedmq.coordinator.console import RoundReporter
from fedmq.coordinator.demo import run_demo
from fedmq.coordinator.job import check_replies
from fedmq.coordinator.privacy.build import private_strategy
from fedmq.coordinator.secagg.aggregate import SecureAggregation
from fedmq.coordinator.sampling import Sampling
from fedmq.coordinator.settings import TrainSettings, default_job_name
from fedmq.coordinator.strategies import STRATEGIES, build_strategy
from fedmq.protocol.errors import (
    BrokerError,
    BrokerUnreachable,
    FedmqError,
    StrategyError,
    TaskError,
)
from fedmq.protocol.messages import TrainConfig
from fedmq.worker.main import run_worker, run_workers
from fedmq.worker.settings import (
    AllowGet,
    ShardSpec,
    WorkerSettings,
    apply_torch_threads,
    release_large_buffers,
)
from fedmq.worker.task import Partition

LOCAL_RABBITMQ = "amqp://guest:guest@127.0.0.1:5672/%2F"
EXIT_FAILED, EXIT_USAGE = 1, 2


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # `--task mytasks.iris` should find mytasks/ where the user stands, as `python -m` would;
    # appended, so nothing there can shadow an installed module.
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.log_level != "debug":  # fedmq reports connection trouble itself, in one line
        logging.getLogger("pika").setLevel(logging.CRITICAL)
    try:
        return int(args.run(args) or 0)
    except (ValueError, TaskError) as e:
        return _fail(EXIT_USAGE, str(e))
    except BrokerUnreachable as e:
        return _fail(EXIT_USAGE, str(e))
    except BrokerError as e:  # connected, then the broker failed or refused: the run failed
        return _fail(EXIT_FAILED, f"training failed: {e}" if args.run is _train else str(e))
    except FedmqError as e:
        return _fail(EXIT_FAILED, f"training failed: {e}")
    except KeyboardInterrupt:
        return _fail(EXIT_FAILED, "interrupted")


def _fail(code: int, message: str) -> int:
    print(f"fedmq: {message}", file=sys.stderr)
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedmq", description="Federated learning for PyTorch over RabbitMQ.")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    worker = commands.add_parser("worker", help="serve train and evaluate tasks on a private shard")
    worker.add_argument("--id", required=True, help="this worker's name (its task queue); w{0..63} or "
                        "{alice,bob} runs several logical workers in this process, {i}/{n}/{id} in "
                        "--shard and --credentials then fill in per worker")
    worker.add_argument("--task", required=True, help="toy, digits, or package.module of your own")
    worker.add_argument("--shard", default="0/1", help="which part of the data this worker holds: i/n "
                        "({i}/{n} with several --id)")
    worker.add_argument("--connections", type=int, default=None, help="with several --id: connections "
                        "(each with one dispatcher thread) per principal (default: one per 8 workers "
                        "on RabbitMQ, one on memory://); more train in parallel")
    worker.add_argument("--partition", choices=list(Partition), type=Partition, default=Partition.IID)
    worker.add_argument("--device", default="cpu", help="cpu or cuda")
    worker.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: "
                        "workers often share a machine's cores)")
    worker.add_argument("--allow-get", choices=list(AllowGet), type=AllowGet, default=AllowGet.DERIVED,
                        help="which remote objects clients may fetch: none, derived from the shard "
                        "(default), or all, raw private data included")
    worker.add_argument("--max-objects", type=int, default=10_000, help="remote objects held, all clients")
    worker.add_argument("--max-object-bytes", type=int, default=1 << 30, help="their bytes (default 1 GiB)")
    worker.add_argument("--client-ttl", type=float, default=600.0, help="seconds after which a silent "
                        "client's objects are freed (default 600)")
    worker.add_argument("--max-client-objects", type=int, default=5_000, help="remote objects held "
                        "for one client (default 5000)")
    worker.add_argument("--max-client-bytes", type=int, default=512 << 20, help="their bytes, autograd's "
                        "saved tensors and fetched copies included (default 512 MiB)")
    worker.add_argument("--max-clients", type=int, default=64, help="remote clients at once (default 64)")
    worker.add_argument("--remote-batch-seconds", type=float, default=10.0, help="compute budget of one "
                        "batch of remote ops (default 10)")
    worker.add_argument("--remote-share", type=float, default=0.5, help="most of the worker's time remote "
                        "ops may take while it also trains (default 0.5)")
    worker.add_argument("--slowdown", type=float, default=1.0, metavar="FACTOR", help="simulate a slow site: "
                        "local training takes FACTOR times its real wall time (default 1)")
    add_worker_security_options(worker)
    _broker_options(worker, default=LOCAL_RABBITMQ, log_level="info")
    worker.set_defaults(run=_worker)

    train = commands.add_parser("train", help="run federated rounds with running workers")
    train.add_argument("--task", required=True)
    train.add_argument("--workers", required=True, help="comma-separated worker names")
    _training_options(train, rounds=20)
    train.add_argument("--min-replies", type=int, help="rounds may close with this many replies "
                       "once --round-timeout passes (default: all workers)")
    train.add_argument("--round-timeout", type=float, default=300.0, help="seconds (default 300)")
    train.add_argument("--checkpoint-dir", type=Path)
    train.add_argument("--resume", action="store_true", help="continue from --checkpoint-dir")
    train.add_argument("--job", help="job name (default: from the task)")
    train.add_argument("--max-update-norm", type=float, help="reject updates whose L2 norm is above "
                       "this (NaN and Inf are always rejected)")
    train.add_argument("--verify-senders", action="store_true", help="accept a reply only when its "
                       "AMQP user_id is its worker's name (on by default with --credentials)")
    train.add_argument("--spill-dir", type=Path, help="keep chunked replies in unlinked files here "
                       "while they arrive, not in memory: with a linear strategy the "
                       "coordinator then holds the running sum and one piece of an update (RabbitMQ; a "
                       "directory on a disk, not tmpfs)")
    _broker_options(train, default=LOCAL_RABBITMQ, log_level="warning")
    train.set_defaults(run=_train)

    demo = commands.add_parser("demo", help="train with in-process workers, no setup needed")
    demo.add_argument("--workers", type=int, default=3, help="how many workers (default 3)")
    demo.add_argument("--task", default="digits")
    _training_options(demo, rounds=10)
    _broker_options(demo, default=MEMORY_URL, log_level="warning")
    demo.set_defaults(run=_demo)
    add_broker_command(commands)

    plot = commands.add_parser("plot", help="draw accuracy and loss per round from metrics files")
    plot.add_argument("metrics", type=Path, nargs="+", help="--metrics-out JSON-lines files (several: "
                      "compared on one picture)")
    plot.add_argument("-o", "--out", type=Path, help="the PNG to write (default: next to the first file)")
    plot.add_argument("--x", choices=["round", "seconds"], default="round", help="x axis: round (version "
                      "in async runs), or wall-clock seconds since the run began (default round)")
    plot.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    plot.set_defaults(run=_plot)

    status = commands.add_parser("status", help="workers online, their queues, and jobs' progress")
    status.add_argument("--listen", type=float, default=6.0, help="seconds to listen for heartbeats "
                        "(workers beat every 5 s; default 6)")
    status.add_argument("--workers", default="", help="comma-separated workers to list even if silent")
    _broker_options(status, default=LOCAL_RABBITMQ, log_level="warning")
    status.set_defaults(run=_status)
    return parser


def _training_options(parser: argparse.ArgumentParser, rounds: int) -> None:
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--lr", type=float, help="learning rate (default: the task's, else 0.05)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--metrics-out", type=Path, help="write one JSON line per round here (a fresh run "
                        "starts the file anew; --resume keeps the lines up to its checkpoint)")
    parser.add_argument("--strategy", default="fedavg", help="how updates are aggregated: "
                        f"{', '.join(STRATEGIES)}, or module.path:Class (default fedavg)")
    parser.add_argument("--strategy-option", action="append", default=[], metavar="KEY=VALUE",
                        help="a strategy option, e.g. eta=0.01 or f=1 (repeatable)")
    parser.add_argument("--sample", type=int, metavar="K", help="workers asked per round, drawn "
                        "with --seed (default: all)")
    parser.add_argument("--fraction", type=float, metavar="F", help="the share of workers asked per round")
    add_async_options(parser)
    add_privacy_options(parser)
    add_secagg_options(parser)


def _broker_options(parser: argparse.ArgumentParser, default: str, log_level: str) -> None:
    shown = default.replace("%", "%%")  # argparse formats help with %: the URL's %2F must survive
    parser.add_argument("--broker", action="append", help=f"amqp://, amqps:// or memory:// URL; a cluster: "
                        f"amqp://user:pass@h1,h2,h3/vhost or --broker once per node (default: $FEDMQ_BROKER, else {shown})")
    parser.add_argument("--prefix", help="prefix of exchange and queue names (default fedmq)")
    parser.add_argument("--chunk-size", type=int, default=8 << 20, help="bytes per message above which "
                        "payloads are chunked (default 8 MiB)")
    parser.add_argument("--log-level", default=log_level, choices=["debug", "info", "warning", "error"])
    add_connection_options(parser)
    parser.set_defaults(default_broker=default)


def _broker_settings(args: argparse.Namespace) -> BrokerSettings:
    return broker_settings(args)


def _train_settings(args: argparse.Namespace, workers: tuple[str, ...], **extra: object) -> TrainSettings:
    config = TrainConfig(lr=args.lr if args.lr is not None else _task_lr(args.task), epochs=args.epochs,
                         batch_size=args.batch_size, seed=args.seed)
    options = tuple(_option(text) for text in args.strategy_option)
    try:
        strategy = build_strategy(args.strategy, dict(options))  # fails here, not mid-run
    except StrategyError as e:
        raise ValueError(str(e)) from e
    settings = TrainSettings(task=args.task, workers=workers, rounds=args.rounds, config=config,
                             metrics_out=args.metrics_out, strategy=args.strategy, strategy_options=options,
                             sampling=Sampling(count=args.sample, fraction=args.fraction),
                             secagg=secagg_settings(args), **privacy_settings(args), **extra)  # type: ignore[arg-type]
    private = private_strategy(strategy, settings)
    check_replies(settings, private)  # DP's refusals: exit 2 before round 1
    if settings.secagg is not None and settings.clip_norm is not None:  # and secure aggregation's
        SecureAggregation(settings.secagg, clip=settings.clip_norm, strategy=private)
    return settings


def _option(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--strategy-option takes KEY=VALUE (e.g. f=1), got {text!r}")
    return key.strip(), value.strip()


def _task_lr(task: str) -> float:
    from fedmq.worker.task import load_task

    return load_task(task).default_lr


def _worker(args: argparse.Namespace) -> int:
    each = worker_args(args)  # --id w{0..63}: many logical workers in this process
    if len(each) > 1 or (args.connections or 1) > 1:
        run_workers(connection_groups(each, _worker_settings, args.connections), args.threads)
        return 0
    check_worker_credentials(each[0])
    run_worker(_worker_settings(each[0]), _broker_settings(each[0]))
    return 0


def _worker_settings(args: argparse.Namespace) -> WorkerSettings:
    shard = ShardSpec.parse(args.shard, partition=args.partition)
    return WorkerSettings(args.id, args.task, shard, device=args.device, torch_threads=args.threads,
                          allow_get=args.allow_get, max_objects=args.max_objects,
                          max_object_bytes=args.max_object_bytes, client_ttl_s=args.client_ttl,
                          max_client_objects=args.max_client_objects,
                          max_client_bytes=args.max_client_bytes, max_clients=args.max_clients,
                          remote_batch_seconds=args.remote_batch_seconds, remote_share=args.remote_share,
                          task_senders=task_senders(args), slowdown=args.slowdown)


def _train(args: argparse.Namespace) -> int:
    apply_torch_threads(1)
    release_large_buffers()
    workers = tuple(name.strip() for name in args.workers.split(",") if name.strip())
    settings = _train_settings(args, workers, min_replies=args.min_replies, round_timeout_s=args.round_timeout,
                               checkpoint_dir=args.checkpoint_dir, resume=args.resume,
                               job=args.job or default_job_name(args.task),
                               max_update_norm=args.max_update_norm, verify_senders=verify_senders(args))
    from fedmq.broker.settings import open_broker

    options = async_settings(args)
    length = run_length(settings, options)
    with open_broker(_broker_settings(args)) as broker, RoundReporter(length, f"fedmq train {settings.job}") as report:
        run_job(broker, settings, options, report)
    return 0


def _demo(args: argparse.Namespace) -> int:
    apply_torch_threads(1)
    if args.workers < 1:
        raise ValueError("--workers must be at least 1")
    workers = tuple(f"w{i}" for i in range(args.workers))
    settings = _train_settings(args, workers, job="demo")
    broker_settings = _broker_settings(args)
    title = f"fedmq demo: {args.task}, {args.workers} workers, {broker_settings.url.split('@')[-1]}"
    options = async_settings(args)
    with RoundReporter(run_length(settings, options), title) as report:
        run_demo(settings, broker_settings, report, options)
    return 0


def _status(args: argparse.Namespace) -> int:
    from rich.console import Console

    from fedmq.broker.settings import open_broker
    from fedmq.coordinator.status import collect, render

    expected = [name.strip() for name in args.workers.split(",") if name.strip()]
    with open_broker(_broker_settings(args)) as broker:
        render(collect(broker, args.listen, expected), Console())
    return 0


def _plot(args: argparse.Namespace) -> int:
    from fedmq.coordinator.plot import XAxis, plot_metrics

    for path in args.metrics:
        if not path.exists():
            raise ValueError(f"no metrics file at {path}: write one with --metrics-out")
    out = plot_metrics(args.metrics, args.out or args.metrics[0].with_suffix(".png"), XAxis(args.x))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
