"""Strategies turn a round's replies into the next global model.

The round loop hands every accepted reply to `accumulate` (or, for strategies that stream, its
update still in the received parts to `accumulate_streamed`) as it arrives and the failures to
`end_round` as data; a strategy never talks to a broker. FedAvg lives here; the others, and
the name -> class registry, live in coordinator.strategies.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from fedmq.coordinator.aggregation import fold_in, fold_streamed, mean_into, zeros_like
from fedmq.protocol.messages import Reply, TrainConfig, Weights
from fedmq.protocol.stream import StreamedReply


@dataclass(frozen=True)
class Failure:
    """A worker that was asked this round and produced nothing usable, and why."""

    worker: str
    reason: str


# JSON-ready values a strategy reports about its last round (e.g. which workers Krum kept).
StrategyMetrics = dict[str, float | int | str | list[str]]
# What a strategy asks every worker's trainer to do this round (e.g. FedProx's proximal_mu).
TrainOptions = dict[str, float | int | str | bool]


class Strategy(ABC):
    # True for strategies that hold every update of a round until end_round (memory: one model
    # per reply); False for those that fold each reply into a running sum (memory: O(model)).
    holds_cohort: ClassVar[bool] = False
    # True for strategies that fold an update straight from its received parts
    # (`accumulate_streamed`): a reply then costs no memory beyond its parts (issue 10 point 5).
    can_stream: ClassVar[bool] = False
    # True for strategies that weigh every worker's update alike, not by its examples (DP-FedAvg):
    # under secure aggregation the workers then mask their updates with weight 1.
    sums_unweighted: ClassVar[bool] = False

    @property
    def streams(self) -> bool:
        """Whether the round loop may hand this strategy streamed replies: it can, and no subclass
        redefined `accumulate` below its `accumulate_streamed` (such a subclass, e.g. one that
        records replies, expects whole replies and must not be bypassed)."""
        cls = type(self)
        return cls.can_stream and issubclass(_owner(cls, "accumulate_streamed"), _owner(cls, "accumulate"))

    @property
    def sums_securely(self) -> bool:
        """Whether this strategy can aggregate from the round's sum alone (`accumulate_sum`), all
        that secure aggregation reveals: it defines one, and no subclass redefined `accumulate`
        below it."""
        cls = type(self)
        owner = _owner(cls, "accumulate_sum")
        return owner is not Strategy and issubclass(owner, _owner(cls, "accumulate"))

    @abstractmethod
    def begin_round(self, weights: Weights) -> None:
        """Start a round from the global `weights` that were sent to the workers."""

    @abstractmethod
    def accumulate(self, reply: Reply) -> None:
        """Fold one accepted reply into the round (its update fits the model)."""

    def accumulate_streamed(self, reply: StreamedReply) -> None:
        """`accumulate` for a reply whose update is still in its parts; called only when `streams`."""
        raise NotImplementedError(f"{type(self).__name__} does not stream; it takes whole replies")

    def accumulate_sum(self, total: Weights, *, weight: float, contributors: int) -> None:
        """Fold the round's updates as one sum made elsewhere (secure aggregation): `total` is
        sum_u w_u * update_u over `contributors` workers and `weight` is sum_u w_u, with w_u the
        example count (or 1 when `sums_unweighted`). Called only when `sums_securely`."""
        raise NotImplementedError(f"{type(self).__name__} needs each worker's update, not their sum")

    @abstractmethod
    def end_round(self, failures: Sequence[Failure]) -> Weights:
        """The new global weights."""

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must keep for `--resume` to continue exactly."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027 - stateless default
        """Restore what `state_dict` returned."""

    def train_options(self) -> TrainOptions:
        """Options every worker's trainer gets this round (FedProx: {"proximal_mu": mu})."""
        return {}

    def configure_train(self, round_: int, configs: Mapping[str, TrainConfig]) -> dict[str, TrainConfig]:
        """Each asked worker's TrainConfig for `round_`. `configs` holds what the job would send
        (its lr, epochs and batch size, each worker's own seed); the default adds `train_options()`."""
        options = self.train_options()
        return {worker: replace(config, options={**config.options, **options}) if options else config
                for worker, config in configs.items()}

    def metrics(self) -> StrategyMetrics:
        """What the last `end_round` did, for the round's JSON line."""
        return {}

    def min_replies(self) -> int:
        """The fewest replies `end_round` can aggregate; fewer raise TrainingFailed. A round
        loop can check its --min-replies against this before round 1."""
        return 0

    def stop_reason(self, round_: int) -> str | None:
        """Why the run must end before `round_` (DP-FedAvg: its privacy budget), or None to go on.
        The round loop then stops cleanly, as a finished run does."""
        return None


class RunningSum(Strategy):
    """The example-weighted sum of a round's updates, folded in one reply at a time (whole or
    streamed from its parts): memory O(model). FedAvg and the server optimizers end rounds on it."""

    can_stream = True

    def __init__(self) -> None:
        self._weights: Weights = {}
        self._total: Weights | None = None  # allocated by the first reply, not while sending
        self._examples = 0.0  # a float: a secure sum's weight arrives as one number

    def begin_round(self, weights: Weights) -> None:
        self._weights = weights
        self._total = None
        self._examples = 0.0

    def accumulate(self, reply: Reply) -> None:
        if self._total is None:
            self._total = zeros_like(self._weights)
        fold_in(self._total, reply.update, float(reply.num_examples))
        self._examples += reply.num_examples

    def accumulate_streamed(self, reply: StreamedReply) -> None:
        if self._total is None:
            self._total = zeros_like(self._weights)
        fold_streamed(self._total, reply.update, float(reply.num_examples))
        self._examples += reply.num_examples

    def accumulate_sum(self, total: Weights, *, weight: float, contributors: int) -> None:
        if self._total is None:
            self._total = zeros_like(self._weights)
        fold_in(self._total, total, 1.0)
        self._examples += weight


class FedAvg(RunningSum):
    """FedAvg (McMahan et al. 2017): the model moves by the example-weighted mean delta.

    McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized Data",
    AISTATS 2017: w_{t+1} = w_t + sum_k n_k d_k / sum_k n_k. Integer entries move by the rounded
    mean. Streams: one running sum, memory O(model).
    """

    def end_round(self, failures: Sequence[Failure]) -> Weights:
        total, self._total = self._total, None
        if total is None:
            return {name: t.clone() for name, t in self._weights.items()}
        return mean_into(total, self._weights, float(self._examples))


def _owner(cls: type, method: str) -> type:
    """The class in `cls`'s MRO that defines `method`."""
    return next(klass for klass in cls.__mro__ if method in klass.__dict__)
