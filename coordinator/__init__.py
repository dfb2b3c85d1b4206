"""The coordinator: rounds, strategies, evaluation, checkpoints, the fedmq CLI, and remote objects."""

from fedmq.coordinator.federation import Federation
from fedmq.coordinator.handle import RemoteWorkerHandle
from fedmq.coordinator.remote import RemoteModule, RemoteOptimizer, RemoteTensor

__all__ = ["Federation", "RemoteModule", "RemoteOptimizer", "RemoteTensor", "RemoteWorkerHandle"]
