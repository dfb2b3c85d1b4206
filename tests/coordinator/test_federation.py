"""The pointer workflow on both brokers: the issue's example, refusals, privacy, memory, errors."""

from __future__ import annotations

import gc

import pytest
import torch
from torch import nn

from fedmq.coordinator import Federation, RemoteWorkerHandle
from fedmq.protocol.commands import Op
from fedmq.protocol.errors import OpNotAllowed, RemoteError, RemotePermissionError, StoreFull
from fedmq.protocol.operands import Ref, StoreInfo
from fedmq.worker.task import ShardSpec, load_task


def test_the_issue_example_runs_and_matches_local_torch(fed: Federation) -> None:
    # Given bob and alice, and the tutorial's data on bob
    bob, alice = fed.spawn("bob"), fed.spawn("alice")
    x_local, t_local = torch.tensor([[0, 0], [0, 1.0]]), torch.tensor([[0], [0.0]])
    x, t = bob.send(x_local), bob.send(t_local)
    # Then a sent tensor's location, shape and dtype are known here
    assert x.location is bob and x.shape == (2, 2) and x.dtype == torch.float32
    # When arithmetic runs on bob
    y = (x * 2).sum() + 1
    assert torch.equal(y.get(), (x_local * 2).sum() + 1)
    # And a model trains there for one step
    torch.manual_seed(0)
    local = nn.Linear(2, 1)
    model = bob.send(local)
    opt = bob.optimizer(torch.optim.SGD, model, lr=0.1)
    opt.zero_grad()
    pred = model(x)
    loss = ((pred - t) ** 2).sum()
    loss.backward()
    opt.step()
    trained = model.get()
    # Then the model and the loss that come back are what local training gives
    local_opt = torch.optim.SGD(local.parameters(), lr=0.1)
    local_loss = ((local(x_local) - t_local) ** 2).sum()
    local_loss.backward()  # type: ignore[no-untyped-call]
    local_opt.step()
    assert isinstance(trained, nn.Linear)
    torch.testing.assert_close(trained.weight, local.weight)
    torch.testing.assert_close(loss.get(), local_loss.detach())
    # And x moves to alice, worker to worker, and is usable there at once
    x.move(alice)
    assert x.location is alice
    assert torch.equal((x + 1).get(), x_local + 1)
    assert alice.objects().objects == 1  # x alone: the pointer to x + 1 is gone, and so is its object
    # And deleting the pointer frees the object
    del x
    assert alice.objects() == StoreInfo(0, 0)


def test_ops_are_pipelined_and_a_silent_worker_times_out_at_the_first_wait(fed: Federation) -> None:
    # Given a worker whose queue exists but which nobody serves
    fed.connection.declare_worker("sleepy")
    sleepy = fed.worker("sleepy")
    fed.timeout_s = 0.5
    # When ops are issued and sent
    x = sleepy.send(torch.ones(3))
    y = (x + 1) * 2
    sleepy.flush()
    # Then nothing waited: a sent tensor's shape is known here; only a value needs an answer
    assert x.shape == (3,)
    with pytest.raises(RemoteError, match="worker 'sleepy' did not answer batch 2 within 0.5s"):
        y.get()


def test_more_ops_than_one_batch_holds_run_in_order(fed: Federation) -> None:
    bob = fed.spawn("bob")
    x = bob.send(torch.zeros(2))
    for step in range(1, 1201):  # several batches, each flushed as it fills, none waited for
        x = x * 1 + step
    assert torch.equal(x.get(), torch.full((2,), 1200 * 1201 / 2))


def test_ops_off_the_allowlist_are_refused_and_the_worker_keeps_serving(fed: Federation) -> None:
    # Given a tensor on bob
    bob = fed.spawn("bob")
    x = bob.send(torch.ones(2))
    # When a client (not this library, which checks names first) asks for torch.load
    bob.link.add(Op("torch.load", ("/etc/passwd",), {}, (fed.new_id(),)))
    # Then the next wait raises a refusal naming the op and the worker
    with pytest.raises(OpNotAllowed, match="op 'torch.load' failed on worker 'bob': op 'torch.load' is not allowed"):
        bob.sync()
    # And the same goes for dunder tricks; the library refuses them before sending
    bob.link.add(Op("Tensor.__reduce_ex__", (Ref(x.id), 2), {}, (fed.new_id(),)))
    with pytest.raises(OpNotAllowed, match="__reduce_ex__"):
        bob.sync()
    with pytest.raises(AttributeError, match="allowlisted"):
        x.numpy()
    with pytest.raises(TypeError, match="kron cannot run on remote tensors: it is not on the workers' allowlist"):
        torch.kron(x, x)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cannot be pickled"):
        torch.save(x, "/dev/null")  # type: ignore[arg-type]
    # And bob still serves
    assert torch.equal((x + 1).get(), torch.full((2,), 2.0))


def test_a_batch_the_worker_cannot_decode_is_reported_at_the_next_wait(fed: Federation) -> None:
    # Given a batch this library would never build (a keyword with a leading underscore)
    bob = fed.spawn("bob")
    x = bob.send(torch.ones(2))
    bob.sync()
    bob.link.add(Op("op.add", (Ref(x.id), 1), {"_private": 1}, (fed.new_id(),)))
    bob.flush()
    # When the next batch is answered
    y = x * 3
    # Then the wait says the earlier batch went unanswered, and why; and the worker goes on
    with pytest.raises(RemoteError, match="batch 2 was never answered: the worker could not decode it"):
        y.get()
    assert torch.equal(y.get(), torch.full((2,), 3.0))


def test_an_op_error_surfaces_at_the_next_wait_and_the_next_op_works(fed: Federation) -> None:
    # Given tensors whose shapes do not multiply
    bob = fed.spawn("bob")
    a, b = bob.send(torch.ones(2, 3)), bob.send(torch.ones(2, 3))
    # When a failing op is issued, then another, and only the other is waited for
    bad = a @ b
    after = a + 1
    # Then the wait raises the failing op's error, with the worker's reason
    with pytest.raises(RemoteError, match=r"op 'op.matmul' failed on worker 'bob': .*\[2, 3\] X \[2, 3\]"):
        after.get()
    # And the op that came after it in the same batch did not run, and says why
    with pytest.raises(RemoteError, match="its op 'op.add' did not run"):
        after.get()
    # And the next op works
    assert torch.equal((a + 2).get(), torch.full((2, 3), 3.0))
    del bad


def test_private_shard_pointers_compute_but_only_derived_results_leave(fed: Federation) -> None:
    # Given bob holding the tutorial's first half as his private shard
    bob = fed.spawn("bob", shard="0/2")
    data, targets = bob.dataset()
    local_data, local_targets = load_task("toy").load_shard(ShardSpec(0, 2))  # type: ignore[misc]
    # Then his raw data, or a slice or an element of it, cannot be fetched: a permission error
    for pointer in (data, targets, data[0:1], data.max()):
        with pytest.raises(RemotePermissionError, match="it is private data and worker 'bob' runs with "
                                                        "--allow-get derived") as refused:
            pointer.get()
        assert isinstance(refused.value, PermissionError)
    # But a model trained on it and its loss can, as the tutorial's loss.get()
    torch.manual_seed(0)
    local = nn.Linear(2, 1)
    model = bob.send(local)
    opt = bob.optimizer("SGD", model, lr=0.1)
    loss = ((model(data) - targets) ** 2).sum()
    loss.backward()
    opt.step()
    expected = ((local(local_data) - local_targets) ** 2).sum()
    torch.testing.assert_close(loss.get(), expected.detach())
    assert isinstance(model.get(), nn.Linear)
    # And its shape is no secret
    assert data.shape == (2, 2)


def test_allow_get_none_keeps_even_derived_results_but_not_the_clients_own(fed: Federation) -> None:
    carol = fed.spawn("carol", allow_get="none")
    data, _ = carol.dataset()
    mine = carol.send(torch.arange(3.0))
    with pytest.raises(RemotePermissionError, match="it is derived data .* --allow-get none"):
        data.mean().get()
    assert torch.equal((mine * 2).get(), torch.arange(3.0) * 2)


def test_allow_get_all_lets_private_data_leave(fed: Federation) -> None:
    dave = fed.spawn("dave", shard="1/2", allow_get="all")
    data, _ = dave.dataset()
    assert torch.equal(data.get(), torch.tensor([[1.0, 0.0], [1.0, 1.0]]))


def test_private_data_does_not_move_to_another_worker(fed: Federation) -> None:
    bob, alice = fed.spawn("bob"), fed.spawn("alice")
    data, _ = bob.dataset()
    data.move(alice)
    with pytest.raises(RemotePermissionError, match="move of object #.* refused: it is private data"):
        alice.sync()  # alice waits for bob's move first, and bob's refusal is raised there


def _workflow(bob: RemoteWorkerHandle, alice: RemoteWorkerHandle) -> None:
    """The tutorial's moves, leaving every pointer to die when it returns."""
    data, targets = bob.dataset()
    model = bob.send(nn.Linear(2, 1))
    opt = bob.optimizer(torch.optim.SGD, model, lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        loss = ((model(data) - targets) ** 2).sum()
        loss.backward()
        opt.step()
    loss.get()
    moved = bob.send(torch.ones(3))
    moved.move(alice)
    assert torch.equal((moved * 2).get(), torch.full((3,), 2.0))
    model.get()


def test_a_workflows_objects_are_all_freed_when_its_pointers_go(fed: Federation) -> None:
    # Given a workflow that made tens of objects on two workers
    bob, alice = fed.spawn("bob"), fed.spawn("alice")
    # When it is over and its pointers are gone
    _workflow(bob, alice)
    gc.collect()
    # Then both workers hold nothing for this client
    assert bob.objects() == StoreInfo(0, 0)
    assert alice.objects() == StoreInfo(0, 0)


def test_a_deleted_pointer_frees_its_object(fed: Federation) -> None:
    bob = fed.spawn("bob")
    x, y = bob.send(torch.ones(10)), bob.send(torch.ones(5))
    assert bob.objects() == StoreInfo(2, 60)
    del x
    assert bob.objects() == StoreInfo(1, 20)
    assert torch.equal(y.get(), torch.ones(5))


def test_store_caps_are_enforced_with_a_clear_error(fed: Federation) -> None:
    # Given a worker capped at three objects and 1 KiB
    bob = fed.spawn("bob", max_objects=3, max_object_bytes=1024)
    kept = [bob.send(torch.ones(1)) for _ in range(3)]
    # When a fourth object is made
    extra = kept[0] + 1
    # Then it is refused, naming the cap
    with pytest.raises(StoreFull, match="worker 'bob' holds 3 remote objects, its cap is 3 .max_objects."):
        extra.get()
    # And a tensor above the byte cap is refused too, before it is allocated
    del kept[2]
    with pytest.raises(StoreFull, match="max_object_bytes"):
        bob.torch.zeros(10 ** 6, 10 ** 6).get()
    # And within the caps, work goes on
    assert torch.equal((kept[1] * 3).get(), torch.full((1,), 3.0))


def test_the_workers_task_model_trains_on_its_shard(fed: Federation) -> None:
    # Given a digits worker and the digits model here
    digits = load_task("digits")
    dora = fed.spawn("dora", task="digits", shard="0/4")
    torch.manual_seed(0)
    local = digits.build_model()
    model = dora.task_model(local)
    data, labels = dora.dataset()
    # When one SGD step runs on its shard
    opt = dora.optimizer(torch.optim.SGD, model, lr=0.5)
    loss = torch.nn.functional.cross_entropy(model(data), labels)
    loss.backward()
    opt.step()
    trained = model.get()
    # Then the loss fell, and the weights are the same step taken here
    x, y = digits.load_shard(ShardSpec(0, 4))  # type: ignore[misc]
    local_opt = torch.optim.SGD(local.parameters(), lr=0.5)
    torch.nn.functional.cross_entropy(local(x), y).backward()  # type: ignore[no-untyped-call]
    local_opt.step()
    assert type(trained) is type(local)
    for (name, got), expected in zip(trained.state_dict().items(), local.state_dict().values(), strict=True):
        torch.testing.assert_close(got, expected, msg=name)
    with torch.no_grad():
        assert float(torch.nn.functional.cross_entropy(trained(x), y)) < loss.item()


def test_operands_on_two_workers_are_refused_here(fed: Federation) -> None:
    bob, alice = fed.spawn("bob"), fed.spawn("alice")
    x, y = bob.send(torch.ones(2)), alice.send(torch.ones(2))
    with pytest.raises(ValueError, match="is on worker 'alice', and this op runs on 'bob': move one"):
        x + y  # noqa: B018
