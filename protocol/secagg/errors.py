"""Errors of secure aggregation; each says which stage failed and what to do about it."""

from __future__ import annotations

from fedmq.protocol.errors import FedmqError, TrainingFailed


class SecAggError(FedmqError):
    """Secure aggregation could not go on: a message broke the protocol, or a party refused."""


class Rejected(SecAggError):
    """One stage message was refused (wrong job, round, stage or sender; a replay; a duplicate).

    That message's failure only: the round goes on without it.
    """


class Refused(SecAggError):
    """A worker refused a coordinator's request that would leak its or a peer's secrets
    (both shares of one peer, inconsistent survivor sets): the worker leaves the round."""


class TooFewSurvivors(SecAggError, TrainingFailed):
    """Fewer workers than the threshold answered a stage: the sum cannot be unmasked safely."""

    def __init__(self, *, stage: str, survived: int, threshold: int, needed_for: str = "") -> None:
        self.stage, self.survived, self.threshold = stage, survived, threshold
        what = f" ({needed_for})" if needed_for else ""
        super().__init__(
            f"secure aggregation stopped at stage {stage}: {survived} worker(s) answered, the "
            f"threshold is {threshold}{what}. Sample more workers, lower --secagg-threshold "
            "(no lower than a majority), raise --secagg-neighbours, or lengthen the round timeout.")
