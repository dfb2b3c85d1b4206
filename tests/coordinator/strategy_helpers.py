"""Small hand-written rounds for the strategy tests: a two-entry model and replies built from numbers."""

from __future__ import annotations

import torch

from fedmq.coordinator.strategy import Failure, Strategy
from fedmq.protocol.messages import Reply, Weights


def model(*w: float, counter: int = 10) -> Weights:
    """A float entry "w" and an integer counter "n" (like BatchNorm's num_batches_tracked)."""
    return {"w": torch.tensor(w, dtype=torch.float32), "n": torch.tensor(counter)}


def reply(worker: str, *delta: float, counter: int = 0, examples: int = 1) -> Reply:
    return Reply(job="job", round=1, task_id=f"task-{worker}", worker=worker, update=model(*delta, counter=counter), num_examples=examples, metrics={})


def run_round(strategy: Strategy, weights: Weights, replies: list[Reply],
              failures: list[Failure] | None = None) -> Weights:
    strategy.begin_round(weights)
    for r in replies:
        strategy.accumulate(r)
    return strategy.end_round(failures or [])


def values(weights: Weights) -> tuple[list[float], int]:
    return weights["w"].tolist(), int(weights["n"].item())
