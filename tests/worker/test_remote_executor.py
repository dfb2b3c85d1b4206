"""The remote-op executor on its own: allowlist, taint and --allow-get, caps, failures, moves."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fedmq.protocol.commands import Op
from fedmq.protocol.operands import ModuleSpec, Ref, StoreInfo
from fedmq.worker.remote import store as store_module
from fedmq.worker.remote.layers import describe
from fedmq.worker.remote.store import Limits, Session
from fedmq.worker.task import ShardSpec
from tests.worker.remote_rig import CLIENT, Worker, get, send



def Rig(allow_get: str = "derived", limits: Limits | None = None) -> Worker:  # noqa: N802 - reads as a fixture
    """An executor for worker "bob" holding the toy task's first half."""
    return Worker(allow_get, "toy", limits=limits, spec=ShardSpec(0, 2))


@pytest.mark.parametrize("name", [
    "torch.load", "torch.save", "torch.from_file", "Tensor.__reduce_ex__", "Tensor.storage", "Tensor.numpy",
    "Tensor.add_", "Tensor.__setstate__", "F.__getattribute__", "op.setitem", "op.__class__", "os.system",
    "builtins.eval", "eval", "Tensor.tolist",
])
def test_an_op_off_the_allowlist_is_refused_by_name(name: str) -> None:
    # Given a tensor on the worker
    rig = Rig()
    # When a client asks for an op that is not on the allowlist
    error = rig.error(send(1, torch.ones(2)), Op(name, (Ref(1),), {}, (2,)))
    # Then it is refused, the op named, and nothing was stored for it
    assert (error.kind, error.op, error.index) == ("refused", name, 1)
    assert f"op {name!r} is not allowed on worker 'bob'" in error.reason
    assert 2 not in rig.session.objects


@pytest.mark.parametrize(("kwargs", "named"), [
    ({"out": Ref(1)}, "'out'"), ({"inplace": True}, "'inplace'"), ({"device": "cuda"}, "'device'"),
])
def test_keywords_that_write_in_place_or_choose_devices_are_refused(kwargs: dict[str, object], named: str) -> None:
    rig = Rig()
    error = rig.error(send(1, torch.ones(2)), Op("F.relu", (Ref(1),), kwargs, (2,)))  # type: ignore[arg-type]
    assert error.kind == "refused" and named in error.reason


@pytest.mark.parametrize(("layers", "named"), [
    ({"layer": "LSTM", "args": {}, "train": True}, "layer 'LSTM' is not allowed"),
    ({"layer": "__import__", "args": {}, "train": True}, "layer '__import__' is not allowed"),
    ({"layer": "Linear", "args": {"in_features": 2, "out_features": 1, "__class__": 1}, "train": True},
     "takes no argument '__class__'"),
    ({"layer": "Conv2d", "args": {"in_channels": 1, "out_channels": 1, "kernel_size": 1, "padding": 10 ** 6},
      "train": True}, "at most 4096"),
    ({"layer": "Linear", "args": {"in_features": 3, "out_features": 1}, "train": True}, "do not fit"),
])
def test_module_structures_outside_the_allowlist_or_the_weights_are_refused(layers: dict[str, object],
                                                                            named: str) -> None:
    rig = Rig()
    weights = nn.Linear(2, 1).state_dict()
    error = rig.error(Op("module", (ModuleSpec(layers, weights),), {}, (1,)))  # type: ignore[arg-type]
    assert error.op == "module" and named in error.reason


def test_a_module_rebuilt_from_its_structure_computes_what_the_original_does() -> None:
    # Given a small CNN described as layers plus weights
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(32, 3))
    x = torch.randn(2, 1, 4, 4)
    rig = Rig()
    # When the worker builds it and runs it forward
    out = rig.value(Op("module", (ModuleSpec(describe(net), net.state_dict()),), {}, (1,)), send(2, x),
                    Op("forward", (Ref(1), Ref(2)), {}, (3,)), get(3))
    # Then the output equals the local module's
    assert isinstance(out, torch.Tensor)
    torch.testing.assert_close(out, net(x))


def test_an_in_place_layer_cannot_write_into_the_private_shard() -> None:
    # Given the worker's shard and a model whose first layer asks to work in place
    rig = Rig()
    before = rig.shard[0].clone()
    net = nn.Sequential(nn.Hardtanh(0.2, 0.5, inplace=True))  # would turn 0 and 1 into 0.2 and 0.5
    # When the model runs on the shard
    rig.value(Op("dataset", (), {}, (1, 2)), Op("module", (ModuleSpec(describe(net), {}),), {}, (3,)),
              Op("forward", (Ref(3), Ref(1)), {}, (4,)), Op("info"))
    # Then the shard is unchanged
    assert torch.equal(rig.shard[0], before)


@pytest.mark.parametrize(("policy", "fetchable"), [
    ("none", {"sent", "sent_sum"}),
    ("derived", {"sent", "sent_sum", "loss", "model"}),
    ("all", {"sent", "sent_sum", "loss", "model", "data", "data_slice", "data_max"}),
])
def test_allow_get_decides_which_taints_may_leave(policy: str, fetchable: set[str]) -> None:
    # Given a worker with an --allow-get policy, the client's own tensor, the private shard,
    # values selected from it, a loss computed on it and a model trained on it
    rig = Rig(allow_get=policy)
    net = nn.Linear(2, 1)
    rig.value(send(1, torch.ones(2)), Op("Tensor.sum", (Ref(1),), {}, (2,)), Op("dataset", (), {}, (3, 4)),
              Op("op.getitem", (Ref(3), slice(0, 1, None)), {}, (5,)), Op("Tensor.max", (Ref(3),), {}, (6,)),
              Op("module", (ModuleSpec(describe(net), net.state_dict()),), {}, (7,)),
              Op("forward", (Ref(7), Ref(3)), {}, (8,)), Op("op.sub", (Ref(8), Ref(4)), {}, (9,)),
              Op("op.pow", (Ref(9), 2), {}, (10,)), Op("Tensor.sum", (Ref(10),), {}, (11,)),
              Op("backward", (Ref(11),)), Op("info"))
    ids = {"sent": 1, "sent_sum": 2, "data": 3, "data_slice": 5, "data_max": 6, "loss": 11, "model": 7}
    # When each is fetched
    allowed = {name for name, object_id in ids.items() if rig.run(get(object_id)).error is None}
    # Then exactly the policy's taints leave, and a refusal is a permission error saying why
    assert allowed == fetchable
    if "data" not in fetchable:
        error = rig.error(get(3))
        assert error.kind == "permission"
        assert f"it is private data and worker 'bob' runs with --allow-get {policy}" in error.reason


def test_running_statistics_of_private_data_stay_behind_under_allow_get_none() -> None:
    # Given a batch-norm model the client sent (public), on a worker that lets nothing derived out
    rig = Rig(allow_get="none")
    net = nn.BatchNorm1d(2)
    rig.value(Op("module", (ModuleSpec(describe(net), net.state_dict()),), {}, (1,)), get(1))
    # When it runs forward on the shard in training mode (its running mean is now the data's)
    rig.value(Op("dataset", (), {}, (2, 3)), Op("forward", (Ref(1), Ref(2)), {}, (4,)), Op("info"))
    # Then it can no longer leave
    assert rig.error(get(1)).kind == "permission"


def test_the_object_count_cap_refuses_with_a_clear_error_and_frees_make_room() -> None:
    # Given a worker that holds at most two objects
    rig = Rig(limits=Limits(max_objects=2))
    # When a client sends three tensors
    error = rig.error(send(1, torch.ones(1)), send(2, torch.ones(1)), send(3, torch.ones(1)))
    # Then the third is refused, naming the cap; after a free, there is room again
    assert error.kind == "capacity" and "cap is 2 (max_objects)" in error.reason and error.index == 2
    assert rig.value(Op("free", (1,)), send(3, torch.ones(1)), Op("info")) == StoreInfo(2, 8)


@pytest.mark.parametrize("op", [
    Op("torch.zeros", (10 ** 6, 10 ** 6), {}, (2,)),  # creation
    Op("op.add", (Ref(1), torch.ones(10 ** 5, 1)), {}, (2,)),  # broadcasting (1, N) + (N, 1)
    Op("Tensor.expand", (Ref(1), 10 ** 6, 10 ** 5), {}, (2,)),  # a view that would materialize later
    Op("torch.outer", (Ref(1), Ref(1)), {}, (2,)),
])
def test_a_result_beyond_the_byte_cap_is_refused_before_it_is_allocated(op: Op) -> None:
    # Given a 1 MiB byte cap and a (1, 100000) tensor (400 kB)
    rig = Rig(limits=Limits(max_bytes=1 << 20))
    # When an op would produce far more than the cap (terabytes for some: allocating would fail)
    error = rig.error(send(1, torch.ones(1, 10 ** 5) if op.name != "torch.outer" else torch.ones(10 ** 5)), op)
    # Then it is refused as a capacity error, and the worker holds what it held
    assert error.kind == "capacity" and "max_object_bytes" in error.reason
    assert rig.store.objects == 1


def test_one_hot_must_say_how_many_classes() -> None:
    # Without num_classes its result is as wide as the largest label: 10**9 would be 8 GB a row.
    rig = Rig()
    error = rig.error(send(1, torch.tensor([10 ** 9])), Op("F.one_hot", (Ref(1),), {}, (2,)))
    assert error.kind == "refused" and "num_classes" in error.reason
    labels = torch.tensor([1, 3])
    got = rig.value(send(3, labels), Op("F.one_hot", (Ref(3), 5), {}, (4,)), get(4))
    assert isinstance(got, torch.Tensor) and torch.equal(got, torch.nn.functional.one_hot(labels, 5))


def test_a_failure_stops_the_batch_but_frees_still_run() -> None:
    # Given two tensors whose shapes do not multiply
    rig = Rig()
    rig.value(send(1, torch.ones(2, 3)), send(2, torch.ones(2, 3)), send(3, torch.ones(1)), Op("info"))
    # When a batch has a failing matmul, an op after it, and a free
    error = rig.error(Op("op.matmul", (Ref(1), Ref(2)), {}, (4,)), Op("op.add", (Ref(1), 1), {}, (5,)),
                      Op("free", (3,)))
    # Then the matmul's error is torch's (found when sizing it on meta tensors), the add did not
    # run, and the free did
    assert (error.op, error.index) == ("op.matmul", 0) and "[2, 3] X [2, 3]" in error.reason
    assert 5 not in rig.session.objects and 3 not in rig.session.objects
    # And using the add's result later says why it is missing
    later = rig.error(get(5))
    assert "its op 'op.add' did not run (op 'op.matmul' failed before it)" in later.reason


def test_backward_and_a_step_train_a_module_like_local_torch() -> None:
    # Given a linear model and the toy shard, here and on the worker
    torch.manual_seed(1)
    net = nn.Linear(2, 1)
    rig = Rig()
    x, y = rig.shard  # type: ignore[misc]
    # When one SGD step runs remotely
    trained = rig.value(Op("module", (ModuleSpec(describe(net), net.state_dict()),), {}, (1,)),
                        Op("dataset", (), {}, (2, 3)), Op("optimizer", ("SGD", [Ref(1)]), {"lr": 0.1}, (4,)),
                        Op("zero_grad", (Ref(4),)), Op("forward", (Ref(1), Ref(2)), {}, (5,)),
                        Op("op.sub", (Ref(5), Ref(3)), {}, (6,)), Op("op.pow", (Ref(6), 2), {}, (7,)),
                        Op("Tensor.sum", (Ref(7),), {}, (8,)), Op("backward", (Ref(8),)), Op("step", (Ref(4),)),
                        get(1))
    # And here
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    opt.zero_grad()
    ((net(x) - y) ** 2).sum().backward()  # type: ignore[no-untyped-call]
    opt.step()
    # Then the weights agree
    assert isinstance(trained, dict)
    for key, value in net.state_dict().items():
        torch.testing.assert_close(trained[key], value)


@pytest.mark.parametrize(("name", "named"), [("LBFGS", "optimizer 'LBFGS' is not allowed"),
                                              ("__builtins__", "is not allowed")])
def test_optimizers_off_the_allowlist_are_refused(name: str, named: str) -> None:
    rig = Rig()
    error = rig.error(send(1, torch.ones(2), requires_grad=True), Op("optimizer", (name, [Ref(1)]), {}, (2,)))
    assert error.kind == "refused" and named in error.reason


def test_an_optimizer_never_updates_the_private_shard() -> None:
    rig = Rig(allow_get="all")
    error = rig.error(Op("dataset", (), {}, (1, 2)), Op("optimizer", ("SGD", [Ref(1)]), {"lr": 1.0}, (3,)))
    assert "an optimizer updates modules, or tensors sent with requires_grad=True" in error.reason


def test_a_move_hands_the_value_to_its_client_and_the_object_leaves() -> None:
    # Given a tensor computed from private data on a worker that lets derived values leave
    rig = Rig()
    outcome = rig.run(Op("dataset", (), {}, (1, 2)), Op("Tensor.mean", (Ref(1),), {}, (3,)),
                      Op("move", (Ref(3),)), Op("info"))
    # When the executor runs the move: its value goes to the client, which carries it on
    assert outcome.error is None
    torch.testing.assert_close(outcome.values[2], rig.shard[0].mean())  # type: ignore[index, arg-type]
    # Then the object is gone from this worker (the shard pointers stay)
    assert outcome.values[3] == StoreInfo(2, 0)


def test_private_data_cannot_move() -> None:
    rig = Rig()
    error = rig.error(Op("dataset", (), {}, (1, 2)), Op("move", (Ref(1),)))
    assert error.kind == "permission" and "move of object #1 refused" in error.reason


def test_idle_sessions_expire_and_release_their_objects(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a client holding two objects on a worker whose TTL is 60 s
    rig = Rig(limits=Limits(ttl_s=60))
    rig.value(send(1, torch.ones(4)), send(2, torch.ones(4)), Op("info"))
    other: Session = rig.store.session("c-other")
    now = store_module.time.monotonic()
    # When 61 s pass without a word from the first client (the other was just seen)
    monkeypatch.setattr(store_module.time, "monotonic", lambda: now + 61)
    other.last_seen = now + 61
    gone = rig.store.expire()
    # Then its session and objects are gone, and the worker's counts with them
    assert gone == [CLIENT] and rig.store.objects == 0 and rig.store.bytes == 0
    assert list(rig.store.sessions) == ["c-other"]
