"""Cohort strategies: Byzantine-robust aggregation over the whole round's updates.

Unlike FedAvg these cannot stream: a median or a Krum score needs every update at once, so each
holds the round's updates until `end_round` (memory: one model per reply, plus one entry's stack
while aggregating). All of them weigh workers equally: num_examples is the sender's own claim,
and an attacker could inflate it. The cohort is ordered by worker name before aggregating, so
ties always go the same way, whatever order the replies arrived in.

Non-floating entries (BatchNorm's num_batches_tracked) are aggregated by the same coordinate
rule in float64 and rounded half-to-even; Krum-style selection measures distances over floating
entries only and takes the selected workers' counters (one worker: exactly its value). A round
with fewer replies than the rule needs (see `min_replies`) raises TrainingFailed.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence

import torch

from fedmq.coordinator.strategies import robust_math
from fedmq.coordinator.strategies.tensors import apply_delta, coordinatewise, mean_of
from fedmq.coordinator.strategy import Failure, Strategy, StrategyMetrics
from fedmq.protocol.errors import StrategyError, TrainingFailed
from fedmq.protocol.messages import Reply, Weights


class _Cohort(Strategy):
    """Holds (worker, update) for every accepted reply; subclasses turn the cohort into a delta."""

    holds_cohort = True
    kind = ""

    def __init__(self) -> None:
        self._weights: Weights = {}
        self._cohort: list[tuple[str, Weights]] = []
        self._metrics: StrategyMetrics = {}

    def begin_round(self, weights: Weights) -> None:
        self._weights, self._cohort = weights, []

    def accumulate(self, reply: Reply) -> None:
        self._cohort.append((reply.worker, reply.update))

    def end_round(self, failures: Sequence[Failure]) -> Weights:
        cohort, self._cohort = sorted(self._cohort, key=lambda held: held[0]), []
        if len(cohort) < self.min_replies():
            dropped = f" (failed: {len(failures)} of the workers asked)" if failures else ""
            rule = f"{self.kind} {self._requirement()}".strip()
            raise TrainingFailed(f"{rule} needs at least {self.min_replies()} "
                                 f"replies, this round has {len(cohort)}{dropped}; lower f with "
                                 "--strategy-option, or add workers and raise --min-replies to match")
        workers = [worker for worker, _ in cohort]
        delta = self._aggregate(workers, [update for _, update in cohort])
        return apply_delta(self._weights, delta)

    def metrics(self) -> StrategyMetrics:
        return dict(self._metrics)

    def min_replies(self) -> int:
        return 1

    def _requirement(self) -> str:
        return ""

    @abstractmethod
    def _aggregate(self, workers: list[str], updates: list[Weights]) -> Weights:
        """The delta of this round from the cohort, ordered by worker name."""

    def _coordinatewise(self, updates: list[Weights], rule: Callable[[torch.Tensor], torch.Tensor]) -> Weights:
        return coordinatewise(self._weights, updates, rule)


def _check_f(f: int) -> None:
    if f < 0:
        raise StrategyError(f"option f={f} must be a non-negative count of Byzantine workers")


class FedMedian(_Cohort):
    """Coordinate-wise median (Yin et al. 2018): each coordinate moves by its workers' median.

    Yin, Chen, Ramchandran and Bartlett, "Byzantine-Robust Distributed Learning: Towards Optimal
    Statistical Rates", ICML 2018: w_{t+1}[j] = w_t[j] + median_i d_i[j]; with an even count, the
    mean of the two middle values. Holds the round's updates."""

    kind = "fedmedian"

    def _aggregate(self, workers: list[str], updates: list[Weights]) -> Weights:
        self._metrics = {}
        return self._coordinatewise(updates, robust_math.coordinate_median)


class FedTrimmedAvg(_Cohort):
    """Coordinate-wise trimmed mean (Yin et al. 2018): the mean without each side's beta fraction.

    For each coordinate, drop the k = floor(beta * n) largest and k smallest of the n values and average the rest. Default beta=0.2; 0 <= beta < 0.5,
    so at least one value always remains. Holds the round's updates."""

    kind = "fedtrimmedavg"

    def __init__(self, *, beta: float = 0.2) -> None:
        super().__init__()
        if not 0.0 <= beta < 0.5:
            raise StrategyError(f"option beta={beta} must lie in [0, 0.5): the fraction trimmed from each side")
        self.beta = beta

    def _aggregate(self, workers: list[str], updates: list[Weights]) -> Weights:
        trim = int(self.beta * len(updates))
        self._metrics = {"trimmed_per_side": trim}
        return self._coordinatewise(updates, lambda stack: robust_math.trimmed_mean(stack, trim))


class MultiKrum(_Cohort):
    """Multi-Krum (Blanchard et al. 2017): the mean of the m updates with the best Krum scores.

    Blanchard, El Mhamdi, Guerraoui and Stainer, "Machine Learning with Adversaries: Byzantine
    Tolerant Gradient Descent", NeurIPS 2017. score(i) = sum of ||d_i - d_j||^2 over the n - f - 2 updates j nearest
    to d_i; the m lowest-scoring updates are averaged (unweighted). m defaults to n - f; m=1 is
    Krum. Needs n >= 2f + 3 and m <= n - f. Holds the round's updates; reports "selected"."""

    kind = "multikrum"

    def __init__(self, *, f: int = 1, m: int | None = None) -> None:
        super().__init__()
        _check_f(f)
        if m is not None and m < 1:
            raise StrategyError(f"option m={m} must be at least 1 (the number of updates averaged)")
        self.f, self.m = f, m

    def min_replies(self) -> int:
        return max(2 * self.f + 3, (self.m or 1) + self.f)

    def _requirement(self) -> str:
        return f"with f={self.f}" + (f", m={self.m}" if self.m else "") + " (n >= 2f + 3, m <= n - f)"

    def _aggregate(self, workers: list[str], updates: list[Weights]) -> Weights:
        m = self.m if self.m is not None else len(updates) - self.f
        distances = robust_math.pairwise_sq_distances(self._weights, updates)
        selected = robust_math.multikrum_select(distances, self.f, m)
        self._metrics = {"selected": [workers[i] for i in selected]}
        return mean_of(self._weights, [updates[i] for i in selected])


class Krum(MultiKrum):
    """Krum (Blanchard et al. 2017): the one update closest to its n - f - 2 nearest others.

    score(i) = sum of ||d_i - d_j||^2 over the n - f - 2 updates j nearest to d_i; the model
    moves by exactly that worker's update. Needs n >= 2f + 3. Holds the round's updates."""

    kind = "krum"

    def __init__(self, *, f: int = 1) -> None:
        super().__init__(f=f, m=1)

    def _requirement(self) -> str:
        return f"with f={self.f} (n >= 2f + 3)"


class Bulyan(_Cohort):
    """Bulyan (El Mhamdi et al. 2018): repeated Krum, then a coordinate-wise trimmed mean.

    El Mhamdi, Guerraoui and Rouault, "The Hidden Vulnerability of Distributed Learning in
    Byzantium", ICML 2018; Bulyan over Krum. First theta = n - 2f updates are picked one at a time, each the Krum
    winner among those left; then each coordinate is the mean of the beta = theta - 2f picked
    values closest to the picked values' median. Needs n >= 4f + 3. Holds the round's updates;
    reports "selected" (the theta picked)."""

    kind = "bulyan"

    def __init__(self, *, f: int = 1) -> None:
        super().__init__()
        _check_f(f)
        self.f = f

    def min_replies(self) -> int:
        return 4 * self.f + 3

    def _requirement(self) -> str:
        return f"with f={self.f} (n >= 4f + 3)"

    def _aggregate(self, workers: list[str], updates: list[Weights]) -> Weights:
        distances = robust_math.pairwise_sq_distances(self._weights, updates)
        picked = robust_math.bulyan_select(distances, self.f)
        keep = len(picked) - 2 * self.f
        self._metrics = {"selected": [workers[i] for i in picked]}
        return self._coordinatewise([updates[i] for i in picked],
                                    lambda stack: robust_math.mean_closest_to_median(stack, keep))
