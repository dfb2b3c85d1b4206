"""Strategies turn a round's replies into the next global model.

The round loop hands every accepted reply to `accumulate` as it arrives and the failures to
`end_round` as data; a strategy never talks to a broker. FedAvg is the only one so far.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from coordinator.aggregation import fold_in, mean_into, zeros_like
from protocol.messages import Reply, Weights


@dataclass(frozen=True)
class Failure:
    """A worker that was asked this round and produced nothing usable, and why."""

    worker: str
    reason: str


class Strategy(ABC):
    @abstractmethod
    def begin_round(self, weights: Weights) -> None:
        """Start a round from the global `weights` that were sent to the workers."""

    @abstractmethod
    def accumulate(self, reply: Reply) -> None:
        """Fold one accepted reply into the round (its update fits the model)."""

    @abstractmethod
    def end_round(self, failures: Sequence[Failure]) -> Weights:
        """The new global weights."""

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must keep for `--resume` to continue exactly."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027 - stateless default
        """Restore what `state_dict` returned."""


class FedAvg(Strategy):
    """McMahan et al.'s federated averaging: the mean of the updates weighted by num_examples."""

    def __init__(self) -> None:
        self._weights: Weights = {}
        self._total: Weights | None = None  # allocated by the first reply, not while sending
        self._examples = 0

    def begin_round(self, weights: Weights) -> None:
        self._weights = weights
        self._total = None
        self._examples = 0

    def accumulate(self, reply: Reply) -> None:
        if self._total is None:
            self._total = zeros_like(self._weights)
        fold_in(self._total, reply.update, float(reply.num_examples))
        self._examples += reply.num_examples

    def end_round(self, failures: Sequence[Failure]) -> Weights:
        total, self._total = self._total, None
        if total is None:
            return {name: t.clone() for name, t in self._weights.items()}
        return mean_into(total, self._weights, float(self._examples))
