"""The asynchronous barrier rule, and reading a reply off the queue.

An update counts when it answers a task this coordinator has recorded (coordinator.async_state),
comes through the queue of the worker the task was sent to, names the task's base version, and is
at most --max-staleness versions old. Replies to tasks already buffered or applied are duplicates
(a redelivery, a worker's retry), and replies to unknown tasks (timed out, or sent before a
restart and never recorded) are late: both are dropped and counted, never aggregated.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from fedmq.broker.base import Delivery
from fedmq.coordinator.async_state import Outstanding
from fedmq.coordinator.barrier import Verdict
from fedmq.coordinator.rounds import read_delivery
from fedmq.protocol.errors import DecodeError, StoreError
from fedmq.protocol.messages import ErrorReply, Reply
from fedmq.protocol.stream import StreamedReply

log = logging.getLogger("fedmq.coordinator")


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


def read_reply(delivery: Delivery, *, verify_senders: bool, kinds: tuple[type, ...] = (Reply, ErrorReply),
               streaming: bool = False) -> tuple[Any, str]:
    """The message of one of `kinds` that `delivery` holds, or None and why no honest worker
    sends it (dead-letter it). Default kinds: a Reply or an ErrorReply. `streaming`: a large
    reply comes as a StreamedReply, its update still in the parts (coordinator.rounds)."""
    if verify_senders and delivery.user_id != delivery.source:
        if delivery.user_id is None:
            return None, f"a reply on worker {delivery.source!r}'s queue without a user_id"
        return None, f"user {delivery.user_id!r} published into worker {delivery.source!r}'s reply queue"
    try:  # checked before decoding, above: a forger's payload costs no parsing
        message = read_delivery(delivery, streaming=streaming)
    except DecodeError as e:
        return None, f"undecodable reply: {e}"
    except StoreError:  # our disk failed, not the sender: unacked, the reply survives the crash
        raise
    except Exception as e:  # noqa: BLE001 - a decoder bug must not end a run on hostile bytes
        log.exception("the decoder failed on a reply from %s", delivery.source)
        return None, f"undecodable reply ({type(e).__name__}): {e}"
    if not isinstance(message, (*kinds, StreamedReply) if streaming else kinds):
        return None, f"a {type(message).__name__} on a reply queue"
    return message, ""
