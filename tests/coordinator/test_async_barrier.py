"""The asynchronous barrier rule: which replies count, which are dropped, which are dead-lettered."""

from __future__ import annotations

import pytest
import torch

from fedmq.coordinator.async_barrier import AsyncBarrier, read_reply
from fedmq.coordinator.async_state import Outstanding
from fedmq.coordinator.barrier import Verdict
from fedmq.broker.base import Delivery
from fedmq.protocol.messages import ErrorReply, Reply, TrainTask, encode_message

JOB = "j"
TASKS = {"t-bob": Outstanding(task_id="t-bob", worker="bob", base=3, sent_at=0.0),
         "t-old": Outstanding(task_id="t-old", worker="alice", base=1, sent_at=0.0)}


def _barrier(version: int = 4, max_staleness: int | None = 2) -> AsyncBarrier:
    return AsyncBarrier(JOB, TASKS, lambda: version, max_staleness, lambda task_id: task_id == "t-done")


def _reply(task_id: str, worker: str = "bob", base: int = 3, job: str = JOB) -> Reply:
    return Reply(job=job, round=base, task_id=task_id, worker=worker, update={"w": torch.zeros(2)}, num_examples=1, metrics={})


@pytest.mark.parametrize(("reply", "source", "verdict", "reason"), [
    (_reply("t-bob"), "bob", Verdict.USE, ""),
    (_reply("t-bob", job="other"), "bob", Verdict.REJECT, "job"),
    (_reply("t-bob", worker="alice"), "bob", Verdict.REJECT, "naming worker"),
    (_reply("t-bob", worker="alice"), "alice", Verdict.REJECT, "sent to 'bob'"),
    (_reply("t-bob", base=2), "bob", Verdict.REJECT, "base version 2"),
    (_reply("t-done"), "bob", Verdict.DROP, "duplicate"),
    (_reply("t-unknown"), "bob", Verdict.DROP, "no such task"),
    (_reply("t-old", worker="alice", base=1), "alice", Verdict.DROP, "staleness 3"),
])
def test_each_reply_gets_its_verdict(reply: Reply, source: str, verdict: Verdict, reason: str) -> None:
    got, why = _barrier().judge(reply, source)
    assert got is verdict and reason in why


def test_a_stale_update_is_counted_but_a_stale_error_reply_frees_its_task() -> None:
    # Given version 4 with --max-staleness 2 and alice's task sent at version 1
    barrier = _barrier()
    # When alice's update arrives, and then an error reply to the same task
    assert barrier.judge(_reply("t-old", worker="alice", base=1), "alice")[0] is Verdict.DROP
    error = ErrorReply(job=JOB, round=1, task_id="t-old", worker="alice", reason="failed")
    # Then the update counts as stale once, and the error is used (it frees the worker)
    assert barrier.stale == 1
    assert barrier.judge(error, "alice")[0] is Verdict.USE


def test_without_a_bound_any_staleness_counts() -> None:
    assert _barrier(version=100, max_staleness=None).judge(_reply("t-old", "alice", 1), "alice")[0] is Verdict.USE


def test_read_reply_refuses_other_kinds_forgers_and_garbage() -> None:
    task = TrainTask(job=JOB, round=0, task_id="t", weights={"w": torch.zeros(1)})
    assert read_reply(Delivery([bytes(encode_message(task))], "bob", 1), verify_senders=False)[1].startswith(
        "a TrainTask")
    assert "undecodable" in read_reply(Delivery([b"\x00garbage"], "bob", 1), verify_senders=False)[1]
    forged = Delivery([bytes(encode_message(_reply("t-bob")))], "bob", 1, user_id="mallory")
    assert read_reply(forged, verify_senders=True)[0] is None
    assert read_reply(forged, verify_senders=False)[0] is not None
