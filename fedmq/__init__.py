"""fedmq: federated learning for PyTorch over RabbitMQ.

The source lives in four layers, each a subpackage: `fedmq.protocol` (messages and the tensor
codec) <- `fedmq.broker` (RabbitMQ and the memory broker) <- `fedmq.worker` (workers and the
task contract) <- `fedmq.coordinator` (rounds, strategies, the pointer API, the CLI). The
public API is here:

    import fedmq
    fed = fedmq.Federation.provisioned("coordinator.json")      # the pointer API
    strategy = fedmq.build_strategy("krum", {"f": "1"})          # or fedmq.Krum(f=1)
"""

from importlib.metadata import PackageNotFoundError, version

from fedmq.coordinator import Federation, RemoteModule, RemoteOptimizer, RemoteTensor, RemoteWorkerHandle
from fedmq.coordinator.strategies import (
    STRATEGIES,
    Bulyan,
    Failure,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    MultiKrum,
    Strategy,
    build_strategy,
)
from fedmq.protocol.errors import FedmqError
from fedmq.protocol.messages import Reply, TrainConfig, Weights
from fedmq.worker.task import ShardSpec, Task, load_task

try:
    __version__ = version("fedmq")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0.0.0+source"

__all__ = [
    "STRATEGIES", "Bulyan", "Failure", "FedAdagrad", "FedAdam", "FedAvg", "FedAvgM", "FedMedian",
    "FedProx", "FedTrimmedAvg", "FedYogi", "Federation", "FedmqError", "Krum", "MultiKrum", "RemoteModule",
    "RemoteOptimizer", "RemoteTensor", "RemoteWorkerHandle", "Reply", "ShardSpec", "Strategy", "Task",
    "TrainConfig", "Weights", "__version__", "build_strategy", "load_task",
]
