"""The command line's differential-privacy options (`--dp-*`, `--clip`, `--target-epsilon`) on
`train` and `demo`, turned into settings once, here."""

from __future__ import annotations

import argparse

from fedmq.coordinator.privacy.settings import DPSettings, NoiseMode


def add_privacy_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("differential privacy (DP-FedAvg, see the README's security section)")
    group.add_argument("--clip", type=float, metavar="C", help="L2 norm each worker clips its update to "
                       "(needed by --dp-noise-multiplier; with --dp-adaptive-clip the first round's)")
    group.add_argument("--dp-noise-multiplier", type=float, metavar="Z", help="DP-FedAvg: Gaussian noise of "
                       "std Z*C on the sum of clipped updates, averaged over the sample size; needs --clip")
    group.add_argument("--dp-delta", type=float, metavar="D", help="delta of the reported (epsilon, delta) "
                       "(default 1e-5)")
    group.add_argument("--target-epsilon", type=float, metavar="E", help="stop before a round would spend "
                       "more than E; without --dp-noise-multiplier, choose Z so the planned rounds spend E")
    group.add_argument("--dp-adaptive-clip", action="store_true", help="adapt C to a quantile of the "
                       "update norms each round (Andrew et al. 2021)")
    group.add_argument("--target-quantile", type=float, metavar="Q", help="with --dp-adaptive-clip: the "
                       "share of updates meant to fit under C (default 0.5)")
    group.add_argument("--dp-clip-lr", type=float, metavar="ETA", help="with --dp-adaptive-clip: the "
                       "geometric step of C (default 0.2)")
    group.add_argument("--dp-clip-count-std", type=float, metavar="S", help="with --dp-adaptive-clip: "
                       "noise std on the count of unclipped updates (default: sample size / 20)")


def dp_settings(args: argparse.Namespace) -> DPSettings | None:
    """The run's DPSettings, None without --dp-noise-multiplier and --target-epsilon; ValueError
    (exit 2) for flags that mean nothing alone, saying what to add."""
    if args.dp_noise_multiplier is None and args.target_epsilon is None:
        orphans = [flag for flag, value in (("--dp-delta", args.dp_delta), ("--dp-adaptive-clip", args.dp_adaptive_clip or None),
                                            ("--target-quantile", args.target_quantile), ("--dp-clip-lr", args.dp_clip_lr),
                                            ("--dp-clip-count-std", args.dp_clip_count_std)) if value is not None]
        if orphans:
            raise ValueError(f"{', '.join(orphans)} belong to differential privacy: add --dp-noise-multiplier Z "
                             "(and --clip C)")
        return None
    if not args.dp_adaptive_clip:
        orphans = [flag for flag, value in (("--target-quantile", args.target_quantile), ("--dp-clip-lr", args.dp_clip_lr),
                                            ("--dp-clip-count-std", args.dp_clip_count_std)) if value is not None]
        if orphans:
            raise ValueError(f"{', '.join(orphans)}: options of adaptive clipping; add --dp-adaptive-clip")
    given = {"delta": args.dp_delta, "target_quantile": args.target_quantile, "clip_lr": args.dp_clip_lr}
    if args.dp_adaptive_clip and getattr(args, "secure_aggregation", False):
        raise ValueError("--dp-adaptive-clip cannot run with --secure-aggregation yet: the clipped-count bits "
                         "would have to be aggregated securely too; use a fixed --clip")
    # Under secure aggregation each worker adds its share of the noise: no party sees the un-noised sum.
    noise = NoiseMode.DISTRIBUTED if getattr(args, "secure_aggregation", False) else NoiseMode.CENTRAL
    return DPSettings(noise_multiplier=args.dp_noise_multiplier, target_epsilon=args.target_epsilon, noise=noise,
                      adaptive_clip=args.dp_adaptive_clip, clip_count_std=args.dp_clip_count_std,
                      **{key: value for key, value in given.items() if value is not None})


def privacy_settings(args: argparse.Namespace) -> dict[str, object]:
    """TrainSettings' clip_norm and dp from `args`, checked together with the run's mode."""
    dp = dp_settings(args)
    if dp is not None and args.mode != "sync":
        raise ValueError("differential privacy runs in synchronous rounds (its accounting is per round): "
                         "drop --mode async, or drop --dp-noise-multiplier")
    if dp is not None and args.clip is None:
        raise ValueError("--dp-noise-multiplier needs --clip C, the L2 norm each worker's update is clipped "
                         "to (e.g. --clip 1.0)")
    if args.clip is not None and dp is None and not getattr(args, "secure_aggregation", False):
        raise ValueError("--clip bounds the updates of a private run: add --dp-noise-multiplier Z "
                         "(or --target-epsilon E)")
    return {"clip_norm": args.clip, "dp": dp}
