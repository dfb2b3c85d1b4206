"""A worker served one model shared by several workers (protocol.messages.SharedTask): it runs
only its own part, and never another worker's task id or config."""

from __future__ import annotations

from fedmq.protocol.codec import pack, tensors_to_wire
from fedmq.protocol.messages import PROTOCOL_VERSION, Assignment, Reply, SharedTask, TrainConfig
from tests.worker.test_service import JOB, WAIT_S, WORKER, global_weights, serving
from fedmq.worker.task import load_task


def test_a_shared_task_runs_the_workers_own_part_only() -> None:
    # Given a toy worker, and one model shared with another worker that has other settings
    toy = load_task("toy")
    shared = SharedTask(job=JOB, round=1, share_id="s1", weights=global_weights(toy), assignments={
        "other": Assignment(task_id="not-mine", config=TrainConfig(lr=9.0, epochs=3)),
        WORKER: Assignment(task_id="mine", config=TrainConfig(lr=0.1, epochs=1)),
    })
    with serving(toy) as rig:
        # When the shared message arrives on its queue
        rig.send(shared)
        reply = rig.reply()
    # Then it answers its own task id, trained with its own config, and nothing else
    assert isinstance(reply, Reply)
    assert (reply.task_id, reply.worker, reply.round) == ("mine", WORKER, 1)


def test_a_shared_evaluation_part_evaluates() -> None:
    # Given a toy worker; when a shared model asks it (config None) to evaluate
    toy = load_task("toy")
    shared = SharedTask(job=JOB, round=2, share_id="s2", weights=global_weights(toy),
                        assignments={WORKER: Assignment(task_id="e1")})
    with serving(toy) as rig:
        rig.send(shared)
        reply = rig.reply()
    # Then the reply is an evaluation: no update, its task id
    assert isinstance(reply, Reply) and reply.task_id == "e1" and reply.update == {}


def test_a_shared_task_without_a_part_for_the_worker_is_dead_lettered_unrun() -> None:
    # Given a toy worker; when a shared model addressed only to others lands on its queue
    toy = load_task("toy")
    shared = SharedTask(job=JOB, round=1, share_id="s3", weights=global_weights(toy),
                        assignments={"other": Assignment(task_id="theirs", config=TrainConfig())})
    with serving(toy) as rig:
        rig.send(shared)
        letter = rig.coordinator.take_dead_letter(timeout=WAIT_S)
        # Then it is dead-lettered with the reason, and no reply (so no act on "theirs") is sent
        assert rig.coordinator.receive(timeout=0.2) is None
    assert letter is not None and "no part for worker" in letter.reason


def test_a_malformed_own_part_is_dead_lettered_and_others_parts_are_never_read() -> None:
    # Given a toy worker; a shared model whose other entry is garbage and whose own entry lacks
    # a task id, then one whose own entry is fine beside another garbage entry
    toy = load_task("toy")
    weights = tensors_to_wire(global_weights(toy))

    def wire(assignments: dict[str, object]) -> bytes:
        return bytes(pack({"v": PROTOCOL_VERSION, "kind": "shared", "job": JOB, "round": 1, "task_id": "s",
                           "weights": weights, "assignments": assignments}))

    with serving(toy) as rig:
        # When both arrive
        config = {"lr": 0.1, "epochs": 1, "batch_size": 8, "seed": 0}
        rig.send(wire({WORKER: bytes(pack({"config": config})), "other": 7}))
        rig.send(wire({WORKER: bytes(pack({"task_id": "ok", "config": config})), "other": [1, 2]}))
        reply = rig.reply()
        letter = rig.coordinator.take_dead_letter(timeout=WAIT_S)
    # Then the first is dead-lettered naming the bad field; the second runs, ignoring the garbage
    assert letter is not None and "undecodable shared task" in letter.reason and "task_id" in letter.reason
    assert isinstance(reply, Reply) and reply.task_id == "ok"
