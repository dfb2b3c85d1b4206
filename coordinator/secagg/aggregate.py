"""A synchronous round with secure aggregation: what the round loop (coordinator.job) does
differently when `--secure-aggregation` is on.

1. Each asked worker's train task carries the options that make it clip its update to C and hold
   it (worker.secagg.sessions) instead of sending it; its answer has an empty update.
2. The workers that answered become the roster of a SecAggRound, relayed stage by stage over the
   broker (coordinator.secagg.driver); at least T of them must answer every stage.
3. The unmasked sum goes to the strategy whole (Strategy.accumulate_sum): only strategies whose
   aggregation is a weighted sum can take it, which is checked before round 1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from fedmq.broker.base import Broker
from fedmq.coordinator.secagg.driver import StageRelay
from fedmq.coordinator.secagg.round import SecAggRound
from fedmq.coordinator.secagg.settings import SecAggSettings
from fedmq.coordinator.strategy import Failure, Strategy, StrategyMetrics
from fedmq.protocol.errors import TrainingFailed
from fedmq.protocol.messages import Option, Reply, TrainConfig, Weights
from fedmq.protocol.secagg import masking
from fedmq.protocol.secagg.params import SecAggParams, default_neighbours, default_threshold
from fedmq.worker.clipping import CLIP_NORM, NOISE_STD
from fedmq.worker.secagg.options import SECURE_AGGREGATION, UNIT_WEIGHT

MAX_EXAMPLES = 1 << 24  # a worker's example count in a secure round: the ring is sized by the largest

NOISE_TAIL = 10.0  # a noised update's norm exceeds C + s (sqrt(P) + 10) with probability below exp(-50)


@dataclass(frozen=True, kw_only=True)
class Trained:
    """A worker that trained this round and holds its update for secure aggregation."""

    worker: str
    num_examples: int


@dataclass(frozen=True, kw_only=True)
class SecureOutcome:
    """What the secure part of a round did: who dropped out where, and the metrics to log."""

    failures: list[Failure]
    metrics: StrategyMetrics
    dropped: int
    dead_lettered: int


class SecureAggregation:
    def __init__(self, settings: SecAggSettings, *, clip: float, strategy: Strategy) -> None:
        if not strategy.sums_securely:
            raise ValueError(f"secure aggregation hands the strategy only the sum of the updates; "
                             f"{type(strategy).__name__} needs each worker's update (robust rules do): choose "
                             "a linear --strategy (fedavg, fedavgm, fedprox, fedadam, fedyogi, fedadagrad) or drop "
                             "--secure-aggregation")
        self.settings, self.clip, self.strategy = settings, clip, strategy
        self._noise_std = 0.0  # each worker's DP noise share (distributed mode), from the train options

    def configure(self, configs: Mapping[str, TrainConfig]) -> dict[str, TrainConfig]:
        """The train tasks' configs with the options that make workers clip and hold their updates."""
        options: dict[str, Option] = {SECURE_AGGREGATION: True, CLIP_NORM: self.clip}
        if self.strategy.sums_unweighted:
            options[UNIT_WEIGHT] = True
        stds = [config.options.get(NOISE_STD) for config in configs.values()]
        self._noise_std = max((float(s) for s in stds if isinstance(s, (int, float))), default=0.0)
        return {worker: replace(config, options={**config.options, **options}) for worker, config in configs.items()}

    @staticmethod
    def held(reply: Reply) -> str | None:
        """Why a train answer does not fit a secure round (an update sent in the clear, an example
        count the ring cannot hold), or None."""
        if reply.update:
            return "an update sent in the clear during a secure-aggregation round: refused unread"
        if not 1 <= reply.num_examples <= MAX_EXAMPLES:
            return (f"an example count of {reply.num_examples}, outside 1 to {MAX_EXAMPLES}: the masked ring is "
                    "sized by the counts workers report")
        return None

    def aggregate(self, broker: Broker, *, job: str, round_: int, weights: Weights, trained: Sequence[Trained],
                  verify_senders: bool) -> SecureOutcome:
        """Run the stages among `trained` and fold the unmasked sum into the strategy."""
        layout = masking.layout_of(weights)
        params = self._params(trained, masking.vector_length(layout) - 1)
        secure = SecAggRound(job=job, round_=round_, params=params, roster=[t.worker for t in trained], layout=layout)
        relay = StageRelay(broker, secure, stage_timeout_s=self.settings.stage_timeout_s,
                           verify_senders=verify_senders)
        result = relay.run()
        total = {name: t.to(weights[name].dtype) for name, t in result.weighted_sum.items()}
        self.strategy.accumulate_sum(total, weight=float(result.total_examples), contributors=len(result.contributors))
        gone = {t.worker for t in trained} - set(result.contributors)
        stage_of = {w: stage for stage, workers in relay.relayed.silent.items() for w in workers}
        refused = relay.relayed.refused
        failures = [Failure(w, refused.get(w) or f"dropped out of secure aggregation at stage {stage_of.get(w, '?')}")
                    for w in sorted(gone)]
        metrics: StrategyMetrics = {"secagg_contributors": len(result.contributors),
                                    "secagg_threshold": params.threshold, "secagg_neighbours": params.neighbours,
                                    "secagg_ring_bits": params.ring_bits}
        return SecureOutcome(failures=failures, metrics=metrics, dropped=relay.relayed.dropped,
                             dead_lettered=relay.relayed.dead_lettered)

    def ring_range(self, coordinates: int) -> float:
        """The L2 norm (and coordinate range) the masked ring holds. C alone without DP noise.
        With distributed DP noise the worker clips to C and then adds N(0, s^2) per coordinate:
        the ring must hold the noised update whole, since clipping or clamping it again would
        shrink the noise the privacy accounting counts on (a 4810-parameter digits model at
        C = 0.1, s = 0.05 would keep 1/35th of it)."""
        if self._noise_std <= 0:
            return self.clip
        return self.clip + self._noise_std * (math.sqrt(coordinates) + NOISE_TAIL)

    def _params(self, trained: Sequence[Trained], coordinates: int) -> SecAggParams:
        n = len(trained)
        majority = default_threshold(n)
        threshold = max(self.settings.threshold or majority, majority)
        if n < 2 or threshold > n:
            raise TrainingFailed(f"secure aggregation needs at least {max(threshold, 2)} workers that trained this "
                                 f"round, got {n}: sample more workers or lower --secagg-threshold")
        neighbours = min(self.settings.neighbours or default_neighbours(n), n - 1)
        unit = self.strategy.sums_unweighted
        try:
            return SecAggParams(num_workers=n, threshold=threshold, neighbours=neighbours,
                                quant_bits=self.settings.quant_bits, clip=self.ring_range(coordinates),
                                max_examples=1 if unit else max(t.num_examples for t in trained))
        except ValueError as e:  # e.g. a ring wider than 62 bits: this round cannot run securely
            raise TrainingFailed(f"secure aggregation cannot run this round: {e}") from e
