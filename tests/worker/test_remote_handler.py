"""Remote commands through the worker service: answered in order, never run twice, sharing the
queue with train tasks."""

from __future__ import annotations

import torch

from fedmq.protocol.commands import CommandBatch, CommandResult, Op
from fedmq.protocol.messages import Reply, TrainTask, decode_message, encode_message
from fedmq.protocol.operands import Ref, StoreInfo
from tests.worker.test_service import JOB, WAIT_S, Rig, global_weights, serving
from fedmq.worker.task import load_task

CLIENT = JOB  # a client's answers go to the job its id names
TOKEN = "c0" * 32  # the client's token for this worker


def answer(rig: Rig) -> CommandResult | Reply:
    delivery = rig.coordinator.receive(timeout=WAIT_S)
    assert delivery is not None, "no answer arrived"
    rig.coordinator.ack(delivery)
    message = decode_message(delivery.body())
    assert isinstance(message, (CommandResult, Reply))
    return message


def test_a_redelivered_batch_is_not_run_twice() -> None:
    with serving(load_task("toy")) as rig:
        # Given a batch that sends a tensor, delivered twice (as after a lost ack)
        first = CommandBatch(CLIENT, 1, (Op("send", (torch.ones(3),), {}, (1,)),), TOKEN)
        rig.send(encode_message(first).tobytes())
        rig.send(encode_message(first).tobytes())
        # When the next batch asks what the client holds
        rig.send(encode_message(CommandBatch(CLIENT, 2, (Op("info"),), TOKEN)).tobytes())
        answers = [answer(rig), answer(rig)]
    # Then batch 1 ran and was answered once, and batch 2 sees one object
    assert [(a.seq, a.error) for a in answers] == [(1, None), (2, None)]  # type: ignore[union-attr]
    assert answers[1].values == {0: StoreInfo(1, 12)}  # type: ignore[union-attr]


def test_train_tasks_and_remote_commands_share_the_queue() -> None:
    toy = load_task("toy")
    with serving(toy) as rig:
        # Given a remote batch, a train task, and another batch, in that order
        rig.send(encode_message(CommandBatch(CLIENT, 1, (Op("dataset", (), {}, (1, 2)),), TOKEN)).tobytes())
        rig.send(TrainTask(job=JOB, round=1, task_id="t1", weights=global_weights(toy)))
        rig.send(encode_message(CommandBatch(CLIENT, 2, (Op("meta", (Ref(1),)),), TOKEN)).tobytes())
        answers = [answer(rig) for _ in range(3)]
    # Then each is answered in turn: training works as before, the shard pointers too
    assert isinstance(answers[1], Reply) and answers[1].task_id == "t1"
    assert isinstance(answers[2], CommandResult)
    assert answers[2].values[0].shape == (4, 2)  # type: ignore[union-attr]
