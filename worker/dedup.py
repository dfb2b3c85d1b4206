"""Tasks this worker already answered, so a redelivered task is acknowledged, not rerun.

RabbitMQ redelivers a task whose ack was lost (a cut connection, a broker restart, a channel
closed by consumer_timeout while training ran long) even though its reply was published. Its
(job, round, task id) is remembered here once the reply is confirmed; a second delivery is then
acked without training again. The memory is bounded and lives with the process: a restarted
worker may answer a task twice, and the coordinator drops the second answer as a duplicate.
"""

from __future__ import annotations

from collections import OrderedDict

TaskKey = tuple[str, int, str]  # (job, round, task id)


class AnsweredTasks:
    """The most recent `capacity` task keys answered, oldest forgotten first."""

    def __init__(self, capacity: int = 4096) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self._capacity = capacity
        self._keys: OrderedDict[TaskKey, None] = OrderedDict()

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, key: TaskKey) -> None:
        self._keys[key] = None
        self._keys.move_to_end(key)
        while len(self._keys) > self._capacity:
            self._keys.popitem(last=False)
