"""Names of the exchanges and queues, shared by every transport.

    coordinator --publish_task(worker)--> [{p}.tasks] direct --key=worker--> {p}.tasks.<worker>
    worker --publish_reply(job)--> [{p}.replies] direct --key=<job>.<worker>--> {p}.replies.<job>.<worker>
    rejected, expired or undecodable --> [{p}.dlx] fanout --> {p}.dead-letters

Each worker replies into a queue of its own: one sender per queue keeps a chunked reply
contiguous, so a coordinator reassembles one reply at a time whatever the number of workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from fedmq.protocol.messages import check_name


class QueueType(str, Enum):
    """How RabbitMQ stores a queue; its value is the `x-queue-type` argument and the CLI spelling.

    CLASSIC lives on one node. QUORUM is replicated over a cluster (Raft): it survives the loss
    of a minority of nodes with no confirmed message lost, at the cost of a majority's fsyncs.
    """

    CLASSIC = "classic"
    QUORUM = "quorum"

    def __str__(self) -> str:  # argparse shows choices and defaults with str()
        return self.value


QUEUE_TYPES = tuple(kind.value for kind in QueueType)


@dataclass(frozen=True)
class Topology:
    prefix: str = "fedmq"
    # "quorum": every queue replicated across a RabbitMQ cluster (Raft). Fixed when a queue is
    # declared, so it is a setting of the topology, not a broker policy.
    queue_type: QueueType = QueueType.CLASSIC
    # The dead-letter queue's bounds: past either, its oldest letters are dropped, so a flood of
    # rejected messages cannot fill the broker's memory or disk.
    dead_letter_max_length: int = 100_000
    dead_letter_max_bytes: int = 1 << 30

    def __post_init__(self) -> None:
        if not isinstance(self.queue_type, QueueType):
            raise ValueError(f"queue type must be a QueueType ({', '.join(QUEUE_TYPES)}), "
                             f"got {self.queue_type!r}")
        if self.dead_letter_max_length < 1 or self.dead_letter_max_bytes < 1:
            raise ValueError("the dead-letter queue's bounds must be positive")

    def queue_arguments(self) -> dict[str, object]:
        """Arguments every durable fedmq queue carries: its type, when not the default classic
        (left out then, so queues declared before this setting existed still match)."""
        return {"x-queue-type": self.queue_type.value} if self.queue_type is not QueueType.CLASSIC else {}

    @property
    def task_exchange(self) -> str:
        return f"{self.prefix}.tasks"

    @property
    def reply_exchange(self) -> str:
        return f"{self.prefix}.replies"

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.prefix}.dlx"

    @property
    def presence_exchange(self) -> str:
        """Fanout of heartbeats (protocol.presence) that `fedmq status` listens to."""
        return f"{self.prefix}.presence"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.prefix}.dead-letters"

    def task_queue(self, worker: str) -> str:
        return f"{self.prefix}.tasks.{check_name('worker', worker)}"

    def reply_key(self, job: str, worker: str) -> str:
        return f"{check_name('job', job)}.{check_name('worker', worker)}"

    def reply_queue(self, job: str, worker: str) -> str:
        return f"{self.prefix}.replies.{self.reply_key(job, worker)}"

    def dead_letter_queue_arguments(self) -> dict[str, object]:
        """Bounded in letters and bytes, the oldest dropped first (drop-head)."""
        return {"x-max-length": self.dead_letter_max_length,
                "x-max-length-bytes": self.dead_letter_max_bytes,
                "x-overflow": "drop-head", **self.queue_arguments()}

    def task_queue_arguments(self) -> dict[str, object]:
        """A task queue's arguments, the same wherever it is declared (clients, provisioning)."""
        return {"x-dead-letter-exchange": self.dead_letter_exchange, **self.queue_arguments()}
