"""Remote commands through the worker service: answered in order, never run twice, sharing the
queue with train tasks; a failed move into a worker is told with the client's next batch."""

from __future__ import annotations

import torch

from protocol.commands import CommandBatch, CommandResult, Op
from protocol.messages import Reply, TrainTask, decode_message, encode_message
from protocol.operands import Ref, StoreInfo
from tests.worker.test_service import JOB, WAIT_S, Rig, global_weights, serving
from worker.task import load_task

CLIENT = JOB  # a client's answers go to the job its id names


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
        first = CommandBatch(CLIENT, 1, (Op("send", (torch.ones(3),), {}, (1,)),))
        rig.send(encode_message(first).tobytes())
        rig.send(encode_message(first).tobytes())
        # When the next batch asks what the client holds
        rig.send(encode_message(CommandBatch(CLIENT, 2, (Op("info"),))).tobytes())
        answers = [answer(rig), answer(rig)]
    # Then batch 1 ran and was answered once, and batch 2 sees one object
    assert [(a.seq, a.error) for a in answers] == [(1, None), (2, None)]  # type: ignore[union-attr]
    assert answers[1].values == {0: StoreInfo(1, 12)}  # type: ignore[union-attr]


def test_a_failed_move_in_is_told_with_the_clients_next_batch() -> None:
    with serving(load_task("toy")) as rig:
        # Given a batch "from alice" that carries something a move never carries
        rig.send(encode_message(CommandBatch(CLIENT, 0, (Op("dataset", (), {}, (5, 6)),), origin="alice")).tobytes())
        # When the client's next batch arrives, and then another
        rig.send(encode_message(CommandBatch(CLIENT, 1, (Op("send", (torch.ones(1),), {}, (1,)),))).tobytes())
        rig.send(encode_message(CommandBatch(CLIENT, 2, (Op("get", (Ref(1),)),))).tobytes())
        first, second = answer(rig), answer(rig)
    # Then the first answer reports the failed move, naming alice, and its ops were skipped
    assert isinstance(first, CommandResult) and first.error is not None
    assert (first.error.op, first.error.index, first.error.kind) == ("move", -1, "refused")
    assert "moving an object from worker 'alice' to 'w0' failed" in first.error.reason
    # And the client's next batch runs again (the skipped send's object is missing, and says so)
    assert isinstance(second, CommandResult) and second.error is not None
    assert "its op 'send' did not run" in second.error.reason


def test_train_tasks_and_remote_commands_share_the_queue() -> None:
    toy = load_task("toy")
    with serving(toy) as rig:
        # Given a remote batch, a train task, and another batch, in that order
        rig.send(encode_message(CommandBatch(CLIENT, 1, (Op("dataset", (), {}, (1, 2)),))).tobytes())
        rig.send(TrainTask(JOB, 1, "t1", global_weights(toy)))
        rig.send(encode_message(CommandBatch(CLIENT, 2, (Op("meta", (Ref(1),)),))).tobytes())
        answers = [answer(rig) for _ in range(3)]
    # Then each is answered in turn: training works as before, the shard pointers too
    assert isinstance(answers[1], Reply) and answers[1].task_id == "t1"
    assert isinstance(answers[2], CommandResult)
    assert answers[2].values[0].shape == (4, 2)  # type: ignore[union-attr]
