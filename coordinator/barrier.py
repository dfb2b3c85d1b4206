"""The barrier rule: which replies count for which round. It lives here and nowhere else.

Synchronous rounds count the first answer of each asked worker to this round's tasks; an
asynchronous driver replaces this rule with its own (any model version within a staleness
bound) and keeps everything else of reply collection.
"""

from __future__ import annotations

from enum import Enum
from typing import Protocol

from fedmq.protocol.messages import ErrorReply, Reply


class Verdict(Enum):
    USE = "use"  # aggregate it
    DROP = "drop"  # an honest worker may send it (late, duplicate): ack and count, never aggregate
    REJECT = "reject"  # no honest worker sends it: dead-letter with the reason


class Barrier(Protocol):
    def judge(self, message: Reply | ErrorReply, source: str) -> tuple[Verdict, str]:
        """The verdict on `message`, which came through worker `source`'s reply queue, and why."""
        ...

    def answered(self, task_id: str) -> None:
        """`task_id`'s answer was used: a second one is a duplicate."""
        ...


class RoundBarrier:
    """One round at a time: this job's round `round_`, tasks `asked` (task id -> worker), once each."""

    def __init__(self, job: str, round_: int, asked: dict[str, str]) -> None:
        self._job = job
        self._round = round_
        self._asked = dict(asked)
        self._pending = set(asked)

    def judge(self, message: Reply | ErrorReply, source: str) -> tuple[Verdict, str]:
        if message.job != self._job:
            return Verdict.REJECT, f"a reply for job {message.job!r}, not {self._job!r}"
        if message.round > self._round:
            return Verdict.REJECT, f"a reply for round {message.round}, which has not begun (now {self._round})"
        if message.worker != source:
            return Verdict.REJECT, f"a reply naming worker {message.worker!r} in {source!r}'s reply queue"
        if message.round < self._round:
            return Verdict.DROP, f"round {message.round} is over (now {self._round})"
        asked_worker = self._asked.get(message.task_id)
        if asked_worker is None:
            return Verdict.DROP, "no such task in this round"  # e.g. a training reply during evaluation
        if asked_worker != source:
            return Verdict.REJECT, f"task was asked of {asked_worker!r}, answered by {source!r}"
        if message.task_id not in self._pending:
            return Verdict.DROP, "duplicate answer"
        return Verdict.USE, ""

    def answered(self, task_id: str) -> None:
        self._pending.discard(task_id)
