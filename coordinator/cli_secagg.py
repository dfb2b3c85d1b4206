"""The command line's secure-aggregation options on `train` and `demo`, turned into settings once, here."""

from __future__ import annotations

import argparse

from fedmq.coordinator.secagg.settings import SecAggSettings


def add_secagg_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("secure aggregation (SecAgg+, see the README's security section)")
    group.add_argument("--secure-aggregation", action="store_true", help="workers send only masked updates; "
                       "the coordinator learns their sum, never one of them (needs --clip and a linear strategy)")
    group.add_argument("--secagg-threshold", type=int, metavar="T", help="the fewest workers that must answer "
                       "every stage (default and least: a majority of those that trained)")
    group.add_argument("--secagg-neighbours", type=int, metavar="K", help="masking neighbours per worker "
                       "(default: all others up to 16 workers, then about 4 log2 N)")
    group.add_argument("--quant-bits", type=int, metavar="B", help="bits per coordinate of the clipped "
                       "update in the masked ring (default 16)")
    group.add_argument("--secagg-timeout", type=float, metavar="S", help="seconds each stage waits for "
                       "answers; a worker silent that long drops out of the round (default 30)")


def secagg_settings(args: argparse.Namespace) -> SecAggSettings | None:
    """The run's SecAggSettings, None without --secure-aggregation; ValueError (exit 2) for
    options that mean nothing alone or a mode it does not run in."""
    given = {"threshold": args.secagg_threshold, "neighbours": args.secagg_neighbours,
             "quant_bits": args.quant_bits, "stage_timeout_s": args.secagg_timeout}
    if not args.secure_aggregation:
        orphans = [flag for flag, key in (("--secagg-threshold", "threshold"), ("--secagg-neighbours", "neighbours"),
                                          ("--quant-bits", "quant_bits"), ("--secagg-timeout", "stage_timeout_s"))
                   if given[key] is not None]
        if orphans:
            raise ValueError(f"{', '.join(orphans)} belong to secure aggregation: add --secure-aggregation")
        return None
    if getattr(args, "mode", "sync") != "sync":
        raise ValueError("secure aggregation runs in synchronous rounds for now: its masks cancel within one "
                         "round's cohort, and FedBuff's buffers would need a cohort each (see the README); "
                         "drop --mode async or --secure-aggregation")
    if args.clip is None:
        raise ValueError("--secure-aggregation needs --clip C: each worker clips its update to L2 norm C, which "
                         "is also each coordinate's quantization range (e.g. --clip 1.0)")
    return SecAggSettings(**{key: value for key, value in given.items() if value is not None})
