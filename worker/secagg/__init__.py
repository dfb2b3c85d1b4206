"""A worker's side of secure aggregation: one session per round (worker.secagg.session)."""

from fedmq.worker.secagg.session import WorkerSession as WorkerSession
