"""A redelivered task that was already answered is acknowledged, not trained again."""

from __future__ import annotations

import logging

import pytest

from fedmq.protocol.messages import TrainConfig, TrainTask
from tests.worker.test_service import JOB, global_weights, serving
from fedmq.worker.dedup import AnsweredTasks
from fedmq.worker.task import load_task


def test_answered_tasks_forget_the_oldest_beyond_their_capacity() -> None:
    answered = AnsweredTasks(capacity=2)
    for key in [("j", 1, "a"), ("j", 1, "b"), ("j", 2, "c")]:
        answered.add(key)
    assert ("j", 1, "a") not in answered and ("j", 1, "b") in answered and ("j", 2, "c") in answered
    assert len(answered) == 2


def test_a_task_delivered_twice_is_answered_once(caplog: pytest.LogCaptureFixture) -> None:
    # Given a toy worker serving, and one train task
    toy = load_task("toy")
    task = TrainTask(job=JOB, round=1, task_id="t1", weights=global_weights(toy), config=TrainConfig(batch_size=2))
    caplog.set_level(logging.INFO, logger="fedmq.worker")
    with serving(toy) as rig:
        # When the same task arrives twice (as a redelivery after a lost ack would)
        rig.send(task)
        first = rig.reply()
        rig.send(task)
        # Then the first gets a reply, and the second is acked without another
        assert first.task_id == "t1"
        assert rig.coordinator.receive(timeout=1.0) is None
        assert rig.queued_tasks() == []
    assert "was answered already; acked" in caplog.text
