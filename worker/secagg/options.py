"""The TrainConfig options by which a coordinator asks a worker for secure aggregation."""

from __future__ import annotations

from collections.abc import Mapping

from fedmq.protocol.messages import Option

SECURE_AGGREGATION = "secure_aggregation"  # hold the clipped update for the round's stages, send none
UNIT_WEIGHT = "secagg_unit_weight"  # mask the update with weight 1, not the example count (DP-FedAvg)


def wanted(options: Mapping[str, Option]) -> bool:
    """Whether a train task asks for its update to be aggregated securely."""
    return options.get(SECURE_AGGREGATION) is True


def weight(options: Mapping[str, Option], num_examples: int) -> int:
    """What the worker weights its masked update by."""
    return 1 if options.get(UNIT_WEIGHT) is True else num_examples
