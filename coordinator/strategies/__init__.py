"""fedmq's aggregation strategies, and the registry that builds them by name.

Linear strategies (fedavg, fedavgm, fedprox, fedadam, fedyogi, fedadagrad) stream every reply
into a running sum: memory O(model). Cohort strategies (fedmedian, fedtrimmedavg, krum,
multikrum, bulyan; `holds_cohort = True`) hold every update of a round: memory O(model x replies).
"""

from fedmq.coordinator.strategies.fedopt import FedAdagrad, FedAdam, FedAvgM, FedProx, FedYogi
from fedmq.coordinator.strategies.registry import (
    STRATEGIES,
    build_strategy,
    describe_strategies,
    strategy_class,
    strategy_options,
)
from fedmq.coordinator.strategies.robust import Bulyan, FedMedian, FedTrimmedAvg, Krum, MultiKrum
from fedmq.coordinator.strategies.state import decode_state, encode_state
from fedmq.coordinator.strategy import Failure, FedAvg, Strategy

__all__ = [
    "STRATEGIES", "Bulyan", "Failure", "FedAdagrad", "FedAdam", "FedAvg", "FedAvgM", "FedMedian",
    "FedProx", "FedTrimmedAvg", "FedYogi", "Krum", "MultiKrum", "Strategy", "build_strategy",
    "decode_state", "describe_strategies", "encode_state", "strategy_class", "strategy_options",
]
