"""Hand-built rounds for the DP-FedAvg tests: a two-entry model and replies from numbers."""

from __future__ import annotations

import torch

from fedmq.coordinator.privacy.dp import Cohort, DPFedAvg
from fedmq.coordinator.privacy.settings import DPSettings
from fedmq.coordinator.strategy import FedAvg, Strategy
from fedmq.protocol.messages import Reply, Weights

KEY = bytes(range(32))


def model(*w: float, counter: int = 10) -> Weights:
    return {"w": torch.tensor(w, dtype=torch.float32), "n": torch.tensor(counter)}


def reply(worker: str, *delta: float, examples: int = 1, clipped: float | None = None) -> Reply:
    metrics = {} if clipped is None else {"clipped": clipped}
    return Reply(job="job", round=1, task_id=f"t-{worker}", worker=worker, update=model(*delta, counter=3),
                 num_examples=examples, metrics=metrics)


def dp(z: float = 0.0, clip: float = 1.0, *, inner: Strategy | None = None, workers: int = 4, sample: int = 4,
       min_contributors: int | None = None, **settings: object) -> DPFedAvg:
    cohort = Cohort(workers=workers, sample=sample, min_contributors=min_contributors or sample)
    return DPFedAvg(inner or FedAvg(), DPSettings(noise_multiplier=z, **settings),  # type: ignore[arg-type]
                    clip=clip, cohort=cohort, noise_key=KEY)


def run(strategy: Strategy, weights: Weights, replies: list[Reply]) -> Weights:
    strategy.begin_round(weights)
    for r in replies:
        strategy.accumulate(r)
    return strategy.end_round([])
