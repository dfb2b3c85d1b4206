"""DP-FedAvg (McMahan, Ramage, Talwar and Zhang, "Learning Differentially Private Recurrent
Language Models", ICLR 2018) as a wrapper around a linear strategy.

Each round, with clip norm C, noise multiplier z and m the expected number of contributors
(the sample size, --sample K, else every worker):

1. every asked worker clips its update to L2 norm C (worker.clipping; integer entries zeroed);
2. the coordinator sums the clipped updates, *unweighted* by example counts (a worker's weight
   must not depend on its data for the sensitivity to be C), re-clipping each to C first: a
   worker that skips its own clipping still moves the sum by at most C;
3. it adds N(0, (z C)^2) to every coordinate of the sum (central mode), or relies on each worker
   having added N(0, (z C)^2 / m) (distributed mode, for secure aggregation);
4. it divides by the FIXED denominator m, not by how many answered: one worker then moves the
   mean by at most C / m whoever else answers (fewer answers give a smaller step, not a larger
   sensitivity);
5. the wrapped strategy takes that noised mean as its round's only update (one synthetic reply
   of weight 1), so FedAvg moves by it and FedAvgM / FedAdam / ... apply their server step to it.

With adaptive clipping (coordinator.privacy.adaptive) C follows a quantile of the update norms
and the update sum gets z_delta instead of z. Every round is accounted (coordinator.privacy.
accountant) with the sampling rate q = m / workers; `stop_reason` ends the run before a round
would spend more than --target-epsilon.

Noise is drawn from a ChaCha20 keystream keyed by a random 256-bit key (worker.noise), labelled
by round and entry: deterministic under --resume because the key is checkpointed, and
unpredictable to anyone without it. The run's --seed is not the key: it is public.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from fedmq.coordinator.aggregation import FOLD_SLICE, fold_in, fold_streamed
from fedmq.coordinator.privacy.accountant import Accountant
from fedmq.coordinator.privacy.adaptive import default_count_std, next_clip, update_noise_multiplier
from fedmq.coordinator.privacy.settings import DPSettings, NoiseMode
from fedmq.coordinator.strategies.state import KIND, check_kind, flatten, tensors_under
from fedmq.coordinator.strategy import Failure, RunningSum, Strategy, StrategyMetrics
from fedmq.protocol.errors import StrategyError
from fedmq.protocol.messages import Option, Reply, TrainConfig, Weights
from fedmq.protocol.stream import StreamedReply
from fedmq.worker import noise
from fedmq.worker.clipping import CLIP_NORM, CLIPPED, NOISE_STD, REPORT_CLIPPED

INNER = "inner/"  # the wrapped strategy's state keys, prefixed


@dataclass(frozen=True, kw_only=True)
class Cohort:
    """Who may contribute: `workers` in all, `sample` asked a round (the fixed denominator m),
    rounds closing with at least `min_contributors` replies."""

    workers: int
    sample: int
    min_contributors: int

    @property
    def rate(self) -> float:
        """q, the chance a given worker is asked in a round."""
        return self.sample / self.workers


class DPFedAvg(Strategy):
    """DP-FedAvg (McMahan et al. 2018): clipped updates, Gaussian noise on their sum, a fixed denominator."""

    kind = "dp-fedavg"
    can_stream = True
    sums_unweighted = True  # a worker's weight must not depend on its data: the sensitivity is C

    def __init__(self, inner: Strategy, settings: DPSettings, *, clip: float, cohort: Cohort,
                 noise_key: bytes | None = None) -> None:
        if not isinstance(inner, RunningSum) or inner.holds_cohort:
            raise StrategyError(f"differential privacy wraps linear strategies (fedavg, fedavgm, fedprox, "
                                f"fedadam, fedyogi, fedadagrad), not {type(inner).__name__}: a robust rule's "
                                "sensitivity to one worker is not bounded by the clip norm; drop "
                                "--dp-noise-multiplier or choose a linear --strategy")
        if settings.noise_multiplier is None:
            raise ValueError("DPFedAvg needs a noise multiplier (coordinator.privacy.build chooses one)")
        if not (math.isfinite(clip) and clip > 0):
            raise ValueError(f"--clip must be a positive number, got {clip}")
        self.inner, self.settings, self.cohort, self.clip = inner, settings, cohort, clip
        self.z = settings.noise_multiplier
        std = settings.clip_count_std
        self.count_std = default_count_std(cohort.sample) if std is None else std
        # The update sum's multiplier: z itself, or z_delta when the clipped count shares the budget.
        self.update_z = update_noise_multiplier(self.z, self.count_std) if settings.adaptive_clip else self.z
        self.accountant = Accountant(settings.delta)
        self._key = noise_key if noise_key is not None else noise.fresh_key()
        self._weights: Weights = {}
        self._sum: Weights | None = None
        self._contributors = 0
        self._below = 0  # contributors whose update was at or below the clip norm
        self._metrics: StrategyMetrics = {}

    @property
    def central(self) -> bool:
        return self.settings.noise is NoiseMode.CENTRAL

    def begin_round(self, weights: Weights) -> None:
        self._weights, self._sum = weights, None
        self._contributors = self._below = 0
        self.inner.begin_round(weights)

    def configure_train(self, round_: int, configs: Mapping[str, TrainConfig]) -> dict[str, TrainConfig]:
        options: dict[str, Option] = {CLIP_NORM: self.clip}
        if self.settings.adaptive_clip:
            options[REPORT_CLIPPED] = True
        if not self.central:
            options[NOISE_STD] = self.update_z * self.clip / math.sqrt(self.cohort.sample)
        return {worker: replace(config, options={**config.options, **options})
                for worker, config in self.inner.configure_train(round_, configs).items()}

    def accumulate(self, reply: Reply) -> None:
        scale = self._scale(_norm(self._weights, lambda name: [reply.update[name]]))
        fold_in(self._total(), reply.update, scale)
        self._count(reply.metrics)

    def accumulate_streamed(self, reply: StreamedReply) -> None:
        pieces = reply.update.pieces
        scale = self._scale(_norm(self._weights, lambda name: (p for _, p in pieces(name, FOLD_SLICE))))
        fold_streamed(self._total(), reply.update, scale)
        self._count(reply.metrics)

    @property
    def sums_securely(self) -> bool:
        # Under secure aggregation the noise must come from the workers (distributed mode): the
        # coordinator would otherwise hold the un-noised sum.
        return not self.central and self.inner.sums_securely

    def accumulate_sum(self, total: Weights, *, weight: float, contributors: int) -> None:
        """The unmasked sum of `contributors` clipped, noised updates, each masked with weight 1."""
        acc = self._total()
        for name, t in total.items():
            if name in acc:
                acc[name].add_(t.to(acc[name].dtype))
        self._contributors += contributors

    def end_round(self, failures: Sequence[Failure]) -> Weights:
        round_ = len(self.accountant.rounds) + 1  # labels this round's noise: the same after --resume
        clip, noise_std = self.clip, (self.update_z * self.clip if self.central else 0.0)
        mean = self._noised_mean(round_, noise_std)
        self.inner.accumulate(Reply(job="dp", round=round_, task_id="dp-noised-mean", worker="dp-fedavg",
                                    update=mean, num_examples=1, metrics={}))
        new = self.inner.end_round(failures)
        q, z = self._accounted(self._contributors)
        self.accountant.compose(q, z)
        self._metrics = {**self.inner.metrics(), **self._round_metrics(clip, self._sum_std(noise_std), q, z)}
        if self.settings.adaptive_clip:
            self._adapt_clip(round_)
        return new

    def stop_reason(self, round_: int) -> str | None:
        target = self.settings.target_epsilon
        if target is None:
            return None
        q, z = self._accounted(self.cohort.min_contributors)  # the fewest answers a round may close with
        after = self.accountant.epsilon_if(q, z)
        if after <= target:
            return None
        return (f"privacy budget spent: round {round_} would bring epsilon to {after:.4g}, above --target-epsilon "
                f"{target:g} (delta {self.settings.delta:g}); epsilon after round {round_ - 1} is "
                f"{self.accountant.epsilon():.4g}")

    def metrics(self) -> StrategyMetrics:
        return dict(self._metrics)

    def min_replies(self) -> int:
        return self.inner.min_replies()

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {KIND: self.kind, "dp/clip": self.clip, "dp/noise_key": self._key.hex(),
                                 **flatten("dp/ledger", self.accountant.state())}
        state.update({INNER + key: value for key, value in self.inner.state_dict().items()})
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not check_kind(state, self.kind):
            return
        key, clip = state.get("dp/noise_key"), state.get("dp/clip")
        if not (isinstance(key, str) and len(key) == 2 * noise.KEY_BYTES and isinstance(clip, float) and clip > 0):
            raise StrategyError("the checkpoint's DP state is malformed (noise key or clip norm); "
                                "use another --checkpoint-dir to start over")
        try:
            self._key = bytes.fromhex(key)
            ledger = tensors_under(state, "dp/ledger")
            if ledger:
                self.accountant.load(ledger["q"], ledger["z"])
        except (KeyError, ValueError) as e:
            raise StrategyError(f"the checkpoint's privacy ledger is malformed ({e}); "
                                "use another --checkpoint-dir to start over") from None
        if self.settings.adaptive_clip:
            self.clip = clip  # where adaptation had brought it; a fixed --clip stays as given
        self.inner.load_state_dict({key[len(INNER):]: value for key, value in state.items()
                                    if key.startswith(INNER)})

    def _total(self) -> Weights:
        if self._sum is None:  # allocated by the first reply: floating entries only
            self._sum = {name: torch.zeros_like(t) for name, t in self._weights.items() if t.is_floating_point()}
        return self._sum

    def _scale(self, norm: float) -> float:
        """The coordinator's own clip: min(1, C / norm). Not in distributed mode, where each update
        carries its noise share (clipping would shrink the noise) and secure aggregation hides it."""
        if not self.central or not norm > self.clip:
            return 1.0
        return self.clip / norm

    def _count(self, metrics: Mapping[str, float]) -> None:
        self._contributors += 1
        # A report other than a clean 0.0 (missing, garbage) counts as clipped: one worker's lie
        # moves the noised share by 1 / m either way.
        self._below += metrics.get(CLIPPED) == 0.0

    def _noised_mean(self, round_: int, std: float) -> Weights:
        """(sum + N(0, std^2)) / m for floating entries; integer entries do not move under DP."""
        total = self._total()
        mean: Weights = {}
        for name, t in self._weights.items():
            if name not in total:
                mean[name] = torch.zeros_like(t)
                continue
            acc = total[name]
            if std > 0:
                acc.add_(noise.gaussian(acc.shape, std, self._key, f"update:{round_}:{name}").to(acc.dtype))
            mean[name] = acc.div_(self.cohort.sample)
        self._sum = None
        return mean

    def _accounted(self, contributors: int) -> tuple[float, float]:
        """(q, z) this round is accounted with. Central: the coordinator added the full noise
        whoever answered. Distributed: k of m shares arrived, and a worker's own share cannot be
        counted on to protect it (its neighbour dataset lacks the worker, share included), so the
        round is accounted with z sqrt((k - 1) / m); a round with no contributor released nothing
        about anyone (q = 0)."""
        if self.central:
            return self.cohort.rate, self.z
        k = min(contributors, self.cohort.sample)
        if k == 0:
            return 0.0, self.z
        return self.cohort.rate, self.z * math.sqrt((k - 1) / self.cohort.sample)

    def _sum_std(self, added: float) -> float:
        """The noise std on this round's sum: what the coordinator added, or the arrived shares'."""
        if self.central:
            return added
        shares = min(self._contributors, self.cohort.sample)
        return self.update_z * self.clip * math.sqrt(shares / self.cohort.sample)

    def _adapt_clip(self, round_: int) -> None:
        noised = self._below + float(noise.gaussian((1,), self.count_std, self._key, f"count:{round_}")[0])
        below = noised / self.cohort.sample
        self.clip = next_clip(self.clip, below, self.settings.target_quantile, self.settings.clip_lr)
        self._metrics.update({"dp_below_clip": below, "dp_next_clip": self.clip})

    def _round_metrics(self, clip: float, noise_std: float, q: float, z: float) -> StrategyMetrics:
        epsilon = self.accountant.epsilon()
        return {"dp_epsilon": epsilon if math.isfinite(epsilon) else "inf", "dp_delta": self.settings.delta,
                "dp_noise_multiplier": z, "dp_clip": clip, "dp_noise_std": noise_std,
                "dp_contributors": self._contributors, "dp_denominator": self.cohort.sample, "dp_sample_rate": q}


def _norm(weights: Weights, pieces: Callable[[str], Iterable[torch.Tensor]]) -> float:
    """The L2 norm of an update over the model's floating entries, in float64."""
    squares = 0.0
    for name, t in weights.items():
        if t.is_floating_point():
            for piece in pieces(name):
                squares += float(torch.linalg.vector_norm(piece, dtype=torch.float64)) ** 2
    return math.sqrt(squares)
