"""The asynchronous barrier rule, and the JSON line of one aggregation.

An update counts when it answers a task this coordinator has recorded (coordinator.async_state),
comes through the queue of the worker the task was sent to, names the task's base version, and is
at most --max-staleness versions old. Replies to tasks already buffered or applied are duplicates
(a redelivery, a worker's retry), and replies to unknown tasks (timed out, or sent before a
restart and never recorded) are late: both are dropped and counted, never aggregated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from coordinator.async_state import Outstanding
from coordinator.barrier import Verdict
from coordinator.metrics import RoundMetrics
from protocol.messages import ErrorReply, Reply


class AsyncBarrier:
    """Any recorded task's first answer within the staleness bound (coordinator.barrier.Barrier)."""

    def __init__(self, job: str, tasks: Mapping[str, Outstanding], version: Callable[[], int],
                 max_staleness: int | None, seen: Callable[[str], bool]) -> None:
        self._job = job
        self._tasks = tasks  # task id -> Outstanding: the driver's live table, not a copy
        self._version = version
        self._max_staleness = max_staleness
        self._seen = seen  # whether a task id is buffered or was applied
        self.stale = 0  # replies dropped for staleness, since the driver last reset it

    def judge(self, message: Reply | ErrorReply, source: str) -> tuple[Verdict, str]:
        if message.job != self._job:
            return Verdict.REJECT, f"a reply for job {message.job!r}, not {self._job!r}"
        if message.worker != source:
            return Verdict.REJECT, f"a reply naming worker {message.worker!r} in {source!r}'s reply queue"
        task = self._tasks.get(message.task_id)
        if task is None:
            if self._seen(message.task_id):
                return Verdict.DROP, "duplicate answer"
            return Verdict.DROP, "no such task outstanding (timed out, or sent before a restart)"
        if task.worker != source:
            return Verdict.REJECT, f"task was sent to {task.worker!r}, answered by {source!r}"
        if message.round != task.base:
            return Verdict.REJECT, f"reply names base version {message.round}; the task was sent with {task.base}"
        staleness = self._version() - task.base
        if isinstance(message, Reply) and self._max_staleness is not None and staleness > self._max_staleness:
            self.stale += 1
            return Verdict.DROP, f"staleness {staleness} is above --max-staleness {self._max_staleness}"
        return Verdict.USE, ""

    def answered(self, task_id: str) -> None:
        """Nothing to do: the driver moves the task from its table to the buffer."""


@dataclass(frozen=True)
class VersionMetrics(RoundMetrics):
    """One aggregation's JSON line. `round` is the new version, so every reader of round lines
    (MetricsLog's resume, `fedmq plot`, the console table) reads version lines too; `replies` is
    the updates it used and `wall_s` the seconds since the previous version."""

    version: int = 0
    seconds: float = 0.0  # wall-clock seconds since the run began (across restarts), evaluation included
    updates: int = 0  # updates applied since the run began
    staleness_mean: float = 0.0
    staleness_max: int = 0
    stale: int = 0  # updates dropped for --max-staleness since the previous version
    timed_out: int = 0  # tasks that passed --round-timeout unanswered since the previous version
    mode: str = "async"
