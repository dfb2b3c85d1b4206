"""The coordinator: rounds, strategies, evaluation, checkpoints, the fedmq CLI, and remote objects."""

from coordinator.federation import Federation
from coordinator.handle import RemoteWorkerHandle
from coordinator.remote import RemoteModule, RemoteOptimizer, RemoteTensor

__all__ = ["Federation", "RemoteModule", "RemoteOptimizer", "RemoteTensor", "RemoteWorkerHandle"]
