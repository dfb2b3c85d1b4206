"""A user's own Strategy subclass, loaded by import path in the registry tests."""

from __future__ import annotations

from collections.abc import Sequence

from fedmq.coordinator.strategy import Failure, Strategy
from fedmq.protocol.messages import Reply, Weights


class KeepModel(Strategy):
    """Ignores every update: the model never moves."""

    def __init__(self, *, rounds_seen: int = 0, label: str = "x", scale: float | None = None,
                 verbose: bool = False) -> None:
        self.rounds_seen, self.label, self.scale, self.verbose = rounds_seen, label, scale, verbose
        self._weights: Weights = {}

    def begin_round(self, weights: Weights) -> None:
        self._weights = weights

    def accumulate(self, reply: Reply) -> None:
        pass

    def end_round(self, failures: Sequence[Failure]) -> Weights:
        self.rounds_seen += 1
        return dict(self._weights)


class Unfinished(Strategy):
    """Lacks end_round: abstract."""

    def begin_round(self, weights: Weights) -> None:
        pass

    def accumulate(self, reply: Reply) -> None:
        pass


NOT_A_CLASS = 3
